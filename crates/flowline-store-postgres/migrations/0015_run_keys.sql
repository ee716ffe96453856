-- A step and a variable name their run by workspace and id together, in one foreign key, instead
-- of one key to the workspace and another to the run: one check per written row instead of two,
-- and a row's workspace is now checked to be its run's. The run's `(workspace_id, id)` index,
-- already there for listing a workspace's runs, becomes the unique key they reference.
-- An attempt keeps its key to its step (which deletes it with the step) and loses the one to its
-- workspace, which its step's key to its run already implies. Every step writes a step row, an
-- attempt and mostly a variable; each foreign-key check is a query of its own (a tenth of
-- PostgreSQL's time in a run of short steps, three of them for the workspace row alone).

ALTER TABLE flow_executions ADD CONSTRAINT flow_executions_workspace_run UNIQUE (workspace_id, id);
DROP INDEX flow_executions_workspace;

ALTER TABLE action_executions
    DROP CONSTRAINT action_executions_workspace_id_fkey,
    DROP CONSTRAINT action_executions_flow_execution_id_fkey,
    ADD CONSTRAINT action_executions_run FOREIGN KEY (workspace_id, flow_execution_id)
        REFERENCES flow_executions (workspace_id, id) ON DELETE CASCADE;

ALTER TABLE action_variables
    DROP CONSTRAINT action_variables_workspace_id_fkey,
    DROP CONSTRAINT action_variables_flow_execution_id_fkey,
    ADD CONSTRAINT action_variables_run FOREIGN KEY (workspace_id, flow_execution_id)
        REFERENCES flow_executions (workspace_id, id) ON DELETE CASCADE;

ALTER TABLE action_attempts DROP CONSTRAINT action_attempts_workspace_id_fkey;
