// Drill-down: service -> stage (span name) -> series split by an attribute -> slow traces
// (and exemplars) -> span waterfall with attributes and events -> the trace's logs.
import { download, get, qs, queryData, lastValue, window_ } from "./api.js";
import { esc, fmt, plot, labelText } from "./charts.js";

const CALLS = "traces.span.metrics.calls";
const DURATION = "traces.span.metrics.duration";
const q = (v) => JSON.stringify(String(v));  // a matcher value, quoted

export async function renderService(main, ctx, service) {
  const win = window_();
  const match = [`service=${q(service)}`];
  const [rate, errors, p95] = await Promise.all([
    queryData({ metric: CALLS, agg: "rate", group_by: ["span.name"], match }, win),
    queryData({ metric: CALLS, agg: "rate", group_by: ["span.name"], match: [...match, 'status.code="STATUS_CODE_ERROR"'] }, win),
    queryData({ metric: DURATION, agg: "p95", group_by: ["span.name"], match }, win),
  ]);
  const stages = new Map();
  const take = (res, key) => (res.series || []).forEach((s) => {
    const row = stages.get(s.labels["span.name"]) || {};
    row[key] = lastValue(s);
    stages.set(s.labels["span.name"], row);
  });
  take(rate, "rate"); take(errors, "errors"); take(p95, "p95");
  const rows = [...stages.entries()].sort().map(([name, v]) =>
    `<tr data-stage="${esc(name)}"><td><a href="#/service/${encodeURIComponent(service)}/stage/${encodeURIComponent(name)}">${esc(name)}</a></td>` +
    `<td class="num">${fmt(v.rate ?? null, "rate")}</td><td class="num">${v.rate ? fmt((v.errors ?? 0) / v.rate, "percent") : "no data"}</td>` +
    `<td class="num">${fmt(v.p95 ?? null, "seconds")}</td></tr>`).join("");
  main.innerHTML = `<div class="crumbs"><a href="#/">Overview</a> › ${esc(service)}</div><h2>${esc(service)}</h2>
    <table id="stages"><tr><th>Stage (span name)</th><th>Requests</th><th>Error ratio</th><th>p95</th></tr>
    ${rows || '<tr><td colspan="4" class="nodata">no span metrics for this service in this range</td></tr>'}</table>
    <div class="grid"><div class="panel"><h4>Requests by stage</h4><div class="chart" id="c1"></div></div>
    <div class="panel"><h4>p95 by stage</h4><div class="chart" id="c2"></div></div></div>
    <h3>Slowest traces</h3><div id="slow"></div>`;
  plot(main.querySelector("#c1"), rate);
  plot(main.querySelector("#c2"), p95);
  await slowTraces(main.querySelector("#slow"), { service }, win);
}

async function slowTraces(el, filters, win) {
  const { spans } = await get("/api/v1/spans?" + qs({ ...filters, start: win.start.toFixed(3), end: win.end.toFixed(3), limit: 500 }));
  spans.sort((a, b) => b.duration_ns - a.duration_ns);
  const seen = new Set();
  const top = spans.filter((s) => !seen.has(s.trace_id) && seen.add(s.trace_id)).slice(0, 15);
  el.innerHTML = top.length ? "<table><tr><th>Trace</th><th>Span</th><th>Duration</th><th>Status</th><th>Start</th></tr>" + top.map((s) =>
    `<tr><td><a class="trace-link" href="#/trace/${s.trace_id}">${s.trace_id.slice(0, 16)}…</a></td><td>${esc(s.name)}</td>` +
    `<td class="num">${fmt(s.duration_ns / 1e9, "seconds")}</td><td>${s.status_code === 2 ? "error" : "ok"}</td>` +
    `<td>${new Date(s.start_time_unix_nano / 1e6).toLocaleTimeString()}</td></tr>`).join("") + "</table>"
    : '<p class="nodata">no traces in this range</p>';
}

export async function renderStage(main, ctx, service, stage, split) {
  const win = window_();
  const match = [`service=${q(service)}`, `span.name=${q(stage)}`];
  const { series } = await get("/api/v1/series?" + qs({ metric: DURATION, match }));
  const keys = new Set();
  for (const s of series) for (const k of Object.keys(s.attributes || {})) keys.add(k);
  ["service.name", "span.name", "span.kind"].forEach((k) => keys.delete(k));
  const options = ["", ...[...keys].sort()].map((k) =>
    `<option value="${esc(k)}" ${k === split ? "selected" : ""}>${k ? esc(k) : "(no split)"}</option>`).join("");
  const group = split ? [split] : [];
  const [p95, rate] = await Promise.all([
    queryData({ metric: DURATION, agg: "p95", group_by: group, match }, win),
    queryData({ metric: CALLS, agg: "rate", group_by: group, match }, win),
  ]);
  const base = `#/service/${encodeURIComponent(service)}/stage/${encodeURIComponent(stage)}`;
  main.innerHTML = `<div class="crumbs"><a href="#/">Overview</a> › <a href="#/service/${encodeURIComponent(service)}">${esc(service)}</a> › ${esc(stage)}</div>
    <h2>${esc(stage)}</h2><div class="form-row"><label>Split by<select id="split">${options}</select></label></div>
    <table id="split-table"><tr><th>${esc(split || "series")}</th><th>p95</th></tr>${(p95.series || []).map((s) =>
      `<tr><td>${esc(labelText(s.labels))}</td><td class="num">${fmt(lastValue(s), "seconds")}</td></tr>`).join("")}</table>
    <div class="grid"><div class="panel"><h4>p95 latency</h4><div class="chart" id="c1"></div></div>
    <div class="panel"><h4>Requests</h4><div class="chart" id="c2"></div></div></div>
    <h3>Slowest traces of this stage</h3><div id="slow"></div>`;
  main.querySelector("#split").addEventListener("change", (e) => {
    location.hash = base + (e.target.value ? `?split=${encodeURIComponent(e.target.value)}` : "");
  });
  plot(main.querySelector("#c1"), p95);
  plot(main.querySelector("#c2"), rate);
  await slowTraces(main.querySelector("#slow"), { service, operation: stage }, win);
}

export async function renderTrace(main, ctx, traceId) {
  const [{ spans }, { logs }] = await Promise.all([
    get(`/api/v1/traces/${encodeURIComponent(traceId)}`),
    get("/api/v1/logs?" + qs({ trace_id: traceId, limit: 1000 })),
  ]);
  const t0 = Math.min(...spans.map((s) => s.start_time_unix_nano));
  const t1 = Math.max(...spans.map((s) => s.end_time_unix_nano));
  const total = Math.max(t1 - t0, 1);
  const children = new Map();
  const ids = new Set(spans.map((s) => s.span_id));
  for (const s of spans) {
    const parent = ids.has(s.parent_span_id) ? s.parent_span_id : "";
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const ordered = [];
  const walk = (parent, depth) => (children.get(parent) || []).forEach((s) => { ordered.push([s, depth]); walk(s.span_id, depth + 1); });
  walk("", 0);
  const rows = ordered.map(([s, depth], i) => {
    const left = ((s.start_time_unix_nano - t0) / total) * 100;
    const width = (s.duration_ns / total) * 100;
    return `<div class="row span-row" data-index="${i}"><div class="name" style="padding-left:${6 + depth * 14}px">${esc(s.service)}: ${esc(s.name)}</div>` +
      `<div class="track"><div class="bar ${s.status_code === 2 ? "err" : ""}" style="left:${left}%;width:${width}%"></div></div>` +
      `<div class="num">${fmt(s.duration_ns / 1e9, "seconds")}</div></div>`;
  }).join("");
  const logRows = logs.length ? "<table id=\"logs\"><tr><th>Time</th><th>Severity</th><th>Service</th><th>Span</th><th>Body</th></tr>" + logs.map((l) =>
    `<tr class="log-row"><td>${new Date(l.time_unix_nano / 1e6).toISOString()}</td><td>${esc(l.severity_text || l.severity_number)}</td>` +
    `<td>${esc(l.service)}</td><td>${esc(l.span_id)}</td><td>${esc(l.body)}</td></tr>`).join("") + "</table>"
    : '<p class="nodata" id="logs">no logs for this trace</p>';
  main.innerHTML = `<div class="crumbs"><a href="#/">Overview</a> › trace ${esc(traceId)}</div>
    <h2>Trace ${esc(traceId)}</h2><p>${spans.length} spans, ${fmt(total / 1e9, "seconds")}
    · <a id="jaeger-download" href="/api/traces/${traceId}?download=1">Jaeger JSON</a></p>
    <div class="waterfall" id="waterfall">${rows}</div><div class="details" id="span-details">Click a span for its attributes and events.</div>
    <h3>Logs of this trace</h3>${logRows}`;
  main.querySelector("#jaeger-download").addEventListener("click", (event) => {
    event.preventDefault();
    download(`/api/traces/${traceId}?download=1`, `trace-${traceId}.json`).catch((err) => alert(err.message));
  });
  main.querySelectorAll(".span-row").forEach((row) => row.addEventListener("click", () => {
    const [s] = ordered[Number(row.dataset.index)];
    main.querySelector("#span-details").innerHTML = `<h4>${esc(s.name)} <small>${esc(s.span_id)}</small></h4>
      <p>status ${s.status_code === 2 ? "error" : "ok"} ${esc(s.status_message || "")} · ${fmt(s.duration_ns / 1e9, "seconds")}</p>
      <h4>Attributes</h4><pre class="span-attributes">${esc(JSON.stringify(s.attributes, null, 2))}</pre>
      <h4>Events</h4><pre class="span-events">${esc(JSON.stringify(s.events, null, 2))}</pre>
      <h4>Resource</h4><pre>${esc(JSON.stringify(s.resource, null, 2))}</pre>`;
  }));
}
