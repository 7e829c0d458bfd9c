// Charts (plotly.js from the installed plotly package) and number formatting.
import { timeRange } from "./api.js";

export function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

export function fmt(value, kind) {
  if (value === null || value === undefined || Number.isNaN(value)) return "no data";
  switch (kind) {
    case "percent": return `${(value * 100).toFixed(2)}%`;
    case "seconds": return value >= 1 ? `${value.toFixed(2)} s` : `${(value * 1000).toFixed(1)} ms`;
    case "rate": return `${value.toFixed(2)}/s`;
    default: return Math.abs(value) >= 1000 ? value.toFixed(0) : Number(value.toPrecision(4)).toString();
  }
}

export function labelText(labels) {
  const parts = Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(", ") : "all";
}

// A zoom by dragging sets an absolute range; onZoom re-renders the page with it.
let zoomHandler = () => {};
export function onZoom(fn) { zoomHandler = fn; }

export function plot(el, result, { chart = "line", title = "" } = {}) {
  const span = result.start !== undefined ? [new Date(result.start * 1000), new Date(result.end * 1000)] : undefined;
  const series = result.series || [];
  if (!series.length || series.every((s) => !s.points.length)) {
    el.innerHTML = '<div class="nodata">no data</div>';
    return;
  }
  if (chart === "stat") {
    const s = series[0];
    el.innerHTML = `<div class="stat" data-value="${s.points.at(-1)[1]}">${esc(fmt(s.points.at(-1)[1]))}</div>`;
    return;
  }
  if (chart === "table") {
    el.innerHTML = "<table><tr><th>series</th><th>last</th></tr>" + series.map((s) =>
      `<tr><td>${esc(labelText(s.labels))}</td><td class="num">${esc(fmt(s.points.at(-1)?.[1]))}</td></tr>`).join("") + "</table>";
    return;
  }
  const traces = series.map((s) => ({
    x: s.points.map((p) => new Date(p[0] * 1000)),
    y: s.points.map((p) => p[1]),
    name: labelText(s.labels),
    type: chart === "bar" ? "bar" : "scatter",
    mode: s.points.length <= 30 ? "lines+markers" : "lines",
    fill: chart === "area" ? "tozeroy" : undefined,
  }));
  const layout = {
    title: title ? { text: title, font: { size: 13 } } : undefined,
    margin: { l: 50, r: 10, t: title ? 30 : 10, b: 30 },
    xaxis: { type: "date", range: span }, showlegend: series.length > 1, legend: { orientation: "h" },
  };
  el.innerHTML = "";
  window.Plotly.newPlot(el, traces, layout, { displaylogo: false, responsive: true });
  el.on("plotly_relayout", (ev) => {
    const a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
    if (a && b) {
      timeRange.start = new Date(a).getTime() / 1000;
      timeRange.end = new Date(b).getTime() / 1000;
      zoomHandler();
    }
  });
}
