// Drawing for agentic view: the search tree, the timeline and the curves, as SVG.
// Positions come computed from the server (agentic/view/tree.py, timeline.py, curves.py); this
// file only scales them to pixels and wires the clicks. No library: the page works offline.
(() => {
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// An HTML element: h("td", {class: "x"}, "text", child). Text goes in as text, never as HTML.
function h(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  setAll(node, attrs);
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined && k !== false) {
      node.append(k instanceof Node ? k : String(k));
    }
  }
  return node;
}

function s(tag, attrs, ...kids) {
  const node = document.createElementNS(SVG_NS, tag);
  setAll(node, attrs);
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined) node.append(k instanceof Node ? k : String(k));
  }
  return node;
}

function setAll(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
}

// A score mapped to [0, 1] (the server's `shade`) as a colour: red (low) to green (high).
function shadeColor(shade) {
  if (shade === null || shade === undefined) return "#c8c8c8";
  return `hsl(${Math.round(120 * shade)}, 62%, 50%)`;
}

function fmt(v, digits = 4) {
  return v === null || v === undefined ? "–" : Number(v).toFixed(digits);
}

// Where the user zoomed and panned each picture to, by key (a search span): a redraw of the
// same picture (a live update) keeps it. A picture never touched shows all of itself, however
// it grows.
const VIEWS = new Map();

// Wheel zooms around the pointer, dragging pans; returns a function that shows it all again.
function panZoom(svg, key, full) {
  const vb = VIEWS.get(key) || { ...full };
  const apply = () => {
    VIEWS.set(key, vb);
    svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
  };
  svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    const px = vb.x + ((ev.clientX - r.left) / r.width) * vb.w;
    const py = vb.y + ((ev.clientY - r.top) / r.height) * vb.h;
    const f = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    vb.x = px - (px - vb.x) * f;
    vb.y = py - (py - vb.y) * f;
    vb.w *= f;
    vb.h *= f;
    apply();
  }, { passive: false });
  let drag = null;
  let dragged = false;
  svg.addEventListener("pointerdown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y };
    dragged = false;
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) dragged = true;
    if (!dragged) return;
    const r = svg.getBoundingClientRect();
    vb.x = drag.vx - (dx / r.width) * vb.w;
    vb.y = drag.vy - (dy / r.height) * vb.h;
    apply();
  });
  const stop = () => { drag = null; };
  svg.addEventListener("pointerup", stop);
  svg.addEventListener("pointerleave", stop);
  // the click that ends a drag is not a click on a node
  svg.addEventListener("click", (ev) => {
    if (dragged) ev.stopPropagation();
    dragged = false;
  }, true);
  return () => {
    Object.assign(vb, full);
    svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
    VIEWS.delete(key);
  };
}

// The search tree: one circle per node (a square when finished), coloured by score.
function drawTree(box, view, selected, onPick) {
  const DX = 38, DY = 70, PAD = 30, R = 10;
  const W = Math.max(view.width - 1, 1) * DX + 2 * PAD;
  const H = view.depth * DY + 2 * PAD;
  const px = (n) => PAD + n.x * DX;
  const py = (n) => PAD + n.y * DY;
  const byId = new Map(view.nodes.map((n) => [n.id, n]));
  const edges = s("g", { class: "edges" });
  const nodes = s("g", { class: "nodes" });
  for (const n of view.nodes) {
    const p = byId.get(n.parent);
    if (p) {
      const cls = ["edge", n.chosen && p.chosen ? "chosen" : "", n.lookahead ? "lookahead" : "",
        n.pruned ? "pruned" : ""].join(" ");
      edges.append(s("line", { class: cls, x1: px(p), y1: py(p), x2: px(n), y2: py(n) }));
    }
    const marks = ["node", n.done ? "done" : "", n.pruned ? "pruned" : "",
      n.lookahead ? "lookahead" : "", n.resampled ? "resampled" : "", n.chosen ? "chosen" : "",
      n.answer ? "answer" : "", n.id === selected ? "selected" : ""].join(" ");
    const g = s("g", {
      class: marks, "data-node": n.id, transform: `translate(${px(n)},${py(n)})`,
      onclick: () => onPick(n.id),
    });
    const fill = shadeColor(n.shade);
    g.append(n.done
      ? s("rect", { class: "shape", x: -R, y: -R, width: 2 * R, height: 2 * R, rx: 2, fill })
      : s("circle", { class: "shape", r: R, fill }));
    if (n.resampled) {
      g.append(s("circle", { class: "ring", r: R + 4 }));
      g.append(s("text", { class: "copies", x: R + 4, y: -R - 2 }, `×${n.copies}`));
    }
    if (n.pruned) g.append(s("text", { class: "cross", y: 4 }, "✕"));
    else g.append(s("text", { class: "nid", y: 3.5 }, n.id === 0 ? "•" : n.id));
    g.append(s("title", {}, n.id === 0 ? "the empty solution (root)"
      : `#${n.id} score ${fmt(n.score)}\n${n.step.slice(0, 160)}`));
    nodes.append(g);
  }
  const svg = s("svg", { class: "tree", height: Math.min(Math.max(H, 160), 560) }, edges, nodes);
  box.replaceChildren(svg);
  return panZoom(svg, view.search, { x: 0, y: 0, w: W, h: H });
}

// Seconds to a tick step of 1, 2 or 5 times a power of ten, about `count` ticks over `span`.
function niceStep(span, count) {
  const raw = Math.max(span, 1e-9) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= raw);
}

// The timeline: one lane per row, bars for searches, model-call batches and reward calls,
// ticks for other events.
function drawTimeline(box, tl, selectedBatch, onPick) {
  const LABEL = 86, LH = 22, TOP = 8, AXIS = 24;
  const W = Math.max(box.clientWidth || 900, 500);
  const span = Math.max(tl.duration, 1e-3);
  const x = (t) => LABEL + (t / span) * (W - LABEL - 12);
  const H = TOP + tl.lanes.length * LH + AXIS;
  const svg = s("svg", { class: "timeline", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  tl.lanes.forEach((lane, i) => {
    const first = i === 0 || tl.lanes[i - 1].group !== lane.group;
    svg.append(s("rect", { class: `lane lane-${lane.group}`, x: LABEL, y: TOP + i * LH,
      width: W - LABEL - 12, height: LH - 2 }));
    if (first) svg.append(s("text", { class: "lane-name", x: 4, y: TOP + i * LH + 15 }, lane.group));
  });
  const step = niceStep(span, 6);
  const axisY = TOP + tl.lanes.length * LH + 4;
  for (let t = 0; t <= span + 1e-9; t += step) {
    svg.append(s("line", { class: "tick", x1: x(t), x2: x(t), y1: TOP, y2: axisY }));
    svg.append(s("text", { class: "tick-label", x: x(t), y: axisY + 14 },
      `${Number(t.toFixed(3))} s`));
  }
  for (const it of tl.items) {
    const y = TOP + it.lane * LH;
    const linked = selectedBatch && it.batch === selectedBatch ? " linked" : "";
    const g = s("g", { class: `item kind-${it.kind}${linked}`, "data-item": it.id,
      onclick: () => onPick(it) });
    if (it.kind === "event") {
      g.append(s("path", { d: `M${x(it.start)},${y + 3} l5,7 l-5,7 l-5,-7 z` }));
      const left = it.flip;
      g.append(s("text", { class: "item-label", x: x(it.start) + (left ? -7 : 7), y: y + 14,
        "text-anchor": left ? "end" : "start" }, it.label));
    } else {
      const w = Math.max(x(it.end) - x(it.start), 2);
      g.append(s("rect", { x: x(it.start), y: y + 2, width: w, height: LH - 6, rx: 3 }));
      if (w > it.label.length * 6.2 + 6) {
        g.append(s("text", { class: "item-label", x: x(it.start) + 4, y: y + 14 }, it.label));
      }
    }
    g.append(s("title", {}, `${it.label}: ${fmt(it.start, 2)}–${fmt(it.end, 2)} s`));
    svg.append(g);
  }
  box.replaceChildren(svg);
}

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22"];

// Accuracy against mean cost per task, one line per controller (as `agentic plot budget`).
function drawCurves(box, c, onPick) {
  const W = 860, H = 440, L = 64, R = 250, T = 16, B = 52;
  const x = (v) => {
    const f = c.log_x
      ? (Math.log10(v) - Math.log10(c.x_min)) / (Math.log10(c.x_max) - Math.log10(c.x_min))
      : (v - c.x_min) / (c.x_max - c.x_min || 1);
    return L + f * (W - L - R);
  };
  const y = (a) => T + (1 - (a + 0.03) / 1.08) * (H - T - B);
  const svg = s("svg", { class: "curves", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  for (const v of c.ticks) {
    svg.append(s("line", { class: "gridline", x1: x(v), x2: x(v), y1: T, y2: H - B }));
    svg.append(s("text", { class: "tick-label", x: x(v), y: H - B + 16 }, Number(v.toPrecision(4))));
  }
  for (let a = 0; a <= 1.0001; a += 0.2) {
    svg.append(s("line", { class: "gridline", x1: L, x2: W - R, y1: y(a), y2: y(a) }));
    svg.append(s("text", { class: "tick-label y", x: L - 6, y: y(a) + 4 }, `${Math.round(a * 100)}%`));
  }
  svg.append(s("text", { class: "axis-label", x: (L + W - R) / 2, y: H - 12 },
    c.x_label + (c.log_x ? " (log scale)" : "")));
  svg.append(s("text", { class: "axis-label", transform: `translate(16,${(T + H - B) / 2}) rotate(-90)` },
    "accuracy (mean score)"));
  c.lines.forEach((line, i) => {
    const color = PALETTE[i % PALETTE.length];
    const pts = [...line.points].sort((p, q) => p.x - q.x);
    svg.append(s("polyline", { class: "curve", stroke: color,
      points: pts.map((p) => `${x(p.x)},${y(p.accuracy)}`).join(" ") }));
    for (const p of pts) {
      svg.append(s("circle", { class: "point", cx: x(p.x), cy: y(p.accuracy), r: 5, fill: color,
        "data-run": p.run, onclick: () => onPick(p) },
        s("title", {}, `${line.label} ${p.note}\n${p.file}\naccuracy ${(p.accuracy * 100).toFixed(1)}%` +
          ` over ${p.tasks} tasks, ${Number(p.x.toPrecision(4))} per task`)));
      if (p.note) svg.append(s("text", { class: "note", x: x(p.x) + 7, y: y(p.accuracy) - 7, fill: color }, p.note));
    }
    const ly = T + 14 + i * 20;
    svg.append(s("rect", { x: W - R + 16, y: ly - 9, width: 12, height: 12, fill: color }));
    svg.append(s("text", { class: "curve-legend", x: W - R + 34, y: ly + 1 }, line.label));
  });
  box.replaceChildren(svg);
}

window.Draw = { h, s, fmt, shadeColor, drawTree, drawTimeline, drawCurves };
})();
