// Channel tabs: a WAI-ARIA tablist; the chosen channel lives in the `channel` cookie
// (24 hours, as in the original page), which the server reads on /wb/.

const COOKIE = "channel";

export function readChannelCookie() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === COOKIE) return decodeURIComponent(rest.join("="));
  }
  return null;
}

export function writeChannelCookie(channel) {
  document.cookie = `${COOKIE}=${encodeURIComponent(channel)}; max-age=86400; path=/; SameSite=Lax`;
}

/** Wires up the tablist; calls onSelect(channel) when the user picks a tab. */
export function setUpTabs(tablist, onSelect) {
  const tabs = () => [...tablist.querySelectorAll('[role="tab"]')];

  function select(channel, { focus = false } = {}) {
    for (const tab of tabs()) {
      const chosen = tab.dataset.channel === channel;
      tab.setAttribute("aria-selected", String(chosen));
      tab.tabIndex = chosen ? 0 : -1;
      if (chosen && focus) tab.focus();
    }
  }

  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (!tab) return;
    select(tab.dataset.channel);
    onSelect(tab.dataset.channel);
  });

  tablist.addEventListener("keydown", (event) => {
    const all = tabs();
    const current = all.indexOf(document.activeElement);
    if (current < 0) return;
    let next = null;
    if (event.key === "ArrowRight") next = (current + 1) % all.length;
    else if (event.key === "ArrowLeft") next = (current - 1 + all.length) % all.length;
    else if (event.key === "Home") next = 0;
    else if (event.key === "End") next = all.length - 1;
    if (next === null) return;
    event.preventDefault();
    const channel = all[next].dataset.channel;
    select(channel, { focus: true });
    onSelect(channel);
  });

  return { select, channels: () => tabs().map((tab) => tab.dataset.channel) };
}
