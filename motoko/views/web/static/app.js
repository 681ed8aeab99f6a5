// motoko dashboard: reads /api/*, re-reads on every `change` from /events.
"use strict";

const STATES = ["CREATED", "LAUNCHED", "RUNNING", "FINISHED", "FAILED", "CANCELLED", "LOST"];
const view = { study: null, constraints: "", states: new Set(), run: null, overview: null };
const $ = (id) => document.getElementById(id);

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function colour(state) { return STATES.includes(state) ? `var(--${state})` : "var(--USER)"; }
function pill(state) { return `<span class="pill" style="--c:${colour(state)}">${esc(state)}</span>`; }
function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+$/, "").replace(/\.?0+e/, "e");
  if (Array.isArray(value) || typeof value === "object") {
    return "[" + (Array.isArray(value) ? value.map(fmt).join(", ") : JSON.stringify(value)) + "]";
  }
  return String(value);
}
function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
}

async function get(path) {
  const response = await fetch(path, { cache: "no-store" });
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

// -- studies ----------------------------------------------------------------------------

function renderStudies(data) {
  const box = $("studies");
  box.innerHTML = data.studies.map((s) => {
    const segments = Object.entries(s.counts).filter(([, n]) => n > 0)
      .map(([state, n]) => `<span title="${esc(state)}: ${n}" style="width:${(100 * n) / Math.max(1, s.total)}%;background:${colour(state)}"></span>`).join("");
    const counts = Object.entries(s.counts).filter(([, n]) => n > 0)
      .map(([state, n]) => `<span><b>${n}</b> ${esc(state.toLowerCase())}</span>`).join("");
    return `<div class="card${s.study === view.study ? " selected" : ""}" data-study="${esc(s.study)}">
      <span class="total">${s.total} run${s.total === 1 ? "" : "s"}</span>
      <div class="name">${esc(s.study)}</div>
      <div class="bar">${segments}</div>
      <div class="counts">${counts || "<span>no run yet</span>"}</div></div>`;
  }).join("");
  box.querySelectorAll(".card").forEach((card) => card.addEventListener("click", () => selectStudy(card.dataset.study)));
  $("study-tabs").innerHTML = data.studies.map((s) =>
    `<button role="tab" data-study="${esc(s.study)}" aria-selected="${s.study === view.study}">${esc(s.study)}</button>`).join("");
  $("study-tabs").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => selectStudy(b.dataset.study)));
}

function renderActivity(data) {
  const running = data.running.map((r) => `<li data-study="${esc(r.study)}" data-id="${r.id}">
      <span class="rid">${esc(r.study)}.${r.id}</span>${pill(r.state)}
      <span class="mini" title="${r.progress == null ? "no progress reported" : Math.round(r.progress * 100) + "%"}"><span style="width:${(r.progress || 0) * 100}%"></span></span>
      <span class="msg${r.note ? " silent" : ""}" title="${esc(r.note || "")}">${r.note ? esc(r.note) : esc(r.status || r.machine_name || "") + (r.started ? " · " + ago(r.started) : "")}</span></li>`);
  if (data.more_running) running.push(`<li class="empty">and ${data.more_running} more</li>`);
  running.unshift(...(data.notes || []).map((note) => `<li class="note">${esc(note)}</li>`));
  $("running").innerHTML = running.join("") || `<li class="empty">nothing is running</li>`;
  $("failures").innerHTML = data.failures.map((r) => `<li data-study="${esc(r.study)}" data-id="${r.id}">
      <span class="rid">${esc(r.study)}.${r.id}</span>${pill(r.state)}
      <span class="msg" title="${esc(r.error || "")}">${esc(r.error || (r.exit_code != null ? "exit code " + r.exit_code : ""))}</span></li>`).join("")
    || `<li class="empty">no failure</li>`;
  // Finished runs whose study files changed since (motoko run asks before reusing them).
  $("outdated").innerHTML = (data.outdated || []).filter((o) => o.total).map((o) => `<li class="outdated">
      <span class="rid">${esc(o.run_name)}</span>${pill("OUTDATED")}
      <span class="msg" title="${esc(o.runs.join(", "))}">${esc(o.summary)}</span></li>`).join("")
    || `<li class="empty">no outdated run</li>`;
  document.querySelectorAll(".activity li[data-id]").forEach((li) =>
    li.addEventListener("click", () => openRun(li.dataset.study, Number(li.dataset.id))));
}

function selectStudy(name) {
  if (view.study === name) return;
  view.study = name;
  if (view.overview) renderStudies(view.overview);
  loadRuns();
}

// -- graphs -------------------------------------------------------------------------------

function graphSvg(graph, opts) {
  const W = opts.width || 168, H = 44, GX = 58, GY = 16, PAD = 8;
  const nodes = graph.nodes;
  if (!nodes.length) return `<div class="empty">${esc(opts.empty || "nothing to show")}</div>`;
  const ys = nodes.map((n) => n.y);
  const top = Math.max(...ys), layers = Math.max(...nodes.map((n) => n.x)) + 1;
  const pos = {};
  for (const n of nodes) pos[n.id] = { x: PAD + n.x * (W + GX), y: PAD + (top - n.y) * (H + GY) };
  const width = PAD * 2 + layers * W + (layers - 1) * GX;
  const height = PAD * 2 + (top - Math.min(...ys) + 1) * (H + GY) - GY;
  const edges = graph.edges.map(([u, v]) => {
    const a = pos[u], b = pos[v];
    const x0 = a.x + W, y0 = a.y + H / 2, x1 = b.x - 2, y1 = b.y + H / 2, mx = (x0 + x1) / 2;
    return `<path class="edge" marker-end="url(#arrow)" d="M${x0},${y0} C${mx},${y0} ${mx},${y1} ${x1},${y1}"/>`;
  }).join("");
  const boxes = nodes.map((n) => {
    const p = pos[n.id];
    const counts = Object.entries(n.counts || {}).filter(([, c]) => c > 0);
    const total = counts.reduce((s, [, c]) => s + c, 0);
    let detail = n.state || "";
    if (counts.length > 1) detail = counts.map(([s, c]) => `${c} ${s.toLowerCase()}`).join(" · ");
    let bar = "";
    if (total) {
      let x = 0;
      bar = counts.map(([s, c]) => {
        const w = ((W - 16) * c) / total;
        const seg = `<rect x="${8 + x}" y="${H - 7}" width="${w}" height="3" fill="${colour(s)}"/>`;
        x += w;
        return seg;
      }).join("");
    } else if (n.progress != null && n.state === "RUNNING") {
      bar = `<rect x="8" y="${H - 7}" width="${(W - 16) * n.progress}" height="3" fill="${colour("RUNNING")}"/>`;
    }
    const attrs = n.study ? `data-study="${esc(n.study)}" data-id="${n.run}"` : `data-step="${esc(n.id)}"`;
    return `<g class="node" data-node="${esc(n.id)}" data-state="${esc(n.state || "")}" ${attrs} transform="translate(${p.x},${p.y})">
      <title>${esc(n.label)}: ${esc(n.state || "")}</title>
      <rect class="box ${esc(n.state || "")}" width="${W}" height="${H}" rx="8" fill="${n.fill}" stroke="${n.border}" stroke-width="1.5"/>
      <text x="10" y="17">${esc(n.label.length > 22 ? n.label.slice(0, 21) + "…" : n.label)}</text>
      <text class="state" x="10" y="32">${esc(detail.length > 28 ? detail.slice(0, 27) + "…" : detail)}</text>${bar}</g>`;
  }).join("");
  return `<svg class="graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
    <path d="M0,0 L10,5 L0,10 z" fill="#a3acbd"/></marker></defs>${edges}${boxes}</svg>`;
}

function renderDag(data) {
  $("dags").innerHTML = data.workflows.map((w) => `<div class="dag">
      <div class="dag-title"><code>${esc(w.file)}</code> · run name <code>${esc(w.run_name)}</code></div>
      ${w.error ? `<div class="empty">${esc(w.error)}</div>` : `<div class="graph-box">${graphSvg(w, {})}</div>`}</div>`).join("")
    || `<div class="empty">no workflow file has run here yet (<code>motoko run FILE.py</code>)</div>`;
  $("prov-title").textContent = "Provenance" + (data.runs.run_name ? ` · ${data.runs.run_name}` : "");
  $("provenance").innerHTML = graphSvg(data.runs, { width: 120, empty: "no runs yet" });
  document.querySelectorAll("#provenance g.node").forEach((g) =>
    g.addEventListener("click", () => openRun(g.dataset.study, Number(g.dataset.id))));
  document.querySelectorAll("#dags g.node").forEach((g) => g.addEventListener("click", () => {
    const wf = data.workflows.find((w) => w.nodes && w.nodes.some((n) => n.id === g.dataset.step));
    $("constraints").value = `event_name = ${g.dataset.step}` + (wf ? `, run_name = '${wf.run_name}'` : "");
    view.constraints = $("constraints").value;
    loadRuns();
  }));
  $("legend").innerHTML = [...STATES, "PENDING"].map((s) =>
    `<span><i style="border-color:${s === "PENDING" ? "#adb5bd" : colour(s)};background:${s === "PENDING" ? "#f1f3f5" : `color-mix(in srgb, ${colour(s)} 18%, white)`}"></i>${s.toLowerCase()}</span>`).join("");
}

// -- runs table ----------------------------------------------------------------------------

function renderChips() {
  $("state-chips").innerHTML = STATES.map((s) =>
    `<button type="button" data-state="${s}" class="${view.states.has(s) ? "on" : ""}" style="--c:${colour(s)}">${s.toLowerCase()}</button>`).join("");
  $("state-chips").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => {
    const s = b.dataset.state;
    if (view.states.has(s)) view.states.delete(s); else view.states.add(s);
    renderChips();
    loadRuns();
  }));
}

function query() {
  const parts = [];
  if (view.constraints.trim()) parts.push(view.constraints.trim());
  if (view.states.size) parts.push(`state in (${[...view.states].map((s) => `'${s}'`).join(", ")})`);
  return parts.join(", ");
}

async function loadRuns() {
  if (!view.study) return;
  let data;
  try {
    data = await get(`/api/runs?study=${encodeURIComponent(view.study)}&q=${encodeURIComponent(query())}`);
    $("filter-error").hidden = true;
  } catch (error) {
    $("filter-error").textContent = error.message;
    $("filter-error").hidden = false;
    return;
  }
  const numeric = new Set(["id", "progress"]);
  $("runs").querySelector("thead").innerHTML = "<tr>" + data.columns.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr>";
  $("runs").querySelector("tbody").innerHTML = data.rows.map((row) => {
    const cells = row.map((value, i) => {
      const column = data.columns[i];
      if (column === "state") return `<td>${pill(value)}</td>`;
      if (column === "progress") return `<td class="num">${value == null ? "" : Math.round(value * 100) + "%"}</td>`;
      if (column === "started" || column === "finished") return `<td>${esc(when(value))}</td>`;
      if (column === "error") return `<td class="err" title="${esc(value)}">${esc(value)}</td>`;
      return `<td class="${numeric.has(column) || typeof value === "number" ? "num" : ""}" title="${esc(fmt(value))}">${esc(fmt(value))}</td>`;
    }).join("");
    const selected = view.run && view.run.study === data.study && view.run.id === row[0];
    return `<tr data-id="${row[0]}" class="${selected ? "selected" : ""}">${cells}</tr>`;
  }).join("") || `<tr><td colspan="${data.columns.length}" class="empty">no run matches</td></tr>`;
  $("runs").querySelectorAll("tbody tr[data-id]").forEach((tr) =>
    tr.addEventListener("click", () => openRun(data.study, Number(tr.dataset.id))));
  const shown = data.rows.length;
  $("runs-foot").textContent = `${data.total} run${data.total === 1 ? "" : "s"} in ${data.study}` +
    (shown < data.total ? ` · newest ${shown} shown` : "") + (query() ? ` matching ${query()}` : "");
}

// -- run details --------------------------------------------------------------------------

function niceTicks(lo, hi, count) {
  if (lo === hi) { lo -= 1; hi += 1; }
  const step0 = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function chart(series) {
  const W = 500, H = 170, L = 52, R = 12, T = 10, B = 26;
  const xs = series.x, ys = series.y;
  if (!xs.length) return `<div class="empty">no numeric value</div>`;
  if (xs.length === 1) return `<div class="value">${esc(fmt(ys[0]))} <span>at ${series.kind === "vector" ? "component" : "step"} ${esc(fmt(xs[0]))}</span></div>`;
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const yt = niceTicks(y0, y1, 4).filter((t) => t >= y0 && t <= y1);
  const xt = niceTicks(x0, x1, 6).filter((t) => t >= x0 && t <= x1 && Number.isInteger(t));
  const grid = yt.map((t) => `<line x1="${L}" x2="${W - R}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eef0f5"/>
      <text x="${L - 6}" y="${sy(t) + 3.5}" text-anchor="end">${esc(fmt(t))}</text>`).join("") +
    xt.map((t) => `<text x="${sx(t)}" y="${H - 8}" text-anchor="middle">${esc(fmt(t))}</text>`).join("");
  const points = xs.map((x, i) => `${sx(x).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join(" ");
  const dots = xs.length <= 60 ? xs.map((x, i) => `<circle cx="${sx(x)}" cy="${sy(ys[i])}" r="2.6" fill="#4c6ef5"><title>${esc(fmt(x))}: ${esc(fmt(ys[i]))}</title></circle>`).join("") : "";
  return `<svg width="100%" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(series.name)}">${grid}
    <line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#c9cfdb"/>
    <polyline points="${points}" fill="none" stroke="#4c6ef5" stroke-width="1.8"/>${dots}</svg>`;
}

async function openRun(study, id) {
  view.run = { study, id };
  await loadRun();
  document.querySelectorAll("#runs tbody tr").forEach((tr) =>
    tr.classList.toggle("selected", study === view.study && Number(tr.dataset.id) === id));
}

async function loadRun() {
  if (!view.run) return;
  let run;
  try {
    run = await get(`/api/run?study=${encodeURIComponent(view.run.study)}&id=${view.run.id}`);
  } catch (error) {
    $("run-body").innerHTML = `<div class="filter-error">${esc(error.message)}</div>`;
    return;
  }
  $("drawer").hidden = false;
  $("run-title").innerHTML = `${esc(run.study)}.${run.id} ${pill(run.state)}`;
  const f = run.fields;
  const rows = [["job", Object.entries(run.job).filter(([k]) => k !== "id").map(([k, v]) => `${k}=${fmt(v)}`).join(", ")],
    ["run name", f.run_name], ["step", f.event_name], ["machine", f.machine_name], ["progress", f.progress == null ? "" : Math.round(f.progress * 100) + "%"],
    ["status", f.status], ["created", when(f.created)], ["started", when(f.started)], ["finished", when(f.finished)],
    ["exit code", f.exit_code], ["attempt", f.attempt], ["directory", f.run_path]];
  const skip = new Set(["id", "job_id", "state", "run_name", "event_name", "machine_name", "progress", "status", "created", "started",
    "finished", "exit_code", "attempt", "run_path", "parents", "metadata", "output", "error", "launched", "heartbeat", "launcher",
    "nproc", "exec", "workflow", "stop_requested", "executor_id"]);
  for (const [k, v] of Object.entries(f)) if (!skip.has(k) && v !== null && v !== undefined) rows.push([k, fmt(v)]);
  const parents = run.parents.map((p) => { const [s, i] = [p.slice(0, p.lastIndexOf(".")), p.slice(p.lastIndexOf(".") + 1)];
    return `<a class="run-link" data-study="${esc(s)}" data-id="${i}">${esc(p)}</a>`; }).join("") || "none";
  let html = `<dl class="fields">${rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}<dt>parents</dt><dd>${parents}</dd></dl>`;
  if (f.error) html += `<h3 class="sub">Error</h3><pre class="log stderr">${esc(f.error)}</pre>`;
  html += `<h3 class="sub">Quantities</h3>` + (run.quantities.map((q) => `<div class="chart" data-quantity="${esc(q.name)}">
      <div class="title">${esc(q.name)} <span class="dag-title">${q.kind === "vector" ? "· components of the last value" : `· ${q.steps} step${q.steps === 1 ? "" : "s"}`}</span></div>
      ${chart(q)}</div>`).join("") || `<div class="empty">no quantity pushed</div>`);
  for (const stream of ["stdout", "stderr"]) {
    if (run.logs[stream] === undefined) continue;
    html += `<h3 class="sub">${stream}</h3><pre class="log ${stream}" data-log="${stream}">${esc(run.logs[stream] ?? "(no file)") || "(empty)"}</pre>`;
  }
  $("run-body").innerHTML = html;
  $("run-body").querySelectorAll("a.run-link").forEach((a) => a.addEventListener("click", () => openRun(a.dataset.study, Number(a.dataset.id))));
}

// -- refreshing ----------------------------------------------------------------------------

let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    const overview = await get("/api/overview");
    view.overview = overview;
    $("workflow-path").textContent = overview.workflow;
    if (!view.study && overview.studies.length) view.study = overview.studies[0].study;
    renderStudies(overview);
    renderActivity(overview);
    renderDag(await get("/api/dag"));
    await loadRuns();
    await loadRun();
    document.body.dataset.version = String(Number(document.body.dataset.version || 0) + 1);
  } catch (error) {
    console.error(error);
  } finally {
    busy = false;
    if (again) { again = false; refresh(); }
  }
}

function connect() {
  const live = $("live");
  const events = new EventSource("/events");
  events.addEventListener("hello", () => { live.dataset.state = "live"; $("live-text").textContent = "live"; refresh(); });
  events.addEventListener("change", () => refresh());
  events.onerror = () => { live.dataset.state = "down"; $("live-text").textContent = "reconnecting"; };
}

$("filter").addEventListener("submit", (event) => { event.preventDefault(); view.constraints = $("constraints").value; loadRuns(); });
$("drawer-close").addEventListener("click", () => { $("drawer").hidden = true; view.run = null;
  document.querySelectorAll("#runs tbody tr.selected").forEach((tr) => tr.classList.remove("selected")); });
document.addEventListener("keydown", (event) => { if (event.key === "Escape") $("drawer-close").click(); });
renderChips();
refresh();
connect();
setInterval(() => { if (view.overview) renderActivity(view.overview); }, 5000);
