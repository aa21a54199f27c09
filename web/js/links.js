// Short links: make one (optionally with an alias, an expiry and a visit
// cap), see yours with their clicks, a QR code, and per-day, referrer and
// device statistics; delete one.

import { api, config } from "./api.js";
import { busy, field, fill, h, notice, titled, when } from "./ui.js";

function qrUrl(code, format = "svg") {
  return new URL(`${config.apiBase}/api/v1/urls/${encodeURIComponent(code)}/qr?format=${format}`, location.href).href;
}

function bars(title, counts) {
  const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]).slice(0, 10);
  if (!entries.length) return null;
  const max = Math.max(...entries.map(([, n]) => n));
  return h("div", { class: "bars" }, h("h4", {}, title),
    h("ul", {}, entries.map(([label, n]) => h("li", {},
      h("span", { class: "label" }, label || "(none)"),
      h("meter", { min: 0, max, value: n, "aria-label": `${label}: ${n}` }),
      h("span", { class: "n" }, String(n))))));
}

function linkRow(link, onDeleted) {
  const stats = h("div", { class: "stats", hidden: true });
  const show = h("button", { type: "button", class: "button", "aria-expanded": "false" }, "Statistics");
  show.addEventListener("click", () => busy(show, async () => {
    if (!stats.hidden) {
      stats.hidden = true;
      show.setAttribute("aria-expanded", "false");
      return;
    }
    const d = await api("GET", `/api/v1/urls/${encodeURIComponent(link.code)}`);
    const days = Object.fromEntries(Object.entries(d.stats.clicksByDay || {}).sort().slice(-14));
    fill(stats,
      h("p", {}, `${d.stats.totalClicks} click${d.stats.totalClicks === 1 ? "" : "s"} in all`, d.maxVisits ? ` · ${d.visits} of ${d.maxVisits} visits used` : ""),
      bars("Last days", days), bars("Referrers", d.stats.referrers), bars("Devices", d.stats.devices));
    stats.hidden = false;
    show.setAttribute("aria-expanded", "true");
  }, "Loading statistics"));
  const copy = h("button", { type: "button", class: "button" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(link.shortUrl);
      notice("Copied.");
    } catch {
      notice("Copying is not allowed here; select the link instead.", "error");
    }
  });
  const del = h("button", { type: "button", class: "link danger" }, "Delete");
  del.addEventListener("click", () => busy(del, async () => {
    if (!confirm(`Delete ${link.shortUrl}? It will stop redirecting.`)) return;
    try {
      await api("DELETE", `/api/v1/urls/${encodeURIComponent(link.code)}`);
    } catch (error) {
      if (error.code !== "confirmation_required") throw error;
      if (!confirm(`${error.message} Delete anyway?`)) return;
      await api("DELETE", `/api/v1/urls/${encodeURIComponent(link.code)}`, { query: { force: "true" } });
    }
    onDeleted();
  }, "Deleting the link"));
  const expired = link.expiresAt && Date.parse(link.expiresAt) < Date.now();
  return h("li", { class: "card link-row", dataset: { code: link.code } },
    h("img", { class: "qr", src: qrUrl(link.code), alt: `QR code for ${link.shortUrl}`, width: 96, height: 96, loading: "lazy" }),
    h("div", { class: "grow" },
      h("a", { href: link.shortUrl, class: "short", target: "_blank", rel: "noopener" }, link.shortUrl),
      h("div", { class: "long" }, link.longUrl),
      h("div", { class: "hint" },
        h("span", { class: "clicks" }, link.redirect === 301 ? "clicks not counted (301)" : `${link.clicks} click${link.clicks === 1 ? "" : "s"}`),
        " · made ", when(link.createdAt),
        link.expiresAt ? [" · ", expired ? "expired " : "expires ", when(link.expiresAt)] : null),
      h("div", { class: "row" }, copy, show, h("a", { class: "button", href: qrUrl(link.code, "png"), download: `${link.code}.png` }, "QR as PNG"), del),
      stats));
}

export async function render(main) {
  const longUrl = h("input", { name: "longUrl", type: "url", required: true, placeholder: "https://…", inputmode: "url" });
  const alias = h("input", { name: "alias", maxlength: 64, autocapitalize: "none", spellcheck: "false", placeholder: "optional" });
  const expires = h("input", { name: "expiresAt", type: "datetime-local" });
  const counted = h("input", { name: "count", type: "checkbox", checked: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Shorten");
  const list = h("ul", { class: "links" });
  const more = h("button", { type: "button", class: "button", hidden: true }, "More");
  const form = h("form", { class: "card" },
    h("h2", {}, "Make a short link"),
    field("Long URL", longUrl),
    h("div", { class: "columns" }, field("Alias", alias, "Letters, digits, - and _."), field("Expires", expires)),
    h("label", { class: "check" }, counted, " Count every click (a 302 redirect: browsers and the CDN ask again each time; a 301 is cached and not counted)"),
    submit);
  let cursor = null;
  const load = () => busy(more, async () => {
    const page = await api("GET", "/api/v1/me/urls", { query: { limit: 20, cursor } });
    for (const link of page.links) {
      const row = linkRow(link, () => row.remove());
      list.append(row);
    }
    cursor = page.nextCursor;
    more.hidden = !cursor;
    if (!list.children.length) list.append(h("li", { class: "empty" }, "No links yet."));
  }, "Loading your links");
  more.addEventListener("click", load);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    busy(submit, async () => {
      const body = { longUrl: longUrl.value.trim(), redirect: counted.checked ? 302 : 301 };
      if (alias.value.trim()) body.alias = alias.value.trim();
      if (expires.value) body.expiresAt = new Date(expires.value).toISOString();
      const link = await api("POST", "/api/v1/shorten", { body });
      list.querySelector(".empty")?.remove();
      list.querySelector(`[data-code="${CSS.escape(link.code)}"]`)?.remove();
      const row = linkRow({ clicks: 0, ...link }, () => row.remove());
      list.prepend(row);
      longUrl.value = "";
      alias.value = "";
      expires.value = "";
      notice(`Short link ready: ${link.shortUrl}`);
    }, "Shortening");
  });
  fill(main, h("h1", {}, "Links"), form, h("h2", {}, "Your links"), list, more);
  titled(main, "Links");
  await load();
}
