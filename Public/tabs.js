// Channel tabs: a WAI-ARIA tablist (arrow keys, Home, End), each with its unread count.
// The chosen channel lives in the `channel` cookie (24 hours, as in the original page;
// the original protocol's /wb/ reads it, chat.v2 does not: the page subscribes to every
// tab), so that a reload opens the same tab; a channel opened by name is remembered in
// the URL hash (#channel=NAME).

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

  return { add, select, setUnread, setRefused, channels: () => tabs().map((tab) => tab.dataset.channel) };
}

// MARK: What has been read

const READ_AFTER_MS = 500;

/**
 * The position read up to in each channel ({epoch, offset}, in localStorage as
 * chatroom.seen.CHANNEL): a tab's unread count is how far its subscription is past it.
 */
export function createReadMarks() {
  const key = (channel) => `chatroom.seen.${channel}`;
  const later = new Map(); // channel → position, written by the next timer
  let timer = null;

  function get(channel) {
    if (later.has(channel)) return later.get(channel);
    try {
      return JSON.parse(localStorage.getItem(key(channel)) ?? "null");
    } catch {
      return null;
    }
  }

  function write(channel, position) {
    later.delete(channel);
    localStorage.setItem(key(channel), JSON.stringify({ epoch: position?.epoch ?? null, offset: position?.offset ?? 0 }));
  }

  function flush() {
    clearTimeout(timer);
    timer = null;
    for (const [channel, position] of later) write(channel, position);
  }
  window.addEventListener("pagehide", flush);

  return {
    get,
    /** Read up to `position` now (a null position: nothing read, all of it is news). */
    set: write,
    /** Read up to `position`, written within half a second (one write per burst of messages). */
    setSoon(channel, position) {
      later.set(channel, { epoch: position.epoch, offset: position.offset });
      timer ??= setTimeout(flush, READ_AFTER_MS);
    },
    /**
     * How many messages of `channel` are unread, the subscription being at `position`.
     * The first time a channel is seen, what it holds already is not news.
     */
    unread(channel, position) {
      if (!position) return 0;
      const read = get(channel);
      if (!read) {
        write(channel, position);
        return 0;
      }
      return read.epoch === position.epoch ? Math.max(0, position.offset - read.offset) : position.offset;
    },
  };
}
