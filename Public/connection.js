// The socket to /wb/ with the chat.v1 subprotocol: heartbeat, reconnect with backoff.
//
// Resume: each new socket says where the page stands (since=OFFSET&epoch=E), and the
// server replays what was missed before going live.
// Heartbeat: a {"type":"ping"} every 5 s; if nothing at all arrives for 10 s the
// connection is taken for dead, closed and opened again.
// Reconnect: the first retry within 1 s, then doubling up to 15 s, each with jitter.

const PING_EVERY_MS = 5000;
const DEAD_AFTER_MS = 10000;
const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 15000;

export function retryDelay(attempt) {
  const ceiling = Math.min(LONGEST_RETRY_MS, FIRST_RETRY_MS * 2 ** attempt);
  return Math.round(ceiling * (0.5 + Math.random() * 0.5));
}

/**
 * Keeps one socket open to the channel named by the `channel` cookie.
 * resumeFrom() returns {since, epoch} to resume after, or null to start live.
 * Callbacks: onMessage(frame), onState(state, detail) with state one of
 * "connecting", "connected", "reconnecting" (detail: seconds until retry), "offline",
 * "refused" (detail: the server's reason; close 4403 or 4409, not retried).
 */
export function connect({ onMessage, onState, resumeFrom, name = () => "" }) {
  let socket = null;
  let attempt = 0;
  let lastHeard = 0;
  let heartbeat = null;
  let retryTimer = null;
  let countdown = null;
  let stopped = false;

  function url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    const resume = resumeFrom();
    if (resume) {
      params.set("since", resume.since);
      params.set("epoch", resume.epoch);
    }
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
    onState(attempt === 0 ? "connecting" : "reconnecting", 0);
    const current = new WebSocket(url(), ["chat.v1"]);
    socket = current;
    current.onopen = () => {
      attempt = 0;
      lastHeard = Date.now();
      onState("connected");
      heartbeat = setInterval(() => {
        if (Date.now() - lastHeard > DEAD_AFTER_MS) {
          current.close(4000, "no heartbeat");
          dropped(current);
          return;
        }
        if (current.readyState === WebSocket.OPEN) current.send(JSON.stringify({ type: "ping" }));
      }, PING_EVERY_MS);
    };
    current.onmessage = (event) => {
      lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type !== "pong") onMessage(frame);
    };
    current.onclose = (event) => {
      // Refused for good (a private room of others, a full room): say why, do not retry.
      if (event.code === 4403 || event.code === 4409) {
        if (current !== socket) return;
        socket = null;
        clearInterval(heartbeat);
        onState("refused", event.reason);
        return;
      }
      dropped(current);
    };
  }

  function dropped(which) {
    if (which !== socket) return;
    socket = null;
    clearInterval(heartbeat);
    if (stopped) return;
    if (!navigator.onLine) {
      onState("offline");
      return;
    }
    const delay = retryDelay(attempt++);
    let left = Math.ceil(delay / 1000);
    onState("reconnecting", left);
    countdown = setInterval(() => onState("reconnecting", Math.max(0, --left)), 1000);
    retryTimer = setTimeout(open, delay);
  }

  window.addEventListener("online", () => {
    if (!socket && !stopped) {
      attempt = 0;
      open();
    }
  });

  open();

  return {
    /** Stops for good (the page is going away). */
    stop() {
      stopped = true;
      clearTimeout(retryTimer);
      clearInterval(countdown);
      clearInterval(heartbeat);
      if (socket) socket.close(1000, "page closed");
    },
    /** Closes the socket and opens a new one (after the channel cookie changed). */
    reopen() {
      const old = socket;
      socket = null;
      clearInterval(heartbeat);
      if (old) old.close(1000, "switching channel");
      attempt = 0;
      open();
    },
  };
}
