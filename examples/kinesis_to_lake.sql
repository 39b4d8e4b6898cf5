-- Page views and revenue per page and minute from a Kinesis stream into the local lake.
-- Start a Kinesis server and write events into the stream (see README, "Kinesis"):
--   . scripts/emulators.sh          # or: docker compose up -d
--   laketide produce --stream clicks --create 2 --events 100000 --rate 2000 --partition-key user_id
-- Then run this file and watch the results arrive:
--   laketide run examples/kinesis_to_lake.sql
--   laketide query "SELECT * FROM page_stats ORDER BY window_start DESC, views DESC LIMIT 20"
-- The endpoint and region come from the AWS environment (AWS_ENDPOINT_URL_KINESIS, AWS_REGION).

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  shard TEXT METADATA FROM 'shard_id',
  arrived TIMESTAMP METADATA FROM 'arrival_time',
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  connector = 'kinesis',
  stream = 'clicks',
  format = 'json',
  start_position = 'trim_horizon',
  on_error = 'skip',
  idle_timeout = '10s'
);

CREATE TABLE page_stats WITH (connector = 'delta', path = 'lake/page_stats', commit_interval = '5s');

INSERT INTO page_stats
SELECT page, window_start, window_end, count(*) AS views, sum(amount) AS revenue,
       max(arrived) AS last_arrival
FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
GROUP BY page, window_start, window_end;
