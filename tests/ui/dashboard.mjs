// Drives the dashboard of a running `laketide run --ui` in headless Chromium and checks that
// the graph, the counters and a result chart update as events arrive, then runs a query on the
// query page. Prints one JSON line of what it saw; exits non-zero on the first failed check.
// Usage: node tests/ui/dashboard.mjs URL SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
const TIMEOUT = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1800 } });
  page.on("pageerror", e => problems.push("page error: " + e.message));
  page.on("console", m => { if (m.type() === "error") problems.push("console: " + m.text()); });
  page.on("requestfailed", r => {
    // An event stream is cut when the run ends; anything else is a failure.
    if (!r.url().endsWith("/api/events")) problems.push("request failed: " + r.url());
  });
  await page.goto(url);
  const pipeline = await (await page.request.get(new URL("/api/pipeline", url).href)).json();

  // The graph: one box per dataflow node, and an edge per input.
  await page.waitForFunction(n => document.querySelectorAll("#graph g.node").length === n,
    pipeline.nodes.length, { timeout: TIMEOUT });
  const edges = await page.locator("#graph path.edge").count();
  const expectedEdges = pipeline.nodes.reduce((n, node) => n + node.inputs.length, 0);
  if (edges !== expectedEdges) throw new Error(`graph has ${edges} edges, expected ${expectedEdges}`);

  const read = () => page.evaluate(() => {
    const n = id => Number(document.getElementById(id).textContent.replace(/,/g, "")) || 0;
    const panel = document.querySelector(".result-panel");
    return {
      updates: Number(document.body.dataset.updates || 0),
      records_in: n("total-records-in"),
      rows_written: n("total-rows-written"),
      windows: n("total-windows"),
      chart_points: panel ? Number(panel.dataset.points || 0) : 0,
      chart_series: panel ? Number(panel.dataset.series || 0) : 0,
      chart_canvas: panel ? panel.querySelectorAll("canvas").length : 0,
      table_rows: panel ? panel.querySelectorAll(".table-wrap tbody tr").length : 0,
      source_counter: document.querySelector("#graph text.counter[data-node-id='0']").textContent,
      checkpoint: document.getElementById("checkpoint").textContent,
      state: document.getElementById("run-state").textContent,
    };
  });
  const waitFor = async (what, check) => {
    const deadline = Date.now() + TIMEOUT;
    let seen;
    while (Date.now() < deadline) {
      seen = await read();
      if (check(seen)) return seen;
      await page.waitForTimeout(250);
    }
    throw new Error(`timed out waiting for ${what}; last seen ${JSON.stringify(seen)}`);
  };
  const first = await waitFor("first results", s => s.records_in > 0 && s.chart_points > 0 && s.chart_canvas > 0 && s.table_rows > 0);
  // More events arrive while the page stays open: the counters and the chart grow without a reload.
  const later = await waitFor("updates", s => s.records_in > first.records_in && s.chart_points > first.chart_points && s.rows_written > first.rows_written);
  const checkpointed = await waitFor("a checkpoint", s => /^checkpoint \d+ stored/.test(s.checkpoint));
  if (!/^read [\d,]+ · /.test(later.source_counter)) throw new Error("the source's graph counter reads " + later.source_counter);
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // The query page: a statement over the pipeline's tables, answered with a table and a chart.
  const sink = pipeline.nodes.find(n => n.role === "sink").name;
  await page.goto(new URL("/query", url).href);
  await page.fill("#sql", `SELECT page, sum(views) AS views FROM ${sink} GROUP BY page ORDER BY views DESC`);
  await page.click("#run");
  await page.waitForFunction(() => document.querySelectorAll("#query-table tbody tr").length > 0, null, { timeout: TIMEOUT });
  const query = await page.evaluate(() => ({
    rows: [...document.querySelectorAll("#query-table tbody tr")].map(tr => [...tr.cells].map(td => td.textContent)),
    chart_points: Number(document.getElementById("query-chart").dataset.points || 0),
    error: document.getElementById("query-error").textContent,
  }));
  if (query.error) throw new Error("query failed: " + query.error);
  if (query.chart_points !== query.rows.length) throw new Error(`query chart has ${query.chart_points} bars for ${query.rows.length} rows`);
  await page.screenshot({ path: `${shots}/query.png`, fullPage: true });
  if (problems.length) throw new Error(problems.join("\n"));
  console.log(JSON.stringify({ nodes: pipeline.nodes.length, edges, first, later, checkpoint: checkpointed.checkpoint, query }));
} catch (e) {
  console.error(String(e && e.stack || e));
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}
