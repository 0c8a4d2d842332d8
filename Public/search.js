// The search box of a server with an archive: GET /search finds the channel's messages
// with every word typed, newest first; choosing one shows it in the conversation, with
// its neighbours around it, read from /history (the epoch it was written in, even one
// the server's Redis lost since).

import { anonymousLabel } from "./messages.js";

const LIMIT = 50; // results asked for
const AROUND = 10; // messages shown on each side of a chosen result

/** GET /search of `channel` for `words`: {channel, messages}. */
export async function searchChannel(channel, words, limit = LIMIT) {
  const query = new URLSearchParams({ channel, q: words, limit: String(limit) });
  const token = new URLSearchParams(location.search).get("token");
  if (token) query.set("token", token);
  const response = await fetch(`/search?${query}`, { cache: "no-store" });
  if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
  return response.json();
}

/** The offsets a result's neighbours lie between: /history's since and before. */
export function around(offset) {
  return { since: Math.max(0, offset - AROUND - 1), before: offset + AROUND + 1 };
}

/** `text` into `parent`, each of `words` (case aside) marked. */
function marked(text, words, parent) {
  const wanted = words.map((word) => word.toLocaleLowerCase()).filter(Boolean);
  const lower = text.toLocaleLowerCase();
  let at = 0;
  while (at < text.length) {
    let next = -1;
    let length = 0;
    for (const word of wanted) {
      const found = lower.indexOf(word, at);
      if (found >= 0 && (next < 0 || found < next)) {
        next = found;
        length = word.length;
      }
    }
    if (next < 0 || lower.length !== text.length) {
      parent.append(text.slice(at));
      return;
    }
    if (next > at) parent.append(text.slice(at, next));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(next, next + length);
    parent.append(mark);
    at = next + length;
  }
}

/**
 * Sets up the search form. channel(): the channel on screen. open(result): shows a
 * result in the conversation (may throw: said in the panel). words: the page's words.
 * Answers {close()}: the panel goes (another channel on screen).
 */
export function setUpSearch({ form, input, panel, summary, list, closeButton, channel, open, words }) {
  let asked = 0; // which search is the latest, so that a slow answer cannot replace a newer one

  function close() {
    asked++;
    panel.hidden = true;
    list.replaceChildren();
    summary.textContent = "";
  }

  function resultItem(message, terms) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "search-result";
    const meta = document.createElement("span");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.name || (message.from ? anonymousLabel(message.from) : words.anonymous);
    const when = document.createElement("time");
    const date = new Date(message.time);
    when.dateTime = date.toISOString();
    when.textContent = date.toLocaleString(document.documentElement.lang || undefined, { dateStyle: "medium", timeStyle: "short" });
    meta.append(who, " ", when);
    const text = document.createElement("span");
    text.className = "text";
    marked(message.data, terms, text);
    button.append(meta, text);
    button.addEventListener("click", async () => {
      try {
        await open(message);
      } catch (error) {
        summary.textContent = words.couldNotLoadEarlier(error.message);
      }
    });
    item.append(button);
    return item;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = input.value.trim();
    const where = channel();
    if (!query || !where) return close();
    const mine = ++asked;
    panel.hidden = false;
    list.replaceChildren();
    summary.textContent = words.searching;
    try {
      const found = await searchChannel(where, query);
      if (mine !== asked) return;
      const terms = query.split(/\s+/);
      summary.textContent = words.searchFound(found.messages.length, query);
      list.replaceChildren(...found.messages.map((message) => resultItem(message, terms)));
    } catch (error) {
      if (mine !== asked) return;
      summary.textContent = words.couldNotSearch(error.message);
    }
  });
  closeButton.addEventListener("click", close);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
  return { close };
}
