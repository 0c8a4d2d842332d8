// Who is online: the list of the room on screen, from its subscription's members / join /
// leave frames (history.js keeps them per room). Everyone but oneself is a button that
// opens a one-to-one room. Someone without a name shows as "Anonymous 4F2", from their id,
// so that two of them can be told apart (and stay the same person after a reload).

import { anonymousLabel } from "./messages.js";

/**
 * list is the <ul>; me is this browser's identity; onChoose(id, name) opens a room with
 * that person. words: you(name), talkWith(name).
 */
export function createPeopleList({ list, me, onChoose, words }) {
  /** Shows `members`, a Map id → name (or null: not known, e.g. before `members`). */
  function show(members) {
    const shownName = (id, name) => name || anonymousLabel(id);
    const items = [...(members ?? [])].sort(([a, first], [b, second]) => (a === me ? -1 : b === me ? 1 : shownName(a, first).localeCompare(shownName(b, second))));
    list.replaceChildren(
      ...items.map(([id, name]) => {
        const item = document.createElement("li");
        const shown = shownName(id, name);
        if (id === me) {
          item.textContent = words.you(shown);
          item.className = "me";
        } else {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = shown;
          button.dataset.id = id;
          button.title = words.talkWith(shown);
          button.addEventListener("click", () => onChoose(id, shown));
          item.append(button);
        }
        return item;
      }),
    );
  }

  return { show, clear: () => show(null) };
}
