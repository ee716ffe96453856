-- An attempt's row is written once, when the attempt ends, instead of opened by the claim and
-- closed by the step's end: one row written per attempt instead of two. The attempt in progress
-- is the step's own (`attempt`, `attempt_started_at`) while the step runs.
ALTER TABLE action_executions ADD COLUMN attempt_started_at timestamptz;
UPDATE action_executions s SET attempt_started_at = a.started_at
FROM action_attempts a
WHERE s.status = 'running' AND a.action_execution_id = s.id AND a.attempt = s.attempt;
DELETE FROM action_attempts WHERE finished_at IS NULL;
