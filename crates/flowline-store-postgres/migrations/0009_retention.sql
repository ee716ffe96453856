-- Retention: finished runs older than their workspace's retention are pruned, across
-- workspaces, in engine scope, which may read (not change) the workspaces' retention.

ALTER TABLE workspaces ADD COLUMN retention_days integer NOT NULL DEFAULT 30 CHECK (retention_days BETWEEN 1 AND 3650);
CREATE INDEX flow_executions_finished ON flow_executions (finished_at) WHERE finished_at IS NOT NULL;
CREATE POLICY engine_reads_workspaces ON workspaces FOR SELECT USING (flowline_engine_scope());
