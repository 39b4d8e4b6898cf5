-- Anomaly alerts: a page whose views in the last 10 seconds are far above its recent average
-- (per 10 seconds, over the 5 minutes before) raises an alert. Alerts are POSTed to a webhook,
-- signed with HMAC-SHA256, and kept in a Delta table.
--
-- Run with a webhook that receives them (any HTTP endpoint that answers 2xx):
--   ALERT_WEBHOOK_URL=https://hooks.example.com/alerts ALERT_WEBHOOK_SECRET=change-me \
--     laketide run examples/anomaly_alerts.sql --ui 127.0.0.1:8080
-- The URL and the secret are read from the environment, so neither is in this file, the logs,
-- `laketide explain` or the dashboard.

CREATE TABLE page_views (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/page_traffic/', format = 'json', mode = 'once');

CREATE TABLE page_alerts WITH (connector = 'webhook', url_env = 'ALERT_WEBHOOK_URL',
                               secret_env = 'ALERT_WEBHOOK_SECRET', timeout = '5s');
CREATE TABLE page_alert_log WITH (connector = 'delta', path = 'lake/page_alerts');

-- Every 10 seconds, per page: the views of the last 10 seconds, and the average per 10 seconds
-- over the rest of a 5-minute window (counting only 10-second buckets that saw the page, so
-- that a page's first minutes have an honest baseline).
CREATE VIEW page_rates AS
SELECT page, window_start, window_end,
       sum(CASE WHEN ts >= window_end - INTERVAL '10' SECOND THEN 1 ELSE 0 END) AS last_10s,
       CAST(sum(CASE WHEN ts < window_end - INTERVAL '10' SECOND THEN 1 ELSE 0 END) AS DOUBLE)
         / greatest(count(DISTINCT CASE WHEN ts < window_end - INTERVAL '10' SECOND
                                        THEN date_bin(INTERVAL '10' SECOND, ts) END), 1)
         AS avg_10s
FROM HOP(page_views, ts, INTERVAL '10' SECOND, INTERVAL '5' MINUTE)
GROUP BY page, window_start, window_end;

-- The rule: at least 20 views, and more than four times the recent average.
CREATE VIEW anomalies AS
SELECT page, window_end AS detected_at, last_10s, round(avg_10s, 2) AS avg_10s,
       round(last_10s / greatest(avg_10s, 1.0), 1) AS ratio
FROM page_rates
WHERE last_10s >= 20 AND last_10s > 4 * avg_10s;

INSERT INTO page_alerts SELECT * FROM anomalies;
INSERT INTO page_alert_log SELECT * FROM anomalies;
