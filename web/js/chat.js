// Chat: the conversation list with unread counts and presence dots, a
// conversation with live messages, typing and read markers, and new 1:1
// and group conversations. Live frames come from the one chat socket; after
// every (re)connect the socket replays what was missed and the list is read
// again, so counts stay the server's.

import { api } from "./api.js";
import * as auth from "./auth.js";
import { chatSocket } from "./socket.js";
import { ago, busy, field, fill, h, notice, showError, titled, when } from "./ui.js";

const conversations = new Map();
const presence = new Map();
const typing = new Map(); // conversation → Map(user → until)
let loadedFor = null;
let listening = false;
let view = null; // the open page: {listEl, open: {...}}
const countedMessages = new Set();

/** Compares two numeric id strings (u64 as text). */
function cmp(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function title(c) {
  if (c.name) return c.name;
  if (c.kind === "direct") return c.peerId || "Conversation";
  const others = (c.members || []).map((m) => m.userId).filter((u) => u !== auth.session()?.userId);
  return others.length ? others.slice(0, 3).join(", ") : `Group of ${c.memberCount}`;
}

function updateBadge() {
  let total = 0;
  for (const c of conversations.values()) total += c.muted ? 0 : c.unreadCount || 0;
  const badge = document.getElementById("unread-total");
  if (!badge) return;
  badge.hidden = total === 0;
  badge.textContent = total > 99 ? "99+" : String(total);
  badge.setAttribute("aria-label", `${total} unread`);
}

let reloading = null;

/** Reads the list again, at most once at a time (later asks join it). */
function reloadConversations() {
  if (!reloading) {
    reloading = loadConversations()
      .catch((error) => showError(error, "Loading conversations"))
      .finally(() => { reloading = null; });
  }
  return reloading;
}

async function loadConversations() {
  let cursor = null;
  const fresh = new Map();
  // At most a few pages: the list shows the most recent conversations.
  for (let i = 0; i < 5; i++) {
    const page = await api("GET", "/api/v1/me/conversations", { query: { limit: 100, cursor } });
    for (const c of page.conversations) fresh.set(c.id, c);
    cursor = page.nextCursor;
    if (!cursor) break;
  }
  conversations.clear();
  for (const [id, c] of fresh) conversations.set(id, c);
  updateBadge();
  renderList();
  const peers = [...conversations.values()].filter((c) => c.kind === "direct" && c.peerId && !presence.has(c.peerId)).slice(0, 30);
  await Promise.all(peers.map(async (c) => {
    try {
      presence.set(c.peerId, await api("GET", `/api/v1/users/${encodeURIComponent(c.peerId)}/presence`));
    } catch {
      // Presence is a nicety; the list works without it.
    }
  }));
  renderList();
  renderHeader();
}

/** Starts following the socket once per session (the badge works on every page). */
export function watch() {
  const me = auth.session()?.userId;
  if (loadedFor !== me) {
    loadedFor = me;
    conversations.clear();
    presence.clear();
    countedMessages.clear();
    reloadConversations();
  }
  if (listening) return;
  listening = true;
  chatSocket.addEventListener("chatevent", (e) => onEvent(e.detail));
  chatSocket.addEventListener("synced", () => reloadConversations());
  chatSocket.addEventListener("typing", (e) => onTyping(e.detail));
  chatSocket.addEventListener("read", (e) => onRead(e.detail));
  chatSocket.addEventListener("read_ack", (e) => {
    const c = conversations.get(e.detail.conversationId);
    if (c) {
      c.unreadCount = e.detail.unreadCount;
      updateBadge();
      renderList();
    }
  });
  chatSocket.addEventListener("presence", (e) => {
    presence.set(e.detail.userId, e.detail);
    renderList();
    renderHeader();
  });
}

function isOpen(cid) {
  return view?.open?.cid === cid && !document.hidden;
}

function onEvent(event) {
  const me = auth.session()?.userId;
  const cid = event.conversationId;
  if (event.kind === "conversation") {
    // Replayed ones are in the list read after the sync.
    if (!event.replayed) reloadConversations();
    if (view?.open?.cid === cid && event.conversation?.change === "member_removed" && event.conversation.users?.includes(me)) {
      location.hash = "#/chat";
    }
    return;
  }
  const message = event.message;
  if (!message) return;
  const c = conversations.get(cid);
  if (!c) {
    if (!event.replayed) reloadConversations();
  } else if (event.kind === "message") {
    if (!c.lastMessage || cmp(c.lastMessage.id, message.id) <= 0) {
      c.lastMessage = message;
      c.lastActivityAt = message.createdAt;
    }
    const fresh = !countedMessages.has(message.id);
    countedMessages.add(message.id);
    if (fresh && !event.replayed && message.senderId !== me && !isOpen(cid)) {
      c.unreadCount = (c.unreadCount || 0) + 1;
    }
    updateBadge();
    renderList();
  } else if (c.lastMessage?.id === message.id) {
    c.lastMessage = message;
    renderList();
  }
  if (view?.open?.cid === cid) {
    view.open.put(message);
    if (event.kind === "message" && message.senderId !== me) {
      // The sender stops typing once the message is here.
      typing.get(cid)?.delete(message.senderId);
      renderHeader();
      if (isOpen(cid)) markRead();
    }
  }
}

function onTyping({ conversationId, userId }) {
  if (userId === auth.session()?.userId) return;
  if (!typing.has(conversationId)) typing.set(conversationId, new Map());
  typing.get(conversationId).set(userId, Date.now() + 5000);
  renderHeader();
  setTimeout(renderHeader, 5100);
}

function onRead({ conversationId, userId, messageId }) {
  if (view?.open?.cid !== conversationId) return;
  const reads = view.open.reads;
  if (!reads.has(userId) || cmp(reads.get(userId), messageId) < 0) reads.set(userId, messageId);
  view.open.renderSeen();
}

function dot(userId) {
  const p = presence.get(userId);
  const online = p?.status === "online";
  return h("span", { class: `dot ${online ? "on" : "off"}`, title: online ? "Online" : p?.lastActiveAt ? `Last seen ${ago(p.lastActiveAt)}` : "Offline", role: "img", "aria-label": online ? "online" : "offline" });
}

function renderList() {
  if (!view?.listEl) return;
  const sorted = [...conversations.values()].sort((a, b) => (b.lastActivityAt || "").localeCompare(a.lastActivityAt || ""));
  const items = sorted.map((c) => {
    const last = c.lastMessage;
    const snippet = last ? (last.deleted ? "Message deleted" : `${last.senderId === auth.session()?.userId ? "You: " : ""}${last.text}`) : "No messages yet";
    return h("li", { class: view.open?.cid === c.id ? "current" : "" },
      h("a", { href: `#/chat/${encodeURIComponent(c.id)}`, dataset: { conversation: c.id } },
        c.kind === "direct" && c.peerId ? dot(c.peerId) : h("span", { class: "dot group", "aria-hidden": "true" }),
        h("span", { class: "grow" },
          h("strong", {}, title(c)),
          h("span", { class: "snippet" }, snippet)),
        c.unreadCount ? h("span", { class: "badge", "aria-label": `${c.unreadCount} unread` }, String(c.unreadCount)) : null));
  });
  fill(view.listEl, items.length ? items : h("li", { class: "empty" }, "No conversations yet."));
}

function renderHeader() {
  const open = view?.open;
  if (!open) return;
  const c = conversations.get(open.cid) || open.conversation;
  const now = Date.now();
  const who = [...(typing.get(open.cid) || new Map()).entries()].filter(([, until]) => until > now).map(([u]) => u);
  let line;
  if (who.length) {
    line = `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
  } else if (c.kind === "direct" && c.peerId) {
    const p = presence.get(c.peerId);
    line = p?.status === "online" ? "Online" : p?.lastActiveAt ? `Last seen ${ago(p.lastActiveAt)}` : "";
  } else {
    line = `${c.memberCount} members`;
  }
  fill(open.headerEl,
    h("a", { href: "#/chat", class: "back", "aria-label": "All conversations" }, "←"),
    c.kind === "direct" && c.peerId ? dot(c.peerId) : null,
    h("div", { class: "grow" }, h("h1", {}, title(c)), h("p", { class: "hint typing", "aria-live": "polite" }, line)));
}

function markRead() {
  const open = view?.open;
  if (!open) return;
  const newest = open.newestFromOthers();
  if (!newest) return;
  const c = conversations.get(open.cid);
  if (open.readSent && cmp(open.readSent, newest) >= 0) return;
  open.readSent = newest;
  if (chatSocket.status === "online") {
    chatSocket.read(open.cid, newest);
  } else {
    api("PUT", `/api/v1/conversations/${encodeURIComponent(open.cid)}/read`, { body: { messageId: newest } })
      .then((r) => {
        if (c) c.unreadCount = r.unreadCount;
        updateBadge();
        renderList();
      })
      .catch(() => {});
  }
  if (c) {
    c.unreadCount = 0;
    updateBadge();
    renderList();
  }
}

function newConversationForm() {
  const members = h("input", { name: "members", required: true, autocapitalize: "none", spellcheck: "false", placeholder: "bob, carol" });
  const name = h("input", { name: "name", maxlength: 100, placeholder: "optional, for a group" });
  const go = h("button", { type: "submit", class: "primary" }, "Start");
  const form = h("form", { class: "new-chat" },
    field("Chat with (user names, comma-separated)", members), field("Group name", name), go);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const list = members.value.split(/[\s,]+/).map((m) => m.trim().toLowerCase()).filter(Boolean);
    if (!list.length) return;
    busy(go, async () => {
      const body = { members: list };
      if (name.value.trim()) body.name = name.value.trim();
      const c = await api("POST", "/api/v1/me/conversations", { body });
      conversations.set(c.id, c);
      members.value = "";
      name.value = "";
      location.hash = `#/chat/${encodeURIComponent(c.id)}`;
    }, "Starting the conversation");
  });
  return h("details", { class: "new" }, h("summary", {}, "New conversation"), form);
}

export async function render(main, cid) {
  const listEl = h("ul", { class: "conversations", "aria-label": "Conversations" });
  const pane = h("section", { class: "conversation" });
  const layout = h("div", { class: `chat ${cid ? "has-open" : ""}` },
    h("aside", { class: "card" }, h("h2", {}, "Chats"), newConversationForm(), listEl),
    pane);
  fill(main, layout);
  const mine = { listEl, open: null };
  view = mine;
  renderList();
  if (!cid) {
    fill(pane, h("p", { class: "empty" }, "Choose a conversation, or start a new one."));
    titled(main, "Chat");
    return () => { if (view === mine) view = null; };
  }
  await openConversation(pane, cid, mine);
  if (view !== mine || !mine.open) return () => {};
  titled(main, title(mine.open.conversation));
  const onVisible = () => { if (!document.hidden) markRead(); };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    document.removeEventListener("visibilitychange", onVisible);
    if (view === mine) view = null;
  };
}

/** Opens `cid` in `pane` for the page `mine`; gives up if the page was
 * left while it loaded (the router has moved on). */
async function openConversation(pane, cid, mine) {
  const me = auth.session().userId;
  const conversation = await api("GET", `/api/v1/conversations/${encodeURIComponent(cid)}`);
  if (view !== mine) return;
  conversations.set(cid, { ...conversations.get(cid), ...conversation });
  const headerEl = h("header", { class: "conversation-head" });
  const older = h("button", { type: "button", class: "link", hidden: true }, "Earlier messages");
  const listEl = h("ol", { class: "messages", "aria-live": "polite", "aria-relevant": "additions" });
  const text = h("textarea", { rows: 1, maxlength: 4000, placeholder: "Message", "aria-label": "Message", enterkeyhint: "send" });
  const sendButton = h("button", { type: "submit", class: "primary" }, "Send");
  const form = h("form", { class: "composer-line" }, text, sendButton);
  fill(pane, headerEl, h("div", { class: "scroller" }, older, listEl), form);

  const byId = new Map();
  const nodes = new Map();
  const reads = new Map((conversation.members || []).filter((m) => m.readUpTo).map((m) => [m.userId, m.readUpTo]));
  let nextBefore = null;
  const scroller = pane.querySelector(".scroller");
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;

  const bubble = (m, pending) => {
    const mine = m.senderId === me;
    const body = m.deleted ? h("em", {}, "Message deleted") : h("span", { class: "text" }, m.text);
    const meta = h("span", { class: "meta" }, pending ? "Sending…" : when(m.createdAt), m.editedAt ? " · edited" : "");
    const li = h("li", { class: `msg ${mine ? "mine" : "theirs"}${pending ? " pending" : ""}`, dataset: { id: m.id || "", client: m.clientMessageId || "" } },
      conversation.kind === "group" && !mine ? h("span", { class: "sender" }, m.senderId) : null, body, meta);
    if (mine && !m.deleted && !pending) {
      const del = h("button", { type: "button", class: "link small", "aria-label": "Delete message" }, "Delete");
      del.addEventListener("click", () => busy(del, async () => {
        const updated = await api("DELETE", `/api/v1/conversations/${encodeURIComponent(cid)}/messages/${m.id}`);
        put(updated);
      }, "Deleting the message"));
      meta.append(" ", del);
    }
    return li;
  };

  const place = (id, li) => {
    // Keep the list in id order: find the first later message.
    let before = null;
    for (const [otherId, node] of nodes) {
      if (cmp(otherId, id) > 0 && (!before || cmp(otherId, before[0]) < 0)) before = [otherId, node];
    }
    if (before) listEl.insertBefore(li, before[1]);
    else listEl.append(li);
  };

  const put = (m) => {
    const follow = atBottom();
    if (m.clientMessageId) {
      const pending = listEl.querySelector(`li.pending[data-client="${CSS.escape(m.clientMessageId)}"]`);
      pending?.remove();
    }
    byId.set(m.id, m);
    const li = bubble(m, false);
    const old = nodes.get(m.id);
    if (old) old.replaceWith(li);
    else place(m.id, li);
    nodes.set(m.id, li);
    renderSeen();
    if (follow) scroller.scrollTop = scroller.scrollHeight;
  };

  const renderSeen = () => {
    for (const el of listEl.querySelectorAll(".seen")) el.remove();
    const mine = [...byId.values()].filter((m) => m.senderId === me).sort((a, b) => cmp(a.id, b.id));
    const last = mine[mine.length - 1];
    if (!last) return;
    const readers = [...reads.entries()].filter(([u, upTo]) => u !== me && cmp(upTo, last.id) >= 0).map(([u]) => u);
    if (!readers.length) return;
    const words = conversation.kind === "direct" ? "Seen" : `Seen by ${readers.join(", ")}`;
    nodes.get(last.id)?.append(h("span", { class: "seen" }, words));
  };

  const newestFromOthers = () => {
    let newest = null;
    for (const m of byId.values()) if (m.senderId !== me && (!newest || cmp(m.id, newest) > 0)) newest = m.id;
    return newest;
  };

  const loadOlder = () => busy(older, async () => {
    const page = await api("GET", `/api/v1/conversations/${encodeURIComponent(cid)}/messages`, { query: { limit: 30, before: nextBefore } });
    const height = scroller.scrollHeight;
    for (const m of page.messages) {
      if (byId.has(m.id)) continue;
      byId.set(m.id, m);
      const li = bubble(m, false);
      place(m.id, li);
      nodes.set(m.id, li);
    }
    nextBefore = page.nextBefore;
    older.hidden = !nextBefore;
    scroller.scrollTop += scroller.scrollHeight - height;
    renderSeen();
  }, "Loading messages");
  older.addEventListener("click", loadOlder);

  mine.open = { cid, conversation, headerEl, put, reads, renderSeen, newestFromOthers, readSent: null };
  renderHeader();
  renderList();
  await loadOlder();
  if (view !== mine) return;
  scroller.scrollTop = scroller.scrollHeight;
  markRead();

  let lastTyping = 0;
  text.addEventListener("input", () => {
    if (Date.now() - lastTyping > 3000 && text.value.trim()) {
      lastTyping = Date.now();
      chatSocket.typing(cid);
    }
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = text.value;
    if (!value.trim()) return;
    if (value.length > 4000) {
      notice("A message holds at most 4,000 characters.", "error");
      return;
    }
    text.value = "";
    const { clientMessageId, done } = chatSocket.send(cid, value);
    const pending = bubble({ senderId: me, text: value, clientMessageId }, true);
    listEl.append(pending);
    scroller.scrollTop = scroller.scrollHeight;
    done.then(put, (error) => {
      pending.classList.add("failed");
      fill(pending.querySelector(".meta"), `Not sent: ${error.message}`);
      showError(error, "Sending");
    });
    lastTyping = 0;
  });
  text.focus();
}
