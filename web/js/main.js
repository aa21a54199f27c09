// The shell: settings from the host, the session, the chat connection, and
// a hash router (#/feed, #/chat/<id>, #/u/<user>, …) so any static host can
// serve the app from one index.html.

import { loadConfig } from "./api.js";
import * as auth from "./auth.js";
import { chatSocket } from "./socket.js";
import { busy, field, fill, h, notice, showError, titled } from "./ui.js";
import * as feed from "./feed.js";
import * as people from "./people.js";
import * as chat from "./chat.js";
import * as links from "./links.js";
import * as settings from "./settings.js";

const main = document.getElementById("main");
let cleanup = null;
// Each route change counts up; a page that finishes loading after the
// next one began is cleaned up at once instead of taking over.
let generation = 0;

const pages = {
  feed: (rest) => feed.render(main, rest),
  people: (rest) => people.render(main, rest),
  u: (rest) => people.profile(main, decodeURIComponent(rest[0] || "")),
  chat: (rest) => chat.render(main, rest[0] ? decodeURIComponent(rest[0]) : null),
  links: (rest) => links.render(main, rest),
  settings: (rest) => settings.render(main, rest),
};

async function route() {
  const mine = ++generation;
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const session = auth.session();
  const top = document.querySelector("header.top");
  top.hidden = !session;
  if (!session) {
    chatSocket.stop();
    signInPage();
    return;
  }
  chatSocket.start();
  chat.watch();
  fill(document.getElementById("me"), session.userName || session.userId);
  const [name = "feed", ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = pages[name] ? name : "feed";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === (page === "u" ? "people" : page)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    const done = await pages[page](rest);
    if (mine === generation) cleanup = done;
    else if (typeof done === "function") done();
  } catch (error) {
    if (mine === generation) showError(error);
  }
}

function signInPage() {
  const cognito = auth.kind() === "cognito";
  const nameLabel = cognito ? "Email" : "User name";
  let mode = "in";
  const userName = h("input", { name: "username", autocomplete: "username", required: true, type: cognito ? "email" : "text", autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true, minlength: cognito ? 12 : 10 });
  const code = h("input", { name: "code", inputmode: "numeric", autocomplete: "one-time-code" });
  const codeField = field("Code from the email", code);
  codeField.hidden = true;
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const toggle = h("button", { type: "button", class: "link" });
  const heading = h("h1", {}, "Sign in");
  const hint = h("p", { class: "hint" });
  const setMode = (m) => {
    mode = m;
    heading.textContent = m === "up" ? "Create an account" : m === "confirm" ? "Confirm your email" : "Sign in";
    submit.textContent = m === "up" ? "Create account" : m === "confirm" ? "Confirm" : "Sign in";
    toggle.textContent = m === "in" ? "New here? Create an account" : "Have an account? Sign in";
    password.autocomplete = m === "up" ? "new-password" : "current-password";
    hint.textContent = m === "up"
      ? (cognito ? "At least 12 characters with upper and lower case letters and a digit." : "At least 10 characters; common passwords are refused.")
      : "";
    codeField.hidden = m !== "confirm";
    code.required = m === "confirm";
  };
  toggle.addEventListener("click", () => setMode(mode === "in" ? "up" : "in"));
  const form = h("form", { class: "card narrow", novalidate: false }, heading,
    field(nameLabel, userName), field("Password", password), hint, codeField, submit, toggle);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      if (mode === "up") {
        const { confirm } = await auth.signUp(userName.value.trim(), password.value);
        if (confirm) {
          setMode("confirm");
          notice("We sent a code to your email.");
          return;
        }
      } else if (mode === "confirm") {
        await auth.confirm(userName.value.trim(), code.value.trim());
        await auth.signIn(userName.value.trim(), password.value);
      } else {
        await auth.signIn(userName.value.trim(), password.value);
      }
      if (!location.hash || location.hash === "#/") location.hash = "#/feed";
      else route();
    });
  });
  setMode("in");
  fill(main, h("section", { class: "welcome" },
    h("p", { class: "tagline" }, "News from your friends, chat, and short links."), form));
  titled(main, "Sign in");
}

document.addEventListener("click", (e) => {
  const out = e.target.closest("[data-action=sign-out]");
  if (out) {
    e.preventDefault();
    auth.signOut().then(() => { location.hash = "#/"; route(); });
  }
});

async function start() {
  try {
    await loadConfig();
  } catch (error) {
    fill(main, h("p", { class: "empty" }, error.message));
    return;
  }
  chatSocket.addEventListener("status", (e) => {
    const el = document.getElementById("link-state");
    el.dataset.state = e.detail;
    el.textContent = e.detail === "online" ? "" : e.detail === "connecting" ? "Connecting…" : "Offline";
    el.title = e.detail === "online" ? "Chat connected" : "Chat reconnecting";
  });
  chatSocket.addEventListener("problem", (e) => notice(e.detail.message, "error"));
  auth.onChange((s) => {
    // Signed out (here, in another tab, or by the server): back to sign-in.
    if (!s) route();
  });
  addEventListener("hashchange", route);
  route();
}

start();
