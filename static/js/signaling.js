// The signaling socket (/ws, docs/protocol.md): hello, seq tracking, resume after a drop,
// our own ping (browsers cannot send ping frames), and a small event emitter for the rest.
//
// Events: every server message by its `type` (after duplicates were dropped by seq), "*" for
// all of them (handlers get (message, type)), and local ones: "reconnecting" (the socket dropped; trying to get back),
// "resumed" (welcome with resumed: true; missed messages follow), "fresh" (welcome with
// resumed: false: a new peer id, join again), "closed" ({code, reason}: for good).
// Tokens are only ever sent inside hello; they are never logged.

const FINAL_CLOSES = new Set([1000, 4003, 4008, 4010, 4011, 4012]);
const FINAL_MESSAGES = new Set(["session-ended", "removed", "denied", "replaced"]);
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
const GIVE_UP_MS = 120000; // after this long without a socket the call is lost
const HELLO_WAIT_MS = 10000;
const MAX_QUEUED = 256; // messages kept while the socket is down
// Offers, answers and candidates the server could not pass on (error "unavailable": its shared
// bus, Redis, was briefly away) are sent again after these pauses, then given up.
const RELAYED = new Set(["offer", "answer", "candidate"]);
const RESEND_MS = [250, 500, 1000, 2000, 4000];
const RESEND_KEEP = 64; // relayed messages remembered by id

/** An error from the server during hello (`code` from docs/protocol.md), or "closed". */
export class SignalingError extends Error {
  constructor(code, message = code) {
    super(message);
    this.name = "SignalingError";
    this.code = code;
  }
}

/**
 * The URL to open: the broker's signaling_url, unless it names an address a browser cannot
 * reach (a server listening on 0.0.0.0): then this page's own host.
 */
export function socketUrl(given, here = location) {
  const fallback = `${here.protocol === "https:" ? "wss:" : "ws:"}//${here.host}/ws`;
  if (!given) return fallback;
  try {
    const url = new URL(given, here.href);
    if (["0.0.0.0", "[::]", "::"].includes(url.hostname)) {
      url.host = here.host;
    }
    return url.href;
  } catch {
    return fallback;
  }
}

export class Signaling {
  /**
   * url: the /ws address; token: a join token or an access token (idle connection);
   * device: a short label ("tv"); renewToken(): an optional async function giving a new join
   * token when the old one has expired (signed-in people; guests cannot renew).
   */
  constructor({ url, token, device = null, renewToken = null, idle = false }) {
    this.url = socketUrl(url);
    this.token = token;
    // An idle connection (access token) that accepted a call gets a `resume-token` for it; after
    // a drop it resumes with that token, under a fresh join token when renewToken can give one.
    this.idle = idle;
    this.device = device;
    this.renewToken = renewToken;
    this.peerId = null;
    this.sessionId = null;
    this.resumeToken = null;
    this.iceServers = [];
    this.heartbeat = 20;
    this.lastSeq = 0;
    this.state = "new"; // new, connecting, open, reconnecting, closed
    this.inSession = false; // joined or waiting: a drop is resumed
    this._ws = null;
    this._handlers = new Map();
    this._queue = [];
    this._final = false;
    this._pingTimer = null;
    this._lastHeard = 0;
    this._pings = 0;
    this._retry = null;
    this._relayed = new Map(); // id -> [message, tries], newest last
    this._relayCount = 0;
  }

  /** Subscribe; returns a function that unsubscribes. */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type)?.delete(handler);
  }

  _emit(type, message) {
    for (const key of [type, "*"]) {
      for (const handler of [...(this._handlers.get(key) || [])]) {
        try {
          handler(message, type);
        } catch (error) {
          console.warn("signaling handler failed", type, error);
        }
      }
    }
  }

  /** Open the socket and say hello; resolves with the welcome, rejects with SignalingError. */
  async open() {
    this.state = "connecting";
    const welcome = await this._connect(false);
    this.state = "open";
    const queued = this._queue;
    this._queue = [];
    for (const message of queued) this.send(message);
    return welcome;
  }

  /** Send one message. While the socket is being resumed, messages wait (bounded). */
  send(message) {
    if (this.state === "closed") return false;
    if (RELAYED.has(message.type) && message.id === undefined) message = this._remember(message);
    if (this.state === "open" && this._ws?.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify(message));
      return true;
    }
    if (message.type === "ping") return false;
    if (this._queue.length >= MAX_QUEUED) this._queue.shift();
    this._queue.push(message);
    return true;
  }

  /** Close for good (no resume). Send `leave` first to leave a call. */
  close(code = 1000) {
    this._final = true;
    this._stop(code);
    if (this.state !== "closed") {
      this.state = "closed";
      this._emit("closed", { code, reason: "closed by the client" });
    }
  }

  _stop(code = 1000) {
    clearInterval(this._pingTimer);
    clearTimeout(this._retry);
    this._pingTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      ws.onclose = null;
      ws.onmessage = null;
      try {
        ws.close(code);
      } catch {
        // already closing
      }
    }
  }

  /** One socket: hello (with resume when asked), wait for welcome, then read. */
  _connect(resume) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        reject(new SignalingError("closed", String(error)));
        return;
      }
      this._ws = ws;
      let welcomed = false;
      const timer = setTimeout(() => {
        if (!welcomed) {
          ws.onclose = null;
          ws.close();
          reject(new SignalingError("closed", "no welcome in time"));
        }
      }, HELLO_WAIT_MS);
      ws.onopen = () => {
        const hello = { type: "hello", token: this.token };
        if (this.device) hello.device = this.device;
        if (resume && this.peerId && this.resumeToken) {
          hello.resume = { peer_id: this.peerId, token: this.resumeToken, last_seq: this.lastSeq };
        }
        ws.send(JSON.stringify(hello));
      };
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch {
          return;
        }
        if (!message || typeof message !== "object") return;
        this._lastHeard = Date.now();
        if (!welcomed) {
          clearTimeout(timer);
          if (message.type !== "welcome") {
            ws.onclose = null;
            ws.close();
            reject(new SignalingError(message.code || "closed", message.message || "refused"));
            return;
          }
          welcomed = true;
          this._welcome(message);
          resolve(message);
          return;
        }
        this._receive(message);
      };
      ws.onclose = (event) => {
        clearTimeout(timer);
        if (!welcomed) {
          reject(new SignalingError("closed", `closed before welcome (${event.code})`));
          return;
        }
        if (ws === this._ws) this._dropped(event.code, event.reason);
      };
    });
  }

  _welcome(welcome) {
    if (welcome.peer_id !== this.peerId) this.lastSeq = 0; // a new peer counts from 0 again
    this.peerId = welcome.peer_id;
    this.resumeToken = welcome.resume_token;
    this.sessionId = welcome.session_id ?? this.sessionId;
    this.iceServers = welcome.ice_servers || [];
    this.heartbeat = Number(welcome.heartbeat) > 0 ? Number(welcome.heartbeat) : 20;
    this._startPinging();
  }

  _receive(message) {
    const seq = message.seq;
    if (Number.isInteger(seq) && seq > 0) {
      if (seq <= this.lastSeq) return; // seen before the drop
      this.lastSeq = seq;
    }
    const type = String(message.type);
    if (type === "joined" || type === "waiting") this.inSession = true;
    if (type === "resume-token") {
      // A call taken on this idle connection: this token resumes the peer in it.
      this.resumeToken = message.resume_token;
      this.sessionId = message.session_id;
    }
    if (FINAL_MESSAGES.has(type)) this._final = true;
    if (type === "pong") return;
    if (type === "error" && message.code === "unavailable" && this._resend(message.ref)) return;
    if (type === "error" && message.code === "resume_failed") {
      // Resumed, but more was missed than the server keeps: start over as a new peer.
      this.inSession = false;
      this.reconnectNow("resume failed");
      return;
    }
    this._emit(type, message);
  }

  _remember(message, tries = 0) {
    const stamped = message.id === undefined ? { ...message, id: `r${++this._relayCount}` } : message;
    this._relayed.delete(stamped.id);
    this._relayed.set(stamped.id, [stamped, tries]);
    if (this._relayed.size > RESEND_KEEP) this._relayed.delete(this._relayed.keys().next().value);
    return stamped;
  }

  /** The server could not pass on our relayed message `ref`: send it again later (true), or
   * not (false: not ours, forgotten, or tried often enough). */
  _resend(ref) {
    const entry = typeof ref === "string" ? this._relayed.get(ref) : undefined;
    if (!entry) return false;
    const [message, tries] = entry;
    this._relayed.delete(ref);
    if (tries >= RESEND_MS.length) return false;
    this._remember(message, tries + 1);
    setTimeout(() => this.send(message), RESEND_MS[tries]);
    return true;
  }

  _startPinging() {
    clearInterval(this._pingTimer);
    const every = this.heartbeat * 1000;
    this._pingTimer = setInterval(() => {
      if (Date.now() - this._lastHeard > 2 * every) {
        // Nothing at all for twice the heartbeat: the socket is dead even if it looks open.
        this.reconnectNow("silent");
        return;
      }
      this._pings += 1;
      this.send({ type: "ping", id: `p${this._pings}` });
    }, Math.max(1000, every / 2));
  }

  /** Give up on this socket (it looks dead) and get back on a new one, resuming. */
  reconnectNow(reason = "client") {
    const ws = this._ws;
    if (!ws || this.state !== "open") return;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close();
    this._dropped(1006, reason);
  }

  _dropped(code, reason) {
    clearInterval(this._pingTimer);
    this._ws = null;
    if (this._final || FINAL_CLOSES.has(code) || this.state === "closed") {
      this.state = "closed";
      this._emit("closed", { code, reason });
      return;
    }
    this.state = "reconnecting";
    this._emit("reconnecting", { code });
    this._reconnect(code === 1001 ? 0 : BACKOFF_MS[0], Date.now());
  }

  _reconnect(delay, since, attempt = 0) {
    clearTimeout(this._retry);
    this._retry = setTimeout(async () => {
      if (this.state !== "reconnecting") return;
      if (Date.now() - since > GIVE_UP_MS) {
        this.state = "closed";
        this._emit("closed", { code: 1006, reason: "gave up" });
        return;
      }
      const next = BACKOFF_MS[Math.min(attempt + 1, BACKOFF_MS.length - 1)];
      let welcome;
      try {
        if (this.inSession && this.idle && this.renewToken) {
          this.token = await this.renewToken();
          this.idle = false;
        }
        welcome = await this._connect(this.inSession);
      } catch (error) {
        if (this.state !== "reconnecting") return;
        if (error.code === "token_expired" && this.renewToken) {
          try {
            this.token = await this.renewToken();
          } catch {
            // keep trying with backoff; the REST API may be down too
          }
        } else if (error.code === "invalid_token" || error.code === "token_expired") {
          this.state = "closed";
          this._emit("closed", { code: 4003, reason: error.code });
          return;
        }
        this._reconnect(next, since, attempt + 1);
        return;
      }
      if (this.state !== "reconnecting") return;
      this.state = "open";
      const queued = this._queue;
      this._queue = [];
      if (welcome.resumed) {
        this._emit("resumed", welcome);
        for (const message of queued) this.send(message);
      } else {
        // Our place is gone (or this was an idle connection): start over as a new peer.
        this.inSession = false;
        this._emit("fresh", welcome);
      }
    }, delay);
  }
}
