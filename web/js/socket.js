// The chat connection: one WebSocket per tab that reconnects by itself
// (backoff with jitter; at once when the browser comes back online), keeps
// a heartbeat (a missed answer means a dead link, as after a closed laptop
// lid), and on every (re)connect syncs the account's stream from the last
// position this browser saw, so nothing sent meanwhile is missed. Messages
// are sent with a client id: resent after a reconnect, the server answers
// the first copy instead of storing a second.

import * as auth from "./auth.js";
import { config } from "./api.js";

const SYNC_PAGE = 100;
const ACK_WAIT_MS = 10_000;

export class ChatSocket extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.status = "offline"; // "connecting" | "online" | "offline"
    this.stopped = true;
    this.retry = 0;
    this.timers = {};
    this.pending = new Map(); // clientMessageId → {frame, resolve, reject}
    this.syncing = false;
    this.syncAgain = false;
    this.connecting = false;
    this.afterConnect = false;
    addEventListener("online", () => this.reconnectNow());
    addEventListener("offline", () => this.ws?.close());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
  }

  get sinceKey() {
    return `hanul.since.${auth.session()?.userId}`;
  }

  get since() {
    return localStorage.getItem(this.sinceKey) || "0";
  }

  set since(value) {
    localStorage.setItem(this.sinceKey, value);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  setStatus(status) {
    if (this.status !== status) {
      this.status = status;
      this.emit("status", status);
    }
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timers.retry);
    this.ws?.close(1000, "signed out");
    this.ws = null;
    for (const p of this.pending.values()) p.reject(new Error("Signed out before the message was sent."));
    this.pending.clear();
    this.setStatus("offline");
  }

  reconnectNow() {
    if (this.stopped || this.connecting) return;
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      // Back from sleep with the link still "open": ask, and give it little
      // time to answer.
      if (this.status === "online") this.probe(5000);
      return;
    }
    clearTimeout(this.timers.retry);
    this.retry = 0;
    this.connect();
  }

  async connect() {
    if (this.stopped || this.connecting) return;
    this.connecting = true;
    this.setStatus("connecting");
    let token;
    try {
      // Repeated refusals may mean the session ended with a token still
      // unexpired: a refresh tells, and signs out if so.
      if (this.retry >= 3 && !(await auth.refresh())) auth.expired();
      token = await auth.accessToken();
    } catch {
      token = null;
    } finally {
      this.connecting = false;
    }
    // Stopped, or another connect won, while the token was fetched.
    if (this.stopped || this.ws) return;
    if (!token) {
      if (auth.session()) this.scheduleReconnect();
      return;
    }
    const url = config.socketUrl ? new URL(config.socketUrl) : new URL("/ws", location.href);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    url.searchParams.set("token", token);
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (e) => {
      if (ws === this.ws) this.receive(e.data);
    };
    ws.onclose = () => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.timers.beat);
      clearTimeout(this.timers.deadline);
      this.setStatus(this.stopped ? "offline" : "connecting");
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.timers.retry);
    const base = Math.min(30_000, 1000 * 2 ** Math.min(this.retry, 5));
    this.retry += 1;
    this.timers.retry = setTimeout(() => this.connect(), base / 2 + Math.random() * (base / 2));
    if (this.retry > 1) this.setStatus("offline");
  }

  sendFrame(frame) {
    if (this.ws?.readyState === WebSocket.OPEN && this.status === "online") {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    switch (frame.type) {
      case "hello":
        this.retry = 0;
        this.afterConnect = true;
        this.setStatus("online");
        this.startHeartbeat(frame.heartbeatSeconds || 30);
        this.syncing = false;
        this.syncAgain = false;
        this.sync();
        // Messages that were waiting for the link: the client ids make a
        // second try harmless.
        for (const p of this.pending.values()) this.ws.send(JSON.stringify(p.frame));
        break;
      case "heartbeat_ack":
        clearTimeout(this.timers.deadline);
        break;
      case "sync":
        this.since = frame.nextSince;
        for (const event of frame.events || []) this.emit("chatevent", { ...event, replayed: true });
        this.syncing = false;
        if (frame.limited || this.syncAgain) {
          this.syncAgain = false;
          this.sync();
        } else if (this.afterConnect) {
          // Caught up after a (re)connect: the lists may be read again. A
          // catch-up after live frames changes nothing they show.
          this.afterConnect = false;
          this.emit("synced");
        }
        break;
      case "event":
        this.emit("chatevent", frame.event);
        // Move this browser's position past what arrived live, so the next
        // reconnect asks only for what it has not seen.
        clearTimeout(this.timers.catchUp);
        this.timers.catchUp = setTimeout(() => this.sync(), 1500);
        break;
      case "ack": {
        const p = this.pending.get(frame.clientMessageId);
        if (p) {
          this.pending.delete(frame.clientMessageId);
          p.resolve(frame.message);
        }
        this.emit("chatevent", { kind: "message", conversationId: frame.message?.conversationId, message: frame.message });
        break;
      }
      case "error": {
        if (frame.code === "session_ended") {
          // This socket's session ended (signed out, or the password changed
          // here or elsewhere). A refresh tells which: this tab's newer
          // session reconnects; an ended one signs out.
          auth.refresh().then((ok) => { if (!ok) auth.expired(); }, () => {});
          break;
        }
        const p = frame.clientMessageId && this.pending.get(frame.clientMessageId);
        if (p) {
          this.pending.delete(frame.clientMessageId);
          p.reject(Object.assign(new Error(frame.message), { name: "ApiError", code: frame.code }));
        } else {
          this.emit("problem", frame);
        }
        break;
      }
      default:
        // typing, read, read_ack, presence
        this.emit(frame.type, frame);
    }
  }

  startHeartbeat(seconds) {
    clearInterval(this.timers.beat);
    const every = Math.max(5, seconds * 0.8) * 1000;
    this.timers.beat = setInterval(() => this.probe(ACK_WAIT_MS), every);
  }

  /** A heartbeat that must be answered within `wait` ms. */
  probe(wait) {
    if (!this.sendFrame({ action: "heartbeat" })) return;
    clearTimeout(this.timers.deadline);
    this.timers.deadline = setTimeout(() => this.abandon(), wait);
  }

  /** The link is dead though the browser did not notice (a closed lid):
   * leave it (a dead socket's close can take a minute) and connect anew. */
  abandon() {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    clearInterval(this.timers.beat);
    clearTimeout(this.timers.deadline);
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close();
    } catch {
      // Already gone.
    }
    this.setStatus("connecting");
    this.scheduleReconnect();
  }

  sync() {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    if (this.sendFrame({ action: "sync", since: this.since, limit: SYNC_PAGE })) this.syncing = true;
  }

  /** Sends a message; resolves with the stored message once acknowledged. */
  send(conversationId, text) {
    const clientMessageId = crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    const frame = { action: "send", conversationId, clientMessageId, text };
    return {
      clientMessageId,
      done: new Promise((resolve, reject) => {
        this.pending.set(clientMessageId, { frame, resolve, reject });
        this.sendFrame(frame);
      }),
    };
  }

  typing(conversationId) {
    this.sendFrame({ action: "typing", conversationId });
  }

  read(conversationId, messageId) {
    this.sendFrame({ action: "read", conversationId, messageId });
  }
}

export const chatSocket = new ChatSocket();
