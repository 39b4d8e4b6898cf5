-- Revenue per customer segment and minute: every click looks its customer up in DynamoDB
-- (a lookup join, cached for a minute per customer) and the enriched clicks are aggregated
-- per 1-minute window into the lake. Load the customers first:
--   . scripts/emulators.sh          # or: docker compose up -d
--   laketide run examples/load_customers.sql
--   laketide run examples/enrich_from_dynamodb.sql
--   laketide query "SELECT * FROM revenue_by_segment ORDER BY window_start, segment"
-- The endpoint and region come from the AWS environment (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION).

CREATE TABLE clicks (
  event_id BIGINT, user_id TEXT, page TEXT, action TEXT, amount DOUBLE,
  ts TIMESTAMP,
  proc_time AS PROCTIME(),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (connector = 'file', path = 'examples/data/clicks/', format = 'json', mode = 'once');

CREATE TABLE customers (user_id TEXT, segment TEXT, country TEXT, PRIMARY KEY (user_id) NOT ENFORCED)
  WITH (connector = 'dynamodb', table = 'customers', lookup.cache.ttl = '60s');

CREATE TABLE revenue_by_segment WITH (connector = 'delta', path = 'lake/revenue_by_segment');

INSERT INTO revenue_by_segment
SELECT window_start, window_end, c.segment, count(*) AS clicks, sum(k.amount) AS revenue
FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) k
JOIN customers FOR SYSTEM_TIME AS OF k.proc_time AS c ON k.user_id = c.user_id
GROUP BY window_start, window_end, c.segment;
