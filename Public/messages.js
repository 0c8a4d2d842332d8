// The message list. Text is always set with textContent: a message such as
// <img src=x onerror=alert(1)> shows as those characters and runs nothing.
//
// Fast with a long history: at most KEEP messages are in the page. Messages that arrive
// together are added in one go per animation frame. A reader scrolled up to older
// messages is not moved: new messages wait below, counted on a "new messages" button,
// and "Load earlier" brings older ones from /history.

const KEEP = 300;
const NEAR_BOTTOM_PX = 48;

export function createMessageList({ list, scroller, jumpButton, earlierButton, loadEarlier }) {
  const own = new Set(); // "epoch:offset" of messages this tab sent
  let pending = []; // waiting for the next frame
  let recent = []; // the newest KEEP items, to show again after reading older ones
  let waitingBelow = 0; // arrived while the reader was scrolled up
  let detached = false; // the list does not end with the newest message
  let scheduled = false;
  let loadingEarlier = false;
  let firstKept = null; // the oldest offset the history holds, when known

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;

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
    if (own.has(`${epoch}:${offset}`)) item.classList.add("own");
    const head = document.createElement("div");
    head.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = name || "Anonymous";
    head.append(who);
    if (time) {
      const stamp = document.createElement("time");
      const when = new Date(time);
      stamp.dateTime = when.toISOString();
      stamp.title = when.toLocaleString();
      stamp.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      head.append(stamp);
    }
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = data;
    item.append(head, text);
    return item;
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

  function flush() {
    scheduled = false;
    const entries = pending;
    pending = [];
    if (entries.length === 0) return;
    remember(entries);
    if (detached || (!nearBottom() && list.childElementCount > 0)) {
      detached = true;
      waitingBelow += entries.filter((entry) => !entry.notice).length;
      updateJump();
      return;
    }
    const fragment = document.createDocumentFragment();
    for (const entry of entries.slice(-KEEP)) fragment.append(itemFor(entry));
    list.append(fragment);
    while (list.childElementCount > KEEP) list.firstElementChild.remove();
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
    list.replaceChildren(...recent.map(itemFor));
    detached = false;
    waitingBelow = 0;
    updateJump();
    scroller.scrollTop = scroller.scrollHeight;
    updateEarlier();
  }

  jumpButton.addEventListener("click", showNewest);
  scroller.addEventListener("scroll", () => {
    if (detached && waitingBelow === 0 && nearBottom()) {
      // Scrolled back down to the end of what is shown: it is the newest again only if
      // nothing was trimmed off the bottom.
      const last = list.lastElementChild;
      const newest = recent[recent.length - 1];
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
      if (older.messages.length > 0) {
        const before = scroller.scrollHeight;
        const fragment = document.createDocumentFragment();
        for (const message of older.messages) fragment.append(itemFor(message));
        list.prepend(fragment);
        scroller.scrollTop += scroller.scrollHeight - before;
        if (list.childElementCount > KEEP) {
          while (list.childElementCount > KEEP) list.lastElementChild.remove();
          detached = true;
          updateJump();
        }
      }
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

  return {
    /** Empties the list for another channel. */
    clear() {
      pending = [];
      recent = [];
      waitingBelow = 0;
      detached = false;
      firstKept = null;
      list.replaceChildren();
      updateJump();
      earlierButton.hidden = true;
    },
    /** The oldest offset the history holds, so "Load earlier" shows only while there is more. */
    setEarliest(offset) {
      firstKept = offset;
      updateEarlier();
    },
    /** Adds a chat.v1 message frame (or a history entry). */
    message(frame) {
      add(frame);
    },
    /** Adds a line from the page itself. */
    notice(text) {
      add({ notice: text });
    },
    /** Marks the message at `offset` of `epoch` as this tab's own, now or when it arrives. */
    markOwn(epoch, offset) {
      own.add(`${epoch}:${offset}`);
      list.querySelector(`li[data-offset="${Number(offset)}"][data-epoch="${CSS.escape(epoch)}"]`)?.classList.add("own");
    },
    /** How many messages are in the page now. */
    get count() {
      return list.querySelectorAll("li[data-offset]").length;
    },
  };
}
