// The chat page: tabs choose the channel (cookie), the socket brings its messages,
// the form posts to /send/.

import { connect } from "./connection.js";
import { createChannelView } from "./history.js";
import { createMessageList } from "./messages.js";
import { readChannelCookie, setUpTabs, writeChannelCookie } from "./tabs.js";

const statusLine = document.getElementById("status");
const form = document.getElementById("composer");
const input = document.getElementById("text");
const sendError = document.getElementById("send-error");
const messages = createMessageList(document.getElementById("messages"));

const tabs = setUpTabs(document.getElementById("tabs"), (channel) => {
  if (channel === current) return;
  current = channel;
  writeChannelCookie(channel);
  open(channel).then(() => connection.reopen());
});

let view = null;

/** Shows the channel's recent history; the socket then resumes after it. */
async function open(channel) {
  messages.clear();
  view = createChannelView({
    channel,
    show: (frame) => messages.message(frame),
    notice: (text) => messages.notice(text),
  });
  try {
    await view.load();
  } catch (error) {
    messages.notice(`Could not load recent messages: ${error.message}`);
  }
}

let current = readChannelCookie();
if (!tabs.channels().includes(current)) current = tabs.channels()[0] ?? "channel_1";
writeChannelCookie(current);
tabs.select(current);

const STATES = {
  connecting: () => "Connecting…",
  connected: () => "Connected",
  reconnecting: (seconds) => (seconds > 0 ? `Reconnecting in ${seconds} s…` : "Reconnecting…"),
  offline: () => "Offline — waiting for the network",
};

await open(current);

const connection = connect({
  resumeFrom: () => view.resumeFrom(),
  onState(state, detail) {
    statusLine.dataset.state = state;
    statusLine.textContent = STATES[state](detail);
  },
  onMessage(frame) {
    if (frame.type === "error") messages.notice(`Server: ${frame.message}`);
    else if (frame.channel === current) view.receive(frame);
  },
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = input.value;
  if (!data.trim()) return;
  sendError.hidden = true;
  try {
    const response = await fetch("/send/", {
      method: "POST",
      body: new URLSearchParams({ data, channel: current }),
    });
    const text = await response.text();
    if (!response.ok || text !== "ok") throw new Error(text.trim() || `HTTP ${response.status}`);
    input.value = "";
  } catch (error) {
    sendError.textContent = `Not sent: ${error.message}`;
    sendError.hidden = false;
  }
  input.focus();
});
