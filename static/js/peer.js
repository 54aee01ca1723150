// One RTCPeerConnection per remote peer: perfect negotiation and trickle ICE.
//
// Politeness is the rule every CityCall client shares (signaling/peer.py, docs/protocol.md):
// of two peers, the one whose peer id is GREATER (plain string comparison) is polite. Who
// offers: the peer that got `joined` offers to everyone already in the call; the peers in the
// call wait for the newcomer's offer (their tracks are added when that offer arrives, so they
// never start a colliding offer of their own). Glare can still happen on renegotiation: the
// impolite side ignores the other offer, the polite side rolls back and answers.

/** True when we are the polite side towards `remoteId`. */
export function isPolite(localId, remoteId) {
  return localId > remoteId;
}

/**
 * Put the quality profile on a video sender: keep the resolution when the bandwidth is short
 * (a clinician needs detail, not motion) and cap the bitrate at max_kbps.
 */
export async function tuneVideoSender(sender, quality) {
  if (!sender?.track || sender.track.kind !== "video") return;
  const params = sender.getParameters();
  if (!params.encodings || !params.encodings.length) params.encodings = [{}];
  if (quality?.max_kbps) {
    for (const encoding of params.encodings) encoding.maxBitrate = quality.max_kbps * 1000;
  }
  params.degradationPreference = "maintain-resolution";
  try {
    await sender.setParameters(params);
  } catch (error) {
    console.warn("could not set the video sender's parameters", error.name);
  }
}

export class PeerLink {
  /**
   * localId/remoteId: peer ids; iceServers: from the latest welcome; media: a MediaStream
   * (our camera and microphone, may have no tracks); quality: the session's profile;
   * send(message): to the signaling socket; offerer: we start the negotiation.
   * Callbacks: ontrack(stream), onstate(connectionState).
   */
  constructor({ localId, remoteId, iceServers, media, quality, send, offerer }) {
    this.localId = localId;
    this.remoteId = remoteId;
    this.polite = isPolite(localId, remoteId);
    this.media = media;
    this.quality = quality;
    this.send = send;
    this.stream = new MediaStream();
    this.ontrack = null;
    this.onstate = null;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.closed = false;
    this._tracksAdded = false;
    this._pending = []; // remote candidates before a remote description
    this._steps = Promise.resolve(); // remote messages are handled one after another
    this.pc = new RTCPeerConnection({ iceServers: iceServers || [] });
    this._wire();
    if (offerer) this._addTracks(); // fires negotiationneeded: we offer
  }

  _wire() {
    const pc = this.pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription?.type !== "offer") return;
        this.send({ type: "offer", to: this.remoteId, sdp: pc.localDescription.sdp });
      } catch (error) {
        console.warn("could not make an offer", error.name);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      // null: end of candidates, sent as it is
      this.send({ type: "candidate", to: this.remoteId, candidate: candidate ? candidate.toJSON() : null });
    };
    pc.ontrack = ({ track }) => {
      if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
      track.onunmute = () => this.ontrack?.(this.stream);
      this.ontrack?.(this.stream);
    };
    pc.onconnectionstatechange = () => this.onstate?.(pc.connectionState);
    pc.onsignalingstatechange = () => {
      if (pc.signalingState === "stable") this._tune();
    };
  }

  /** Our camera and microphone on this connection; a missing kind is received only. */
  _addTracks() {
    if (this._tracksAdded) return;
    this._tracksAdded = true;
    const kinds = new Set();
    for (const track of this.media.getTracks()) {
      const sender = this.pc.addTrack(track, this.media);
      kinds.add(track.kind);
      if (track.kind === "video") tuneVideoSender(sender, this.quality);
    }
    for (const kind of ["audio", "video"]) {
      if (!kinds.has(kind) && !this.pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
        this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
  }

  _tune() {
    for (const sender of this.pc.getSenders()) tuneVideoSender(sender, this.quality);
  }

  /** A relayed offer, answer or candidate from the remote peer. */
  handle(message) {
    this._steps = this._steps
      .then(() => this._handle(message))
      .catch((error) => {
        if (!this.closed) console.warn(`negotiation step ${message.type} failed`, error.name);
      });
    return this._steps;
  }

  async _handle(message) {
    if (this.closed) return;
    const pc = this.pc;
    if (message.type === "offer" || message.type === "answer") {
      const description = { type: message.type, sdp: message.sdp };
      const collision =
        description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      if (description.type === "answer" && pc.signalingState !== "have-local-offer") return;
      await pc.setRemoteDescription(description); // rolls our offer back on a collision
      await this._flush();
      if (description.type === "offer") {
        this._addTracks(); // the answering side adds its media to the offered transceivers
        await pc.setLocalDescription();
        this.send({ type: "answer", to: this.remoteId, sdp: pc.localDescription.sdp });
      }
    } else if (message.type === "candidate") {
      const candidate = message.candidate ?? null;
      if (!pc.remoteDescription) {
        this._pending.push(candidate);
        return;
      }
      await this._addCandidate(candidate);
    }
  }

  async _flush() {
    const pending = this._pending;
    this._pending = [];
    for (const candidate of pending) await this._addCandidate(candidate);
  }

  async _addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate === null ? undefined : candidate);
    } catch (error) {
      if (!this.ignoreOffer) console.warn("could not add an ICE candidate", error.name);
    }
  }

  /** After a network change (we are back after a drop): ICE again, from the impolite side. */
  restartIce(iceServers) {
    if (this.closed) return;
    if (iceServers) {
      try {
        this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
      } catch {
        // keep the old servers
      }
    }
    if (!this.polite && this._tracksAdded) this.pc.restartIce();
  }

  /** The connection needs help: disconnected or failed. */
  get stalled() {
    return ["disconnected", "failed"].includes(this.pc.connectionState);
  }

  close() {
    this.closed = true;
    this.ontrack = null;
    this.onstate = null;
    try {
      this.pc.close();
    } catch {
      // already closed
    }
  }
}
