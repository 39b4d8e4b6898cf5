-- Several continuous queries sharing one source: a view, per-user sessions, a sliding
-- window per page, and a stateless filter printed to the console.
-- Run with: laketide run examples/sessions_and_views.sql

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  device STRUCT<os TEXT, version INT>,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once',
        on_error = 'dead_letter', dead_letter_path = 'lake/_dead_letters/clicks.jsonl');

CREATE VIEW purchases AS
SELECT user_id, page, amount, ts FROM clicks WHERE action = 'purchase';

CREATE TABLE user_sessions WITH (connector = 'delta', path = 'lake/user_sessions');
CREATE TABLE page_views_5min WITH (connector = 'filesystem', path = 'lake/page_views_5min', format = 'json');
CREATE TABLE big_purchases WITH (connector = 'console');

INSERT INTO user_sessions
SELECT user_id, window_start, window_end, count(*) AS events,
       count(DISTINCT page) AS pages, sum(amount) AS spent
FROM SESSION(clicks, ts, INTERVAL '30' SECOND)
GROUP BY user_id, window_start, window_end;

INSERT INTO page_views_5min
SELECT window_start, window_end, page, count(*) AS views, approx_distinct(user_id) AS users
FROM HOP(clicks, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
WHERE action = 'view'
GROUP BY window_start, window_end, page;

INSERT INTO big_purchases
SELECT user_id, upper(page) AS page, amount, ts FROM purchases WHERE amount > 150;
