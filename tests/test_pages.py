"""The browser and TV pages in a real headless Chromium against a real ``--demo`` broker.

- a patient logs in on ``/``, sees the demo check-ups in the browser's time zone, and joins
  the one inside its join window (the call panel is still a placeholder);
- a TV shows a pairing code on ``/tv``, a family member approves it from a phone on
  ``/pair``, and the TV shows whom it is paired with and joins with the remote's Enter key;
- a guest link on ``/join`` gets into the call once, and explains used, bogus and early links.

Every page must run without console errors or uncaught exceptions. The only console errors
allowed are Chromium's "Failed to load resource" lines for answers a test expects (RFC 8628
polling answers ``400 authorization_pending`` until someone approves). Screenshots go to
``$TMPDIR/citycall-pages/``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

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
BROWSER_ZONE = "America/New_York"  # not the broker's, nor the demo clinic's
TIMEOUT_MS = 10_000
SHOTS = Path(tempfile.gettempdir()) / "citycall-pages"
FAILED_LOAD = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


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
    """Console errors, uncaught exceptions and request URLs of the pages a test opens."""

    expected: set[tuple[str, int]] = field(default_factory=set)  # (path, status) allowed
    problems: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def attach(self, page: Any, name: str) -> Any:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda msg: self._console(name, msg))
        page.on("pageerror", lambda exc: self.problems.append(f"{name}: uncaught {exc}"))
        page.on("request", lambda request: self.urls.append(request.url))
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

    def assert_never_in_urls(self, *secrets: str) -> None:
        for secret in secrets:
            assert secret, "empty secret"
            leaked = [u for u in self.urls if secret in u]
            assert leaked == [], "a token travelled in a URL"


@pytest.fixture
def watch() -> Iterator[Watch]:
    w = Watch()
    yield w
    w.assert_clean()


def new_page(browser: Any, watch: Watch, name: str, *, tv: bool = False) -> Any:
    viewport = {"width": 1280, "height": 720} if tv else {"width": 412, "height": 915}
    context = browser.new_context(
        viewport=viewport, locale="en-GB", timezone_id=BROWSER_ZONE, is_mobile=not tv
    )
    return watch.attach(context.new_page(), name)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def start_demo(broker_launcher: BrokerLauncher, *args: str) -> BrokerProcess:
    return broker_launcher.start(extra_args=("--demo", *args))


def login_api(broker: BrokerProcess, email: str) -> dict[str, Any]:
    answer: dict[str, Any] = broker.call(
        "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD}
    ).json()
    return answer


def log_in(page: Any, email: str) -> None:
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def local_hhmm(instant: str) -> str:
    when = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return when.astimezone(ZoneInfo(BROWSER_ZONE)).strftime("%H:%M")


def test_patient_logs_in_sees_checkups_and_joins(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    broker = start_demo(broker_launcher)
    me = login_api(broker, PATIENT)
    sessions = broker.call("GET", "/api/v1/sessions", token=me["access_token"]).json()["items"]
    soon = next(s for s in sessions if s["title"] == "Blood pressure check-up")
    page = new_page(browser, watch, "patient")
    page.goto(broker.url + "/")
    watch.expected.add(("/api/v1/auth/login", 401))
    log_in(page, PATIENT.replace("patient@", "nobody@"))
    page.get_by_role("alert").filter(has_text="Wrong e-mail or password").wait_for()
    log_in(page, PATIENT)

    card = page.locator("li.session", has_text="Blood pressure check-up")
    card.wait_for()
    later = page.locator("li.session", has_text="Medication review")
    page.get_by_text("Pat Patient").wait_for()
    assert card.locator(".badge-quality").inner_text() == "HD"
    assert "Dr. Chris Clinician" in card.inner_text()
    # the local time in the browser's zone, not the clinic's or the server's
    span = f"{local_hhmm(soon['start'])} \N{EN DASH} {local_hhmm(soon['end'])}"
    assert span in card.inner_text()
    join = card.get_by_role("button", name="Join")
    assert join.is_enabled()
    assert later.get_by_role("button", name="Join").is_disabled()
    assert "Join opens at" in later.inner_text()
    shot(page, "patient-sessions")

    join.click()
    call = page.locator(".call-screen")
    call.get_by_role("heading", name="You are number 1 in line").wait_for()
    quality = call.locator(".badge-quality")
    assert quality.inner_text() == "HD"
    assert quality.get_attribute("title") == "1280\N{MULTIPLICATION SIGN}720"
    shot(page, "patient-ready")

    # tokens live in sessionStorage only, and a stale access token is refreshed on a 401
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('citycall'))")
    assert page.evaluate("localStorage.length") == 0
    watch.expected.add(("/api/v1/sessions", 401))
    page.evaluate(
        "const s = JSON.parse(sessionStorage.getItem('citycall'));"
        "s.access = 'expired.not.valid'; sessionStorage.setItem('citycall', JSON.stringify(s));"
    )
    page.reload()
    page.locator("li.session", has_text="Blood pressure check-up").wait_for()
    renewed = page.evaluate("JSON.parse(sessionStorage.getItem('citycall'))")
    assert renewed["refresh"] != stored["refresh"]
    watch.assert_never_in_urls(stored["access"], stored["refresh"], renewed["refresh"])


def test_tv_pairs_from_a_phone_and_joins_with_the_remote(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    broker = start_demo(broker_launcher, "--device-poll-interval", "1")
    # a call with Grandma whose join window is open now, so the TV has something to join
    grandson = login_api(broker, GRANDSON)
    grandma_id = login_api(broker, GRANDMA)["user"]["id"]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=2)
    booked = broker.call(
        "POST",
        "/api/v1/sessions",
        {
            "kind": "family_call",
            "title": "Tea with Sam",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=20)).isoformat(),
            "participant_ids": [grandma_id],
        },
        token=grandson["access_token"],
    )
    assert booked.status == 201, booked.body

    watch.expected.add(("/api/v1/device/token", 400))  # authorization_pending while waiting
    tv = new_page(browser, watch, "tv", tv=True)
    tv.goto(broker.url + "/tv")
    code = tv.locator(".user-code").inner_text()
    assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", code), code
    assert f"{broker.url}/pair" in tv.locator(".tv-pair").inner_text()
    shot(tv, "tv-code")

    phone = new_page(browser, watch, "phone")
    phone.goto(f"{broker.url}/pair?code={code}")
    log_in(phone, GRANDMA)
    assert phone.get_by_label("Code shown on the TV").input_value() == code
    phone.get_by_role("button", name="Continue").click()
    phone.get_by_role("heading", name=re.compile(r"Pair device .tv.\?")).wait_for()
    shot(phone, "phone-pair-decide")
    phone.get_by_role("button", name="Approve").click()
    phone.get_by_role("heading", name="TV paired").wait_for()
    shot(phone, "phone-pair-done")

    tv.get_by_role("heading", name="Paired with Grandma Rose").wait_for()
    card = tv.locator("li.session", has_text="Tea with Sam")
    join = card.get_by_role("button", name="Join")
    join.wait_for()
    tv.wait_for_function("document.activeElement?.classList.contains('join')")
    assert join.evaluate("b => b === document.activeElement")
    shot(tv, "tv-paired")
    tv.keyboard.press("ArrowUp")  # the remote moves the focus to "Unpair this TV"
    assert tv.evaluate("document.activeElement.textContent") == "Unpair this TV"
    tv.keyboard.press("ArrowDown")
    tv.keyboard.press("Enter")
    tv.locator(".call-screen").get_by_text("Nobody else is here yet.").wait_for()
    shot(tv, "tv-ready")

    tokens = tv.evaluate("JSON.parse(sessionStorage.getItem('citycall.tv'))")
    assert tokens["user"]["display_name"] == "Grandma Rose"
    watch.assert_never_in_urls(tokens["access"], tokens["refresh"])


def test_guest_link_joins_once_and_explains_bad_links(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    broker = start_demo(broker_launcher)
    staff = login_api(broker, CLINICIAN)["access_token"]
    sessions = broker.call("GET", "/api/v1/sessions", token=staff).json()["items"]
    by_title = {s["title"]: s for s in sessions}

    def invite(title: str) -> dict[str, Any]:
        session_id = by_title[title]["id"]
        reply = broker.call(
            "POST",
            f"/api/v1/sessions/{session_id}/invites",
            {"role": "interpreter", "display_name": "Ida Interpreter"},
            token=staff,
        )
        assert reply.status == 201, reply.body
        answer: dict[str, Any] = reply.json()
        return answer

    link = invite("Blood pressure check-up")
    guest = new_page(browser, watch, "guest")
    guest.goto(link["url"])
    guest.locator(".call-screen").get_by_role("heading", name="You are number 1 in line").wait_for()
    assert "invite" not in guest.url  # the fragment is gone from the address bar
    shot(guest, "guest-ready")

    watch.expected.add(("/api/v1/invites/redeem", 404))
    again = new_page(browser, watch, "guest-again")
    again.goto(link["url"])  # single use: spent by the first guest
    again.get_by_role("heading", name="This link does not work any more").wait_for()
    shot(again, "guest-used")

    watch.expected.add(("/api/v1/invites/redeem", 409))
    early = invite("Medication review")
    again.goto(early["url"])  # only the fragment changes: the page notices and redeems it
    again.get_by_role("heading", name="Not open yet").wait_for()
    opens = local_hhmm(by_title["Medication review"]["join_opens_at"])
    assert f"opens at {opens}" in again.locator("main").inner_text()
    assert again.get_by_role("button", name="Try again").is_visible()
    shot(again, "guest-early")
    watch.assert_never_in_urls(link["token"], early["token"])


RESEND_CHECK = """async () => {
  const { Signaling } = await import("/static/js/signaling.js");
  const sent = [];
  const s = new Signaling({ url: "/ws", token: "t" });
  s.state = "open";
  s._ws = { readyState: WebSocket.OPEN, send: (text) => sent.push(JSON.parse(text)) };
  s.send({ type: "offer", to: "p_b", sdp: "v=0" });
  s.send({ type: "chat", text: "hi", id: "c1" });
  const refused = [];
  s.on("error", (m) => refused.push(m.ref));
  s._receive({ type: "error", code: "unavailable", ref: sent[0].id });  // Redis was away
  s._receive({ type: "error", code: "unavailable", ref: "c1" });  // not a relay: the app's
  const before = sent.length;
  await new Promise((done) => setTimeout(done, 400));
  for (let n = 0; n < 5; n++) s._receive({ type: "error", code: "unavailable", ref: sent[0].id });
  return { first: sent[0], again: sent[before], before, refused, relays: sent.length };
}"""


def test_the_browser_sends_a_relayed_message_again_when_redis_did_not_take_it(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    """static/js/signaling.js in Chromium: an offer refused with ``unavailable`` goes out again
    (same id) after a pause; a refused chat is the app's to handle; it is given up after the
    last try."""
    broker = start_demo(broker_launcher)
    page = new_page(browser, watch, "resend")
    page.goto(broker.url + "/")
    got = page.evaluate(RESEND_CHECK)
    assert got["first"] == {"type": "offer", "to": "p_b", "sdp": "v=0", "id": got["first"]["id"]}
    assert got["before"] == 2  # nothing sent again at once
    assert got["again"] == got["first"]  # the same message, the same id, after the pause
    assert got["refused"][0] == "c1"  # the chat's refusal reached the app
    # one resend is used; four more are allowed, so the fifth refusal reaches the app
    assert got["refused"][1:] == [got["first"]["id"]]


RESUME_TOKEN_CHECK = """async () => {
  const { Signaling } = await import("/static/js/signaling.js");
  const s = new Signaling({ url: "/ws", token: "access-token", idle: true });
  s.peerId = "peer-tv";
  s.resumeToken = "token-of-the-idle-connection";
  s._receive({ seq: 1, type: "incoming-call", session_id: "ses_1" });
  s._receive({ seq: 2, type: "joined", session_id: "ses_1", peers: [] });
  const token = { seq: 0, type: "resume-token", resume_token: "token-of-the-call" };
  s._receive({ ...token, session_id: "ses_1" });
  const hellos = [];
  const Real = window.WebSocket;
  window.WebSocket = class {
    constructor() { setTimeout(() => this.onopen(), 0); }
    send(text) { hellos.push(JSON.parse(text)); }
    close() {}
  };
  try {
    s._connect(s.inSession).catch(() => {});
    await new Promise((done) => setTimeout(done, 100));
  } finally {
    window.WebSocket = Real;
  }
  return { hello: hellos[0], sessionId: s.sessionId };
}"""


def test_the_browser_resumes_a_call_taken_on_an_idle_connection_with_its_token(
    browser: Any, broker_launcher: BrokerLauncher, watch: Watch
) -> None:
    """static/js/signaling.js in Chromium: after ``accept`` on an idle connection the
    ``resume-token`` message replaces the welcome's token, so the next hello resumes the peer
    in the call (the server side: tests/signaling/test_ws.py)."""
    broker = start_demo(broker_launcher)
    page = new_page(browser, watch, "resume-token")
    page.goto(broker.url + "/")
    got = page.evaluate(RESUME_TOKEN_CHECK)
    assert got["sessionId"] == "ses_1"
    assert got["hello"]["resume"] == {
        "peer_id": "peer-tv",
        "token": "token-of-the-call",
        "last_seq": 2,
    }
