// Custom views: dashboards composed of panels (a query, a chart type, a title), saved through
// /api/v1/views, shared by URL (#/views/<id> or ?view=<id>), imported and exported as JSON files.
import { call, get, queryRange, window_ } from "./api.js";
import { esc, plot } from "./charts.js";

const CHARTS = ["line", "area", "bar", "stat", "table"];

function download(name, data) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
  a.download = name;
  a.click();
  URL.revokeObjectURL(a.href);
}

function slug(text) {
  return (text || "view").toLowerCase().replace(/[^a-z0-9_.-]+/g, "-").replace(/^[-.]+|-+$/g, "").slice(0, 64) || "view";
}

export async function renderList(main, ctx) {
  const { views } = await get("/api/v1/views");
  main.innerHTML = `<h2>Views</h2>
    <div class="form-row"><label>New view title<input id="new-title" placeholder="Enhancer latency"></label>
      <button class="primary" id="create">Create</button>
      <label>Import a view file<input type="file" id="import" accept="application/json,.json"></label></div>
    <table id="views"><tr><th>View</th><th>Panels</th><th>Link</th></tr>${views.map((v) =>
      `<tr data-view="${esc(v.id)}"><td><a href="#/views/${encodeURIComponent(v.id)}">${esc(v.title)}</a></td><td>${v.panels.length}</td>` +
      `<td><code>${esc(location.origin + location.pathname)}?view=${esc(v.id)}</code></td></tr>`).join("") ||
      '<tr><td colspan="3" class="nodata">no saved views</td></tr>'}</table><p id="view-error"></p>`;
  main.querySelector("#create").addEventListener("click", async () => {
    const title = main.querySelector("#new-title").value.trim() || "New view";
    const taken = new Set(views.map((v) => v.id));
    let id = slug(title);
    for (let n = 2; taken.has(id); n++) id = `${slug(title).slice(0, 60)}-${n}`;  // never overwrite
    await call("PUT", `/api/v1/views/${id}`, { title, panels: [] });
    location.hash = `#/views/${id}?edit=1`;
  });
  main.querySelector("#import").addEventListener("change", async (e) => {
    const err = main.querySelector("#view-error");
    try {
      const view = JSON.parse(await e.target.files[0].text());
      const id = view.id || slug(view.title);
      await call("PUT", `/api/v1/views/${encodeURIComponent(id)}`, { ...view, id });
      location.hash = `#/views/${id}`;
    } catch (ex) { err.textContent = `import failed: ${ex.message}`; err.className = "error"; }
  });
}

export async function renderView(main, ctx, id, edit) {
  const view = await get(`/api/v1/views/${encodeURIComponent(id)}`);
  const { metrics } = await get("/api/v1/metrics");
  const names = metrics.map((m) => m.name ?? m.metric ?? m).filter(Boolean).sort();
  main.innerHTML = `<div class="crumbs"><a href="#/views">Views</a> › ${esc(view.title)}</div>
    <h2 id="view-title">${esc(view.title)}</h2>
    <div class="form-row"><button id="edit">${edit ? "Done" : "Edit"}</button><button id="export">Export JSON</button>
      <button id="delete">Delete</button><span>Share: <code id="share">${esc(location.origin + location.pathname)}?view=${esc(id)}</code></span></div>
    ${edit ? `<div class="form-row" id="panel-form">
      <label>Title<input id="p-title" value="Panel"></label>
      <label>Metric<input id="p-metric" list="metric-names"><datalist id="metric-names">${names.map((n) => `<option value="${esc(n)}">`).join("")}</datalist></label>
      <label>Aggregation<input id="p-agg" value="avg" size="6"></label>
      <label>Group by<input id="p-group" placeholder="service,span.name"></label>
      <label>Matchers<input id="p-match" placeholder='service="enhancer"'></label>
      <label>Chart<select id="p-chart">${CHARTS.map((c) => `<option>${c}</option>`).join("")}</select></label>
      <button class="primary" id="add-panel">Add panel</button></div><p id="view-error"></p>` : ""}
    <div class="grid" id="panels">${view.panels.map((p, i) => `<div class="panel" data-panel="${i}"><h4>${esc(p.title)}
      ${edit ? `<button class="remove" data-i="${i}">remove</button>` : ""}</h4><div class="chart"></div></div>`).join("") ||
      '<p class="nodata">no panels yet: Edit, then Add panel</p>'}</div>`;
  const save = async (next) => {
    await call("PUT", `/api/v1/views/${encodeURIComponent(id)}`, next);
    ctx.rerender();
  };
  main.querySelector("#edit").addEventListener("click", () => { location.hash = `#/views/${id}${edit ? "" : "?edit=1"}`; });
  main.querySelector("#export").addEventListener("click", () => download(`${id}.json`, view));
  main.querySelector("#delete").addEventListener("click", async () => {
    if (!confirm(`Delete view ${view.title}?`)) return;
    await call("DELETE", `/api/v1/views/${encodeURIComponent(id)}`);
    location.hash = "#/views";
  });
  if (edit) {
    main.querySelector("#add-panel").addEventListener("click", async () => {
      const val = (s) => main.querySelector(s).value.trim();
      const panel = {
        title: val("#p-title") || "Panel", chart: val("#p-chart"),
        query: { metric: val("#p-metric"), agg: val("#p-agg") || "avg",
          group_by: val("#p-group").split(",").map((s) => s.trim()).filter(Boolean),
          match: val("#p-match") ? val("#p-match").split(/\s*;\s*/).filter(Boolean) : [] },
      };
      try { await save({ ...view, panels: [...view.panels, panel] }); }
      catch (e) { const err = main.querySelector("#view-error"); err.textContent = e.message; err.className = "error"; }
    });
    main.querySelectorAll("button.remove").forEach((b) => b.addEventListener("click", () =>
      save({ ...view, panels: view.panels.filter((_, i) => i !== Number(b.dataset.i)) })));
  }
  const win = window_();
  await Promise.all(view.panels.map(async (p, i) => {
    const el = main.querySelector(`[data-panel="${i}"] .chart`);
    try { plot(el, await queryRange(p.query, win), { chart: p.chart }); }
    catch (e) { el.innerHTML = `<div class="error">${esc(e.message)}</div>`; }
  }));
}
