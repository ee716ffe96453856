-- The engine claims, heartbeats and rescues steps across workspaces. Those transactions declare
-- set_config('flowline.scope', 'engine', true); the run and step tables admit that scope, and no
-- other table does, so a transaction in engine scope still sees no contact, flow or secret.

CREATE FUNCTION flowline_engine_scope() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT coalesce(current_setting('flowline.scope', true), '') = 'engine' $$;

GRANT EXECUTE ON FUNCTION flowline_engine_scope() TO flowline_app;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['flow_executions', 'action_executions', 'action_attempts']
    LOOP
        EXECUTE format('ALTER POLICY tenant_isolation ON %I '
                       'USING (workspace_id = flowline_workspace() OR flowline_engine_scope()) '
                       'WITH CHECK (workspace_id = flowline_workspace() OR flowline_engine_scope())', t);
    END LOOP;
END
$$;
