//! Building step errors: each says what went wrong and what a person should do.

use std::time::Duration;

use flowline_core::status::{ErrorCategory, Severity};
use flowline_store::execution::StepError;

use crate::template::TemplateError;

/// An attempt's failure, with an optional wait the peer asked for (HTTP 429 `Retry-After`).
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// What is stored and shown.
    pub error: StepError,
    /// Wait at least this long before the next attempt.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `category`, retryable as the category says.
    pub fn new(
        category: ErrorCategory,
        message: impl Into<String>,
        suggestion: impl Into<String>,
    ) -> Self {
        let severity = match category {
            ErrorCategory::Internal | ErrorCategory::Permission => Severity::High,
            ErrorCategory::Validation
            | ErrorCategory::NotFound
            | ErrorCategory::Conflict
            | ErrorCategory::Sandbox => Severity::Medium,
            _ => Severity::Low,
        };
        Self {
            error: StepError {
                category,
                severity,
                retryable: category.is_retryable(),
                message: message.into(),
                suggestion: suggestion.into(),
            },
            retry_after: None,
        }
    }

    /// A template that could not be rendered: a configuration problem, not retried.
    pub fn template(error: TemplateError) -> Self {
        Self::new(
            ErrorCategory::Validation,
            format!(
                "the template in `{}` failed: {}",
                error.location, error.message
            ),
            "check the names it uses: contact, vars, trigger, execution and workspace, and the variables set by earlier steps",
        )
    }

    /// The step ran past its deadline.
    pub fn timeout(limit: Duration) -> Self {
        Self::new(
            ErrorCategory::Timeout,
            format!("the step did not finish within {} ms", limit.as_millis()),
            "raise the action's timeoutMs if the work needs longer, or check the service it waits on",
        )
    }
}
