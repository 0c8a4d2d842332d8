// Who is online: the list of the room on screen, from its subscription's members / join /
// leave frames (history.js keeps them per room). Everyone but oneself is a button that
// opens a one-to-one room.

/**
 * list is the <ul>; me is this browser's identity; onChoose(id, name) opens a room with
 * that person.
 */
export function createPeopleList({ list, me, onChoose }) {
  /** Shows `members`, a Map id → name (or null: not known, e.g. before `members`). */
  function show(members) {
    const items = [...(members ?? [])].sort(([a, first], [b, second]) => (a === me ? -1 : b === me ? 1 : (first ?? "").localeCompare(second ?? "")));
    list.replaceChildren(
      ...items.map(([id, name]) => {
        const item = document.createElement("li");
        const shown = name || "Anonymous";
        if (id === me) {
          item.textContent = `${shown} (you)`;
          item.className = "me";
        } else {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = shown;
          button.dataset.id = id;
          button.title = `Talk with ${shown} one to one`;
          button.addEventListener("click", () => onChoose(id, shown));
          item.append(button);
        }
        return item;
      }),
    );
  }

  return { show, clear: () => show(null) };
}
