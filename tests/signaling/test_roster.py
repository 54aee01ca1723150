"""What peers are told about each other (signaling/roster.py)."""

from __future__ import annotations

from signaling.bus.base import IN_CALL, WAITING, PeerRecord
from signaling.roster import peer_view, waiting_order


def record(peer_id: str, state: str, since: float, audio: bool = True) -> PeerRecord:
    return PeerRecord(
        peer_id, "ses_1", f"usr_{peer_id}", "patient", None, "node-1", state, since, audio=audio
    )


def test_the_waiting_room_is_first_come_first_and_holds_only_waiting_peers() -> None:
    peers = [
        record("p-late", WAITING, 30.0),
        record("p-host", IN_CALL, 1.0),
        record("p-b", WAITING, 10.0),
        record("p-a", WAITING, 10.0),  # the same second: by peer id
    ]
    assert [p.peer_id for p in waiting_order(peers)] == ["p-a", "p-b", "p-late"]


def test_the_peer_object_names_its_state_microphone_and_camera_and_nothing_more() -> None:
    view = peer_view(record("p-a", IN_CALL, 1.0, audio=False))
    assert view == {
        "peer_id": "p-a",
        "subject": "usr_p-a",
        "role": "patient",
        "name": None,
        "state": IN_CALL,
        "audio": False,
        "video": True,
    }
