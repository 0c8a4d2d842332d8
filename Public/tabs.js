// Channel tabs: a WAI-ARIA tablist (arrow keys, Home, End). The chosen channel lives in
// the `channel` cookie (24 hours, as in the original page), which the server reads on
// /wb/; a channel opened by name is remembered in the URL hash (#channel=NAME).

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

/** This browser's identity: the id part of the `uid` cookie the server issued. */
export function ownIdentity() {
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

/** Wires up the tablist; calls onSelect(channel) when the user picks a tab. */
export function setUpTabs(tablist, onSelect) {
  const tabs = () => [...tablist.querySelectorAll('[role="tab"]')];
  const find = (channel) => tabs().find((tab) => tab.dataset.channel === channel);

  function add(channel, label = channel) {
    const existing = find(channel);
    if (existing) {
      existing.querySelector(".tab-name").textContent = label;
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
    tablist.append(tab);
  }

  function select(channel, { focus = false } = {}) {
    for (const tab of tabs()) {
      const chosen = tab.dataset.channel === channel;
      tab.setAttribute("aria-selected", String(chosen));
      tab.tabIndex = chosen ? 0 : -1;
      if (chosen && focus) tab.focus();
    }
  }

  function setUnread(channel, count) {
    const tab = find(channel);
    if (!tab) return;
    const badge = tab.querySelector(".badge");
    badge.hidden = !(count > 0);
    badge.textContent = count > 99 ? "99+" : String(count);
    tab.setAttribute("aria-label", count > 0 ? `${channel}, ${count} unread` : channel);
  }

  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (!tab) return;
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
    if (next === null) return;
    event.preventDefault();
    const channel = all[next].dataset.channel;
    select(channel, { focus: true });
    onSelect(channel);
  });

  return { add, select, setUnread, channels: () => tabs().map((tab) => tab.dataset.channel) };
}
