"""Make ``bench/data/offer.sdp``: a real offer from aiortc (audio + video, host candidates).

Run once (``python -m bench.make_sdp``); the file is committed so the benchmarks do not need
aiortc at run time. No ICE servers are configured, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "offer.sdp"


async def make() -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="sendrecv")
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def main() -> None:
    sdp = asyncio.run(make())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(sdp.encode())
    print(f"{OUT}: {len(sdp.encode())} bytes, {sdp.count(chr(10))} lines")


if __name__ == "__main__":
    main()
