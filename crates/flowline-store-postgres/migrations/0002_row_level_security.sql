-- Row-level security: the server works as `flowline_app`, a role that owns nothing and is neither
-- superuser nor BYPASSRLS. Each transaction names its workspace with
-- set_config('flowline.workspace_id', <id>, true); a transaction that names none sees no rows.

DO $$
BEGIN
    CREATE ROLE flowline_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
EXCEPTION
    WHEN duplicate_object OR unique_violation OR insufficient_privilege THEN NULL;
END
$$;

-- The migrating user switches to the application role with SET ROLE.
DO $$
BEGIN
    EXECUTE format('GRANT flowline_app TO %I', current_user);
EXCEPTION
    WHEN duplicate_object OR unique_violation OR invalid_grant_operation THEN NULL;
END
$$;

CREATE FUNCTION flowline_workspace() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting('flowline.workspace_id', true), '')::uuid $$;

-- A token row is also visible to the transaction that presents its hash, which is how a request
-- finds its workspace before it can name one.
CREATE FUNCTION flowline_presented_token() RETURNS bytea
    LANGUAGE sql STABLE
    AS $$ SELECT decode(NULLIF(current_setting('flowline.token_hash', true), ''), 'hex') $$;

GRANT USAGE ON SCHEMA public TO flowline_app;
GRANT EXECUTE ON FUNCTION flowline_workspace(), flowline_presented_token() TO flowline_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    workspaces, members, api_tokens, contacts, tags, contact_tags, agents, assignments, campaigns,
    subscriptions, boards, board_columns, board_cards, board_history, contact_backups, flows,
    flow_versions, flow_actions, flow_executions, action_executions, action_attempts,
    action_variables, secrets
    TO flowline_app;
-- The audit log is append-only for the application.
GRANT SELECT, INSERT ON audit_log TO flowline_app;
GRANT SELECT, INSERT ON installation TO flowline_app;

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON workspaces
    USING (id = flowline_workspace()) WITH CHECK (id = flowline_workspace());

ALTER TABLE api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_tokens
    USING (workspace_id = flowline_workspace() OR token_hash = flowline_presented_token())
    WITH CHECK (workspace_id = flowline_workspace());

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['members', 'contacts', 'tags', 'contact_tags', 'agents', 'assignments',
        'campaigns', 'subscriptions', 'boards', 'board_columns', 'board_cards', 'board_history',
        'contact_backups', 'flows', 'flow_versions', 'flow_actions', 'flow_executions',
        'action_executions', 'action_attempts', 'action_variables', 'secrets', 'audit_log']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I USING (workspace_id = flowline_workspace()) '
                       'WITH CHECK (workspace_id = flowline_workspace())', t);
    END LOOP;
END
$$;
