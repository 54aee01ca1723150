// Ringing on a paired TV: an idle signaling connection (hello with the access token, no join)
// that gets `incoming-call`. Accept hands the same socket to the call screen (the server turns
// it into the call); calls from trusted contacts (`auto_answer`) are accepted by themselves.

import { Signaling } from "./signaling.js";
import { h, isolate, mount } from "./ui.js";

const RETRY_MS = [1000, 2000, 5000, 10000, 30000];

export class Ringer {
  /**
   * session: the TV's logged-in Session. onAnswer(signaling, ring, info): start the call on
   * the handed-over socket; info is the session (title, participants) when known.
   * onMissed(ring, name): the caller gave up before anyone answered.
   * onDismissed(): the ringing screen went away without a call.
   */
  constructor(session, { onAnswer, onMissed = null, onDismissed = null }) {
    this.session = session;
    this.onAnswer = onAnswer;
    this.onMissed = onMissed;
    this.onDismissed = onDismissed; // declined or cancelled: put the focus back
    this.stopped = true;
    this.busy = false; // in a call: new rings are not shown
    this.signaling = null;
    this.offs = [];
    this.failures = 0;
    this.timer = null;
    this.ringing = null; // {ring, overlay, info}
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this._hide();
    this._detach()?.close();
  }

  /** The call that took our socket is over: listen for the next ring. */
  callEnded() {
    this.busy = false;
    if (!this.stopped && !this.signaling) this._open();
  }

  async _open() {
    clearTimeout(this.timer);
    if (this.stopped || this.signaling) return;
    let token;
    try {
      token = await this.session.freshAccess();
    } catch (error) {
      if (error.status === 401) return; // logged out: the page pairs again
      this._retry();
      return;
    }
    if (this.stopped || this.signaling) return;
    const signaling = new Signaling({
      url: null, // this page's own /ws
      token,
      device: "tv",
      idle: true,
      renewToken: () => this.session.freshAccess(),
    });
    this.signaling = signaling;
    this.offs = [
      signaling.on("incoming-call", (m) => this._ring(m)),
      signaling.on("call-cancelled", (m) => this._cancelled(m)),
      signaling.on("closed", () => this._lost(signaling)),
    ];
    try {
      await signaling.open();
      this.failures = 0;
    } catch {
      this._lost(signaling);
    }
  }

  _lost(signaling) {
    if (signaling !== this.signaling) return;
    this._detach();
    this._hide();
    this._retry();
  }

  _retry() {
    if (this.stopped) return;
    const delay = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
    this.failures += 1;
    this.timer = setTimeout(() => this._open(), delay);
  }

  /** Stop listening on the socket; returns it (to close it, or to hand it to the call). */
  _detach() {
    for (const off of this.offs) off();
    this.offs = [];
    const signaling = this.signaling;
    this.signaling = null;
    return signaling;
  }

  async _ring(ring) {
    if (!this.busy && this.ringing && ring.auto_answer && this.ringing.ring.session_id === ring.session_id) {
      this._accept(); // rung again, now by a trusted contact
      return;
    }
    if (this.busy || this.ringing) return;
    const from = h("p", { class: "ring-from", id: "ring-from" }, "Someone is calling");
    const accept = h("button", { type: "button", class: "button primary huge" }, "Accept");
    const decline = h("button", { type: "button", class: "button danger huge" }, "Decline");
    accept.addEventListener("click", () => this._accept());
    decline.addEventListener("click", () => this._decline());
    const overlay = h(
      "section",
      { class: "ring", role: "alertdialog", "aria-labelledby": "ring-heading", "aria-describedby": "ring-from" },
      h("h1", { id: "ring-heading" }, "Incoming call"),
      from,
      ring.title ? h("p", { class: "ring-title" }, ring.title) : null,
      h("div", { class: "actions" }, accept, decline),
    );
    overlay.addEventListener("keydown", (event) => {
      if (event.key === "Escape" || event.key === "GoBack" || event.key === "BrowserBack") {
        event.preventDefault();
        this._decline();
      }
    });
    this.ringing = { ring, overlay, info: null, name: null, title: document.title };
    document.title = "Incoming call – CityCall";
    document.body.append(overlay);
    this.ringing.restore = isolate(overlay);
    if (ring.auto_answer) {
      mount(overlay.querySelector(".actions"), h("p", { class: "tv-status", role: "status" }, "Answering…"));
      this._accept();
    } else {
      accept.focus();
    }
    // Who is calling: the session's participants know the caller's name.
    const mine = this.ringing;
    try {
      const info = await this.session.get(`/api/v1/sessions/${encodeURIComponent(ring.session_id)}`);
      mine.info = info;
      const caller = (info.participants || []).find((p) => p.user_id === ring.from_user);
      if (caller?.display_name) {
        mine.name = caller.display_name;
        from.textContent = `${caller.display_name} is calling`;
      }
    } catch {
      // "Someone is calling" is still true
    }
  }

  _accept() {
    const ringing = this.ringing;
    if (!ringing) return;
    const signaling = this._detach();
    this._hide();
    if (!signaling) return;
    this.busy = true;
    this.onAnswer(signaling, ringing.ring, ringing.info);
  }

  _decline() {
    const ringing = this.ringing;
    if (!ringing) return;
    this.signaling?.send({ type: "decline", session_id: ringing.ring.session_id });
    this._hide();
    this.onDismissed?.();
  }

  _cancelled(message) {
    const ringing = this.ringing;
    if (!ringing || ringing.ring.session_id !== message.session_id) return;
    this._hide();
    this.onMissed?.(ringing.ring, ringing.name);
    this.onDismissed?.();
  }

  _hide() {
    const ringing = this.ringing;
    if (!ringing) return;
    this.ringing = null;
    ringing.restore?.();
    ringing.overlay.remove();
    document.title = ringing.title;
  }
}
