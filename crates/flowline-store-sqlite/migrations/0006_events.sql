-- Run events: every status change of a run or a step, written by triggers in the transaction
-- that makes the change, read in (xact, id) order by `GET /api/events`. SQLite has one writer
-- at a time, so ids are assigned in commit order and `xact` is always 0 (PostgreSQL's is the
-- writing transaction's id).

CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BLOB NOT NULL,
    flow_id      BLOB NOT NULL,
    execution_id BLOB NOT NULL,
    step_id      BLOB,
    kind         TEXT NOT NULL CHECK (kind IN ('execution', 'step')),
    status       TEXT NOT NULL,
    action_type  TEXT,
    attempt      INTEGER,
    xact         INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX events_workspace ON events (workspace_id, xact, id);
CREATE INDEX events_created ON events (created_at);

CREATE TRIGGER step_events_insert AFTER INSERT ON action_executions BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', NEW.status, NEW.action_type, NEW.attempt
    FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
END;
CREATE TRIGGER step_events_update AFTER UPDATE OF status, attempt ON action_executions
    WHEN NEW.status IS NOT OLD.status OR NEW.attempt IS NOT OLD.attempt BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, step_id, kind, status, action_type, attempt)
    SELECT NEW.workspace_id, e.flow_id, NEW.flow_execution_id, NEW.id, 'step', NEW.status, NEW.action_type, NEW.attempt
    FROM flow_executions e WHERE e.id = NEW.flow_execution_id;
END;
CREATE TRIGGER execution_events_insert AFTER INSERT ON flow_executions BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, kind, status)
    VALUES (NEW.workspace_id, NEW.flow_id, NEW.id, 'execution', NEW.status);
END;
CREATE TRIGGER execution_events_update AFTER UPDATE OF status ON flow_executions
    WHEN NEW.status IS NOT OLD.status BEGIN
    INSERT INTO events (workspace_id, flow_id, execution_id, kind, status)
    VALUES (NEW.workspace_id, NEW.flow_id, NEW.id, 'execution', NEW.status);
END;
