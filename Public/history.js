// Keeps the page's view of one channel whole: every message once, in offset order.
//
// The socket may deliver a message twice (a replay overlapping a live message), skip
// some (the server says `gap`, or an offset jumps), or say `reset` (the history was
// lost). Frames are handled one at a time; a hole is filled from /history before
// anything after it is shown.

const PAGE = 1000;

export async function fetchHistory(channel, { since = null, limit = 100 } = {}) {
  const query = new URLSearchParams({ channel, limit: String(limit) });
  if (since !== null) query.set("since", String(since));
  // A server run with --connect-secret asks the same token for reading as for sockets.
  const token = new URLSearchParams(location.search).get("token");
  if (token) query.set("token", token);
  const response = await fetch(`/history?${query}`, { cache: "no-store" });
  if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
  return response.json();
}

export function createChannelView({ channel, show, notice }) {
  let epoch = null;
  let last = 0;
  let chain = Promise.resolve();

  function accept(frame) {
    if (frame.epoch !== epoch) {
      epoch = frame.epoch;
      last = 0;
    }
    if (frame.offset <= last) return; // already shown
    last = frame.offset;
    show(frame);
  }

  async function fill(from, to) {
    // Fetch from..to (inclusive) in pages; show what the history still holds.
    let since = from - 1;
    while (since < to) {
      const page = await fetchHistory(channel, { since, limit: Math.min(PAGE, to - since) });
      if (page.epoch !== epoch || page.messages.length === 0) break;
      for (const message of page.messages) if (message.offset <= to) accept(message);
      since = page.messages[page.messages.length - 1].offset;
    }
    if (last < to) {
      notice(`${to - last} message(s) could not be recovered.`);
      last = to;
    }
  }

  async function handle(frame) {
    switch (frame.type) {
      case "message":
        if (epoch !== null && frame.epoch === epoch && frame.offset > last + 1) await fill(last + 1, frame.offset - 1);
        accept(frame);
        break;
      case "gap":
        if (frame.to > last) await fill(Math.max(frame.from, last + 1), frame.to);
        break;
      case "reset":
        if (epoch !== null) notice("The chat history was reset on the server; earlier messages may be missing.");
        epoch = frame.epoch;
        last = 0;
        break;
    }
  }

  return {
    /** Shows the newest messages; call before connecting. Returns the history page. */
    async load(limit = 50) {
      const page = await fetchHistory(channel, { limit });
      epoch = page.epoch;
      last = 0;
      for (const message of page.messages) accept(message);
      if (page.epoch) last = Math.max(last, page.lastOffset ?? last);
      return page;
    },
    /** The epoch and last offset shown. */
    position() {
      return { epoch, last };
    },
    /** Where a new socket should resume, or null to start live. */
    resumeFrom() {
      return epoch ? { since: last, epoch } : null;
    },
    /** Handles one chat.v1 frame, after those before it. */
    receive(frame) {
      chain = chain.then(() => handle(frame)).catch((error) => notice(`Could not load missing messages: ${error.message}`));
      return chain;
    },
  };
}
