// The live dashboard: draws the pipeline graph once, then applies every status update that
// /api/events streams (server-sent events, about twice a second).
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  let graph = null;
  let previous = null; // the last status, for rates
  const rates = new Map(); // node id -> records/s (of rows_out; rows_in for sinks)
  const panels = new Map(); // sink name -> {root, chart, table, select, rows, columns}

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  // Layered drawing: a node's column is the length of the longest path from a source to it.
  function drawGraph(g) {
    const W = 190, H = 66, GX = 44, GY = 22;
    const layer = [];
    for (const n of g.nodes) layer[n.id] = n.inputs.length ? 1 + Math.max(...n.inputs.map(i => layer[i])) : 0;
    const rows = [];
    const pos = [];
    for (const n of g.nodes) {
      const l = layer[n.id];
      rows[l] = (rows[l] || 0) + 1;
      pos[n.id] = { x: 10 + l * (W + GX), y: 10 + (rows[l] - 1) * (H + GY) };
    }
    const width = 20 + rows.length * (W + GX) - GX;
    const height = 20 + Math.max(...rows) * (H + GY) - GY;
    // Drawn at its natural size; a wide pipeline scrolls sideways rather than shrinking.
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "pipeline graph" });
    for (const n of g.nodes) {
      for (const i of n.inputs) {
        const a = pos[i], b = pos[n.id];
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        svg("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}`, "marker-end": "url(#arrow)" }, root);
      }
    }
    const defs = svg("defs", {}, root);
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 5, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, defs);
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8c959f" }, marker);
    for (const n of g.nodes) {
      const p = pos[n.id];
      const node = svg("g", { class: `node ${n.role}`, "data-node-id": n.id, transform: `translate(${p.x},${p.y})` }, root);
      svg("title", {}, node).textContent = `${n.role} ${n.name}: ${n.description}`;
      svg("rect", { width: W, height: H, rx: 6 }, node);
      const name = svg("text", { class: "name", x: 10, y: 19 }, node);
      name.textContent = n.name.length > 26 ? n.name.slice(0, 25) + "…" : n.name;
      const role = svg("text", { class: "role", x: 10, y: 35 }, node);
      const desc = n.description.length > 24 ? n.description.slice(0, 23) + "…" : n.description;
      role.textContent = `${n.role} · ${desc}`;
      const counter = svg("text", { class: "counter", x: 10, y: 55, "data-node-id": n.id }, node);
      counter.textContent = "–";
    }
    $("graph").replaceChildren(root);
  }

  function roleOf(id) { return graph ? graph.nodes[id].role : "operator"; }

  function nodeCounterText(n) {
    const role = roleOf(n.id);
    const r = LT.rate(rates.get(n.id) || 0);
    if (role === "source") return `read ${LT.num(n.rows_out)} · ${r}/s`;
    if (role === "sink") return `wrote ${LT.num(n.rows_out)} · ${r}/s`;
    let t = `in ${LT.num(n.rows_in)} · out ${LT.num(n.rows_out)}`;
    if (n.late_rows) t += ` · late ${LT.num(n.late_rows)}`;
    return t;
  }

  function watermarkText(ms, now) {
    if (ms === null || ms === undefined) return "–";
    if (ms > now) return `${LT.isoTime(ms)} (${LT.millis(ms - now)} AHEAD of the clock: future event times moved it)`;
    return `${LT.isoTime(ms)} (${LT.millis(Math.max(0, now - ms))} behind)`;
  }

  function updateRates(s) {
    if (previous) {
      const dt = (s.now_ms - previous.now_ms) / 1000;
      if (dt > 0) {
        for (const n of s.nodes) {
          const before = previous.nodes[n.id];
          const count = roleOf(n.id) === "sink" ? "rows_in" : "rows_out";
          rates.set(n.id, Math.max(0, (n[count] - before[count]) / dt));
        }
      }
    }
    previous = { now_ms: s.now_ms, nodes: s.nodes };
  }

  function row(tbody, cells) {
    const tr = tbody.insertRow();
    for (const [text, cls] of cells) {
      const td = tr.insertCell();
      td.textContent = text;
      if (cls) td.className = cls;
    }
    return tr;
  }

  function updateTables(s) {
    const conn = new Map(s.connectors.map(c => [c.role + ":" + c.name, c]));
    const sources = $("sources").tBodies[0];
    const sinks = $("sinks").tBodies[0];
    sources.replaceChildren();
    sinks.replaceChildren();
    for (const n of s.nodes) {
      const role = roleOf(n.id);
      const c = conn.get(role + ":" + n.name) || { bytes: 0, throttles: 0, retries: 0, lag_ms: {} };
      if (role === "source") {
        const lags = Object.entries(c.lag_ms).map(([shard, ms]) => `${shard} ${LT.millis(ms)}`).join(", ");
        const tr = row(sources, [[n.name], [LT.num(n.rows_out), "num"], [LT.rate(rates.get(n.id) || 0), "num"],
          [LT.bytes(c.bytes), "num"], [LT.num(s.bad_records[n.name] || 0), "num"],
          [LT.num(s.late_by_source[n.name] || 0), "num"], [LT.num(c.throttles), "num"],
          [LT.num(c.retries), "num"], [watermarkText(n.watermark_ms, s.now_ms)], [lags || "–"]]);
        tr.dataset.source = n.name;
        if (s.ahead_of_clock_ms[n.name] !== undefined) tr.classList.add("ahead");
      } else if (role === "sink") {
        const tr = row(sinks, [[n.name], [LT.num(n.rows_out), "num"], [LT.rate(rates.get(n.id) || 0), "num"],
          [LT.bytes(c.bytes), "num"], [LT.num(c.throttles), "num"], [LT.num(c.retries), "num"],
          [watermarkText(n.watermark_ms, s.now_ms)]]);
        tr.dataset.sink = n.name;
      }
    }
  }

  function updateOverview(s) {
    let recordsIn = 0, written = 0, windows = 0, late = 0, rateIn = 0, wm = null;
    for (const n of s.nodes) {
      const role = roleOf(n.id);
      if (role === "source") { recordsIn += n.rows_out; rateIn += rates.get(n.id) || 0; }
      if (role === "sink") {
        written += n.rows_out;
        if (n.watermark_ms !== null) wm = wm === null ? n.watermark_ms : Math.min(wm, n.watermark_ms);
      }
      windows += n.windows_emitted;
      late += n.late_rows;
    }
    const bad = Object.values(s.bad_records).reduce((a, b) => a + b, 0);
    $("total-records-in").textContent = LT.num(recordsIn);
    $("total-rate").textContent = LT.rate(rateIn) + "/s";
    $("total-rows-written").textContent = LT.num(written);
    $("total-windows").textContent = LT.num(windows);
    $("total-late").textContent = LT.num(late);
    $("total-bad").textContent = LT.num(bad);
    $("late-card").classList.toggle("warn", late > 0);
    $("bad-card").classList.toggle("warn", bad > 0);
    $("watermark").textContent = wm === null ? "–" : LT.isoTime(wm).slice(11);
    $("watermark-delay").textContent = wm === null ? "no watermark yet"
      : wm > s.now_ms ? `${LT.millis(wm - s.now_ms)} AHEAD of the clock`
      : `${LT.millis(s.now_ms - wm)} behind now`;
    const ahead = Object.keys(s.ahead_of_clock_ms);
    $("watermark-delay").title = ahead.length ? `watermark ahead of the clock: ${ahead.join(", ")}` : "";
    for (const n of s.nodes) {
      const t = document.querySelector(`#graph text.counter[data-node-id="${n.id}"]`);
      if (t) t.textContent = nodeCounterText(n);
    }
  }

  function updateCheckpoint(s) {
    const c = s.checkpoint;
    const el = $("checkpoint");
    if (!c) { el.textContent = "no checkpoint yet"; el.className = "muted"; return; }
    let text = c.id ? `checkpoint ${c.id} stored at ${LT.isoTime(c.completed_at_ms)} — ${LT.bytes(c.bytes)} in ${LT.millis(c.duration_ms)}` : "no checkpoint yet";
    if (c.restored_from) text += ` · resumed from checkpoint ${c.restored_from}`;
    if (c.failed) text += ` · ${c.failed} failed`;
    el.textContent = text;
    el.className = c.failed ? "error" : "";
    el.dataset.checkpoint = c.id;
  }

  function panelFor(sink) {
    if (panels.has(sink)) return panels.get(sink);
    $("no-results").hidden = true;
    const root = document.createElement("div");
    root.className = "result-panel";
    root.dataset.sink = sink;
    const h = document.createElement("h3");
    h.textContent = sink;
    const controls = document.createElement("div");
    controls.className = "controls";
    const select = document.createElement("select");
    select.title = "value to chart";
    const info = document.createElement("span");
    controls.append("chart", select, info);
    const chartEl = document.createElement("div");
    chartEl.className = "chart";
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    const table = document.createElement("table");
    wrap.appendChild(table);
    root.append(h, controls, chartEl, wrap);
    $("results").appendChild(root);
    const p = { root, chart: new LT.Chart(chartEl), table, select, info, rows: [], columns: [], total: 0 };
    select.addEventListener("change", () => drawPanel(p));
    panels.set(sink, p);
    return p;
  }

  function drawPanel(p) {
    const numbers = LT.numberColumns(p.columns);
    if (p.select.options.length !== numbers.length) {
      p.select.replaceChildren(...numbers.map(i => new Option(p.columns[i].name, i)));
    }
    const value = numbers.length ? Number(p.select.value || numbers[0]) : -1;
    const drawn = LT.plot(p.chart, p.columns, p.rows, value, p.rows.slice(-30));
    p.root.dataset.series = drawn.series;
    p.root.dataset.points = drawn.points;
    let info = `${LT.num(p.total)} rows received; showing the latest ${Math.min(15, p.rows.length)}`;
    if (drawn.hidden) info += ` · chart shows ${drawn.series} of ${drawn.series + drawn.hidden} groups (largest latest values)`;
    p.info.textContent = info;
    LT.fillTable(p.table, p.columns, p.rows.slice(-15).reverse());
  }

  function updateResults(s) {
    for (const [sink, r] of Object.entries(s.results)) {
      if (!r.rows.length) continue;
      const p = panelFor(sink);
      p.columns = r.columns;
      p.rows = r.rows;
      p.total = r.total;
      drawPanel(p);
    }
  }

  function apply(s) {
    const badge = $("run-state");
    badge.textContent = s.run.state === "failed" ? "failed: " + s.run.error : s.run.state;
    badge.className = "badge " + s.run.state;
    updateRates(s);
    updateOverview(s);
    updateTables(s);
    updateCheckpoint(s);
    updateResults(s);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  async function start() {
    const response = await fetch("/api/pipeline");
    graph = await response.json();
    $("pipeline").textContent = graph.pipeline;
    document.title = `${graph.pipeline} · laketide`;
    drawGraph(graph);
    const events = new EventSource("/api/events");
    events.addEventListener("status", e => apply(JSON.parse(e.data)));
    events.onerror = () => {
      const badge = $("run-state");
      if (!/finished|failed/.test(badge.className)) { badge.textContent = "disconnected"; badge.className = "badge disconnected"; }
    };
  }

  start().catch(e => { $("graph").textContent = "could not load the pipeline: " + e; });
})();
