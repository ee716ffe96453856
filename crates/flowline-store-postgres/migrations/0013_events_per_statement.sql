-- Events are written once per statement, from its transition tables, instead of once per row: a
-- batch of step ends or of queued steps writes its events in one insert, not one trigger call
-- and one insert per step (a fifth of the database's time in a run of short steps). The events
-- themselves are the same, in the same order: per step, a handed-on step's `pending` (attempt 0)
-- before its `running`. PostgreSQL takes no column list, and one event per trigger, when a
-- trigger has transition tables: step updates compare the old and new status themselves, joining
-- the two by a hash whatever the transaction's planner settings (the engine's hot transactions turn
-- hash joins off, and a nested loop over two transition tables is quadratic). A step's flow is
-- looked up by key, one probe per row.

DROP TRIGGER step_events ON action_executions;
DROP TRIGGER execution_events ON flow_executions;
DROP FUNCTION flowline_step_event();
DROP FUNCTION flowline_execution_event();

CREATE FUNCTION flowline_step_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT n.workspace_id, (SELECT e.flow_id FROM flow_executions e WHERE e.id = n.flow_execution_id),
           n.flow_execution_id, n.id, 'step', s.status, n.action_type, s.attempt
    FROM inserted n
    CROSS JOIN LATERAL (VALUES (0, 'pending', 0), (1, n.status, n.attempt)) AS s (ord, status, attempt)
    WHERE s.ord = 1 OR n.status = 'running'
    ORDER BY n.id, s.ord;
    RETURN NULL;
END
$$;
CREATE TRIGGER step_events_inserted AFTER INSERT ON action_executions
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION flowline_step_events_inserted();

CREATE FUNCTION flowline_step_events_updated() RETURNS trigger LANGUAGE plpgsql
    SET enable_hashjoin = on AS $$
BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT n.workspace_id, (SELECT e.flow_id FROM flow_executions e WHERE e.id = n.flow_execution_id),
           n.flow_execution_id, n.id, 'step', n.status, n.action_type, n.attempt
    FROM updated n
    JOIN previous o ON o.id = n.id
    WHERE n.status IS DISTINCT FROM o.status OR n.attempt IS DISTINCT FROM o.attempt
    ORDER BY n.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER step_events_updated AFTER UPDATE ON action_executions
    REFERENCING OLD TABLE AS previous NEW TABLE AS updated
    FOR EACH STATEMENT EXECUTE FUNCTION flowline_step_events_updated();

CREATE FUNCTION flowline_execution_events_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, kind, status)
    SELECT workspace_id, flow_id, id, 'execution', status FROM inserted ORDER BY id;
    RETURN NULL;
END
$$;
CREATE TRIGGER execution_events_inserted AFTER INSERT ON flow_executions
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION flowline_execution_events_inserted();

-- A run's status changes twice or so in its life while its step count changes with every step:
-- its updates keep a row trigger that fires only when the status changes.
CREATE FUNCTION flowline_execution_status_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, kind, status)
    VALUES (NEW.workspace_id, NEW.flow_id, NEW.id, 'execution', NEW.status);
    RETURN NULL;
END
$$;
CREATE TRIGGER execution_status_changed AFTER UPDATE OF status ON flow_executions
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION flowline_execution_status_changed();
