// Who is online: the list of the current room, from the socket's members / join / leave
// frames. Everyone but oneself is a button that opens a one-to-one room.

/**
 * list is the <ul>; me is this browser's identity; onChoose(id, name) opens a room with
 * that person.
 */
export function createPeopleList({ list, me, onChoose }) {
  let people = new Map(); // id → name

  function render() {
    const items = [...people].sort(([a, first], [b, second]) => (a === me ? -1 : b === me ? 1 : (first ?? "").localeCompare(second ?? "")));
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

  return {
    /** Empties the list, for another room. */
    clear() {
      people = new Map();
      render();
    },
    /** Takes a `members`, `join` or `leave` frame. */
    receive(frame) {
      if (frame.type === "members") people = new Map(frame.members.map((member) => [member.id, member.name ?? null]));
      else if (frame.type === "join") people.set(frame.member.id, frame.member.name ?? null);
      else if (frame.type === "leave") people.delete(frame.member.id);
      render();
    },
  };
}
