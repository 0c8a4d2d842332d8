// The message list. Text is always set with textContent: a message such as
// <img src=x onerror=alert(1)> shows as those characters and runs nothing.
//
// Fast with a long history: at most KEEP messages are in the page. Messages that arrive
// together are added in one go per animation frame. A reader scrolled up to older
// messages is not moved: new messages wait below, counted on a "new messages" button,
// and "Load earlier" brings older ones from /history.
//
// Messages of the outbox (typed, not yet acknowledged) stay at the end of the list,
// marked "sending…", in the order typed. Once acknowledged, a message is shown where its
// offset puts it, once: the outbox item goes when the message itself is in the list.

const KEEP = 300;
const NEAR_BOTTOM_PX = 48;

/**
 * loadEarlier(firstOffset, epoch) answers {messages, firstOffset} before the first shown.
 * onEdit(id), onDiscard(id), onRetry(id): the writer's answer to a refused message.
 */
export function createMessageList({ list, scroller, jumpButton, earlierButton, loadEarlier, onEdit, onDiscard, onRetry }) {
  const own = new Set(); // "epoch:offset" of messages this tab sent
  const outgoing = new Map(); // outbox ID → its <li>, at the end of the list
  const awaiting = new Map(); // "epoch:offset" acknowledged → outbox ID, until the message is shown
  let pending = []; // waiting for the next frame
  let recent = []; // the newest KEEP items, to show again after reading older ones
  let waitingBelow = 0; // arrived while the reader was scrolled up
  let detached = false; // the list does not end with the newest message
  let scheduled = false;
  let loadingEarlier = false;
  let firstKept = null; // the oldest offset the history holds, when known

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  const keyOf = (epoch, offset) => `${epoch}:${offset}`;
  const firstOutgoing = () => list.querySelector("li.outgoing");
  const shownMessages = () => list.querySelectorAll("li[data-offset]");

  function head(name) {
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = name || "Anonymous";
    meta.append(who);
    return meta;
  }

  function textOf(data) {
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = data;
    return text;
  }

  function itemFor(entry) {
    const item = document.createElement("li");
    if (entry.notice) {
      item.className = "notice";
      item.textContent = entry.notice;
      return item;
    }
    const { offset, epoch, time, name, data } = entry;
    item.dataset.offset = String(offset);
    item.dataset.epoch = epoch;
    if (own.has(keyOf(epoch, offset))) item.classList.add("own");
    const meta = head(name);
    if (time) {
      const stamp = document.createElement("time");
      const when = new Date(time);
      stamp.dateTime = when.toISOString();
      stamp.title = when.toLocaleString();
      stamp.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      meta.append(stamp);
    }
    item.append(meta, textOf(data));
    return item;
  }

  /** The outbox item of `id` is done with once its message is in the list. */
  function arrived(entries) {
    for (const entry of entries) {
      if (entry.notice) continue;
      const id = awaiting.get(keyOf(entry.epoch, entry.offset));
      if (id === undefined) continue;
      awaiting.delete(keyOf(entry.epoch, entry.offset));
      outgoing.get(id)?.remove();
      outgoing.delete(id);
    }
  }

  function remember(entries) {
    recent.push(...entries);
    if (recent.length > KEEP) recent = recent.slice(-KEEP);
  }

  function updateJump() {
    jumpButton.hidden = !detached && waitingBelow === 0;
    jumpButton.textContent = waitingBelow > 0 ? `${waitingBelow} new message${waitingBelow === 1 ? "" : "s"} ↓` : "Jump to newest ↓";
  }

  function updateEarlier() {
    const first = Number(list.querySelector("li[data-offset]")?.dataset.offset ?? 0);
    earlierButton.hidden = !(first > 1 && (firstKept === null || first > firstKept));
  }

  function trim() {
    let count = shownMessages().length;
    while (count > KEEP) {
      list.querySelector("li[data-offset]").remove();
      count--;
    }
  }

  function flush() {
    scheduled = false;
    const entries = pending;
    pending = [];
    if (entries.length === 0) return;
    remember(entries);
    arrived(entries);
    if (detached || (!nearBottom() && shownMessages().length > 0)) {
      detached = true;
      waitingBelow += entries.filter((entry) => !entry.notice).length;
      updateJump();
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const entry of entries.slice(-KEEP)) fragment.append(itemFor(entry));
    list.insertBefore(fragment, firstOutgoing());
    trim();
    scroller.scrollTop = scroller.scrollHeight;
    updateEarlier();
  }

  function schedule() {
    if (scheduled) return;
    scheduled = true;
    // A background tab gets no animation frames: fall back to a timer there.
    if (document.hidden) setTimeout(flush, 50);
    else requestAnimationFrame(flush);
  }

  function showNewest() {
    list.replaceChildren(...recent.map(itemFor), ...outgoing.values());
    detached = false;
    waitingBelow = 0;
    updateJump();
    scroller.scrollTop = scroller.scrollHeight;
    updateEarlier();
  }

  /** Puts older messages above the first shown, keeping the reader's place. */
  function prepend(older) {
    if (scheduled) flush();
    if (older.length === 0) return;
    const before = scroller.scrollHeight;
    const wasAtBottom = nearBottom();
    const fragment = document.createDocumentFragment();
    for (const message of older) fragment.append(itemFor(message));
    list.prepend(fragment);
    if (wasAtBottom && !detached) scroller.scrollTop = scroller.scrollHeight;
    else scroller.scrollTop += scroller.scrollHeight - before;
    if (shownMessages().length > KEEP) {
      let count = shownMessages().length;
      while (count-- > KEEP) [...shownMessages()].at(-1).remove();
      detached = true;
      updateJump();
    }
    updateEarlier();
  }

  jumpButton.addEventListener("click", showNewest);
  scroller.addEventListener("scroll", () => {
    if (detached && waitingBelow === 0 && nearBottom()) {
      // Scrolled back down to the end of what is shown: it is the newest again only if
      // nothing was trimmed off the bottom.
      const last = [...shownMessages()].at(-1);
      const newest = recent.findLast((entry) => !entry.notice);
      if (!newest || (last && last.dataset.offset === String(newest.offset))) {
        detached = false;
        updateJump();
      }
    } else if (detached && nearBottom() && waitingBelow > 0) {
      showNewest();
    }
  });

  earlierButton.addEventListener("click", async () => {
    if (loadingEarlier) return;
    const firstItem = list.querySelector("li[data-offset]");
    if (!firstItem) return;
    loadingEarlier = true;
    earlierButton.disabled = true;
    try {
      const older = await loadEarlier(Number(firstItem.dataset.offset), firstItem.dataset.epoch);
      if (older.firstOffset !== undefined) firstKept = older.firstOffset;
      prepend(older.messages);
    } catch (error) {
      add({ notice: `Could not load earlier messages: ${error.message}` });
    } finally {
      loadingEarlier = false;
      earlierButton.disabled = false;
      updateEarlier();
    }
  });

  function add(entry) {
    pending.push(entry);
    schedule();
  }

  // MARK: The outbox's items

  function outgoingItem(entry) {
    let item = outgoing.get(entry.id);
    if (item) return item;
    item = document.createElement("li");
    item.className = "outgoing";
    item.dataset.id = entry.id;
    const state = document.createElement("p");
    state.className = "send-state";
    const actions = document.createElement("div");
    actions.className = "send-actions";
    actions.hidden = true;
    for (const [label, action, handler] of [
      ["Edit", "edit", onEdit],
      ["Discard", "discard", onDiscard],
      ["Send again", "retry", onRetry],
    ]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.dataset.action = action;
      button.addEventListener("click", () => handler(entry.id));
      actions.append(button);
    }
    item.append(head(entry.name), textOf(entry.data), state, actions);
    outgoing.set(entry.id, item);
    list.append(item);
    if (!detached) scroller.scrollTop = scroller.scrollHeight;
    return item;
  }

  return {
    /** Empties the list for another channel. */
    clear() {
      pending = [];
      recent = [];
      waitingBelow = 0;
      detached = false;
      firstKept = null;
      outgoing.clear();
      awaiting.clear();
      list.replaceChildren();
      updateJump();
      earlierButton.hidden = true;
    },
    /** The oldest offset the history holds, so "Load earlier" shows only while there is more. */
    setEarliest(offset) {
      firstKept = offset;
      updateEarlier();
    },
    /** Adds a message frame (or a history entry), after those shown. */
    message(frame) {
      add(frame);
    },
    /** Adds older messages (oldest first) above those shown. */
    prepend,
    /** The offset of the first message shown, or null. */
    get firstOffset() {
      if (scheduled) flush();
      const first = list.querySelector("li[data-offset]");
      return first ? Number(first.dataset.offset) : null;
    },
    /** Adds a line from the page itself. */
    notice(text) {
      add({ notice: text });
    },
    /** Marks the message at `offset` of `epoch` as this tab's own, now or when it arrives. */
    markOwn(epoch, offset) {
      own.add(keyOf(epoch, offset));
      list.querySelector(`li[data-offset="${Number(offset)}"][data-epoch="${CSS.escape(epoch)}"]`)?.classList.add("own");
    },
    /**
     * Shows outbox entry `entry` at the end of the list: state "sending", "retrying"
     * (note: the server's words and when it is tried again) or "failed" (note: the
     * server's words; the writer may edit, discard or, after a 5xx, send it again).
     */
    outgoing(entry, state, note = "") {
      const item = outgoingItem(entry);
      item.dataset.state = state;
      item.classList.toggle("failed", state === "failed");
      item.querySelector(".send-state").textContent = state === "sending" ? "sending…" : note;
      const actions = item.querySelector(".send-actions");
      actions.hidden = state !== "failed";
      actions.querySelector('[data-action="retry"]').hidden = !(entry.failed?.status >= 500);
    },
    /**
     * Outbox entry `id` became the message at `offset` of `epoch`: its item goes once
     * that message is in the list (it may be already).
     */
    settle(id, epoch, offset) {
      const item = outgoing.get(id);
      if (!item) return;
      const key = keyOf(epoch, offset);
      const here = recent.some((entry) => !entry.notice && keyOf(entry.epoch, entry.offset) === key) || pending.some((entry) => keyOf(entry.epoch, entry.offset) === key);
      if (here) {
        item.remove();
        outgoing.delete(id);
        return;
      }
      item.dataset.state = "sent";
      item.querySelector(".send-state").textContent = "sent";
      awaiting.set(key, id);
    },
    /** Takes outbox entry `id` off the list (discarded, edited, or sent by another tab). */
    forget(id) {
      outgoing.get(id)?.remove();
      outgoing.delete(id);
    },
    /** How many messages are in the page now. */
    get count() {
      return shownMessages().length;
    },
  };
}
