-- A step handed on to the worker that ended the run's previous step is written already running.
-- Its events still tell the whole story, as for every other step: queued (`pending`, attempt 0),
-- then started.
CREATE OR REPLACE FUNCTION flowline_step_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.status = 'running' THEN
        INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
        SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', 'pending', NEW.action_type, 0
        FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.attempt IS DISTINCT FROM OLD.attempt THEN
        INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
        SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', NEW.status, NEW.action_type, NEW.attempt
        FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
    END IF;
    RETURN NULL;
END
$$;
