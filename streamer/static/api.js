// The API client: the key lives in sessionStorage (gone when the tab closes) and only
// ever travels in the Authorization header. Streams get short-lived stream tokens.

const KEY = "streamer.apiKey";
const BASE = "api/v1";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

// Called on any 401 so the app can send the user back to the sign-in form.
let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

export async function request(path, { method = "GET", body, raw = false, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? getKey() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${BASE}${path}`, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* not JSON: keep the status */ }
    if (response.status === 401 && key === undefined) onUnauthorized();
    throw new ApiError(response.status, problem);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export const getJob = (id) => request(`/jobs/${encodeURIComponent(id)}`);

export function listJobs({ status, limit, cursor }) {
  const q = new URLSearchParams();
  if (status) q.set("status", status);
  if (limit) q.set("limit", String(limit));
  if (cursor) q.set("cursor", cursor);
  return request(`/jobs?${q}`);
}

export function eventsPage(id, fromIndex, limit) {
  return request(`/jobs/${encodeURIComponent(id)}/events?from_index=${fromIndex}&limit=${limit}`);
}

export const mintStreamToken = (id) =>
  request(`/jobs/${encodeURIComponent(id)}/stream-tokens`, { method: "POST" });

export function streamUrl(id, token, fromIndex) {
  const q = new URLSearchParams({ token, from_index: String(fromIndex) });
  return `${BASE}/jobs/${encodeURIComponent(id)}/events/stream?${q}`;
}

export const getSections = (id) => request(`/jobs/${encodeURIComponent(id)}/sections`);

// Where event `index` starts in the raw log, or (line given) which event holds `line`.
export function lineAt(id, { index, line }) {
  const q = new URLSearchParams(line !== undefined ? { line: String(line) } : { index: String(index) });
  return request(`/jobs/${encodeURIComponent(id)}/lines?${q}`);
}

export function search(id, { q, regex, caseSensitive, fromIndex, limit, count }) {
  const params = new URLSearchParams({
    q, regex: String(!!regex), case: caseSensitive ? "sensitive" : "insensitive",
    from_index: String(fromIndex), limit: String(limit), no_text: "true", count: String(!!count),
  });
  return request(`/jobs/${encodeURIComponent(id)}/search?${params}`);
}

export const cancelJob = (id) =>
  request(`/jobs/${encodeURIComponent(id)}`, { method: "PATCH", body: { status: "cancelled" } });

// The plain-text log's URL for a new tab: a stream token, never the key, in the URL.
export async function rawLogUrl(id) {
  const { token } = await mintStreamToken(id);
  return `${BASE}/jobs/${encodeURIComponent(id)}/log?${new URLSearchParams({ token })}`;
}

// The raw log as a Blob: fetched with the header, so no key or token is in a URL.
export async function downloadLog(id) {
  const response = await request(`/jobs/${encodeURIComponent(id)}/log`, { raw: true });
  return response.blob();
}
