//! The control plane's admin server: `/live`, `/ready`, `/metrics` on plain HTTP/1.1
//! (loopback by default).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub const CONNECTED_PROXIES: &str = "ward_cp_connected_proxies";
pub const CERTS_ISSUED: &str = "ward_cp_certs_issued_total";
pub const CERTS_REFUSED: &str = "ward_cp_certs_refused_total";
pub const PUSH_FANOUT: &str = "ward_cp_push_fanout_seconds";
pub const BUNDLE_VERSION: &str = "ward_cp_bundle_version";
pub const CA_EXPIRY: &str = "ward_cp_ca_expiry_timestamp_seconds";

/// Installs the Prometheus recorder with the fan-out histogram's buckets.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(PUSH_FANOUT.into()),
            &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        )?
        .install_recorder()?;
    metrics::describe_gauge!(
        CONNECTED_PROXIES,
        "Proxies with an open Bundle.Watch stream"
    );
    metrics::describe_counter!(CERTS_ISSUED, "SVIDs issued, by kind (bootstrap, renewal)");
    metrics::describe_counter!(CERTS_REFUSED, "Certify calls refused, by reason");
    metrics::describe_histogram!(
        PUSH_FANOUT,
        "Time from a policy change to its snapshot being sent to a proxy"
    );
    metrics::describe_gauge!(BUNDLE_VERSION, "Version of the trust bundle pushed");
    metrics::describe_gauge!(CA_EXPIRY, "notAfter of the signing CA, Unix seconds");
    Ok(handle)
}

/// Serves the admin endpoints.
pub async fn serve(addr: SocketAddr, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--admin: cannot listen on {addr}: {e}"))?;
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => {
                    failures = 0;
                    tcp
                }
                Err(e) => {
                    super::accept_backoff(&e, &mut failures, "admin").await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            let (status, body) = match req.uri().path() {
                                "/live" | "/ready" => (StatusCode::OK, "ok\n".to_owned()),
                                "/metrics" => match &metrics {
                                    Some(h) => (StatusCode::OK, h.render()),
                                    None => (StatusCode::NOT_FOUND, "metrics are off\n".into()),
                                },
                                _ => (StatusCode::NOT_FOUND, "not found\n".into()),
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                // A head not complete within 5 s ends the connection (slowloris).
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(())
}
