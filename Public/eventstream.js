// Compatibility mode: where WebSocket cannot get through (a proxy strips Upgrade, a
// load balancer kills long-lived sockets), the page follows its channels over one
// Server-Sent Events stream (GET /events) and sends through POST /send/. This module
// stands in for the chat.v2 socket: it takes the same frames (subscribe, unsubscribe,
// send) and answers with the same ones (subscribed, message, …, ack, nack, refused), so
// that subscriptions (history.js) and the outbox (composer.js) work as they are.
//
// The stream's events carry its position in every channel as their id: the browser's
// EventSource sends it back by itself when it reconnects, and the page passes it on
// (lastEventId) when it opens the stream again with other channels, so nothing is lost
// or shown twice. What a socket would send the other way goes over HTTP with the same
// rules: typing to POST /typing/, read state to POST /read/, edits, deletes and reactions
// to POST /send/ (with `type` and `of`), a moderator's actions to /api/…; each answered
// with the frame the socket would have brought (ack, nack, moderated).

const EVENTS = ["subscribed", "message", "edit", "delete", "react", "reset", "gap", "presence", "members", "join", "leave", "typing", "read", "seen", "muted", "refused"];
const REOPEN_AFTER_MS = 50; // subscribes that come together open one stream
const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 15000;
const READ_EVERY_MS = 600; // read states go at most this often per channel (the server takes two a second)

/** The close code a chat.v2 socket would have refused a channel with, from a status and its words. */
function closeCode(status, message) {
  if (status === 403 && /^This room is full/.test(message)) return 4409;
  return { 400: 4400, 401: 4401, 403: 4403, 429: 4429 }[status] ?? 4503;
}

/** Reads "C=EPOCH:OFFSET,…" into channel → {epoch, offset}. */
function readPosition(text) {
  const position = new Map();
  for (const entry of (text ?? "").split(",")) {
    const equals = entry.indexOf("=");
    const colon = entry.lastIndexOf(":");
    if (equals < 1 || colon < equals) continue;
    position.set(entry.slice(0, equals), { epoch: entry.slice(equals + 1, colon), offset: Number(entry.slice(colon + 1)) });
  }
  return position;
}

/**
 * Opens the page's stream: the callbacks of connect() in connection.js, and the same
 * answer ({send, isOpen, reopen, stop}).
 */
export function openEventStream({ onOpen, onClose, onFrame, onState, name = () => "" }) {
  const channels = new Map(); // channel → where its subscribe said it stood ({epoch, offset}) or null
  let source = null;
  let lastEventId = ""; // the stream's position, as its last event said
  let connected = false;
  let stopped = false;
  let reopenTimer = null;
  let attempt = 0;
  // Channels whose `subscribed` the page has had since it last connected: a stream opened
  // again for another channel set says it again, and the page would start them anew.
  const announced = new Set();

  /** Where the next stream starts: the stream's own position, else what the subscribes said. */
  function position() {
    const known = readPosition(lastEventId);
    const entries = [];
    for (const [channel, asked] of channels) {
      const at = known.get(channel) ?? asked;
      if (at) entries.push(`${channel}=${at.epoch ?? ""}:${at.offset ?? 0}`);
    }
    return entries.join(",");
  }

  function url() {
    const params = new URLSearchParams();
    for (const channel of channels.keys()) params.append("channel", channel);
    const token = new URLSearchParams(location.search).get("token");
    if (token) params.set("token", token);
    if (name().trim()) params.set("name", name().trim());
    const at = position();
    if (at) params.set("lastEventId", at);
    return `/events?${params}`;
  }

  function connectedNow() {
    attempt = 0;
    if (connected) return;
    connected = true;
    onState("connected", "compat");
    onOpen();
  }

  function lost() {
    if (!connected) return;
    connected = false;
    announced.clear();
    onClose();
  }

  function open() {
    clearTimeout(reopenTimer);
    reopenTimer = null;
    if (stopped) return;
    if (source) source.close();
    source = null;
    if (channels.size === 0) return;
    const current = new EventSource(url());
    source = current;
    current.onopen = () => {
      if (current === source) connectedNow();
    };
    for (const type of EVENTS) {
      current.addEventListener(type, (event) => {
        if (current !== source) return;
        if (event.lastEventId) lastEventId = event.lastEventId;
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return;
        }
        if (frame.type === "subscribed") {
          if (announced.has(frame.channel)) return;
          announced.add(frame.channel);
        }
        // A channel that ended (a ban): the next stream goes without it.
        if (frame.type === "refused") channels.delete(frame.channel);
        onFrame(frame);
      });
    }
    current.onerror = () => {
      if (current !== source) return;
      lost();
      if (current.readyState === EventSource.CONNECTING) {
        // The browser retries by itself, with Last-Event-ID.
        onState("reconnecting", 0);
        return;
      }
      // Refused (EventSource does not say why): find the channels refused, and go on without them.
      source = null;
      refused().finally(() => {
        const delay = Math.round(Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** attempt++) * (0.5 + Math.random() * 0.5));
        onState("reconnecting", Math.ceil(delay / 1000));
        reopenTimer = setTimeout(open, delay);
      });
    };
  }

  /** Asks for each channel alone; those refused are told as a socket would tell them. */
  async function refused() {
    for (const channel of [...channels.keys()]) {
      const params = new URLSearchParams({ channel });
      const token = new URLSearchParams(location.search).get("token");
      if (token) params.set("token", token);
      try {
        // HEAD: admitted or not, and nothing streamed (nor anyone shown in the room).
        const asked = await fetch(`/events?${params}`, { method: "HEAD", cache: "no-store" });
        if (asked.ok) continue;
        const abort = new AbortController();
        const response = await fetch(`/events?${params}`, { signal: abort.signal, cache: "no-store" });
        if (response.ok) {
          abort.abort(); // admitted after all: nothing to tell
          continue;
        }
        const message = (await response.text()).trim();
        // A channel's own refusals; the rest (429, 503, a proxy's 502) pass: retried.
        if (![400, 401, 403].includes(response.status)) continue;
        channels.delete(channel);
        onFrame({ type: "refused", channel, code: closeCode(response.status, message), message, reason: /^You are banned/.test(message) ? "banned" : undefined });
      } catch {
        return; // the server cannot be reached: retried
      }
    }
  }

  function reopenSoon() {
    clearTimeout(reopenTimer);
    reopenTimer = setTimeout(open, REOPEN_AFTER_MS);
  }

  /** The sign-in the page was opened with (/?token=…), if any. */
  function token() {
    return new URLSearchParams(location.search).get("token");
  }

  /**
   * A message or a change to one (edit, delete, react), as POST /send/ with its outbox
   * id as Idempotency-Key; answered ack or nack.
   */
  async function post(frame) {
    const body = new URLSearchParams();
    body.set("channel", frame.channel);
    if (frame.type !== "send") {
      body.set("type", frame.type);
      body.set("of", String(frame.of));
    }
    if (frame.data !== undefined) body.set("data", frame.data);
    if (frame.emoji !== undefined) body.set("emoji", frame.emoji);
    if (frame.name) body.set("name", frame.name);
    if (token()) body.set("token", token());
    try {
      const response = await fetch("/send/", { method: "POST", body, headers: { "Idempotency-Key": frame.id } });
      if (response.ok) {
        onFrame({ type: "ack", id: frame.id, channel: frame.channel, offset: Number(response.headers.get("Chat-Offset")), epoch: response.headers.get("Chat-Epoch") });
        return;
      }
      const message = (await response.text()).trim();
      const retryAfter = Number(response.headers.get("Retry-After")) || undefined;
      onFrame({ type: "nack", id: frame.id, channel: frame.channel, status: response.status, message, retryAfter });
    } catch {
      // Not answered: it may have been published; the same id goes again.
      onFrame({ type: "nack", id: frame.id, channel: frame.channel, status: 503, message: "The server could not be reached.", retryAfter: 1 });
    }
  }

  /** POST `fields` to `path` as a form, with the page's sign-in; the response, or null if the server cannot be reached. */
  async function tell(path, fields, init = {}) {
    const body = new URLSearchParams(fields);
    if (token()) body.set("token", token());
    try {
      return await fetch(path, { method: "POST", body, ...init });
    } catch {
      return null;
    }
  }

  // Read states: the newest offset per channel, sent at most every READ_EVERY_MS.
  const readsDue = new Map(); // channel → offset not sent yet
  let readTimer = null;
  function sendReads() {
    readTimer = null;
    for (const [channel, offset] of readsDue) {
      readsDue.delete(channel);
      tell("/read/", { channel, offset: String(offset) }).then((response) => {
        // Refused for its rate, or not reached: the newest goes again later.
        if (response && response.status !== 429 && response.status < 500) return;
        if (!readsDue.has(channel)) readsDue.set(channel, offset);
        readTimer ??= setTimeout(sendReads, READ_EVERY_MS);
      });
    }
  }

  /**
   * A moderator's frame (mute, ban, unban, slowmode) as the moderation API takes it:
   * answered `moderated` (with `until`) or `nack`, as a socket would.
   */
  async function moderate(frame) {
    const fields = { channel: frame.channel };
    if (frame.user !== undefined) fields.user = frame.user;
    if (frame.seconds !== undefined) fields.seconds = String(frame.seconds);
    const path = frame.type === "unban" ? "/api/ban" : `/api/${frame.type}`;
    const headers = token() ? { Authorization: `Bearer ${token()}` } : {};
    const body = new URLSearchParams(fields);
    let response;
    try {
      response = await fetch(path, { method: frame.type === "unban" ? "DELETE" : "POST", body, headers });
    } catch {
      onFrame({ type: "nack", id: frame.id, channel: frame.channel, status: 503, message: "The server could not be reached." });
      return;
    }
    if (response.ok) {
      const answer = await response.json().catch(() => ({}));
      onFrame({ ...answer, type: "moderated", id: frame.id, action: frame.type });
      return;
    }
    const message = (await response.text()).trim();
    onFrame({ type: "nack", id: frame.id, channel: frame.channel, status: response.status, message });
  }

  // Connected at once, as a socket that just opened: the page subscribes, and the stream opens with them.
  queueMicrotask(() => {
    onState("connecting", 0);
    connectedNow();
  });

  return {
    send(frame) {
      if (stopped) return false;
      switch (frame.type) {
        case "subscribe": {
          const known = channels.has(frame.channel);
          channels.set(frame.channel, frame.epoch ? { epoch: frame.epoch, offset: frame.since } : null);
          // Already carried: its `subscribed` comes with the stream's (re)opening.
          if (!known || !source) reopenSoon();
          return true;
        }
        case "unsubscribe":
          channels.delete(frame.channel);
          announced.delete(frame.channel);
          queueMicrotask(() => onFrame({ type: "unsubscribed", channel: frame.channel }));
          reopenSoon();
          return true;
        case "send":
        case "edit":
        case "delete":
        case "react":
          post(frame);
          return true;
        case "typing":
          tell("/typing/", name().trim() ? { channel: frame.channel, name: name().trim() } : { channel: frame.channel });
          return true;
        case "read":
          readsDue.set(frame.channel, frame.offset);
          readTimer ??= setTimeout(sendReads, READ_EVERY_MS);
          return true;
        case "mute":
        case "ban":
        case "unban":
        case "slowmode":
          moderate(frame);
          return true;
        default:
          return false; // not over HTTP: waits for a socket
      }
    },
    get isOpen() {
      return connected;
    },
    reopen() {
      lost();
      attempt = 0;
      open();
      queueMicrotask(connectedNow);
    },
    stop() {
      stopped = true;
      clearTimeout(reopenTimer);
      clearTimeout(readTimer);
      if (source) source.close();
      source = null;
      lost();
    },
  };
}
