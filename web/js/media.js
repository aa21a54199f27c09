// Images and video: ask for a presigned upload, send the bytes straight to
// storage with a progress bar, then wait while the media worker checks and
// resizes them. Shared by the post composer and the avatar picker.

import { api, upload } from "./api.js";
import { h } from "./ui.js";

export const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif"];
export const VIDEO_TYPES = ["video/mp4", "video/webm"];
const MB = 1024 * 1024;
const LIMITS = { image: 10 * MB, video: 200 * MB };

/** A plain-words reason a file cannot be sent, or null. */
export function refuse(file, { imagesOnly = false } = {}) {
  const kind = IMAGE_TYPES.includes(file.type) ? "image" : VIDEO_TYPES.includes(file.type) ? "video" : null;
  if (!kind || (imagesOnly && kind !== "image")) {
    return `${file.name}: ${imagesOnly ? "choose a JPEG, PNG, WebP or GIF image" : "choose a JPEG, PNG, WebP or GIF image, or an MP4 or WebM video"}.`;
  }
  if (file.size === 0) return `${file.name} is empty.`;
  if (file.size > LIMITS[kind]) return `${file.name} is larger than ${LIMITS[kind] / MB} MB.`;
  return null;
}

/**
 * One file on its way: `el` shows its progress and state; `ready` resolves
 * with the media (state "ready") or rejects with the reason in words.
 */
export function send(file) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": `Uploading ${file.name}` });
  const state = h("span", { class: "hint" }, "Uploading…");
  const local = file.type.startsWith("image/") ? URL.createObjectURL(file) : null;
  const preview = local
    ? h("img", { src: local, alt: "", class: "thumb" })
    : h("span", { class: "thumb video-thumb", "aria-hidden": "true" }, "▶");
  // The preview's memory goes once the file is decided.
  const release = () => { if (local) URL.revokeObjectURL(local); };
  const el = h("li", { class: "attachment" }, preview, h("div", {}, h("span", { class: "name" }, file.name), bar, state));
  const ready = (async () => {
    const target = await api("POST", "/api/v1/me/media", { body: { contentType: file.type, size: file.size } });
    const shown = (f) => {
      bar.value = f;
      state.textContent = `Uploading… ${Math.round(f * 100)}%`;
    };
    if (target.multipart) await sendParts(target, file, shown);
    else await upload(target, file, shown);
    state.textContent = "Checking…";
    bar.removeAttribute("value");
    const media = await waitReady(target.mediaId);
    bar.value = 1;
    state.textContent = media.kind === "image" ? `Ready (${media.width}×${media.height})` : "Ready";
    el.dataset.state = "ready";
    return media;
  })();
  ready.then(release, release);
  ready.catch((error) => {
    el.dataset.state = "failed";
    bar.remove();
    state.textContent = error.message;
    state.classList.add("error");
  });
  return { el, ready };
}

/**
 * A big file in its presigned parts, one after another, each tried up to
 * three times (a dropped link costs one part, not the file), then the
 * upload completed with the parts' ETags.
 */
async function sendParts(target, file, onProgress) {
  const done = [];
  let sent = 0;
  let offset = 0;
  for (const part of target.multipart.parts) {
    const slice = file.slice(offset, offset + part.size);
    let etag;
    for (let attempt = 1; ; attempt++) {
      try {
        etag = await upload({ uploadUrl: part.uploadUrl, method: "PUT" }, slice, (f) => onProgress((sent + f * part.size) / file.size));
        break;
      } catch (error) {
        // A dropped link, a timeout, a busy or throttling store: again.
        const transient = !error.status || error.status === 408 || error.status === 429 || error.status >= 500;
        if (attempt >= 3 || !transient) throw error;
        await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
      }
    }
    if (!etag) throw new Error("The storage did not name the part it received; try again.");
    done.push({ partNumber: part.partNumber, etag });
    sent += part.size;
    offset += part.size;
  }
  await api("POST", target.multipart.completeUrl, { body: { parts: done } });
}

/** Polls the media until the worker has decided (ten minutes at most). */
async function waitReady(mediaId) {
  const started = Date.now();
  for (let wait = 300; ; wait = Math.min(wait * 1.5, 3000)) {
    const media = await api("GET", `/api/v1/me/media/${encodeURIComponent(mediaId)}`);
    if (media.state === "ready") return media;
    if (media.state === "rejected") {
      throw Object.assign(new Error(`Not accepted: ${media.reason || "the file is not what it says it is"}.`), { name: "ApiError" });
    }
    if (Date.now() - started > 10 * 60_000) throw new Error("Checking the file takes too long; try again later.");
    await new Promise((r) => setTimeout(r, wait));
  }
}

/** How a post's or message's media shows: images at the size that fits, videos with controls. */
export function view(media) {
  if (media.kind === "video") {
    return h("video", { src: media.url, controls: true, preload: "metadata", playsinline: true, class: "media" });
  }
  const renditions = (media.renditions || []).filter((r) => r.width);
  const srcset = renditions.map((r) => `${r.url} ${r.width}w`).join(", ");
  return h("img", {
    src: media.url,
    srcset: srcset || undefined,
    sizes: "(max-width: 640px) 100vw, 600px",
    width: media.width,
    height: media.height,
    alt: "",
    loading: "lazy",
    decoding: "async",
    class: "media",
  });
}
