// The call's DOM: top bar (title, quality, status), a banner for what needs attention, the
// stage (waiting card, remote tiles, our preview), the side panel (waiting room, chat), the
// big controls, the "End for everyone?" question, and the screen shown when the call is over.
// No signaling here: the Call (call.js) drives it through the callbacks and methods below.

import { ChatPanel, Tile, WaitingList } from "./callparts.js";
import { h, mount, qualityName } from "./ui.js";

export class CallScreen {
  /**
   * title, quality, tv (bigger layout); nameOf(peer); on: {mic, camera, leave, end, chat(text),
   * admit(peer), deny(peer)}: what the person asked for.
   */
  constructor({ title, quality, tv, nameOf, on }) {
    this.on = on;
    this.status = h("p", { class: "call-status", role: "status" }, "Connecting…");
    this.banner = h("p", { class: "call-banner notice", role: "alert", hidden: true });
    this.bannerKind = "";
    this.heading = h("h2", { id: "call-heading", tabindex: "-1" }, title || "Your call");
    this.waitCard = h("div", { class: "wait-card", hidden: true });
    this.emptyStage = h("p", { class: "stage-empty", hidden: true });
    this.tiles = h("div", { class: "tiles" });
    this.local = new Tile("You", { local: true });
    this.waitingList = new WaitingList({ nameOf, onAdmit: on.admit, onDeny: on.deny });
    this.waitingList.node.hidden = true;
    this.chat = new ChatPanel({ onSend: on.chat });
    this.chat.setEnabled(false);
    this.mic = this._button("Mute microphone", on.mic);
    this.camera = this._button("Turn camera off", on.camera);
    this.leave = this._button("Leave", on.leave, "danger");
    this.end = this._button("End for everyone…", () => this.askEnd(), "danger");
    this.end.hidden = true;
    this.confirm = h("div", { class: "confirm call-confirm", hidden: true });
    this.phase = "connecting";
    this.node = h(
      "section",
      { class: `call-screen phase-connecting${tv ? " call-tv" : ""}`, "aria-labelledby": "call-heading" },
      h(
        "header",
        { class: "call-top" },
        this.heading,
        h("span", { class: "badge badge-quality", title: `${quality.width}×${quality.height}` }, qualityName(quality)),
        this.status,
      ),
      this.banner,
      h(
        "div",
        { class: "call-body" },
        h("div", { class: "call-stage" }, this.waitCard, this.emptyStage, this.tiles, this.local.node),
        h("aside", { class: "call-side", "aria-label": "Waiting room and chat" }, this.waitingList.node, this.chat.node),
      ),
      h("div", { class: "call-controls", role: "group", "aria-label": "Call controls" }, this.mic, this.camera, this.leave, this.end),
      this.confirm,
    );
  }

  _button(text, onClick, kind = "") {
    const button = h("button", { type: "button", class: `button huge-ish ${kind}`.trim() }, text);
    button.addEventListener("click", onClick);
    return button;
  }

  /** connecting, waiting, in-call or ended (the CSS lays the screen out by phase). */
  setPhase(phase) {
    this.node.classList.remove(`phase-${this.phase}`);
    this.phase = phase;
    this.node.classList.add(`phase-${phase}`);
  }

  setTitle(title) {
    this.heading.textContent = title;
  }

  setStatus(text) {
    this.status.textContent = text;
  }

  /** kind: what the banner is about ("audio", "video"), so it can go when that is fixed. */
  showBanner(text, kind = "") {
    this.banner.textContent = text || "";
    this.banner.hidden = !text;
    this.bannerKind = text ? kind : "";
  }

  clearBanner(kind) {
    if (this.bannerKind === kind) this.showBanner("");
  }

  showWaiting(position, who, role) {
    this.setPhase("waiting");
    mount(
      this.waitCard,
      h("h3", { class: "wait-position" }, `You are number ${position} in line`),
      h("p", {}, `${who} will let you in. Please stay on this page.`),
      role ? h("p", {}, `You join as ${role}.`) : null,
      h("p", { class: "hint" }, "While you wait, check that you can see yourself below."),
    );
    this.waitCard.hidden = false;
    this.setStatus(`Waiting room: number ${position} in line`);
  }

  /** In the call: chat on; hosts get the waiting room and "End for everyone". */
  showInCall(host) {
    this.waitCard.hidden = true;
    this.setPhase("in-call");
    this.chat.setEnabled(true);
    this.end.hidden = !host;
    this.waitingList.node.hidden = !host;
    this.setStatus("In the call");
  }

  /** The stage with nobody else on it says why. */
  updateStage(count, emptyText) {
    this.tiles.className = `tiles tiles-${Math.min(count, 4)}`;
    const alone = this.phase === "in-call" && count === 0;
    this.emptyStage.hidden = !alone;
    if (alone) this.emptyStage.textContent = emptyText;
  }

  setMic(on) {
    this._toggle(this.mic, on, "Mute microphone", "Unmute microphone");
    if (on) this.clearBanner("audio");
  }

  setCamera(on) {
    this._toggle(this.camera, on, "Turn camera off", "Turn camera on");
    this.local.setCameraOff(!on);
    if (on) this.clearBanner("video");
  }

  _toggle(button, on, whenOn, whenOff) {
    button.textContent = on ? whenOn : whenOff;
    button.setAttribute("aria-pressed", String(!on));
    button.classList.toggle("off", !on);
  }

  askEnd() {
    const yes = h("button", { type: "button", class: "button danger" }, "Yes, end it for everyone");
    const no = h("button", { type: "button", class: "button" }, "No, stay");
    no.addEventListener("click", () => {
      this.confirm.hidden = true;
      this.end.focus();
    });
    yes.addEventListener("click", () => {
      yes.disabled = true;
      this.on.end();
    });
    mount(
      this.confirm,
      h("p", {}, "End the call for everyone? Nobody can join it again."),
      h("div", { class: "actions" }, yes, no),
    );
    this.confirm.hidden = false;
    no.focus();
  }
}

/**
 * What is left when the call is over: why, and what to do now. actions: [[label, onClick,
 * primary?]]; without any, the person is told they can close the page.
 */
export function endScreen(title, text, actions) {
  const heading = h("h2", { id: "call-end-heading", tabindex: "-1" }, title);
  const buttons = actions.map(([label, onClick, primary]) => {
    const button = h("button", { type: "button", class: `button huge-ish${primary ? " primary" : ""}` }, label);
    button.addEventListener("click", onClick);
    return button;
  });
  const node = h(
    "section",
    { class: "call-ended card", "aria-labelledby": "call-end-heading", role: "alert" },
    heading,
    text ? h("p", {}, text) : null,
    buttons.length ? h("div", { class: "actions" }, ...buttons) : h("p", { class: "hint" }, "You can close this page now."),
  );
  return { node, focus: buttons[0] || heading };
}
