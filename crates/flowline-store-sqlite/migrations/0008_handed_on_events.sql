-- A step handed on to the worker that ended the run's previous step is written already running.
-- Its events still tell the whole story, as for every other step: queued (`pending`, attempt 0),
-- then started.
DROP TRIGGER step_events_insert;
CREATE TRIGGER step_events_insert AFTER INSERT ON action_executions BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', 'pending', NEW.action_type, 0
    FROM flow_executions e WHERE e.id = NEW.flow_execution_id AND NEW.status = 'running';
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', NEW.status, NEW.action_type, NEW.attempt
    FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
END;
