// The REST client: JSON in and out, RFC 9457 problems as ApiError, tokens in sessionStorage.
//
// Tokens live only in sessionStorage (one tab, gone when it closes) and only ever travel in
// the Authorization header or a JSON body: never in a URL, never in a log line.

const JSON_TYPE = "application/json";

/** One failed request: the problem details the broker sent, or a network failure. */
export class ApiError extends Error {
  constructor(status, problem = {}, retryAfter = null) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status; // 0: the broker could not be reached
    this.code = problem.code || problem.error || (status ? "http_error" : "network");
    this.detail = problem.detail || "";
    this.problem = problem;
    this.retryAfter = retryAfter; // seconds, from Retry-After (429)
  }
}

async function problemOf(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }
  return {};
}

function retryAfterOf(response) {
  const raw = response.headers.get("Retry-After");
  if (!raw) return null;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const when = Date.parse(raw);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

/** A plain request without tokens; answers parsed JSON, null for 204, or throws ApiError. */
export async function send(method, path, { json, form, headers = {} } = {}) {
  const init = { method, headers: { Accept: JSON_TYPE, ...headers }, credentials: "omit" };
  if (json !== undefined) {
    init.headers["Content-Type"] = JSON_TYPE;
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: "network" });
  }
  return response;
}

async function parse(response) {
  if (!response.ok) {
    throw new ApiError(response.status, await problemOf(response), retryAfterOf(response));
  }
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

/** Anonymous JSON call (login, device flow, invite redemption). */
export async function call(method, path, options) {
  return parse(await send(method, path, options));
}

/**
 * A logged-in client. `namespace` keeps separate logins apart in one browser (the TV page
 * stores its pairing under its own name, so it never picks up a phone login by accident).
 */
export class Session {
  constructor(namespace = "citycall") {
    this.key = namespace;
    this.onLoggedOut = null; // called when the refresh token no longer works
    this._refreshing = null;
  }

  _load() {
    try {
      return JSON.parse(sessionStorage.getItem(this.key) || "null");
    } catch {
      return null;
    }
  }

  _save(state) {
    if (state) sessionStorage.setItem(this.key, JSON.stringify(state));
    else sessionStorage.removeItem(this.key);
  }

  get user() {
    return this._load()?.user ?? null;
  }

  get loggedIn() {
    return Boolean(this._load()?.access);
  }

  /** Keep a TokenResponse (from login, refresh or the TV's device token). */
  adopt(tokens) {
    this._save({
      access: tokens.access_token,
      refresh: tokens.refresh_token,
      user: tokens.user,
    });
    return tokens.user;
  }

  async login(email, password) {
    return this.adopt(await call("POST", "/api/v1/auth/login", { json: { email, password } }));
  }

  async logout() {
    const state = this._load();
    this._save(null);
    if (state?.refresh) {
      try {
        await call("POST", "/api/v1/auth/logout", { json: { refresh_token: state.refresh } });
      } catch {
        // Logged out here either way; the refresh token expires on its own.
      }
    }
  }

  /** Trade the refresh token for a new pair once, however many requests are waiting. */
  _refresh() {
    if (!this._refreshing) {
      this._refreshing = (async () => {
        const state = this._load();
        if (!state?.refresh) return false;
        try {
          const tokens = await call("POST", "/api/v1/auth/refresh", {
            json: { refresh_token: state.refresh },
          });
          this.adopt(tokens);
          return true;
        } catch (error) {
          if (error.status === 0) throw error; // offline: keep the tokens and try later
          this._save(null);
          return false;
        }
      })().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  /** An authenticated request; a 401 refreshes the tokens and tries once more. */
  async request(method, path, options = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const access = this._load()?.access;
      if (!access) throw this._expired();
      const headers = { ...(options.headers || {}), Authorization: `Bearer ${access}` };
      const response = await send(method, path, { ...options, headers });
      if (response.status !== 401 || attempt > 0) return parse(response);
      if (!(await this._refresh())) throw this._expired();
    }
  }

  _expired() {
    this._save(null);
    if (this.onLoggedOut) queueMicrotask(() => this.onLoggedOut());
    return new ApiError(401, { code: "session_expired", detail: "Please log in again." });
  }

  /** A current access token (refreshed when needed), e.g. for the TV's ringing socket. */
  async freshAccess() {
    await this.get("/api/v1/me");
    const access = this._load()?.access;
    if (!access) throw this._expired();
    return access;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, json) {
    return this.request("POST", path, json === undefined ? {} : { json });
  }
}

/** Words for a person, from an ApiError (or anything thrown). */
export function explain(error) {
  if (!(error instanceof ApiError)) return "Something went wrong. Please try again.";
  if (error.status === 0) return "Cannot reach CityCall. Check your internet connection and try again.";
  if (error.status === 429) {
    // "too many failed logins; try again later" + Retry-After: 30
    const what = sentence((error.detail || "Too many attempts").split(";")[0]);
    const wait = error.retryAfter;
    const when = wait ? `in ${wait} second${wait === 1 ? "" : "s"}` : "in a moment";
    return `${what} You can try again ${when}.`;
  }
  if (error.code === "session_expired") return "Your login has ended. Please log in again.";
  if (error.status >= 500) return "CityCall is having trouble right now. Please try again soon.";
  if (error.detail) return sentence(error.detail);
  return `The request failed (${error.status}).`;
}

function sentence(text) {
  const t = text.trim();
  const first = t.charAt(0).toUpperCase() + t.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}
