//! The admin server: liveness, readiness, metrics, the effective configuration and the
//! certificates in use. Plain HTTP/1.1 on the admin address (loopback by default).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use ward_certs::{CertInfo, MeshIdentity};

use crate::drain::Drain;
use crate::readiness::Readiness;

/// What the admin endpoints report on.
pub struct Admin {
    pub readiness: Readiness,
    pub metrics: Option<PrometheusHandle>,
    /// The effective configuration, rendered once (it holds paths, never key material).
    pub config_json: String,
    /// Set once the identity is loaded (with a control plane, after the first Certify).
    pub identity: std::sync::OnceLock<MeshIdentity>,
    /// Control-plane stream health, when the identity comes from one.
    pub control_plane: std::sync::OnceLock<Arc<crate::identity::Health>>,
}

/// Serves the admin endpoints on `listener` until drained.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, drain: Drain) {
    let mut failures = 0;
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    failures = 0;
                    conn
                }
                Err(e) => {
                    tokio::select! {
                        _ = crate::listener::accept_backoff(&e, &mut failures, "admin") => continue,
                        _ = drain.signaled() => return,
                    }
                }
            },
            _ = drain.signaled() => return,
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

fn route(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n"),
        "/ready" => {
            let pending = admin.readiness.pending();
            let status = if pending.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut detail = json!({ "ready": pending.is_empty(), "pending": pending });
            if let Some(cp) = admin.control_plane.get() {
                detail["control_plane"] = cp.describe();
            }
            json_response(status, &detail)
        }
        "/metrics" => match &admin.metrics {
            Some(handle) => Response::builder()
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(handle.render())))
                .unwrap_or_default(),
            None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
        },
        "/config" => Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(admin.config_json.clone())))
            .unwrap_or_default(),
        "/certs" => match admin.identity.get() {
            Some(identity) => json_response(StatusCode::OK, &certs(identity)),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no identity yet\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The served SVID and the trust bundle's roots.
pub fn certs(identity: &MeshIdentity) -> serde_json::Value {
    let now = SystemTime::now();
    let describe = |info: &CertInfo| {
        json!({
            "spiffe_id": info.spiffe_id.as_ref().map(ToString::to_string),
            "subject": info.subject,
            "issuer": info.issuer,
            "serial": info.serial,
            "not_before": rfc3339(info.not_before),
            "not_after": rfc3339(info.not_after),
            "seconds_left": info.time_left(now).as_secs(),
        })
    };
    let chain = identity.svid.current_chain();
    let svid = chain.first().and_then(|leaf| CertInfo::parse(leaf).ok());
    let bundle = identity.bundle.current();
    let roots: Vec<_> = bundle
        .roots()
        .filter_map(|r| {
            let mut root = describe(&CertInfo::parse(r).ok()?);
            root["key_id"] = json!(ward_certs::verify::key_id(r).ok());
            Some(root)
        })
        .collect();
    let mut out = svid.as_ref().map(describe).unwrap_or_else(|| json!({}));
    out["chain_length"] = json!(chain.len());
    // The root the SVID chains to, by key (its issuer may be an intermediate).
    out["root_key_id"] = json!(
        ward_certs::verify::anchor_key_id(&chain, &bundle, ward_certs::verify::unix_time(now)).ok()
    );
    out["bundle"] = json!({ "trust_domain": bundle.trust_domain().to_string(), "roots": roots });
    out
}

pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 UTC with milliseconds, for audit lines.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let ms = t.millisecond();
    let t = t.replace_nanosecond(u32::from(ms) * 1_000_000).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}
