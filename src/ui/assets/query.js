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
    const drawn = LT.plot(chart, columns, rows, numbers.length ? numbers[0] : -1, rows.slice(0, 50));
    $("query-chart").dataset.points = drawn.points;
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
