"""The client SDK's resend bookkeeping for relayed messages the broker could not pass on."""

from __future__ import annotations

from signaling.resend import Resends


def offer(n: int) -> dict[str, object]:
    return {"type": "offer", "to": "p_b", "sdp": f"v=0\r\n{n}"}


def test_each_relayed_message_gets_an_id_of_its_own_and_is_not_changed() -> None:
    resends = Resends()
    original = offer(1)
    first, second = resends.stamp(original), resends.stamp(offer(2))
    assert "id" not in original
    assert first == {**original, "id": first["id"]}
    assert first["id"] != second["id"]


def test_a_refused_message_is_sent_again_with_growing_pauses_then_given_up() -> None:
    resends = Resends(pauses=(0.1, 0.2, 0.4))
    sent = resends.stamp(offer(1))
    retries = [resends.refused(sent["id"]) for _ in range(4)]
    assert [r.pause for r in retries if r] == [0.1, 0.2, 0.4]
    assert [r.attempt for r in retries if r] == [1, 2, 3]
    assert all(r.message == sent for r in retries if r)  # the same id: the broker's ref again
    assert retries[3] is None
    assert resends.refused(sent["id"]) is None  # forgotten once given up
    assert len(resends) == 0


def test_refusals_of_other_or_forgotten_messages_are_ignored() -> None:
    resends = Resends(keep=3)
    sent = [resends.stamp(offer(n)) for n in range(5)]
    assert resends.refused(sent[0]["id"]) is None  # the oldest are forgotten
    assert resends.refused(sent[1]["id"]) is None
    assert resends.refused("c1") is None  # a chat of the app's own, not a relay
    assert resends.refused(None) is None
    retry = resends.refused(sent[4]["id"])
    assert retry is not None and retry.message == sent[4]
    assert len(resends) == 3
