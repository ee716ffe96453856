-- Flowline's schema on PostgreSQL. Every tenant table carries workspace_id; row-level security
-- (0002) makes each transaction see only the workspace it names.

CREATE TABLE installation (
    id              integer PRIMARY KEY CHECK (id = 1),
    bootstrapped_at timestamptz NOT NULL
);

CREATE TABLE workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    settings   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);

CREATE TABLE members (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email        text,
    role         text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin', 'owner')),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX members_workspace ON members (workspace_id, id);

CREATE TABLE api_tokens (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    member_id    uuid NOT NULL REFERENCES members (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_tokens_workspace ON api_tokens (workspace_id, id);

CREATE TABLE contacts (
    id                uuid PRIMARY KEY,
    workspace_id      uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name              text,
    email             text,
    phone             text,
    company           text,
    attributes        jsonb NOT NULL DEFAULT '{}',
    assigned_agent_id uuid,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    deleted_at        timestamptz
);
CREATE UNIQUE INDEX contacts_live_email ON contacts (workspace_id, lower(email))
    WHERE deleted_at IS NULL AND email IS NOT NULL;
CREATE INDEX contacts_workspace ON contacts (workspace_id, id);

CREATE TABLE tags (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    color        text NOT NULL CHECK (color ~ '^#[0-9a-fA-F]{6}$'),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE UNIQUE INDEX tags_name ON tags (workspace_id, lower(name));

CREATE TABLE contact_tags (
    workspace_id          uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id            uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    tag_id                uuid NOT NULL REFERENCES tags (id) ON DELETE CASCADE,
    added_by_execution_id uuid,
    created_at            timestamptz NOT NULL,
    PRIMARY KEY (contact_id, tag_id)
);
CREATE INDEX contact_tags_tag ON contact_tags (tag_id);

CREATE TABLE agents (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    email        text,
    active       boolean NOT NULL DEFAULT true,
    capacity     integer NOT NULL CHECK (capacity >= 0),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX agents_workspace ON agents (workspace_id, id);

CREATE TABLE assignments (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id   uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    agent_id     uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    priority     text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    strategy     text CHECK (strategy IN ('round_robin', 'least_loaded')),
    execution_id uuid,
    created_at   timestamptz NOT NULL,
    released_at  timestamptz
);
CREATE INDEX assignments_contact ON assignments (contact_id, id);
CREATE INDEX assignments_agent ON assignments (agent_id, id);

CREATE TABLE campaigns (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status       text NOT NULL CHECK (status IN ('active', 'archived')),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX campaigns_workspace ON campaigns (workspace_id, id);

CREATE TABLE subscriptions (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    campaign_id     uuid NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    contact_id      uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    status          text NOT NULL CHECK (status IN ('subscribed', 'unsubscribed')),
    subscribed_at   timestamptz NOT NULL,
    unsubscribed_at timestamptz,
    updated_at      timestamptz NOT NULL,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX subscriptions_contact ON subscriptions (contact_id);

CREATE TABLE boards (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX boards_workspace ON boards (workspace_id, id);

CREATE TABLE board_columns (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id     uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    position     integer NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX board_columns_board ON board_columns (board_id, position);

CREATE TABLE board_cards (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id     uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    column_id    uuid NOT NULL REFERENCES board_columns (id),
    contact_id   uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (board_id, contact_id)
);
CREATE INDEX board_cards_column ON board_cards (column_id);

CREATE TABLE board_history (
    id             uuid PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    board_id       uuid NOT NULL REFERENCES boards (id) ON DELETE CASCADE,
    contact_id     uuid NOT NULL,
    from_column_id uuid,
    to_column_id   uuid,
    execution_id   uuid,
    created_at     timestamptz NOT NULL
);
CREATE INDEX board_history_board ON board_history (board_id, id);

CREATE TABLE contact_backups (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    contact_id   uuid NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('soft', 'permanent')),
    snapshot     jsonb NOT NULL,
    execution_id uuid,
    created_at   timestamptz NOT NULL,
    restored_at  timestamptz
);
CREATE INDEX contact_backups_workspace ON contact_backups (workspace_id, id);

CREATE TABLE flows (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description  text,
    status       text NOT NULL CHECK (status IN ('draft', 'active', 'archived')),
    version      integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    graph        jsonb NOT NULL,
    triggers     jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX flows_workspace ON flows (workspace_id, id);

CREATE TABLE flow_versions (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id      uuid NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    version      integer NOT NULL CHECK (version >= 1),
    graph        jsonb NOT NULL,
    actions      jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    UNIQUE (flow_id, version)
);

CREATE TABLE flow_actions (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id       uuid NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    action_type   text NOT NULL CHECK (action_type IN ('add_tag', 'set_variable', 'assign_agent',
                      'subscribe_campaign', 'delete_contact', 'run_api_request', 'run_javascript',
                      'move_to_board', 'send_webhook', 'email_integration', 'crm_integration')),
    action_config jsonb NOT NULL,
    name          text,
    position      integer NOT NULL CHECK (position >= 0),
    enabled       boolean NOT NULL DEFAULT true,
    retry         jsonb,
    timeout_ms    bigint CHECK (timeout_ms > 0),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX flow_actions_flow ON flow_actions (flow_id, node_id, position);

CREATE TABLE flow_executions (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_id      uuid NOT NULL REFERENCES flows (id) ON DELETE CASCADE,
    flow_version integer NOT NULL,
    contact_id   uuid,
    trigger_kind text NOT NULL CHECK (trigger_kind IN ('manual', 'webhook', 'schedule', 'event')),
    trigger      jsonb NOT NULL DEFAULT '{}',
    input        jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    step_count   integer NOT NULL DEFAULT 0,
    error        jsonb,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    CHECK ((status IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX flow_executions_flow ON flow_executions (flow_id, id);
CREATE INDEX flow_executions_workspace ON flow_executions (workspace_id, id);

CREATE TABLE action_executions (
    id                uuid PRIMARY KEY,
    workspace_id      uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_execution_id uuid NOT NULL REFERENCES flow_executions (id) ON DELETE CASCADE,
    action_id         uuid NOT NULL,
    action_type       text NOT NULL,
    node_id           text NOT NULL,
    occurrence        integer NOT NULL DEFAULT 0,
    status            text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled', 'timeout')),
    queue             text NOT NULL CHECK (queue IN ('basic', 'advanced', 'integration')),
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL CHECK (max_attempts >= 1),
    run_at            timestamptz NOT NULL,
    lease_owner       text,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    input             jsonb,
    output            jsonb,
    error             jsonb,
    error_category    text CHECK (error_category IN ('validation', 'permission', 'not_found', 'conflict',
                          'rate_limited', 'network', 'timeout', 'upstream', 'sandbox', 'worker_lost', 'internal')),
    idempotency_key   text NOT NULL,
    created_at        timestamptz NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    UNIQUE (flow_execution_id, action_id, occurrence),
    CHECK ((status IN ('completed', 'failed', 'cancelled', 'timeout')) = (finished_at IS NOT NULL)),
    CHECK ((status = 'running') = (lease_token IS NOT NULL))
);
CREATE INDEX action_executions_due ON action_executions (queue, run_at) WHERE status = 'pending';
CREATE INDEX action_executions_leases ON action_executions (lease_expires_at) WHERE status = 'running';
CREATE INDEX action_executions_action ON action_executions (action_id, id);
CREATE INDEX action_executions_run ON action_executions (flow_execution_id, id);

CREATE TABLE action_attempts (
    id                  uuid PRIMARY KEY,
    workspace_id        uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    action_execution_id uuid NOT NULL REFERENCES action_executions (id) ON DELETE CASCADE,
    attempt             integer NOT NULL CHECK (attempt >= 1),
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    outcome             text CHECK (outcome IN ('completed', 'failed', 'timeout', 'cancelled', 'worker_lost')),
    error               jsonb,
    UNIQUE (action_execution_id, attempt)
);

CREATE TABLE action_variables (
    id                         uuid PRIMARY KEY,
    workspace_id               uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    flow_execution_id          uuid NOT NULL REFERENCES flow_executions (id) ON DELETE CASCADE,
    name                       text NOT NULL,
    type                       text NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'object', 'array')),
    value                      jsonb NOT NULL,
    set_by_action_execution_id uuid,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    UNIQUE (flow_execution_id, name)
);

CREATE TABLE secrets (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
    nonce        bytea NOT NULL,
    ciphertext   bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE audit_log (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    actor_member_id uuid,
    actor_token_id  uuid,
    actor_label     text NOT NULL,
    action          text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text,
    before          jsonb,
    after           jsonb,
    created_at      timestamptz NOT NULL
);
CREATE INDEX audit_log_workspace ON audit_log (workspace_id, id);
CREATE INDEX audit_log_entity ON audit_log (workspace_id, entity_type, entity_id, id);
