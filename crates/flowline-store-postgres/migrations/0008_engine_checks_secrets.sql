-- At start-up a process checks that its key opens the stored secrets, across workspaces, in an
-- engine-scoped transaction that may read (never change) them.
CREATE POLICY engine_reads_secrets ON secrets FOR SELECT USING (flowline_engine_scope());
