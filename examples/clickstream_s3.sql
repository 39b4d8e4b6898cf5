-- The clickstream example writing its Delta table to S3-compatible storage.
-- The endpoint, region and credentials come from the standard AWS environment, for example
-- for the local servers of scripts/emulators.sh or docker-compose.yml:
--   export AWS_ENDPOINT_URL_S3=http://127.0.0.1:9000 AWS_REGION=us-east-1
--   export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testtest
-- (an `endpoint = '…'` option on the table does the same per table).
-- Run with: laketide run examples/clickstream_s3.sql
-- Then:     laketide query --lake s3://laketide/lake "SELECT * FROM revenue_per_minute ORDER BY window_start"

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once');

CREATE TABLE revenue_per_minute WITH (
  connector = 'delta', path = 's3://laketide/lake/revenue_per_minute', partition_by = 'action'
);

INSERT INTO revenue_per_minute
SELECT window_start, window_end, action, count(*) AS events, sum(amount) AS revenue
FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
GROUP BY window_start, window_end, action;
