// The inbox: the server writes there when someone writes to us one to one. It is read
// from /history, after where this browser left it (kept in localStorage).

import { fetchHistory } from "./history.js";
import { isValidChannel } from "./tabs.js";

const inboxKey = "chatroom.inbox";
function readInbox() {
  try {
    return JSON.parse(localStorage.getItem(inboxKey) ?? "null");
  } catch {
    return null;
  }
}

/**
 * Reads the news in me's inbox; onNews(room, name) learns each one-to-one room of me's
 * with news, and `name`, who wrote.
 */
export async function readInboxNews(me, onNews) {
  if (!me) return;
  const at = readInbox();
  try {
    // After where this browser left it (100 at a time); the first time, or after the
    // inbox's history was lost, the newest.
    let page = at?.epoch ? await fetchHistory(`inbox:${me}`, { since: at.offset, limit: 100 }) : null;
    let offset;
    if (page && page.epoch === at.epoch) {
      offset = page.messages.at(-1)?.offset ?? at.offset;
    } else {
      page = await fetchHistory(`inbox:${me}`, { limit: 100 });
      offset = page.lastOffset ?? 0;
    }
    for (const message of page.messages) {
      const room = message.data;
      if (isValidChannel(room) && room.startsWith("dm:") && room.split(":").includes(me)) onNews(room, message.name);
    }
    localStorage.setItem(inboxKey, JSON.stringify({ epoch: page.epoch, offset }));
  } catch {
    // Offline or refused: try again at the next round.
  }
}
