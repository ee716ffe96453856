//! Flowline's execution engine: the durable queue over the step rows (claim, lease, heartbeat,
//! complete, retry, cancel, rescue), the flow walker, the scheduler and one executor per action
//! type. It reaches the database only through `flowline-store` and knows nothing of HTTP.
