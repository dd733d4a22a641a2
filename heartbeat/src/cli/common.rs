//! What the subcommands share: the store and timing flags, durations on the command
//! line, logging, errors and exit codes.

use std::fmt;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use heartbeat::{
    Connection, HeartbeatOptions, HeartbeatOptionsBuilder, InstanceId, KeyLayout, StoreError,
    StoreUrl,
};
use tracing_subscriber::EnvFilter;

/// Exit code: any failure not covered below.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: bad usage or configuration (flags, environment, store URL, feature).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the store could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

/// An error of a subcommand: what went wrong (with what to try), and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub code: u8,
    /// The message, one or more sentences, ending with what to try.
    pub message: String,
}

impl CliError {
    /// Exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Exit 3.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNREACHABLE,
            message: message.into(),
        }
    }

    /// Exit 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// A store error met while talking to `url`: unreachable (3) or failure (1).
    pub fn store(url: &StoreUrl, what: &str, e: &StoreError) -> Self {
        if heartbeat::connect::is_unreachable(e) {
            Self::unreachable(format!(
                "{what}: {url} is unreachable: {e}. Check the --store URL and the network between here and the store"
            ))
        } else {
            Self::failure(format!("{what} on {url}: {e}"))
        }
    }

    /// Prints the message on stderr and turns the error into an exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<heartbeat::ConnectError> for CliError {
    fn from(e: heartbeat::ConnectError) -> Self {
        let code = e.exit_code();
        let hint = match code {
            EXIT_UNREACHABLE => {
                ". Check the --store URL and the network between here and the store"
            }
            _ => "",
        };
        Self {
            code,
            message: format!("{e}{hint}"),
        }
    }
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Parses a duration: a bare number is milliseconds; otherwise numbers with units
/// `ms`, `s`, `m`, `h`, which may be combined (`1m30s`) and may have decimals (`1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; give milliseconds (500) or a unit (500ms, 2s, 1m)".into());
    }
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = num.parse().map_err(|_| bad_duration(s))?;
        let unit_secs = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            _ => return Err(bad_duration(s)),
        };
        let part = Duration::try_from_secs_f64(value * unit_secs).map_err(|_| bad_duration(s))?;
        total = total.checked_add(part).ok_or_else(|| bad_duration(s))?;
        rest = after;
    }
    Ok(total)
}

fn bad_duration(s: &str) -> String {
    format!(
        "{s:?} is not a duration; give milliseconds (500) or numbers with units ms, s, m, h (500ms, 2s, 1m30s)"
    )
}

/// Formats a duration for humans: `850ms`, `2.4s`, `3m05s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// Where the store is.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store URL: memory://, redis://host:port[/db], rediss://, redis+cluster://h1:p1,h2:p2,
    /// dapr://host:port/<store>, dapr:///<store>, dynamodb://<table>?region=..&endpoint=..
    #[arg(
        long,
        env = "HEARTBEAT_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: String,
    /// Key prefix of the heartbeat records and the index (must match the cluster's).
    #[arg(long, env = "HEARTBEAT_KEY_PREFIX", default_value = heartbeat_core::keys::DEFAULT_PREFIX)]
    pub prefix: String,
}

impl StoreArgs {
    /// The parsed URL (exit 2 when invalid).
    pub fn url(&self) -> CliResult<StoreUrl> {
        StoreUrl::parse(&self.store).map_err(|e| {
            CliError::usage(format!(
                "--store: {e}. See `heartbeat --help` for the URL forms"
            ))
        })
    }

    /// The key layout.
    pub fn keys(&self) -> KeyLayout {
        KeyLayout::new(self.prefix.clone())
    }

    /// Connects (waiting up to `startup` for a store that is still starting), then
    /// proves the store answers within `timeout` (exit 2 or 3 on failure).
    pub async fn connect(&self, timeout: Duration, startup: Duration) -> CliResult<Connection> {
        let url = self.url()?;
        let options = heartbeat::ConnectOptions {
            call_timeout: Some(timeout),
            startup_timeout: Some(startup),
        };
        let connection = heartbeat::connect_with(url, &options).await?;
        connection.check(&self.keys(), timeout).await?;
        Ok(connection)
    }
}

/// Heartbeat timing, overriding the seed's environment variables.
#[derive(Debug, Clone, Args)]
pub struct TimingArgs {
    /// Heartbeat interval (milliseconds, or 500ms, 2s, 1m). Overrides
    /// INSTANCE_HEARTBEAT_INTERVAL_SECONDS (default 10 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Discovery interval: how often peers are read. Overrides
    /// INSTANCE_DISCOVERY_INTERVAL_SECONDS (default 30 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub discovery_interval: Option<Duration>,
    /// Unchanged for this long means dead (at least two heartbeat intervals). Overrides
    /// INSTANCE_STALE_THRESHOLD_SECONDS (default 60 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stale_threshold: Option<Duration>,
    /// Time allowed for one store call (default: the heartbeat interval, at most 5 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub store_timeout: Option<Duration>,
}

impl TimingArgs {
    /// A builder from the environment (HOSTNAME, INSTANCE_*_SECONDS, WSM_GRPC_*), the
    /// flags applied on top.
    pub fn builder(&self, keys: KeyLayout) -> CliResult<HeartbeatOptionsBuilder> {
        let mut b = HeartbeatOptions::builder_from_lookup(&|name| std::env::var(name).ok())
            .map_err(|e| CliError::usage(format!("{e}. Fix or unset the variable")))?
            .keys(keys);
        if let Some(d) = self.heartbeat_interval {
            b = b.heartbeat_interval(d);
        }
        if let Some(d) = self.discovery_interval {
            b = b.discovery_interval(d);
        }
        if let Some(d) = self.stale_threshold {
            b = b.stale_threshold(d);
        }
        if let Some(d) = self.store_timeout {
            b = b.store_timeout(d);
        }
        Ok(b)
    }
}

/// Builds options, explaining a rejection in terms of both flags and variables.
pub fn build_options(b: HeartbeatOptionsBuilder) -> CliResult<HeartbeatOptions> {
    b.build().map_err(|e| {
        CliError::usage(format!(
            "invalid heartbeat settings: {e}. Set them with --heartbeat-interval, --discovery-interval \
             and --stale-threshold, or the INSTANCE_*_SECONDS variables"
        ))
    })
}

/// Parses an instance id given on the command line.
pub fn parse_id(s: &str) -> Result<InstanceId, String> {
    InstanceId::new(s).map_err(|e| e.to_string())
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Sends logs to stderr in `format`; `RUST_LOG` overrides the default filter
/// (`level`, with the service's own event lines left to the agent's structured ones).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},heartbeat_core::service=warn,aws_config=error"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_bare_numbers_are_milliseconds() {
        assert_eq!(parse_duration("200").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn bad_durations_say_what_is_accepted() {
        for s in ["", "fast", "10x", "s", "1..5s", "-1s"] {
            let err = parse_duration(s).unwrap_err();
            assert!(err.contains("milliseconds"), "{s}: {err}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(2400)), "2.4s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(7260)), "2h01m");
    }
}
