// The parts of the call screen: video tiles, the host's waiting list, and the chat panel.
// Text from the server (names, chat) always goes in as text, never as markup.

import { formatTime, h, mount } from "./ui.js";

export const ROLE_NAMES = {
  host: "Clinician",
  patient: "Patient",
  family: "Family member",
  interpreter: "Interpreter",
  guest: "Guest",
};

/** One person's video: the <video>, a caption, and a state line ("Reconnecting…"). */
export class Tile {
  constructor(name, { local = false } = {}) {
    this.video = h("video", { autoplay: true, playsinline: true, muted: local ? true : null });
    this.video.muted = local; // the attribute alone is not enough in every browser
    this.state = h("span", { class: "tile-state", hidden: true });
    this.micOff = h("span", { class: "tile-mic-off", hidden: true }, "Microphone off");
    this.caption = h("span", { class: "tile-name" }, name);
    this.sound = h("button", { type: "button", class: "button small tile-sound", hidden: true }, "Turn on sound");
    this.sound.addEventListener("click", () => this.unmute());
    this.node = h(
      "figure",
      { class: `tile${local ? " tile-local" : " tile-remote"}`, "aria-label": local ? "Your camera" : `Video of ${name}` },
      this.video,
      h("figcaption", {}, this.caption, this.micOff, this.state),
      this.sound,
    );
  }

  /** A host's button on this tile ("Mute"): small, over the video's top left corner. */
  addAction(button) {
    if (!this.tools) {
      this.tools = h("div", { class: "tile-tools" });
      this.node.append(this.tools);
    }
    this.tools.append(button);
  }

  setName(name) {
    this.caption.textContent = name;
    if (!this.node.classList.contains("tile-local")) this.node.setAttribute("aria-label", `Video of ${name}`);
  }

  show(stream) {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    const playing = this.video.play();
    playing?.catch?.((error) => {
      if (error.name !== "NotAllowedError" || this.video.muted) return;
      // The browser wants a tap before it plays sound: play muted, offer the button.
      this.video.muted = true;
      this.video.play().catch(() => {});
      this.sound.hidden = false;
    });
  }

  unmute() {
    this.video.muted = false;
    this.video.play().catch(() => {});
    this.sound.hidden = true;
  }

  setState(text) {
    this.state.textContent = text || "";
    this.state.hidden = !text;
    this.node.classList.toggle("tile-away", Boolean(text));
  }

  setCameraOff(off) {
    this.node.classList.toggle("tile-camera-off", off);
  }

  /** What the peer said of its microphone and camera (`peer-media`): shown, not guessed. */
  setMedia(audio, video) {
    this.micOff.hidden = audio;
    this.setCameraOff(!video);
  }
}

/** The host's waiting list: one person at a time is admitted or turned away. */
export class WaitingList {
  constructor({ nameOf, onAdmit, onDeny }) {
    this.nameOf = nameOf;
    this.onAdmit = onAdmit;
    this.onDeny = onDeny;
    this.busy = false;
    this.waiting = [];
    this.list = h("ol", { class: "waiting-list" });
    this.empty = h("p", { class: "hint" }, "Nobody is waiting.");
    this.node = h(
      "section",
      { class: "call-panel-part waiting-room", "aria-labelledby": "waiting-heading" },
      h("h3", { id: "waiting-heading" }, "Waiting room"),
      this.empty,
      this.list,
    );
  }

  /** The list from `waiting-room` (first in line first). */
  update(waiting) {
    const focusedPeer = document.activeElement?.closest?.("li[data-peer]")?.dataset.peer;
    this.waiting = waiting;
    this.busy = false;
    this.empty.hidden = waiting.length > 0;
    mount(
      this.list,
      waiting.map((peer, index) => {
        const name = this.nameOf(peer);
        const admit = h("button", { type: "button", class: "button primary admit" }, "Admit");
        const deny = h("button", { type: "button", class: "button danger deny" }, "Deny");
        admit.setAttribute("aria-label", `Admit ${name}`);
        deny.setAttribute("aria-label", `Deny ${name}`);
        admit.addEventListener("click", () => this._act(this.onAdmit, peer));
        deny.addEventListener("click", () => this._act(this.onDeny, peer));
        return h(
          "li",
          { dataset: { peer: peer.peer_id } },
          h("span", { class: "waiting-name" }, name),
          h("span", { class: "waiting-role" }, `${ROLE_NAMES[peer.role] || peer.role}, number ${index + 1} in line`),
          h("span", { class: "actions" }, admit, deny),
        );
      }),
    );
    const again = focusedPeer && this.list.querySelector(`li[data-peer="${CSS.escape(focusedPeer)}"] .admit`);
    const first = this.list.querySelector(".admit");
    if (focusedPeer) (again || first || this.node).focus?.();
  }

  _act(action, peer) {
    if (this.busy) return;
    this.busy = true; // until the next waiting-room (or an error): one at a time
    for (const button of this.list.querySelectorAll("button")) button.disabled = true;
    action(peer);
  }

  /** The server refused (not_waiting ...): let the host try again. */
  release() {
    this.busy = false;
    for (const button of this.list.querySelectorAll("button")) button.disabled = false;
  }
}

/** Chat: a log (announced politely) and a one-line form. */
export class ChatPanel {
  constructor({ onSend }) {
    this.log = h("ol", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Chat messages" });
    this.input = h("input", {
      id: "chat-input",
      type: "text",
      maxlength: "2000",
      autocomplete: "off",
      enterkeyhint: "send",
    });
    this.empty = h("p", { class: "hint chat-empty" }, "No messages yet.");
    const send = h("button", { type: "submit", class: "button primary" }, "Send");
    this.form = h(
      "form",
      { class: "chat-form" },
      h("label", { for: "chat-input", class: "visually-hidden" }, "Message"),
      this.input,
      send,
    );
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      if (onSend(text)) this.input.value = "";
    });
    this.input.setAttribute("placeholder", "Write a message");
    this.node = h(
      "section",
      { class: "call-panel-part chat", "aria-labelledby": "chat-heading" },
      h("h3", { id: "chat-heading" }, "Chat"),
      this.empty,
      this.log,
      this.form,
    );
  }

  add(author, text, at, mine) {
    this.empty.hidden = true;
    const when = at ? new Date(at) : new Date();
    this.log.append(
      h(
        "li",
        { class: mine ? "mine" : "theirs" },
        h("span", { class: "chat-meta" }, h("strong", {}, author), " ", h("time", { datetime: when.toISOString() }, formatTime(when))),
        h("span", { class: "chat-text" }, text),
      ),
    );
    this.log.scrollTop = this.log.scrollHeight;
  }

  setEnabled(on) {
    for (const control of this.form.elements) control.disabled = !on;
  }
}
