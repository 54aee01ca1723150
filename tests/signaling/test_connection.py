"""``Connection``, the writing half of a socket: frames and their headers, batching, and the
frames after which the server closes the socket, on a fast socket and on a slow one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signaling import protocol
from signaling.connection import Batch, Connection, closing_code, frame_header


class Transport:
    """Takes writes; ``buffered`` is what it claims to hold (over 64 KiB: the socket is slow)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Socket:
    """The aiohttp socket as ``Connection`` uses it: no compression, a close to await."""

    compress = False
    closed = False

    def __init__(self) -> None:
        self.close_codes: list[int] = []

    async def close(self, *, code: int, message: bytes) -> None:
        self.close_codes.append(code)

    async def send_frame(self, frame: bytes, opcode: Any) -> None:
        pass


def connection() -> tuple[Connection, Transport, Socket]:
    socket, transport = Socket(), Transport()
    return Connection(socket, transport=transport), transport, socket  # type: ignore[arg-type]


def stamped(seq: int, message: dict[str, Any]) -> bytes:
    return protocol.stamp_seq(protocol.encode(message), seq)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
async def test_a_frame_goes_out_with_its_header_in_one_write(size: int) -> None:
    conn, transport, _ = connection()
    frame = b"x" * size
    assert conn.push(frame)
    await asyncio.sleep(0)  # the flush of this turn of the loop
    assert transport.writes == [frame_header(size) + frame]
    header = transport.writes[0][: len(frame_header(size))]
    assert header[0] == 0x81  # final text frame, unmasked (RFC 6455 5.2)
    length = header[1]
    if size < 126:
        assert length == size
    elif size < 65536:
        assert (length, int.from_bytes(header[2:4], "big")) == (126, size)
    else:
        assert (length, int.from_bytes(header[2:10], "big")) == (127, size)


async def test_frames_pushed_while_a_batch_is_open_go_out_when_it_ends() -> None:
    batch = Batch()
    socket, transport = Socket(), Transport()
    conn = Connection(socket, transport=transport, batch=batch)  # type: ignore[arg-type]
    batch.open = True
    for n in range(3):
        conn.push(b"%d" % n)
    assert transport.writes == []
    batch.end()
    assert transport.writes == [b"\x81\x010\x81\x011\x81\x012"]


@pytest.mark.parametrize("slow", [False, True])
async def test_a_final_frame_closes_the_socket_after_it_fast_or_slow(slow: bool) -> None:
    conn, transport, socket = connection()
    if slow:
        transport.buffered = 1 << 20
        conn.push(b"filler")
        await asyncio.sleep(0)
        conn.start()  # from now on the queue and the writer carry the frames
    relayed = stamped(7, {"type": "candidate", "from": "p-1", "candidate": None})
    assert conn.push(relayed)
    assert not conn.closing
    ended = stamped(8, {"type": "session-ended", "reason": "ended"})
    assert closing_code(ended) == protocol.CLOSE_SESSION_ENDED
    assert conn.push(ended)
    assert conn.closing
    assert not conn.push(relayed)  # nothing after the final frame
    await conn.finish(0.5)
    await asyncio.sleep(0.05)
    assert socket.close_codes == [protocol.CLOSE_SESSION_ENDED]
