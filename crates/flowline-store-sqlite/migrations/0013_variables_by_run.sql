-- A run's variables are kept in the order of their key, `(flow_execution_id, name)`, with no
-- rowid table and no second index beside it: every variable a step sets was three b-tree
-- inserts (the rows, the `id` key, the `(flow_execution_id, name)` key) and is now one. Nothing
-- finds a variable by its `id`, which stays as its identity.
CREATE TABLE action_variables_by_run (
    flow_execution_id          BLOB NOT NULL REFERENCES flow_executions (id) ON DELETE CASCADE,
    name                       TEXT NOT NULL,
    id                         BLOB NOT NULL,
    workspace_id               BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    type                       TEXT NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'object', 'array')),
    value                      TEXT NOT NULL,
    set_by_action_execution_id BLOB,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    PRIMARY KEY (flow_execution_id, name)
) WITHOUT ROWID;
INSERT INTO action_variables_by_run (flow_execution_id, name, id, workspace_id, type, value,
    set_by_action_execution_id, created_at, updated_at)
SELECT flow_execution_id, name, id, workspace_id, type, value, set_by_action_execution_id,
    created_at, updated_at
FROM action_variables;
DROP TABLE action_variables;
ALTER TABLE action_variables_by_run RENAME TO action_variables;
