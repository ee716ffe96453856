//! Cron schedules for flows: a croner pattern in an IANA time zone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::validation::ValidationErrors;

/// When a flow runs by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Schedule {
    /// A cron pattern (`0 9 * * MON-FRI`; an optional leading seconds field; `@daily` and the like).
    pub cron: String,
    /// An IANA time zone (`Europe/Paris`); default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A schedule checked and ready to compute its slots.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

impl CronSchedule {
    /// Parses `schedule`; field paths in the errors are `cron` and `timezone`.
    pub fn parse(schedule: &Schedule) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(schedule.cron.trim())
            .map_err(|e| errors.push("cron", format!("not a cron pattern: {e}")))
            .ok();
        let zone = schedule
            .timezone
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                errors.push(
                    "timezone",
                    format!("`{}` is not an IANA time zone", schedule.timezone),
                )
            })
            .ok();
        match (cron, zone) {
            (Some(cron), Some(zone)) => Ok(Self { cron, zone }),
            _ => Err(errors),
        }
    }

    /// The first slot strictly after `after`; `None` when the pattern never matches again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cron: &str, timezone: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: timezone.into(),
        }
    }

    #[test]
    fn slots_follow_the_pattern_in_its_time_zone() {
        let daily = CronSchedule::parse(&schedule("0 9 * * *", "Europe/Paris")).unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
        assert_eq!(
            daily.next_after(winter),
            Some(Utc.with_ymd_and_hms(2026, 1, 16, 8, 0, 0).unwrap())
        );
        let summer = Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(
            daily.next_after(summer),
            Some(Utc.with_ymd_and_hms(2026, 7, 16, 7, 0, 0).unwrap())
        );
        let every_second = CronSchedule::parse(&schedule("* * * * * *", "UTC")).unwrap();
        assert_eq!(
            every_second.next_after(winter),
            Some(winter + chrono::Duration::seconds(1))
        );
    }

    #[test]
    fn bad_patterns_and_zones_are_named() {
        let errors = CronSchedule::parse(&schedule("every day", "Mars/Olympus")).unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["cron", "timezone"]);
    }
}
