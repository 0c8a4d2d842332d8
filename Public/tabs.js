// Channel tabs: a WAI-ARIA tablist (arrow keys, Home, End; Delete closes a tab that may
// be closed), each with its unread count. A tab shows the channel's label (the server's
// for a configured channel, "@name" for a one-to-one room); cookies, URLs and frames use
// its id (data-channel). The chosen channel lives in the `channel` cookie (24 hours, as
// in the original page; the original protocol's /wb/ reads it, chat.v2 does not: the page
// subscribes to every tab), so that a reload opens the same tab; a channel opened by name
// is in the URL hash (#channel=NAME) and kept in localStorage (chatroom.tabs) until its
// tab is closed.

const COOKIE = "channel";
const VALID = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Whether the server accepts `name` as a channel name. */
export function isValidChannel(name) {
  return typeof name === "string" && VALID.test(name);
}

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export function readChannelCookie() {
  return readCookie(COOKIE);
}

export function writeChannelCookie(channel) {
  document.cookie = `${COOKIE}=${encodeURIComponent(channel)}; max-age=86400; path=/; SameSite=Lax`;
}

/**
 * Who this page is: the person the site signed in (the server says so on the page it
 * serves for a `?token=`), else this browser's anonymous identity, the id part of the
 * `uid` cookie the server issued.
 */
export function ownIdentity() {
  if (document.body.dataset.me) return document.body.dataset.me;
  const cookie = readCookie("uid");
  return cookie ? cookie.split(".")[0] : null;
}

/** The one-to-one room of two identities: dm:<id>:<id>, sorted. */
export function directRoom(a, b) {
  return `dm:${[a, b].sort().join(":")}`;
}

/** The channel named in the URL hash, if valid. */
export function channelFromHash() {
  const match = /^#channel=(.+)$/.exec(location.hash);
  const name = match ? decodeURIComponent(match[1]) : null;
  return isValidChannel(name) ? name : null;
}

const OPENED = "chatroom.tabs";

/** The channels opened by name (not configured ones), as kept for the next visit. */
export function openedChannels() {
  try {
    const list = JSON.parse(localStorage.getItem(OPENED) ?? "[]");
    return Array.isArray(list) ? list.filter(isValidChannel) : [];
  } catch {
    return [];
  }
}

function keepOpened(list) {
  try {
    localStorage.setItem(OPENED, JSON.stringify([...new Set(list)]));
  } catch {
    // Storage full: the tab is still open, it only would not come back.
  }
}

/**
 * Wires up the tablist; calls onSelect(channel) when the user picks a tab and
 * onClose(channel) when they close one. words: closeTab(label), unread(label, count).
 */
export function setUpTabs(tablist, { onSelect, onClose, words }) {
  const tabs = () => [...tablist.querySelectorAll('[role="tab"]')];
  const find = (channel) => tabs().find((tab) => tab.dataset.channel === channel);

  function accessibleName(tab) {
    const count = Number(tab.dataset.unread ?? 0);
    tab.setAttribute("aria-label", count > 0 ? words.unread(tab.dataset.label, count) : tab.dataset.label);
  }

  function setLabel(channel, label) {
    const tab = find(channel);
    if (!tab || tab.dataset.label === label) return;
    tab.dataset.label = label;
    tab.querySelector(".tab-name").textContent = label;
    const close = tab.querySelector(".close");
    if (close) close.title = words.closeTab(label);
    accessibleName(tab);
  }

  /** Adds a tab (labelled `label`); `closable` gives it a close control. */
  function add(channel, label = channel, { closable = false } = {}) {
    if (find(channel)) {
      setLabel(channel, label);
      return;
    }
    const tab = document.createElement("button");
    tab.type = "button";
    tab.setAttribute("role", "tab");
    tab.id = `tab-${channel}`;
    tab.dataset.channel = channel;
    tab.setAttribute("aria-selected", "false");
    tab.setAttribute("aria-controls", "messages");
    tab.tabIndex = -1;
    const name = document.createElement("span");
    name.className = "tab-name";
    name.textContent = label;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.hidden = true;
    tab.append(name, badge);
    if (closable) {
      // Not a button inside the tab (a button in a button is invalid): the mouse has
      // this ×, the keyboard Delete on the tab.
      const close = document.createElement("span");
      close.className = "close";
      close.setAttribute("aria-hidden", "true");
      close.textContent = "×";
      tab.append(close);
      tab.dataset.closable = "true";
      keepOpened([...openedChannels(), channel]);
    }
    tablist.append(tab);
    tab.dataset.label = "";
    setLabel(channel, label);
  }

  function remove(channel) {
    find(channel)?.remove();
    keepOpened(openedChannels().filter((other) => other !== channel));
  }

  function select(channel, { focus = false } = {}) {
    for (const tab of tabs()) {
      const chosen = tab.dataset.channel === channel;
      tab.setAttribute("aria-selected", String(chosen));
      tab.tabIndex = chosen ? 0 : -1;
      if (chosen && focus) tab.focus();
      // At 360 px the tabs scroll sideways: the chosen one stays in sight.
      if (chosen) tab.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
  }

  function setUnread(channel, count) {
    const tab = find(channel);
    if (!tab) return;
    const badge = tab.querySelector(".badge");
    badge.hidden = !(count > 0);
    badge.textContent = count > 99 ? "99+" : String(count);
    tab.dataset.unread = String(count > 0 ? count : 0);
    accessibleName(tab);
  }

  /**
   * Marks the tab as refused by the server (`reason`), or not (null); `final`: it will
   * not be asked again (a private or full room), rather than retried.
   */
  function setRefused(channel, reason, { final = false } = {}) {
    const tab = find(channel);
    if (!tab) return;
    tab.classList.toggle("refused", Boolean(reason));
    if (reason) {
      tab.dataset.refused = final ? "final" : "retrying";
      tab.title = reason;
    } else {
      delete tab.dataset.refused;
      tab.removeAttribute("title");
    }
  }

  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (!tab) return;
    if (event.target.closest(".close")) {
      onClose(tab.dataset.channel);
      return;
    }
    select(tab.dataset.channel);
    onSelect(tab.dataset.channel);
  });

  tablist.addEventListener("keydown", (event) => {
    const all = tabs();
    const current = all.indexOf(document.activeElement);
    if (current < 0) return;
    let next = null;
    if (event.key === "ArrowRight") next = (current + 1) % all.length;
    else if (event.key === "ArrowLeft") next = (current - 1 + all.length) % all.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = all.length - 1;
    else if (event.key === "Delete" && all[current].dataset.closable) {
      event.preventDefault();
      onClose(all[current].dataset.channel);
      return;
    }
    if (next === null) return;
    event.preventDefault();
    const channel = all[next].dataset.channel;
    select(channel, { focus: true });
    onSelect(channel);
  });

  // The configured tabs come with the page: their labels are the server's.
  for (const tab of tabs()) {
    tab.dataset.label ||= tab.querySelector(".tab-name").textContent;
    accessibleName(tab);
  }

  return { add, remove, setLabel, select, setUnread, setRefused, channels: () => tabs().map((tab) => tab.dataset.channel), label: (channel) => find(channel)?.dataset.label ?? channel };
}
