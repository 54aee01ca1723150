// /tv: the TV's pairing screen (RFC 8628 device flow) and, once paired, its sessions.
// Everything works with a remote control: arrow keys move the focus, Enter presses.

import { ApiError, Session, call } from "./api.js";
import { startCall } from "./call.js";
import { Ringer } from "./ring.js";
import { SessionList } from "./sessions.js";
import { arrowNavigation, h, mount, notice } from "./ui.js";

const CLIENT_ID = "tv";
const GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code";
const RELOAD_MS = 60000;

const session = new Session("citycall.tv");
const app = document.getElementById("app");
const callArea = document.getElementById("call");
let run = 0; // bumps on every new pairing attempt, so stale timers stop themselves
let list = null;
let reload = null;

const ringer = new Ringer(session, {
  onAnswer: (signaling, ring, info) =>
    enterCall(null, info, { signaling, accept: ring.session_id }),
  onMissed: (ring, name) => missed(`Missed call${name ? ` from ${name}` : ""}${ring.title ? `: ${ring.title}` : ""}.`),
  onDismissed: () => refocus(),
});

arrowNavigation(document.body);
session.onLoggedOut = () => startPairing();

function wait(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function startPairing() {
  const mine = ++run;
  stopList();
  ringer.stop();
  document.title = "Pair this TV – CityCall";
  mount(app, h("p", { class: "tv-status", role: "status" }, "Getting a pairing code…"));
  let code;
  for (let delay = 2000; ; delay = Math.min(delay * 2, 30000)) {
    try {
      code = await call("POST", "/api/v1/device/code", { json: { client_id: CLIENT_ID } });
      break;
    } catch {
      if (mine !== run) return;
      mount(
        app,
        h("p", { class: "tv-status", role: "alert" }, "Cannot reach CityCall. Trying again…"),
      );
      await wait(delay);
      if (mine !== run) return;
    }
  }
  showCode(code);
  poll(mine, code);
}

function showCode(code) {
  const status = h("p", { class: "tv-status", role: "status", id: "tv-wait" }, "Waiting for your phone…");
  mount(
    app,
    h(
      "section",
      { class: "tv-pair", "aria-labelledby": "tv-heading" },
      h("h1", { id: "tv-heading" }, "Pair this TV"),
      h(
        "ol",
        { class: "tv-steps" },
        h("li", {}, "On your phone, open ", h("strong", { class: "uri" }, code.verification_uri)),
        h("li", {}, "Type this code:"),
      ),
      h("p", { class: "user-code", "aria-label": `Code: ${spell(code.user_code)}` }, code.user_code),
      status,
    ),
  );
}

/** "B C D F, G H J K": a screen reader reads the code letter by letter. */
function spell(code) {
  return code.split("-").map((part) => part.split("").join(" ")).join(", ");
}

function setStatus(text, alert = false) {
  const node = document.getElementById("tv-wait");
  if (!node) return;
  node.textContent = text;
  node.setAttribute("role", alert ? "alert" : "status");
}

async function poll(mine, code) {
  let interval = Math.max(1, code.interval || 5);
  const expiresAt = Date.now() + code.expires_in * 1000;
  for (;;) {
    await wait(interval * 1000);
    if (mine !== run) return;
    if (Date.now() >= expiresAt) {
      startPairing(); // the code ran out: show a fresh one
      return;
    }
    let tokens;
    try {
      tokens = await call("POST", "/api/v1/device/token", {
        form: { grant_type: GRANT_TYPE, device_code: code.device_code, client_id: CLIENT_ID },
      });
    } catch (error) {
      if (mine !== run) return;
      if (!(error instanceof ApiError)) throw error;
      if (error.code === "authorization_pending") {
        setStatus("Waiting for your phone…");
        continue;
      }
      if (error.code === "slow_down") {
        const asked = Number(error.problem.interval);
        interval = Number.isFinite(asked) && asked > interval ? asked : interval + 5;
        continue;
      }
      if (error.code === "access_denied") {
        showDenied();
        return;
      }
      if (error.code === "expired_token" || error.code === "invalid_grant") {
        startPairing();
        return;
      }
      setStatus("Connection trouble. Still trying…", true);
      continue;
    }
    if (mine !== run) return;
    session.adopt(tokens);
    showPaired(tokens.user);
    return;
  }
}

function showDenied() {
  const again = h("button", { type: "button", class: "button primary huge" }, "Try again");
  again.addEventListener("click", () => startPairing());
  mount(
    app,
    h(
      "section",
      { class: "tv-pair", "aria-labelledby": "tv-heading" },
      h("h1", { id: "tv-heading" }, "Pairing was denied"),
      h("p", { class: "tv-status", role: "alert" }, "Someone said no on their phone. This TV is not paired."),
      h("div", { class: "actions" }, again),
    ),
  );
  again.focus();
}

function stopList() {
  list?.stop();
  list = null;
  clearInterval(reload);
  reload = null;
}

async function showPaired(user) {
  run += 1;
  stopList();
  document.title = "CityCall TV";
  const unpair = h("button", { type: "button", class: "button" }, "Unpair this TV");
  unpair.addEventListener("click", async () => {
    unpair.disabled = true;
    stopList();
    ringer.stop();
    await session.logout();
    startPairing();
  });
  list = new SessionList(session, {
    tv: true,
    heading: "Coming up",
    onJoined: (grant, s) => enterCall(grant, s),
  });
  mount(
    app,
    h(
      "div",
      { class: "tv-home" },
      h("header", { class: "tv-header" }, h("h1", {}, `Paired with ${user.display_name}`), unpair),
      missedNotice,
      list.node,
    ),
  );
  ringer.start();
  await list.load();
  (list.firstJoinable() || unpair).focus();
  reload = setInterval(async () => {
    // Re-render, and keep the focus on the same session's Join button when it was there.
    const card = document.activeElement?.closest?.("li.session");
    await list?.load();
    if (!list || document.activeElement !== document.body) return;
    const same = card && list.node.querySelector(`li.session[data-id="${CSS.escape(card.dataset.id)}"] button.join:not([disabled])`);
    (same || list.firstJoinable() || unpair).focus();
  }, RELOAD_MS);
}

const missedNotice = h("p", { class: "notice", role: "status", hidden: true });

function missed(text) {
  notice(missedNotice, text);
}

/** The call screen over the home screen: from a Join button, or an answered ring. */
function enterCall(grant, info, options = {}) {
  ringer.busy = true;
  notice(missedNotice, "");
  startCall(grant, callArea, {
    ...options,
    api: session,
    session: info,
    onFinish: () => {
      ringer.callEnded();
      list?.load();
    },
    onClose: () => refocus(),
  });
}

function refocus() {
  if (!list) return;
  const unpair = app.querySelector(".tv-header .button");
  (list.firstJoinable() || unpair)?.focus();
}

if (session.loggedIn && session.user) showPaired(session.user);
else startPairing();
