-- Flowline's schema on SQLite. Every tenant table carries workspace_id, and every query filters
-- by it. Ids are 16-byte UUID blobs, timestamps text, JSON text.

CREATE TABLE installation (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    bootstrapped_at TEXT NOT NULL
);

CREATE TABLE workspaces (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    settings   TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);

CREATE TABLE members (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email        TEXT,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin', 'owner')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX members_workspace ON members (workspace_id, id);

CREATE TABLE api_tokens (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    member_id    BLOB NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id, id);

CREATE TABLE contacts (
    id                BLOB PRIMARY KEY,
    workspace_id      BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name              TEXT,
    email             TEXT,
    phone             TEXT,
    company           TEXT,
    attributes        TEXT NOT NULL DEFAULT '{}',
    assigned_agent_id BLOB,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    deleted_at        TEXT
);
CREATE UNIQUE INDEX contacts_live_email ON contacts (workspace_id, lower(email))
    WHERE deleted_at IS NULL AND email IS NOT NULL;
CREATE INDEX contacts_workspace ON contacts (workspace_id, id);

CREATE TABLE tags (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    color        TEXT NOT NULL CHECK (length(color) = 7 AND color GLOB '#[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]'),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX tags_name ON tags (workspace_id, lower(name));

CREATE TABLE contact_tags (
    workspace_id          BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id            BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    tag_id                BLOB NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    added_by_execution_id BLOB,
    created_at            TEXT NOT NULL,
    PRIMARY KEY (contact_id, tag_id)
);
CREATE INDEX contact_tags_tag ON contact_tags (tag_id);

CREATE TABLE agents (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email        TEXT,
    active       INTEGER NOT NULL DEFAULT 1,
    capacity     INTEGER NOT NULL CHECK (capacity >= 0),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX agents_workspace ON agents (workspace_id, id);

CREATE TABLE assignments (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id   BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    agent_id     BLOB NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    priority     TEXT NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    strategy     TEXT CHECK (strategy IN ('round_robin', 'least_loaded')),
    execution_id BLOB,
    created_at   TEXT NOT NULL,
    released_at  TEXT
);
CREATE INDEX assignments_contact ON assignments (contact_id, id);
CREATE INDEX assignments_agent ON assignments (agent_id, id);

CREATE TABLE campaigns (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status       TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX campaigns_workspace ON campaigns (workspace_id, id);

CREATE TABLE subscriptions (
    id              BLOB PRIMARY KEY,
    workspace_id    BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    campaign_id     BLOB NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id      BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('subscribed', 'unsubscribed')),
    subscribed_at   TEXT NOT NULL,
    unsubscribed_at TEXT,
    updated_at      TEXT NOT NULL,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX subscriptions_contact ON subscriptions (contact_id);

CREATE TABLE boards (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX boards_workspace ON boards (workspace_id, id);

CREATE TABLE board_columns (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id     BLOB NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position     INTEGER NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX board_columns_board ON board_columns (board_id, position);

CREATE TABLE board_cards (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id     BLOB NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    column_id    BLOB NOT NULL REFERENCES board_columns (id),
    contact_id   BLOB NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (board_id, contact_id)
);
CREATE INDEX board_cards_column ON board_cards (column_id);

CREATE TABLE board_history (
    id             BLOB PRIMARY KEY,
    workspace_id   BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id       BLOB NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    contact_id     BLOB NOT NULL,
    from_column_id BLOB,
    to_column_id   BLOB,
    execution_id   BLOB,
    created_at     TEXT NOT NULL
);
CREATE INDEX board_history_board ON board_history (board_id, id);

CREATE TABLE contact_backups (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id   BLOB NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('soft', 'permanent')),
    snapshot     TEXT NOT NULL,
    execution_id BLOB,
    created_at   TEXT NOT NULL,
    restored_at  TEXT
);
CREATE INDEX contact_backups_workspace ON contact_backups (workspace_id, id);

CREATE TABLE flows (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  TEXT,
    status       TEXT NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    version      INTEGER NOT NULL DEFAULT 0 CHECK (version >= 0),
    graph        TEXT NOT NULL,
    triggers     TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX flows_workspace ON flows (workspace_id, id);

CREATE TABLE flow_versions (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id      BLOB NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    graph        TEXT NOT NULL,
    actions      TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (flow_id, version)
);

CREATE TABLE flow_actions (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id       BLOB NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    node_id       TEXT NOT NULL,
    action_type   TEXT NOT NULL CHECK (action_type IN ('add_tag', 'set_variable', 'assign_agent',
                      'subscribe_campaign', 'delete_contact', 'run_api_request', 'run_javascript',
                      'move_to_board', 'send_webhook', 'email_integration', 'crm_integration')),
    action_config TEXT NOT NULL,
    name          TEXT,
    position      INTEGER NOT NULL CHECK (position >= 0),
    enabled       INTEGER NOT NULL DEFAULT 1,
    retry         TEXT,
    timeout_ms    INTEGER CHECK (timeout_ms > 0),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX flow_actions_flow ON flow_actions (flow_id, node_id, position);

CREATE TABLE flow_executions (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id      BLOB NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    flow_version INTEGER NOT NULL,
    contact_id   BLOB,
    trigger_kind TEXT NOT NULL CHECK (trigger_kind IN ('manual', 'webhook', 'schedule', 'event')),
    trigger      TEXT NOT NULL DEFAULT '{}',
    input        TEXT NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    step_count   INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX flow_executions_flow ON flow_executions (flow_id, id);
CREATE INDEX flow_executions_workspace ON flow_executions (workspace_id, id);

CREATE TABLE action_executions (
    id                BLOB PRIMARY KEY,
    workspace_id      BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_execution_id BLOB NOT NULL REFERENCES flow_executions (id) ON DELETE CASCADE,
    action_id         BLOB NOT NULL,
    action_type       TEXT NOT NULL,
    node_id           TEXT NOT NULL,
    occurrence        INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'timeout')),
    queue             TEXT NOT NULL CHECK (queue IN ('basic', 'advanced', 'integration')),
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_at            TEXT NOT NULL,
    lease_owner       TEXT,
    lease_token       BLOB,
    lease_expires_at  TEXT,
    input             TEXT,
    output            TEXT,
    error             TEXT,
    error_category    TEXT CHECK (error_category IN ('validation', 'permission', 'not_found', 'conflict',
                          'rate_limited', 'network', 'timeout', 'upstream', 'sandbox', 'worker_lost', 'internal')),
    idempotency_key   TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT,
    UNIQUE (flow_execution_id, action_id, occurrence),
    CHECK ((status IN ('completed', 'failed', 'cancelled', 'timeout')) = (finished_at IS NOT NULL)),
    CHECK ((status = 'running') = (lease_token IS NOT NULL))
);
CREATE INDEX action_executions_due ON action_executions (queue, run_at) WHERE status = 'pending';
CREATE INDEX action_executions_leases ON action_executions (lease_expires_at) WHERE status = 'running';
CREATE INDEX action_executions_action ON action_executions (action_id, id);
CREATE INDEX action_executions_run ON action_executions (flow_execution_id, id);

CREATE TABLE action_attempts (
    id                  BLOB PRIMARY KEY,
    workspace_id        BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    action_execution_id BLOB NOT NULL REFERENCES action_executions (id) ON DELETE CASCADE,
    attempt             INTEGER NOT NULL CHECK (attempt >= 1),
    started_at          TEXT NOT NULL,
    finished_at         TEXT,
    outcome             TEXT CHECK (outcome IN ('completed', 'failed', 'timeout', 'cancelled', 'worker_lost')),
    error               TEXT,
    UNIQUE (action_execution_id, attempt)
);

CREATE TABLE action_variables (
    id                         BLOB PRIMARY KEY,
    workspace_id               BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_execution_id          BLOB NOT NULL REFERENCES flow_executions (id) ON DELETE CASCADE,
    name                       TEXT NOT NULL,
    type                       TEXT NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'object', 'array')),
    value                      TEXT NOT NULL,
    set_by_action_execution_id BLOB,
    created_at                 TEXT NOT NULL,
    updated_at                 TEXT NOT NULL,
    UNIQUE (flow_execution_id, name)
);

CREATE TABLE secrets (
    id           BLOB PRIMARY KEY,
    workspace_id BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64 AND name NOT GLOB '*[^A-Za-z0-9_]*' AND name NOT GLOB '[0-9]*'),
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE audit_log (
    id              BLOB PRIMARY KEY,
    workspace_id    BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    actor_member_id BLOB,
    actor_token_id  BLOB,
    actor_label     TEXT NOT NULL,
    action          TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_id       TEXT,
    before          TEXT,
    after           TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, id);
CREATE INDEX audit_log_entity ON audit_log (workspace_id, entity_type, entity_id, id);

-- The audit log is append-only.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
