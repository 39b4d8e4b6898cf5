-- Loads the example customer profiles into the DynamoDB table `customers`, for
-- examples/enrich_from_dynamodb.sql. Needs a DynamoDB endpoint (see README, "Local
-- AWS-compatible servers"):
--   . scripts/emulators.sh          # or: docker compose up -d
--   laketide run examples/load_customers.sql
-- The endpoint and region come from the AWS environment (AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION).

CREATE TABLE profiles (user_id TEXT, segment TEXT, country TEXT)
  WITH (connector = 'file', path = 'examples/data/customers/', format = 'json', mode = 'once');

CREATE TABLE customers (PRIMARY KEY (user_id))
  WITH (connector = 'dynamodb', table = 'customers', create_if_missing = 'true');

INSERT INTO customers SELECT user_id, segment, country FROM profiles;
