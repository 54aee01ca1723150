"""JSON Schemas (draft 2020-12) for every signaling message, both directions.

Client -> server schemas are generated from the Structs in ``signaling.protocol`` (so they
cannot drift from the parser); server -> client schemas are written here by hand, because the
server builds those messages as plain dicts. ``docs/protocol.md`` links to the files that

    python -m signaling.schemas docs/schemas

writes: ``client/<type>.json``, ``server/<type>.json`` and ``index.json``. A test regenerates
them and fails when the committed files are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from signaling import protocol

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Client messages: what each one is for (the Structs carry the fields and their limits).
_CLIENT_NOTES: dict[str, str] = {
    "hello": (
        "First message on a new socket, within 5 s. `token` is a join token (from "
        "`POST /api/v1/sessions/{id}/join` or an invite redeem) or an access token (an idle "
        "connection that can ring). `resume` continues a peer after a dropped socket. "
        "`device` is a short free label for this device (for example `tv`)."
    ),
    "join": "Enter the session named by the join token given in `hello`.",
    "offer": "An SDP offer for one peer (`to`) of the same session; relayed with `from`.",
    "answer": "An SDP answer for one peer (`to`) of the same session; relayed with `from`.",
    "candidate": (
        "A trickled ICE candidate for one peer (`to`). `candidate: null`, or a candidate whose "
        "`candidate` string is empty, means end of candidates. A non-empty candidate needs "
        "`sdpMid` or `sdpMLineIndex`."
    ),
    "admit": "Hosts: let one waiting peer into the call.",
    "deny": "Hosts: turn one waiting peer away.",
    "kick": "Hosts: remove one peer from the session.",
    "mute": "Hosts: ask one peer to mute its audio or video (a request, not enforced).",
    "media": (
        "Your own microphone (`audio`) and camera (`video`), on (true) or off. The others in "
        "the call get `peer-media`, and see it in `joined` and `peer-joined` (`audio`, "
        "`video` of a peer); a peer that never says so counts as both on."
    ),
    "end": "Hosts: end the session for everyone.",
    "chat": "A text message to everyone in the call.",
    "leave": "Leave the session for good; the server then closes the socket (1000).",
    "ping": "Application-level liveness check; answered with `pong` carrying this `id`.",
    "accept": "Answer an `incoming-call` (ringing) on an idle connection.",
    "decline": "Decline an `incoming-call` on an idle connection.",
}

_CLIENT_FIELDS: dict[str, str] = {
    "id": "Your reference for this message: an `error` about it carries it as `ref`",
    "to": "The addressee: a peer id from `joined`, `peer-joined` or `waiting-room`",
    "peer": "The peer the host acts on",
    "audio": "Your microphone is on",
    "video": "Your camera is on",
}


def client_types() -> dict[str, type[msgspec.Struct]]:
    """``type`` value -> Struct, in the protocol's order."""
    return {str(t.__struct_config__.tag): t for t in protocol.CLIENT_TYPES}


def client_schema(kind: type[msgspec.Struct]) -> Schema:
    """One client message's schema: the Struct's own schema at the top, nested ones in $defs."""
    generated = msgspec.json.schema(kind)
    defs: dict[str, Schema] = dict(generated.get("$defs", {}))
    body = defs.pop(kind.__name__)
    tag = str(kind.__struct_config__.tag)
    out: Schema = {"$schema": DIALECT, "title": tag, "description": _CLIENT_NOTES[tag]}
    out.update({k: v for k, v in body.items() if k not in ("title", "description")})
    props: dict[str, Schema] = out["properties"]
    for name, note in _CLIENT_FIELDS.items():
        if name in props:
            props[name] = {**props[name], "description": note}
    if defs:
        out["$defs"] = defs
    return out


# Server messages. Building blocks first.


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _string(description: str, **limits: Any) -> Schema:
    return {"type": "string", "description": description, **limits}


def _enum(description: str, *values: str) -> Schema:
    return {"enum": list(values), "description": description}


_PEER_ID_RULE: Schema = msgspec.json.schema(protocol.PeerId)


def _peer_id(description: str) -> Schema:
    return {**_PEER_ID_RULE, "description": description}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$"
SESSION_ID = _peer_id("The session (as in the REST API)")
ROLES = ("host", "patient", "family", "interpreter", "guest")
PEER_STATES = ("waiting", "in_call", "reconnecting")
SESSION_STATUSES = ("booked", "checked-in", "arrived", "fulfilled", "cancelled", "noshow")
LEFT_REASONS = ("left", "dropped", "removed", "replaced", "ended", "timeout")
ENDED_REASONS = ("ended", "cancelled", "window_closed")
MEDIA_KINDS = ("audio", "video")
SESSION_KINDS = ("checkup", "family_call")

_DEFS: dict[str, Schema] = {
    "Peer": {
        "title": "Peer",
        "description": "One peer of a session, as the others see it",
        "type": "object",
        "properties": {
            "peer_id": _peer_id("The peer's id on this session; address relayed messages to it"),
            "subject": _string("Who it is: a user id, or an invite id for guests", minLength=1),
            "role": _enum("Participant role", *ROLES),
            "name": _nullable(_string("Display name (guests); null for users")),
            "state": _enum("Where the peer is", *PEER_STATES),
            "audio": {"type": "boolean", "description": "Its microphone is on (`media`)"},
            "video": {"type": "boolean", "description": "Its camera is on (`media`)"},
        },
        "required": ["peer_id", "subject", "role", "name", "state", "audio", "video"],
        "additionalProperties": False,
    },
    "IceServer": {
        "title": "IceServer",
        "description": "An RTCIceServer, ready for `new RTCPeerConnection({iceServers})`",
        "type": "object",
        "properties": {
            "urls": {
                "type": "array",
                "items": {"type": "string", "pattern": "^(stun|stuns|turn|turns):"},
                "minItems": 1,
            },
            "username": _string("TURN REST username: `<unix expiry>:<id>`"),
            "credential": _string("TURN REST password: base64 HMAC-SHA1"),
        },
        "required": ["urls"],
        "additionalProperties": False,
    },
    "Quality": {
        "title": "Quality",
        "description": "The session's video quality profile: what to ask the camera for",
        "type": "object",
        "properties": {
            "name": _enum("Profile name", "sd", "hd", "fullhd"),
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "frame_rate": {"type": "integer", "minimum": 1},
            "max_kbps": {
                "type": "integer",
                "minimum": 1,
                "description": "Upper bound for one outgoing video stream",
            },
        },
        "required": ["name", "width", "height", "frame_rate", "max_kbps"],
        "additionalProperties": False,
    },
    "IceCandidate": {
        "title": "IceCandidate",
        "description": "An RTCIceCandidateInit, as the sender gave it",
        "type": "object",
        "properties": {
            "candidate": _string(
                "The a=candidate line (without a=); empty: end of candidates",
                maxLength=protocol.MAX_CANDIDATE_CHARS,
            ),
            "sdpMid": _nullable({"type": "string"}),
            "sdpMLineIndex": _nullable({"type": "integer", "minimum": 0}),
            "usernameFragment": _nullable({"type": "string"}),
        },
        "required": ["candidate"],
        "additionalProperties": False,
    },
}


def error_codes() -> list[str]:
    """Every ``error`` code: the string constants of ``signaling.protocol``."""
    return [v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str)]


def close_codes() -> dict[str, int]:
    """Every WebSocket close code the server uses: ``CLOSE_*`` of ``signaling.protocol``."""
    return {k: v for k, v in vars(protocol).items() if k.startswith("CLOSE_") and type(v) is int}


SEQ: Schema = {
    "type": "integer",
    "minimum": 0,
    "description": (
        "Increases by one for every replayable message to this peer; keep the last one for "
        "`hello.resume.last_seq`. Messages that are not replayed (answers to this socket only, "
        "such as `welcome`, `error` and `pong`) may carry 0"
    ),
}
FROM = _peer_id("The sender's peer id, stamped by the server (never the client's claim)")


def _server(kind: str, description: str, fields: dict[str, Schema], **opts: Any) -> Schema:
    """A server message: ``type`` and ``seq``, then ``fields`` (all required unless named in
    ``optional``), closed to other fields; ``relayed`` adds the stamped ``from``."""
    optional: tuple[str, ...] = opts.get("optional", ())
    props: dict[str, Schema] = {"type": {"const": kind}, "seq": SEQ}
    if opts.get("relayed"):
        props["from"] = FROM
    props.update(fields)
    used = sorted(_refs(props))
    out: Schema = {
        "$schema": DIALECT,
        "title": kind,
        "description": description,
        "type": "object",
        "properties": props,
        "required": [name for name in props if name not in optional],
        "additionalProperties": False,
    }
    if used:
        out["$defs"] = {name: _DEFS[name] for name in used}
    return out


def _refs(node: Any) -> set[str]:
    """Names of the $defs a schema fragment points at (one level: $defs do not nest)."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[1]} if "$ref" in node else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _reason(description: str) -> Schema:
    return _nullable(_string(description, maxLength=64))


def server_schemas() -> dict[str, Schema]:
    """``type`` value -> schema for every message the server sends."""
    peer, peers = _ref("Peer"), {"type": "array", "items": _ref("Peer")}
    messages = [
        _server(
            "welcome",
            "Answer to `hello`: who this socket is, how to resume it, and the ICE servers.",
            {
                "peer_id": _peer_id("This connection's peer id; keep it for resume"),
                "resume_token": _string("Secret for `hello.resume.token`", minLength=1),
                "heartbeat": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Seconds between server pings; the longest silence allowed",
                },
                "ice_servers": {"type": "array", "items": _ref("IceServer")},
                "resumed": {"type": "boolean", "description": "True when `resume` succeeded"},
                "session_id": _nullable(SESSION_ID),
                "user_id": _string("The token's subject (an invite id for guests)", minLength=1),
            },
        ),
        _server(
            "joined",
            "You are in the call: the answer to `join` when you need not wait, or to admission.",
            {
                "session_id": SESSION_ID,
                "role": _enum("Your participant role", *ROLES),
                "peer_id": _peer_id("Your peer id"),
                "peers": {**peers, "description": "The other peers in the call"},
                "quality": _ref("Quality"),
                "status": _enum(
                    "The session's status (FHIR Appointment.status)", *SESSION_STATUSES
                ),
            },
        ),
        _server(
            "waiting",
            "You are in the waiting room; sent again whenever your position changes.",
            {
                "position": {"type": "integer", "minimum": 1, "description": "1: next in"},
                "session_id": SESSION_ID,
            },
        ),
        _server("admitted", "A host let you in; `joined` follows.", {"session_id": SESSION_ID}),
        _server(
            "denied",
            "A host turned you away from the waiting room; the socket is closed (1000).",
            {"reason": _reason("Free text from the host")},
        ),
        _server(
            "removed",
            "A host removed you from the session; the socket is closed (4011).",
            {"reason": _reason("Free text from the host")},
        ),
        _server(
            "replaced",
            "The same participant joined from another device; this socket is closed (4010).",
            {"reason": _reason("`replaced`")},
        ),
        _server(
            "waiting-room",
            "Hosts only: the whole waiting list, in order, whenever it changes.",
            {"waiting": {**peers, "description": "Waiting peers, first in line first"}},
        ),
        _server("peer-joined", "A peer entered the call.", {"peer": peer}),
        _server(
            "peer-left",
            "A peer left the call (or the waiting room), and why.",
            {"peer_id": _peer_id("Who left"), "reason": _enum("Why", *LEFT_REASONS)},
        ),
        _server(
            "peer-reconnecting",
            "A peer's socket dropped; it may resume within the grace time (keep its media).",
            {"peer_id": _peer_id("Who dropped")},
        ),
        _server(
            "peer-resumed",
            "A reconnecting peer is back (perhaps on another node); renegotiate if needed.",
            {"peer_id": _peer_id("Who is back")},
        ),
        _server(
            "offer",
            "An SDP offer from another peer of the session.",
            {"sdp": _string("The offer", minLength=1, maxLength=protocol.MAX_SDP_BYTES)},
            relayed=True,
        ),
        _server(
            "answer",
            "An SDP answer from another peer of the session.",
            {"sdp": _string("The answer", minLength=1, maxLength=protocol.MAX_SDP_BYTES)},
            relayed=True,
        ),
        _server(
            "candidate",
            "A trickled ICE candidate from another peer; null: end of its candidates.",
            {"candidate": _nullable(_ref("IceCandidate"))},
            relayed=True,
        ),
        _server(
            "chat",
            "A chat message from a peer in the call.",
            {
                "text": _string("The text", minLength=1, maxLength=protocol.MAX_CHAT_CHARS),
                "at": _string(
                    "When the server got it: RFC 3339 / ISO 8601 in UTC",
                    format="date-time",
                    pattern=UTC_TIME,
                ),
            },
            relayed=True,
        ),
        _server(
            "mute-request",
            "A host asks you to mute your audio or video (your client decides).",
            {"kind": _enum("What to mute", *MEDIA_KINDS)},
            relayed=True,
        ),
        _server(
            "peer-media",
            "A peer in the call turned its microphone or camera on or off (`media`).",
            {
                "audio": {"type": "boolean", "description": "Its microphone is on"},
                "video": {"type": "boolean", "description": "Its camera is on"},
            },
            relayed=True,
        ),
        _server(
            "incoming-call",
            "Ringing on an idle connection: answer with `accept` or `decline`.",
            {
                "session_id": SESSION_ID,
                "from_user": _string("The caller's user id", minLength=1),
                "from_name": _nullable(_string("The caller's display name")),
                "kind": _enum("Session kind", *SESSION_KINDS),
                "title": _string("The session's title"),
                "auto_answer": {
                    "type": "boolean",
                    "description": "The caller is a trusted contact: accept without asking",
                },
            },
        ),
        _server(
            "resume-token",
            "After `accept` on an idle connection: the token that resumes this peer in the call "
            "(`hello.resume.token`, with the same access token); the welcome's was for the "
            "idle connection.",
            {
                "resume_token": _string("Secret for `hello.resume.token`", minLength=1),
                "session_id": SESSION_ID,
            },
        ),
        _server(
            "call-cancelled",
            "Stop ringing: the call was answered elsewhere, declined, or cancelled.",
            {"session_id": SESSION_ID, "reason": _string("Why", maxLength=64)},
        ),
        _server(
            "call-declined",
            "To the peers in a call: one callee declined it on an idle connection.",
            {"session_id": SESSION_ID, "user_id": _string("Who declined", minLength=1)},
        ),
        _server(
            "session-ended",
            "The session is over; the socket is closed (4012).",
            {"session_id": SESSION_ID, "reason": _enum("Why", *ENDED_REASONS)},
        ),
        _server(
            "reconnect",
            "The server is going away: reconnect and resume (maybe on another node); "
            "the socket is closed (1001).",
            {"reason": {"const": "shutdown"}},
        ),
        _server(
            "pong",
            "Answer to `ping`.",
            {"ref": _nullable(_string("The ping's `id`", maxLength=64))},
        ),
        _server(
            "error",
            "A refused message or a failed action. `ref` is the `id` of the message it answers.",
            {
                "code": _enum("Stable error code", *error_codes()),
                "message": _string("Human-readable detail; do not parse"),
                "ref": _string("The `id` of the client message this answers"),
            },
            optional=("ref",),
        ),
    ]
    return {str(m["title"]): m for m in messages}


def all_schemas() -> dict[str, dict[str, Schema]]:
    """``{"client": {type: schema}, "server": {type: schema}}``."""
    return {
        "client": {tag: client_schema(kind) for tag, kind in client_types().items()},
        "server": server_schemas(),
    }


def dumps(schema: Schema) -> str:
    """The exact text written to a schema file (stable, so the files diff cleanly)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(outdir: Path) -> list[Path]:
    """Write ``client/<type>.json``, ``server/<type>.json`` and ``index.json`` under
    ``outdir``; remove stale ``*.json`` in those two folders. Returns the files written."""
    written: list[Path] = []
    index: Schema = {"$comment": "Generated by `python -m signaling.schemas`; do not edit."}
    for direction, schemas in all_schemas().items():
        folder = outdir / direction
        folder.mkdir(parents=True, exist_ok=True)
        names = {f"{kind}.json" for kind in schemas}
        for stale in folder.glob("*.json"):
            if stale.name not in names:
                stale.unlink()
        for kind, schema in schemas.items():
            path = folder / f"{kind}.json"
            path.write_text(dumps(schema), encoding="utf-8")
            written.append(path)
        index[direction] = {kind: f"{direction}/{kind}.json" for kind in schemas}
    path = outdir / "index.json"
    path.write_text(dumps(index), encoding="utf-8")
    written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m signaling.schemas OUTDIR", file=sys.stderr)
        return 2
    written = write(Path(argv[0]))
    print(f"wrote {len(written)} files under {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
