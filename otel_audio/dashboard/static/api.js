// Talking to the receiver's API: bearer token, JSON calls, range queries, the live stream.
// The token is asked once (on the first 401) and kept in sessionStorage for this tab.

const TOKEN_KEY = "otel-audio-token";

export class AuthRequired extends Error {}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra = {}) {
  const h = { ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

export async function call(method, path, body) {
  const init = { method, headers: headers(body !== undefined ? { "Content-Type": "application/json" } : {}) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (resp.status === 401) throw new AuthRequired("the receiver asks for a bearer token");
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.error || data.detail || `${method} ${path}: HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  return data;
}

export const get = (path) => call("GET", path);

// A file download through fetch, so it carries the bearer token a plain link cannot.
export async function download(path, filename) {
  const resp = await fetch(path, { headers: headers() });
  if (resp.status === 401) throw new AuthRequired("the receiver asks for a bearer token");
  if (!resp.ok) throw new Error(`GET ${path}: HTTP ${resp.status}`);
  const url = URL.createObjectURL(await resp.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.appendChild(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else u.append(k, v);
  }
  return u.toString();
}

// -- time range ------------------------------------------------------------------------------
export const RANGES = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000, "90d": 7776000 };
const NICE_STEPS = [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

export const timeRange = { rel: "1h", start: null, end: null };

export function window_() {
  const end = timeRange.end ?? Date.now() / 1000;
  const start = timeRange.start ?? end - RANGES[timeRange.rel];
  const want = (end - start) / 120;
  const step = NICE_STEPS.find((s) => s >= want) ?? 86400;
  return { start, end, step };
}

// One query of /api/v1/query_range; q = {metric, agg, group_by (list or string), match (list)}.
export async function queryRange(q, win = window_()) {
  const group = Array.isArray(q.group_by) ? q.group_by.join(",") : q.group_by || "";
  const path = "/api/v1/query_range?" + qs({
    metric: q.metric, agg: q.agg || "avg", group_by: group, match: q.match || [],
    start: win.start.toFixed(3), end: win.end.toFixed(3), step: q.step || `${win.step}s`,
  });
  return get(path);
}

// The same, for built-in pages: a metric the receiver does not have (yet) is "no data", not an error.
export async function queryData(q, win = window_()) {
  try {
    return await queryRange(q, win);
  } catch (e) {
    if (e.status === 400 && /unknown metric/.test(e.message)) return { series: [], start: win.start, end: win.end, missing: true };
    throw e;
  }
}

export function lastValue(series) {
  const pts = series.points;
  return pts.length ? pts[pts.length - 1][1] : null;
}

// -- live stream (server-sent events read with fetch, so the token can be sent) ---------------
export function stream(metrics, onFrame, onState = () => {}) {
  const ctrl = new AbortController();
  let stopped = false;
  async function run() {
    while (!stopped) {
      try {
        const resp = await fetch("/api/v1/stream?" + qs({ metrics: metrics.join(",") }), {
          headers: headers(), signal: ctrl.signal,
        });
        if (resp.status === 401) { onState("auth"); return; }
        onState("live");
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let event = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (event === "points") onFrame(JSON.parse(data), Date.now());
            if (event === "dropped") onState("dropped");
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  run();
  return () => { stopped = true; ctrl.abort(); };
}
