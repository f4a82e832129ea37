// The chat WebSocket: one per tab, reconnecting on its own with backoff.
// Whoever uses it re-watches in-progress replies in onOpen, so nothing is lost across a reconnect.
// A heartbeat finds a connection that died without closing (a network drop leaves one that seems open): when
// the server has said nothing for a while, or nothing since a command was sent, the socket pings it, and a
// ping left unanswered replaces the connection.

/** @typedef {"connecting" | "open" | "reconnecting" | "offline"} ConnectionState */

/**
 * @typedef {object} SocketHandlers
 * @property {(frame: Record<string, any>) => void} onFrame   a parsed server event
 * @property {(state: ConnectionState, retryInMs: number) => void} onState
 * @property {() => void} onOpen   connected (first time or again)
 * @property {() => void} onUnauthorized   the server closed with 4401 (signed out meanwhile)
 */

export const CLOSE_UNAUTHENTICATED = 4401;
const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const HEARTBEAT_EVERY_MS = 1_000; // how often the heartbeat looks
const IDLE_PING_MS = 12_000; // the server quiet this long: ping it (a watched reply says something every 10 s)
const ANSWER_PING_MS = 3_000; // a command sent and nothing heard for this long: ping at once
const PONG_WAIT_MS = 5_000; // a ping unanswered this long: the connection is dead

export class ChatSocket {
  /**
   * @param {string} url
   * @param {SocketHandlers} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.attempt = 0;
    /** @type {number | undefined} */
    this.timer = undefined;
    this.stopped = false;
    this.heardAt = 0;
    this.sentAt = 0;
    this.pingAt = 0;
  }

  start() {
    window.addEventListener("online", () => {
      if (this.isOpen) this.handlers.onState("open", 0); // a short drop the connection lived through
      this.reconnectNow();
    });
    window.addEventListener("offline", () => this.handlers.onState("offline", 0));
    // A tab brought back from the background reconnects at once instead of waiting out its backoff.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    });
    this.#connect();
    window.setInterval(() => this.#heartbeat(), HEARTBEAT_EVERY_MS);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Send a command; false when not connected (the caller keeps what the user typed).
   * @param {Record<string, unknown>} frame
   */
  send(frame) {
    if (!this.isOpen || this.ws === null) return false;
    this.ws.send(JSON.stringify(frame));
    if (this.sentAt <= this.heardAt) this.sentAt = Date.now();
    return true;
  }

  #heartbeat() {
    if (this.stopped || !this.isOpen || this.ws === null) return;
    const now = Date.now();
    if (this.pingAt > this.heardAt) {
      if (now - this.pingAt > PONG_WAIT_MS) this.restart();
      return;
    }
    const waiting = this.sentAt > this.heardAt && now - this.sentAt > ANSWER_PING_MS;
    if (waiting || now - this.heardAt > IDLE_PING_MS) {
      this.pingAt = now;
      this.ws.send(JSON.stringify({ type: "ping" }));
    }
  }

  /** Drop the connection and make a new one (it seems alive but says nothing). */
  restart() {
    if (this.stopped || this.ws === null) return;
    const ws = this.ws;
    this.ws = null;
    ws.close(4000, "restart");
    this.#connect();
  }

  reconnectNow() {
    if (this.stopped || this.isOpen || this.ws?.readyState === WebSocket.CONNECTING) return;
    window.clearTimeout(this.timer);
    this.#connect();
  }

  #connect() {
    this.handlers.onState(this.attempt === 0 ? "connecting" : "reconnecting", 0);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.attempt = 0;
      this.heardAt = Date.now();
      this.sentAt = 0;
      this.pingAt = 0;
      this.handlers.onState("open", 0);
      this.handlers.onOpen();
    });
    ws.addEventListener("message", (event) => {
      if (this.ws !== ws) return; // a connection given up on
      this.heardAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        console.error("Djinn: the server sent a frame that is not JSON", event.data);
        return;
      }
      if (frame && typeof frame === "object" && frame.type !== "pong") this.handlers.onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (event.code === CLOSE_UNAUTHENTICATED) {
        this.stopped = true;
        this.handlers.onUnauthorized();
        return;
      }
      this.#scheduleReconnect();
    });
  }

  #scheduleReconnect() {
    if (this.stopped) return;
    if (!navigator.onLine) {
      this.handlers.onState("offline", 0); // the "online" event reconnects
      return;
    }
    // Exponential backoff with jitter, so a restarted web process is not hit by every tab at once.
    const base = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.handlers.onState("reconnecting", delay);
    this.timer = window.setTimeout(() => this.#connect(), delay);
  }
}
