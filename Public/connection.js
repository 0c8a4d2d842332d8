// The page's one socket to /wb/, with the chat.v2 subprotocol: every channel the page
// follows (its tabs and the person's inbox) is a subscription over it, and messages are
// sent over it too. This module only keeps the socket alive; subscriptions (history.js)
// and the outbox (composer.js) say what goes over it.
//
// Heartbeat: a {"type":"ping"} every 5 s (browsers cannot see the server's protocol
// pings); if nothing at all arrives for 10 s the connection is taken for dead, closed and
// opened again. Sooner when something was sent: the server answers every frame the page
// sends but `typing` and `read` (an ack, a pong, `subscribed`). An answer may wait on
// Redis, so after 2 s of silence the page pings, which a live server answers at once; if
// 4 s pass after a send with nothing heard, the socket is dead (a network that went away
// without the browser noticing) and the page says so instead of "Connected".
// Reconnect: the first retry within 1 s, then doubling up to 15 s, each with jitter.
// Offline: when the browser says the network is gone the socket is closed at once rather
// than left to the heartbeat, and opened again as soon as the browser is back online.
// Compatibility mode: when two sockets in a row fail to open at all (a proxy that strips
// Upgrade), the page follows its channels over Server-Sent Events instead
// (eventstream.js), and tries a socket again every few minutes.

import { openEventStream } from "./eventstream.js";

const PING_EVERY_MS = 5000;
const DEAD_AFTER_MS = 10000;
const ANSWER_WITHIN_MS = 4000; // after a send, something must arrive within this
const PROBE_AFTER_MS = 2000; // … and a ping goes after this much silence
const CHECK_EVERY_MS = 1000;
const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 15000;
const FAILED_OPENS_BEFORE_STREAM = 2; // sockets that never opened, in a row: WebSocket is blocked here
const SOCKET_AGAIN_MS = 3 * 60 * 1000; // in compatibility mode, a socket is tried this often

/** Milliseconds to wait before retry number `attempt` (0, 1, 2 …), with jitter. */
export function retryDelay(attempt, first = FIRST_RETRY_MS, longest = LONGEST_RETRY_MS) {
  const ceiling = Math.min(longest, first * 2 ** attempt);
  return Math.round(ceiling * (0.5 + Math.random() * 0.5));
}

/**
 * Keeps one chat.v2 socket open.
 *
 * onOpen() runs each time a socket opens (subscribe and send from there); onClose() each
 * time one is lost (what was in flight on it has to be sent again on the next).
 * onFrame(frame) gets every frame but `pong`. onState(state, detail): "connecting",
 * "connected", "reconnecting" (detail: seconds until the retry), "offline".
 * name() is the name shown in every room of the socket (it goes on the upgrade URL).
 */
export function connect({ onOpen, onClose, onFrame, onState, name = () => "" }) {
  let socket = null; // the socket being opened or open; null while waiting to retry
  let attempt = 0;
  let lastHeard = 0;
  let lastPing = 0;
  let awaitingSince = null; // when a frame went that the server answers, with nothing heard since
  let heartbeat = null;
  let retryTimer = null;
  let countdown = null;
  let stopped = false;
  let failedOpens = 0; // sockets in a row that closed without ever opening
  let stream = null; // the event stream, in compatibility mode
  let probeTimer = null;

  function url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    // A server run with --connect-secret needs a token: the page passes on the one it
    // was opened with (/?token=…).
    const token = new URLSearchParams(location.search).get("token");
    if (token) params.set("token", token);
    if (name().trim()) params.set("name", name().trim());
    const query = params.toString();
    return `${scheme}//${location.host}/wb/${query ? "?" + query : ""}`;
  }

  function open() {
    if (stopped) return;
    clearTimeout(retryTimer);
    clearInterval(countdown);
    // Tried even when navigator.onLine says otherwise: some systems report offline
    // wrongly, and a socket that fails costs one retry. After a drop it waits (dropped()).
    onState(attempt === 0 ? "connecting" : "reconnecting", 0);
    const current = new WebSocket(url(), ["chat.v2"]);
    socket = current;
    current.onopen = () => {
      if (current !== socket) return;
      attempt = 0;
      failedOpens = 0;
      lastHeard = Date.now();
      lastPing = lastHeard;
      awaitingSince = null;
      onState("connected");
      heartbeat = setInterval(() => {
        const now = Date.now();
        if (now - lastHeard > DEAD_AFTER_MS || (awaitingSince !== null && now - awaitingSince > ANSWER_WITHIN_MS)) {
          current.close(4000, "no heartbeat");
          dropped(current);
          return;
        }
        const probe = awaitingSince !== null && now - awaitingSince >= PROBE_AFTER_MS && lastPing < awaitingSince;
        if ((probe || now - lastPing >= PING_EVERY_MS) && current.readyState === WebSocket.OPEN) {
          lastPing = now;
          current.send(JSON.stringify({ type: "ping" }));
        }
      }, CHECK_EVERY_MS);
      onOpen();
    };
    current.onmessage = (event) => {
      if (current !== socket) return;
      lastHeard = Date.now();
      awaitingSince = null;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame && frame.type !== "pong") onFrame(frame);
    };
    current.onclose = (event) => {
      // A sign-in the server refuses, or one that expired: retrying cannot help; the
      // person signs in again (the site opens the page with a new token).
      if (event.code === 4401 && current === socket) {
        stopped = true;
        dropped(current);
        onState("signedOut", event.reason);
        return;
      }
      dropped(current);
    };
  }

  /** The socket `which` is gone: everything sent on it is void; retry unless stopped. */
  function dropped(which) {
    if (which !== socket) return;
    const wasOpen = heartbeat !== null;
    socket = null;
    clearInterval(heartbeat);
    heartbeat = null;
    if (wasOpen) onClose();
    if (stopped) return;
    if (!navigator.onLine) {
      onState("offline");
      return;
    }
    if (!wasOpen && ++failedOpens >= FAILED_OPENS_BEFORE_STREAM) {
      // The server answers plain HTTP, yet no socket opens: something on the way blocks
      // WebSocket. (A server that is down answers nothing: sockets are tried again.)
      fetch("/healthz", { cache: "no-store" })
        .then((response) => response.ok, () => false)
        .then((answers) => {
          if (stopped || socket || stream) return;
          if (answers) useStream();
          else retryLater();
        });
      return;
    }
    retryLater();
  }

  /** The next socket, after a backed-off delay with a countdown. */
  function retryLater() {
    const delay = retryDelay(attempt++);
    let left = Math.ceil(delay / 1000);
    onState("reconnecting", left);
    countdown = setInterval(() => onState("reconnecting", Math.max(0, --left)), 1000);
    retryTimer = setTimeout(open, delay);
  }

  /** WebSocket does not get through: the event stream stands in, and a socket is tried now and then. */
  function useStream() {
    stream = openEventStream({ onOpen, onClose, onFrame, onState, name });
    clearInterval(probeTimer);
    probeTimer = setInterval(probe, SOCKET_AGAIN_MS);
  }

  /** A socket that opens ends compatibility mode: the page moves back to it. */
  function probe() {
    if (stopped || !stream) return;
    const trial = new WebSocket(url(), ["chat.v2"]);
    trial.onopen = () => {
      trial.close(1000, "probe");
      if (!stream) return;
      clearInterval(probeTimer);
      probeTimer = null;
      stream.stop();
      stream = null;
      failedOpens = 0;
      attempt = 0;
      open();
    };
  }

  window.addEventListener("online", () => {
    if (stream) return;
    if (!socket && !stopped) {
      attempt = 0;
      open();
    }
  });
  // The browser knows the network is gone before the heartbeat does: stop using the
  // socket now, so that what is typed waits in the outbox instead of in a dead socket.
  window.addEventListener("offline", () => {
    if (stream) return;
    const old = socket;
    if (!old) return;
    old.close(4000, "offline");
    dropped(old);
  });

  open();

  return {
    /** Sends `frame` (an object) if the socket is open; false if it is not. */
    send(frame) {
      if (stream) return stream.send(frame);
      if (!socket || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(frame));
      if (frame.type !== "typing" && frame.type !== "read") awaitingSince ??= Date.now();
      return true;
    },
    /** Whether a socket is open now. */
    get isOpen() {
      if (stream) return stream.isOpen;
      return socket !== null && socket.readyState === WebSocket.OPEN;
    },
    /** Closes the socket and opens a new one (the name changed: it is on the URL; or "Reconnect now"). */
    reopen() {
      if (stream) {
        stream.reopen();
        return;
      }
      const old = socket;
      if (old) {
        old.close(1000, "reopening");
        dropped(old);
      }
      clearTimeout(retryTimer);
      clearInterval(countdown);
      attempt = 0;
      open();
    },
    /** Stops for good (the page is going away). */
    stop() {
      stopped = true;
      clearTimeout(retryTimer);
      clearInterval(countdown);
      clearInterval(heartbeat);
      clearInterval(probeTimer);
      if (stream) stream.stop();
      if (socket) socket.close(1000, "page closed");
    },
  };
}
