"""The signaling wire protocol: parse and serialize, nothing else (pure, no I/O).

Every message is a JSON object with a ``type`` and an optional client reference ``id``. Client
messages are parsed at the edge into frozen Structs (unknown fields refused); browser field
names (``sdpMid``, ``sdpMLineIndex``, ``usernameFragment``) exist only here. Server messages
are built here too; the server stamps ``from`` on everything it relays and ``seq`` (per
receiving peer, for resume) on everything it sends. ``docs/protocol.md`` documents it, with a
JSON Schema per message generated from these Structs (``python -m signaling.schemas``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_BYTES = 60 * 1024
MAX_CHAT_CHARS = 2000
MAX_CANDIDATE_CHARS = 1024

# Error codes (stable; documented in docs/protocol.md).
HELLO_TIMEOUT = "hello_timeout"
HELLO_REQUIRED = "hello_required"
INVALID_TOKEN = "invalid_token"
TOKEN_EXPIRED = "token_expired"
MESSAGE_TOO_LARGE = "message_too_large"
MALFORMED = "malformed"
UNKNOWN_TYPE = "unknown_type"
INVALID_MESSAGE = "invalid_message"
INVALID_SDP = "invalid_sdp"
INVALID_CANDIDATE = "invalid_candidate"
RATE_LIMITED = "rate_limited"
NOT_JOINED = "not_joined"
ALREADY_JOINED = "already_joined"
UNKNOWN_PEER = "unknown_peer"
FORBIDDEN = "forbidden"
OUTSIDE_JOIN_WINDOW = "outside_join_window"
SESSION_FULL = "session_full"
SESSION_ENDED = "session_ended"
RESUME_FAILED = "resume_failed"
NOT_WAITING = "not_waiting"
NO_CALL = "no_call"
UNAVAILABLE = "unavailable"  # the bus (Redis) cannot be reached; the socket stays open

# WebSocket close codes.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # shutdown: reconnect and resume on another node
CLOSE_HELLO_TIMEOUT = 4001
CLOSE_AUTH_FAILED = 4003
CLOSE_ABUSE = 4008  # floods, repeated garbage
CLOSE_SLOW_CONSUMER = 4009
CLOSE_REPLACED = 4010  # the same user joined from another device
CLOSE_REMOVED = 4011  # a host removed this peer
CLOSE_SESSION_ENDED = 4012
CLOSE_HEARTBEAT = 4013  # no pong in time

_SDP_START = re.compile(r"^v=0\r?\n")
_SDP_BAD_LINE = re.compile(r"\n(?![a-z]=|\r?\n|\Z)")  # a line neither blank nor "x=..."
_CANDIDATE = re.compile(r"(a=)?candidate:\S+ \d+ (udp|tcp|UDP|TCP) \d+ \S+ \d+ typ \w+", re.ASCII)

PeerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
Ref = Annotated[str, msgspec.Meta(max_length=64)]
Reason = Annotated[str, msgspec.Meta(max_length=64)]


class ProtocolError(Exception):
    """A message the server refuses; ``code`` goes back in an ``error`` with the ``ref``."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


# Client -> server


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    id: Ref | None = None


class Resume(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    peer_id: PeerId
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    last_seq: Annotated[int, msgspec.Meta(ge=0)] = 0


class Hello(_Msg, frozen=True, kw_only=True, tag="hello"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    resume: Resume | None = None
    device: Annotated[str, msgspec.Meta(max_length=32)] | None = None


class Join(_Msg, frozen=True, kw_only=True, tag="join"):
    pass


class Offer(_Msg, frozen=True, kw_only=True, tag="offer"):
    to: PeerId
    sdp: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SDP_BYTES)]


class Answer(_Msg, frozen=True, kw_only=True, tag="answer"):
    to: PeerId
    sdp: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SDP_BYTES)]


class IceCandidate(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    candidate: Annotated[str, msgspec.Meta(max_length=MAX_CANDIDATE_CHARS)]
    sdpMid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None
    usernameFragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


class Candidate(_Msg, frozen=True, kw_only=True, tag="candidate"):
    to: PeerId
    candidate: IceCandidate | None = None  # null: end of candidates


class Admit(_Msg, frozen=True, kw_only=True, tag="admit"):
    peer: PeerId


class Deny(_Msg, frozen=True, kw_only=True, tag="deny"):
    peer: PeerId
    reason: Reason | None = None


class Kick(_Msg, frozen=True, kw_only=True, tag="kick"):
    peer: PeerId
    reason: Reason | None = None


class Mute(_Msg, frozen=True, kw_only=True, tag="mute"):
    peer: PeerId
    kind: Literal["audio", "video"] = "audio"


class Media(_Msg, frozen=True, kw_only=True, tag="media"):
    """The sender's own microphone and camera: on (True) or off."""

    audio: bool
    video: bool


class End(_Msg, frozen=True, kw_only=True, tag="end"):
    pass


class Chat(_Msg, frozen=True, kw_only=True, tag="chat"):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAT_CHARS)]


class Leave(_Msg, frozen=True, kw_only=True, tag="leave"):
    pass


class Ping(_Msg, frozen=True, kw_only=True, tag="ping"):
    pass


class Accept(_Msg, frozen=True, kw_only=True, tag="accept"):
    """Answer an ``incoming-call`` (ringing) on an idle connection."""

    session_id: PeerId


class Decline(_Msg, frozen=True, kw_only=True, tag="decline"):
    session_id: PeerId


ClientMessage = (
    Hello
    | Join
    | Offer
    | Answer
    | Candidate
    | Admit
    | Deny
    | Kick
    | Mute
    | Media
    | End
    | Chat
    | Leave
    | Ping
    | Accept
    | Decline
)
CLIENT_TYPES: tuple[type[_Msg], ...] = (
    Hello,
    Join,
    Offer,
    Answer,
    Candidate,
    Admit,
    Deny,
    Kick,
    Mute,
    Media,
    End,
    Chat,
    Leave,
    Ping,
    Accept,
    Decline,
)
_KNOWN = frozenset(str(t.__struct_config__.tag) for t in CLIENT_TYPES)
_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_WITH_SDP = (Offer, Answer)
_probe = msgspec.json.Decoder(dict[str, Any])

# The fast lane's types (``parse_relayed``): the three relayed messages, ``to`` checked for
# length only. Matching it against the peer-id pattern costs a regex search per message; the
# lane relays only to a peer it finds in the room, whose id matches the pattern by
# construction, and leaves everything else to the handler task, which parses with ``parse``.
_LaneTo = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class _LaneOffer(Offer, frozen=True, kw_only=True, tag="offer"):
    to: _LaneTo


class _LaneAnswer(Answer, frozen=True, kw_only=True, tag="answer"):
    to: _LaneTo


class _LaneCandidate(Candidate, frozen=True, kw_only=True, tag="candidate"):
    to: _LaneTo


_lane_decoder: msgspec.json.Decoder[_LaneOffer | _LaneAnswer | _LaneCandidate] = (
    msgspec.json.Decoder(_LaneOffer | _LaneAnswer | _LaneCandidate)
)


def parse(raw: str | bytes) -> ClientMessage:
    """Bytes from the socket -> a validated message, or ``ProtocolError``."""
    try:
        data = raw.encode() if isinstance(raw, str) else raw
    except UnicodeError:
        raise ProtocolError(MALFORMED, "not valid UTF-8 text") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
    try:
        msg = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _explain(data, str(exc)) from None
    except (msgspec.DecodeError, UnicodeError):
        raise ProtocolError(MALFORMED, "not a JSON object") from None
    if isinstance(msg, Candidate):  # (a class, not a union: no union object per call)
        if msg.candidate is not None:
            check_candidate(msg.candidate, msg.id)
    elif isinstance(msg, _WITH_SDP):
        check_sdp(msg.sdp, msg.id)
    return msg


def parse_relayed(data: bytes) -> Offer | Answer | Candidate | None:
    """``parse`` for the fast lane: an ``offer``, ``answer`` or ``candidate`` whose SDP or
    candidate looks right, else None (any other message, or one ``parse`` would refuse; the
    handler task then parses it and answers). Its ``to`` is not matched against the peer-id
    pattern: the caller relays only to a peer of the room (``Rooms.relay_now``)."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        msg = _lane_decoder.decode(data)
        if isinstance(msg, Candidate):
            if msg.candidate is not None:
                check_candidate(msg.candidate, msg.id)
        else:
            check_sdp(msg.sdp, msg.id)
    except (msgspec.DecodeError, UnicodeError, ProtocolError):
        return None
    return msg


def _explain(data: bytes, detail: str) -> ProtocolError:
    """A validation failure: unknown type, or a known type with bad fields."""
    try:
        obj = _probe.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
        return ProtocolError(MALFORMED, "not a JSON object")
    given = obj.get("id")
    ref = given if isinstance(given, str) and len(given) <= 64 else None
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _KNOWN:
        return ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind!r}"[:120], ref)
    return ProtocolError(INVALID_MESSAGE, detail[:200], ref)


def check_sdp(sdp: str, ref: str | None = None) -> None:
    """Looks like SDP: starts ``v=0``, every line ``x=...``, has an ``m=`` section."""
    if not _SDP_START.match(sdp):
        raise ProtocolError(INVALID_SDP, "SDP must start with v=0", ref)
    if _SDP_BAD_LINE.search(sdp):  # one search, not a regex per line (docs/performance.md)
        raise ProtocolError(INVALID_SDP, "SDP lines must look like x=value", ref)
    if "\nm=" not in sdp:
        raise ProtocolError(INVALID_SDP, "SDP has no media section", ref)


def check_candidate(c: IceCandidate, ref: str | None = None) -> None:
    if c.candidate == "":
        return  # an empty candidate string also means end of candidates
    if not _CANDIDATE.match(c.candidate):
        raise ProtocolError(INVALID_CANDIDATE, "not an ICE candidate line", ref)
    if c.sdpMid is None and c.sdpMLineIndex is None:
        raise ProtocolError(INVALID_CANDIDATE, "a candidate needs sdpMid or sdpMLineIndex", ref)


# Server -> client. Built as dicts of JSON-ready values; ``encode`` adds nothing.


def encode(message: dict[str, Any]) -> bytes:
    return msgspec.json.encode(message)


def error(code: str, message: str, ref: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        out["ref"] = ref
    return out


class _Relayed(msgspec.Struct, frozen=True, tag_field="type", rename={"sender": "from"}):
    sender: str


class _RelayedOffer(_Relayed, frozen=True, tag="offer"):
    sdp: str


class _RelayedAnswer(_Relayed, frozen=True, tag="answer"):
    sdp: str


class _RelayedCandidate(_Relayed, frozen=True, tag="candidate"):
    candidate: IceCandidate | None


_encoder = msgspec.json.Encoder()


def relayed(msg: Offer | Answer | Candidate, sender: str) -> bytes:
    """The message as the addressee gets it, encoded: ``from`` stamped by the server, no
    ``to`` (``{"type":...,"from":...,"sdp"|"candidate":...}``)."""
    if isinstance(msg, Candidate):
        return _encoder.encode(_RelayedCandidate(sender, msg.candidate))
    if isinstance(msg, Offer):
        return _encoder.encode(_RelayedOffer(sender, msg.sdp))
    return _encoder.encode(_RelayedAnswer(sender, msg.sdp))


def stamp_seq(payload: bytes, seq: int) -> bytes:
    """Prefix ``"seq": N`` to an encoded server message (cheap: no re-encoding)."""
    return b'{"seq":' + str(seq).encode() + b"," + payload[1:]
