"""JSON Schemas of the server -> client messages, written by hand.

The server builds these messages as plain dicts, so there is no type to generate them from:
each one is spelled out here, from the building blocks of ``signaling.schema_parts``. Every
message carries ``type`` and ``seq``; relayed ones also the server-stamped ``from``.
"""

from __future__ import annotations

from typing import Any

from signaling import protocol
from signaling.schema_parts import (
    DEFS,
    DIALECT,
    ENDED_REASONS,
    LEFT_REASONS,
    MEDIA_KINDS,
    ROLES,
    SESSION_ID,
    SESSION_KINDS,
    SESSION_STATUSES,
    UTC_TIME,
    Schema,
    enum,
    nullable,
    peer_id,
    ref,
    string,
)


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
FROM = peer_id("The sender's peer id, stamped by the server (never the client's claim)")


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
        out["$defs"] = {name: DEFS[name] for name in used}
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
    return nullable(string(description, maxLength=64))


def server_schemas() -> dict[str, Schema]:
    """``type`` value -> schema for every message the server sends."""
    peer, peers = ref("Peer"), {"type": "array", "items": ref("Peer")}
    messages = [
        _server(
            "welcome",
            "Answer to `hello`: who this socket is, how to resume it, and the ICE servers.",
            {
                "peer_id": peer_id("This connection's peer id; keep it for resume"),
                "resume_token": string("Secret for `hello.resume.token`", minLength=1),
                "heartbeat": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "Seconds between server pings; the longest silence allowed",
                },
                "ice_servers": {"type": "array", "items": ref("IceServer")},
                "resumed": {"type": "boolean", "description": "True when `resume` succeeded"},
                "session_id": nullable(SESSION_ID),
                "user_id": string("The token's subject (an invite id for guests)", minLength=1),
            },
        ),
        _server(
            "joined",
            "You are in the call: the answer to `join` when you need not wait, or to admission.",
            {
                "session_id": SESSION_ID,
                "role": enum("Your participant role", *ROLES),
                "peer_id": peer_id("Your peer id"),
                "peers": {**peers, "description": "The other peers in the call"},
                "quality": ref("Quality"),
                "status": enum("The session's status (FHIR Appointment.status)", *SESSION_STATUSES),
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
            {"peer_id": peer_id("Who left"), "reason": enum("Why", *LEFT_REASONS)},
        ),
        _server(
            "peer-reconnecting",
            "A peer's socket dropped; it may resume within the grace time (keep its media).",
            {"peer_id": peer_id("Who dropped")},
        ),
        _server(
            "peer-resumed",
            "A reconnecting peer is back (perhaps on another node); renegotiate if needed.",
            {"peer_id": peer_id("Who is back")},
        ),
        _server(
            "offer",
            "An SDP offer from another peer of the session.",
            {"sdp": string("The offer", minLength=1, maxLength=protocol.MAX_SDP_BYTES)},
            relayed=True,
        ),
        _server(
            "answer",
            "An SDP answer from another peer of the session.",
            {"sdp": string("The answer", minLength=1, maxLength=protocol.MAX_SDP_BYTES)},
            relayed=True,
        ),
        _server(
            "candidate",
            "A trickled ICE candidate from another peer; null: end of its candidates.",
            {"candidate": nullable(ref("IceCandidate"))},
            relayed=True,
        ),
        _server(
            "chat",
            "A chat message from a peer in the call.",
            {
                "text": string("The text", minLength=1, maxLength=protocol.MAX_CHAT_CHARS),
                "at": string(
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
            {"kind": enum("What to mute", *MEDIA_KINDS)},
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
                "from_user": string("The caller's user id", minLength=1),
                "from_name": nullable(string("The caller's display name")),
                "kind": enum("Session kind", *SESSION_KINDS),
                "title": string("The session's title"),
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
                "resume_token": string("Secret for `hello.resume.token`", minLength=1),
                "session_id": SESSION_ID,
            },
        ),
        _server(
            "call-cancelled",
            "Stop ringing: the call was answered elsewhere, declined, or cancelled.",
            {"session_id": SESSION_ID, "reason": string("Why", maxLength=64)},
        ),
        _server(
            "call-declined",
            "To the peers in a call: one callee declined it on an idle connection.",
            {"session_id": SESSION_ID, "user_id": string("Who declined", minLength=1)},
        ),
        _server(
            "session-ended",
            "The session is over; the socket is closed (4012).",
            {"session_id": SESSION_ID, "reason": enum("Why", *ENDED_REASONS)},
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
            {"ref": nullable(string("The ping's `id`", maxLength=64))},
        ),
        _server(
            "error",
            "A refused message or a failed action. `ref` is the `id` of the message it answers.",
            {
                "code": enum("Stable error code", *error_codes()),
                "message": string("Human-readable detail; do not parse"),
                "ref": string("The `id` of the client message this answers"),
            },
            optional=("ref",),
        ),
    ]
    return {str(m["title"]): m for m in messages}
