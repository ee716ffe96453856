-- Run events: every status change of a run or a step, written by triggers in the transaction
-- that makes the change, read by `GET /api/events` in (xact, id) order, where `xact` is the
-- writing transaction's id. A reader delivers only events of transactions older than every one
-- still running (the snapshot's xmin): no event can later appear before one delivered, so a
-- stream resumed after an event skips nothing.

CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    flow_id      uuid NOT NULL,
    execution_id uuid NOT NULL,
    step_id      uuid,
    kind         text NOT NULL CHECK (kind IN ('execution', 'step')),
    status       text NOT NULL,
    action_type  text,
    attempt      integer,
    xact         bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_workspace ON events (workspace_id, xact, id);
CREATE INDEX events_created ON events (created_at);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON events
    USING (workspace_id = flowline_workspace() OR flowline_engine_scope())
    WITH CHECK (workspace_id = flowline_workspace() OR flowline_engine_scope());
GRANT SELECT, INSERT, DELETE ON events TO flowline_app;
GRANT USAGE ON SEQUENCE events_id_seq TO flowline_app;

CREATE FUNCTION flowline_step_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status OR NEW.attempt IS DISTINCT FROM OLD.attempt THEN
        INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
        SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', NEW.status, NEW.action_type, NEW.attempt
        FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER step_events AFTER INSERT OR UPDATE OF status, attempt ON action_executions
    FOR EACH ROW EXECUTE FUNCTION flowline_step_event();

CREATE FUNCTION flowline_execution_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO events (workspace_id, flow_id, execution_id, kind, status)
        VALUES (NEW.workspace_id, NEW.flow_id, NEW.id, 'execution', NEW.status);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER execution_events AFTER INSERT OR UPDATE OF status ON flow_executions
    FOR EACH ROW EXECUTE FUNCTION flowline_execution_event();
