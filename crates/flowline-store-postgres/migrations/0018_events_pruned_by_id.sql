-- Events are pruned oldest id first, over a window of the oldest rows, instead of found by age:
-- ids follow the order events are written (within the settling of concurrent transactions),
-- so the oldest ids are the oldest events, and an index on `created_at` was one more entry to
-- write for every event, for a daily prune.
DROP INDEX IF EXISTS events_created;
