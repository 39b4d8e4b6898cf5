-- Revenue per action and minute from a folder of JSON-lines click events.
-- Run with: laketide run examples/clickstream.sql
-- Then:     laketide query "SELECT * FROM revenue_per_minute ORDER BY window_start, action"

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once');

CREATE TABLE revenue_per_minute WITH (connector = 'delta', path = 'lake/revenue_per_minute');

INSERT INTO revenue_per_minute
SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
GROUP BY window_start, window_end, action;
