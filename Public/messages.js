// The message list. Text is always set with textContent: a message such as
// <img src=x onerror=alert(1)> shows as those characters and runs nothing.

const KEEP = 500; // messages kept in the page

export function createMessageList(list) {
  const scroller = list.parentElement;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  }

  function append(item) {
    const stick = nearBottom();
    list.append(item);
    while (list.childElementCount > KEEP) list.firstElementChild.remove();
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  }

  return {
    clear() {
      list.replaceChildren();
    },
    message({ data, time }) {
      const item = document.createElement("li");
      if (time) {
        const stamp = document.createElement("time");
        const when = new Date(time);
        stamp.dateTime = when.toISOString();
        stamp.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        item.append(stamp);
      }
      item.append(document.createTextNode(data));
      append(item);
    },
    notice(text) {
      const item = document.createElement("li");
      item.className = "notice";
      item.textContent = text;
      append(item);
    },
  };
}
