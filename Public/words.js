// The page's own words in English, Simplified and Traditional Chinese, chosen from the
// browser's languages. Every word the page shows is here, and nowhere else; the server's
// refusal texts are shown as the server sent them.

/** The words for the first of `languages` the page speaks: zh-TW, zh-HK, zh-Hant → Traditional, other zh → Simplified, else English. */
export function pageWords(languages) {
  // Each word: [English, Simplified Chinese, Traditional Chinese], or a function answering that.
  const table = {
    addReaction: ["Add a reaction", "添加回应", "新增回應"],
    anonymous: ["Anonymous", "匿名", "匿名"],
    ban: ["Ban", "封禁", "封鎖"],
    banFor1d: ["Ban 1 day", "封禁 1 天", "封鎖 1 天"],
    bannedTag: (until) => [until ? `banned until ${until}` : "banned", until ? `封禁至 ${until}` : "已封禁", until ? `封鎖至 ${until}` : "已封鎖"],
    bannedUntil: (until) => [until ? `You are banned from this room until ${until}` : "You are banned from this room until a moderator lifts it", until ? `你已被禁止进入此聊天室，直到 ${until}` : "你已被禁止进入此聊天室，直到管理员解除", until ? `你已被禁止進入此聊天室，直到 ${until}` : "你已被禁止進入此聊天室，直到管理員解除"],
    cancel: ["Cancel", "取消", "取消"],
    cannotFollow: (why) => [`You cannot follow this channel: ${why}`, `无法关注此频道：${why}`, `無法關注此頻道：${why}`],
    cannotWriteHere: (why) => [`You cannot write here: ${why}`, `无法在此发言：${why}`, `無法在此發言：${why}`],
    channelRule: ["1–64 letters, digits, _ . : or -", "1–64 个字母、数字、_ . : 或 -", "1–64 個字母、數字、_ . : 或 -"],
    channels: ["Channels", "频道", "頻道"],
    closeTab: (label) => [`Close ${label} (Delete)`, `关闭 ${label}（Delete）`, `關閉 ${label}（Delete）`],
    confirmDelete: ["Delete this message for everyone?", "为所有人删除这条消息？", "為所有人刪除這則訊息？"],
    connected: ["Connected", "已连接", "已連線"],
    connectedCompat: ["Connected (compatibility mode)", "已连接（兼容模式）", "已連線（相容模式）"],
    connecting: ["Connecting…", "正在连接…", "正在連線…"],
    couldNotChange: (action, why) => [`Could not ${action === "react" ? "react to" : action} the message: ${why}`, `无法${{ edit: "编辑", delete: "删除", react: "回应" }[action] ?? action}这条消息：${why}`, `無法${{ edit: "編輯", delete: "刪除", react: "回應" }[action] ?? action}這則訊息：${why}`],
    couldNotLoadEarlier: (why) => [`Could not load earlier messages: ${why}`, `无法加载更早的消息：${why}`, `無法載入更早的訊息：${why}`],
    couldNotLoadRecent: (why) => [`Could not load recent messages: ${why}. Trying again.`, `无法加载最近的消息：${why}。正在重试。`, `無法載入最近的訊息：${why}。正在重試。`],
    couldNotModerate: (name, why) => [`Could not do that to ${name}: ${why}`, `无法对 ${name} 执行此操作：${why}`, `無法對 ${name} 執行此操作：${why}`],
    delete: ["Delete", "删除", "刪除"],
    deleteAsModerator: ["Delete (as moderator)", "删除（管理员）", "刪除（管理員）"],
    deleted: ["Message deleted", "消息已删除", "訊息已刪除"],
    discard: ["Discard", "放弃", "放弃"],
    edit: ["Edit", "编辑", "編輯"],
    editLabel: ["Edit your message: Enter saves, Escape cancels", "编辑消息：Enter 保存，Esc 取消", "編輯訊息：Enter 儲存，Esc 取消"],
    edited: ["(edited)", "（已编辑）", "（已編輯）"],
    enableNotifications: ["Enable notifications", "开启通知", "開啟通知"],
    historyRestarted: ["The chat's history started again here: the messages above are from before", "聊天记录从这里重新开始：以上是之前的消息", "聊天記錄從這裡重新開始：以上是之前的訊息"],
    historyReset: ["The chat history was reset on the server; earlier messages may be missing.", "服务器上的聊天记录已重置，更早的消息可能缺失。", "伺服器上的聊天記錄已重設，更早的訊息可能遺失。"],
    jumpToNewest: ["Jump to newest ↓", "跳到最新 ↓", "跳到最新 ↓"],
    loadEarlier: ["Load earlier messages", "加载更早的消息", "載入更早的訊息"],
    message: ["Message", "消息", "訊息"],
    nameShort: ["Name", "名字", "名字"],
    messageNotSent: (why) => [`A message was not sent: ${why}`, `一条消息未发送：${why}`, `一則訊息未送出：${why}`],
    messagePlaceholder: ["Message — Enter sends, Shift+Enter adds a line", "消息 — Enter 发送，Shift+Enter 换行", "訊息 — Enter 送出，Shift+Enter 換行"],
    messages: ["Messages", "消息", "訊息"],
    moderate: (name) => [`Moderate ${name}`, `管理 ${name}`, `管理 ${name}`],
    moderated: (action, name, until) => [
      { mute: until ? `${name} is muted until ${until}` : `${name} may write again`, ban: until ? `${name} is banned until ${until}` : `${name} is banned until you lift it`, unban: `${name} may come back` }[action] ?? `${action}: ${name}`,
      { mute: until ? `${name} 已被禁言至 ${until}` : `${name} 可以再次发言`, ban: until ? `${name} 已被封禁至 ${until}` : `${name} 已被封禁，直到你解除`, unban: `${name} 可以回来了` }[action] ?? `${action}：${name}`,
      { mute: until ? `${name} 已被禁言至 ${until}` : `${name} 可以再次發言`, ban: until ? `${name} 已被封鎖至 ${until}` : `${name} 已被封鎖，直到你解除`, unban: `${name} 可以回來了` }[action] ?? `${action}：${name}`,
    ],
    mutedTag: (until) => [`muted until ${until}`, `禁言至 ${until}`, `禁言至 ${until}`],
    mutedUntil: (until) => [`You are muted in this room until ${until}`, `你在此聊天室被禁言至 ${until}`, `你在此聊天室被禁言至 ${until}`],
    muteFor1h: ["Mute 1 h", "禁言 1 小时", "禁言 1 小時"],
    muteFor5m: ["Mute 5 min", "禁言 5 分钟", "禁言 5 分鐘"],
    newMessages: (count) => [`${count} new message${count === 1 ? "" : "s"} ↓`, `${count} 条新消息 ↓`, `${count} 則新訊息 ↓`],
    noMessages: ["No messages yet", "还没有消息", "還沒有訊息"],
    notSent: (why) => [`Not sent: ${why}`, `未发送：${why}`, `未送出：${why}`],
    offline: ["Offline — waiting for the network", "离线 — 等待网络", "離線 — 等待網路"],
    signedOut: (reason) => [`Signed out — ${reason || "sign in again"}`, `已退出登录 — ${reason || "请重新登录"}`, `已登出 — ${reason || "請重新登入"}`],
    nameFromSignIn: ["Your name, from your sign-in", "你的名字，来自登录", "你的名字，來自登入"],
    online: (count) => [`${count} online`, `${count} 人在线`, `${count} 人在線上`],
    open: ["Open", "打开", "開啟"],
    openByName: ["Open a channel by name", "按名称打开频道", "依名稱開啟頻道"],
    openPlaceholder: ["Open channel…", "打开频道…", "開啟頻道…"],
    peopleHint: ["Choose someone to talk one to one.", "选择一个人进行一对一聊天。", "選擇一個人進行一對一聊天。"],
    peopleHintModerator: ["Choose someone to talk one to one; ⋯ mutes or bans them.", "选择一个人进行一对一聊天；⋯ 可禁言或封禁。", "選擇一個人進行一對一聊天；⋯ 可禁言或封鎖。"],
    peopleOnline: ["People online", "在线的人", "線上的人"],
    reactionLabel: (emoji, count) => [`${emoji}: ${count} reaction${count === 1 ? "" : "s"}`, `${emoji}：${count} 个回应`, `${emoji}：${count} 個回應`],
    reconnectNow: ["Reconnect now", "立即重连", "立即重新連線"],
    reconnecting: (seconds) => [(seconds > 0 ? `Reconnecting in ${seconds} s…` : "Reconnecting…"), (seconds > 0 ? `${seconds} 秒后重连…` : "正在重连…"), (seconds > 0 ? `${seconds} 秒後重新連線…` : "正在重新連線…")],
    refusedBy: (code) => [`Refused by the server (${code})`, `被服务器拒绝（${code}）`, `被伺服器拒絕（${code}）`],
    save: ["Save", "保存", "儲存"],
    seen: ["Seen", "已读", "已讀"],
    send: ["Send", "发送", "送出"],
    sendAgain: ["Send again", "重新发送", "重新送出"],
    sending: ["sending…", "发送中…", "送出中…"],
    sendingAgain: (seconds, why) => [`Sending again in ${seconds} s — ${why}`, `${seconds} 秒后重新发送 — ${why}`, `${seconds} 秒後重新送出 — ${why}`],
    sent: ["sent", "已发送", "已送出"],
    server: (message) => [`Server: ${message}`, `服务器：${message}`, `伺服器：${message}`],
    serverCannot: (type) => [`This server does not support “${type}” yet.`, `此服务器还不支持“${type}”。`, `此伺服器還不支援「${type}」。`],
    showLess: ["Show less", "收起", "收起"],
    showMore: ["Show more", "展开", "展開"],
    slowMode: (seconds) => [`Slow mode: sending in ${seconds} s`, `慢速模式：${seconds} 秒后发送`, `慢速模式：${seconds} 秒後送出`],
    talkWith: (name) => [`Talk with ${name} one to one`, `与 ${name} 一对一聊天`, `與 ${name} 一對一聊天`],
    today: ["Today", "今天", "今天"],
    tryingAgain: ["Trying again shortly.", "稍后重试。", "稍後重試。"],
    typing: (names) => [(names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : "Several people are typing…"), (names.length === 1 ? `${names[0]} 正在输入…` : names.length === 2 ? `${names[0]} 和 ${names[1]} 正在输入…` : "好几个人正在输入…"), (names.length === 1 ? `${names[0]} 正在輸入…` : names.length === 2 ? `${names[0]} 和 ${names[1]} 正在輸入…` : "好幾個人正在輸入…")],
    unban: ["Unban", "解除封禁", "解除封鎖"],
    unmute: ["Unmute", "解除禁言", "解除禁言"],
    unread: (label, count) => [`${label}, ${count} unread`, `${label}，${count} 条未读`, `${label}，${count} 則未讀`],
    wroteToYou: ["wrote to you", "给你发了消息", "傳了訊息給你"],
    yesterday: ["Yesterday", "昨天", "昨天"],
    search: ["Search", "搜索", "搜尋"],
    searchLabel: ["Search this channel", "搜索此频道", "搜尋此頻道"],
    searchPlaceholder: ["Search…", "搜索…", "搜尋…"],
    searchResults: ["Search results", "搜索结果", "搜尋結果"],
    searchFound: (count, query) => [count === 0 ? `Nothing found for “${query}”` : `${count} message${count === 1 ? "" : "s"} with “${query}” — choose one to see it in the conversation`, count === 0 ? `没有找到“${query}”` : `${count} 条消息包含“${query}” — 选择一条查看上下文`, count === 0 ? `沒有找到「${query}」` : `${count} 則訊息包含「${query}」 — 選擇一則查看上下文`],
    searching: ["Searching…", "正在搜索…", "正在搜尋…"],
    couldNotSearch: (why) => [`Could not search: ${why}`, `无法搜索：${why}`, `無法搜尋：${why}`],
    closeSearch: ["Close", "关闭", "關閉"],
    you: (name) => [`${name} (you)`, `${name}（你）`, `${name}（你）`],
    yourName: ["Your name", "你的名字", "你的名字"],
  };
  const first = String(languages.find(Boolean) ?? "en").toLowerCase();
  const index = !first.startsWith("zh") ? 0 : /^zh-(tw|hk|mo|hant)/.test(first) ? 2 : 1;
  const words = { lang: ["en", "zh-Hans", "zh-Hant"][index] };
  for (const [key, value] of Object.entries(table)) words[key] = typeof value === "function" ? (...args) => value(...args)[index] : value[index];
  return words;
}

/**
 * When a mute or ban ends (`ms`, Unix milliseconds), in local time and the page's
 * language: "14:05" today (with seconds when under a minute away), else the date too.
 */
export function formatUntil(ms, lang = document.documentElement.lang || undefined) {
  const when = new Date(ms);
  if (when.toDateString() !== new Date().toDateString()) return when.toLocaleString(lang, { dateStyle: "medium", timeStyle: "short" });
  const options = { hour: "2-digit", minute: "2-digit" };
  if (ms - Date.now() < 60000) options.second = "2-digit";
  return when.toLocaleTimeString(lang, options);
}
