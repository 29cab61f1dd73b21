// The API, same origin, with the signed-in bearer token. A 401 anywhere signs out.

const TOKEN_KEY = "sc.token";
let token = sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

export const enc = encodeURIComponent;

export function getToken() {
  return token;
}

/** remember: keep it in localStorage (a wall screen that reloads), else this tab only. */
export function setToken(value, remember) {
  token = value;
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  if (value) (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, value);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((item) => q.append(k, item));
    else q.append(k, v instanceof Date ? v.toISOString() : String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** GET (or another method with a JSON body) /api/v1{path}; the JSON answer. */
export async function api(path, { method = "GET", body, params, signal, auth = token } = {}) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${auth}` };
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api/v1${path}${query(params)}`, init);
  let payload = null;
  const text = await response.text();
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = text;
    }
  }
  if (!response.ok) {
    const detail = payload && payload.detail !== undefined ? payload.detail : payload;
    if (response.status === 401 && auth === token) {
      window.dispatchEvent(new CustomEvent("sc-unauthorized"));
    }
    throw new ApiError(response.status, detail);
  }
  return payload;
}

/** Every page of a list (``data`` + ``next_cursor``), up to ``max`` rows. */
export async function apiAll(path, params = {}, { max = 5000, signal } = {}) {
  const rows = [];
  let after = null;
  do {
    const page = await api(path, { params: { ...params, limit: 1000, after }, signal });
    rows.push(...page.data);
    after = page.next_cursor;
  } while (after && rows.length < max);
  return rows;
}

/** A short text for an error, for people. */
export function describe(error) {
  if (error instanceof ApiError) {
    if (Array.isArray(error.detail)) return error.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    return `${error.status}: ${error.message}`;
  }
  return error && error.message ? error.message : String(error);
}
