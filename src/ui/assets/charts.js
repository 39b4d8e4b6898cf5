// Shared by the dashboard and the query page: number formatting, result tables, and charts of
// result rows (uPlot). Rows come as arrays of JSON values with a column list
// [{name, data_type, kind: "time" | "number" | "text"}].
"use strict";

const LT = (() => {
  const PALETTE = ["#1f6feb", "#2da44e", "#bf8700", "#cf222e", "#8250df", "#0a7ea4",
                   "#d4548a", "#57606a", "#6e7781", "#953800"];
  // At most this many series per chart; the others are counted, not drawn.
  const MAX_SERIES = 8;

  function num(n) {
    if (n === null || n === undefined) return "–";
    return Number(n).toLocaleString("en-US");
  }

  function rate(n) {
    if (!isFinite(n)) return "–";
    if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return n.toFixed(0);
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1 << 30) return (n / (1 << 20)).toFixed(1) + " MiB";
    return (n / (1 << 30)).toFixed(2) + " GiB";
  }

  function millis(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + "m" + String(Math.floor((ms % 60000) / 1000)).padStart(2, "0") + "s";
    if (ms < 86400000) return Math.floor(ms / 3600000) + "h" + String(Math.floor((ms % 3600000) / 60000)).padStart(2, "0") + "m";
    return Math.floor(ms / 86400000) + "d" + String(Math.floor((ms % 86400000) / 3600000)).padStart(2, "0") + "h";
  }

  function isoTime(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  // Epoch seconds of a time value as the server sends it (ISO text, zone optional = UTC).
  function seconds(v) {
    if (v === null || v === undefined) return null;
    if (typeof v === "number") return v / 1000;
    let s = String(v);
    if (s.includes("T") && !/(Z|[+-]\d\d:?\d\d)$/.test(s)) s += "Z";
    const t = Date.parse(s);
    return isNaN(t) ? null : t / 1000;
  }

  function cell(v) {
    if (v === null || v === undefined) return "NULL";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  // Fills `table` (a <table>) with columns and rows.
  function fillTable(table, columns, rows) {
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    for (const c of columns) {
      const th = document.createElement("th");
      th.textContent = c.name;
      th.title = c.data_type;
      if (c.kind === "number") th.className = "num";
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const r of rows) {
      const tr = body.insertRow();
      r.forEach((v, i) => {
        const td = tr.insertCell();
        td.textContent = cell(v);
        if (columns[i] && columns[i].kind === "number") td.className = "num";
      });
    }
  }

  // The time column to chart by: window_end, then window_start, then the first time column.
  function timeColumn(columns) {
    for (const name of ["window_end", "window_start"]) {
      const i = columns.findIndex(c => c.name === name && c.kind === "time");
      if (i >= 0) return i;
    }
    return columns.findIndex(c => c.kind === "time");
  }

  function numberColumns(columns) {
    return columns.map((c, i) => c.kind === "number" ? i : -1).filter(i => i >= 0);
  }

  // Chart data: one series per group (the text columns' values), x = the time column,
  // y = column `value`. Keeps the MAX_SERIES groups with the largest latest values.
  function timeSeries(columns, rows, value) {
    const t = timeColumn(columns);
    const groups = columns.map((c, i) => c.kind === "text" ? i : -1).filter(i => i >= 0);
    const byGroup = new Map();
    for (const r of rows) {
      const x = seconds(r[t]);
      const y = r[value];
      if (x === null || y === null || y === undefined) continue;
      const key = groups.length ? groups.map(i => cell(r[i])).join(" / ") : columns[value].name;
      if (!byGroup.has(key)) byGroup.set(key, new Map());
      byGroup.get(key).set(x, Number(y));
    }
    const latest = g => { let bx = -Infinity, by = 0; for (const [x, y] of g) if (x > bx) { bx = x; by = y; } return by; };
    const keys = [...byGroup.keys()].sort((a, b) => latest(byGroup.get(b)) - latest(byGroup.get(a)) || a.localeCompare(b));
    const shown = keys.slice(0, MAX_SERIES).sort();
    const xs = [...new Set(shown.flatMap(k => [...byGroup.get(k).keys()]))].sort((a, b) => a - b);
    const series = shown.map(k => ({ label: k, values: xs.map(x => byGroup.get(k).has(x) ? byGroup.get(k).get(x) : null) }));
    return { xs, series, hidden: keys.length - shown.length, points: series.reduce((n, s) => n + s.values.filter(v => v !== null).length, 0) };
  }

  // A chart in `el` that can be updated; recreated when its series change.
  class Chart {
    constructor(el) { this.el = el; this.plot = null; this.key = ""; }

    width() { return Math.max(320, this.el.clientWidth || 600); }

    time(data) {
      const key = "time|" + data.series.map(s => s.label).join("\u0000");
      const aligned = [data.xs, ...data.series.map(s => s.values)];
      if (this.plot && key === this.key) { this.plot.setData(aligned); return; }
      this.destroy();
      this.key = key;
      this.plot = new uPlot({
        width: this.width(), height: 260,
        // Event times are UTC (laketide reads timestamps without a zone as UTC): label them so.
        tzDate: ts => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
        // A single instant gets a minute either side (uPlot would widen it to 1,000 days).
        scales: { x: { time: true, range: (u, min, max) => {
          const xs = u.data[0];
          return xs.length && xs[0] === xs[xs.length - 1] ? [xs[0] - 60, xs[0] + 60] : [min, max];
        } } },
        series: [{}, ...data.series.map((s, i) => ({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true, points: { show: true, size: 4 } }))],
        axes: [{}, { size: 60 }],
        legend: { live: false },
      }, aligned, this.el);
    }

    // Bars of column `value` per row, labelled by column `label` (or the row number).
    bars(labels, values, name) {
      const key = "bars|" + name + "|" + labels.join("\u0000");
      const xs = values.map((_, i) => i);
      if (this.plot && key === this.key) { this.plot.setData([xs, values]); return; }
      this.destroy();
      this.key = key;
      this.plot = new uPlot({
        width: this.width(), height: 260,
        scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] },
                  y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.05 : 1] } },
        series: [{}, { label: name, fill: PALETTE[0] + "99", stroke: PALETTE[0], paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } }],
        axes: [{ values: (u, splits) => splits.map(i => Number.isInteger(i) && labels[i] !== undefined ? labels[i] : "") }, { size: 60 }],
        legend: { live: false },
      }, [xs, values], this.el);
    }

    destroy() {
      if (this.plot) { this.plot.destroy(); this.plot = null; }
      this.el.replaceChildren();
    }
  }

  // Charts column `value` of result rows in `chart`: a time series when there is a time
  // column, else bars of the first `bars` rows labelled by the first text column. Returns what
  // was drawn: {series, points, hidden}.
  function plot(chart, columns, rows, value, bars) {
    if (value === undefined || value < 0) { chart.destroy(); return { series: 0, points: 0, hidden: 0 }; }
    if (timeColumn(columns) >= 0) {
      const data = timeSeries(columns, rows, value);
      chart.time(data);
      return { series: data.series.length, points: data.points, hidden: data.hidden };
    }
    const label = columns.findIndex(c => c.kind === "text");
    chart.bars(bars.map((r, i) => label >= 0 ? cell(r[label]) : String(i + 1)),
      bars.map(r => r[value] === null ? null : Number(r[value])), columns[value].name);
    return { series: 1, points: bars.length, hidden: 0 };
  }

  return { num, rate, bytes, millis, isoTime, seconds, cell, fillTable, timeColumn, numberColumns, timeSeries, plot, Chart, MAX_SERIES };
})();
