// The chat page: tabs choose the channel (cookie), the socket brings its messages and
// who is online, the form posts to /send/, and the other tabs show what is unread.

import { setUpComposer } from "./composer.js";
import { connect } from "./connection.js";
import { createChannelView, fetchHistory } from "./history.js";
import { readInboxNews } from "./inbox.js";
import { createMessageList } from "./messages.js";
import { createPeopleList } from "./people.js";
import { channelFromHash, directRoom, isValidChannel, ownIdentity, readChannelCookie, setUpTabs, writeChannelCookie } from "./tabs.js";

const statusLine = document.getElementById("status");
const presenceLine = document.getElementById("presence");
const nameInput = document.getElementById("name");
const openForm = document.getElementById("open-channel");
const openInput = document.getElementById("channel-name");

const me = ownIdentity();

const messages = createMessageList({
  list: document.getElementById("messages"),
  scroller: document.getElementById("scroller"),
  jumpButton: document.getElementById("new-messages"),
  earlierButton: document.getElementById("load-earlier"),
  loadEarlier: async (firstOffset, epoch) => {
    const since = Math.max(0, firstOffset - 1 - 100);
    const page = await fetchHistory(current, { since, limit: firstOffset - 1 - since });
    if (page.epoch !== epoch) return { messages: [], firstOffset: firstOffset };
    return { messages: page.messages.filter((message) => message.offset < firstOffset), firstOffset: page.firstOffset };
  },
});

// MARK: Unread counts — the last offset seen per channel, in localStorage.

const seenKey = (channel) => `chatroom.seen.${channel}`;
function readSeen(channel) {
  try {
    return JSON.parse(localStorage.getItem(seenKey(channel)) ?? "null");
  } catch {
    return null;
  }
}
function writeSeen(channel, epoch, offset) {
  localStorage.setItem(seenKey(channel), JSON.stringify({ epoch: epoch ?? null, offset: offset ?? 0 }));
}

// Shown messages are remembered as seen once per half second, not once per message.
let seenTimer = null;
let seenNow = null;
function seenLater(channel, epoch, offset) {
  seenNow = { channel, epoch, offset };
  seenTimer ??= setTimeout(() => {
    seenTimer = null;
    writeSeen(seenNow.channel, seenNow.epoch, seenNow.offset);
  }, 500);
}

async function refreshUnread() {
  for (const channel of tabs.channels()) {
    if (channel === current) {
      tabs.setUnread(channel, 0);
      continue;
    }
    try {
      const page = await fetchHistory(channel, { limit: 1 });
      const seen = readSeen(channel);
      if (!seen) {
        writeSeen(channel, page.epoch, page.lastOffset); // first look: what is there already is not news
        tabs.setUnread(channel, 0);
      } else {
        const last = page.lastOffset ?? 0;
        tabs.setUnread(channel, seen.epoch === page.epoch ? Math.max(0, last - seen.offset) : last);
      }
    } catch {
      // Offline or refused: keep the badge as it was.
    }
  }
}

// MARK: Tabs and the current channel

const tabs = setUpTabs(document.getElementById("tabs"), (channel) => switchTo(channel));
const configured = tabs.channels();

// One-to-one rooms show as "@name"; the names are remembered per room.
const dmKey = (channel) => `chatroom.dm.${channel}`;
function labelOf(channel) {
  return channel.startsWith("dm:") ? `@${localStorage.getItem(dmKey(channel)) ?? "someone"}` : channel;
}

// A channel opened by name comes back from the hash; the cookie picks among the tabs.
let current = channelFromHash() ?? readChannelCookie();
if (current && current === channelFromHash()) tabs.add(current, labelOf(current));
// The one-to-one rooms this browser has talked in come back as tabs.
for (const key of Object.keys(localStorage).sort()) {
  const room = key.slice(dmKey("").length);
  if (key.startsWith(dmKey("dm:")) && me && room.split(":").includes(me) && isValidChannel(room)) tabs.add(room, labelOf(room));
}
if (!tabs.channels().includes(current)) current = configured[0] ?? "channel_1";

let view = null;
let connection = null;

function showPresence(online) {
  presenceLine.textContent = online === null ? "" : `${online} online`;
}

// MARK: Who is online, and one-to-one rooms with them.

const people = createPeopleList({ list: document.getElementById("people-list"), me, onChoose: openDirect });

function openDirect(id, name) {
  if (!me || id === me) return;
  const room = directRoom(me, id);
  localStorage.setItem(dmKey(room), name);
  tabs.add(room, labelOf(room));
  document.getElementById("people").open = false;
  switchTo(room);
  document.getElementById(`tab-${room}`)?.focus();
}

async function open(channel) {
  messages.clear();
  showPresence(null);
  people.clear();
  view = createChannelView({
    channel,
    show: (frame) => {
      messages.message(frame);
      seenLater(channel, frame.epoch, frame.offset);
    },
    notice: (text) => messages.notice(text),
  });
  try {
    const page = await view.load();
    messages.setEarliest(page.firstOffset ?? null);
    writeSeen(channel, page.epoch, page.lastOffset);
  } catch (error) {
    messages.notice(`Could not load recent messages: ${error.message}`);
  }
}

function switchTo(channel) {
  if (channel === current) return;
  current = channel;
  writeChannelCookie(channel);
  history.replaceState(null, "", configured.includes(channel) ? location.pathname + location.search : `#channel=${encodeURIComponent(channel)}`);
  tabs.select(channel);
  tabs.setUnread(channel, 0);
  open(channel).then(() => connection.reopen());
}

openForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = openInput.value.trim();
  if (!isValidChannel(name)) {
    openInput.setCustomValidity("1–64 letters, digits, _ . : or -");
    openInput.reportValidity();
    return;
  }
  openInput.setCustomValidity("");
  openInput.value = "";
  tabs.add(name, labelOf(name));
  switchTo(name);
  document.getElementById(`tab-${name}`)?.focus();
});
openInput.addEventListener("input", () => openInput.setCustomValidity(""));

writeChannelCookie(current);
tabs.select(current);

// MARK: The socket

const STATES = {
  connecting: () => "Connecting…",
  connected: () => "Connected",
  reconnecting: (seconds) => (seconds > 0 ? `Reconnecting in ${seconds} s…` : "Reconnecting…"),
  offline: () => "Offline — waiting for the network",
  refused: (reason) => reason || "Refused by the server",
};

await open(current);

connection = connect({
  resumeFrom: () => view.resumeFrom(),
  name: () => nameInput.value,
  onState(state, detail) {
    statusLine.dataset.state = state;
    statusLine.textContent = STATES[state](detail);
    if (state !== "connected") showPresence(null);
    if (state === "refused") messages.notice(`You cannot join this room: ${detail}`);
  },
  onMessage(frame) {
    if (frame.type === "error") messages.notice(`Server: ${frame.message}`);
    else if (frame.channel !== current) return;
    else if (frame.type === "presence") showPresence(frame.online);
    else if (frame.type === "members" || frame.type === "join" || frame.type === "leave") people.receive(frame);
    else view.receive(frame);
  },
});

setUpComposer({
  form: document.getElementById("composer"),
  nameInput: document.getElementById("name"),
  textInput: document.getElementById("text"),
  sendButton: document.getElementById("send"),
  counter: document.getElementById("counter"),
  errorLine: document.getElementById("send-error"),
  channel: () => current,
  onSent: ({ offset, epoch }) => messages.markOwn(epoch, offset),
});

// A new name shows in the list once the socket says it again.
nameInput.addEventListener("change", () => connection.reopen());

// MARK: The inbox — the server says there when someone writes to us one to one.

/** A one-to-one room with news in the inbox; `name` is who wrote. */
function showRoomWithNews(room, name) {
  if (!localStorage.getItem(dmKey(room))) localStorage.setItem(dmKey(room), name || "someone");
  if (!tabs.channels().includes(room)) {
    tabs.add(room, labelOf(room));
    if (!readSeen(room)) writeSeen(room, null, 0); // a room new to this browser: all of it is news
  }
}

// The inbox is read with the unread counts, every 5 s: a socket of its own would cost the
// server a socket and a channel per person for news that the badges show at that pace anyway.
async function refreshAll() {
  await readInboxNews(me, showRoomWithNews);
  await refreshUnread();
}
refreshAll();
setInterval(refreshAll, 5000);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) refreshAll();
});
