"""Building blocks of the hand-written JSON Schemas (server -> client messages).

Small constructors for schema fragments, the value sets the server uses (roles, states,
reasons), and the shared ``$defs`` (``Peer``, ``IceServer``, ``Quality``, ``IceCandidate``)
that ``signaling.schema_server`` copies into each message that points at them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from signaling import protocol

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def string(description: str, **limits: Any) -> Schema:
    return {"type": "string", "description": description, **limits}


def enum(description: str, *values: str) -> Schema:
    return {"enum": list(values), "description": description}


_PEER_ID_RULE: Schema = msgspec.json.schema(protocol.PeerId)


def peer_id(description: str) -> Schema:
    return {**_PEER_ID_RULE, "description": description}


def ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


UTC_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$"
SESSION_ID = peer_id("The session (as in the REST API)")
ROLES = ("host", "patient", "family", "interpreter", "guest")
PEER_STATES = ("waiting", "in_call", "reconnecting")
SESSION_STATUSES = ("booked", "checked-in", "arrived", "fulfilled", "cancelled", "noshow")
LEFT_REASONS = ("left", "dropped", "removed", "replaced", "ended", "timeout")
ENDED_REASONS = ("ended", "cancelled", "window_closed")
MEDIA_KINDS = ("audio", "video")
SESSION_KINDS = ("checkup", "family_call")

DEFS: dict[str, Schema] = {
    "Peer": {
        "title": "Peer",
        "description": "One peer of a session, as the others see it",
        "type": "object",
        "properties": {
            "peer_id": peer_id("The peer's id on this session; address relayed messages to it"),
            "subject": string("Who it is: a user id, or an invite id for guests", minLength=1),
            "role": enum("Participant role", *ROLES),
            "name": nullable(string("Display name (guests); null for users")),
            "state": enum("Where the peer is", *PEER_STATES),
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
            "username": string("TURN REST username: `<unix expiry>:<id>`"),
            "credential": string("TURN REST password: base64 HMAC-SHA1"),
        },
        "required": ["urls"],
        "additionalProperties": False,
    },
    "Quality": {
        "title": "Quality",
        "description": "The session's video quality profile: what to ask the camera for",
        "type": "object",
        "properties": {
            "name": enum("Profile name", "sd", "hd", "fullhd"),
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
            "candidate": string(
                "The a=candidate line (without a=); empty: end of candidates",
                maxLength=protocol.MAX_CANDIDATE_CHARS,
            ),
            "sdpMid": nullable({"type": "string"}),
            "sdpMLineIndex": nullable({"type": "integer", "minimum": 0}),
            "usernameFragment": nullable({"type": "string"}),
        },
        "required": ["candidate"],
        "additionalProperties": False,
    },
}
