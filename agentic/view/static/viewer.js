// agentic view: the page's state, its polls of the JSON API (agentic/view/app.py) and its
// panels. Live mode polls /api/state each second and redraws what is open when it changed.
"use strict";

const { h, fmt, drawTree, drawTimeline, drawCurves } = window.Draw;

const ui = {
  version: -1,
  live: false,
  runs: [],
  tab: "run",
  run: null, // the run shown in the Run tab
  task: null, // {run, key} shown in the Task tab
  search: null, // the search span whose tree is shown
  node: null, // the selected tree node
  batch: null, // the model-call batch highlighted on the timeline
  compare: { a: null, b: null },
  curveX: "completion_tokens",
  fetchError: null,
  shown: {}, // the data each panel last drew, so a poll that changed nothing there redraws nothing
};

const $ = (id) => document.getElementById(id);
// Replaces `box`'s content with `kids`, the absent ones (null: a row a run does not have) left out.
const fill = (box, ...kids) => box.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en"));
const secs = (v) => `${Number(v || 0).toFixed(1)} s`;

async function api(path) {
  const res = await fetch(path, { cache: "no-store" });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.detail || `${path}: HTTP ${res.status}`);
  return body;
}

// Whether `data` differs from what `panel` drew last; polls redraw only panels whose data changed
// (a redraw would lose the reader's scroll position and open details).
function changed(panel, data, fromPoll) {
  const text = JSON.stringify(data);
  const same = ui.shown[panel] === text;
  ui.shown[panel] = text;
  return !(fromPoll && same);
}

// Runs a panel's loader, showing its failure on the page rather than leaving it blank.
async function guarded(box, load, fromPoll) {
  try {
    await load(fromPoll);
  } catch (e) {
    ui.shown = {};
    fill(box, h("p", { class: "error" }, String(e.message || e)));
  }
}

// ---------------------------------------------------------------------------------- polling

let polling = false;

async function poll() {
  if (polling) return; // the last poll is still out (a slow server): skip this beat
  polling = true;
  try {
    await pollOnce();
  } finally {
    polling = false;
  }
}

async function pollOnce() {
  let state;
  try {
    state = await api(`/api/state?since=${ui.version}`);
    ui.fetchError = null;
  } catch (e) {
    ui.fetchError = `the viewer is not answering (${e.message || e}): is agentic view still running?`;
    renderProblems();
    return;
  }
  if (!state.changed) {
    if (ui.fetchError === null) renderProblems();
    return;
  }
  ui.version = state.version;
  ui.live = state.live;
  ui.runs = state.runs;
  $("live-badge").hidden = !ui.live;
  const usable = ui.runs.filter((r) => r.status === "ok");
  if (ui.run === null && usable.length) ui.run = usable[0].id;
  if (ui.compare.a === null && usable.length > 1) {
    ui.compare = { a: usable[0].id, b: usable[1].id };
  }
  renderRuns();
  renderProblems();
  await refreshTab(true);
}

function renderProblems() {
  const lines = ui.runs.filter((r) => r.status === "error").map((r) => r.message);
  if (ui.fetchError) lines.unshift(ui.fetchError);
  if (!ui.runs.length && !ui.fetchError) {
    lines.push(ui.live ? "waiting for recordings to appear…" : "no recordings loaded");
  }
  fill($("problems"), ...lines.map((m) => h("div", { class: "problem" }, m)));
}

function renderRuns() {
  const items = ui.runs.map((r) => {
    const ok = r.status === "ok";
    const badge = !ok ? r.status : r.finished ? "finished" : ui.live ? "running" : "no run.end";
    return h("li", {
      class: `run status-${r.status}${r.id === ui.run ? " selected" : ""}`,
      "data-run": r.id,
      title: r.file,
      onclick: ok ? () => { ui.run = r.id; show("run"); } : null,
    },
    h("div", { class: "run-name" }, r.name, h("span", { class: `badge ${badge.replace(/\W/g, "-")}` }, badge)),
    ok ? h("div", { class: "run-line" }, `${r.suite || "?"} · ${r.controller_label}`) : null,
    ok ? h("div", { class: "run-line" },
      `${pct(r.accuracy)} · ${r.done}${r.planned ? "/" + r.planned : ""} tasks · ` +
      `${num(r.usage.completion_tokens)} tokens`) : null,
    !ok ? h("div", { class: "msg" }, r.message) : null);
  });
  fill($("run-list"), ...items);
}

// ------------------------------------------------------------------------------------- tabs

function show(tab) {
  ui.tab = tab;
  markTab();
  renderRuns();
  refreshTab();
}

function markTab() {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.classList.toggle("active", b.dataset.tab === ui.tab);
  }
  for (const sec of document.querySelectorAll("section.tab")) sec.hidden = sec.id !== `tab-${ui.tab}`;
}

async function refreshTab(fromPoll = false) {
  if (ui.tab === "run") await guarded($("tab-run"), renderRun, fromPoll);
  else if (ui.tab === "task") await guarded($("task-body"), renderTask, fromPoll);
  else if (ui.tab === "compare") await guarded($("compare-body"), renderCompare, fromPoll);
  else if (ui.tab === "curves") await guarded($("curves"), renderCurves, fromPoll);
}

function table(rows) {
  return h("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))));
}

function suiteText(r) {
  const c = r.suite_config;
  const settings = c.config && Object.keys(c.config).length ? ` ${JSON.stringify(c.config)}` : "";
  return `${r.suite || "?"} (n=${c.n ?? "?"}, seed=${c.seed ?? "?"})${settings}`;
}

function summaryRows(r) {
  const u = r.usage;
  return [
    ["file", r.file],
    ["suite", suiteText(r)],
    ["backend", r.backend || "?"],
    ["controller", h("details", {}, h("summary", {}, r.controller_label), h("pre", {}, JSON.stringify(r.controller, null, 2)))],
    r.gateway ? ["gateway request", JSON.stringify(r.gateway)] : null,
    ["accuracy (mean score)", h("span", { class: "accuracy" }, pct(r.accuracy))],
    ["solved (score 1.0)", `${r.solved} of ${r.done}`],
    ["tasks", `${r.done} done${r.planned !== null ? ` of ${r.planned}` : ""}` +
      (r.running ? `, ${r.running} without an outcome` : "") + (r.errors ? `, ${r.errors} errors` : "")],
    ["tokens (prompt + completion)", `${num(u.prompt_tokens)} + ${num(u.completion_tokens)}`],
    ["model calls · reward calls", `${num(u.model_calls)} · ${num(u.reward_calls)}`],
    ["request seconds (summed)", secs(u.seconds)],
    u.cost_usd ? ["cost", `$${u.cost_usd.toFixed(4)}`] : null,
    ["budget stops", r.stopped ? `run stopped: ${r.stopped} (${r.not_run} tasks not run)` +
      (r.task_stops ? `; ${r.task_stops} searches stopped early` : "")
      : r.task_stops ? `${r.task_stops} searches stopped early (answered their best so far)` : "none"],
    ["status", (r.finished ? "finished" : "no run.end (running, or interrupted)") +
      (r.resumed ? `, resumed ${r.resumed}×` : "") + (r.runs_in_file > 1 ? `, ${r.runs_in_file} runs in this file` : "")],
    r.torn_tail ? ["note", "the last line is cut off (a run killed mid-write?): ignored"] : null,
  ];
}

async function renderRun(fromPoll) {
  if (ui.run === null) {
    fill($("tab-run"), h("p", {}, "no run to show"));
    return;
  }
  const d = await api(`/api/runs/${ui.run}`);
  if (!changed("run", d, fromPoll)) return;
  const rows = d.tasks.map((t) => h("tr", {
    class: `task${t.solved ? " solved" : ""}`, "data-key": t.key, "data-task": t.task_id,
    onclick: () => openTask(ui.run, t.key),
  },
  h("td", {}, t.task_id),
  h("td", { class: "output" }, t.output === null ? "(no outcome)" : t.output.slice(0, 120)),
  h("td", { class: "num" }, fmt(t.score, 2)),
  h("td", { class: "num" }, t.usage ? num(t.usage.completion_tokens) : "–"),
  h("td", { class: "num" }, t.usage ? secs(t.usage.seconds) : "–"),
  h("td", { class: "num" }, t.nodes || ""),
  h("td", {}, t.error || t.stopped || "")));
  fill($("tab-run"),
    h("h2", {}, d.summary.name),
    table(summaryRows(d.summary)),
    h("h3", {}, `Tasks (${d.tasks.length})`),
    h("table", { class: "grid", id: "tasks" },
      h("tr", {}, ["task", "output", "score", "tokens", "seconds", "nodes", "error / stop"].map((c) => h("th", {}, c))),
      rows),
    Object.keys(d.other).length
      ? h("p", { class: "quiet" }, "events outside any task: " +
        Object.entries(d.other).map(([k, v]) => `${k} ×${v}`).join(", "))
      : null);
}

// ------------------------------------------------------------------------------------- task

function openTask(run, key) {
  if (!ui.task || ui.task.run !== run || ui.task.key !== key) {
    ui.task = { run, key };
    ui.search = ui.node = ui.batch = null;
  }
  show("task");
}

async function renderTask(fromPoll) {
  if (!ui.task) {
    fill($("task-body"), h("p", {}, "pick a task in the Run tab"));
    return;
  }
  const d = await api(`/api/runs/${ui.task.run}/tasks/${encodeURIComponent(ui.task.key)}`);
  if (!changed("task", d, fromPoll)) return;
  const run = ui.runs.find((r) => r.id === d.run);
  const t = d.row;
  if (!d.trees.some((tr) => tr.search === ui.search)) ui.search = d.trees.length ? d.trees[0].search : null;
  const tree = d.trees.find((tr) => tr.search === ui.search);
  const timelineBox = h("div", { id: "timeline", class: "chart" });
  const callBox = h("div", { id: "call-detail", class: "detail" });
  const treeBox = h("div", { id: "tree", class: "chart" });
  const nodeBox = h("div", { id: "node-detail" });
  const pick = d.trees.length > 1
    ? h("select", { id: "search-pick", onchange: (ev) => { ui.search = ev.target.value; ui.node = null; renderTask(); } },
      d.trees.map((tr, i) => h("option", { value: tr.search, selected: tr.search === ui.search },
        `search ${i + 1}: ${tr.algorithm} (${tr.nodes.length - 1} nodes)`)))
    : null;
  fill($("task-body"),
    h("h2", { id: "task-title" }, t.task_id, h("span", { class: "quiet" }, ` in ${run ? run.name : "run " + d.run}`)),
    table([
      ["output", h("pre", { class: "answer" }, t.output === null ? "(no outcome yet)" : t.output)],
      ["score", h("span", { class: "task-score" }, fmt(t.score))],
      t.usage ? ["usage", `${num(t.usage.prompt_tokens)} prompt + ${num(t.usage.completion_tokens)} completion tokens, ` +
        `${t.usage.model_calls} model calls, ${t.usage.reward_calls} reward calls, ${secs(t.usage.seconds)}`] : null,
      t.error ? ["error", t.error] : null,
      t.stopped ? ["stopped", t.stopped] : null,
    ]),
    h("h3", {}, "Timeline ", h("span", { class: "quiet" }, "(model calls as batches; click a bar)")),
    timelineBox, callBox,
    h("h3", {}, "Search tree ", pick, tree ? h("button", { id: "tree-fit", type: "button" }, "fit") : null),
    tree ? legend() : h("p", { class: "quiet" }, "this task ran no search: no tree to draw"),
    h("div", { class: "tree-wrap" }, treeBox, nodeBox),
    tree && tree.rounds.length ? rounds(tree) : null);
  const redrawTimeline = () => drawTimeline(timelineBox, d.timeline, ui.batch, (it) => {
    ui.batch = it.batch || null;
    callDetail(callBox, it);
    redrawTimeline();
  });
  redrawTimeline();
  if (!tree) return;
  const pickNode = (id) => {
    ui.node = id;
    const n = tree.nodes.find((m) => m.id === id);
    ui.batch = n && n.usage ? n.usage.batch : null;
    nodeDetail(nodeBox, tree, id);
    for (const g of treeBox.querySelectorAll("g.node")) g.classList.toggle("selected", Number(g.dataset.node) === id);
    redrawTimeline();
  };
  const fit = drawTree(treeBox, tree, ui.node, pickNode);
  $("tree-fit").onclick = fit;
  if (tree.note) fill(nodeBox, h("p", { class: "quiet" }, tree.note));
  if (ui.node !== null && tree.nodes.some((n) => n.id === ui.node)) nodeDetail(nodeBox, tree, ui.node);
}

function legend() {
  const item = (cls, label) => h("span", { class: `key ${cls}` }, h("i", {}), label);
  return h("div", { class: "legend" }, h("span", { class: "scale" }, "score (this search\u2019s range): low ", h("b", {}), " high"),
    item("k-done", "finished"), item("k-chosen", "chosen answer's path"), item("k-resampled", "resampled (×copies)"),
    item("k-pruned", "pruned"), item("k-lookahead", "look-ahead"), item("k-unscored", "no score"));
}

function rounds(tree) {
  const keys = [...new Set(tree.rounds.flatMap((r) => Object.keys(r).filter((k) => r[k] !== null)))];
  return h("details", { id: "rounds" }, h("summary", {}, `rounds (${tree.rounds.length})`),
    h("table", { class: "grid" }, h("tr", {}, keys.map((k) => h("th", {}, k))),
      tree.rounds.map((r) => h("tr", {}, keys.map((k) => h("td", {},
        r[k] === null || r[k] === undefined ? "" : typeof r[k] === "number" && !Number.isInteger(r[k])
          ? r[k].toFixed(3) : Array.isArray(r[k]) ? r[k].join(" ") : String(r[k])))))));
}

function nodeDetail(box, tree, id) {
  const byId = new Map(tree.nodes.map((n) => [n.id, n]));
  const n = byId.get(id);
  const path = [];
  for (let at = n; at; at = byId.get(at.parent)) path.unshift(at.step);
  const marks = [n.done && "finished", n.answer && "the chosen answer", n.chosen && !n.answer && "on the chosen path",
    n.resampled && `resampled ×${n.copies}`, n.pruned && "pruned", n.lookahead && "look-ahead step",
    n.expanded && "expanded (A*)"].filter(Boolean);
  const u = n.usage;
  fill(box,
    h("h4", {}, id === 0 ? "root (the empty solution)" : `node #${id}`),
    table([
      ["score", h("span", { class: "score", "data-score": n.score === null ? "" : n.score }, fmt(n.score))],
      ["marks", h("span", { class: "marks" }, marks.join(", ") || "none")],
      id !== 0 ? ["tokens", `${n.tokens} generated` + (u ? ` (request: ${u.prompt_tokens} prompt tokens, ` +
        `${u.seconds.toFixed(2)} s, batch ${(u.batch || "?").slice(0, 8)})` : "")] : null,
    ]),
    h("h5", {}, "step"), h("pre", { class: "step" }, n.step),
    h("h5", {}, "text so far"), h("pre", { class: "text" }, path.join("")));
}

function callDetail(box, it) {
  const head = h("h4", {}, `${it.label} · ${fmt(it.start, 2)}–${fmt(it.end, 2)} s`);
  const body = it.calls.length
    ? it.calls.map((c, i) => h("div", { class: "call" },
      h("div", { class: "quiet" }, `request ${i + 1}: ${c.prompt_tokens} prompt + ${c.completion_tokens} completion tokens, ` +
        `${c.seconds.toFixed(2)} s, finish ${c.finish.join(", ")}`),
      h("pre", {}, `prompt: ${c.prompt}` + (c.prefix ? `\nprefix: …${c.prefix}` : "") +
        c.texts.map((t) => `\n→ ${t}`).join(""))))
    : h("pre", {}, JSON.stringify(it.detail, null, 2));
  fill(box, head, body);
}

// ---------------------------------------------------------------------------------- compare

async function renderCompare(fromPoll) {
  const usable = ui.runs.filter((r) => r.status === "ok");
  const select = (side) => h("select", { id: `cmp-${side}`, onchange: (ev) => { ui.compare[side] = Number(ev.target.value); renderCompare(); } },
    usable.map((r) => h("option", { value: r.id, selected: r.id === ui.compare[side] }, `${r.name} (${r.controller_label})`)));
  const body = $("compare-body");
  const head = h("div", { class: "pickers" }, h("label", {}, "A ", select("a")), h("label", {}, "B ", select("b")));
  if (usable.length < 2 || ui.compare.a === null) {
    fill(body, head, h("p", {}, "load two runs to compare them: agentic view A.jsonl B.jsonl"));
    return;
  }
  const d = await api(`/api/diff?a=${ui.compare.a}&b=${ui.compare.b}`);
  if (!changed("compare", d, fromPoll)) return;
  const side = (r) => [r.controller_label, pct(r.accuracy), `${r.solved}/${r.done}`, num(r.usage.completion_tokens), secs(r.usage.seconds)];
  const [a, b] = [side(d.a), side(d.b)];
  const cell = (run, t) => t
    ? h("td", { class: "clickable", onclick: () => openTask(run, t.key) }, `${fmt(t.score, 2)} · ${(t.output || "").slice(0, 80)}`)
    : h("td", { class: "quiet" }, "—");
  fill(body, head,
    h("table", { class: "grid side" }, h("tr", {}, ["", "controller", "accuracy", "solved", "tokens", "seconds"].map((c) => h("th", {}, c))),
      h("tr", {}, h("th", {}, `A: ${d.a.name}`), a.map((v) => h("td", {}, v))),
      h("tr", {}, h("th", {}, `B: ${d.b.name}`), b.map((v) => h("td", {}, v)))),
    d.note ? h("p", { class: "warn" }, d.note) : null,
    h("h3", {}, `Tasks that differ (${d.rows.length}; ${d.same} the same)`),
    h("table", { class: "grid", id: "diff" }, h("tr", {}, ["task", "difference", "A: score · output", "B: score · output"].map((c) => h("th", {}, c))),
      d.rows.map((r) => h("tr", { class: `diff ${r.kind}`, "data-task": r.task_id },
        h("td", {}, r.task_id), h("td", {}, r.why), cell(d.a.id, r.a), cell(d.b.id, r.b)))));
}

// ----------------------------------------------------------------------------------- curves

async function renderCurves(fromPoll) {
  const c = await api(`/api/curves?x=${ui.curveX}`);
  if (!changed("curves", c, fromPoll)) return;
  if (!c.lines.length) fill($("curves"), h("p", {}, "no run has finished a task yet"));
  else drawCurves($("curves"), c, (p) => { if (p.run !== null) { ui.run = p.run; show("run"); } });
  fill($("curve-notes"), ...c.skipped.map((m) => h("div", { class: "quiet" }, `left out: ${m}`)));
}

// ------------------------------------------------------------------------------------ start

for (const b of document.querySelectorAll("#tabs button")) b.onclick = () => show(b.dataset.tab);
$("curve-x").onchange = (ev) => { ui.curveX = ev.target.value; refreshTab(); };
markTab();
poll().then(() => {
  if (ui.live) setInterval(poll, 1000);
});
