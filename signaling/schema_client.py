"""JSON Schemas of the client -> server messages, generated from the protocol's Structs.

``msgspec`` derives each schema from its Struct in ``signaling.protocol`` (so it cannot drift
from the parser); this module only adds a description per message and per common field.
"""

from __future__ import annotations

import msgspec

from signaling import protocol
from signaling.schema_parts import DIALECT, Schema

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
