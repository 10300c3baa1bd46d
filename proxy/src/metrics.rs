//! The sidecar's metrics: names, labels and the Prometheus recorder behind `/metrics`.
//!
//! Label values are `&'static str` wherever the set is closed (direction, protocol, result).
//! The golden metrics are labelled by the workload identities at both ends (`source`,
//! `destination`: SPIFFE IDs, or `external` for what is outside the mesh — a gateway's
//! clients, a passthrough destination); never by user, path or address, so their
//! cardinality is bounded by the workloads that talk. Identity labels are [`Label`]s made
//! once per connection or destination, so recording copies no string.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

pub const REQUESTS_TOTAL: &str = "ward_requests_total";
pub const REQUEST_DURATION: &str = "ward_request_duration_seconds";
pub const TCP_CONNECTIONS_OPEN: &str = "ward_tcp_connections_open";
pub const TCP_BYTES_TOTAL: &str = "ward_tcp_bytes_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "ward_tls_handshakes_total";
pub const CERT_EXPIRY: &str = "ward_cert_expiry_timestamp_seconds";
pub const CERT_ISSUED: &str = "ward_cert_issued_timestamp_seconds";
pub const PROTOCOL_DETECT_TOTAL: &str = "ward_protocol_detect_total";
pub const REQUEST_RETRIES_TOTAL: &str = "ward_request_retries_total";
pub const REQUEST_FAILURES_TOTAL: &str = "ward_request_failures_total";

/// A label value shared by reference count (an identity, made once, cloned per request).
pub type Label = metrics::SharedString;

/// The label of a workload identity.
pub fn identity(id: &str) -> Label {
    Label::from(Arc::<str>::from(id))
}

/// The label of whatever is outside the mesh.
pub const EXTERNAL: Label = Label::const_str("external");

/// Latency buckets, seconds: sub-millisecond to a minute.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Which way traffic flows through this sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    /// The gateway's public listener.
    Gateway,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Gateway => "gateway",
        }
    }
}

/// Installs the process-wide recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = ward_runtime::telemetry::install_metrics(&[(REQUEST_DURATION, BUCKETS)])
        .map_err(|e| e.to_string())?;
    describe_counter!(REQUESTS_TOTAL, "HTTP requests and gRPC calls handled");
    describe_histogram!(
        REQUEST_DURATION,
        "Time from request received to response headers"
    );
    describe_gauge!(TCP_CONNECTIONS_OPEN, "Connections currently open");
    describe_counter!(TCP_BYTES_TOTAL, "Bytes carried by opaque TCP connections");
    describe_counter!(TLS_HANDSHAKES_TOTAL, "mTLS handshakes by result");
    describe_gauge!(CERT_EXPIRY, "notAfter of the served SVID, Unix seconds");
    describe_gauge!(CERT_ISSUED, "notBefore of the served SVID, Unix seconds");
    describe_counter!(
        PROTOCOL_DETECT_TOTAL,
        "Protocol detection outcomes on outbound connections"
    );
    describe_counter!(
        REQUEST_RETRIES_TOTAL,
        "Requests sent again because the upstream certainly never processed them"
    );
    describe_counter!(
        REQUEST_FAILURES_TOTAL,
        "Requests the sidecar answered with an error itself, by cause"
    );
    Ok(handle)
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One finished request from `source` to `destination`.
pub fn request(
    direction: Direction,
    protocol: &'static str,
    (source, destination): (&Label, &Label),
    status: u16,
    elapsed: Duration,
) {
    counter!(
        REQUESTS_TOTAL,
        "direction" => direction.label(),
        "protocol" => protocol,
        "source" => source.clone(),
        "destination" => destination.clone(),
        "status_class" => status_class(status)
    )
    .increment(1);
    histogram!(
        REQUEST_DURATION,
        "direction" => direction.label(),
        "protocol" => protocol,
        "source" => source.clone(),
        "destination" => destination.clone()
    )
    .record(elapsed.as_secs_f64());
}

/// One TLS handshake; `result` is `ok`, `identity_mismatch`, `bad_certificate`, `error`, ….
/// A request answered by the sidecar itself with an error, by cause.
pub fn failed(direction: Direction, cause: &'static str) {
    counter!(REQUEST_FAILURES_TOTAL, "direction" => direction.label(), "cause" => cause)
        .increment(1);
}

/// A warning that may repeat under load: logged at most once per interval, with how many
/// were held back since the last one.
pub struct RateLimitedWarn {
    interval_ms: u64,
    /// Milliseconds since the process's first warning, of the last one logged (+1; 0: none).
    last: std::sync::atomic::AtomicU64,
    held: std::sync::atomic::AtomicU64,
}

impl RateLimitedWarn {
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            last: std::sync::atomic::AtomicU64::new(0),
            held: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Calls `log` with the number held back, unless one was logged within the interval.
    pub fn warn(&self, log: impl FnOnce(u64)) {
        use std::sync::atomic::Ordering;
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.held.swap(0, Ordering::Relaxed));
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn handshake(direction: Direction, result: &'static str) {
    counter!(TLS_HANDSHAKES_TOTAL, "direction" => direction.label(), "result" => result)
        .increment(1);
}

/// A request sent again; `reason` is `unsent` (its connection had closed), `goaway` (the
/// upstream's GOAWAY left it unprocessed; idempotent requests only) or `refused`
/// (REFUSED_STREAM).
pub fn retried(reason: &'static str) {
    counter!(REQUEST_RETRIES_TOTAL, "reason" => reason).increment(1);
}

pub fn detected(result: &'static str) {
    counter!(PROTOCOL_DETECT_TOTAL, "result" => result).increment(1);
}

/// Bytes an opaque TCP connection carried, each way (`sent`: from the source).
pub fn tcp_bytes(
    direction: Direction,
    (source, destination): (&Label, &Label),
    sent: u64,
    received: u64,
) {
    for (flow, bytes) in [("sent", sent), ("received", received)] {
        counter!(
            TCP_BYTES_TOTAL,
            "direction" => direction.label(),
            "source" => source.clone(),
            "destination" => destination.clone(),
            "flow" => flow
        )
        .increment(bytes);
    }
}

/// The served SVID's validity window.
pub fn cert_validity(not_before: SystemTime, not_after: SystemTime) {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    gauge!(CERT_ISSUED).set(secs(not_before));
    gauge!(CERT_EXPIRY).set(secs(not_after));
}

/// Counts one open connection for as long as it lives.
#[derive(Debug)]
pub struct OpenConnection(Direction);

impl OpenConnection {
    pub fn new(direction: Direction) -> Self {
        gauge!(TCP_CONNECTIONS_OPEN, "direction" => direction.label()).increment(1.0);
        Self(direction)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        gauge!(TCP_CONNECTIONS_OPEN, "direction" => self.0.label()).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_classes() {
        assert_eq!(super::status_class(204), "2xx");
        assert_eq!(super::status_class(431), "4xx");
        assert_eq!(super::status_class(504), "5xx");
        assert_eq!(super::status_class(101), "1xx");
    }
}
