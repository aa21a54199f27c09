// People: find someone by user name, who you follow and who follows you,
// a profile page with follow / unfollow and a chat button, and your own
// profile (name, bio, avatar).

import { api } from "./api.js";
import * as auth from "./auth.js";
import { userPosts } from "./feed.js";
import * as media from "./media.js";
import { avatar, busy, field, fill, h, nameOf, notice, titled } from "./ui.js";

function personRow(person, extra) {
  return h("li", { class: "person" },
    avatar(person),
    h("div", { class: "grow" },
      h("a", { href: `#/u/${encodeURIComponent(person.userId)}` }, nameOf(person)),
      h("div", { class: "hint" }, "@", person.userId)),
    extra);
}

/** A list of people paged by cursor (`/api/v1/me/following` and the like). */
function peopleList(title, path, actionFor) {
  const list = h("ul", { class: "people" });
  const more = h("button", { type: "button", class: "button", hidden: true }, "More");
  let cursor = null;
  const load = () => busy(more, async () => {
    const page = await api("GET", path, { query: { limit: 50, cursor } });
    for (const person of page.users) list.append(personRow(person, actionFor?.(person)));
    cursor = page.nextCursor;
    more.hidden = !cursor;
    if (!list.children.length) list.append(h("li", { class: "empty" }, "Nobody yet."));
  }, `Loading ${title.toLowerCase()}`);
  more.addEventListener("click", load);
  load();
  return h("section", { class: "card" }, h("h2", {}, title), list, more);
}

function followButton(userId, following, onChange) {
  const button = h("button", { type: "button", class: following ? "button" : "primary", "aria-pressed": String(following) }, following ? "Unfollow" : "Follow");
  button.addEventListener("click", () => busy(button, async () => {
    const now = button.getAttribute("aria-pressed") !== "true";
    await api(now ? "PUT" : "DELETE", `/api/v1/me/following/${encodeURIComponent(userId)}`);
    button.setAttribute("aria-pressed", String(now));
    button.textContent = now ? "Unfollow" : "Follow";
    button.className = now ? "button" : "primary";
    onChange?.(now);
  }, "Following"));
  return button;
}

export async function render(main) {
  const me = auth.session().userId;
  const name = h("input", { name: "user", autocomplete: "off", autocapitalize: "none", spellcheck: "false", required: true, placeholder: "user name" });
  const find = h("form", { class: "card row", role: "search" },
    field("Find someone by user name", name), h("button", { type: "submit", class: "primary" }, "Open profile"));
  find.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = name.value.trim().toLowerCase();
    if (id) location.hash = `#/u/${encodeURIComponent(id)}`;
  });
  fill(main,
    h("h1", {}, "People"),
    find,
    h("p", {}, h("a", { href: `#/u/${encodeURIComponent(me)}` }, "Your profile")),
    h("div", { class: "columns" },
      peopleList("Friends", "/api/v1/me/friends"),
      peopleList("Following", "/api/v1/me/following", (p) => followButton(p.userId, true)),
      peopleList("Followers", "/api/v1/me/followers")));
  titled(main, "People");
}

export async function profile(main, userId) {
  const me = auth.session().userId;
  if (!userId) {
    location.hash = "#/people";
    return;
  }
  const user = await api("GET", `/api/v1/users/${encodeURIComponent(userId)}`);
  const counts = h("p", { class: "hint counts" });
  const showCounts = () => {
    counts.textContent = `${user.posts} posts · ${user.followers} followers · ${user.following} following`;
  };
  showCounts();
  const actions = h("div", { class: "row" });
  if (userId !== me) {
    const rel = user.relationship || {};
    const standing = h("span", { class: "hint" });
    const showStanding = () => {
      standing.textContent = rel.followedBy ? (rel.following ? "You are friends" : "Follows you") : "";
    };
    actions.append(followButton(userId, rel.following, (now) => {
      rel.following = now;
      user.followers += now ? 1 : -1;
      showCounts();
      showStanding();
    }));
    const talk = h("button", { type: "button", class: "button" }, "Message");
    talk.addEventListener("click", () => busy(talk, async () => {
      const c = await api("POST", "/api/v1/me/conversations", { body: { members: [userId] } });
      location.hash = `#/chat/${encodeURIComponent(c.id)}`;
    }, "Starting a chat"));
    actions.append(talk, standing);
    showStanding();
  }
  const posts = h("div");
  fill(main,
    h("section", { class: "card profile" },
      h("div", { class: "row" }, avatar(user, 72),
        h("div", {}, h("h1", {}, nameOf(user)), h("div", { class: "hint" }, "@", user.userId))),
      user.bio ? h("p", {}, user.bio) : null,
      counts, actions),
    userId === me ? editor(user) : null,
    h("h2", {}, "Posts"), posts);
  titled(main, nameOf(user));
  await userPosts(posts, userId);
}

function editor(user) {
  const displayName = h("input", { name: "displayName", maxlength: 50, value: user.displayName || "" });
  const bio = h("textarea", { name: "bio", maxlength: 160, rows: 2 });
  bio.value = user.bio || "";
  const file = h("input", { type: "file", accept: media.IMAGE_TYPES.join(","), id: "avatar-file" });
  const progress = h("ul", { class: "attachments" });
  let avatarMediaId = user.avatarMediaId || null;
  const save = h("button", { type: "submit", class: "primary" }, "Save profile");
  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (!chosen) return;
    const why = media.refuse(chosen, { imagesOnly: true });
    if (why) {
      notice(why, "error");
      return;
    }
    const sending = media.send(chosen);
    fill(progress, sending.el);
    save.disabled = true;
    sending.ready.then((m) => { avatarMediaId = m.mediaId; }, () => {}).finally(() => { save.disabled = false; });
  });
  const form = h("form", { class: "card" }, h("h2", {}, "Edit your profile"),
    field("Display name", displayName), field("Bio", bio, "Up to 160 characters."),
    field("Picture", file), progress, save);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(save, async () => {
      // The profile is replaced whole: send every field.
      const body = {};
      if (displayName.value.trim()) body.displayName = displayName.value.trim();
      if (bio.value.trim()) body.bio = bio.value.trim();
      if (avatarMediaId) body.avatarMediaId = avatarMediaId;
      await api("PUT", "/api/v1/me/profile", { body });
      notice("Profile saved.");
      dispatchEvent(new HashChangeEvent("hashchange"));
    }, "Saving the profile");
  });
  return form;
}
