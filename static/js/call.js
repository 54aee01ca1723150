// The call screen: waiting room, video tiles, host controls, chat, and the end of the call.
//
// startCall(grant) joins with a join grant (POST /sessions/{id}/join or /invites/redeem).
// A TV that answers a ring hands over its already open idle socket instead
// (options.signaling + options.accept). Signaling: signaling.js; WebRTC: peer.js.

import { ROLE_NAMES, Tile } from "./callparts.js";
import { CallScreen, endScreen } from "./callscreen.js";
import { applyQuality, openMedia, stopMedia } from "./media.js";
import { PeerLink } from "./peer.js";
import { Signaling } from "./signaling.js";
import { h, isolate, mount } from "./ui.js";

const LINK_TYPES = new Set(["joined", "peer-joined", "offer", "answer", "candidate"]);
const DEFAULT_QUALITY = { name: "hd", width: 1280, height: 720, frame_rate: 30, max_kbps: 2500 };
const GUEST_ROLES = { interpreter: "the interpreter", guest: "a guest", family: "a family member" };
const JOIN_ERRORS = {
  outside_join_window: "This call cannot be joined right now.",
  session_full: "This call is full.",
  session_ended: "This call is over.",
  no_call: "This call is no longer there.",
};

/**
 * Start the call. container: the page's #call element. options: signaling (an open idle
 * Signaling) with accept (the session id to accept on it); api (a logged-in Session: names,
 * new join tokens); session (the session from the REST list: title, participants, quality);
 * onFinish() (the call is over for us), onClose() (the person pressed "Back"). Returns the Call.
 */
export function startCall(grant, container = document.getElementById("call"), options = {}) {
  const call = new Call(grant, container, options);
  call.start();
  return call;
}

class Call {
  constructor(grant, container, options) {
    this.grant = grant || {};
    this.container = container;
    this.options = options;
    this.session = options.session || null;
    this.sessionId = this.grant.session_id || options.accept || this.session?.id;
    this.quality = this.grant.quality || this.session?.quality || DEFAULT_QUALITY;
    this.role = this.grant.role || null;
    this.selfId = null;
    this.phase = "connecting"; // connecting, waiting, in-call, ended
    this.peers = new Map(); // peer_id -> {info, link, tile}
    this.people = new Map((this.session?.participants || []).map((p) => [p.user_id, p]));
    this.micOn = true;
    this.cameraOn = true;
    this.mediaSaid = "true,true"; // what the server has on our record (a new one: both on)
    this.unsubscribe = [];
    this._chain = Promise.resolve();
    this.screen = new CallScreen({
      title: this.session?.title,
      quality: this.quality,
      tv: document.body.classList.contains("tv"),
      nameOf: (peer) => this.nameOf(peer),
      on: {
        mic: () => this.setMic(!this.micOn),
        camera: () => this.setCamera(!this.cameraOn),
        leave: () => this.leave(),
        end: () => {
          this._endedByMe = true;
          this.send({ type: "end" });
        },
        chat: (text) => this.send({ type: "chat", text }),
        admit: (peer) => this.send({ type: "admit", peer: peer.peer_id }),
        deny: (peer) => this.send({ type: "deny", peer: peer.peer_id }),
      },
    });
    this.waitingList = this.screen.waitingList;
  }

  _phase(phase) {
    this.phase = phase;
    this.screen.setPhase(phase);
    this._expose();
  }

  setStatus(text) {
    this.screen.setStatus(text);
  }

  showBanner(text, kind = "") {
    this.screen.showBanner(text, kind);
  }

  // starting

  start() {
    if (this.container) {
      mount(this.container, this.screen.node);
      this.container.hidden = false;
      this.container.classList.add("in-call");
      document.body.classList.add("calling");
      this.restoreBackground = isolate(this.container);
    }
    const tv = document.body.classList.contains("tv");
    (tv ? this.screen.mic : this.screen.heading).focus();
    this._expose();
    this.media = openMedia(this.quality).then(({ stream, problem }) => {
      this.stream = stream;
      if (problem) this.showBanner(problem);
      this.screen.local.show(stream);
      this.screen.local.setCameraOff(stream.getVideoTracks().length === 0);
      this.screen.mic.disabled = stream.getAudioTracks().length === 0;
      this.screen.camera.disabled = stream.getVideoTracks().length === 0;
      if (this.phase === "ended") stopMedia(stream);
      return stream;
    });
    this._loadNames();
    if (this.options.signaling) this._adopt(this.options.signaling);
    else this._connect();
  }

  async _connect() {
    const api = this.options.api;
    this.signaling = new Signaling({
      url: this.grant.signaling_url,
      token: this.grant.join_token,
      device: document.body.classList.contains("tv") ? "tv" : null,
      renewToken: api ? () => this._joinToken() : null,
    });
    this._listen();
    try {
      await this.signaling.open();
    } catch (error) {
      this.finish("Could not connect to the call", this._helloProblem(error), { retry: true });
      return;
    }
    this.send({ type: "join" });
  }

  /** The TV's idle socket, ringing: accept the call on it; `joined` follows. */
  _adopt(signaling) {
    this.signaling = signaling;
    signaling.renewToken = this.options.api ? () => this._joinToken() : null;
    this._listen();
    this.setStatus("Answering…");
    this.send({ type: "accept", session_id: this.options.accept });
  }

  async _joinToken() {
    const grant = await this.options.api.post(`/api/v1/sessions/${encodeURIComponent(this.sessionId)}/join`);
    return grant.join_token;
  }

  async _loadNames() {
    const api = this.options.api;
    if (this.session || !api || !this.sessionId) return;
    try {
      this.session = await api.get(`/api/v1/sessions/${encodeURIComponent(this.sessionId)}`);
    } catch {
      return; // names stay "Clinician", "Patient": good enough
    }
    for (const p of this.session.participants || []) this.people.set(p.user_id, p);
    this.screen.setTitle(this.session.title);
    for (const entry of this.peers.values()) entry.tile.setName(this.nameOf(entry.info));
    this.waitingList.update(this.waitingList.waiting);
  }

  _helloProblem(error) {
    if (error.code === "token_expired") return "Your link to this call has expired. Go back and join again.";
    if (error.code === "invalid_token") return "This call did not accept your link. Go back and join again.";
    return "CityCall could not be reached. Check your internet connection and try again.";
  }

  _listen() {
    this.unsubscribe.push(
      this.signaling.on("*", (message, type) => {
        this._chain = this._chain
          .then(async () => {
            if (LINK_TYPES.has(type)) await this.media;
            if (this.phase !== "ended") this._on(type, message);
          })
          .catch((error) => console.warn("call: handling failed", type, error));
      }),
    );
  }

  send(message) {
    return Boolean(this.signaling?.send(message));
  }

  // messages

  _on(type, m) {
    switch (type) {
      case "waiting":
        return this._waiting(m.position);
      case "admitted":
        return this.setStatus("You have been let in. Connecting…");
      case "joined":
        return this._joined(m);
      case "waiting-room":
        return this._waitingRoom(m.waiting || []);
      case "peer-joined":
        return this._addPeer(m.peer, false);
      case "peer-left":
        return this._removePeer(m.peer_id, m.reason);
      case "peer-reconnecting":
        return this.peers.get(m.peer_id)?.tile.setState("Reconnecting…");
      case "peer-resumed":
        return this._peerResumed(m.peer_id);
      case "peer-media":
        return this._peerMedia(m);
      case "offer":
      case "answer":
      case "candidate":
        return this._relayed(m);
      case "chat":
        return this._chatMessage(m);
      case "mute-request":
        return this._muteRequest(m);
      case "call-declined":
        return this.setStatus(`${this._nameOfUser(m.user_id)} declined the call.`);
      case "session-ended":
        return this._ended(m.reason);
      case "removed":
        return this.finish("You were removed from the call", "The host ended your part in this call.");
      case "denied":
        return this.finish(
          "The clinician could not let you in",
          m.reason ? `Reason given: ${m.reason}` : this.options.api ? "Please contact your clinic." : "Please ask the person who invited you.",
        );
      case "replaced":
        return this.finish("You joined from another device", "This call continues on your other device. This screen has stopped.");
      case "error":
        return this._error(m);
      case "reconnecting":
        this.showBanner("Reconnecting…");
        return this.setStatus("Connection lost. Reconnecting…");
      case "resumed":
        return this._resumed();
      case "fresh":
        return this._fresh();
      case "closed":
        return this._closed(m);
      default:
        return undefined; // types this client does not know: ignore
    }
  }

  _waiting(position) {
    this._phase("waiting");
    const host = [...this.people.values()].find((p) => p.role === "host")?.display_name;
    this.screen.showWaiting(position, host || "The clinician", GUEST_ROLES[this.role]);
    this._sayMedia();
  }

  _joined(m) {
    this.selfId = m.peer_id;
    this.role = m.role;
    if (m.quality && (m.quality.width !== this.quality.width || m.quality.height !== this.quality.height)) {
      this.quality = m.quality;
      applyQuality(this.stream, m.quality);
    }
    this._phase("in-call");
    this.screen.showInCall(m.role === "host");
    for (const peer of m.peers || []) this._addPeer(peer, true);
    this._updateStage();
    this._sayMedia();
  }

  _peerMedia(m) {
    const entry = this.peers.get(m.from);
    if (!entry) return;
    const micWasOn = entry.tile.micOff.hidden;
    entry.tile.setMedia(m.audio, m.video);
    if (micWasOn !== m.audio) {
      this.setStatus(`${this.nameOf(entry.info)} turned the microphone ${m.audio ? "on" : "off"}.`);
    }
  }

  _waitingRoom(waiting) {
    const before = new Set(this.waitingList.waiting.map((p) => p.peer_id));
    this.waitingList.update(waiting);
    const arrived = waiting.filter((p) => !before.has(p.peer_id));
    if (arrived.length) this.setStatus(`${this.nameOf(arrived[0])} is waiting to be let in.`);
    this._updateStage();
  }

  _addPeer(info, offerer) {
    if (!info?.peer_id || info.peer_id === this.selfId) return;
    this._removePeer(info.peer_id, null, true);
    const tile = new Tile(this.nameOf(info));
    tile.setState("Connecting…");
    tile.setMedia(info.audio !== false, info.video !== false);
    const link = new PeerLink({
      localId: this.selfId,
      remoteId: info.peer_id,
      iceServers: this.signaling.iceServers,
      media: this.stream,
      quality: this.quality,
      send: (message) => this.send(message),
      offerer,
    });
    link.ontrack = (stream) => tile.show(stream);
    link.onstate = (state) => {
      if (state === "connected") tile.setState("");
      else if (state === "failed") tile.setState("No connection");
      else if (state === "disconnected") tile.setState("Connection unstable…");
    };
    if (this.role === "host") {
      const mute = h("button", { type: "button", class: "button small" }, "Ask to mute");
      mute.setAttribute("aria-label", `Ask to mute (${this.nameOf(info)})`);
      mute.addEventListener("click", () => {
        this.send({ type: "mute", peer: info.peer_id, kind: "audio" });
        this.setStatus(`Asked ${this.nameOf(info)} to mute.`);
      });
      tile.addAction(mute);
    }
    this.peers.set(info.peer_id, { info, link, tile });
    this._hadPeers = true;
    this.screen.tiles.append(tile.node);
    if (!offerer) this.setStatus(`${this.nameOf(info)} joined.`);
    this._updateStage();
  }

  _removePeer(peerId, reason, quiet = false) {
    const entry = this.peers.get(peerId);
    if (!entry) return;
    entry.link.close();
    entry.tile.node.remove();
    this.peers.delete(peerId);
    if (!quiet) {
      const why = { dropped: " (connection lost)", removed: " (removed)", replaced: " (on another device)" }[reason] || "";
      this.setStatus(`${this.nameOf(entry.info)} left${why}.`);
    }
    this._updateStage();
  }

  _updateStage() {
    const first = this.waitingList.waiting[0];
    this.screen.updateStage(
      this.peers.size,
      this.role === "host" && first
        ? `${this.nameOf(first)} is waiting. Press “Admit” to let them in.`
        : this._hadPeers
          ? "Nobody else is in the call now."
          : "Nobody else is here yet.",
    );
  }

  _peerResumed(peerId) {
    const entry = this.peers.get(peerId);
    if (!entry) return;
    entry.tile.setState("");
    if (entry.link.stalled) entry.link.restartIce(this.signaling.iceServers);
  }

  _relayed(m) {
    let entry = this.peers.get(m.from);
    if (!entry && m.type === "offer") {
      this._addPeer({ peer_id: m.from, role: null, subject: null, name: null }, false);
      entry = this.peers.get(m.from);
    }
    entry?.link.handle(m);
  }

  _chatMessage(m) {
    const mine = m.from === this.selfId;
    const entry = this.peers.get(m.from);
    const author = mine ? "You" : entry ? this.nameOf(entry.info) : "Someone";
    this.screen.chat.add(author, String(m.text ?? ""), m.at, mine);
  }

  _muteRequest(m) {
    const who = this.peers.get(m.from) ? this.nameOf(this.peers.get(m.from).info) : "The host";
    if (m.kind === "video") {
      this.setCamera(false);
      this.showBanner(`${who} turned your camera off. Press “Turn camera on” to show yourself again.`, "video");
    } else {
      this.setMic(false);
      this.showBanner(`${who} muted your microphone. Press “Unmute microphone” when you want to talk.`, "audio");
    }
  }

  _error(m) {
    if (m.code === "not_waiting" || m.code === "unknown_peer") {
      this.waitingList.release();
      this.setStatus("That person is no longer waiting.");
    } else if (m.code === "forbidden") {
      this.waitingList.release();
      this.screen.end.hidden = true;
    } else if (JOIN_ERRORS[m.code] && this.phase !== "in-call") {
      this.finish(JOIN_ERRORS[m.code], m.code === "outside_join_window" ? "Check the time of the call and try again later." : "");
    } else if (m.code !== "rate_limited" && m.code !== "already_joined") {
      console.warn("call: the server refused a message", m.code);
    }
  }

  _resumed() {
    this.showBanner("");
    this.mediaSaid = null; // a `media` sent as the socket dropped may be lost: say it again
    this._sayMedia();
    if (this.phase === "in-call") this.setStatus("In the call");
    for (const entry of this.peers.values()) {
      if (entry.link.stalled) entry.link.restartIce(this.signaling.iceServers);
    }
  }

  _fresh() {
    // Our place was gone: we come back as a new peer and join again.
    this.showBanner("");
    for (const id of [...this.peers.keys()]) this._removePeer(id, null, true);
    this.selfId = null;
    this.mediaSaid = "true,true";
    this.waitingList.update([]);
    this._phase("connecting");
    this.setStatus("Joining again…");
    this.send({ type: "join" });
  }

  _closed(m) {
    if (this.phase === "ended") return;
    if (m.code === 4003) {
      this.finish("Could not get back into the call", "Your link to this call has expired. Go back and join again.");
    } else {
      this.finish("The connection was lost", "CityCall could not be reached for a while.", { retry: true });
    }
  }

  _ended(reason) {
    const texts = {
      ended: this._endedByMe ? ["You ended the call", "The call has ended for everyone."] : ["The call has ended", "Thank you for joining."],
      cancelled: ["This call was cancelled", "Your clinic or your family will tell you what happens next."],
      window_closed: ["The time for this call is over", "The call has ended."],
    };
    const [title, text] = texts[reason] || texts.ended;
    this.finish(title, text);
  }

  // names

  nameOf(peer) {
    if (!peer) return "Someone";
    if (peer.name) return peer.name;
    const known = this.people.get(peer.subject)?.display_name;
    return known || ROLE_NAMES[peer.role] || "Someone";
  }

  _nameOfUser(userId) {
    return this.people.get(userId)?.display_name || "Someone";
  }

  // controls

  setMic(on) {
    this.micOn = on;
    for (const track of this.stream?.getAudioTracks() || []) track.enabled = on;
    this.screen.setMic(on);
    this._sayMedia();
  }

  setCamera(on) {
    this.cameraOn = on;
    for (const track of this.stream?.getVideoTracks() || []) track.enabled = on;
    this.screen.setCamera(on);
    this._sayMedia();
  }

  /** Tell the others (`media`) when our record says otherwise: once joined, waiting or not. */
  _sayMedia() {
    const state = `${this.micOn},${this.cameraOn}`;
    if (state === this.mediaSaid || (this.phase !== "waiting" && this.phase !== "in-call")) return;
    if (this.send({ type: "media", audio: this.micOn, video: this.cameraOn })) this.mediaSaid = state;
  }

  leave() {
    this.send({ type: "leave" });
    this.finish("You left the call", "You can join again while the call is still open.", { keepSocket: true });
    // The server closes the socket after `leave`; close it ourselves if it does not.
    const signaling = this.signaling;
    setTimeout(() => signaling?.close(), 1500);
  }

  /** The call is over for us: stop everything and say why. */
  finish(title, text, { retry = false, keepSocket = false } = {}) {
    if (this.phase === "ended") return;
    this._phase("ended");
    for (const id of [...this.peers.keys()]) this._removePeer(id, null, true);
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
    this.media?.then(stopMedia);
    if (!keepSocket) this.signaling?.close();
    document.body.classList.remove("calling");
    this.restoreBackground?.();
    this.restoreBackground = null;
    this.options.onFinish?.();
    const actions = [];
    if (retry && this.grant.join_token) {
      actions.push(["Try again", () => startCall(this.grant, this.container, this.options), false]);
    }
    if (this.options.api || this.options.onClose) {
      // signed in: back to the sessions list (a guest's page has nothing behind the call)
      actions.push(["Back to your sessions", () => this.close(), !retry]);
    }
    const end = endScreen(title, text, actions);
    if (this.container) {
      mount(this.container, end.node);
      this.container.classList.remove("in-call");
    }
    end.focus.focus();
  }

  close() {
    if (this.container) {
      this.container.hidden = true;
      this.container.replaceChildren();
      this.container.classList.remove("in-call");
    }
    document.body.classList.remove("calling");
    this.restoreBackground?.();
    this.options.onClose?.();
  }

  /** A debug handle for tests and support: the peer connections and the call's state. */
  _expose() {
    const call = this;
    window.__citycall = {
      get phase() {
        return call.phase;
      },
      get peerId() {
        return call.selfId;
      },
      get pcs() {
        return [...call.peers.values()].map((e) => e.link.pc);
      },
      get signaling() {
        return call.signaling;
      },
    };
  }
}
