// The inbox, inbox:<id>: the server writes there when someone writes to us one to one, a
// notice whose `data` names the room and whose `name` is who wrote. The page follows it
// as one more subscription on its socket, so a notice shows the moment it is written;
// where the page stands in it stays under the key the page has always kept it under.

import { isValidChannel } from "./tabs.js";

const INBOX_POSITION = "chatroom.inbox";
const FIRST_LOOK = 100; // notices read when this browser has no position in the inbox

/** The inbox channel of identity `me`, or null without one. */
export function inboxOf(me) {
  return me ? `inbox:${me}` : null;
}

/** Follows me's inbox over `subscriptions`; every hole in it is read (a notice is news). */
export function followInbox(subscriptions, me) {
  const channel = inboxOf(me);
  if (!channel) return null;
  return subscriptions.follow(channel, { positionKey: INBOX_POSITION, fillsHoles: () => true, firstLook: FIRST_LOOK });
}

/**
 * The news in one inbox message frame: {room, name}, the one-to-one room of me's with
 * news and who wrote; null if the frame names no such room.
 */
export function newsOf(frame, me) {
  const room = frame.data;
  if (!isValidChannel(room) || !room.startsWith("dm:") || !room.split(":").includes(me)) return null;
  return { room, name: frame.name ?? null };
}
