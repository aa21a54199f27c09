// Small DOM helpers shared by every page: an element builder, the status
// line that shows every error in words, dates, avatars.

/** h("button", {class: "x", onclick}, "text", child…) → an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The words to show for an error of any kind. */
export function describe(error) {
  if (!error) return "Something went wrong.";
  if (error.name === "ApiError") return error.message;
  // What fetch says when the network failed (a bug's TypeError keeps its words).
  if (error.name === "NetworkError" || (error.name === "TypeError" && /fetch|network/i.test(error.message))) {
    return "The server could not be reached. Check your connection and try again.";
  }
  return error.message || String(error);
}

let statusTimer = 0;

/** Shows a message in the page's status line (a live region). */
export function notice(text, kind = "info") {
  const bar = document.getElementById("status");
  if (!bar) return;
  clearTimeout(statusTimer);
  bar.dataset.kind = kind;
  // Errors interrupt a screen reader; the rest waits its turn.
  bar.setAttribute("role", kind === "error" ? "alert" : "status");
  bar.setAttribute("aria-live", kind === "error" ? "assertive" : "polite");
  fill(bar, h("span", {}, text), h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => { bar.hidden = true; } }, "×"));
  bar.hidden = false;
  if (kind !== "error") statusTimer = setTimeout(() => { bar.hidden = true; }, 4000);
}

/** Shows an error the API (or the network) gave, in words. */
export function showError(error, context) {
  const text = describe(error);
  notice(context ? `${context}: ${text}` : text, "error");
}

/** Runs `work` with `button` disabled; errors go to the status line. */
export async function busy(button, work, context) {
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (error) {
    showError(error, context);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const absolute = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** "3 minutes ago" for recent times, a date otherwise. */
export function ago(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  const seconds = Math.round((then - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return relative.format(Math.round(seconds / 86400), "day");
  return absolute.format(then);
}

/** A <time> element that says when, with the exact time on hover. */
export function when(iso) {
  return h("time", { datetime: iso, title: iso ? absolute.format(Date.parse(iso)) : "" }, ago(iso));
}

/** A round avatar: the picture, or the first letter of the name. */
export function avatar(person, size = 40) {
  const name = person?.displayName || person?.userId || "?";
  if (person?.avatarUrl) {
    return h("img", { class: "avatar", src: person.avatarUrl, alt: "", width: size, height: size, loading: "lazy" });
  }
  // Sized through the CSSOM: the page's CSP allows no inline style attributes.
  const letter = h("span", { class: "avatar letter", "aria-hidden": "true" }, name.slice(0, 1).toUpperCase());
  letter.style.width = `${size}px`;
  letter.style.height = `${size}px`;
  return letter;
}

/** The name to show for a person. */
export function nameOf(person) {
  return person?.displayName || person?.userId || "";
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  let note = null;
  if (hint) {
    note = h("small", { class: "hint", id: `${id}-hint` }, hint);
    input.setAttribute("aria-describedby", note.id);
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), input, note);
}

/** Sets the document title and moves focus to the page heading. */
export function titled(main, title) {
  document.title = `${title} · hanul`;
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}
