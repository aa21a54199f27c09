// The API client: JSON in and out, the bearer token on every user call, one
// refresh and retry on a 401, every error turned into words (ApiError).

import * as auth from "./auth.js";

/** What the host told this client at start (`/app/config.json`). */
export const config = {
  apiBase: "",
  socketUrl: null,
  auth: { kind: "local" },
};

export async function loadConfig() {
  const response = await fetch(new URL("/app/config.json", location.href), { cache: "no-store" });
  if (!response.ok) throw new Error(`The app's settings could not be loaded (HTTP ${response.status}).`);
  Object.assign(config, await response.json());
}

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

const FALLBACK = {
  400: "The request was not accepted.",
  401: "Please sign in again.",
  403: "You are not allowed to do that.",
  404: "That was not found.",
  409: "That conflicts with something that already exists.",
  410: "That is gone.",
  413: "That is too large.",
  415: "The server did not understand the request.",
  429: "Too many requests.",
  503: "The service is busy.",
};

/** The ApiError for a failed response, from its `{"error": {...}}` body. */
export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = FALLBACK[response.status] || `The server answered ${response.status}.`;
  try {
    const body = await response.json();
    if (body?.error?.message) message = body.error.message;
    if (body?.error?.code) code = body.error.code;
  } catch {
    // Not JSON: keep the words for the status.
  }
  const retryAfter = Number(response.headers.get("retry-after")) || undefined;
  if (retryAfter && (response.status === 429 || response.status === 503)) {
    message = `${message.replace(/\.?$/, ".")} Try again in ${retryAfter} second${retryAfter === 1 ? "" : "s"}.`;
  }
  return new ApiError(response.status, code, message, retryAfter);
}

function url(path, query) {
  const u = new URL(config.apiBase + path, location.href);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, v);
  }
  return u;
}

/**
 * `api("GET", "/api/v1/me/feed", {query: {limit: 20}})`. User routes carry
 * the session's token (`auth: false` for public ones); a 401 refreshes the
 * session once and retries, then signs out.
 */
export async function api(method, path, { body, query, auth: withAuth = true } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (withAuth) {
      const token = await auth.accessToken();
      if (!token) throw new ApiError(401, "signed_out", "Please sign in.");
      headers.authorization = `Bearer ${token}`;
    }
    const response = await fetch(url(path, query), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401 && withAuth && attempt === 0) {
      if (await auth.refresh()) continue;
      auth.expired();
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

/**
 * Sends a file (or a slice of one) to a presigned upload (`{uploadUrl,
 * method, headers}`), reporting progress as a fraction; resolves with the
 * answer's ETag. The browser sets Content-Length itself; the signature
 * holds it, so the bytes must be exactly the declared size.
 */
export function upload(target, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(target.method || "PUT", target.uploadUrl);
    xhr.timeout = 10 * 60_000;
    for (const [name, value] of Object.entries(target.headers || {})) {
      if (name.toLowerCase() !== "content-length") xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress?.(e.loaded / e.total);
    };
    xhr.onload = async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress?.(1);
        // A part's ETag names it when the upload is completed.
        resolve(xhr.getResponseHeader("ETag"));
        return;
      }
      let message = `The upload was refused (HTTP ${xhr.status}).`;
      try {
        const body = JSON.parse(xhr.responseText);
        if (body?.error?.message) message = `The upload was refused: ${body.error.message}`;
      } catch {
        // S3 answers XML: keep the status.
      }
      reject(new ApiError(xhr.status, "upload_refused", message));
    };
    xhr.onerror = () => reject(new ApiError(0, "network", "The upload could not reach the server. Check your connection and try again."));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "The upload was cancelled."));
    xhr.ontimeout = () => reject(new ApiError(0, "network", "The upload took too long. Check your connection and try again."));
    xhr.send(file);
  });
}
