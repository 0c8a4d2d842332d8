// The page's subscriptions: one per channel it follows (each tab, and the inbox), all over
// the one chat.v2 socket. A subscription keeps the page's copy of its channel whole:
// every message once, in offset order, and where the page stands (the epoch and offset of
// the last message it has), kept in localStorage so that a reload resumes from there.
//
// The socket may skip messages (the server says `gap`, or an offset jumps) or say `reset`
// (the history was lost, or the position is older than what it keeps). For the channel
// on screen and for the inbox, a hole is filled from /history before anything after it
// is handled; for a channel in the background it is only counted (the unread badge needs
// the count, not the words), and its messages are read when the tab is opened.
// /history is read for nothing else: no polling.

import { retryDelay } from "./connection.js";
import { applyEvent } from "./messages.js";

const PAGE = 1000; // messages per /history read when filling a hole
const KEEP = 300; // messages kept per channel, as many as the list shows
const SAVE_AFTER_MS = 500; // positions are written at most twice a second per channel
const FIRST_LOOK_TRIES = 6; // a first look that cannot read /history is tried again, this many times
const EVENTS = new Set(["edit", "delete", "react"]); // frames with an offset that change a message

/** Whether a frame or /history entry is a message to show (not an event about one). */
export function isMessage(entry) {
  return entry.type === undefined || entry.type === "message";
}

/** Whether the server keeps an archive: history older than Redis', older epochs, search. */
export const ARCHIVE = document.body.dataset.archive !== undefined;

/** A read of /history: after `since`, before `before` (or both), of `epoch` (default: the current one). */
export async function fetchHistory(channel, { since = null, before = null, epoch = null, limit = 100 } = {}) {
  const query = new URLSearchParams({ channel, limit: String(limit) });
  if (since !== null) query.set("since", String(since));
  if (before !== null) query.set("before", String(before));
  if (epoch) query.set("epoch", epoch);
  // A server run with --connect-secret asks the same token for reading as for sockets.
  const token = new URLSearchParams(location.search).get("token");
  if (token) query.set("token", token);
  const response = await fetch(`/history?${query}`, { cache: "no-store" });
  if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
  return response.json();
}

// MARK: Positions in localStorage

const unsaved = new Map(); // key → position, written by the next save
let saveTimer = null;

function savePositions() {
  clearTimeout(saveTimer);
  saveTimer = null;
  for (const [key, position] of unsaved) {
    try {
      localStorage.setItem(key, JSON.stringify(position));
    } catch {
      // Storage full or refused: the next reload resumes from an older position, which
      // costs a longer replay, not a lost message.
    }
  }
  unsaved.clear();
}
// A page closed within the half second still leaves its positions behind.
window.addEventListener("pagehide", savePositions);

const EPOCH = /^[A-Za-z0-9]{1,64}$/;

function readPosition(key) {
  try {
    const position = JSON.parse(localStorage.getItem(key) ?? "null");
    // A position the server would not take back (it answers a bad since/epoch with an
    // `error` frame that names no channel) is as good as none.
    if (position && Number.isSafeInteger(position.offset) && position.offset >= 0) return { epoch: EPOCH.test(position.epoch ?? "") ? position.epoch : null, offset: position.offset };
  } catch {
    // Not ours or damaged: start without it.
  }
  return null;
}

function writePosition(key, position) {
  unsaved.set(key, { epoch: position.epoch, offset: position.offset });
  saveTimer ??= setTimeout(savePositions, SAVE_AFTER_MS);
}

// MARK: One subscription

/**
 * The page's subscription to `channel`.
 *
 * positionKey: where its position lives in localStorage. fillsHoles(): whether holes are
 * read from /history now (the channel on screen, the inbox). firstLook: how many of the
 * newest messages to read when the page subscribes without a position of its own (or
 * after a `reset`) and fills holes; 0 for none. send(frame) sends on the socket (false if
 * it is closed). emit(type, detail) tells the page: "message" (a frame, once, in order),
 * "subscribed", "position" (the position moved without a message, e.g. over a hole),
 * "reset", "refused" ({code, message, retryIn}), "room" (presence or members changed),
 * "notice" (text for the reader), "event" (an edit, delete or react frame, once, in
 * order, already applied to the message kept), "looked" (the first look is done),
 * "loading" (a first look could not read /history: tried again), "typing" ({member}), "read" (the
 * person's read offset moved, from another of their sockets), "seen" ({member, offset}).
 */
function createSubscription({ channel, positionKey, fillsHoles, firstLook, assumeUnread, send, emit }) {
  let state = "idle"; // idle, subscribing, subscribed, waiting (to retry), refused, unsubscribing
  let position = readPosition(positionKey);
  let kept = []; // the newest messages, contiguous, ending at position.offset
  let resumed = false; // the last subscribe carried since/epoch
  let subscribedAt = null; // the channel's last offset when `subscribed` came, until the next frame
  let refusal = null;
  let attempt = 0;
  let retryTimer = null;
  let chain = Promise.resolve();
  let read = null; // the offset the person has read up to (the server's, from `subscribed` and `read`)
  let readSent = 0; // the highest `read` this page sent
  const room = { online: null, members: null };

  function moveTo(epoch, offset) {
    position = { epoch, offset };
    writePosition(positionKey, position);
  }

  function subscribe() {
    if (state !== "idle" && state !== "waiting") return;
    clearTimeout(retryTimer);
    const frame = { type: "subscribe", channel };
    resumed = Boolean(position?.epoch);
    if (resumed) {
      frame.since = position.offset;
      frame.epoch = position.epoch;
    }
    state = send(frame) ? "subscribing" : "idle";
  }

  function retryLater(delay) {
    state = "waiting";
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      state = "idle";
      subscribe();
    }, delay);
  }

  function accept(frame) {
    moveTo(frame.epoch, frame.offset);
    if (EVENTS.has(frame.type)) {
      const target = kept.find((message) => message.offset === frame.of);
      if (target) applyEvent(target, frame);
      emit("event", frame);
      return;
    }
    if (!isMessage(frame)) return;
    kept.push(frame);
    if (kept.length > KEEP) kept.shift();
    emit("message", frame);
  }

  /** Offsets from…to of the current epoch are missing: read them, or count them. firstLook: retried when /history fails. */
  async function hole(from, to, { firstLook = false } = {}) {
    if (to < from) return;
    if (!fillsHoles()) {
      kept = []; // no longer contiguous: the tab reads its newest messages when opened
      moveTo(position.epoch, to);
      emit("position", position);
      return;
    }
    const epoch = position.epoch;
    let since = from - 1;
    let failure = null;
    for (let tries = 0; ; tries++) {
      try {
        failure = null;
        while (since < to) {
          const page = await fetchHistory(channel, { since, limit: Math.min(PAGE, to - since) });
          if (page.epoch !== epoch || page.messages.length === 0) break;
          for (const message of page.messages) if (message.offset > position.offset && message.offset <= to) accept(message);
          since = page.messages[page.messages.length - 1].offset;
        }
      } catch (error) {
        // Offline, or over the history allowance, or Redis away (503).
        failure = error;
      }
      // A first look that failed would leave the channel empty for good, live from a
      // position with nothing before it: it is read again, later (live messages wait
      // behind it, in order). A hole in the middle is given up on: what follows shows.
      if (!failure || !firstLook || tries + 1 >= FIRST_LOOK_TRIES || state === "gone") break;
      if (tries === 0) emit("loading", failure); // said once, not at every try
      await new Promise((resolve) => setTimeout(resolve, retryDelay(tries, 1000, 15000)));
    }
    if (position.epoch === epoch && position.offset < to) {
      emit("notice", `${to - position.offset} message(s) could not be ${failure ? `loaded (${failure.message})` : "recovered"}.`);
      kept = [];
      moveTo(epoch, to);
      emit("position", position);
    }
  }

  /** The page has nothing of this epoch before `last`: read the newest few, if it fills holes. */
  async function look(epoch, last) {
    kept = [];
    const count = fillsHoles() ? firstLook : 0;
    moveTo(epoch, Math.max(0, last - count));
    if (last > position.offset) await hole(position.offset + 1, last, { firstLook: count > 0 });
    else emit("position", position);
    emit("looked", position);
  }

  async function message(frame) {
    if (!position || frame.epoch !== position.epoch) {
      // A new epoch without a `reset` first: the channel was empty when subscribed to,
      // or its history was lost. Its offsets start again at 1.
      kept = [];
      moveTo(frame.epoch, 0);
    }
    if (frame.offset <= position.offset) return; // the page has it: a replay overlapping
    if (frame.offset > position.offset + 1) await hole(position.offset + 1, frame.offset - 1);
    if (frame.offset > position.offset) accept(frame);
  }

  function refused(frame) {
    // `until` (Unix ms): a ban for some time says when it ends.
    const until = Number.isSafeInteger(frame.until) && frame.until > 0 ? frame.until : null;
    refusal = { code: frame.code, message: frame.message, until, reason: typeof frame.reason === "string" ? frame.reason : null };
    // Out of the room (a ban ends a subscription): who is in it is no longer known here.
    room.online = null;
    room.members = null;
    let retryIn = null;
    if (frame.code === 4503 || frame.code === 4429) {
      // The broker is down, or the address read too much history or holds too many
      // subscriptions: all of which pass. Try again, slower each time.
      retryIn = retryDelay(attempt++, frame.code === 4429 ? 5000 : 1000, 30000);
      retryLater(retryIn);
    } else if (frame.code === 4400 && resumed) {
      // The server could not read the position the page kept: forget it, start afresh.
      position = null;
      state = "idle";
      subscribe();
      return;
    } else {
      // 4403 a private room of others, 4409 a full room, 4401 a token not for this
      // channel, 4400 a name the server refuses: asking again would get the same answer.
      // A ban that ends: asked again once it has (timers cannot wait past ~24 days).
      state = "refused";
      const wait = until === null ? null : until - Date.now() + 1000;
      if (wait !== null && wait < 2 ** 31 - 1) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(() => {
          if (state !== "refused") return;
          state = "idle";
          subscribe();
        }, Math.max(0, wait));
      }
    }
    emit("refused", { ...refusal, retryIn });
  }

  async function handle(frame) {
    const justSubscribed = subscribedAt;
    subscribedAt = null;
    switch (frame.type) {
      case "subscribed":
        state = "subscribed";
        refusal = null;
        attempt = 0;
        subscribedAt = { epoch: frame.epoch ?? null, offset: frame.offset ?? 0 };
        // The server keeps what the person has read (0: never). A channel never read (or
        // a server that keeps nothing) counts from where it stands when first seen: a
        // newcomer is not shown the whole history as unread. Unless everything in it is
        // news to the person (assumeUnread: a one-to-one room).
        if (Number.isSafeInteger(frame.read) && (frame.read > 0 || assumeUnread)) read = Math.max(read ?? 0, frame.read);
        else read ??= assumeUnread ? 0 : frame.offset ?? 0;
        emit("subscribed", frame);
        // Without a resume, what the channel holds already is history, not news.
        if (!resumed) await look(frame.epoch ?? null, frame.offset ?? 0);
        break;
      case "reset":
        if (position?.epoch) emit("reset", frame);
        // Right after `subscribed`, its offset says where the new epoch stands; a reset
        // during a subscription starts from the new epoch's first message.
        await look(frame.epoch, justSubscribed?.offset ?? 0);
        break;
      case "message":
      case "edit":
      case "delete":
      case "react":
        await message(frame);
        break;
      case "gap":
        if (position && frame.to > position.offset) await hole(Math.max(frame.from, position.offset + 1), frame.to);
        break;
      case "refused":
        refused(frame);
        break;
      case "unsubscribed":
        if (state === "unsubscribing") state = "idle";
        else if (state === "subscribed" || state === "subscribing") retryLater(retryDelay(attempt++)); // not asked for: join again
        break;
    }
  }

  function roomFrame(frame) {
    if (frame.type === "presence") room.online = frame.online;
    else if (frame.type === "members") {
      room.online = frame.online ?? frame.members.length;
      room.members = new Map(frame.members.map((member) => [member.id, member.name ?? null]));
    } else if (frame.type === "join") {
      room.members ??= new Map();
      room.members.set(frame.member.id, frame.member.name ?? null);
    } else if (frame.type === "leave") room.members?.delete(frame.member.id);
    emit("room", room);
  }

  return {
    channel,
    subscribe,
    /** The socket is gone: the subscription with it. */
    lost() {
      if (state === "subscribing" || state === "subscribed") state = "idle";
      if (state === "unsubscribing") state = "gone";
      room.online = null;
      room.members = null;
    },
    /** Asks the server to stop; nothing of the channel follows `unsubscribed`. */
    unsubscribe() {
      clearTimeout(retryTimer);
      const wasOn = state === "subscribing" || state === "subscribed";
      state = wasOn && send({ type: "unsubscribe", channel }) ? "unsubscribing" : "gone";
    },
    /** Takes one frame of this channel, after those before it. */
    receive(frame) {
      if (frame.type === "presence" || frame.type === "members" || frame.type === "join" || frame.type === "leave") {
        roomFrame(frame);
        return chain;
      }
      if (frame.type === "typing" || frame.type === "seen") {
        emit(frame.type, frame);
        return chain;
      }
      if (frame.type === "read") {
        if (Number.isSafeInteger(frame.offset) && frame.offset > (read ?? -1)) {
          read = frame.offset;
          readSent = Math.max(readSent, read);
          emit("read", read);
        }
        return chain;
      }
      chain = chain.then(() => handle(frame)).catch((error) => emit("notice", `Could not load missing messages: ${error.message}`));
      return chain;
    },
    /**
     * Up to `count` messages of `epoch` before offset `before`, read from /history: for
     * "Load earlier", and for a tab opened with few messages kept. By default, before the
     * first message kept (or after the position when none is) in the current epoch;
     * `before` null: the newest of `epoch` (an older epoch, reached from the one after
     * it). Answers {messages, firstOffset, previousEpoch, epoch}: firstOffset the oldest
     * the history holds of the epoch (null if none, undefined if the epoch has gone);
     * previousEpoch the epoch the archive kept before it, once the answer reaches its
     * first message (null: none, or no archive).
     */
    async earlier({ count, before = kept[0]?.offset ?? (position ? position.offset + 1 : 0), epoch = position?.epoch } = {}) {
      if (!epoch) {
        // Nothing in the current epoch (the channel is empty, or its history was lost):
        // with an archive, the epoch kept before it.
        if (!ARCHIVE) return { messages: [], firstOffset: null, previousEpoch: null, epoch: "" };
        const page = await fetchHistory(channel, { limit: 1 });
        return { messages: [], firstOffset: null, previousEpoch: page.epoch ? null : (page.previousEpoch ?? null), epoch: "" };
      }
      if (before !== null && before <= 1) {
        if (!ARCHIVE) return { messages: [], firstOffset: null, previousEpoch: null, epoch };
        // At the epoch's first message already: only what came before it is asked.
        const page = await fetchHistory(channel, { since: 0, epoch, limit: 1 });
        if (page.epoch !== epoch) return { messages: [], firstOffset: undefined, epoch };
        return { messages: [], firstOffset: page.firstOffset, previousEpoch: page.previousEpoch ?? null, epoch };
      }
      const page = await fetchHistory(channel, { before, epoch, limit: count });
      if (page.epoch !== epoch) return { messages: [], firstOffset: undefined, epoch };
      return {
        messages: page.messages.filter((message) => (before === null || message.offset < before) && isMessage(message)),
        firstOffset: page.firstOffset,
        previousEpoch: page.previousEpoch ?? null,
        epoch,
      };
    },
    /**
     * The person has seen everything up to the page's position: tells the server (only
     * forward; it tells the person's other sockets). False if there was nothing to say.
     */
    markRead() {
      if (!position || state !== "subscribed" || position.offset <= Math.max(read ?? 0, readSent)) return false;
      if (!send({ type: "read", channel, offset: position.offset })) return false;
      readSent = position.offset;
      read = position.offset;
      return true;
    },
    /**
     * How many messages of others after what the person has read: the tab's badge. What
     * the page keeps is counted exactly; offsets it never read (a background tab counts
     * its holes) count as one message each.
     */
    unread(me) {
      if (read === null || !position) return 0;
      const firstKept = kept[0]?.offset ?? position.offset + 1;
      const unknown = Math.max(0, Math.min(firstKept - 1, position.offset) - read);
      return unknown + kept.filter((message) => message.offset > read && !message.deleted && !(me && message.from === me)).length;
    },
    /** The offset read up to, or null before `subscribed`. */
    get read() {
      return read;
    },
    /** The newest messages the page has, oldest first. */
    get kept() {
      return kept.slice();
    },
    /** {epoch, offset} of the last message the page has, or null before the first look. */
    get position() {
      return position;
    },
    get state() {
      return state;
    },
    /** {code, message, until} of the last refusal, or null once subscribed. */
    get refusal() {
      return refusal;
    },
    /** {online, members} of the room: members is a Map id → name, or null if not known. */
    get room() {
      return room;
    },
  };
}

// MARK: Every subscription of the page

/**
 * The page's subscriptions, over one socket. send(frame) sends on it; onEvent(channel,
 * type, detail) hears what each subscription says (see createSubscription).
 */
export function createSubscriptions({ send, onEvent }) {
  const all = new Map(); // channel → subscription

  return {
    /**
     * Follows `channel` (at once if the socket is open, else when it opens).
     * Options: positionKey (default chatroom.position.CHANNEL), fillsHoles(), firstLook,
     * assumeUnread (what the person never read is news, as in a one-to-one room: by
     * default a channel never read counts from where the page first sees it).
     */
    follow(channel, { positionKey = `chatroom.position.${channel}`, fillsHoles = () => false, firstLook = 50, assumeUnread = false } = {}) {
      let subscription = all.get(channel);
      if (subscription) return subscription;
      subscription = createSubscription({
        channel,
        positionKey,
        fillsHoles,
        firstLook,
        assumeUnread,
        send,
        emit: (type, detail) => onEvent(channel, type, detail),
      });
      all.set(channel, subscription);
      subscription.subscribe();
      return subscription;
    },
    /** Stops following `channel`. */
    unfollow(channel) {
      all.get(channel)?.unsubscribe();
      all.delete(channel);
    },
    get(channel) {
      return all.get(channel) ?? null;
    },
    /** A socket opened: subscribe to everything again, each from where the page stands. */
    opened() {
      for (const subscription of all.values()) subscription.subscribe();
    },
    /** The socket closed. */
    closed() {
      for (const subscription of all.values()) subscription.lost();
    },
    /** Hands a frame to its channel's subscription; false if it is of no subscription. */
    receive(frame) {
      const subscription = typeof frame.channel === "string" ? all.get(frame.channel) : null;
      if (!subscription) return false;
      subscription.receive(frame);
      return true;
    },
  };
}
