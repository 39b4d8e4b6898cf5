// The query page: runs one statement with POST /api/query and shows a table and a quick chart
// (a time series when the result has a time column, else bars of the first numeric column).
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const chart = new LT.Chart($("query-chart"));

  function draw(result) {
    const { columns, rows } = result;
    LT.fillTable($("query-table"), columns, rows);
    const numbers = LT.numberColumns(columns);
    const t = LT.timeColumn(columns);
    let points = 0;
    if (numbers.length && t >= 0) {
      const data = LT.timeSeries(columns, rows, numbers[0]);
      chart.time(data);
      points = data.points;
    } else if (numbers.length) {
      const shown = rows.slice(0, 50);
      const label = columns.findIndex(c => c.kind === "text");
      chart.bars(shown.map((r, i) => label >= 0 ? LT.cell(r[label]) : String(i + 1)),
        shown.map(r => r[numbers[0]] === null ? null : Number(r[numbers[0]])), columns[numbers[0]].name);
      points = shown.length;
    } else {
      chart.destroy();
    }
    $("query-chart").dataset.points = points;
  }

  async function run() {
    const sql = $("sql").value.trim();
    if (!sql) return;
    $("run").disabled = true;
    $("query-error").textContent = "";
    $("query-info").textContent = "running…";
    try {
      const response = await fetch("/api/query", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sql }),
      });
      const body = await response.json();
      if (!response.ok) {
        $("query-error").textContent = body.error || response.statusText;
        $("query-info").textContent = "";
        chart.destroy();
        $("query-table").replaceChildren();
        return;
      }
      draw(body);
      $("query-info").textContent = `${LT.num(body.rows.length)} rows${body.truncated ? " (more left out)" : ""} in ${LT.millis(body.elapsed_ms)}`;
      $("tables").textContent = body.tables.length ? "tables: " + body.tables.join(", ") : "";
    } catch (e) {
      $("query-error").textContent = String(e);
      $("query-info").textContent = "";
    } finally {
      $("run").disabled = false;
    }
  }

  $("run").addEventListener("click", run);
  $("sql").addEventListener("keydown", e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
})();
