// The message form, and the outbox behind it.
//
// The form: a name kept in localStorage, a text area where Enter sends and Shift+Enter
// adds a line, and a counter against the server's limit. What is typed goes into the
// outbox at once, so the form never waits for the network.
//
// The outbox: each message has an ID of its own (a UUID) and stays in localStorage until
// the server acknowledges it, so that a lost socket, a Redis outage or a reload only
// delays it. It is sent again with the same ID until acknowledged, and the server
// publishes an ID once, so it appears exactly once for everyone. To keep the order typed,
// each channel has one message on the way at a time: the next goes after the previous
// one's `ack`, or after a `nack` that leaves it to the writer.

const NAME_KEY = "chatroom.name";
const OUTBOX_KEY = "chatroom.outbox."; // + ID: one key a message, so two tabs never overwrite each other
const RETRIED = new Set([429, 503, 504]); // the server says when: the same message, after retryAfter
const SENDS_PER_SECOND = 8; // under the server's --socket-message-rate (default 10, every frame counts)
const TYPING_EVERY_MS = 2000; // `typing` at most this often while keys are pressed
const encoder = new TextEncoder();

// MARK: The outbox

/** A fresh message ID: 1–64 of A–Z a–z 0–9 _ -, which a UUID is. */
function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID is for secure contexts only (https, localhost): a page on plain http gets hex.
  return [...crypto.getRandomValues(new Uint8Array(16))].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The messages typed and not yet acknowledged, oldest first.
 *
 * send(frame) sends on the socket (false if it is closed). onChange(entry, what, detail)
 * tells the page: "queued" (shown as sending…), "retrying" ({status, message, retryIn}
 * in seconds), "failed" (the server refused it for good: entry.failed {status, message}),
 * "acked" ({offset, epoch}), "removed". An entry is {id, channel, data, name, typed,
 * failed}.
 */
export function createOutbox({ send, onChange }) {
  let entries = load();
  const requests = new Map(); // ID → {frame, settle}: edits, deletes and reactions, kept in memory until answered
  const onTheWay = new Set(); // IDs sent on the current socket, not yet answered
  const waiting = new Map(); // ID → timer, for a retry the server asked to wait for
  let sentAt = []; // when the last sends went, for the pace
  let paceTimer = null;
  let counter = 0;

  function load() {
    const found = [];
    for (let index = 0; index < localStorage.length; index++) {
      const key = localStorage.key(index);
      if (!key?.startsWith(OUTBOX_KEY)) continue;
      try {
        const entry = JSON.parse(localStorage.getItem(key));
        if (entry && typeof entry.id === "string" && typeof entry.channel === "string" && typeof entry.data === "string") found.push(entry);
      } catch {
        localStorage.removeItem(key);
      }
    }
    return found.sort((a, b) => a.typed - b.typed || (a.n ?? 0) - (b.n ?? 0));
  }

  function save(entry) {
    try {
      localStorage.setItem(OUTBOX_KEY + entry.id, JSON.stringify(entry));
    } catch {
      // Storage full: it is still sent from memory, it only would not survive a reload.
    }
  }

  function remove(entry) {
    entries = entries.filter((other) => other !== entry);
    onTheWay.delete(entry.id);
    clearTimeout(waiting.get(entry.id));
    waiting.delete(entry.id);
    localStorage.removeItem(OUTBOX_KEY + entry.id);
  }

  /** Sends the first unanswered message of each channel that has none on the way. */
  function pump() {
    const busy = new Set();
    for (const entry of entries) {
      if (entry.failed || busy.has(entry.channel)) continue;
      busy.add(entry.channel);
      if (onTheWay.has(entry.id) || waiting.has(entry.id)) continue;
      const now = Date.now();
      sentAt = sentAt.filter((time) => now - time < 1000);
      if (sentAt.length >= SENDS_PER_SECOND) {
        // Faster would get the socket closed for flooding: go on when the oldest send is a second old.
        paceTimer ??= setTimeout(() => {
          paceTimer = null;
          pump();
        }, 1000 - (now - sentAt[0]) + 5);
        return;
      }
      const frame = { type: "send", id: entry.id, channel: entry.channel, data: entry.data };
      if (entry.name) frame.name = entry.name;
      if (!send(frame)) return; // closed: everything waits for the next socket
      sentAt.push(now);
      onTheWay.add(entry.id);
    }
  }

  // Another tab of this browser that got the ack removes the message: this one need not send it.
  window.addEventListener("storage", (event) => {
    if (event.key?.startsWith(OUTBOX_KEY) && event.newValue === null) {
      const entry = entries.find((other) => OUTBOX_KEY + other.id === event.key);
      if (entry) {
        remove(entry);
        onChange(entry, "removed");
        pump();
      }
    }
  });

  return {
    /** Takes a message typed in `channel`; it is shown and sent from here on. */
    add({ channel, data, name }) {
      const entry = { id: newId(), channel, data, name: name || null, typed: Date.now(), n: counter++, failed: null };
      entries.push(entry);
      save(entry);
      onChange(entry, "queued");
      pump();
      return entry;
    },
    /** The unanswered messages of `channel`, in the order typed. */
    entries(channel) {
      return entries.filter((entry) => entry.channel === channel);
    },
    /**
     * Sends an edit, delete, react or moderation `frame` (without id): answers {ok: true,
     * frame} on its `ack` (a moderation's `moderated`), {ok: false, status, message} on
     * its `nack`. Sent again with the same ID on each new socket until answered, like a
     * message.
     */
    request(frame) {
      const id = newId();
      return new Promise((settle) => {
        const request = { frame: { ...frame, id }, settle };
        requests.set(id, request);
        send(request.frame);
      });
    },
    /** Answers every request of `type` unsent: the server does not know it. */
    refuseRequests(type, message) {
      for (const [id, request] of requests) {
        if (request.frame.type !== type) continue;
        requests.delete(id);
        request.settle({ ok: false, status: 0, message });
      }
    },
    /** A socket opened: send what waits. */
    opened() {
      onTheWay.clear();
      for (const request of requests.values()) send(request.frame);
      // Refused by a broker error (500) before the socket went: worth one more try.
      for (const entry of entries) if (entry.failed?.status >= 500) this.retry(entry.id);
      pump();
    },
    /** The socket closed: what was on the way goes again, same ID, on the next one. */
    closed() {
      onTheWay.clear();
    },
    /** Takes an `ack`, `nack` or `moderated` frame; false if it names no message or request of this outbox. */
    receive(frame) {
      const request = requests.get(frame.id);
      if (request) {
        requests.delete(frame.id);
        request.settle(frame.type === "nack" ? { ok: false, status: frame.status, message: frame.message } : { ok: true, frame });
        return true;
      }
      if (frame.type === "moderated") return false;
      const entry = entries.find((other) => other.id === frame.id);
      if (!entry) return false;
      onTheWay.delete(entry.id);
      if (frame.type === "ack") {
        remove(entry);
        onChange(entry, "acked", { offset: frame.offset, epoch: frame.epoch });
      } else if (RETRIED.has(frame.status)) {
        // 429 too fast, 503 nothing published, 504 perhaps published: the same ID is
        // published once either way, so sending it again is always safe.
        const retryIn = Math.max(1, Number(frame.retryAfter) || 1);
        waiting.set(
          entry.id,
          setTimeout(() => {
            waiting.delete(entry.id);
            pump();
          }, retryIn * 1000),
        );
        onChange(entry, "retrying", { status: frame.status, message: frame.message, reason: frame.reason, retryIn });
      } else {
        // 400, 403, 413 (and 500): sending it again would get the same answer. It stays
        // for the writer to edit or discard, and the channel's next message goes.
        entry.failed = { status: frame.status, message: frame.message };
        save(entry);
        onChange(entry, "failed");
      }
      pump();
      return true;
    },
    /** Drops a message; answers it, for editing. */
    discard(id) {
      const entry = entries.find((other) => other.id === id);
      if (entry) {
        remove(entry);
        onChange(entry, "removed");
      }
      pump();
      return entry ?? null;
    },
    /** Sends a refused message again as it is (after a 500, say). */
    retry(id) {
      const entry = entries.find((other) => other.id === id);
      if (!entry?.failed) return;
      // Behind what is waiting in its channel now, so the order stays the order sent.
      entries = [...entries.filter((other) => other !== entry), entry];
      entry.failed = null;
      entry.typed = Date.now();
      entry.n = counter++;
      save(entry);
      onChange(entry, "queued");
      pump();
    },
  };
}

// MARK: The form

/**
 * channel() names where to send; send({channel, data, name}) takes the message.
 * onTyping() is called at most every 2 s while keys are pressed; onEditLast() on Up
 * arrow in the empty field (answers whether there was a message to edit).
 */
export function setUpComposer({ form, nameInput, textInput, sendButton, counter, errorLine, channel, send, onTyping = () => {}, onEditLast = () => false }) {
  const maxBytes = Number(form.dataset.maxBytes) || 65536;

  // A signed-in person's name is the sign-in's (read-only, filled in already): not the one kept.
  if (!nameInput.readOnly) nameInput.value = localStorage.getItem(NAME_KEY) ?? "";
  nameInput.addEventListener("input", () => localStorage.setItem(NAME_KEY, nameInput.value));

  function bytes() {
    return encoder.encode(textInput.value).length;
  }

  function update() {
    const used = bytes();
    const over = used > maxBytes;
    counter.textContent = used > maxBytes * 0.8 || over ? `${used.toLocaleString()} / ${maxBytes.toLocaleString()} bytes` : "";
    counter.classList.toggle("over", over);
    sendButton.disabled = over || textInput.value.trim() === "" || Boolean(blocked);
    // Grow with the text, up to about six lines; empty, one line (a placeholder that
    // wraps on a narrow screen would otherwise make it tall).
    textInput.style.height = "auto";
    if (textInput.value === "") {
      textInput.style.height = "";
      textInput.style.overflowY = "hidden";
      return;
    }
    textInput.style.height = `${Math.min(textInput.scrollHeight, 160)}px`;
    textInput.style.overflowY = textInput.scrollHeight > 160 ? "auto" : "hidden";
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  let typedAt = 0;
  let blocked = null; // why this room takes no messages, or null

  textInput.addEventListener("input", () => {
    update();
    const now = Date.now();
    if (textInput.value.trim() && now - typedAt >= TYPING_EVERY_MS) {
      typedAt = now;
      onTyping();
    }
  });
  textInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "ArrowUp" && textInput.value === "" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey) {
      if (onEditLast()) event.preventDefault();
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = textInput.value;
    if (!data.trim() || bytes() > maxBytes || blocked) return;
    showError("");
    send({ channel: channel(), data, name: nameInput.value.trim() });
    textInput.value = "";
    typedAt = 0; // the next message's typing is news again
    update();
    textInput.focus();
  });

  update();

  return {
    /** Puts `text` back to be edited (a message the server refused). */
    edit(text) {
      textInput.value = text;
      update();
      textInput.focus();
    },
    /** Says why a message was not sent (role="alert": read out), or nothing. */
    showError,
    /** The room on screen takes no messages (`reason`: a full room, a private one), or does again (null). */
    block(reason, placeholder) {
      blocked = reason || null;
      textInput.disabled = Boolean(blocked);
      textInput.placeholder = placeholder;
      form.dataset.blocked = blocked ? "true" : "false";
      update();
    },
  };
}
