//! Logs and metrics, set up the same way by both binaries.
//!
//! Logs go to stderr as text or JSON lines, filtered by `WARD_LOG` (default `info`), with
//! colour codes only on a terminal. Further `tracing` layers (the trace exporter, see
//! [`crate::traces`]) plug in through [`init_logs_with`], each with its own filter.
//! Metrics: one Prometheus recorder per process, its histogram buckets given per metric,
//! and an upkeep task that folds raw histogram samples into buckets between scrapes.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("log format {other:?} is not text or json")),
        }
    }
}

/// A layer installed beside the log writer. The log writer is filtered by `WARD_LOG`; a
/// layer added here brings its own filter (traces export their spans whatever the log
/// level).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the process's log writer. Call once, before anything logs.
pub fn init_logs(format: LogFormat) {
    init_logs_with(format, Vec::new());
}

/// Installs the log writer and `extra` layers.
pub fn init_logs_with(format: LogFormat, extra: Vec<ExtraLayer>) {
    let filter = EnvFilter::try_from_env("WARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        // Colour codes only on a terminal: log files and `kubectl logs` stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let writer: ExtraLayer = match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let mut layers = vec![writer];
    layers.extend(extra);
    // A second init (tests that start twice in one process) keeps the first writer.
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// Installs the process-wide Prometheus recorder; `buckets` are (metric name, bucket
/// bounds) for the histograms that need their own.
pub fn install_metrics(buckets: &[(&str, &[f64])]) -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    for (name, bounds) in buckets {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)?;
    }
    builder.install_recorder()
}

/// How often the recorder's upkeep runs.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep every `every`, for the life of the process. The exporter
/// keeps raw histogram samples until a scrape or an upkeep pass, so without this a
/// process nobody scrapes would keep every sample it ever recorded.
pub async fn upkeep(handle: PrometheusHandle, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}
