// The page shell: hash router, time-range picker, sign-in, and the one live stream per page.
import { AuthRequired, RANGES, setToken, stream, timeRange } from "./api.js";
import { esc, onZoom } from "./charts.js";
import * as overview from "./overview.js";
import * as drill from "./drill.js";
import * as alerts from "./alerts.js";
import * as views from "./views.js";

const main = document.getElementById("main");
const liveBadge = document.getElementById("live");
const rangeSelect = document.getElementById("range");
let stopStream = null;
let renderSeq = 0;

function setLive(state) {
  liveBadge.textContent = state === "live" ? "● live" : `○ ${state}`;
  liveBadge.className = state === "live" ? "live on" : "live";
  if (state === "auth") signIn();
}

function route() {
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const args = new URLSearchParams(query || "");
  if (!parts.length) return (m, c) => overview.render(m, c);
  if (parts[0] === "service" && parts.length === 2) return (m, c) => drill.renderService(m, c, parts[1]);
  if (parts[0] === "service" && parts[2] === "stage") return (m, c) => drill.renderStage(m, c, parts[1], parts[3], args.get("split") || "");
  if (parts[0] === "trace") return (m, c) => drill.renderTrace(m, c, parts[1]);
  if (parts[0] === "alerts") return (m, c) => alerts.renderAlerts(m, c);
  if (parts[0] === "slos") return (m, c) => alerts.renderSlos(m, c);
  if (parts[0] === "views" && parts[1]) return (m, c) => views.renderView(m, c, parts[1], args.get("edit") === "1");
  if (parts[0] === "views") return (m, c) => views.renderList(m, c);
  return (m) => { m.innerHTML = `<p class="error">no page ${esc(location.hash)}</p>`; };
}

async function render() {
  const seq = ++renderSeq;
  if (stopStream) { stopStream(); stopStream = null; }
  liveBadge.textContent = "";  // pages without live values show no badge
  liveBadge.className = "live";
  const ctx = {
    rerender: () => { if (seq === renderSeq) render(); },
    subscribe: (metrics, onFrame) => {
      if (seq !== renderSeq) return;
      stopStream = stream(metrics, onFrame, setLive);
    },
  };
  document.body.dataset.state = "loading";
  try {
    await route()(main, ctx);
    if (seq === renderSeq) document.body.dataset.state = "ready";
  } catch (e) {
    if (e instanceof AuthRequired) { signIn(); return; }
    main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    document.body.dataset.state = "error";
  }
}

function signIn() {
  const dialog = document.getElementById("login");
  if (!dialog.open) dialog.showModal();
}

document.getElementById("login-form").addEventListener("submit", () => {
  setToken(document.getElementById("token").value.trim());
  render();
});

rangeSelect.addEventListener("change", () => {
  if (rangeSelect.value in RANGES) {
    timeRange.rel = rangeSelect.value;
    timeRange.start = timeRange.end = null;
    render();
  }
});

onZoom(() => {
  rangeSelect.value = "custom";
  render();
});

const shared = new URLSearchParams(location.search).get("view");
if (shared && !location.hash) location.hash = `#/views/${encodeURIComponent(shared)}`;
window.addEventListener("hashchange", render);
render();
