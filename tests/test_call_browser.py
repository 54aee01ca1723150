"""Real calls in real headless Chromium against a real ``--demo`` broker process.

- the demo clinician and the demo patient each log in on ``/`` (their own browser contexts)
  and join the "Blood pressure check-up": the patient waits, the clinician admits, both
  receive 1280x720 video (proved by ``RTCPeerConnection.getStats()``), chat both ways, and
  the clinician ends the call for everyone;
- a browser patient and an aiortc clinician (``BrokerClient``) in one call, HD video both
  ways: the browser and the Python SDK negotiate with the same politeness rule.

Pages must run without console errors or uncaught exceptions. Screenshots go to
``$TMPDIR/citycall-call/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.support.broker_proc import BrokerLauncher, BrokerProcess

CHROMIUM = "/usr/bin/chromium"
# From /work/shared/notes/webrtc-testing.md: what works with Debian's Chromium here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
PASSWORD = "citycall-demo-1"
PATIENT = "patient@demo.citycall.test"
CLINICIAN = "clinician@demo.citycall.test"
GRANDMA = "grandma@demo.citycall.test"
GRANDSON = "grandson@demo.citycall.test"
CHECKUP = "Blood pressure check-up"
TIMEOUT_MS = 10_000
HD_TIMEOUT = 15.0
SHOTS = Path(tempfile.gettempdir()) / "citycall-call"
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")
PHONE = {"width": 412, "height": 915}
DESKTOP = {"width": 1280, "height": 800}
TV = {"width": 1280, "height": 720}

# inbound video of every peer connection of the page (window.__citycall is the debug handle)
INBOUND_VIDEO = """async () => {
  const out = [];
  for (const pc of (window.__citycall?.pcs || [])) {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        out.push({width: r.frameWidth || 0, height: r.frameHeight || 0,
                  decoded: r.framesDecoded || 0});
      }
    });
  }
  return out;
}"""


# how the page sends its camera: the session's bitrate cap, resolution kept over frame rate
VIDEO_SENDER = """() => {
  const sender = window.__citycall.pcs[0].getSenders().find((s) => s.track?.kind === "video");
  const params = sender.getParameters();
  return {maxBitrate: params.encodings[0].maxBitrate,
          degradationPreference: params.degradationPreference,
          contentHint: sender.track.contentHint};
}"""


def _missing(what: str) -> NoReturn:
    """Fail in CI (where every real part must run), skip on a developer's machine."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed", pytrace=False)
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        _missing(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install -e '.[test]')")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watch:
    """Console errors and uncaught exceptions of the pages a test opens."""

    expected: set[tuple[str, int]] = field(default_factory=set)  # (path, status) allowed
    problems: list[str] = field(default_factory=list)

    def attach(self, page: Any, name: str) -> Any:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda msg: self._console(name, msg))
        page.on("pageerror", lambda exc: self.problems.append(f"{name}: uncaught {exc}"))
        return page

    def _console(self, name: str, msg: Any) -> None:
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        failed = FAILED_LOAD.match(msg.text)
        if failed and (urlsplit(url).path, int(failed.group(1))) in self.expected:
            return
        self.problems.append(f"{name}: {msg.text} ({url})")

    def assert_clean(self) -> None:
        assert self.problems == [], "\n".join(self.problems)


@pytest.fixture
def watch() -> Iterator[Watch]:
    w = Watch()
    yield w
    w.assert_clean()


# Every WebSocket the page opens, kept where the test can reach it, and a way to lose one the
# way a network does: the page sees close code 1006 (a close the page asks for would be echoed
# by the server as a normal close, 1000, which a client rightly takes as final).
KEEP_SOCKETS = """(() => {
  const Real = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Real {
    constructor(...args) { super(...args); window.__sockets.push(this); }
    lose() {
      const closed = this.onclose;
      this.onclose = null;
      this.onmessage = null;
      this.close();
      if (closed) closed({ code: 1006, reason: "" });
    }
  };
})();"""
DROP_SOCKETS = "window.__sockets.filter((s) => s.readyState === 1).forEach((s) => s.lose())"
OPEN_SOCKETS = "window.__sockets.filter((s) => s.readyState === 1).length"


def keep_welcome(frame: str | bytes, welcomes: list[dict[str, Any]]) -> None:
    message = json.loads(frame)
    if message.get("type") == "welcome":
        welcomes.append(message)


def new_page(browser: Any, watch: Watch, name: str, viewport: dict[str, int]) -> Any:
    context = browser.new_context(
        viewport=viewport,
        locale="en-GB",
        is_mobile=viewport is PHONE,
        permissions=["camera", "microphone"],
    )
    return watch.attach(context.new_page(), name)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def log_in_and_join(page: Any, broker: BrokerProcess, email: str, title: str = CHECKUP) -> None:
    page.goto(broker.url + "/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    card = page.locator("li.session", has_text=title)
    card.get_by_role("button", name="Join").click()


def login_api(broker: BrokerProcess, email: str) -> dict[str, Any]:
    answer: dict[str, Any] = broker.call(
        "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}
    ).json()
    return answer


def inbound_video(page: Any) -> list[dict[str, int]]:
    found: list[dict[str, int]] = page.evaluate(INBOUND_VIDEO)
    return found


def wait_for_hd(pages: dict[str, Any], timeout: float = HD_TIMEOUT) -> dict[str, Any]:
    """Every page decodes 1280x720 video from its one remote peer."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while True:
        seen = {name: inbound_video(page) for name, page in pages.items()}
        if all(
            any(v["width"] == 1280 and v["height"] == 720 and v["decoded"] > 0 for v in videos)
            for videos in seen.values()
        ):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"no 1280x720 video on every side within {timeout} s: {seen}")
        time.sleep(0.25)


def test_checkup_clinician_admits_patient_hd_video_chat_and_end(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    broker = broker_launcher.start(extra_args=("--demo",))
    patient = new_page(browser, watch, "patient", PHONE)
    clinician = new_page(browser, watch, "clinician", DESKTOP)

    # the patient arrives first and waits
    log_in_and_join(patient, broker, PATIENT)
    wait_card = patient.locator(".wait-card")
    wait_card.get_by_role("heading", name="You are number 1 in line").wait_for()
    assert "Dr. Chris Clinician will let you in" in wait_card.inner_text()
    patient.wait_for_function(
        "() => document.querySelector('.tile-local video')?.videoWidth === 1280"
    )
    shot(patient, "patient-waiting")

    # a guest with an invite link waits behind her
    staff = login_api(broker, CLINICIAN)["access_token"]
    sessions = broker.call("GET", "/api/v1/sessions", token=staff).json()["items"]
    checkup_id = next(s["id"] for s in sessions if s["title"] == CHECKUP)
    invite = broker.call(
        "POST",
        f"/api/v1/sessions/{checkup_id}/invites",
        {"role": "guest", "display_name": "Gus Guest"},
        token=staff,
    ).json()
    guest = new_page(browser, watch, "guest", PHONE)
    guest.goto(invite["url"])
    guest.get_by_role("heading", name="You are number 2 in line").wait_for()

    # the clinician joins, sees the waiting room in order, turns the guest away, admits Pat
    log_in_and_join(clinician, broker, CLINICIAN)
    room = clinician.locator(".waiting-room")
    admit = room.get_by_role("button", name="Admit Pat Patient")
    admit.wait_for()
    waiting = room.locator("li")
    assert waiting.nth(0).locator(".waiting-name").inner_text() == "Pat Patient"
    assert waiting.nth(1).locator(".waiting-name").inner_text() == "Gus Guest"
    shot(clinician, "clinician-waiting-room")
    room.get_by_role("button", name="Deny Gus Guest").click()
    guest.get_by_role("heading", name="The clinician could not let you in").wait_for()
    shot(guest, "guest-denied")
    assert waiting.count() == 1
    admit.click()

    # both receive HD video
    found = wait_for_hd({"patient": patient, "clinician": clinician})
    assert all(len(videos) == 1 for videos in found.values()), found
    max_kbps = next(s for s in sessions if s["id"] == checkup_id)["quality"]["max_kbps"]
    for page in (patient, clinician):
        sending = page.evaluate(VIDEO_SENDER)
        assert sending == {
            "maxBitrate": max_kbps * 1000,
            "degradationPreference": "maintain-resolution",
            "contentHint": "detail",
        }
    clinician.locator(".tile-remote", has_text="Pat Patient").wait_for()
    patient.locator(".tile-remote", has_text="Dr. Chris Clinician").wait_for()
    assert room.get_by_text("Nobody is waiting.").is_visible()
    shot(patient, "patient-video")

    # chat, one message each way
    patient.get_by_role("textbox", name="Message").fill("Hello, can you see me?")
    patient.get_by_role("button", name="Send").click()
    clinician.locator(".chat-log li", has_text="Hello, can you see me?").wait_for()
    assert "Pat Patient" in clinician.locator(".chat-log li").first.inner_text()
    clinician.get_by_role("textbox", name="Message").fill("Yes, clearly. <b>Not bold</b>")
    clinician.keyboard.press("Enter")
    said = patient.locator(".chat-log li", has_text="Yes, clearly.")
    said.wait_for()
    assert "<b>Not bold</b>" in said.inner_text()  # text, never markup
    assert "Dr. Chris Clinician" in said.inner_text()
    shot(patient, "patient-in-call")
    shot(clinician, "clinician-in-call")

    # the patient's signaling socket goes away (as when it looks dead): it resumes as the
    # same peer and the call goes on
    before = patient.evaluate("window.__citycall.peerId")
    patient.evaluate("window.__citycall.signaling.reconnectNow()")
    patient.wait_for_function(
        "() => window.__citycall.signaling.state === 'open'"
        " && window.__citycall.signaling.lastSeq > 0"
    )
    assert patient.evaluate("window.__citycall.peerId") == before
    patient.get_by_role("textbox", name="Message").fill("Back after a drop")
    patient.get_by_role("button", name="Send").click()
    clinician.locator(".chat-log li", has_text="Back after a drop").wait_for()
    assert clinician.locator(".tile-remote .tile-state").is_hidden()

    # the clinician asks the patient to mute: the patient's microphone goes off, and says so
    clinician.get_by_role("button", name="Ask to mute (Pat Patient)").click()
    patient.get_by_role("alert").filter(
        has_text="Dr. Chris Clinician muted your microphone"
    ).wait_for()
    assert patient.evaluate(
        "window.__citycall.pcs[0].getSenders().filter(s => s.track?.kind === 'audio')"
        ".every(s => !s.track.enabled)"
    )
    pat_tile = clinician.locator(".tile-remote", has_text="Pat Patient")
    pat_tile.locator(".tile-mic-off", has_text="Microphone off").wait_for()  # media -> peer-media
    shot(clinician, "clinician-sees-patient-muted")
    shot(patient, "patient-muted-by-request")
    unmute = patient.get_by_role("button", name="Unmute microphone")
    assert unmute.get_attribute("aria-pressed") == "true"
    unmute.click()
    assert patient.evaluate(
        "window.__citycall.pcs[0].getSenders().filter(s => s.track?.kind === 'audio')"
        ".every(s => s.track.enabled)"
    )
    pat_tile.locator(".tile-mic-off").wait_for(state="hidden")
    clinician.get_by_role("status").filter(
        has_text="Pat Patient turned the microphone on."
    ).wait_for()

    # the patient turns her camera off and on: the clinician's tile says so, then shows her
    patient.get_by_role("button", name="Turn camera off").click()
    clinician.locator(".tile-remote.tile-camera-off", has_text="Pat Patient").wait_for()
    shot(clinician, "clinician-sees-patient-camera-off")
    patient.get_by_role("button", name="Turn camera on").click()
    clinician.wait_for_function(
        "() => [...document.querySelectorAll('.tile-remote')]"
        ".some(t => t.textContent.includes('Pat Patient')"
        " && !t.classList.contains('tile-camera-off'))"
    )

    # the clinician ends the call for everyone (after confirming)
    clinician.get_by_role("button", name="End for everyone…").click()
    shot(clinician, "clinician-confirm-end")
    clinician.get_by_role("button", name="Yes, end it for everyone").click()
    patient.get_by_role("heading", name="The call has ended").wait_for()
    clinician.get_by_role("heading", name="You ended the call").wait_for()
    shot(patient, "patient-ended")
    assert patient.evaluate("window.__citycall.pcs.length") == 0
    patient.get_by_role("button", name="Back to your sessions").click()
    patient.locator("li.session", has_text=CHECKUP).wait_for()
    assert patient.locator(".call-screen").count() == 0


# A browser and the Python SDK in one call.

T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a thread: the aiortc peer lives there, Playwright stays sync."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel_the_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.run(cancel_the_rest(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def aio() -> Iterator[LoopThread]:
    runner = LoopThread()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.mark.usefixtures("loopback_ice")
def test_browser_patient_and_aiortc_clinician_video_both_ways(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch, aio: LoopThread
) -> None:
    from signaling.client import BrokerClient
    from tests.support.webrtc import PatternTrack, frames_of

    broker = broker_launcher.start(extra_args=("--demo",))
    camera = PatternTrack()

    staff = login_api(broker, CLINICIAN)["access_token"]
    sessions = broker.call("GET", "/api/v1/sessions", token=staff).json()["items"]
    checkup_id = next(s["id"] for s in sessions if s["title"] == CHECKUP)

    async def clinician_joins() -> BrokerClient:
        doc = await BrokerClient.login(
            broker.url, CLINICIAN, PASSWORD, tracks=[camera], ice_servers=[]
        )
        await doc.join_session(checkup_id)
        await doc.wait_for("joined")
        return doc

    doc = aio.run(clinician_joins())
    try:
        patient = new_page(browser, watch, "patient", PHONE)
        log_in_and_join(patient, broker, PATIENT)
        patient.locator(".wait-card").get_by_role(
            "heading", name="You are number 1 in line"
        ).wait_for()

        async def admit() -> Any:
            room = await doc.wait_for("waiting-room", where=lambda e: bool(e.data["waiting"]))
            await doc.admit(room.data["waiting"][0]["peer_id"])
            track = await doc.wait_for("track", where=lambda e: e.data.get("kind") == "video")
            assert track.track is not None
            return await frames_of(track.track, 30)

        frames = aio.run(admit(), timeout=30)
        assert {(f.width, f.height) for f in frames} == {(1280, 720)}  # browser -> aiortc
        wait_for_hd({"patient": patient})  # aiortc -> browser
        patient.locator(".tile-remote", has_text="Dr. Chris Clinician").wait_for()
        shot(patient, "patient-with-aiortc")

        aio.run(doc.chat("Hello from Python"))
        patient.locator(".chat-log li", has_text="Hello from Python").wait_for()
        aio.run(doc.end())
        patient.get_by_role("heading", name="The call has ended").wait_for()
    finally:
        aio.run(doc.close())


def test_tv_rings_accepts_with_the_remote_and_auto_answers_trusted_callers(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    broker = broker_launcher.start(extra_args=("--demo", "--device-poll-interval", "1"))
    grandma = login_api(broker, GRANDMA)
    grandson = login_api(broker, GRANDSON)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    booked = broker.call(
        "POST",
        "/api/v1/sessions",
        {
            "kind": "family_call",
            "title": "Tea with Sam",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "participant_ids": [grandma["user"]["id"]],
        },
        token=grandson["access_token"],
    )
    assert booked.status == 201, booked.body

    # the TV pairs (approved over REST: the phone's pairing page has its own test)
    watch.expected.add(("/api/v1/device/token", 400))  # authorization_pending while waiting
    tv = new_page(browser, watch, "tv", TV)
    tv.add_init_script(KEEP_SOCKETS)
    tv.goto(broker.url + "/tv")
    code = tv.locator(".user-code").inner_text()
    approved = broker.call(
        "POST",
        "/api/v1/device/pairing",
        {"user_code": code, "approve": True},
        token=grandma["access_token"],
    )
    assert approved.status in (200, 204), approved.body
    tv.get_by_role("heading", name="Paired with Grandma Rose").wait_for()

    # Sam calls from his phone; the TV rings with Accept focused; the remote's OK accepts
    phone = new_page(browser, watch, "phone", PHONE)
    log_in_and_join(phone, broker, GRANDSON, "Tea with Sam")
    phone.get_by_text("Nobody else is here yet.").wait_for()
    ring = tv.get_by_role("alertdialog", name="Incoming call")
    ring.wait_for()
    ring.get_by_text("Sam Grandson is calling").wait_for()
    assert tv.evaluate("document.activeElement.textContent") == "Accept"
    shot(tv, "tv-ringing")
    tv.keyboard.press("Enter")
    wait_for_hd({"tv": tv, "phone": phone})
    tv.locator(".tile-remote", has_text="Sam Grandson").wait_for()
    phone.locator(".tile-remote", has_text="Grandma Rose").wait_for()
    shot(tv, "tv-in-call")

    # the TV's socket drops mid-call: it comes back as the same peer (resume-token), and the
    # phone never sees Grandma leave; the media went on meanwhile
    welcomes: list[dict[str, Any]] = []
    tv.on("websocket", lambda ws: ws.on("framereceived", lambda f: keep_welcome(f, welcomes)))
    tv.evaluate(DROP_SOCKETS)
    phone.locator(".tile-remote", has_text="Grandma Rose").get_by_text("Reconnecting").wait_for()
    phone.locator(".tile-remote", has_text="Grandma Rose").get_by_text("Reconnecting").wait_for(
        state="detached"
    )
    tv.get_by_text("In the call", exact=True).wait_for()
    assert tv.evaluate(OPEN_SOCKETS) == 1
    assert [(w["resumed"], w["session_id"]) for w in welcomes] == [
        (True, booked.json()["items"][0]["id"])
    ]
    assert "left" not in phone.locator("main").inner_text()
    wait_for_hd({"tv": tv, "phone": phone})
    shot(tv, "tv-resumed")

    # the remote moves along the big buttons and leaves
    assert tv.evaluate("document.activeElement.textContent") == "Mute microphone"
    tv.keyboard.press("ArrowRight")
    tv.keyboard.press("ArrowRight")
    assert tv.evaluate("document.activeElement.textContent") == "Leave"
    tv.keyboard.press("ArrowRight")  # the last control: the focus never goes behind the call
    assert tv.evaluate("document.activeElement.textContent") == "Leave"
    tv.keyboard.press("Enter")
    tv.get_by_role("heading", name="You left the call").wait_for()
    phone.get_by_text("Grandma Rose left.").wait_for()
    tv.keyboard.press("Enter")  # "Back to your sessions" has the focus
    tv.get_by_role("heading", name="Paired with Grandma Rose").wait_for()

    # Grandma trusts Sam: his next call is answered by the TV on its own
    trusted = broker.call(
        "PUT",
        "/api/v1/me/trusted-contacts",
        {"user_ids": [grandson["user"]["id"]]},
        token=grandma["access_token"],
    )
    assert trusted.status == 200, trusted.body
    phone.get_by_role("button", name="Leave").click()
    phone.get_by_role("button", name="Back to your sessions").click()
    phone.locator("li.session", has_text="Tea with Sam").get_by_role("button", name="Join").click()
    tv.locator(".tile-remote", has_text="Sam Grandson").wait_for()
    wait_for_hd({"tv": tv, "phone": phone})
    phone.get_by_role("button", name="Leave").click()
    tv.get_by_text("Sam Grandson left.").wait_for()
    shot(tv, "tv-alone")
