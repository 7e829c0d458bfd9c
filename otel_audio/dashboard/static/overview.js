// The overview: one row per service with health, RED numbers, audio numbers and resources,
// then firing alerts and SLO budgets. Gauges update from the live stream; counters and
// histograms are re-queried (at most once a second) when the stream says they changed.
import { AuthRequired, get, queryData, lastValue, window_ } from "./api.js";
import { esc, fmt, plot } from "./charts.js";

let columnsPromise = null;
function columns() {
  columnsPromise ??= fetch("/dashboard/overview.json").then((r) => r.json()).then((d) => d.columns);
  return columnsPromise;
}

async function optional(promise) {
  try { return await promise; } catch (e) {
    if (e instanceof AuthRequired || e.status === undefined) throw e;
    return { error: e.message, status: e.status };
  }
}

function health(row, alerts) {
  const firing = alerts.filter((a) => a.state === "firing" && (a.labels.service === row.service));
  if (firing.some((a) => a.labels.severity === "critical")) return "critical";
  if (firing.length || (row.errorRatio ?? 0) > 0.05) return "warn";
  if (Object.values(row.values).every((v) => v === null)) return "no data";
  return "ok";
}

function cell(col, service, value) {
  const cls = value === null ? "num nodata" : "num";
  return `<td class="${cls}" data-metric="${esc(col.metric)}" data-key="${col.key}" data-service="${esc(service)}"` +
    ` data-value="${value ?? ""}">${esc(fmt(value, col.format))}</td>`;
}

export async function render(main, ctx) {
  const cols = await columns();
  const win = window_();
  const results = await Promise.all(cols.map((c) => optional(queryData({ ...c, group_by: ["service"] }, win))));
  const [alertsResp, slosResp] = await Promise.all([optional(get("/api/v1/alerts")), optional(get("/api/v1/slos"))]);
  const alerts = alertsResp.alerts || [];
  const services = new Set();
  const byKey = {};
  cols.forEach((c, i) => {
    byKey[c.key] = {};
    for (const s of results[i].series || []) {
      services.add(s.labels.service ?? "");
      byKey[c.key][s.labels.service ?? ""] = lastValue(s);
    }
  });
  alerts.forEach((a) => a.labels.service && services.add(a.labels.service));
  const rows = [...services].sort().map((service) => {
    const values = Object.fromEntries(cols.map((c) => [c.key, byKey[c.key][service] ?? null]));
    const errorRatio = values.rate ? (values.errors ?? 0) / values.rate : null;
    return { service, values, errorRatio };
  });
  const visible = cols.filter((c) => !c.hidden);
  const head = "<tr><th>Service</th><th>Health</th>" + visible.slice(0, 1).map((c) => `<th>${esc(c.label)}</th>`).join("") +
    "<th>Error ratio</th>" + visible.slice(1).map((c) => `<th>${esc(c.label)}</th>`).join("") + "<th>Alerts</th></tr>";
  const body = rows.map((row) => {
    const h = health(row, alerts);
    const firing = alerts.filter((a) => a.state === "firing" && a.labels.service === row.service).length;
    return `<tr data-service="${esc(row.service)}"><td><a href="#/service/${encodeURIComponent(row.service)}">${esc(row.service || "(no service)")}</a></td>` +
      `<td class="health-${h.replace(" ", "")}">${h}</td>` + cell(visible[0], row.service, row.values[visible[0].key]) +
      `<td class="num ${row.errorRatio === null ? "nodata" : ""}" data-key="error_ratio" data-service="${esc(row.service)}" data-value="${row.errorRatio ?? ""}">${fmt(row.errorRatio, "percent")}</td>` +
      visible.slice(1).map((c) => cell(c, row.service, row.values[c.key])).join("") + `<td class="num">${firing}</td></tr>`;
  }).join("");
  const alertRows = alertsResp.error
    ? `<p class="nodata">${esc(alertsResp.error)}</p>`
    : alerts.length ? "<table><tr><th>Alert</th><th>State</th><th>Severity</th><th>Service</th><th>Value</th></tr>" + alerts.map((a) =>
        `<tr><td>${esc(a.labels.alertname)}</td><td>${esc(a.state)}</td><td>${esc(a.labels.severity)}</td><td>${esc(a.labels.service)}</td><td class="num">${esc(fmt(a.value))}</td></tr>`).join("") + "</table>"
      : '<p class="nodata">no alerts pending or firing</p>';
  const slos = slosResp.slos || [];
  const sloRows = slosResp.error ? `<p class="nodata">${esc(slosResp.error)}</p>` : slos.length
    ? "<table><tr><th>SLO</th><th>SLI</th><th>Objective</th><th>Budget left</th></tr>" + slos.map((s) =>
        `<tr><td><a href="#/slos">${esc(s.name)}</a></td><td class="num">${fmt(s.status.sli, "percent")}</td><td class="num">${fmt(s.status.objective, "percent")}</td>` +
        `<td class="num" data-slo="${esc(s.name)}">${fmt(s.status.error_budget.remaining_ratio, "percent")}</td></tr>`).join("") + "</table>"
    : '<p class="nodata">no SLOs defined</p>';
  main.innerHTML = `<h2>Overview</h2>
    <table id="services" data-start="${win.start.toFixed(3)}" data-end="${win.end.toFixed(3)}" data-step="${win.step}">${head}${body || `<tr><td colspan="${visible.length + 4}" class="nodata">no data in this range</td></tr>`}</table>
    <div class="grid"><div class="panel"><h4>Requests by service</h4><div class="chart" id="c-rate"></div></div>
    <div class="panel"><h4>p95 latency by service</h4><div class="chart" id="c-p95"></div></div></div>
    <h3>Firing and pending alerts</h3>${alertRows}<h3>SLO error budgets</h3>${sloRows}`;
  plot(main.querySelector("#c-rate"), results[cols.findIndex((c) => c.key === "rate")]);
  plot(main.querySelector("#c-p95"), results[cols.findIndex((c) => c.key === "p95")]);

  // live: gauges from the pushed values, the rest re-queried when the stream says they changed
  const live = new Map(cols.filter((c) => c.live).map((c) => [c.metric, c]));
  const requery = new Set(cols.filter((c) => !c.live).map((c) => c.metric));
  let pending = null;
  ctx.subscribe([...live.keys(), ...requery], (frame, receivedMs) => {
    let changed = false;
    for (const p of frame.points) {
      const col = live.get(p.metric);
      if (col && p.value !== null) {
        const td = main.querySelector(`td[data-key="${col.key}"][data-service="${CSS.escape(p.service)}"]`);
        if (td) {
          td.textContent = fmt(p.value, col.format);
          td.dataset.value = p.value;
          td.classList.remove("nodata");
          td.dataset.updatedMs = receivedMs;
          td.dataset.sentMs = frame.sent_ms;
        } else changed = true;  // a new service: redraw
      }
      if (requery.has(p.metric)) changed = true;
    }
    if (changed && !pending) pending = setTimeout(() => { pending = null; ctx.rerender(); }, 1000);
  });
}
