//! Retry policies with defaults: how many attempts, and the wait before each retry.

use std::time::Duration;

use flowline_core::retry::RetryPolicy;
use rand::Rng;

/// The retry policy an action gets when it names none (DESIGN.md §3: 3 attempts, 1 s doubling
/// to at most 5 min, with jitter).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryDefaults {
    /// Attempts in all.
    pub max_attempts: u32,
    /// The first wait.
    pub initial_delay: Duration,
    /// How much each wait grows.
    pub factor: f64,
    /// The longest wait.
    pub max_delay: Duration,
    /// Whether waits are randomised.
    pub jitter: bool,
}

impl Default for RetryDefaults {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl RetryDefaults {
    /// Attempts allowed under `policy`.
    pub fn max_attempts(&self, policy: Option<&RetryPolicy>) -> u32 {
        policy
            .and_then(|p| p.max_attempts)
            .unwrap_or(self.max_attempts)
            .max(1)
    }

    /// The wait after failed attempt number `attempt` (1 first): exponential, capped, with
    /// full jitter when on, and never shorter than `at_least` (a peer's `Retry-After`).
    pub fn delay(
        &self,
        policy: Option<&RetryPolicy>,
        attempt: i32,
        at_least: Option<Duration>,
    ) -> Duration {
        let initial = policy
            .and_then(|p| p.initial_delay_ms)
            .map_or(self.initial_delay, Duration::from_millis);
        let factor = policy.and_then(|p| p.factor).unwrap_or(self.factor);
        let max = policy
            .and_then(|p| p.max_delay_ms)
            .map_or(self.max_delay, Duration::from_millis);
        let jitter = policy.and_then(|p| p.jitter).unwrap_or(self.jitter);
        let exponent = (attempt.max(1) - 1).min(64);
        let grown = initial.as_secs_f64() * factor.powi(exponent);
        let capped = grown.min(max.as_secs_f64());
        let waited = if jitter && capped > 0.0 {
            rand::rng().random_range(0.0..=capped)
        } else {
            capped
        };
        let delay = Duration::from_secs_f64(waited);
        match at_least {
            Some(floor) => delay.max(floor),
            None => delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_exponentially_up_to_the_cap() {
        let defaults = RetryDefaults {
            jitter: false,
            ..Default::default()
        };
        assert_eq!(defaults.delay(None, 1, None), Duration::from_secs(1));
        assert_eq!(defaults.delay(None, 2, None), Duration::from_secs(2));
        assert_eq!(defaults.delay(None, 4, None), Duration::from_secs(8));
        assert_eq!(defaults.delay(None, 30, None), Duration::from_secs(300));
        let policy = RetryPolicy {
            initial_delay_ms: Some(100),
            factor: Some(3.0),
            max_delay_ms: Some(500),
            ..Default::default()
        };
        assert_eq!(
            defaults.delay(Some(&policy), 2, None),
            Duration::from_millis(300)
        );
        assert_eq!(
            defaults.delay(Some(&policy), 3, None),
            Duration::from_millis(500)
        );
        assert_eq!(
            defaults.delay(Some(&policy), 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn jitter_stays_within_the_exponential_bound() {
        let defaults = RetryDefaults::default();
        for attempt in 1..6 {
            let bound = Duration::from_secs(1 << (attempt - 1));
            // Full jitter: waits spread over the whole of 0..=bound, not just the bound itself.
            let waits: Vec<Duration> = (0..200)
                .map(|_| defaults.delay(None, attempt, None))
                .collect();
            assert!(waits.iter().all(|w| *w <= bound), "{waits:?}");
            assert!(waits.iter().any(|w| *w < bound / 2), "{waits:?}");
            assert!(waits.iter().any(|w| *w > bound / 2), "{waits:?}");
            let mut distinct = waits.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() > 100, "{} distinct waits", distinct.len());
            // A peer's Retry-After is a floor under the jitter.
            let floor = bound + Duration::from_secs(1);
            assert_eq!(defaults.delay(None, attempt, Some(floor)), floor);
        }
        assert_eq!(defaults.max_attempts(None), 3);
        assert_eq!(
            defaults.max_attempts(Some(&RetryPolicy {
                max_attempts: Some(7),
                ..Default::default()
            })),
            7
        );
    }
}
