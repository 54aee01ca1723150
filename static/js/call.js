// The call screen. For now a placeholder: it shows that the join grant arrived and at which
// quality the call will run. The signaling client replaces the body of startCall.

import { formatTime, h, mount, qualityDetail, qualityName } from "./ui.js";

const ROLE_NAMES = {
  host: "the host",
  patient: "the patient",
  family: "a family member",
  interpreter: "an interpreter",
  guest: "a guest",
};

/**
 * Start the call for a join grant (the answer of POST /sessions/{id}/join or
 * /invites/redeem). `container` defaults to the page's #call element. Returns the panel.
 *
 * The grant's join_token is handed on to signaling as it is; it is never shown or logged.
 */
export function startCall(grant, container = document.getElementById("call")) {
  // call UI: see signaling issue. Connect to grant.signaling_url with grant.join_token
  // (hello), use grant.ice_servers, and cap the bitrate at grant.quality.max_kbps.
  const closes = new Date(grant.join_closes_at);
  const panel = h(
    "section",
    { class: "call-panel", "aria-labelledby": "call-heading", tabindex: "-1" },
    h("h2", { id: "call-heading" }, "Ready: signaling connects here"),
    h(
      "p",
      { class: "call-quality" },
      h("span", { class: "badge badge-quality" }, qualityName(grant.quality)),
      " ",
      qualityDetail(grant.quality),
    ),
    h(
      "p",
      {},
      `You join as ${ROLE_NAMES[grant.role] || grant.role}. You can join until `,
      h("time", { datetime: grant.join_closes_at }, formatTime(closes)),
      ".",
    ),
    h("p", { class: "hint" }, "The video call itself is being built; this is where it will start."),
  );
  if (container) {
    const leave = h("button", { type: "button", class: "button" }, "Close");
    leave.addEventListener("click", () => {
      container.hidden = true;
      container.replaceChildren();
    });
    panel.append(h("div", { class: "actions" }, leave));
    mount(container, panel);
    container.hidden = false;
    panel.focus();
  }
  return panel;
}
