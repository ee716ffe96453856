-- Claims find due steps through `action_executions_fair` alone. The older `(queue, run_at)`
-- index offered the planner a worse path: with a large queue it sorted every pending step to
-- take the oldest few of one workspace. One index fewer to keep up on every step, too.
DROP INDEX IF EXISTS action_executions_due;
