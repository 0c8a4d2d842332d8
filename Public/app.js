// The chat page. One chat.v2 socket carries everything: a subscription per tab (the tab
// on screen shows its messages and who is in the room, the others count what is unread),
// one to the person's inbox (a one-to-one message shows as a tab the moment it is
// written), the messages typed, from the outbox, and edits, deletes, reactions, typing
// and what the person has read. /history is read only for what the socket cannot say:
// "Load earlier", holes, and the newest messages of a tab just opened.

import { createOutbox, setUpComposer } from "./composer.js";
import { connect } from "./connection.js";
import { ARCHIVE, createSubscriptions, fetchHistory, isMessage } from "./history.js";
import { followInbox, inboxOf, newsOf } from "./inbox.js";
import { anonymousLabel, createMessageList, mentionPattern } from "./messages.js";
import { createPeopleList } from "./people.js";
import { around, setUpSearch } from "./search.js";
import { formatUntil, pageWords } from "./words.js";
import { channelFromHash, directRoom, isValidChannel, openedChannels, ownIdentity, readChannelCookie, setUpTabs, writeChannelCookie } from "./tabs.js";

const FIRST_LOOK = 50; // messages shown when a tab opens
const EARLIER = 100; // messages "Load earlier" brings
const TYPING_SHOWN_MS = 5000; // "Ada is typing…" lasts this long after her last typing frame
const READ_AFTER_MS = 300; // `read` goes at most this often per burst of messages

const words = pageWords(navigator.languages ?? [navigator.language]);
document.documentElement.lang = words.lang;
for (const element of document.querySelectorAll("[data-word]")) element.textContent = words[element.dataset.word];
for (const element of document.querySelectorAll("[data-word-placeholder]")) element.placeholder = words[element.dataset.wordPlaceholder];
for (const element of document.querySelectorAll("[data-word-aria-label]")) element.setAttribute("aria-label", words[element.dataset.wordAriaLabel]);

const statusLine = document.getElementById("status");
const reconnectButton = document.getElementById("reconnect-now");
const presenceLine = document.getElementById("presence");
const peoplePanel = document.getElementById("people");
const typingLine = document.getElementById("typing");
const nameInput = document.getElementById("name");
// A signed-in person's name is the site's: shown, not typed.
if (document.body.dataset.me) {
  nameInput.value = document.body.dataset.name ?? "";
  nameInput.readOnly = true;
  nameInput.title = words.nameFromSignIn;
}
const openForm = document.getElementById("open-channel");
const openInput = document.getElementById("channel-name");
const notifyButton = document.getElementById("enable-notifications");
const pageTitle = document.title;

const me = ownIdentity();
// A moderator's page (the server says so on the page of a moderator's sign-in, and again
// in the socket's `welcome`): Delete on every message, mute and ban in the people list.
let moderator = document.body.dataset.moderator !== undefined;
const inbox = inboxOf(me);
const unsupported = new Set(); // frame types the server answered "unknown frame type" to

let connection = null;
let connectionState = ["connecting", 0];
let current = null; // the channel on screen
let composer = null; // the form, set up once the socket is asked for

const send = (frame) => (unsupported.has(frame.type) ? false : (connection?.send(frame) ?? false));
const subscriptions = createSubscriptions({ send, onEvent: subscriptionSays });
const outbox = createOutbox({ send: (frame) => connection?.send(frame) ?? false, onChange: outboxSays });

const messages = createMessageList({
  list: document.getElementById("messages"),
  scroller: document.getElementById("scroller"),
  jumpButton: document.getElementById("new-messages"),
  earlierButton: document.getElementById("load-earlier"),
  emptyLine: document.getElementById("empty"),
  loadEarlier: (before, epoch) => subscriptions.get(current).earlier({ count: EARLIER, before, epoch }),
  archive: ARCHIVE,
  onEdit(id) {
    const entry = outbox.discard(id);
    if (entry) composer.edit(entry.data);
  },
  onDiscard: (id) => outbox.discard(id),
  onRetry: (id) => outbox.retry(id),
  me,
  names: () => [...(subscriptions.get(current)?.room.members?.values() ?? []), nameInput.value.trim()],
  myName: () => nameInput.value,
  act: changeMessage,
  moderator: () => moderator,
  words,
});

// MARK: Search (a server with an archive)

const search = ARCHIVE
  ? setUpSearch({
      form: document.getElementById("search"),
      input: document.getElementById("search-words"),
      panel: document.getElementById("search-results"),
      summary: document.getElementById("search-summary"),
      list: document.getElementById("search-list"),
      closeButton: document.getElementById("search-close"),
      channel: () => current,
      open: openAt,
      words,
    })
  : null;

// MARK: Tabs

const tabs = setUpTabs(document.getElementById("tabs"), { onSelect: (channel) => switchTo(channel), onClose: closeTab, words });
const configured = tabs.channels();

// One-to-one rooms show as "@name"; the names are remembered per room, and follow the
// name the other person shows now.
const dmKey = (channel) => `chatroom.dm.${channel}`;
const otherIn = (room) => room.slice(3).split(":").find((id) => id !== me) ?? null;
function labelOf(channel) {
  if (!channel.startsWith("dm:")) return tabs.label(channel);
  const other = otherIn(channel);
  return `@${localStorage.getItem(dmKey(channel)) || anonymousLabel(other)}`;
}

function nameDirect(room, name) {
  if (!name || localStorage.getItem(dmKey(room)) === name) return;
  localStorage.setItem(dmKey(room), name);
  tabs.setLabel(room, labelOf(room));
}

/** Adds a tab for `channel` (if new) and subscribes to it. */
function addTab(channel, { news = false } = {}) {
  tabs.add(channel, labelOf(channel), { closable: !configured.includes(channel) });
  // Everything in a one-to-one room is for the reader: what they never read there is unread.
  subscriptions.follow(channel, { fillsHoles: () => channel === current, firstLook: FIRST_LOOK, assumeUnread: news || channel.startsWith("dm:") });
}

function closeTab(channel) {
  if (configured.includes(channel)) return;
  subscriptions.unfollow(channel);
  tabs.remove(channel);
  if (channel.startsWith("dm:")) localStorage.removeItem(dmKey(channel));
  if (channel === current) {
    const next = configured[0] ?? tabs.channels()[0];
    current = null;
    if (next) {
      switchTo(next);
      document.getElementById(`tab-${next}`)?.focus();
    }
  }
}

function showUnread(channel) {
  const subscription = subscriptions.get(channel);
  if (!subscription) return;
  tabs.setUnread(channel, channel === current ? 0 : subscription.unread(me));
}

// MARK: The status line: the connection, or why the tab on screen is refused

const STATES = {
  connecting: () => words.connecting,
  // "compat": over Server-Sent Events, WebSocket being blocked on the way.
  connected: (detail) => (detail === "compat" ? words.connectedCompat : words.connected),
  reconnecting: (seconds) => words.reconnecting(seconds),
  offline: () => words.offline,
  signedOut: (reason) => words.signedOut(reason),
};

/** A refusal that asking again will not change: the room takes no messages from here. */
const isFinal = (refusal) => Boolean(refusal) && refusal.code !== 4503 && refusal.code !== 4429;

/** A ban from the room (the server's words say so; `until` when it ends). */
// By the refusal's reason, or by its words from a server that names none.
const isBan = (refusal) => refusal?.code === 4403 && (refusal.reason ? refusal.reason === "banned" : /^You are banned/.test(refusal.message ?? ""));

/** What a refusal says to the reader: a ban says until when, in the page's words; the rest in the server's. */
function refusalText(refusal) {
  if (isBan(refusal)) return words.bannedUntil(refusal.until ? formatUntil(refusal.until) : null);
  return refusal.message || words.refusedBy(refusal.code);
}

function showStatus() {
  const [state, detail] = connectionState;
  const refusal = state === "connected" ? subscriptions.get(current)?.refusal : null;
  const muted = state === "connected" && !refusal ? mutedHere(current) : null;
  if (refusal || muted) {
    statusLine.dataset.state = "refused";
    statusLine.textContent = refusal ? refusalText(refusal) : words.mutedUntil(formatUntil(muted));
  } else {
    statusLine.dataset.state = state;
    statusLine.textContent = STATES[state](detail);
  }
  // Waiting seconds for a backed-off retry: the reader may try now.
  reconnectButton.hidden = !((state === "reconnecting" && detail > 0) || state === "offline");
  const blocked = subscriptions.get(current)?.refusal;
  if (isFinal(blocked)) composer?.block(refusalText(blocked), isBan(blocked) ? refusalText(blocked) : words.cannotWriteHere(refusalText(blocked)));
  else if (mutedHere(current)) composer?.block(words.mutedUntil(formatUntil(mutedHere(current))), words.mutedUntil(formatUntil(mutedHere(current))));
  else composer?.block(null, words.messagePlaceholder);
}

// MARK: Muted: the server says so (`muted`, live and on subscribing), and until when

const mutes = new Map(); // channel → {until (Unix ms), timer}

/** Until when the reader is muted in `channel` (Unix ms), or null. */
function mutedHere(channel) {
  const until = mutes.get(channel)?.until;
  return until && until > Date.now() ? until : null;
}

function mutedSays(frame) {
  const channel = frame.channel;
  const was = mutes.get(channel);
  clearTimeout(was?.timer);
  mutes.delete(channel);
  const until = Number(frame.until) || 0;
  if (until > Date.now()) {
    // Lifted by itself when the time comes (a timer cannot wait past ~24 days: the server's `muted` 0, or a reload, does then).
    const wait = until - Date.now() + 250;
    const timer = wait < 2 ** 31 - 1 ? setTimeout(() => mutedSays({ channel, until: 0 }), wait) : null;
    mutes.set(channel, { until, timer });
    if (channel === current && was?.until !== until) messages.notice(words.mutedUntil(formatUntil(until)));
  }
  if (channel === current) showStatus();
}

reconnectButton.addEventListener("click", () => connection.reopen());

function showRoom() {
  const room = subscriptions.get(current)?.room;
  presenceLine.textContent = room?.online == null ? "" : words.online(room.online);
  // What this page did that has not ended yet: the list marks those people.
  const known = moderation.get(current);
  const now = Date.now();
  const muted = new Map([...(known?.muted ?? [])].filter(([, until]) => until > now));
  const banned = new Map([...(known?.banned ?? [])].filter(([, ban]) => !ban.until || ban.until > now));
  people.show(room?.members ?? null, { moderator, muted, banned });
  peopleHint.textContent = moderator ? words.peopleHintModerator : words.peopleHint;
}

// MARK: Who is online, and one-to-one rooms with them.

const peopleHint = document.querySelector("#people .people-hint");
const people = createPeopleList({ list: document.getElementById("people-list"), me, onChoose: openDirect, onModerate: moderate, untilText: formatUntil, words });

// MARK: Moderation (a moderator's page): mute, ban and unban from the people list

const moderation = new Map(); // channel → {muted: Map id → until, banned: Map id → {name, until}}: what this page did

function knownIn(channel) {
  if (!moderation.has(channel)) moderation.set(channel, { muted: new Map(), banned: new Map() });
  return moderation.get(channel);
}

/** action "mute" (seconds, 0 lifts), "ban" (seconds, 0 until lifted) or "unban" `id` (shown as `name`) in the room on screen. */
async function moderate(action, id, name, seconds) {
  const channel = current;
  const frame = { type: action, channel, user: id };
  if (seconds !== undefined) frame.seconds = seconds;
  const answer = await outbox.request(frame);
  if (!answer.ok) {
    people.say(words.couldNotModerate(name, answer.message || String(answer.status)), { failed: true });
    return;
  }
  const until = Number(answer.frame?.until) || 0;
  const known = knownIn(channel);
  if (action === "mute") {
    if (until > Date.now()) known.muted.set(id, until);
    else known.muted.delete(id);
  } else if (action === "ban") {
    known.banned.set(id, { name, until });
    known.muted.delete(id);
  } else known.banned.delete(id);
  people.say(words.moderated(action, name, until > 0 ? formatUntil(until) : null));
  if (channel === current) showRoom();
}

function openDirect(id, name) {
  if (!me || id === me) return;
  const room = directRoom(me, id);
  localStorage.setItem(dmKey(room), name);
  addTab(room);
  peoplePanel.open = false;
  switchTo(room);
  document.getElementById(`tab-${room}`)?.focus();
}

// The list closes on Escape and on a click elsewhere.
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && peoplePanel.open) {
    peoplePanel.open = false;
    presenceLine.focus();
  }
});
document.addEventListener("click", (event) => {
  if (peoplePanel.open && !peoplePanel.contains(event.target)) peoplePanel.open = false;
});

/** A one-to-one room with news in the inbox; `name` is who wrote. The reader stays where they are. */
function showRoomWithNews(room, name, frame) {
  if (!localStorage.getItem(dmKey(room)) && name) localStorage.setItem(dmKey(room), name);
  if (tabs.channels().includes(room)) return; // its own subscription counts (and tells) the message
  addTab(room, { news: true }); // a room new to this browser: what it holds is news
  notify(room, { name, from: otherIn(room), data: words.wroteToYou }, { force: true });
}

/** The names of a room's people: one-to-one tabs with them follow the names they show now. */
function namesFrom(room) {
  for (const [id, name] of room.members ?? []) {
    if (!name || id === me) continue;
    const direct = me ? directRoom(me, id) : null;
    if (direct && tabs.channels().includes(direct)) nameDirect(direct, name);
  }
}

// MARK: The channel on screen

let opening = 0; // which show() is the latest, so that a slow read cannot land in another tab
const firstLoadFailed = new Set(); // channels whose newest messages could not be read: read again when the socket is back
const seenBy = new Map(); // one-to-one room → the offset the other person has read

/** Shows `channel`: what its subscription keeps, the newest from /history if that is little, and the outbox. */
async function show(channel) {
  const subscription = subscriptions.get(channel);
  const mine = ++opening;
  messages.clear();
  for (const message of subscription.kept) messages.message(message);
  for (const entry of outbox.entries(channel)) showOutgoing(entry);
  showRoom();
  showStatus();
  showTyping();
  if (subscription.refusal) messages.notice(isBan(subscription.refusal) ? refusalText(subscription.refusal) : words.cannotFollow(subscription.refusal.message));
  if (mutedHere(channel)) messages.notice(words.mutedUntil(formatUntil(mutedHere(channel))));
  if (subscription.kept.length < FIRST_LOOK) {
    try {
      const older = await subscription.earlier({ count: FIRST_LOOK - subscription.kept.length, before: messages.firstOffset ?? undefined });
      if (mine !== opening) return;
      messages.prepend(older.messages);
      messages.setEarliest(older);
      firstLoadFailed.delete(channel);
    } catch (error) {
      if (mine !== opening) return;
      // Banned: the room's notice says so already; its history is not the reader's to read.
      if (isBan(subscription.refusal) || isBan({ code: 4403, message: error.message })) return;
      firstLoadFailed.add(channel);
      messages.notice(words.couldNotLoadRecent(error.message));
    }
  }
  if (subscription.position) messages.setLoaded();
  if (seenBy.has(channel)) messages.seen(seenBy.get(channel));
  markRead();
}

/** Shows a search result in the conversation, its neighbours around it (of its own epoch). */
async function openAt(result) {
  const channel = current;
  const mine = ++opening;
  const page = await fetchHistory(channel, { ...around(result.offset), epoch: result.epoch, limit: 100 });
  if (mine !== opening || page.epoch !== result.epoch) return;
  messages.showAround(page.messages.filter(isMessage), result, { firstOffset: page.firstOffset, previousEpoch: page.previousEpoch ?? null, epoch: result.epoch });
}

function switchTo(channel) {
  if (channel === current) return;
  search?.close();
  current = channel;
  writeChannelCookie(channel);
  if (channelFromHash() !== channel || configured.includes(channel)) history.replaceState(null, "", configured.includes(channel) ? location.pathname + location.search : `#channel=${encodeURIComponent(channel)}`);
  tabs.select(channel);
  tabs.setUnread(channel, 0);
  for (const other of tabs.channels()) if (other !== channel) showUnread(other);
  show(channel);
}

/** Opens `name` (a channel typed, or from the hash) in a tab of its own; false if it is not a channel name. */
function openByName(name) {
  if (!isValidChannel(name)) return false;
  addTab(name);
  switchTo(name);
  return true;
}

openForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = openInput.value.trim();
  if (!isValidChannel(name)) {
    openInput.setCustomValidity(words.channelRule);
    openInput.reportValidity();
    return;
  }
  openInput.setCustomValidity("");
  openInput.value = "";
  openByName(name);
  document.getElementById(`tab-${name}`)?.focus();
});
openInput.addEventListener("input", () => openInput.setCustomValidity(""));

// #channel=NAME changed in the address bar (or a link): open it.
window.addEventListener("hashchange", () => {
  const name = channelFromHash();
  if (name && name !== current) openByName(name);
});

// MARK: Read state: the server keeps it per person, for every tab and device

let readTimer = null;

/** Tells the server the person has seen the newest message on screen (visible, not scrolled up). */
function markRead() {
  if (document.hidden || !current || !messages.atNewest) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => subscriptions.get(current)?.markRead(), READ_AFTER_MS);
}

document.getElementById("scroller").addEventListener("scroll", () => {
  if (messages.atNewest) markRead();
});

// MARK: Someone is typing

const typers = new Map(); // id → {name, timer}, in the channel on screen

function showTyping() {
  const names = [...typers.values()].map((typer) => typer.name);
  typingLine.textContent = names.length === 0 ? "" : words.typing(names);
}

function typingSays(channel, frame) {
  if (channel !== current || !frame.member?.id || frame.member.id === me) return;
  const id = frame.member.id;
  clearTimeout(typers.get(id)?.timer);
  const timer = setTimeout(() => {
    typers.delete(id);
    showTyping();
  }, TYPING_SHOWN_MS);
  typers.set(id, { name: frame.member.name || anonymousLabel(id), timer });
  showTyping();
}

function stoppedTyping(id) {
  if (!id || !typers.has(id)) return;
  clearTimeout(typers.get(id).timer);
  typers.delete(id);
  showTyping();
}

function clearTypers() {
  for (const typer of typers.values()) clearTimeout(typer.timer);
  typers.clear();
  showTyping();
}

// MARK: Notifications: a mention of the reader, or a one-to-one message, while the page is hidden

let unseenWhileHidden = 0;

function showTitle() {
  document.title = unseenWhileHidden > 0 ? `(${unseenWhileHidden}) ${pageTitle}` : pageTitle;
}

function mentionsMe(data) {
  const name = nameInput.value.trim();
  const pattern = name ? mentionPattern([name]) : null;
  return Boolean(pattern && typeof data === "string" && pattern.test(data));
}

/** A message from someone else arrived in `channel`: counted in the title and, if it is for the reader, notified. */
function notify(channel, frame, { force = false } = {}) {
  if (!document.hidden) return;
  const forReader = force || channel.startsWith("dm:") || mentionsMe(frame.data);
  if (channel !== current && !forReader) return;
  unseenWhileHidden++;
  showTitle();
  if (!forReader || !("Notification" in window) || Notification.permission !== "granted") return;
  const who = frame.name || (frame.from ? anonymousLabel(frame.from) : words.anonymous);
  try {
    const shown = new Notification(`${who} · ${labelOf(channel)}`, { body: (frame.data ?? "").slice(0, 200), tag: channel });
    shown.onclick = () => {
      window.focus();
      switchTo(channel);
    };
  } catch {
    // Some browsers allow notifications only from a service worker: the title still counts.
  }
}

function showNotifyButton() {
  notifyButton.hidden = !("Notification" in window) || Notification.permission !== "default";
}
// Asked on a click, never on load.
notifyButton.addEventListener("click", async () => {
  try {
    await Notification.requestPermission();
  } finally {
    showNotifyButton();
  }
});

document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  unseenWhileHidden = 0;
  showTitle();
  markRead();
});

// MARK: Edits, deletes and reactions

async function changeMessage(action, entry, detail = {}) {
  const frame = { type: action, channel: entry.channel ?? current, of: entry.offset };
  if (action === "edit") frame.data = detail.data;
  if (action === "react") frame.emoji = detail.emoji;
  const answer = await outbox.request(frame);
  if (!answer.ok) composer.showError(words.couldNotChange(action, answer.message || String(answer.status)));
}

// MARK: What the subscriptions say

const subscriptionsRefused = new Map(); // channel → the refusal last told in its list

function subscriptionSays(channel, type, detail) {
  if (channel === inbox) {
    if (type === "message") {
      const news = newsOf(detail, me);
      if (news) showRoomWithNews(news.room, news.name, detail);
    }
    return;
  }
  const onScreen = channel === current;
  switch (type) {
    case "message": {
      const fromOther = !(me && detail.from === me);
      if (fromOther) notify(channel, detail);
      if (channel.startsWith("dm:") && detail.from && detail.from !== me && detail.name) nameDirect(channel, detail.name);
      if (onScreen) {
        stoppedTyping(detail.from);
        messages.message(detail);
        messages.setLoaded();
        markRead();
      } else showUnread(channel);
      break;
    }
    case "event":
      if (onScreen) messages.update(detail);
      else showUnread(channel);
      break;
    case "position":
    case "looked":
      if (onScreen) {
        messages.setLoaded();
        markRead();
      } else showUnread(channel);
      break;
    case "read":
      showUnread(channel);
      break;
    case "typing":
      typingSays(channel, detail);
      break;
    case "seen":
      if (detail.member?.id === me) break;
      seenBy.set(channel, detail.offset);
      if (onScreen) messages.seen(detail.offset);
      break;
    case "subscribed":
      subscriptionsRefused.delete(channel);
      tabs.setRefused(channel, null);
      // A one-to-one room says how far the other person has read it: "Seen" after a reload too.
      if (Number.isSafeInteger(detail.seen) && detail.seen > 0) {
        seenBy.set(channel, Math.max(seenBy.get(channel) ?? 0, detail.seen));
        if (onScreen) messages.seen(seenBy.get(channel));
      }
      if (onScreen) showStatus();
      else showUnread(channel);
      break;
    case "loading":
      if (onScreen) messages.notice(words.couldNotLoadRecent(detail.message));
      break;
    case "reset":
      if (onScreen) messages.notice(words.historyReset);
      break;
    case "refused": {
      // Said once in the list, not at every retry; the status line keeps saying it.
      const again = detail.retryIn !== null;
      const told = subscriptionsRefused.get(channel) === detail.message;
      subscriptionsRefused.set(channel, detail.message);
      tabs.setRefused(channel, isBan(detail) ? refusalText(detail) : detail.message, { final: !again });
      if (onScreen) {
        showStatus();
        showRoom();
        if (!told) messages.notice(isBan(detail) ? refusalText(detail) : words.cannotFollow(detail.message) + (again ? ` ${words.tryingAgain}` : ""));
      }
      break;
    }
    case "room": {
      namesFrom(detail);
      if (onScreen) showRoom();
      break;
    }
    case "notice":
      if (onScreen) messages.notice(detail);
      break;
  }
}

// MARK: What the outbox says

const countdowns = new Map(); // outbox ID → the timer that counts its retry's seconds down

/** Slow mode (429 in the room's words): the server names it, and says when. */
const isSlowMode = (detail) => detail.status === 429 && (detail.reason ? detail.reason === "slow_mode" : /slow mode/i.test(detail.message ?? ""));

function showOutgoing(entry, what = entry.failed ? "failed" : "queued", detail = {}) {
  clearInterval(countdowns.get(entry.id));
  countdowns.delete(entry.id);
  if (what === "failed") messages.outgoing(entry, "failed", words.notSent(entry.failed.message || entry.failed.status));
  else if (what === "retrying") {
    let left = detail.retryIn;
    const draw = () => messages.outgoing(entry, "retrying", isSlowMode(detail) ? words.slowMode(left) : words.sendingAgain(left, detail.message));
    draw();
    const timer = setInterval(() => {
      if (--left < 1 || entry.channel !== current) {
        clearInterval(timer);
        countdowns.delete(entry.id);
      } else draw();
    }, 1000);
    countdowns.set(entry.id, timer);
  } else messages.outgoing(entry, "sending");
}

function outboxSays(entry, what, detail) {
  if (what !== "retrying") {
    clearInterval(countdowns.get(entry.id));
    countdowns.delete(entry.id);
  }
  if (what === "acked") {
    messages.markOwn(detail.epoch, detail.offset);
    if (entry.channel === current) messages.settle(entry.id, detail.epoch, detail.offset);
    return;
  }
  if (what === "removed") {
    messages.forget(entry.id);
    return;
  }
  if (what === "failed") composer.showError(words.messageNotSent(entry.failed.message || entry.failed.status));
  if (entry.channel === current) showOutgoing(entry, what, detail);
}

// MARK: The socket

const UNKNOWN_TYPE = /unknown frame type "([a-z]+)"/;

function frameArrived(frame) {
  if (frame.type === "ack" || frame.type === "nack" || frame.type === "moderated") outbox.receive(frame);
  else if (frame.type === "welcome") {
    // A signed-in socket says who it is: whether the person moderates is the socket's word.
    if (Boolean(frame.moderator) !== moderator) {
      moderator = Boolean(frame.moderator);
      messages.redraw();
      showRoom();
    }
  } else if (frame.type === "muted") mutedSays(frame);
  else if (frame.type === "error") {
    // A server older than the page: what it does not know, the page stops asking.
    const unknown = UNKNOWN_TYPE.exec(frame.message ?? "")?.[1];
    if (unknown) {
      unsupported.add(unknown);
      outbox.refuseRequests(unknown, words.serverCannot(unknown));
    } else messages.notice(words.server(frame.message));
  } else subscriptions.receive(frame);
}

// Read state is the server's now: the marks earlier versions of the page kept go.
for (const key of Object.keys(localStorage)) if (key.startsWith("chatroom.seen.")) localStorage.removeItem(key);

// A channel opened by name comes back from the hash or from the tabs kept; the cookie
// picks among the tabs.
const fromHash = channelFromHash();
current = fromHash ?? readChannelCookie();
for (const channel of openedChannels()) if (!channel.startsWith("dm:")) tabs.add(channel, channel, { closable: true });
if (fromHash) tabs.add(fromHash, labelOf(fromHash), { closable: !configured.includes(fromHash) });
// The one-to-one rooms this browser has talked in come back as tabs.
for (const key of Object.keys(localStorage).sort()) {
  const room = key.slice(dmKey("").length);
  if (key.startsWith(dmKey("dm:")) && me && room.split(":").includes(me) && isValidChannel(room)) tabs.add(room, labelOf(room), { closable: true });
}
if (!tabs.channels().includes(current)) current = configured[0] ?? "channel_1";
writeChannelCookie(current);
tabs.select(current);

for (const channel of tabs.channels()) addTab(channel);
followInbox(subscriptions, me);
show(current);
showNotifyButton();

connection = connect({
  name: () => nameInput.value,
  onOpen() {
    subscriptions.opened();
    outbox.opened();
    composer?.showError("");
    // A tab whose newest messages could not be read (offline, /history 503): again now.
    if (firstLoadFailed.has(current)) show(current);
  },
  onClose() {
    subscriptions.closed();
    outbox.closed();
    clearTypers();
    showRoom();
  },
  onFrame: frameArrived,
  onState(state, detail) {
    connectionState = [state, detail];
    showStatus();
  },
});

composer = setUpComposer({
  form: document.getElementById("composer"),
  nameInput,
  textInput: document.getElementById("text"),
  sendButton: document.getElementById("send"),
  counter: document.getElementById("counter"),
  errorLine: document.getElementById("send-error"),
  channel: () => current,
  send(message) {
    outbox.add(message);
    // Sent while reading older messages: the reader is taken to their message.
    if (!messages.atNewest) messages.showNewest();
  },
  // Only about a room the socket is in (the server refuses the others with an error).
  onTyping: () => subscriptions.get(current)?.state === "subscribed" && send({ type: "typing", channel: current }),
  onEditLast: () => messages.editLast(),
});
showStatus();

// A new name shows in the rooms once a socket says it: it is on the upgrade URL.
nameInput.addEventListener("change", () => {
  connection.reopen();
  messages.redraw(); // @mentions of the new name
});

// At 360 px the name field folds into a button that shows the name (or "Name").
const nameToggle = document.getElementById("name-toggle");
function showNameToggle() {
  nameToggle.textContent = nameInput.value.trim() || words.nameShort;
  nameToggle.setAttribute("aria-label", nameInput.value.trim() ? `${words.yourName}: ${nameInput.value.trim()}` : words.yourName);
}
showNameToggle();
nameInput.addEventListener("input", showNameToggle);
nameToggle.addEventListener("click", () => {
  const open = document.getElementById("composer").classList.toggle("show-name");
  nameToggle.setAttribute("aria-expanded", String(open));
  if (open) nameInput.focus();
});
