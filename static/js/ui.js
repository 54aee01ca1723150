// Small DOM and formatting helpers shared by every page. Text always goes in as text nodes
// (never innerHTML), so names and titles from the server cannot inject markup.

/** h("button", {class: "big", onclick: fn}, "Join") -> an element. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `node`. */
export function mount(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

/**
 * A polite live region for messages. kind: "info", "ok" or "error" (errors are announced
 * assertively).
 */
export function notice(node, text, kind = "info") {
  node.className = `notice notice-${kind}`;
  node.setAttribute("role", kind === "error" ? "alert" : "status");
  node.hidden = !text;
  node.textContent = text || "";
}

export function messageBox() {
  const node = h("p", { class: "notice", role: "status", hidden: true });
  return node;
}

let uid = 0;
/** A unique id for label/aria wiring. */
export function newId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form field: returns {row, input}. */
export function field(label, attrs = {}, hint = "") {
  const id = attrs.id || newId();
  const hintId = hint ? `${id}-hint` : undefined;
  const tag = attrs.tag || "input";
  const { tag: _ignored, options, ...rest } = attrs;
  const input = h(tag, { id, "aria-describedby": hintId, ...rest });
  if (tag === "select") {
    for (const [value, text] of options || []) input.append(h("option", { value }, text));
  }
  const row = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    input,
  );
  return { row, input };
}

// time

// 24-hour clocks read best as 09:05; 12-hour ones as 9:05 AM.
const twelveHour = ["h11", "h12"].includes(
  new Intl.DateTimeFormat(undefined, { hour: "numeric" }).resolvedOptions().hourCycle,
);
const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: twelveHour ? "numeric" : "2-digit",
  minute: "2-digit",
});
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  day: "numeric",
  month: "long",
});

function dayStart(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

export function formatTime(date) {
  return timeFormat.format(date);
}

/** "Today", "Tomorrow", or "Thursday 26 November", in the browser's time zone. */
export function formatDay(date, now = new Date()) {
  const days = Math.round((dayStart(date) - dayStart(now)) / 86400000);
  if (days === 0) return "Today";
  if (days === 1) return "Tomorrow";
  if (days === -1) return "Yesterday";
  return dayFormat.format(date);
}

/** "14:30" today, "14:30 tomorrow", or "14:30 on Friday 27 November". */
export function formatWhen(date, now = new Date()) {
  const day = formatDay(date, now);
  if (day === "Today") return formatTime(date);
  if (day === "Tomorrow" || day === "Yesterday") return `${formatTime(date)} ${day.toLowerCase()}`;
  return `${formatTime(date)} on ${day}`;
}

export function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/** A datetime-local input's value for `date` (local wall-clock time, minutes). */
export function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

/** A datetime-local value (browser zone) as a Date, or null. */
export function fromLocalInput(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// quality

const QUALITY_NAMES = { sd: "SD", hd: "HD", fullhd: "Full HD" };

export function qualityName(profile) {
  return QUALITY_NAMES[profile?.name] || String(profile?.name || "").toUpperCase();
}

/** "1280×720, 30 fps, up to 2.5 Mbit/s" */
export function qualityDetail(profile) {
  const mbit = (profile.max_kbps / 1000).toLocaleString(undefined, { maximumFractionDigits: 1 });
  return `${profile.width}×${profile.height}, ${profile.frame_rate} fps, up to ${mbit} Mbit/s`;
}

// keyboard and remote-control navigation

const FOCUSABLE = "button:not([disabled]), a[href], input:not([disabled]), select, textarea";

/**
 * Arrow keys move the focus between the focusable things inside `root`, in reading order
 * (Up/Left: previous, Down/Right: next); Enter activates buttons as usual. Text inputs keep
 * Left/Right for the caret.
 */
export function arrowNavigation(root) {
  root.addEventListener("keydown", (event) => {
    const keys = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1 };
    const step = keys[event.key];
    if (!step || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    const typing =
      target instanceof HTMLTextAreaElement ||
      target instanceof HTMLSelectElement ||
      (target instanceof HTMLInputElement && !["button", "checkbox", "radio"].includes(target.type));
    if (typing && (event.key === "ArrowLeft" || event.key === "ArrowRight")) return;
    if (target instanceof HTMLSelectElement) return;
    const items = [...root.querySelectorAll(FOCUSABLE)].filter(
      (n) => n.offsetParent !== null && !n.closest("[inert]"),
    );
    if (!items.length) return;
    const at = items.indexOf(document.activeElement);
    const next = at === -1 ? 0 : Math.min(items.length - 1, Math.max(0, at + step));
    items[next].focus();
    items[next].scrollIntoView({ block: "nearest" });
    event.preventDefault();
  });
}

/**
 * Make everything on the page except `node` inert (not focusable, hidden from screen
 * readers), as for a full-screen dialog. Returns a function that undoes it.
 */
export function isolate(node) {
  const changed = [];
  for (let at = node; at && at !== document.body && at.parentElement; at = at.parentElement) {
    for (const sibling of at.parentElement.children) {
      if (sibling === at || sibling.inert || ["SCRIPT", "STYLE"].includes(sibling.tagName)) continue;
      sibling.inert = true;
      changed.push(sibling);
    }
  }
  return () => {
    for (const sibling of changed) sibling.inert = false;
  };
}

/** Download a Blob under `filename` through a short-lived object URL. */
export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
