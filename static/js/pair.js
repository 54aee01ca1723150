// /pair: approve (or deny) a TV from a logged-in phone, with the code the TV shows.

import { Session, explain } from "./api.js";
import { renderLogin } from "./login.js";
import { field, h, messageBox, mount, notice } from "./ui.js";

const session = new Session();
const app = document.getElementById("app");
const account = document.getElementById("account");
const codeFromLink = new URLSearchParams(location.search).get("code") || "";

session.onLoggedOut = () => showLogin("Your login has ended. Please log in again.");

function showLogin(intro = "To pair a TV with your account, log in first.") {
  account.replaceChildren();
  renderLogin(app, session, { onLoggedIn: showCodeForm, intro });
}

function showAccount(user) {
  const out = h("button", { type: "button", class: "button small" }, "Log out");
  out.addEventListener("click", async () => {
    out.disabled = true;
    await session.logout();
    showLogin("You are logged out.");
  });
  mount(account, h("span", { class: "who-am-i" }, h("strong", {}, user.display_name)), out);
}

/** A user code as the TV shows it: upper case, letters only, XXXX-XXXX. */
function tidy(code) {
  const letters = code.toUpperCase().replace(/[^A-Z0-9]/g, "");
  return letters.length === 8 ? `${letters.slice(0, 4)}-${letters.slice(4)}` : code.trim().toUpperCase();
}

function showCodeForm(user = session.user) {
  showAccount(user);
  const code = field(
    "Code shown on the TV",
    {
      value: tidy(codeFromLink),
      required: true,
      autocomplete: "off",
      autocapitalize: "characters",
      spellcheck: "false",
      maxlength: 32,
      class: "code-input",
    },
    "Eight letters, like BCDF-GHJK.",
  );
  const message = messageBox();
  const next = h("button", { type: "submit", class: "button primary" }, "Continue");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "pair-heading", novalidate: true },
    h("h2", { id: "pair-heading" }, "Pair a TV"),
    h("p", {}, "Type the code you see on the TV screen."),
    code.row,
    message,
    h("div", { class: "actions" }, next),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = tidy(code.input.value);
    if (!value) {
      notice(message, "Please type the code shown on the TV.", "error");
      code.input.focus();
      return;
    }
    next.disabled = true;
    notice(message, "Checking the code…");
    try {
      const pending = await session.get(
        `/api/v1/device/pairing?user_code=${encodeURIComponent(value)}`,
      );
      showDecision(pending);
    } catch (error) {
      next.disabled = false;
      notice(message, codeProblem(error), "error");
      code.input.select();
      code.input.focus();
    }
  });
  mount(app, form);
  code.input.focus();
}

function codeProblem(error) {
  if (error.status === 404) {
    return "That code is not valid or has expired. Check the code on the TV; if it changed, type the new one.";
  }
  if (error.code === "already_decided") return "This TV was already approved or denied.";
  if (error.status === 403) return "This account cannot pair TVs.";
  return explain(error);
}

function showDecision(pending) {
  const message = messageBox();
  const approve = h("button", { type: "button", class: "button primary" }, "Approve");
  const deny = h("button", { type: "button", class: "button danger" }, "Deny");
  const decide = async (yes) => {
    approve.disabled = true;
    deny.disabled = true;
    notice(message, yes ? "Approving…" : "Denying…");
    try {
      await session.post("/api/v1/device/pairing", { user_code: pending.user_code, approve: yes });
      showDone(yes);
    } catch (error) {
      notice(message, codeProblem(error), "error");
      const again = h("button", { type: "button", class: "button" }, "Enter a code again");
      again.addEventListener("click", () => showCodeForm());
      message.after(h("div", { class: "actions" }, again));
    }
  };
  approve.addEventListener("click", () => decide(true));
  deny.addEventListener("click", () => decide(false));
  const card = h(
    "section",
    { class: "card", "aria-labelledby": "decide-heading" },
    h("h2", { id: "decide-heading" }, `Pair device ‘${pending.client_id}’?`),
    h(
      "p",
      {},
      "Approve only if this is your TV and the code ",
      h("strong", { class: "code" }, pending.user_code),
      " is on its screen. It will see your sessions and can join your calls.",
    ),
    message,
    h("div", { class: "actions" }, approve, deny),
  );
  mount(app, card);
  approve.focus();
}

function showDone(approved) {
  const text = approved
    ? "Done: the TV is paired with your account. It shows your sessions in a few seconds."
    : "Denied: the TV was not paired.";
  const again = h("button", { type: "button", class: "button" }, "Pair another TV");
  again.addEventListener("click", () => showCodeForm());
  const message = h("p", { class: `notice notice-${approved ? "ok" : "info"}`, role: "status" }, text);
  mount(
    app,
    h(
      "section",
      { class: "card", "aria-labelledby": "done-heading" },
      h("h2", { id: "done-heading" }, approved ? "TV paired" : "Not paired"),
      message,
      h("div", { class: "actions" }, again, h("a", { class: "button", href: "/" }, "Your sessions")),
    ),
  );
  again.focus();
}

if (session.loggedIn && session.user) showCodeForm(session.user);
else showLogin();
