// Sessions: sign up, sign in, refresh, sign out, password change. Locally
// against the host's accounts (/local/v1/...); on AWS against the Cognito
// user pool's API. The session is kept in localStorage so a reopened tab
// stays signed in; a refresh is single-flight across tabs (a replaced
// refresh token presented twice ends the session on the local host).

import { ApiError, config, errorFrom } from "./api.js";

const KEY = "hanul.session";
let current = read();
const listeners = new Set();

function read() {
  try {
    return JSON.parse(localStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

function store(session) {
  current = session;
  if (session) localStorage.setItem(KEY, JSON.stringify(session));
  else localStorage.removeItem(KEY);
  for (const listener of listeners) listener(session);
}

// Another tab signed in, refreshed or signed out.
addEventListener("storage", (e) => {
  if (e.key === KEY) {
    current = read();
    for (const listener of listeners) listener(current);
  }
});

/** Called with the new session (or null) whenever it changes. */
export function onChange(listener) {
  listeners.add(listener);
}

export function session() {
  return current;
}

export function kind() {
  return config.auth?.kind || "local";
}

async function post(path, body, token) {
  const headers = { "content-type": "application/json", accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(new URL(config.apiBase + path, location.href), {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

function fromLocal(s) {
  return {
    userId: s.userId,
    userName: s.userName,
    accessToken: s.accessToken,
    refreshToken: s.refreshToken,
    expiresAt: Date.now() + s.expiresIn * 1000,
  };
}

// --- Cognito (USER_PASSWORD_AUTH over the user pool's JSON API) ----------

async function cognito(action, body) {
  const { region, endpoint } = config.auth;
  const target = endpoint || `https://cognito-idp.${region}.amazonaws.com/`;
  const response = await fetch(target, {
    method: "POST",
    headers: {
      "content-type": "application/x-amz-json-1.1",
      "x-amz-target": `AWSCognitoIdentityProviderService.${action}`,
    },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const type = String(data.__type || "").split("#").pop();
    const words = {
      NotAuthorizedException: "The user name or password is wrong.",
      UserNotFoundException: "The user name or password is wrong.",
      UsernameExistsException: "That email address already has an account.",
      InvalidPasswordException: data.message || "That password is too weak.",
      CodeMismatchException: "That code is not right.",
      ExpiredCodeException: "That code has expired; ask for a new one.",
      UserNotConfirmedException: "Confirm your email address first.",
      TooManyRequestsException: "Too many attempts. Wait a little and try again.",
      LimitExceededException: "Too many attempts. Wait a little and try again.",
    };
    const status = type === "TooManyRequestsException" || type === "LimitExceededException" ? 429 : response.status;
    throw new ApiError(status, type || "cognito_error", words[type] || data.message || `Sign-in failed (HTTP ${response.status}).`);
  }
  return data;
}

function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}

function fromCognito(result, previous) {
  // The ID token: its `aud` is the app client the API's authorizer names.
  const token = result.IdToken;
  const c = claims(token);
  return {
    userId: c.sub,
    userName: c.email || c["cognito:username"] || c.sub,
    accessToken: token,
    cognitoAccessToken: result.AccessToken,
    refreshToken: result.RefreshToken || previous?.refreshToken,
    expiresAt: Date.now() + (result.ExpiresIn || 3600) * 1000,
  };
}

// --- What the pages call ----------------------------------------------------

/** Creates an account. Locally it signs in at once; Cognito first wants the emailed code. */
export async function signUp(userName, password) {
  if (kind() === "cognito") {
    await cognito("SignUp", {
      ClientId: config.auth.clientId,
      Username: userName,
      Password: password,
      UserAttributes: [{ Name: "email", Value: userName }],
    });
    return { confirm: true };
  }
  store(fromLocal(await post("/local/v1/accounts", { userName, password })));
  return { confirm: false };
}

/** Cognito only: the code from the sign-up email. */
export async function confirm(userName, code) {
  await cognito("ConfirmSignUp", { ClientId: config.auth.clientId, Username: userName, ConfirmationCode: code });
}

export async function signIn(userName, password) {
  if (kind() === "cognito") {
    const r = await cognito("InitiateAuth", {
      ClientId: config.auth.clientId,
      AuthFlow: "USER_PASSWORD_AUTH",
      AuthParameters: { USERNAME: userName, PASSWORD: password },
    });
    if (!r.AuthenticationResult) throw new ApiError(400, r.ChallengeName || "challenge", "This account needs a step this app does not offer yet.");
    store(fromCognito(r.AuthenticationResult));
    return;
  }
  store(fromLocal(await post("/local/v1/sessions", { userName, password })));
}

async function refreshNow() {
  const s = current;
  if (!s?.refreshToken) return false;
  // Signed out (here or in another tab) while this was on its way: the
  // new tokens must not bring the session back.
  const still = () => read()?.refreshToken === s.refreshToken;
  try {
    let next;
    if (kind() === "cognito") {
      const r = await cognito("InitiateAuth", {
        ClientId: config.auth.clientId,
        AuthFlow: "REFRESH_TOKEN_AUTH",
        AuthParameters: { REFRESH_TOKEN: s.refreshToken },
      });
      next = fromCognito(r.AuthenticationResult, s);
    } else {
      next = fromLocal(await post("/local/v1/sessions/refresh", { refreshToken: s.refreshToken }));
    }
    if (!still()) return Boolean(read());
    store(next);
    return true;
  } catch (error) {
    if (error.name === "ApiError" && (error.status === 401 || error.status === 400)) {
      if (still()) store(null);
      return false;
    }
    throw error;
  }
}

/**
 * `navigator.locks` where the page is a secure context (https, or this
 * machine); on a plain-HTTP address (a phone on the LAN) a lock in
 * localStorage, held at most 10 s, stands in for it.
 */
async function exclusively(name, work) {
  if (navigator.locks) return navigator.locks.request(name, work);
  const key = `hanul.lock.${name}`;
  const me = `${Date.now()}-${Math.random()}`;
  for (let waited = 0; waited < 10_000; waited += 100) {
    const held = localStorage.getItem(key);
    if (!held || Date.now() - Number(held.split("-")[0]) > 10_000) {
      localStorage.setItem(key, me);
      await new Promise((r) => setTimeout(r, 30));
      if (localStorage.getItem(key) === me) break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    return await work();
  } finally {
    if (localStorage.getItem(key) === me) localStorage.removeItem(key);
  }
}

let inFlight = null;

/** A new access token from the refresh token, once across every tab. */
export function refresh() {
  if (inFlight) return inFlight;
  const before = current?.refreshToken;
  const run = async () => {
    // Another tab may have refreshed while this one waited.
    const latest = read();
    if (latest && latest.refreshToken !== before && latest.expiresAt > Date.now() + 30_000) {
      current = latest;
      return true;
    }
    current = latest;
    return refreshNow();
  };
  inFlight = exclusively("hanul-refresh", run).finally(() => {
    inFlight = null;
  });
  return inFlight;
}

/** A token good for at least a minute, or null when signed out. */
export async function accessToken() {
  if (!current) return null;
  if (current.expiresAt - Date.now() < 60_000) {
    await refresh();
  }
  return current?.accessToken || null;
}

/** The server refused the session: back to the sign-in page. */
export function expired() {
  store(null);
}

export async function signOut() {
  const s = current;
  store(null);
  if (!s) return;
  try {
    if (kind() === "cognito") {
      await cognito("RevokeToken", { ClientId: config.auth.clientId, Token: s.refreshToken });
    } else {
      await post("/local/v1/sessions/sign-out", { refreshToken: s.refreshToken });
    }
  } catch {
    // Signed out here either way; the server forgets the session when it expires.
  }
}

/** Ends every other session and keeps this one. */
export async function changePassword(currentPassword, newPassword) {
  if (kind() === "cognito") {
    await accessToken();
    await cognito("ChangePassword", {
      AccessToken: current.cognitoAccessToken,
      PreviousPassword: currentPassword,
      ProposedPassword: newPassword,
    });
    // Cognito keeps other sessions after a change: end them all, then sign
    // this one in again with the new password.
    const userName = current.userName;
    await cognito("GlobalSignOut", { AccessToken: current.cognitoAccessToken });
    await signIn(userName, newPassword);
    return;
  }
  const token = await accessToken();
  store(fromLocal(await post("/local/v1/me/password", { currentPassword, newPassword }, token)));
}
