-- Page views per page over sliding 5-minute windows, served from DynamoDB.
-- Needs a DynamoDB endpoint (see README, "Local AWS-compatible servers"):
--   . scripts/emulators.sh          # or: docker compose up -d
--   laketide run examples/clicks_to_dynamodb.sql
--   aws dynamodb get-item --table-name page_stats \
--     --key '{"page":{"S":"/cart"},"window_start":{"S":"2024-05-01T11:58:00Z"}}'
-- The endpoint and region come from the AWS environment (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION).

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once');

CREATE TABLE page_stats WITH (
  connector = 'dynamodb',
  table = 'page_stats',
  primary_key = 'page, window_start',
  create_if_missing = 'true',
  ttl_column = 'window_end',
  ttl = '7d'
);

INSERT INTO page_stats
SELECT page, window_start, window_end, count(*) AS views, sum(amount) AS revenue
FROM HOP(clicks, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
GROUP BY page, window_start, window_end;
