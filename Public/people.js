// Who is online: the list of the room on screen, from its subscription's members / join /
// leave frames (history.js keeps them per room). Everyone but oneself is a button that
// opens a one-to-one room. Someone without a name shows as "Anonymous 4F2", from their id,
// so that two of them can be told apart (and stay the same person after a reload).
//
// A moderator also gets a "⋯" menu button beside each other person: Mute 5 min, Mute 1 h,
// Unmute, Ban 1 day, Ban, Unban (a WAI-ARIA menu button: Enter, Space or Down opens it
// on its first item, Up and Down move, Home and End, Escape closes it back onto its
// button). People this page banned leave the room, so they stay in the list, marked, with
// Unban. The menu opens in the list itself, under the person, so it fits at 360 px.

import { anonymousLabel } from "./messages.js";

const MINUTE = 60;
const HOUR = 3600;
const DAY = 86400;

/**
 * list is the <ul>; me is this browser's identity; onChoose(id, name) opens a room with
 * that person; onModerate(action, id, name, seconds) mutes, bans or unbans them (seconds
 * undefined for unban). untilText(ms) says when a mute or ban ends. words: the page's.
 */
export function createPeopleList({ list, me, onChoose, onModerate = () => {}, untilText = (ms) => new Date(ms).toLocaleString(), words }) {
  let openFor = null; // the id whose menu is open
  const result = document.createElement("p");
  result.className = "mod-result";
  result.setAttribute("role", "status");
  result.hidden = true;
  list.after(result);

  const choices = () => [
    ["mute-5m", words.muteFor5m, "mute", 5 * MINUTE],
    ["mute-1h", words.muteFor1h, "mute", HOUR],
    ["unmute", words.unmute, "mute", 0],
    ["ban-1d", words.banFor1d, "ban", DAY],
    ["ban", words.ban, "ban", 0],
    ["unban", words.unban, "unban", undefined],
  ];

  function menuFor(id, shown, { banned }) {
    const menuId = `moderate-${id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "mod-toggle";
    toggle.textContent = "⋯";
    toggle.dataset.id = id;
    toggle.setAttribute("aria-label", words.moderate(shown));
    toggle.title = words.moderate(shown);
    toggle.setAttribute("aria-haspopup", "menu");
    toggle.setAttribute("aria-controls", menuId);
    const menu = document.createElement("div");
    menu.className = "mod-menu";
    menu.id = menuId;
    menu.setAttribute("role", "menu");
    menu.setAttribute("aria-label", words.moderate(shown));
    for (const [key, label, action, seconds] of choices()) {
      if (banned && action !== "unban") continue; // out of the room: all there is left to do is let them back
      const item = document.createElement("button");
      item.type = "button";
      item.setAttribute("role", "menuitem");
      item.tabIndex = -1;
      item.dataset.action = key;
      item.textContent = label;
      item.addEventListener("click", () => {
        close(true);
        onModerate(action, id, shown, seconds);
      });
      menu.append(item);
    }
    const items = () => [...menu.querySelectorAll('[role="menuitem"]')];
    function open(focusLast = false) {
      for (const other of list.querySelectorAll(".mod-menu:not([hidden])")) if (other !== menu) other.hidden = true;
      for (const other of list.querySelectorAll('.mod-toggle[aria-expanded="true"]')) other.setAttribute("aria-expanded", "false");
      openFor = id;
      menu.hidden = false;
      toggle.setAttribute("aria-expanded", "true");
      (focusLast ? items().at(-1) : items()[0])?.focus();
    }
    function close(refocus) {
      if (openFor === id) openFor = null;
      menu.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      if (refocus) toggle.focus();
    }
    toggle.addEventListener("click", () => (menu.hidden ? open() : close(false)));
    toggle.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        open(event.key === "ArrowUp");
      }
    });
    menu.addEventListener("keydown", (event) => {
      const all = items();
      const at = all.indexOf(document.activeElement);
      const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: all.length - 1 }[event.key];
      if (move !== undefined) {
        event.preventDefault();
        all[(move + all.length) % all.length].focus();
      } else if (event.key === "Escape") {
        // Only the menu closes: the list stays open.
        event.preventDefault();
        event.stopPropagation();
        close(true);
      } else if (event.key === "Tab") close(false);
    });
    const isOpen = openFor === id;
    menu.hidden = !isOpen;
    toggle.setAttribute("aria-expanded", String(isOpen));
    return [toggle, menu];
  }

  function tag(text) {
    const element = document.createElement("span");
    element.className = "mod-tag";
    element.textContent = text;
    return element;
  }

  /**
   * Shows `members`, a Map id → name (or null: not known, e.g. before `members`).
   * moderator: whether to offer the menus; muted: Map id → until (ms) of mutes this page
   * knows of; banned: Map id → {name, until} of people banned here (until 0: until lifted).
   */
  function show(members, { moderator = false, muted = new Map(), banned = new Map() } = {}) {
    // A redraw (someone joined) keeps the reader where they were: the same control focused.
    const focused = list.contains(document.activeElement) ? { id: document.activeElement.closest("[data-person]")?.dataset.person, action: document.activeElement.dataset.action ?? null, toggle: document.activeElement.classList.contains("mod-toggle") } : null;
    const shownName = (id, name) => name || anonymousLabel(id);
    const everyone = new Map(members ?? []);
    if (moderator) for (const [id, ban] of banned) if (!everyone.has(id)) everyone.set(id, ban.name ?? null);
    const items = [...(members ? everyone : [])].sort(([a, first], [b, second]) => (a === me ? -1 : b === me ? 1 : shownName(a, first).localeCompare(shownName(b, second))));
    if (openFor !== null && !everyone.has(openFor)) openFor = null;
    list.classList.toggle("moderating", moderator);
    list.replaceChildren(
      ...items.map(([id, name]) => {
        const item = document.createElement("li");
        const shown = shownName(id, name);
        item.dataset.person = id;
        if (id === me) {
          item.textContent = words.you(shown);
          item.className = "me";
          return item;
        }
        const button = document.createElement("button");
        button.type = "button";
        button.className = "talk";
        button.textContent = shown;
        button.dataset.id = id;
        button.title = words.talkWith(shown);
        button.addEventListener("click", () => onChoose(id, shown));
        item.append(button);
        if (!moderator) return item;
        const ban = banned.get(id);
        const until = muted.get(id);
        if (ban) {
          item.classList.add("banned");
          button.append(tag(words.bannedTag(ban.until ? untilText(ban.until) : null)));
        } else if (until) {
          item.classList.add("muted");
          button.append(tag(words.mutedTag(untilText(until))));
        }
        const [toggle, menu] = menuFor(id, shown, { banned: Boolean(ban) && !members.has(id) });
        item.append(toggle, menu);
        return item;
      }),
    );
    if (focused?.id) {
      const row = list.querySelector(`[data-person="${CSS.escape(focused.id)}"]`);
      const target = focused.toggle ? row?.querySelector(".mod-toggle") : focused.action ? row?.querySelector(`[data-action="${CSS.escape(focused.action)}"]`) : row?.querySelector(".talk");
      target?.focus();
    }
  }

  let resultTimer = null;

  return {
    show,
    clear: () => show(null),
    /** Says how a moderation went, in the list, for a while (role="status": read out, quietly). */
    say(text, { failed = false } = {}) {
      clearTimeout(resultTimer);
      result.textContent = text;
      result.classList.toggle("failed", failed);
      result.hidden = !text;
      resultTimer = setTimeout(() => (result.hidden = true), 8000);
    },
  };
}
