-- A claim hands the worker its run's variables, read in the claim's engine-scoped transaction.
CREATE POLICY engine_reads_variables ON action_variables FOR SELECT USING (flowline_engine_scope());
