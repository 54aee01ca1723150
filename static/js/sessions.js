// "Your sessions": the list of upcoming sessions with Join, Add to calendar and Cancel.
// Used by the home page (phone, desktop) and the TV page (big buttons, no cancelling).

import { explain } from "./api.js";
import { startCall } from "./call.js";
import { download, formatDay, formatTime, formatWhen, h, mount, notice, qualityName } from "./ui.js";

const STATUS_NAMES = {
  booked: "Booked",
  "checked-in": "Someone is waiting",
  arrived: "In progress",
  fulfilled: "Finished",
  cancelled: "Cancelled",
  noshow: "Missed",
};
const ACTIVE = new Set(["booked", "checked-in", "arrived"]);
const TICK_MS = 15000;

/** "open", "early" (window not open yet), "closed", or "inactive" (cancelled, finished). */
export function joinState(session, now = Date.now()) {
  if (!ACTIVE.has(session.status)) return "inactive";
  if (now < Date.parse(session.join_opens_at)) return "early";
  if (now >= Date.parse(session.join_closes_at)) return "closed";
  return "open";
}

/** The sessions list for the signed-in person: fetch, render, keep the Join buttons current. */
export class SessionList {
  /**
   * options: tv (big TV layout, no cancel), onJoined(grant, session) (default: startCall),
   * heading (text of the list's heading).
   */
  constructor(session, options = {}) {
    this.api = session;
    this.options = options;
    this.items = [];
    this.cards = [];
    this.message = h("p", { class: "notice", role: "status", hidden: true });
    this.list = h("ul", { class: "sessions", "aria-labelledby": "sessions-heading" });
    this.node = h(
      "section",
      { class: "sessions-section", "aria-labelledby": "sessions-heading" },
      h("h2", { id: "sessions-heading" }, options.heading || "Your sessions"),
      this.message,
      this.list,
    );
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  async load() {
    const from = new Date(Date.now() - 3600 * 1000).toISOString();
    try {
      const answer = await this.api.get(`/api/v1/sessions?from=${encodeURIComponent(from)}`);
      this.items = answer.items
        .filter((s) => Date.parse(s.join_closes_at) > Date.now())
        .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
      this.render();
    } catch (error) {
      notice(this.message, `Could not load your sessions. ${explain(error)}`, "error");
    }
    return this.items;
  }

  render() {
    this.cards = this.items.map((s) => new SessionCard(s, this));
    mount(this.list, this.cards.map((c) => c.node));
    notice(this.message, this.items.length ? "" : "Nothing planned. New sessions show up here.");
    this.tick();
  }

  tick() {
    const now = Date.now();
    for (const card of this.cards) card.update(now);
  }

  /** The first Join button that can be pressed now (the TV focuses it). */
  firstJoinable() {
    return this.cards.map((c) => c.join).find((b) => !b.disabled) || null;
  }

  /** People seen in the listed sessions, other than me: [{id, name}] (for id pickers). */
  people(role = null) {
    const me = this.api.user?.id;
    const seen = new Map();
    for (const s of this.items) {
      for (const p of s.participants) {
        if (p.user_id === me || (role && p.role !== role)) continue;
        seen.set(p.user_id, p.display_name || p.user_id);
      }
    }
    return [...seen].map(([id, name]) => ({ id, name }));
  }
}

class SessionCard {
  constructor(session, list) {
    this.s = session;
    this.list = list;
    const tv = Boolean(list.options.tv);
    const start = new Date(session.start);
    const end = new Date(session.end);
    const me = list.api.user?.id;
    const others = session.participants
      .filter((p) => p.user_id !== me)
      .map((p) => p.display_name || "a guest");
    const headingId = `session-${session.id}`;

    this.join = h(
      "button",
      { type: "button", class: `button primary join${tv ? " huge" : ""}`, "aria-describedby": `${headingId}-when` },
      "Join",
    );
    this.join.addEventListener("click", () => this.onJoin());
    this.opens = h("p", { class: "opens" });
    this.message = h("p", { class: "notice", role: "status", hidden: true });
    this.status = h("span", { class: `badge status status-${session.status}` });

    const actions = h("div", { class: "actions" }, this.join);
    if (!tv) {
      actions.append(
        h(
          "button",
          { type: "button", class: "button", onclick: () => this.onCalendar() },
          "Add to calendar",
        ),
      );
      this.cancel = h(
        "button",
        { type: "button", class: "button danger", onclick: () => this.askCancel() },
        "Cancel…",
      );
      actions.append(this.cancel);
    }
    this.confirm = h("div", { class: "confirm", hidden: true });

    this.node = h(
      "li",
      { class: "session", "aria-labelledby": headingId, dataset: { id: session.id } },
      h(
        "div",
        { class: "session-head" },
        h("h3", { id: headingId }, session.title),
        h(
          "div",
          { class: "badges" },
          this.status,
          h(
            "span",
            {
              class: "badge badge-quality",
              title: `${session.quality.width}×${session.quality.height}`,
            },
            qualityName(session.quality),
          ),
        ),
      ),
      h(
        "p",
        { class: "when", id: `${headingId}-when` },
        h("time", { datetime: session.start }, `${formatDay(start)}, ${formatTime(start)}`),
        " – ",
        h("time", { datetime: session.end }, formatTime(end)),
      ),
      others.length ? h("p", { class: "who" }, `With ${listOf(others)}`) : null,
      this.opens,
      actions,
      this.confirm,
      this.message,
    );
  }

  update(now) {
    const state = joinState(this.s, now);
    this.status.textContent = STATUS_NAMES[this.s.status] || this.s.status;
    this.status.className = `badge status status-${this.s.status}`;
    this.join.disabled = state !== "open" || this.busy === true;
    this.join.hidden = state === "inactive";
    this.join.classList.toggle("not-yet", state !== "open");
    if (this.cancel) this.cancel.hidden = !["booked", "checked-in"].includes(this.s.status);
    this.node.classList.toggle("inactive", state === "inactive" || state === "closed");
    const opens = new Date(this.s.join_opens_at);
    const text = {
      early: `Join opens at ${formatWhen(opens)}`,
      closed: "This session can no longer be joined",
      open: "",
      inactive: "",
    }[state];
    this.opens.textContent = text;
    this.opens.hidden = !text;
  }

  async onJoin() {
    this.busy = true;
    this.update(Date.now());
    notice(this.message, "Getting ready…");
    try {
      const grant = await this.list.api.post(`/api/v1/sessions/${encodeURIComponent(this.s.id)}/join`);
      notice(this.message, "");
      if (this.list.options.onJoined) this.list.options.onJoined(grant, this.s);
      else
        startCall(grant, undefined, {
          api: this.list.api,
          session: this.s,
          onFinish: () => this.list.load(),
        });
    } catch (error) {
      notice(this.message, joinProblem(error), "error");
    } finally {
      this.busy = false;
      this.update(Date.now());
    }
  }

  async onCalendar() {
    notice(this.message, "");
    try {
      const blob = await this.list.api.request(
        "GET",
        `/api/v1/sessions/${encodeURIComponent(this.s.id)}/calendar.ics`,
        { headers: { Accept: "text/calendar" } },
      );
      download(new Blob([blob], { type: "text/calendar" }), `${slug(this.s.title)}.ics`);
      notice(this.message, "Calendar file downloaded. Open it to add the session.", "ok");
    } catch (error) {
      notice(this.message, explain(error), "error");
    }
  }

  askCancel() {
    const yes = h("button", { type: "button", class: "button danger" }, "Yes, cancel it");
    const no = h("button", { type: "button", class: "button" }, "No, keep it");
    no.addEventListener("click", () => {
      this.confirm.hidden = true;
      this.cancel.focus();
    });
    yes.addEventListener("click", () => this.doCancel(yes));
    mount(
      this.confirm,
      h("p", {}, `Cancel “${this.s.title}”? Everyone in it will be told.`),
      h("div", { class: "actions" }, yes, no),
    );
    this.confirm.hidden = false;
    no.focus();
  }

  async doCancel(button) {
    button.disabled = true;
    try {
      const cancelled = await this.list.api.post(`/api/v1/sessions/${encodeURIComponent(this.s.id)}/cancel`);
      this.s = cancelled;
      this.confirm.hidden = true;
      this.update(Date.now());
      notice(this.message, "Cancelled.", "ok");
      this.message.focus?.();
    } catch (error) {
      button.disabled = false;
      notice(this.message, explain(error), "error");
    }
  }
}

export function joinProblem(error) {
  const p = error.problem || {};
  if (error.code === "outside_join_window" && p.opens_at) {
    const opens = new Date(p.opens_at);
    if (Date.now() < opens.getTime()) return `Not open yet: you can join from ${formatWhen(opens)}.`;
    return "This session can no longer be joined.";
  }
  if (error.code === "session_cancelled") return "This session was cancelled.";
  if (error.code === "session_fulfilled") return "This session has already ended.";
  if (error.code === "session_noshow") return "This session was missed and can no longer be joined.";
  return explain(error);
}

function listOf(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

function slug(text) {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "session";
}
