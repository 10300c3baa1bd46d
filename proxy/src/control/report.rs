//! `Telemetry.Report`: every `identity.report_every` this proxy tells the control plane, for
//! its dashboard, what it has counted — its own golden metrics, read back from its
//! Prometheus recorder, so the dashboard and `/metrics` never disagree — its denials and
//! anomalies since the last report, and the SVID it serves. One stream, reopened with
//! backoff when it breaks; a report that cannot be sent is dropped, never queued.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;
use ward_api::v1;
use ward_certs::{CertInfo, MeshIdentity};
use ward_runtime::backoff::Backoff;

use super::ControlPlane;
use crate::authz::Authorizer;
use crate::authz::recent::now_ms;

/// What a report is made of.
pub struct Reporting {
    pub identity: MeshIdentity,
    pub metrics: Option<PrometheusHandle>,
    pub authz: Arc<Authorizer>,
    /// `sidecar` or `gateway`.
    pub role: &'static str,
    pub every: Duration,
}

/// Reports for the life of the process.
pub async fn follow(client: ControlPlane, reporting: Reporting) {
    let mut backoff = Backoff::control_plane();
    loop {
        let channel = match client.mtls_channel(&reporting.identity) {
            Ok(channel) => channel,
            Err(status) => {
                tracing::debug!(%status, "telemetry: no channel to the control plane");
                backoff.wait().await;
                continue;
            }
        };
        let (tx, rx) = mpsc::channel(1);
        let mut telemetry = v1::telemetry_client::TelemetryClient::new(channel);
        let call = telemetry.report(tokio_stream::wrappers::ReceiverStream::new(rx));
        let send = async {
            let mut tick = tokio::time::interval(reporting.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.send(report(&reporting)).await.is_err() {
                    return;
                }
                backoff.reset();
            }
        };
        tokio::select! {
            ended = call => {
                if let Err(status) = ended {
                    tracing::debug!(%status, "telemetry stream ended");
                }
            }
            () = send => {}
        }
        backoff.wait().await;
    }
}

fn report(reporting: &Reporting) -> v1::ProxyReport {
    let (denials, anomalies) = reporting.authz.recent.take();
    let edges = reporting
        .metrics
        .as_ref()
        .map(|h| edges(&h.render()))
        .unwrap_or_default();
    let chain = reporting.identity.svid.current_chain();
    let svid = chain
        .first()
        .and_then(|leaf| CertInfo::parse(leaf).ok())
        .map(|info| v1::Svid {
            spiffe_id: info
                .spiffe_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            serial: info.serial,
            not_before_unix: ward_runtime::time::unix_secs(info.not_before) as i64,
            not_after_unix: ward_runtime::time::unix_secs(info.not_after) as i64,
        });
    v1::ProxyReport {
        time_unix_ms: now_ms(),
        role: reporting.role.to_owned(),
        edges,
        denials,
        anomalies,
        svid,
    }
}

/// One sample of the exposition: its metric name, labels and value.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Parses one line of the Prometheus text format (`name{k="v",...} value`); comments and
/// anything unreadable are `None`.
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = head.split_once('{') else {
        return Some(Sample {
            name: head,
            labels: Vec::new(),
            value,
        });
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut text = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => text.push('\n'),
                    other => text.push(other),
                },
                '"' => break i,
                c => text.push(c),
            }
        };
        labels.push((key, text));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The golden metrics of `exposition`, summed per (direction, source, destination).
pub(crate) fn edges(exposition: &str) -> Vec<v1::EdgeCounts> {
    let mut edges: BTreeMap<(String, String, String), v1::EdgeCounts> = BTreeMap::new();
    for s in exposition.lines().filter_map(sample) {
        let wanted = matches!(
            s.name,
            "ward_requests_total"
                | "ward_request_duration_seconds_sum"
                | "ward_request_duration_seconds_count"
                | "ward_tcp_bytes_total"
        );
        if !wanted {
            continue;
        }
        let key = (
            s.label("direction").to_owned(),
            s.label("source").to_owned(),
            s.label("destination").to_owned(),
        );
        let edge = edges.entry(key.clone()).or_insert_with(|| v1::EdgeCounts {
            direction: key.0,
            source: key.1,
            destination: key.2,
            ..Default::default()
        });
        let n = s.value.max(0.0) as u64;
        match s.name {
            "ward_requests_total" => {
                edge.requests += n;
                match s.label("status_class") {
                    "5xx" => edge.server_errors += n,
                    "4xx" => edge.client_errors += n,
                    _ => {}
                }
            }
            "ward_request_duration_seconds_sum" => edge.latency_seconds_sum += s.value,
            "ward_request_duration_seconds_count" => edge.latency_count += n,
            _ => edge.tcp_bytes += n,
        }
    }
    edges.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# TYPE ward_requests_total counter
ward_requests_total{direction="inbound",protocol="http1",source="spiffe://t/a",destination="spiffe://t/b",status_class="2xx"} 7
ward_requests_total{direction="inbound",protocol="grpc",source="spiffe://t/a",destination="spiffe://t/b",status_class="4xx"} 2
ward_requests_total{direction="inbound",protocol="http1",source="spiffe://t/a",destination="spiffe://t/b",status_class="5xx"} 1
ward_request_duration_seconds_sum{direction="inbound",protocol="http1",source="spiffe://t/a",destination="spiffe://t/b"} 0.5
ward_request_duration_seconds_count{direction="inbound",protocol="http1",source="spiffe://t/a",destination="spiffe://t/b"} 10
ward_tcp_bytes_total{direction="outbound",source="spiffe://t/b",destination="external",flow="sent"} 40
ward_tcp_bytes_total{direction="outbound",source="spiffe://t/b",destination="external",flow="received"} 2
ward_tls_handshakes_total{direction="inbound",result="ok"} 3
ward_requests_total{broken
"#;

    #[test]
    fn the_golden_metrics_are_summed_per_edge() {
        let edges = edges(EXPOSITION);
        assert_eq!(edges.len(), 2, "{edges:?}");
        let inbound = &edges[0];
        assert_eq!(
            (
                inbound.direction.as_str(),
                inbound.source.as_str(),
                inbound.destination.as_str()
            ),
            ("inbound", "spiffe://t/a", "spiffe://t/b")
        );
        assert_eq!(
            (
                inbound.requests,
                inbound.client_errors,
                inbound.server_errors
            ),
            (10, 2, 1)
        );
        assert_eq!(
            (inbound.latency_seconds_sum, inbound.latency_count),
            (0.5, 10)
        );
        assert_eq!(edges[1].tcp_bytes, 42);
    }

    #[test]
    fn label_values_are_unescaped() {
        let s = sample(r#"m{a="x\"y",b="1\\2"} 3"#).expect("sample");
        assert_eq!((s.label("a"), s.label("b"), s.value), ("x\"y", "1\\2", 3.0));
        assert!(sample("m{a=\"x} 3").is_none());
        assert!(sample("# HELP m text").is_none());
    }
}
