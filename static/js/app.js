// The home page: log in, "Your sessions", and the booking form that fits the person's role.

import { Session } from "./api.js";
import { callForm, checkupForm, visitForm } from "./booking.js";
import { renderLogin } from "./login.js";
import { SessionList } from "./sessions.js";
import { h, mount } from "./ui.js";

const ROLE_NAMES = {
  admin: "clinic admin",
  clinician: "clinician",
  patient: "patient",
  family: "family member",
};

const session = new Session();
const app = document.getElementById("app");
const account = document.getElementById("account");
const callArea = document.getElementById("call");
let list = null;

session.onLoggedOut = () => showLogin("Your login has ended. Please log in again.");

function showLogin(intro = "") {
  list?.stop();
  list = null;
  account.replaceChildren();
  callArea.hidden = true;
  callArea.replaceChildren();
  document.title = "Log in – CityCall";
  renderLogin(app, session, { onLoggedIn: showHome, intro });
}

async function logout(button) {
  button.disabled = true;
  await session.logout();
  showLogin("You are logged out.");
}

async function showHome(user) {
  document.title = "Your sessions – CityCall";
  const out = h("button", { type: "button", class: "button small" }, "Log out");
  out.addEventListener("click", () => logout(out));
  mount(
    account,
    h(
      "span",
      { class: "who-am-i" },
      h("strong", {}, user.display_name),
      " ",
      h("span", { class: "role" }, `(${ROLE_NAMES[user.role] || user.role})`),
    ),
    out,
  );
  list?.stop();
  list = new SessionList(session);
  const forms = h("div", { class: "forms" });
  mount(app, list.node, forms);
  await list.load();
  if (!session.loggedIn) return;
  if (user.role === "admin" || user.role === "clinician") forms.append(checkupForm(session, list));
  if (user.role === "patient") forms.append(visitForm(session, list));
  if (user.role === "family") forms.append(callForm(session, list));
}

if (session.loggedIn && session.user) showHome(session.user);
else showLogin();
