//! Flowline's pure domain model.
//!
//! This crate owns the vocabulary every other part speaks: newtype ids, the eleven action types
//! with one typed, schema-described config struct each, roles, the state enums, flow graphs,
//! field-level validation errors and API token material. It performs no I/O and must not depend
//! on any storage, engine or HTTP crate.

pub mod action;
pub mod crm;
pub mod email;
pub mod graph;
pub mod id;
pub mod retry;
pub mod role;
pub mod schedule;
pub mod status;
pub mod string_enum;
pub mod token;
pub mod validation;
