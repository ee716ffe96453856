//! The errors storage reports.

use flowline_core::validation::ValidationErrors;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entity does not exist in this workspace (or at all: the two are never told apart).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with what is stored (a duplicate, a reference still in use, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The change is invalid against stored state (an action on a node the graph lacks, ...).
    #[error("invalid: {0}")]
    Invalid(ValidationErrors),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}
