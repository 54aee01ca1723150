// /join#invite=<token>: a guest's link. The token is read from the fragment (browsers never
// send fragments to a server), removed from the address bar, and only ever sent in the body
// of POST /api/v1/invites/redeem.

import { call, explain } from "./api.js";
import { startCall } from "./call.js";
import { formatWhen, h, mount } from "./ui.js";

const INVITE_KEY = "citycall.invite";
const GRANT_KEY = "citycall.guest";
const app = document.getElementById("app");
let retryTimer = null;

/** The invite token: from the link's fragment (then forgotten by the URL), or this tab. */
function inviteToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromLink = fragment.get("invite");
  if (fromLink) {
    sessionStorage.setItem(INVITE_KEY, fromLink);
    sessionStorage.removeItem(GRANT_KEY); // a new link: redeem it, not an older grant
    history.replaceState(null, "", location.pathname);
    return fromLink;
  }
  return sessionStorage.getItem(INVITE_KEY);
}

/** A grant this tab already got (an invite may be single-use; a reload must not spend it). */
function savedGrant() {
  try {
    const grant = JSON.parse(sessionStorage.getItem(GRANT_KEY) || "null");
    if (grant && Date.parse(grant.join_closes_at) > Date.now()) return grant;
  } catch {
    // fall through
  }
  sessionStorage.removeItem(GRANT_KEY);
  return null;
}

function show(title, text, { retryAt = null, alert = true } = {}) {
  const parts = [
    h("h1", { id: "join-heading" }, title),
    h("p", { class: "notice notice-" + (alert ? "error" : "info"), role: alert ? "alert" : "status" }, text),
  ];
  if (retryAt) {
    const again = h("button", { type: "button", class: "button primary" }, "Try again");
    again.addEventListener("click", () => redeem());
    parts.push(h("div", { class: "actions" }, again));
    // Try by ourselves when the window opens (timers beyond ~24 days overflow: cap them).
    const delay = Math.min(Math.max(retryAt - Date.now() + 1000, 1000), 2 ** 31 - 1);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => redeem(), delay);
  }
  mount(app, h("section", { class: "card", "aria-labelledby": "join-heading" }, ...parts));
}

let busy = false;

async function redeem() {
  if (busy) return;
  const token = inviteToken();
  if (!token) {
    show(
      "This link is incomplete",
      "Open the whole link from your invitation. If it still does not work, ask for a new link.",
    );
    return;
  }
  busy = true;
  clearTimeout(retryTimer);
  mount(app, h("p", { class: "notice", role: "status" }, "Opening your invitation…"));
  try {
    const grant = await call("POST", "/api/v1/invites/redeem", { json: { token } });
    sessionStorage.setItem(GRANT_KEY, JSON.stringify(grant));
    sessionStorage.removeItem(INVITE_KEY);
    welcome(grant);
  } catch (error) {
    explainProblem(error);
  } finally {
    busy = false;
  }
}

function welcome(grant) {
  mount(app, h("h1", { class: "visually-hidden" }, "Your call"), h("div", { id: "call", class: "call-area" }));
  startCall(grant, document.getElementById("call"));
}

function explainProblem(error) {
  const p = error.problem || {};
  if (error.code === "invalid_invite" || error.status === 422) {
    sessionStorage.removeItem(INVITE_KEY);
    show(
      "This link does not work any more",
      "It may have expired, been used already, or been withdrawn. Ask the person who invited you for a new link.",
    );
  } else if (error.code === "outside_join_window" && p.opens_at) {
    const opens = new Date(p.opens_at);
    if (opens.getTime() > Date.now()) {
      show(
        "Not open yet",
        `This call opens at ${formatWhen(opens)}. Keep this page open: it lets you in then.`,
        { retryAt: opens.getTime(), alert: false },
      );
    } else {
      sessionStorage.removeItem(INVITE_KEY);
      show("This call is over", "The time to join has passed.");
    }
  } else if (error.code === "session_cancelled") {
    sessionStorage.removeItem(INVITE_KEY);
    show("This call was cancelled", "Ask the person who invited you what happens next.");
  } else if (error.code === "session_fulfilled" || error.code === "session_noshow") {
    sessionStorage.removeItem(INVITE_KEY);
    show("This call is over", "The time to join has passed.");
  } else {
    show("Could not open your invitation", explain(error), { retryAt: Date.now() + 15000 });
  }
}

// Another link pasted into this tab's address bar changes only the fragment.
window.addEventListener("hashchange", () => {
  if (location.hash.includes("invite=")) redeem();
});

const grant = location.hash.includes("invite=") ? null : savedGrant();
if (grant) welcome(grant);
else redeem();
