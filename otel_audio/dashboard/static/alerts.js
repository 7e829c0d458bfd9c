// Alerts and incidents (acknowledge, silence) and SLOs (budgets and their burn-down).
import { call, get, queryData, window_ } from "./api.js";
import { esc, fmt, plot } from "./charts.js";

async function orMessage(promise) {
  try { return await promise; } catch (e) { if (e.status) return { error: e.message }; throw e; }
}

function matchersOf(labels) {
  return Object.entries(labels).filter(([k]) => k !== "severity").map(([k, v]) => `${k}=${JSON.stringify(String(v))}`);
}

export async function renderAlerts(main, ctx) {
  const [alertsResp, incResp, silResp] = await Promise.all([
    orMessage(get("/api/v1/alerts")), orMessage(get("/api/v1/incidents")), orMessage(get("/api/v1/silences")),
  ]);
  if (alertsResp.error) {
    main.innerHTML = `<h2>Alerts</h2><p class="nodata">${esc(alertsResp.error)}</p>`;
    return;
  }
  const alerts = alertsResp.alerts || [];
  const incidents = incResp.incidents || [];
  const silences = (silResp.silences || []).filter((s) => s.status !== "expired");
  main.innerHTML = `<h2>Alerts</h2>
    <table id="alerts"><tr><th>Alert</th><th>State</th><th>Severity</th><th>Labels</th><th>Value</th><th>Since</th><th></th></tr>
    ${alerts.map((a, i) => `<tr data-alert="${esc(a.labels.alertname)}"><td>${esc(a.labels.alertname)}</td><td>${esc(a.state)}${a.silencedBy?.length ? " (silenced)" : ""}</td>
      <td>${esc(a.labels.severity)}</td><td>${esc(matchersOf(a.labels).join(", "))}</td><td class="num">${fmt(a.value)}</td>
      <td>${esc(a.activeAt || a.startsAt || "")}</td><td><button class="silence" data-i="${i}">Silence 1h</button></td></tr>`).join("") ||
      '<tr><td colspan="7" class="nodata">no alerts pending or firing</td></tr>'}</table>
    <h3>Incidents</h3>
    <table id="incidents"><tr><th>Incident</th><th>Title</th><th>Severity</th><th>Status</th><th>Opened</th><th></th></tr>
    ${incidents.map((inc) => `<tr data-incident="${esc(inc.id)}"><td>${esc(inc.id)}</td><td>${esc(inc.title)}</td><td>${esc(inc.severity)}</td>
      <td class="status">${esc(inc.status)}${inc.acknowledged_by ? ` by ${esc(inc.acknowledged_by)}` : ""}</td><td>${esc(inc.opened_at || inc.created_at || "")}</td>
      <td>${inc.status === "open" ? `<button class="ack" data-id="${esc(inc.id)}">Acknowledge</button>` : ""}</td></tr>`).join("") ||
      '<tr><td colspan="6" class="nodata">no incidents</td></tr>'}</table>
    <h3>Active silences</h3>
    <table id="silences"><tr><th>Matchers</th><th>Ends</th><th>By</th><th>Comment</th></tr>
    ${silences.map((s) => `<tr><td>${esc(JSON.stringify(s.matchers))}</td><td>${esc(s.endsAt)}</td><td>${esc(s.createdBy)}</td><td>${esc(s.comment)}</td></tr>`).join("") ||
      '<tr><td colspan="4" class="nodata">none</td></tr>'}</table>
    <p id="action-result"></p>`;
  const who = () => localStorage.getItem("otel-audio-user") || "dashboard";
  const result = main.querySelector("#action-result");
  main.querySelectorAll("button.ack").forEach((b) => b.addEventListener("click", async () => {
    try {
      await call("POST", `/api/v1/incidents/${encodeURIComponent(b.dataset.id)}/ack`, { by: who() });
      ctx.rerender();
    } catch (e) { result.textContent = e.message; result.className = "error"; }
  }));
  main.querySelectorAll("button.silence").forEach((b) => b.addEventListener("click", async () => {
    const a = alerts[Number(b.dataset.i)];
    try {
      await call("POST", "/api/v1/silences", { matchers: matchersOf(a.labels), duration: "1h", createdBy: who(), comment: "silenced from the dashboard" });
      ctx.rerender();
    } catch (e) { result.textContent = e.message; result.className = "error"; }
  }));
}

export async function renderSlos(main, ctx) {
  const resp = await orMessage(get("/api/v1/slos"));
  if (resp.error) {
    main.innerHTML = `<h2>SLOs</h2><p class="nodata">${esc(resp.error)}</p>`;
    return;
  }
  const slos = resp.slos || [];
  main.innerHTML = `<h2>SLOs</h2>
    <table id="slos"><tr><th>SLO</th><th>Window</th><th>SLI</th><th>Objective</th><th>Budget left</th><th>Burn rates</th><th>Exhausted in</th></tr>
    ${slos.map((s) => `<tr data-slo="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.status.window)}</td><td class="num">${fmt(s.status.sli, "percent")}</td>
      <td class="num">${fmt(s.status.objective, "percent")}</td><td class="num">${fmt(s.status.error_budget.remaining_ratio, "percent")}</td>
      <td>${esc(Object.entries(s.status.burn_rates).map(([w, v]) => `${w}: ${fmt(v)}`).join(", "))}</td>
      <td>${s.status.time_to_exhaustion_seconds === null ? "not burning" : fmt(s.status.time_to_exhaustion_seconds / 3600) + " h"}</td></tr>`).join("") ||
      '<tr><td colspan="7" class="nodata">no SLOs defined</td></tr>'}</table>
    <div class="grid"><div class="panel"><h4>Error budget remaining (burn-down)</h4><div class="chart" id="burn"></div></div>
    <div class="panel"><h4>Burn rate</h4><div class="chart" id="rate"></div></div></div>`;
  const win = window_();
  const [remaining, burn] = await Promise.all([
    queryData({ metric: "slo.error_budget.remaining", agg: "last", group_by: ["slo"] }, win),
    queryData({ metric: "slo.burn_rate", agg: "last", group_by: ["slo", "window"] }, win),
  ]);
  plot(main.querySelector("#burn"), remaining);
  plot(main.querySelector("#rate"), burn);
}
