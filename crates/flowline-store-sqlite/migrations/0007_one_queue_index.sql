-- Claims find due steps through `action_executions_fair` alone; the older `(queue, run_at)`
-- index is one more to keep up on every step for nothing.
DROP INDEX IF EXISTS action_executions_due;
