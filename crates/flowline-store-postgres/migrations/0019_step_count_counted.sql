-- A run's step count is its step rows, counted where it is read (a few times a run), instead of
-- a column every step's end updated: that update locked the run's row and wrote a new version
-- of it for every step.
ALTER TABLE flow_executions DROP COLUMN step_count;
