-- An attempt's row is written once, when the attempt ends, instead of opened by the claim and
-- closed by the step's end: one row written per attempt instead of two. The attempt in progress
-- is the step's own (`attempt`, `attempt_started_at`) while the step runs.
ALTER TABLE action_executions ADD COLUMN attempt_started_at TEXT;
UPDATE action_executions SET attempt_started_at = (
    SELECT a.started_at FROM action_attempts a
    WHERE a.action_execution_id = action_executions.id AND a.attempt = action_executions.attempt)
WHERE status = 'running';
DELETE FROM action_attempts WHERE finished_at IS NULL;
