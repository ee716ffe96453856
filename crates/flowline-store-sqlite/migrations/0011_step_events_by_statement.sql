-- A step's events are written by the statements that change its status, from what they already
-- hold (its run's flow among it), instead of by row triggers that looked up the run's flow for
-- every row: three triggered inserts per step were about a sixth of the writer's time. A run's
-- own events stay with their triggers (a few per run).
DROP TRIGGER step_events_insert;
DROP TRIGGER step_events_update;
