// The chat page. One chat.v2 socket carries everything: a subscription per tab (the tab
// on screen shows its messages and who is in the room, the others count what is unread),
// one to the person's inbox (a one-to-one message shows as a tab the moment it is
// written), and the messages typed, from the outbox. /history is read only for what the
// socket cannot say: "Load earlier", holes, and the newest messages of a tab just opened.

import { createOutbox, setUpComposer } from "./composer.js";
import { connect } from "./connection.js";
import { createSubscriptions } from "./history.js";
import { followInbox, inboxOf, newsOf } from "./inbox.js";
import { createMessageList } from "./messages.js";
import { createPeopleList } from "./people.js";
import { channelFromHash, createReadMarks, directRoom, isValidChannel, ownIdentity, readChannelCookie, setUpTabs, writeChannelCookie } from "./tabs.js";

const FIRST_LOOK = 50; // messages shown when a tab opens
const EARLIER = 100; // messages "Load earlier" brings

const statusLine = document.getElementById("status");
const presenceLine = document.getElementById("presence");
const nameInput = document.getElementById("name");
const openForm = document.getElementById("open-channel");
const openInput = document.getElementById("channel-name");

const me = ownIdentity();
const inbox = inboxOf(me);
const readMarks = createReadMarks();

let connection = null;
let connectionState = ["connecting", 0];
let current = null; // the channel on screen

const subscriptions = createSubscriptions({ send: (frame) => connection?.send(frame) ?? false, onEvent: subscriptionSays });
const outbox = createOutbox({ send: (frame) => connection?.send(frame) ?? false, onChange: outboxSays });

const messages = createMessageList({
  list: document.getElementById("messages"),
  scroller: document.getElementById("scroller"),
  jumpButton: document.getElementById("new-messages"),
  earlierButton: document.getElementById("load-earlier"),
  loadEarlier: (before, epoch) => subscriptions.get(current).earlier({ count: EARLIER, before, epoch }),
  onEdit(id) {
    const entry = outbox.discard(id);
    if (entry) composer.edit(entry.data);
  },
  onDiscard: (id) => outbox.discard(id),
  onRetry: (id) => outbox.retry(id),
});

// MARK: Tabs

const tabs = setUpTabs(document.getElementById("tabs"), (channel) => switchTo(channel));
const configured = tabs.channels();

// One-to-one rooms show as "@name"; the names are remembered per room.
const dmKey = (channel) => `chatroom.dm.${channel}`;
function labelOf(channel) {
  return channel.startsWith("dm:") ? `@${localStorage.getItem(dmKey(channel)) ?? "someone"}` : channel;
}

/** Adds a tab for `channel` (if new) and subscribes to it. */
function addTab(channel) {
  tabs.add(channel, labelOf(channel));
  subscriptions.follow(channel, { fillsHoles: () => channel === current, firstLook: FIRST_LOOK });
}

function showUnread(channel) {
  const subscription = subscriptions.get(channel);
  if (!subscription) return;
  tabs.setUnread(channel, channel === current ? 0 : readMarks.unread(channel, subscription.position));
}

// MARK: The status line: the connection, or why the tab on screen is refused

const STATES = {
  connecting: () => "Connecting…",
  connected: () => "Connected",
  reconnecting: (seconds) => (seconds > 0 ? `Reconnecting in ${seconds} s…` : "Reconnecting…"),
  offline: () => "Offline — waiting for the network",
};

function showStatus() {
  const [state, detail] = connectionState;
  const refusal = state === "connected" ? subscriptions.get(current)?.refusal : null;
  if (refusal) {
    statusLine.dataset.state = "refused";
    statusLine.textContent = refusal.message || `Refused by the server (${refusal.code})`;
  } else {
    statusLine.dataset.state = state;
    statusLine.textContent = STATES[state](detail);
  }
}

function showRoom() {
  const room = subscriptions.get(current)?.room;
  presenceLine.textContent = room?.online == null ? "" : `${room.online} online`;
  people.show(room?.members ?? null);
}

// MARK: Who is online, and one-to-one rooms with them.

const people = createPeopleList({ list: document.getElementById("people-list"), me, onChoose: openDirect });

function openDirect(id, name) {
  if (!me || id === me) return;
  const room = directRoom(me, id);
  localStorage.setItem(dmKey(room), name);
  addTab(room);
  document.getElementById("people").open = false;
  switchTo(room);
  document.getElementById(`tab-${room}`)?.focus();
}

/** A one-to-one room with news in the inbox; `name` is who wrote. The reader stays where they are. */
function showRoomWithNews(room, name) {
  if (!localStorage.getItem(dmKey(room))) localStorage.setItem(dmKey(room), name || "someone");
  if (tabs.channels().includes(room)) return; // its own subscription counts the message
  if (!readMarks.get(room)) readMarks.set(room, null); // a room new to this browser: all of it is news
  addTab(room);
}

// MARK: The channel on screen

let opening = 0; // which show() is the latest, so that a slow read cannot land in another tab

/** Shows `channel`: what its subscription keeps, the newest from /history if that is little, and the outbox. */
async function show(channel) {
  const subscription = subscriptions.get(channel);
  const mine = ++opening;
  messages.clear();
  for (const message of subscription.kept) messages.message(message);
  for (const entry of outbox.entries(channel)) showOutgoing(entry);
  showRoom();
  showStatus();
  if (subscription.refusal) messages.notice(`You cannot follow this channel: ${subscription.refusal.message}`);
  if (subscription.position) readMarks.set(channel, subscription.position);
  if (subscription.kept.length >= FIRST_LOOK) return;
  try {
    const older = await subscription.earlier({ count: FIRST_LOOK - subscription.kept.length, before: messages.firstOffset ?? undefined });
    if (mine !== opening) return;
    messages.prepend(older.messages);
    if (older.firstOffset !== undefined) messages.setEarliest(older.firstOffset);
  } catch (error) {
    if (mine === opening) messages.notice(`Could not load recent messages: ${error.message}`);
  }
}

function switchTo(channel) {
  if (channel === current) return;
  const previous = subscriptions.get(current);
  if (previous?.position) readMarks.set(current, previous.position); // read up to here
  current = channel;
  writeChannelCookie(channel);
  history.replaceState(null, "", configured.includes(channel) ? location.pathname + location.search : `#channel=${encodeURIComponent(channel)}`);
  tabs.select(channel);
  tabs.setUnread(channel, 0);
  show(channel);
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
  addTab(name);
  switchTo(name);
  document.getElementById(`tab-${name}`)?.focus();
});
openInput.addEventListener("input", () => openInput.setCustomValidity(""));

// MARK: What the subscriptions say

const subscriptionsRefused = new Map(); // channel → the refusal last told in its list

function subscriptionSays(channel, type, detail) {
  if (channel === inbox) {
    if (type === "message") {
      const news = newsOf(detail, me);
      if (news) showRoomWithNews(news.room, news.name);
    }
    return;
  }
  const onScreen = channel === current;
  switch (type) {
    case "message":
      if (onScreen) {
        messages.message(detail);
        readMarks.setSoon(channel, detail);
      } else showUnread(channel);
      break;
    case "position":
      if (onScreen) readMarks.setSoon(channel, detail);
      else showUnread(channel);
      break;
    case "subscribed":
      subscriptionsRefused.delete(channel);
      tabs.setRefused(channel, null);
      if (onScreen) showStatus();
      break;
    case "reset":
      if (onScreen) messages.notice("The chat history was reset on the server; earlier messages may be missing.");
      break;
    case "refused": {
      // Said once in the list, not at every retry; the status line keeps saying it.
      const again = detail.retryIn !== null;
      const told = subscriptionsRefused.get(channel) === detail.message;
      subscriptionsRefused.set(channel, detail.message);
      tabs.setRefused(channel, detail.message, { final: !again });
      if (onScreen) {
        showStatus();
        if (!told) messages.notice(`You cannot follow this channel: ${detail.message}${again ? " Trying again shortly." : ""}`);
      }
      break;
    }
    case "room":
      if (onScreen) showRoom();
      break;
    case "notice":
      if (onScreen) messages.notice(detail);
      break;
  }
}

// MARK: What the outbox says

function showOutgoing(entry, what = entry.failed ? "failed" : "queued", detail = {}) {
  if (what === "failed") messages.outgoing(entry, "failed", `Not sent: ${entry.failed.message || entry.failed.status}`);
  else if (what === "retrying") messages.outgoing(entry, "retrying", `Sending again in ${detail.retryIn} s — ${detail.message}`);
  else messages.outgoing(entry, "sending");
}

function outboxSays(entry, what, detail) {
  if (what === "acked") {
    messages.markOwn(detail.epoch, detail.offset);
    if (entry.channel === current) messages.settle(entry.id, detail.epoch, detail.offset);
    return;
  }
  if (what === "removed") {
    messages.forget(entry.id);
    return;
  }
  if (what === "failed") composer.showError(`A message was not sent: ${entry.failed.message || entry.failed.status}`);
  if (entry.channel === current) showOutgoing(entry, what, detail);
}

// MARK: The socket

function frameArrived(frame) {
  if (frame.type === "ack" || frame.type === "nack") outbox.receive(frame);
  else if (frame.type === "error") messages.notice(`Server: ${frame.message}`);
  else subscriptions.receive(frame);
}

// A channel opened by name comes back from the hash; the cookie picks among the tabs.
current = channelFromHash() ?? readChannelCookie();
if (current && current === channelFromHash()) tabs.add(current, labelOf(current));
// The one-to-one rooms this browser has talked in come back as tabs.
for (const key of Object.keys(localStorage).sort()) {
  const room = key.slice(dmKey("").length);
  if (key.startsWith(dmKey("dm:")) && me && room.split(":").includes(me) && isValidChannel(room)) tabs.add(room, labelOf(room));
}
if (!tabs.channels().includes(current)) current = configured[0] ?? "channel_1";
writeChannelCookie(current);
tabs.select(current);

for (const channel of tabs.channels()) addTab(channel);
followInbox(subscriptions, me);
show(current);

connection = connect({
  name: () => nameInput.value,
  onOpen() {
    subscriptions.opened();
    outbox.opened();
  },
  onClose() {
    subscriptions.closed();
    outbox.closed();
    showRoom();
  },
  onFrame: frameArrived,
  onState(state, detail) {
    connectionState = [state, detail];
    showStatus();
  },
});

const composer = setUpComposer({
  form: document.getElementById("composer"),
  nameInput,
  textInput: document.getElementById("text"),
  sendButton: document.getElementById("send"),
  counter: document.getElementById("counter"),
  errorLine: document.getElementById("send-error"),
  channel: () => current,
  send: (message) => outbox.add(message),
});

// A new name shows in the rooms once a socket says it: it is on the upgrade URL.
nameInput.addEventListener("change", () => connection.reopen());
