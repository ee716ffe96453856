//! Configuration, read once: defaults, then `flowline.toml`, then `FLOWLINE_*` environment
//! variables (and `DATABASE_URL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Basic steps in flight per process on PostgreSQL by default: its finisher's batches grow with
/// them, ~5,000 steps/s with 128 and ~7,200 with 1,024 on two cores, where its backends keep
/// both cores busy.
pub const BASIC_ON_POSTGRES: usize = 1024;
/// Basic steps in flight per process on SQLite by default: its one writer is the limit, and 1,024
/// did no better than 128, while the CRM steps that open their own transactions would queue eight
/// times as deep for its connections and its write lock.
pub const BASIC_ON_SQLITE: usize = 128;

/// Everything the binary is configured with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where `serve` listens.
    pub bind: SocketAddr,
    /// Where the SQLite database (and other local state) lives when no `database_url` is set.
    pub data_dir: PathBuf,
    /// `postgres://…` to run on PostgreSQL; unset for the embedded SQLite file.
    pub database_url: Option<String>,
    /// SQLite durability: `full` (default) or `normal`.
    pub sqlite_synchronous: SqliteSynchronous,
    /// How Linux schedules the process's threads: `batch` (default) or `normal`.
    pub cpu_scheduling: CpuScheduling,
    /// PostgreSQL pool size.
    pub pg_pool_size: u32,
    /// `text` or `json` log lines.
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `flowline=debug,sqlx=warn`, ...).
    pub log: String,
    /// The name of the workspace `serve` creates on an empty database.
    pub bootstrap_workspace_name: String,
    /// How long a worker's lease on a step lasts, in milliseconds, unless renewed.
    pub lease_ms: u64,
    /// The most steps one run may queue.
    pub step_limit: i32,
    /// Steps of the basic queue running at once in this process; unset, [`BASIC_ON_POSTGRES`]
    /// on PostgreSQL and [`BASIC_ON_SQLITE`] on SQLite. Basic steps do little but wait for
    /// their group commit, so many in flight make larger commits (see BENCHMARKS.md).
    pub concurrency_basic: Option<usize>,
    /// Steps of the advanced queue running at once in this process.
    pub concurrency_advanced: usize,
    /// Steps of the integration queue running at once in this process. They wait on other
    /// services' answers, so many in flight keep the group commits full (128: ~40% more signed
    /// webhook deliveries/s than 32 on SQLite, ~50% on PostgreSQL, see BENCHMARKS.md).
    pub concurrency_integration: usize,
    /// How many steps of one run a worker goes on with in place (each handed to it claimed in
    /// the transaction that ends the step before) before the run's next step goes back through
    /// its queue and the fair claim; 0 sends every step through the queue.
    pub hand_on_steps: u32,
    /// JavaScript sandbox processes at most (each runs one script at a time).
    pub sandbox_pool_size: usize,
    /// The longest deadline a script may have, in milliseconds (1 to 10,000).
    pub javascript_timeout_cap_ms: u64,
    /// The most memory a script may have, in MiB (1 to 128).
    pub javascript_memory_cap_mb: u32,
    /// The key secrets are sealed with: 32 bytes, base64. Unset on the SQLite default, a key
    /// file is made once in the data folder; PostgreSQL deployments must set it (the same on
    /// every process).
    pub secret_key: Option<String>,
    /// Networks outbound requests may reach despite the SSRF guard, comma-separated CIDRs
    /// (`10.0.0.0/8, 127.0.0.1/32`).
    pub outbound_allow: String,
    /// SendGrid's API.
    pub sendgrid_url: String,
    /// Mailgun's API.
    pub mailgun_url: String,
    /// HubSpot's API.
    pub hubspot_url: String,
    /// The SMTP server email actions use when they name none.
    pub smtp_host: Option<String>,
    /// Its port.
    pub smtp_port: u16,
    /// `none`, `starttls` or `tls`.
    pub smtp_security: String,
    /// Its user name.
    pub smtp_username: Option<String>,
    /// Its password.
    pub smtp_password: Option<String>,
    /// Attempts in all of an action that names no retry policy (default 3).
    pub retry_max_attempts: u32,
    /// The first wait before such an action's step runs again, in milliseconds (default 1 s).
    pub retry_initial_delay_ms: u64,
    /// How much each wait grows (default 2).
    pub retry_factor: f64,
    /// The longest wait between attempts, in milliseconds (default 5 min).
    pub retry_max_delay_ms: u64,
    /// Whether waits are randomised between 0 and their exponential bound (default true).
    pub retry_jitter: bool,
    /// How long a step of an action that names no `timeoutMs` may run, in milliseconds
    /// (default 30 s).
    pub default_timeout_ms: u64,
    /// The safety-net poll for due work when no wake-up comes, in milliseconds (default 2 s).
    pub poll_interval_ms: u64,
    /// Attempts of a webhook in all (default 8: about 15 hours).
    pub webhook_max_attempts: u32,
    /// The first wait before a webhook is sent again, in milliseconds (default 5 s).
    pub webhook_initial_delay_ms: u64,
    /// The longest wait between a webhook's attempts, in milliseconds (default 10 h).
    pub webhook_max_delay_ms: u64,
    /// A bearer token `/metrics` asks for (open when unset).
    pub metrics_token: Option<String>,
}

/// SQLite's `synchronous` pragma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    /// Every commit reaches the disk.
    Full,
    /// Faster; the last commits may be lost on power loss.
    Normal,
}

/// How Linux schedules the process's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuScheduling {
    /// `SCHED_BATCH`: a thread that wakes another does not give up its core to it at once.
    Batch,
    /// As the process was started (the system's default, `SCHED_OTHER`, unless told otherwise).
    Normal,
}

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("flowline-data"),
            database_url: None,
            sqlite_synchronous: SqliteSynchronous::Full,
            cpu_scheduling: CpuScheduling::Batch,
            pg_pool_size: 10,
            log_format: LogFormat::Text,
            log: "info,sqlx=warn".to_owned(),
            bootstrap_workspace_name: "Default workspace".to_owned(),
            lease_ms: 30_000,
            step_limit: 1_000,
            concurrency_basic: None,
            concurrency_advanced: 32,
            concurrency_integration: 128,
            hand_on_steps: 16,
            sandbox_pool_size: 2,
            javascript_timeout_cap_ms: 10_000,
            javascript_memory_cap_mb: 128,
            secret_key: None,
            outbound_allow: String::new(),
            sendgrid_url: "https://api.sendgrid.com".to_owned(),
            mailgun_url: "https://api.mailgun.net".to_owned(),
            hubspot_url: "https://api.hubapi.com".to_owned(),
            smtp_host: None,
            smtp_port: 587,
            smtp_security: "starttls".to_owned(),
            smtp_username: None,
            smtp_password: None,
            retry_max_attempts: 3,
            retry_initial_delay_ms: 1_000,
            retry_factor: 2.0,
            retry_max_delay_ms: 300_000,
            retry_jitter: true,
            default_timeout_ms: 30_000,
            poll_interval_ms: 2_000,
            webhook_max_attempts: 8,
            webhook_initial_delay_ms: 5_000,
            webhook_max_delay_ms: 10 * 3_600_000,
            metrics_token: None,
        }
    }
}

/// The configuration keys, as `FLOWLINE_<KEY>` variables and TOML keys.
const CONFIG_KEYS: [&str; 39] = [
    "bind",
    "data_dir",
    "database_url",
    "sqlite_synchronous",
    "cpu_scheduling",
    "pg_pool_size",
    "log_format",
    "log",
    "bootstrap_workspace_name",
    "lease_ms",
    "step_limit",
    "concurrency_basic",
    "concurrency_advanced",
    "concurrency_integration",
    "hand_on_steps",
    "sandbox_pool_size",
    "javascript_timeout_cap_ms",
    "javascript_memory_cap_mb",
    "secret_key",
    "outbound_allow",
    "sendgrid_url",
    "mailgun_url",
    "hubspot_url",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_username",
    "smtp_password",
    "retry_max_attempts",
    "retry_initial_delay_ms",
    "retry_factor",
    "retry_max_delay_ms",
    "retry_jitter",
    "default_timeout_ms",
    "poll_interval_ms",
    "webhook_max_attempts",
    "webhook_initial_delay_ms",
    "webhook_max_delay_ms",
    "metrics_token",
];

impl Config {
    /// Reads the configuration; `file` defaults to `./flowline.toml` when it exists.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "the configuration file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("flowline.toml")),
        }
        let config: Config = figment
            // Only the keys Flowline reads: other FLOWLINE_* variables (a test's, a script's) are
            // not configuration. Unknown keys in the TOML file are still refused.
            .merge(Env::prefixed("FLOWLINE_").only(&CONFIG_KEYS))
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .extract()
            .context("invalid configuration")?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.database_url {
            anyhow::ensure!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "DATABASE_URL must be a postgres:// URL (leave it unset for the embedded SQLite database)"
            );
        }
        anyhow::ensure!(self.pg_pool_size >= 1, "pg_pool_size must be at least 1");
        anyhow::ensure!(
            (500..=3_600_000).contains(&self.lease_ms),
            "lease_ms must be 500 to 3600000"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.step_limit),
            "step_limit must be 1 to 100000"
        );
        anyhow::ensure!(
            self.concurrency_basic
                .iter()
                .chain([&self.concurrency_advanced, &self.concurrency_integration])
                .all(|c| (1..=4096).contains(c)),
            "concurrency_* must be 1 to 4096"
        );
        anyhow::ensure!(
            self.hand_on_steps <= 1_000,
            "hand_on_steps must be 0 to 1000"
        );
        anyhow::ensure!(
            !self.bootstrap_workspace_name.trim().is_empty(),
            "bootstrap_workspace_name must not be empty"
        );
        self.outbound_networks()?;
        self.smtp_security()?;
        anyhow::ensure!(
            (1..=100).contains(&self.retry_max_attempts),
            "retry_max_attempts must be 1 to 100"
        );
        anyhow::ensure!(
            self.retry_initial_delay_ms <= self.retry_max_delay_ms
                && self.retry_max_delay_ms <= 7 * 86_400_000,
            "retry_initial_delay_ms must be at most retry_max_delay_ms, and that at most 7 days (604800000)"
        );
        anyhow::ensure!(
            (1.0..=10.0).contains(&self.retry_factor),
            "retry_factor must be 1 to 10"
        );
        anyhow::ensure!(
            (1..=86_400_000).contains(&self.default_timeout_ms),
            "default_timeout_ms must be 1 to 86400000"
        );
        anyhow::ensure!(
            (10..=3_600_000).contains(&self.poll_interval_ms),
            "poll_interval_ms must be 10 to 3600000"
        );
        anyhow::ensure!(
            (1..=20).contains(&self.webhook_max_attempts),
            "webhook_max_attempts must be 1 to 20"
        );
        anyhow::ensure!(
            (1..=64).contains(&self.sandbox_pool_size),
            "sandbox_pool_size must be 1 to 64"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.javascript_timeout_cap_ms),
            "javascript_timeout_cap_ms must be 1 to 10000"
        );
        anyhow::ensure!(
            (1..=128).contains(&self.javascript_memory_cap_mb),
            "javascript_memory_cap_mb must be 1 to 128"
        );
        Ok(())
    }
}

impl Config {
    /// `outbound_allow`, parsed.
    pub fn outbound_networks(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.outbound_allow
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "outbound_allow: `{n}` is not a network (like 10.0.0.0/8) or an address"
                        )
                    })
            })
            .collect()
    }

    fn smtp_security(&self) -> anyhow::Result<flowline_core::action::integration::SmtpSecurity> {
        self.smtp_security
            .parse()
            .map_err(|e| anyhow::anyhow!("smtp_security: {e}"))
    }

    /// Basic steps in flight per process, on PostgreSQL or on SQLite.
    pub fn concurrency_basic(&self, postgres: bool) -> usize {
        self.concurrency_basic.unwrap_or(if postgres {
            BASIC_ON_POSTGRES
        } else {
            BASIC_ON_SQLITE
        })
    }

    /// The engine's settings.
    pub fn engine(&self) -> flowline_engine::EngineConfig {
        use flowline_core::status::Queue;
        let lease = std::time::Duration::from_millis(self.lease_ms);
        flowline_engine::EngineConfig {
            concurrency: [
                (
                    Queue::Basic,
                    self.concurrency_basic(self.database_url.is_some()),
                ),
                (Queue::Advanced, self.concurrency_advanced),
                (Queue::Integration, self.concurrency_integration),
            ]
            .into(),
            lease,
            hand_on_steps: self.hand_on_steps,
            rescue_interval: (lease / 3).max(std::time::Duration::from_millis(200)),
            step_limit: self.step_limit,
            poll_interval: std::time::Duration::from_millis(self.poll_interval_ms),
            retry: flowline_engine::backoff::RetryDefaults {
                max_attempts: self.retry_max_attempts,
                initial_delay: std::time::Duration::from_millis(self.retry_initial_delay_ms),
                factor: self.retry_factor,
                max_delay: std::time::Duration::from_millis(self.retry_max_delay_ms),
                jitter: self.retry_jitter,
            },
            default_timeout: std::time::Duration::from_millis(self.default_timeout_ms),
            sandbox_pool_size: self.sandbox_pool_size,
            javascript_timeout_cap: std::time::Duration::from_millis(
                self.javascript_timeout_cap_ms,
            ),
            javascript_memory_cap_mb: self.javascript_memory_cap_mb,
            outbound: flowline_engine::outbound::OutboundPolicy {
                allow: self.outbound_networks().unwrap_or_default(),
            },
            email: flowline_engine::executor::EmailSettings {
                sendgrid_url: self.sendgrid_url.clone(),
                mailgun_url: self.mailgun_url.clone(),
                smtp: self.smtp_host.as_ref().map(|host| {
                    flowline_core::action::integration::SmtpSettings {
                        host: host.clone(),
                        port: self.smtp_port,
                        security: self
                            .smtp_security()
                            .unwrap_or(flowline_core::action::integration::SmtpSecurity::Starttls),
                        username: self.smtp_username.clone(),
                        password: self.smtp_password.clone(),
                    }
                }),
            },
            hubspot_url: self.hubspot_url.clone(),
            metrics_token: self.metrics_token.clone(),
            webhook_retry: flowline_engine::backoff::RetryDefaults {
                max_attempts: self.webhook_max_attempts,
                initial_delay: std::time::Duration::from_millis(self.webhook_initial_delay_ms),
                factor: 5.0,
                max_delay: std::time::Duration::from_millis(self.webhook_max_delay_ms),
                jitter: true,
            },
            ..Default::default()
        }
    }
}

/// Starts logging to stderr in the configured format.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowline_core::status::Queue;

    #[test]
    fn basic_steps_in_flight_follow_the_backend_unless_set() {
        let sqlite = Config::default();
        assert_eq!(sqlite.engine().concurrency[&Queue::Basic], BASIC_ON_SQLITE);
        let postgres = Config {
            database_url: Some("postgres://127.0.0.1/flowline".into()),
            ..Config::default()
        };
        assert_eq!(
            postgres.engine().concurrency[&Queue::Basic],
            BASIC_ON_POSTGRES
        );
        let set = Config {
            concurrency_basic: Some(64),
            ..postgres
        };
        assert_eq!(set.engine().concurrency[&Queue::Basic], 64);
        assert_eq!(set.concurrency_basic(false), 64);
        let too_many = Config {
            concurrency_basic: Some(5000),
            ..Config::default()
        };
        Config::default().check().unwrap();
        let refused = too_many.check().unwrap_err().to_string();
        assert!(refused.contains("concurrency_"), "{refused}");
    }

    #[test]
    fn retry_defaults_timeout_and_poll_come_from_the_configuration() {
        let config = Config {
            retry_max_attempts: 5,
            retry_initial_delay_ms: 250,
            retry_factor: 3.0,
            retry_max_delay_ms: 9_000,
            retry_jitter: false,
            default_timeout_ms: 1_500,
            poll_interval_ms: 700,
            ..Config::default()
        };
        config.check().unwrap();
        let engine = config.engine();
        assert_eq!(
            engine.retry,
            flowline_engine::backoff::RetryDefaults {
                max_attempts: 5,
                initial_delay: std::time::Duration::from_millis(250),
                factor: 3.0,
                max_delay: std::time::Duration::from_millis(9_000),
                jitter: false,
            }
        );
        assert_eq!(
            engine.default_timeout,
            std::time::Duration::from_millis(1_500)
        );
        assert_eq!(engine.poll_interval, std::time::Duration::from_millis(700));
        // The defaults are the design's: 3 attempts, 1 s doubling to 5 min, with jitter.
        assert_eq!(
            Config::default().engine().retry,
            flowline_engine::backoff::RetryDefaults::default()
        );
        for (bad, key) in [
            (
                Config {
                    retry_max_attempts: 0,
                    ..Config::default()
                },
                "retry_max_attempts",
            ),
            (
                Config {
                    retry_initial_delay_ms: 400_000,
                    ..Config::default()
                },
                "retry_initial_delay_ms",
            ),
            (
                Config {
                    retry_factor: 0.5,
                    ..Config::default()
                },
                "retry_factor",
            ),
            (
                Config {
                    default_timeout_ms: 0,
                    ..Config::default()
                },
                "default_timeout_ms",
            ),
            (
                Config {
                    poll_interval_ms: 1,
                    ..Config::default()
                },
                "poll_interval_ms",
            ),
        ] {
            let refused = bad.check().unwrap_err().to_string();
            assert!(refused.contains(key), "{refused}");
        }
    }
}
