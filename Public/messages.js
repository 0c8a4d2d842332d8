// The message list. Nothing in a message is ever HTML: its text is cut into pieces (links,
// `code`, ``` blocks ```, @mentions) and each piece becomes a DOM node whose text is set
// with textContent, so <img src=x onerror=alert(1)> shows as those characters and runs
// nothing.
//
// Fast with a long history: at most KEEP messages are in the page. Messages that arrive
// together are added in one go per animation frame. A reader scrolled up to older
// messages is not moved: new messages wait below, counted on a "new messages" button,
// and "Load earlier" brings older ones from /history.
//
// Messages of the outbox (typed, not yet acknowledged) stay at the end of the list,
// marked "sending…", in the order typed. Once acknowledged, a message is shown where its
// offset puts it, once: the outbox item goes when the message itself is in the list.
//
// Consecutive messages of one sender within GROUP_MS share one name; a separator says
// the day ("Today", "Yesterday", a date) wherever it changes. Both are worked out again
// after each change of the list (a few hundred items: cheap).

const KEEP = 300;
const NEAR_BOTTOM_PX = 48;
const GROUP_MS = 5 * 60 * 1000;
const LONG_CHARS = 1500; // longer messages (or more than LONG_LINES lines) fold, with "Show more"
const LONG_LINES = 24;
export const REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "🙏"];

/** The label of someone who gave no name: stable, and distinguishable, from their id. */
export function anonymousLabel(id) {
  return id ? `Anonymous ${id.replace(/[^A-Za-z0-9]/g, "").slice(0, 3).toUpperCase()}` : "Anonymous";
}

/**
 * Applies an edit, delete or react event to the message `entry` (a message frame or
 * /history entry). Idempotent: the same event twice leaves the same message.
 */
export function applyEvent(entry, event) {
  // /history keeps the changes of a deleted message as ghosts (deleted, without text or
  // emoji): the message itself says it is deleted.
  if (event.deleted) return;
  if (event.type === "edit") {
    if (entry.deleted || typeof event.data !== "string") return;
    entry.data = event.data;
    entry.edited = event.time ?? true;
  } else if (event.type === "delete") {
    entry.deleted = true;
    delete entry.data;
    entry.reactions = {};
  } else if (event.type === "react" && typeof event.emoji === "string") {
    const reactions = { ...(entry.reactions ?? {}) };
    const who = new Set(reactions[event.emoji] ?? []);
    if (event.on === false) who.delete(event.from);
    else who.add(event.from);
    if (who.size) reactions[event.emoji] = [...who];
    else delete reactions[event.emoji];
    entry.reactions = reactions;
  }
}

// MARK: Text into nodes

const FENCE = /```[^\S\n]*([^\n`]*)\n?([\s\S]*?)```/g;
const INLINE_CODE = /`([^`\n]+)`/g;
const URL_LIKE = /\bhttps?:\/\/[^\s<>"'`]+/gi;

/** The URL at the start of `text` without the punctuation that ends a sentence around it. */
function trimUrl(text) {
  let url = text.replace(/[.,;:!?*_~]+$/, "");
  // A ")" closes the link only if the link opened one: (see https://example.com/a_(b))
  while (url.endsWith(")") && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) url = url.slice(0, -1).replace(/[.,;:!?]+$/, "");
  return url;
}

function link(url) {
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.textContent = url;
  anchor.rel = "noopener noreferrer";
  anchor.target = "_blank";
  return anchor;
}

/** Text with links and mentions, into `parent`. mentions: {pattern, mine(name)} or null. */
function linkedText(text, parent, mentions) {
  let at = 0;
  for (const match of text.matchAll(URL_LIKE)) {
    const url = trimUrl(match[0]);
    let valid = false;
    try {
      valid = ["http:", "https:"].includes(new URL(url).protocol);
    } catch {
      valid = false;
    }
    if (!valid) continue;
    mentioned(text.slice(at, match.index), parent, mentions);
    parent.append(link(url));
    at = match.index + url.length;
  }
  mentioned(text.slice(at), parent, mentions);
}

function mentioned(text, parent, mentions) {
  if (!text) return;
  if (!mentions) {
    parent.append(text);
    return;
  }
  let at = 0;
  for (const match of text.matchAll(mentions.pattern)) {
    parent.append(text.slice(at, match.index));
    const mark = document.createElement("mark");
    mark.className = mentions.mine(match[1]) ? "mention me" : "mention";
    mark.textContent = match[0];
    parent.append(mark);
    at = match.index + match[0].length;
  }
  parent.append(text.slice(at));
}

function inlineText(text, parent, mentions) {
  let at = 0;
  for (const match of text.matchAll(INLINE_CODE)) {
    linkedText(text.slice(at, match.index), parent, mentions);
    const code = document.createElement("code");
    code.textContent = match[1];
    parent.append(code);
    at = match.index + match[0].length;
  }
  linkedText(text.slice(at), parent, mentions);
}

/** The nodes for message text `data`: ``` blocks as <pre><code>, the rest inline. */
export function richText(data, parent, mentions = null) {
  let at = 0;
  for (const match of data.matchAll(FENCE)) {
    inlineText(data.slice(at, match.index), parent, mentions);
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    code.textContent = match[2].replace(/\n$/, "");
    pre.append(code);
    parent.append(pre);
    at = match.index + match[0].length;
    if (data[at] === "\n") at++; // the line break after a block is the block's
  }
  inlineText(data.slice(at), parent, mentions);
}

/** A pattern that finds @name for each of `names` (longest first), or null for none. */
export function mentionPattern(names) {
  const list = [...new Set(names.filter((name) => name && name.trim()))].sort((a, b) => b.length - a.length);
  if (list.length === 0) return null;
  const escaped = list.map((name) => name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`@(${escaped.join("|")})(?![\\p{L}\\p{N}_])`, "giu");
}

// MARK: Days

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

/** "Today", "Yesterday" or the date of `time` (ms). */
export function dayLabel(time, words) {
  const day = startOfDay(new Date(time));
  const today = startOfDay(new Date());
  const days = Math.round((today - day) / 86400000);
  if (days === 0) return words.today;
  if (days === 1) return words.yesterday;
  const when = new Date(time);
  return when.toLocaleDateString(document.documentElement.lang || undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });
}

// MARK: The list

/**
 * loadEarlier(firstOffset, epoch) answers {messages, firstOffset, previousEpoch, epoch} before
 * the first shown (firstOffset null: the newest of that epoch, an older one). archive:
 * the server keeps older epochs, so a list that begins at an epoch's first message asks
 * whether one came before.
 * onEdit(id), onDiscard(id), onRetry(id): the writer's answer to a refused message.
 * me: this browser's identity. names(): the names of the people in the room on screen,
 * for @mentions; myName(): the name this browser shows. act(action, entry, detail): the
 * reader edits ({data}), deletes or reacts ({emoji}) to a message. moderator(): whether
 * the reader moderates (then every message has Delete, asked to be confirmed on others').
 * words: the page's words.
 */
export function createMessageList({ list, scroller, jumpButton, earlierButton, emptyLine, loadEarlier, archive = false, onEdit, onDiscard, onRetry, me = null, names = () => [], myName = () => "", act = () => {}, moderator = () => false, words }) {
  const own = new Set(); // "epoch:offset" of messages this tab sent
  const outgoing = new Map(); // outbox ID → its <li>, at the end of the list
  const awaiting = new Map(); // "epoch:offset" acknowledged → outbox ID, until the message is shown
  const entriesByKey = new Map(); // "epoch:offset" → the entry shown (for edits, deletes, reactions)
  let pending = []; // waiting for the next frame
  let recent = []; // the newest KEEP items, to show again after reading older ones
  let waitingBelow = 0; // arrived while the reader was scrolled up
  let detached = false; // the list does not end with the newest message
  let scheduled = false;
  let loadingEarlier = false;
  const earliest = new Map(); // epoch ("" while the channel has none) → {first, previous}: its oldest offset kept, the epoch kept before it
  let loaded = false; // the first look is done: an empty list means an empty channel
  let seenAt = null; // offset of the last own message the other person has seen (one-to-one)

  const nearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  const keyOf = (epoch, offset) => `${epoch}:${offset}`;
  const firstOutgoing = () => list.querySelector("li.outgoing");
  const shownMessages = () => list.querySelectorAll("li[data-offset]");
  const isOwn = (entry) => (me && entry.from === me) || own.has(keyOf(entry.epoch, entry.offset));

  let mentionsFor = { key: null, value: null }; // the last pattern, while the names stay the same

  function mentions() {
    const all = names();
    const mine = myName().trim().toLocaleLowerCase();
    const key = `${mine}\n${all.join("\n")}`;
    if (mentionsFor.key === key) return mentionsFor.value;
    const pattern = mentionPattern(all);
    mentionsFor = { key, value: pattern ? { pattern, mine: (name) => Boolean(mine) && name.toLocaleLowerCase() === mine } : null };
    return mentionsFor.value;
  }

  function nameOf(entry) {
    return entry.name || (entry.from ? anonymousLabel(entry.from) : words.anonymous);
  }

  function head(name) {
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = name;
    meta.append(who);
    return meta;
  }

  function textOf(data, found = null) {
    const text = document.createElement("div");
    text.className = "text";
    richText(data, text, found);
    if (data.length > LONG_CHARS || data.split("\n").length > LONG_LINES) text.classList.add("long", "folded");
    return text;
  }

  function foldButton(text) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fold";
    button.textContent = words.showMore;
    button.setAttribute("aria-expanded", "false");
    button.addEventListener("click", () => {
      const folded = text.classList.toggle("folded");
      button.textContent = folded ? words.showMore : words.showLess;
      button.setAttribute("aria-expanded", String(!folded));
    });
    return button;
  }

  function button(label, className, handler) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = className;
    element.textContent = label;
    element.addEventListener("click", handler);
    return element;
  }

  function reactionsOf(entry) {
    const row = document.createElement("div");
    row.className = "reactions";
    for (const [emoji, who] of Object.entries(entry.reactions ?? {})) {
      if (!who?.length) continue;
      const mine = Boolean(me) && who.includes(me);
      const chip = button(`${emoji} ${who.length}`, "chip", () => act("react", entry, { emoji }));
      chip.dataset.emoji = emoji;
      chip.setAttribute("aria-pressed", String(mine));
      chip.setAttribute("aria-label", words.reactionLabel(emoji, who.length));
      row.append(chip);
    }
    return row;
  }

  function picker(entry) {
    const box = document.createElement("div");
    box.className = "picker";
    box.hidden = true;
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", words.addReaction);
    for (const emoji of REACTIONS) {
      const choice = button(emoji, "pick", () => {
        box.hidden = true;
        act("react", entry, { emoji });
      });
      choice.dataset.emoji = emoji;
      box.append(choice);
    }
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        box.hidden = true;
        box.parentElement.querySelector(".react")?.focus();
      }
    });
    return box;
  }

  function actionsOf(entry) {
    const bar = document.createElement("div");
    bar.className = "actions";
    let box = null; // made on first use: a few hundred messages need no pickers until asked
    const react = button("☺+", "react", () => {
      if (!box) {
        box = picker(entry);
        bar.append(box);
      }
      box.hidden = !box.hidden;
      if (!box.hidden) box.querySelector("button").focus();
    });
    react.title = words.addReaction;
    react.setAttribute("aria-label", words.addReaction);
    bar.append(react);
    if (isOwn(entry)) {
      bar.append(button(words.edit, "edit", () => startEditing(entry)));
      bar.append(button(words.delete, "delete", () => act("delete", entry)));
    } else if (moderator()) bar.append(moderatorDelete(entry));
    return bar;
  }

  /** A moderator's Delete of someone else's message: it asks first, in place (Escape or Cancel: not). */
  function moderatorDelete(entry) {
    const remove = button(words.delete, "delete", () => {
      const ask = document.createElement("span");
      ask.className = "confirm";
      ask.setAttribute("role", "group");
      ask.setAttribute("aria-label", words.confirmDelete);
      const question = document.createElement("span");
      question.textContent = words.confirmDelete;
      const back = () => {
        ask.replaceWith(remove);
        remove.focus();
      };
      const yes = button(words.delete, "confirm-delete", () => {
        ask.replaceWith(remove);
        act("delete", entry);
      });
      const no = button(words.cancel, "cancel-delete", back);
      ask.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {
          event.preventDefault();
          back();
        }
      });
      ask.append(question, yes, no);
      remove.replaceWith(ask);
      no.focus(); // the safe choice first: Enter on it does nothing harmful
    });
    remove.title = words.deleteAsModerator;
    remove.setAttribute("aria-label", words.deleteAsModerator);
    return remove;
  }

  function itemFor(entry) {
    const item = document.createElement("li");
    if (entry.notice) {
      item.className = "notice";
      item.textContent = entry.notice;
      return item;
    }
    const { offset, epoch, time } = entry;
    entriesByKey.set(keyOf(epoch, offset), entry);
    item.dataset.offset = String(offset);
    item.dataset.epoch = epoch;
    if (time) item.dataset.time = String(time);
    const sender = entry.from ? `id:${entry.from}` : entry.name ? `name:${entry.name}` : "";
    if (sender) item.dataset.sender = sender;
    if (isOwn(entry)) item.classList.add("own");
    const meta = head(nameOf(entry));
    if (time) {
      const stamp = document.createElement("time");
      const when = new Date(time);
      stamp.dateTime = when.toISOString();
      const lang = document.documentElement.lang || undefined;
      stamp.title = when.toLocaleString(lang);
      stamp.textContent = when.toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
      meta.append(stamp);
    }
    if (entry.deleted) {
      item.classList.add("deleted");
      const gone = document.createElement("div");
      gone.className = "text";
      gone.textContent = words.deleted;
      item.append(meta, gone);
      return item;
    }
    const text = textOf(entry.data ?? "", mentions());
    item.append(meta, text);
    if (text.classList.contains("long")) item.append(foldButton(text));
    if (entry.edited) {
      const edited = document.createElement("span");
      edited.className = "edited";
      edited.textContent = words.edited;
      meta.append(edited);
    }
    item.append(reactionsOf(entry), actionsOf(entry));
    if (seenAt !== null && isOwn(entry) && Number(offset) === seenAt) {
      const seen = document.createElement("p");
      seen.className = "seen";
      seen.textContent = words.seen;
      item.append(seen);
    }
    return item;
  }

  /** Puts a field in place of the text of own message `entry`: Enter saves, Escape cancels. */
  function startEditing(entry) {
    const item = itemOf(entry);
    if (!item || entry.deleted) return;
    const field = document.createElement("textarea");
    field.className = "edit-field";
    field.value = entry.data ?? "";
    field.setAttribute("aria-label", words.editLabel);
    const save = button(words.save, "save", () => finish(true));
    const cancel = button(words.cancel, "cancel", () => finish(false));
    const form = document.createElement("div");
    form.className = "editing";
    form.append(field, save, cancel);
    item.querySelector(".text").replaceWith(form);
    item.querySelector(".fold")?.remove();
    function finish(keep) {
      const data = field.value;
      if (keep && data.trim() && data !== entry.data) act("edit", entry, { data });
      item.replaceWith(itemFor(entry));
      regroup();
      document.getElementById("text")?.focus();
    }
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(false);
      }
    });
    field.focus();
    field.setSelectionRange(field.value.length, field.value.length);
  }

  function itemOf(entry) {
    return list.querySelector(`li[data-offset="${Number(entry.offset)}"][data-epoch="${CSS.escape(entry.epoch)}"]`);
  }

  /** Names once per run of one sender; a day separator where the day changes. */
  function regroup() {
    for (const separator of list.querySelectorAll("li.day")) separator.remove();
    let previous = null;
    let previousDay = null;
    for (const item of [...list.children]) {
      if (!item.dataset.offset) {
        previous = null;
        continue;
      }
      const time = Number(item.dataset.time) || 0;
      const day = time ? startOfDay(new Date(time)) : previousDay;
      if (time && day !== previousDay) {
        const separator = document.createElement("li");
        separator.className = "day";
        separator.setAttribute("role", "separator");
        separator.textContent = dayLabel(time, words);
        item.before(separator);
        previousDay = day;
        previous = null;
      }
      const grouped = Boolean(previous && item.dataset.sender && previous.dataset.sender === item.dataset.sender && time - (Number(previous.dataset.time) || 0) < GROUP_MS);
      item.classList.toggle("grouped", grouped);
      previous = item;
    }
    updateEmpty();
  }

  function updateEmpty() {
    if (emptyLine) emptyLine.hidden = !(loaded && outgoing.size === 0 && pending.length === 0 && recent.length === 0 && !list.querySelector("li[data-offset]"));
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
    jumpButton.textContent = waitingBelow > 0 ? words.newMessages(waitingBelow) : words.jumpToNewest;
  }

  /** What "Load earlier" reads next: {before, epoch}, with `crossing` into an older epoch; null when there is nothing more. */
  function nextEarlier() {
    const firstItem = list.querySelector("li[data-offset]");
    const epoch = firstItem?.dataset.epoch ?? "";
    const first = Number(firstItem?.dataset.offset ?? 0);
    const known = earliest.get(epoch);
    if (first > 1 && (known?.first == null || first > known.first)) return { before: first, epoch, crossing: false };
    if (known?.previous) return { before: null, epoch: known.previous, crossing: true, from: epoch };
    return null;
  }

  let probing = null; // the epoch whose start is being asked about

  function updateEarlier() {
    earlierButton.hidden = nextEarlier() === null;
    // At an epoch's first message, not knowing what came before: ask, once.
    const firstItem = list.querySelector("li[data-offset]");
    const epoch = firstItem?.dataset.epoch;
    if (!archive || !epoch || firstItem.dataset.offset !== "1" || earliest.has(epoch) || probing === epoch) return;
    probing = epoch;
    loadEarlier(1, epoch)
      .then((older) => {
        if (!earliest.has(epoch)) learn(older, epoch);
      })
      .catch(() => {}) // asked again when the list changes
      .finally(() => {
        probing = null;
        if (earliest.has(epoch)) earlierButton.hidden = nextEarlier() === null;
      });
  }

  function epochBreak() {
    const item = document.createElement("li");
    item.className = "epoch-break";
    item.setAttribute("role", "separator");
    item.textContent = words.historyRestarted;
    return item;
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
    regroup();
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
    if (scheduled) flush();
    list.replaceChildren(...recent.map(itemFor), ...outgoing.values());
    detached = false;
    waitingBelow = 0;
    regroup();
    updateJump();
    scroller.scrollTop = scroller.scrollHeight;
    updateEarlier();
  }

  /** Puts older messages above the first shown, keeping the reader's place; `crossing`: of an older epoch, marked off. */
  function prepend(older, { crossing = false } = {}) {
    if (scheduled) flush();
    if (older.length === 0) return;
    const before = scroller.scrollHeight;
    const wasAtBottom = nearBottom();
    const fragment = document.createDocumentFragment();
    for (const message of older) fragment.append(itemFor(message));
    if (crossing && list.querySelector("li[data-offset]")) fragment.append(epochBreak());
    list.prepend(fragment);
    regroup();
    if (wasAtBottom && !detached) scroller.scrollTop = scroller.scrollHeight;
    else scroller.scrollTop += scroller.scrollHeight - before;
    if (shownMessages().length > KEEP) {
      let count = shownMessages().length;
      while (count-- > KEEP) [...shownMessages()].at(-1).remove();
      detached = true;
      regroup();
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

  /** What an answer of loadEarlier says of its epoch's start. */
  function learn(older, epoch) {
    if (older.firstOffset === undefined) return;
    earliest.set(older.epoch ?? epoch, { first: older.firstOffset, previous: older.previousEpoch ?? null });
  }

  earlierButton.addEventListener("click", async () => {
    if (loadingEarlier) return;
    const next = nextEarlier();
    if (!next) return;
    loadingEarlier = true;
    earlierButton.disabled = true;
    try {
      const older = await loadEarlier(next.before, next.epoch);
      learn(older, next.epoch);
      if (next.crossing && older.messages.length === 0) {
        // An older epoch with nothing to show: the one after it leads past it.
        earliest.set(next.from, { ...earliest.get(next.from), previous: older.previousEpoch ?? null });
      }
      prepend(older.messages, { crossing: next.crossing });
    } catch (error) {
      add({ notice: words.couldNotLoadEarlier(error.message) });
    } finally {
      loadingEarlier = false;
      earlierButton.disabled = false;
      updateEarlier();
    }
  });

  // A picker closes on Escape (above) and on a click anywhere else.
  document.addEventListener("click", (event) => {
    for (const box of list.querySelectorAll(".picker:not([hidden])")) if (!box.parentElement.contains(event.target)) box.hidden = true;
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
      [words.edit, "edit", onEdit],
      [words.discard, "discard", onDiscard],
      [words.sendAgain, "retry", onRetry],
    ]) {
      const element = button(label, "", () => handler(entry.id));
      element.dataset.action = action;
      actions.append(element);
    }
    item.append(head(entry.name || (me ? anonymousLabel(me) : words.anonymous)), textOf(entry.data), state, actions);
    outgoing.set(entry.id, item);
    list.append(item);
    updateEmpty();
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
      earliest.clear();
      loaded = false;
      seenAt = null;
      outgoing.clear();
      awaiting.clear();
      entriesByKey.clear();
      list.replaceChildren();
      updateJump();
      updateEmpty();
      earlierButton.hidden = true;
    },
    /** The first look is done (or failed): from now on an empty list says "No messages yet". */
    setLoaded(value = true) {
      if (loaded === value) return;
      loaded = value;
      updateEmpty();
    },
    /** What a read of the newest said of its epoch's start ({firstOffset, previousEpoch, epoch}), so "Load earlier" shows only while there is more. */
    setEarliest(older) {
      learn(older, older.epoch ?? "");
      updateEarlier();
    },
    /**
     * Shows `entries` (oldest first, of one epoch) instead of the newest, with `target`
     * (a search result) among them marked and in view; "Jump to newest" goes back.
     * `older` says what the read knew of the epoch's start, as for setEarliest.
     */
    showAround(entries, target, older) {
      if (scheduled) flush();
      list.replaceChildren(...entries.map(itemFor));
      learn(older, target.epoch);
      detached = true;
      waitingBelow = 0;
      regroup();
      updateJump();
      const item = [...shownMessages()].find((element) => element.dataset.epoch === target.epoch && element.dataset.offset === String(target.offset));
      if (item) {
        item.classList.add("found");
        item.scrollIntoView({ block: "center" });
      }
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
      const entry = entriesByKey.get(keyOf(epoch, offset));
      const item = entry ? itemOf(entry) : null;
      if (item && !item.classList.contains("own")) {
        item.replaceWith(itemFor(entry));
        regroup();
      }
    },
    /** An edit, delete or react event of the channel on screen: the message it names changes. */
    update(event) {
      if (scheduled) flush();
      const key = keyOf(event.epoch, event.of);
      const entry = entriesByKey.get(key) ?? recent.find((other) => !other.notice && keyOf(other.epoch, other.offset) === key);
      if (!entry) return;
      applyEvent(entry, event); // idempotent: the subscription may have applied it to the same entry
      const item = itemOf(entry);
      if (!item || item.querySelector(".editing")) return;
      // A reader whose focus was on one of its controls (a reaction chip, say) keeps it there.
      const focused = item.contains(document.activeElement) ? document.activeElement : null;
      const fresh = itemFor(entry);
      item.replaceWith(fresh);
      regroup();
      if (focused?.classList.length) fresh.querySelector(`.${CSS.escape(focused.classList[0])}${focused.dataset.emoji ? `[data-emoji="${CSS.escape(focused.dataset.emoji)}"]` : ""}`)?.focus();
    },
    /** The other person of a one-to-one room has read up to `offset`: "Seen" under the last own message up to it. */
    seen(offset) {
      const ownOffsets = [...shownMessages()].filter((item) => item.classList.contains("own") && Number(item.dataset.offset) <= offset).map((item) => Number(item.dataset.offset));
      const last = ownOffsets.length ? Math.max(...ownOffsets) : null;
      if (last === null || last === seenAt) return;
      seenAt = last;
      for (const old of list.querySelectorAll("p.seen")) old.remove();
      const item = list.querySelector(`li.own[data-offset="${last}"]`);
      if (item) {
        const seen = document.createElement("p");
        seen.className = "seen";
        seen.textContent = words.seen;
        item.append(seen);
      }
    },
    /** Edits the newest own message shown (Up arrow in an empty composer); false if there is none. */
    editLast() {
      if (scheduled) flush();
      const item = [...list.querySelectorAll("li.own[data-offset]:not(.deleted)")].at(-1);
      const entry = item ? entriesByKey.get(keyOf(item.dataset.epoch, item.dataset.offset)) : null;
      if (!entry) return false;
      startEditing(entry);
      return true;
    },
    /** Shows the newest messages and the outbox, wherever the reader had scrolled to. */
    showNewest,
    /** Whether the reader sees the newest message (not scrolled up to older ones). */
    get atNewest() {
      return !detached && waitingBelow === 0;
    },
    /** Draws the messages shown again (the reader's name changed: their @mentions). */
    redraw() {
      if (scheduled) flush();
      for (const item of shownMessages()) {
        const entry = entriesByKey.get(keyOf(item.dataset.epoch, item.dataset.offset));
        if (entry && !item.querySelector(".editing")) item.replaceWith(itemFor(entry));
      }
      regroup();
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
      item.querySelector(".send-state").textContent = state === "sending" ? words.sending : note;
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
        updateEmpty();
        return;
      }
      item.dataset.state = "sent";
      item.querySelector(".send-state").textContent = words.sent;
      awaiting.set(key, id);
    },
    /** Takes outbox entry `id` off the list (discarded, edited, or sent by another tab). */
    forget(id) {
      outgoing.get(id)?.remove();
      outgoing.delete(id);
      updateEmpty();
    },
    /** How many messages are in the page now. */
    get count() {
      return shownMessages().length;
    },
  };
}
