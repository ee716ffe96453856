-- A run's steps are found through the `(flow_execution_id, action_id, occurrence)` key, which
-- every step has anyway: a second index on `(flow_execution_id, id)` is one more entry to write
-- for every step, for lists of at most a run's step limit that sort in memory.
DROP INDEX IF EXISTS action_executions_run;
