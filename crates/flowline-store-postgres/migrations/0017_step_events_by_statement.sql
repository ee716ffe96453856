-- A step's events are written by the statements that change its status, from what they already
-- hold (its run's flow among it), instead of by statement triggers that looked up the run's flow
-- for every row: the triggers were about a fifth of the database's time in a run of short
-- steps. A run's own events stay with their triggers (a few per run).
DROP TRIGGER step_events_inserted ON action_executions;
DROP TRIGGER step_events_updated ON action_executions;
DROP FUNCTION flowline_step_events_inserted();
DROP FUNCTION flowline_step_events_updated();
