//! API tests: the real router on a real port, on SQLite and on PostgreSQL.

mod support;

mod actions;
mod audit;
mod auth;
mod bad_input;
mod crm;
mod docs;
mod events;
mod executions;
mod fake;
mod flows;
mod isolation;
mod javascript;
mod metrics;
mod outbound;
mod retention;
mod stats;
mod tokens_members;
mod triggers;
