// The news feed: a composer with image and video upload, then the feed,
// newest first, loading older pages as you scroll (by cursor, never by
// offset) and offering newer posts as they arrive (by `after`).

import { api } from "./api.js";
import * as auth from "./auth.js";
import * as media from "./media.js";
import { avatar, busy, fill, h, nameOf, notice, showError, titled, when } from "./ui.js";

const PAGE = 20;
const POLL_MS = 15_000;
const MAX_MEDIA = 4;

/** One post as a card; `onDeleted` removes it from the page. */
export function postCard(post, onDeleted) {
  const me = auth.session()?.userId;
  const author = post.author || { userId: post.authorId };
  const actions = [];
  if (post.authorId === me) {
    const del = h("button", { type: "button", class: "link danger" }, "Delete");
    del.addEventListener("click", () => busy(del, async () => {
      if (!confirm("Delete this post?")) return;
      await api("DELETE", `/api/v1/me/posts/${post.id}`);
      onDeleted?.();
    }, "Deleting the post"));
    actions.push(del);
  }
  return h("article", { class: "card post", dataset: { postId: post.id } },
    h("header", {},
      avatar(author),
      h("div", {},
        h("a", { href: `#/u/${encodeURIComponent(post.authorId)}`, class: "author" }, nameOf(author)),
        h("div", { class: "hint" }, "@", post.authorId, " · ", when(post.createdAt)))),
    h("p", { class: "text" }, post.text),
    post.media?.length ? h("div", { class: `gallery n${post.media.length}` }, post.media.map(media.view)) : null,
    actions.length ? h("footer", {}, actions) : null);
}

function composer(onPosted) {
  const text = h("textarea", { name: "text", rows: 3, maxlength: 5000, placeholder: "What's new?", "aria-label": "New post" });
  const files = h("input", { type: "file", accept: [...media.IMAGE_TYPES, ...media.VIDEO_TYPES].join(","), multiple: true, class: "visually-hidden", id: "post-files" });
  const list = h("ul", { class: "attachments" });
  const submit = h("button", { type: "submit", class: "primary" }, "Post");
  let attached = [];
  const refresh = () => {
    const waiting = attached.some((a) => a.state === "pending");
    submit.disabled = waiting;
    submit.textContent = waiting ? "Waiting for uploads…" : "Post";
  };
  files.addEventListener("change", () => {
    for (const file of files.files) {
      if (attached.length >= MAX_MEDIA) {
        notice(`A post holds at most ${MAX_MEDIA} pictures or videos.`, "error");
        break;
      }
      const why = media.refuse(file);
      if (why) {
        notice(why, "error");
        continue;
      }
      const sending = media.send(file);
      const entry = { state: "pending", media: null, el: sending.el };
      const remove = h("button", { type: "button", class: "link", "aria-label": `Remove ${file.name}` }, "Remove");
      remove.addEventListener("click", () => {
        attached = attached.filter((a) => a !== entry);
        entry.el.remove();
        refresh();
      });
      sending.el.append(remove);
      attached.push(entry);
      list.append(sending.el);
      sending.ready.then((m) => { entry.state = "ready"; entry.media = m; }, () => { entry.state = "failed"; }).finally(refresh);
    }
    files.value = "";
    refresh();
  });
  const form = h("form", { class: "card composer" },
    text, list,
    h("div", { class: "row" },
      h("label", { for: "post-files", class: "button" }, "Add photo or video"),
      h("span", { class: "spacer" }), submit));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!text.value.trim()) {
      notice("Write something to post.", "error");
      text.focus();
      return;
    }
    if (attached.some((a) => a.state === "failed")) {
      notice("Remove the files that were not accepted first.", "error");
      return;
    }
    busy(submit, async () => {
      const body = {
        text: text.value,
        mediaIds: attached.map((a) => a.media.mediaId),
        idempotencyKey: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()),
      };
      const post = await api("POST", "/api/v1/me/posts", { body });
      text.value = "";
      attached = [];
      fill(list);
      refresh();
      onPosted(post);
      notice("Posted.");
    }, "Posting");
  });
  form.prepend(files);
  return form;
}

export async function render(main) {
  const list = h("div", { class: "posts", "aria-busy": "true" });
  const fresh = h("button", { type: "button", class: "pill", hidden: true });
  const end = h("p", { class: "empty" });
  const sentinel = h("div", { class: "sentinel", "aria-hidden": "true" });
  let nextBefore = null;
  let newestId = null;
  let waiting = [];
  let loading = false;
  let done = false;
  const seen = new Set();

  const add = (posts, where) => {
    const cards = posts.filter((p) => !seen.has(p.id)).map((p) => {
      seen.add(p.id);
      const card = postCard(p, () => card.remove());
      return card;
    });
    if (where === "top") list.prepend(...cards);
    else list.append(...cards);
    if (done && seen.size) end.textContent = "You're all caught up.";
  };

  const more = async () => {
    if (loading || done) return;
    loading = true;
    try {
      const page = await api("GET", "/api/v1/me/feed", { query: { limit: PAGE, before: nextBefore } });
      if (newestId === null) newestId = page.newestId;
      add(page.posts, "bottom");
      nextBefore = page.nextBefore;
      done = !nextBefore;
      end.textContent = done ? (seen.size ? "You're all caught up." : "Nothing here yet. Follow people to see their posts.") : "";
    } catch (error) {
      showError(error, "Loading the feed");
      end.textContent = "The feed could not be loaded.";
      done = true;
    } finally {
      loading = false;
      list.setAttribute("aria-busy", "false");
    }
  };

  const poll = async () => {
    if (document.hidden || loading) return;
    try {
      // An empty feed has no newest post yet: its first page is all new.
      // More than a page arrived meanwhile: walk back to where we were.
      let posts = [];
      let next = null;
      let newest = null;
      for (let i = 0; i < 5; i++) {
        const query = { limit: PAGE, after: newestId || undefined, before: next || undefined };
        const page = await api("GET", "/api/v1/me/feed", { query });
        newest = newest || page.newestId;
        posts = posts.concat(page.posts);
        next = page.nextBefore;
        if (!next || !newestId) break;
      }
      const unseen = posts.filter((p) => !seen.has(p.id) && !waiting.some((w) => w.id === p.id));
      if (newest) newestId = newest;
      if (unseen.length) {
        waiting = [...unseen, ...waiting];
        fresh.textContent = `${waiting.length} new post${waiting.length === 1 ? "" : "s"}`;
        fresh.hidden = false;
      }
    } catch {
      // The next poll tries again; the page keeps what it shows.
    }
  };
  fresh.addEventListener("click", () => {
    add(waiting, "top");
    waiting = [];
    fresh.hidden = true;
    list.firstElementChild?.scrollIntoView({ behavior: "smooth", block: "start" });
  });

  fill(main,
    h("h1", { class: "visually-hidden" }, "Feed"),
    composer((post) => add([post], "top")),
    fresh, list, sentinel, end);
  titled(main, "Feed");

  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { rootMargin: "600px" });
  observer.observe(sentinel);
  await more();
  const timer = setInterval(poll, POLL_MS);
  const onVisible = () => { if (!document.hidden) poll(); };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    observer.disconnect();
    clearInterval(timer);
    document.removeEventListener("visibilitychange", onVisible);
  };
}

/** A user's own posts (on their profile page), with "more" by cursor. */
export async function userPosts(container, userId) {
  let before = null;
  const more = h("button", { type: "button", class: "button" }, "Older posts");
  const list = h("div", { class: "posts" });
  const load = () => busy(more, async () => {
    const page = await api("GET", `/api/v1/users/${encodeURIComponent(userId)}/posts`, { query: { limit: PAGE, before } });
    for (const p of page.posts) {
      const card = postCard(p, () => card.remove());
      list.append(card);
    }
    before = page.nextBefore;
    more.hidden = !before;
    if (!list.children.length) list.append(h("p", { class: "empty" }, "No posts yet."));
  }, "Loading posts");
  fill(container, list, more);
  more.addEventListener("click", load);
  await load();
}
