//! Per-action retry policy: how many attempts, and how long to wait between them.

use serde::{Deserialize, Serialize};

use crate::validation::ValidationErrors;

/// How a failed step is retried. Every field is optional; missing ones come from configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 to 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The wait before the second attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_ms: Option<u64>,
    /// How much each wait grows (1 to 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// The longest wait, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Whether waits are randomised (full jitter) so retries do not stampede.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
}

/// The longest wait between two attempts: one day.
pub const MAX_RETRY_DELAY_MS: u64 = 86_400_000;
/// The most attempts a step may have.
pub const MAX_ATTEMPTS: u32 = 25;
/// The longest timeout an action may have: one hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

impl RetryPolicy {
    /// Checks the ranges. Field paths are relative to the policy.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self
            .max_attempts
            .is_some_and(|n| !(1..=MAX_ATTEMPTS).contains(&n))
        {
            errors.push("maxAttempts", format!("must be 1 to {MAX_ATTEMPTS}"));
        }
        if self
            .initial_delay_ms
            .is_some_and(|d| d > MAX_RETRY_DELAY_MS)
        {
            errors.push("initialDelayMs", format!("at most {MAX_RETRY_DELAY_MS}"));
        }
        if self.max_delay_ms.is_some_and(|d| d > MAX_RETRY_DELAY_MS) {
            errors.push("maxDelayMs", format!("at most {MAX_RETRY_DELAY_MS}"));
        }
        if self.factor.is_some_and(|f| !(1.0..=10.0).contains(&f)) {
            errors.push("factor", "must be 1 to 10");
        }
        if let (Some(initial), Some(max)) = (self.initial_delay_ms, self.max_delay_ms)
            && initial > max
        {
            errors.push("maxDelayMs", "must not be below initialDelayMs");
        }
        errors.into_result()
    }
}
