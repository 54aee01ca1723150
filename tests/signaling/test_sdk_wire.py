"""The SDK's reading of server messages (signaling/sdk_wire.py)."""

from __future__ import annotations

from typing import Any

import pytest

from signaling.peer import IceServer
from signaling.sdk_wire import JoinInfo, peer_of


@pytest.mark.parametrize(
    ("message", "peer"),
    [
        ({"type": "offer", "from": "peer-a", "sdp": "v=0"}, "peer-a"),
        ({"type": "peer-media", "from": "peer-a", "audio": False, "video": True}, "peer-a"),
        ({"type": "peer-joined", "peer": {"peer_id": "peer-b", "state": "in_call"}}, "peer-b"),
        ({"type": "peer-left", "peer_id": "peer-c", "reason": "left"}, "peer-c"),
        ({"type": "joined", "peer_id": "peer-me", "peers": []}, None),  # that is us
        ({"type": "error", "code": "not_joined", "message": "join first"}, None),
    ],
)
def test_peer_of_names_the_peer_a_message_is_from_or_about(
    message: dict[str, Any], peer: str | None
) -> None:
    assert peer_of(message) == peer


def test_join_info_from_the_rest_answer() -> None:
    info = JoinInfo.from_wire(
        {
            "session_id": "ses_1",
            "join_token": "j.w.t",
            "signaling_url": "ws://127.0.0.1:8080/ws",
            "ice_servers": [{"urls": ["stun:127.0.0.1:3478"]}],
            "quality": {"name": "hd", "width": 1280},
            "role": "patient",
        }
    )
    assert (info.session_id, info.join_token, info.role) == ("ses_1", "j.w.t", "patient")
    assert info.ice_servers == (IceServer.from_wire({"urls": ["stun:127.0.0.1:3478"]}),)
    assert info.quality["width"] == 1280
