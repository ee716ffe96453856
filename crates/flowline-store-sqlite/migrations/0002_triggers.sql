-- Triggers: an inbound webhook token and a cron schedule per flow, and at-most-once starts.

ALTER TABLE flows ADD COLUMN webhook_token_hash BLOB CHECK (length(webhook_token_hash) = 32);
ALTER TABLE flows ADD COLUMN schedule TEXT;
ALTER TABLE flows ADD COLUMN next_fire_at TEXT;
CREATE UNIQUE INDEX flows_webhook_token ON flows (webhook_token_hash) WHERE webhook_token_hash IS NOT NULL;
CREATE INDEX flows_due ON flows (next_fire_at) WHERE next_fire_at IS NOT NULL;

-- A run started for a webhook delivery or a schedule slot carries a key; a second start with
-- the same key finds the first run instead of making another.
ALTER TABLE flow_executions ADD COLUMN dedupe_key TEXT;
CREATE UNIQUE INDEX flow_executions_dedupe ON flow_executions (flow_id, dedupe_key) WHERE dedupe_key IS NOT NULL;
