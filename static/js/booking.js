// Booking forms: "Book a check-up" (clinic staff), "Book a visit" (patients, from a
// clinician's free slots) and "Call someone" (family members, optionally every week).

import { explain } from "./api.js";
import {
  browserZone,
  field,
  formatDay,
  formatTime,
  formatWhen,
  fromLocalInput,
  h,
  messageBox,
  mount,
  newId,
  notice,
  toLocalInput,
} from "./ui.js";

const DURATIONS = [
  ["15", "15 minutes"],
  ["20", "20 minutes"],
  ["30", "30 minutes"],
  ["45", "45 minutes"],
  ["60", "1 hour"],
];
const QUALITIES = [
  ["hd", "HD (1280×720)"],
  ["sd", "SD (640×360), for slow connections"],
  ["fullhd", "Full HD (1920×1080)"],
];

/** The next quarter hour at least `minutes` from now, for a sensible default start. */
function nextQuarter(minutes = 30) {
  const d = new Date(Date.now() + minutes * 60000);
  d.setMinutes(Math.ceil(d.getMinutes() / 15) * 15, 0, 0);
  return d;
}

/** A collapsible section with a big summary line. */
function panel(title, ...body) {
  const id = newId("panel");
  return h(
    "details",
    { class: "card panel" },
    h("summary", { id }, title),
    h("div", { class: "panel-body", role: "group", "aria-labelledby": id }, ...body),
  );
}

const OTHER = "__other__";

/**
 * Pick one person: the people we know by name (from the listed sessions) in a list, or
 * "Someone else" with an account id typed in. value() is the chosen account id.
 */
function personPicker(label, people, preset = "") {
  const idAttrs = { autocomplete: "off", spellcheck: "false", autocapitalize: "none" };
  if (!people.length) {
    const only = field(`${label} (account id)`, { ...idAttrs, value: preset }, "An id like usr_…");
    return { node: only.row, value: () => only.input.value.trim(), focus: () => only.input.focus() };
  }
  const choice = field(label, {
    tag: "select",
    options: [...people.map((p) => [p.id, p.name]), [OTHER, "Someone else…"]],
  });
  const typed = field("Their account id", idAttrs, "An id like usr_…");
  typed.row.hidden = true;
  if (preset) choice.input.value = people.some((p) => p.id === preset) ? preset : OTHER;
  choice.input.addEventListener("change", () => {
    typed.row.hidden = choice.input.value !== OTHER;
    if (!typed.row.hidden) typed.input.focus();
  });
  return {
    node: h("div", {}, choice.row, typed.row),
    value: () => (choice.input.value === OTHER ? typed.input.value.trim() : choice.input.value),
    focus: () => (typed.row.hidden ? choice.input : typed.input).focus(),
  };
}

/** Pick several people: tick the ones we know, and/or type more account ids. */
function peoplePicker(legend, people) {
  const boxes = people.map((p) => {
    const id = newId("person");
    const box = h("input", { type: "checkbox", id, value: p.id });
    return { box, row: h("div", { class: "field check" }, box, h("label", { for: id }, p.name)) };
  });
  const typed = field(
    people.length ? "Someone else (account ids)" : "Their account ids",
    { autocomplete: "off", spellcheck: "false", autocapitalize: "none" },
    "Ids like usr_…; separate several with commas.",
  );
  const node = h(
    "fieldset",
    { class: "people" },
    h("legend", {}, legend),
    boxes.map((b) => b.row),
    typed.row,
  );
  const value = () => [
    ...boxes.filter((b) => b.box.checked).map((b) => b.box.value),
    ...typed.input.value
      .split(/[\s,]+/)
      .map((x) => x.trim())
      .filter(Boolean),
  ];
  return { node, value, focus: () => (boxes[0]?.box || typed.input).focus() };
}

function bookingProblem(error, list, onSuggestion) {
  const p = error.problem || {};
  if (error.code === "double_booked") {
    const me = list.api.user?.id;
    const known = new Map(list.people().map((x) => [x.id, x.name]));
    const names = String(p.user_ids || "")
      .split(",")
      .filter(Boolean)
      .sort((a, b) => (b === me) - (a === me))
      .map((id) => (id === me ? "You" : known.get(id) || "someone in it"));
    if (!names.length) return "Someone in it already has a session at that time. Pick another time.";
    const who = names.length === 1 ? names[0] : `${names.slice(0, -1).join(", ")} and ${names.at(-1)}`;
    const have = who === "You" || names.length > 1 ? "have" : "has";
    const text = `${who} already ${have} a session at that time. Pick another time.`;
    return text.charAt(0).toUpperCase() + text.slice(1);
  }
  if (error.code === "capacity_exceeded") {
    const starts = String(p.suggested_starts || "")
      .split(",")
      .filter(Boolean)
      .map((s) => new Date(s));
    if (starts.length && onSuggestion) {
      onSuggestion(starts);
      return "The video network is full at that time. Free times are listed below.";
    }
    return "The video network is full at that time. Try another time or a lower quality.";
  }
  return explain(error);
}

function suggestions(target, starts, onPick) {
  mount(
    target,
    h("p", {}, "Free times:"),
    h(
      "div",
      { class: "choices" },
      starts.slice(0, 6).map((d) =>
        h("button", { type: "button", class: "button", onclick: () => onPick(d) }, formatWhen(d)),
      ),
    ),
  );
  target.hidden = false;
}

/** Staff: book a check-up for a patient with a clinician. */
export function checkupForm(session, list) {
  const me = session.user;
  const hosts = list.people("host");
  if (me?.role === "clinician") hosts.unshift({ id: me.id, name: `You (${me.display_name})` });
  const title = field("Title", { value: "Check-up", required: true, maxlength: 200 });
  const patient = personPicker("Patient", list.people("patient"));
  const clinician = personPicker("Clinician", hosts, me?.role === "clinician" ? me.id : "");
  const start = field("Starts", { type: "datetime-local", required: true, value: toLocalInput(nextQuarter()) });
  const duration = field("Length", { tag: "select", options: DURATIONS });
  duration.input.value = "20";
  const quality = field("Video quality", { tag: "select", options: QUALITIES });
  const message = messageBox();
  const more = h("div", { hidden: true });
  const submit = h("button", { type: "submit", class: "button primary" }, "Book check-up");

  const form = h(
    "form",
    { novalidate: true },
    title.row,
    patient.node,
    clinician.node,
    start.row,
    duration.row,
    quality.row,
    message,
    more,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    more.hidden = true;
    const begins = fromLocalInput(start.input.value);
    if (!patient.value() || !clinician.value() || !begins) {
      notice(message, "Please fill in the patient, the clinician and the start time.", "error");
      return;
    }
    const ends = new Date(begins.getTime() + Number(duration.input.value) * 60000);
    submit.disabled = true;
    try {
      await session.post("/api/v1/sessions", {
        kind: "checkup",
        title: title.input.value.trim() || "Check-up",
        start: begins.toISOString(),
        end: ends.toISOString(),
        time_zone: browserZone(),
        patient_id: patient.value(),
        clinician_id: clinician.value(),
        quality: quality.input.value,
      });
      notice(message, `Booked for ${formatWhen(begins)}.`, "ok");
      await list.load();
    } catch (error) {
      notice(
        message,
        bookingProblem(error, list, (starts) =>
          suggestions(more, starts, (d) => {
            start.input.value = toLocalInput(d);
            more.hidden = true;
            submit.focus();
          }),
        ),
        "error",
      );
    } finally {
      submit.disabled = false;
    }
  });
  return panel("Book a check-up", form);
}

/** Patients: pick a clinician, see their free slots, book one. */
export function visitForm(session, list) {
  const clinician = personPicker("Clinician", list.people("host"));
  const find = h("button", { type: "submit", class: "button primary" }, "Show free times");
  const message = messageBox();
  const results = h("div", { class: "slots", hidden: true });
  let chosen = null;

  const form = h(
    "form",
    { novalidate: true },
    clinician.node,
    h("div", { class: "actions" }, find),
    message,
  );

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = clinician.value();
    results.hidden = true;
    if (!id) {
      notice(message, "Please choose a clinician, or type their account id.", "error");
      clinician.focus();
      return;
    }
    find.disabled = true;
    notice(message, "Looking for free times…");
    try {
      const answer = await session.get(`/api/v1/clinicians/${encodeURIComponent(id)}/slots`);
      if (!answer.items.length) {
        notice(message, "No free times in the next 7 days.", "info");
      } else {
        notice(message, "");
        showSlots(id, answer.items);
      }
    } catch (error) {
      const text =
        error.status === 404 ? "No clinician with that id takes bookings." : explain(error);
      notice(message, text, "error");
    } finally {
      find.disabled = false;
    }
  });

  function showSlots(clinicianId, slots) {
    const byDay = new Map();
    for (const slot of slots) {
      const day = formatDay(new Date(slot.start));
      if (!byDay.has(day)) byDay.set(day, []);
      byDay.get(day).push(slot);
    }
    const day = field("Day", { tag: "select", options: [...byDay.keys()].map((d) => [d, d]) });
    const times = h("div", { class: "choices", role: "group", "aria-label": "Free times" });
    const what = field("What is it about? (optional)", { maxlength: 200 });
    const book = h("button", { type: "button", class: "button primary", disabled: true }, "Book");
    const result = messageBox();
    chosen = null;

    const fill = () => {
      chosen = null;
      book.disabled = true;
      book.textContent = "Book";
      mount(
        times,
        byDay.get(day.input.value).map((slot) => {
          const b = h(
            "button",
            { type: "button", class: "button slot", "aria-pressed": "false" },
            formatTime(new Date(slot.start)),
          );
          b.addEventListener("click", () => {
            for (const other of times.querySelectorAll("button")) {
              other.setAttribute("aria-pressed", "false");
            }
            b.setAttribute("aria-pressed", "true");
            chosen = slot;
            book.disabled = false;
            const label = day.input.value;
            const on = ["Today", "Tomorrow"].includes(label) ? label.toLowerCase() : `on ${label}`;
            book.textContent = `Book ${on} at ${formatTime(new Date(slot.start))}`;
          });
          return b;
        }),
      );
    };
    day.input.addEventListener("change", fill);
    book.addEventListener("click", async () => {
      if (!chosen) return;
      book.disabled = true;
      try {
        const body = { clinician_id: clinicianId, start: chosen.start };
        if (what.input.value.trim()) body.title = what.input.value.trim();
        const booked = await session.post("/api/v1/slots/book", body);
        results.hidden = true;
        notice(message, `Booked: ${booked.title}, ${formatWhen(new Date(booked.start))}.`, "ok");
        await list.load();
      } catch (error) {
        notice(result, bookingProblem(error, list), "error");
        book.disabled = false;
      }
    });
    mount(results, day.row, times, what.row, h("div", { class: "actions" }, book), result);
    results.hidden = false;
    fill();
  }

  return panel("Book a visit", form, results);
}

/** Family members: a call with people, once or every week. */
export function callForm(session, list) {
  const who = peoplePicker("Who to call", list.people());
  const title = field("Title", { value: "Family call", required: true, maxlength: 200 });
  const start = field("Starts", { type: "datetime-local", required: true, value: toLocalInput(nextQuarter()) });
  const duration = field("Length", { tag: "select", options: DURATIONS });
  duration.input.value = "30";
  const weeklyId = newId("weekly");
  const weekly = h("input", { type: "checkbox", id: weeklyId });
  const count = field("How many weeks", { type: "number", min: 2, max: 52, value: 4, inputmode: "numeric" });
  count.row.hidden = true;
  weekly.addEventListener("change", () => {
    count.row.hidden = !weekly.checked;
  });
  const message = messageBox();
  const submit = h("button", { type: "submit", class: "button primary" }, "Book the call");

  const form = h(
    "form",
    { novalidate: true },
    who.node,
    title.row,
    start.row,
    duration.row,
    h("div", { class: "field check" }, weekly, h("label", { for: weeklyId }, "Repeat every week")),
    count.row,
    message,
    h("div", { class: "actions" }, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ids = [...new Set(who.value())];
    const begins = fromLocalInput(start.input.value);
    if (!ids.length || !begins) {
      notice(message, "Please say who to call and when.", "error");
      return;
    }
    const weeks = Math.round(Number(count.input.value));
    if (weekly.checked && !(weeks >= 2 && weeks <= 52)) {
      notice(message, "Weeks must be a number from 2 to 52.", "error");
      count.input.focus();
      return;
    }
    const body = {
      kind: "family_call",
      title: title.input.value.trim() || "Family call",
      start: begins.toISOString(),
      end: new Date(begins.getTime() + Number(duration.input.value) * 60000).toISOString(),
      time_zone: browserZone(),
      participant_ids: ids,
    };
    if (weekly.checked) body.recurrence = `FREQ=WEEKLY;COUNT=${weeks}`;
    submit.disabled = true;
    try {
      const booked = await session.post("/api/v1/sessions", body);
      const n = booked.items.length;
      notice(
        message,
        n > 1 ? `Booked ${n} weekly calls from ${formatWhen(begins)}.` : `Booked for ${formatWhen(begins)}.`,
        "ok",
      );
      await list.load();
    } catch (error) {
      notice(message, bookingProblem(error, list), "error");
    } finally {
      submit.disabled = false;
    }
  });
  return panel("Call someone", form);
}
