-- Retention: finished runs older than their workspace's retention are pruned.

ALTER TABLE workspaces ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 1 AND 3650);
CREATE INDEX flow_executions_finished ON flow_executions (finished_at) WHERE finished_at IS NOT NULL;
