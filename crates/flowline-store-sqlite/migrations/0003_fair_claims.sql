-- Claims walk the workspaces with pending work, and each one's oldest due steps, by index.
CREATE INDEX action_executions_fair ON action_executions (queue, workspace_id, run_at, id) WHERE status = 'pending';
