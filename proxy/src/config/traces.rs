//! `tracing:` — request spans exported over OTLP (see the README's "Traces").

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_runtime::traces::{Exporting, Protocol};

use super::ConfigError;
use super::duration;

/// Where and how spans are exported; absent: no spans are made.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The collector: `http://HOST:4317` for OTLP/gRPC, `http://HOST:4318` (or a full URL
    /// with its path) for OTLP/HTTP.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: TraceProtocol,
    /// The share of new traces recorded, 0 to 1 (requests that arrive with a trace follow
    /// their caller's decision).
    #[serde(default = "one")]
    pub sampling: f64,
    /// Finished spans waiting for export; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Spans per export.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The longest a span waits for its batch.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// The longest one export may take.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// `service.name` of this proxy's spans (default: the workload's `app` label, else
    /// `ward-proxy`, or `ward-gateway` for a gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceProtocol {
    #[default]
    Grpc,
    Http,
}

fn one() -> f64 {
    1.0
}
fn default_queue() -> usize {
    2048
}
fn default_batch() -> usize {
    512
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Tracing {
    fn protocol(&self) -> Protocol {
        match self.protocol {
            TraceProtocol::Grpc => Protocol::Grpc,
            TraceProtocol::Http => Protocol::Http,
        }
    }

    /// Checks the values; `err(field, why)` makes the error.
    pub(super) fn check(&self, err: impl Fn(&str, &str) -> ConfigError) -> Result<(), ConfigError> {
        ward_runtime::traces::endpoint(&self.endpoint, self.protocol())
            .map_err(|e| err("tracing.endpoint", &e.to_string()))?;
        if !(0.0..=1.0).contains(&self.sampling) {
            return Err(err("tracing.sampling", "must be between 0 and 1"));
        }
        if self.queue == 0 || self.batch == 0 || self.batch > self.queue {
            return Err(err(
                "tracing.batch",
                "queue and batch must be at least 1, and batch at most queue",
            ));
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err(err(
                "tracing.interval",
                "interval and timeout must be above 0",
            ));
        }
        Ok(())
    }

    /// What the exporter is given; `service` is the default `service.name`.
    pub fn exporting(&self, service: &str, namespace: &str) -> Exporting {
        Exporting {
            endpoint: self.endpoint.clone(),
            protocol: self.protocol(),
            sampling: self.sampling,
            queue: self.queue,
            batch: self.batch,
            interval: self.interval,
            timeout: self.timeout,
            service: self
                .service_name
                .clone()
                .unwrap_or_else(|| service.to_owned()),
            attributes: vec![("service.namespace", namespace.to_owned())],
        }
    }
}
