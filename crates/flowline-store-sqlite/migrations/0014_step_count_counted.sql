-- A run's step count is its step rows, counted where it is read (a few times a run), instead of
-- a column every step's end updated: that update rewrote the run's whole row, with its trigger
-- and input, for every step.
ALTER TABLE flow_executions DROP COLUMN step_count;
