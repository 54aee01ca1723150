// The log-in form, used by the home page and the TV pairing page.

import { explain } from "./api.js";
import { field, h, messageBox, mount, notice } from "./ui.js";

/**
 * Render a log-in form into `container`; calls onLoggedIn(user) after a successful login.
 * `intro` is a sentence above the form.
 */
export function renderLogin(container, session, { onLoggedIn, intro = "" }) {
  const email = field("E-mail", {
    type: "email",
    name: "email",
    autocomplete: "username",
    required: true,
    autocapitalize: "none",
    spellcheck: "false",
  });
  const password = field("Password", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const message = messageBox();
  const submit = h("button", { type: "submit", class: "button primary" }, "Log in");
  let cooldown = null;

  const form = h(
    "form",
    { class: "card login", "aria-labelledby": "login-heading", novalidate: true },
    h("h2", { id: "login-heading" }, "Log in"),
    intro ? h("p", {}, intro) : null,
    email.row,
    password.row,
    message,
    h("div", { class: "actions" }, submit),
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!email.input.value.trim() || !password.input.value) {
      notice(message, "Please enter your e-mail address and your password.", "error");
      (email.input.value.trim() ? password.input : email.input).focus();
      return;
    }
    if (!email.input.checkValidity()) {
      notice(message, "That e-mail address does not look right.", "error");
      email.input.focus();
      return;
    }
    submit.disabled = true;
    notice(message, "Logging in…");
    try {
      const user = await session.login(email.input.value.trim(), password.input.value);
      password.input.value = "";
      notice(message, "");
      onLoggedIn(user);
    } catch (error) {
      notice(message, explain(error), "error");
      if (error.status === 429 && error.retryAfter) {
        // Keep the button off until the broker will listen again.
        clearTimeout(cooldown);
        cooldown = setTimeout(() => {
          submit.disabled = false;
        }, error.retryAfter * 1000);
        return;
      }
      submit.disabled = false;
      password.input.select();
      password.input.focus();
    }
  });

  mount(container, form);
  email.input.focus();
  return form;
}
