// The message form: a name kept in localStorage, a text area where Enter sends and
// Shift+Enter adds a line, a counter against the server's limit, and the server's own
// words when a message is refused.

const NAME_KEY = "chatroom.name";
const encoder = new TextEncoder();

/**
 * channel() names where to send; onSent({offset, epoch}) learns the message it became.
 */
export function setUpComposer({ form, nameInput, textInput, sendButton, counter, errorLine, channel, onSent }) {
  const maxBytes = Number(form.dataset.maxBytes) || 65536;

  nameInput.value = localStorage.getItem(NAME_KEY) ?? "";
  nameInput.addEventListener("input", () => localStorage.setItem(NAME_KEY, nameInput.value));

  function bytes() {
    return encoder.encode(textInput.value).length;
  }

  function update() {
    const used = bytes();
    const over = used > maxBytes;
    counter.textContent = used > maxBytes * 0.8 || over ? `${used.toLocaleString()} / ${maxBytes.toLocaleString()} bytes` : "";
    counter.classList.toggle("over", over);
    sendButton.disabled = over || textInput.value.trim() === "";
    // Grow with the text, up to about six lines.
    textInput.style.height = "auto";
    textInput.style.height = `${Math.min(textInput.scrollHeight, 160)}px`;
    textInput.style.overflowY = textInput.scrollHeight > 160 ? "auto" : "hidden";
  }

  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  textInput.addEventListener("input", update);
  textInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = textInput.value;
    if (!data.trim() || bytes() > maxBytes) return;
    showError("");
    sendButton.disabled = true;
    try {
      const fields = new URLSearchParams({ data, channel: channel() });
      if (nameInput.value.trim()) fields.set("name", nameInput.value.trim());
      const response = await fetch("/send/", { method: "POST", body: fields });
      const text = (await response.text()).trim();
      if (!response.ok || text !== "ok") throw new Error(`${response.status}: ${text || response.statusText}`);
      textInput.value = "";
      const offset = Number(response.headers.get("Chat-Offset"));
      const epoch = response.headers.get("Chat-Epoch");
      if (offset && epoch) onSent({ offset, epoch });
    } catch (error) {
      showError(`Not sent (${error.message.startsWith("Failed to fetch") ? "the server cannot be reached" : error.message})`);
    }
    update();
    textInput.focus();
  });

  update();
}
