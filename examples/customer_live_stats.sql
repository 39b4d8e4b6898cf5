-- Live customer statistics (updating queries): one current row per customer, served from
-- DynamoDB, and one row per day and action in a Delta table, both kept up to date as clicks
-- arrive (GROUP BY without a window; see README, "Updating queries").
-- Needs a DynamoDB endpoint (see README, "Local AWS-compatible servers"):
--   . scripts/emulators.sh          # or: docker compose up -d
--   laketide run examples/customer_live_stats.sql
--   aws dynamodb get-item --table-name customer_stats --key '{"user_id":{"S":"u1"}}'
--   laketide query "SELECT * FROM daily_actions ORDER BY day, action"
-- The endpoint and region come from the AWS environment (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION).

-- How often changed results are written (the default is 1s).
SET update_interval = '1s';

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once');

CREATE TABLE customer_stats WITH (
  connector = 'dynamodb',
  table = 'customer_stats',
  primary_key = 'user_id',
  create_if_missing = 'true'
);

CREATE TABLE daily_actions WITH (
  connector = 'delta',
  path = 'lake/daily_actions',
  primary_key = 'day, action'
);

INSERT INTO customer_stats
SELECT user_id, count(*) AS events, sum(amount) AS spend, max(ts) AS last_seen,
       count(DISTINCT page) AS pages, count(*) FILTER (WHERE action = 'purchase') AS purchases
FROM clicks
GROUP BY user_id;

INSERT INTO daily_actions
SELECT to_char(ts, '%Y-%m-%d') AS day, action, count(*) AS events, sum(amount) AS revenue
FROM clicks
GROUP BY to_char(ts, '%Y-%m-%d'), action;
