//! The admin server both binaries run: plain HTTP/1.1 (loopback by default) with `/live`,
//! `/ready` (200 once nothing is pending; JSON naming what is), `/metrics` (Prometheus), and
//! whatever GET routes a binary adds. Requests that are not GET get 405.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::accept::Accept;
use crate::drain::Drain;
use crate::readiness::Readiness;

/// A response body of the admin server.
pub type Body = Full<Bytes>;

/// What a binary adds: a GET route's answer, made per request.
pub type Route = Arc<dyn Fn() -> Response<Body> + Send + Sync>;

/// What a binary adds under a path prefix: the answer for the path's rest, made per
/// request and possibly after I/O (the sidecar's app probes).
pub type PrefixRoute = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// Extra fields of the `/ready` JSON (for example, the control-plane streams' health).
pub type ReadyDetail = Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>;

/// A head not complete within this ends the connection (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The admin endpoints of one process.
pub struct Admin {
    readiness: Readiness,
    metrics: Option<PrometheusHandle>,
    routes: BTreeMap<&'static str, Route>,
    prefixes: Vec<(&'static str, PrefixRoute)>,
    ready_detail: Vec<ReadyDetail>,
}

impl Admin {
    pub fn new(readiness: Readiness, metrics: Option<PrometheusHandle>) -> Self {
        Self {
            readiness,
            metrics,
            routes: BTreeMap::new(),
            prefixes: Vec::new(),
            ready_detail: Vec::new(),
        }
    }

    /// Adds a GET route (`/live`, `/ready` and `/metrics` are taken).
    pub fn route(mut self, path: &'static str, route: Route) -> Self {
        self.routes.insert(path, route);
        self
    }

    /// Adds GET routes under `prefix` (ending in `/`); the route gets the rest of the path.
    pub fn prefix(mut self, prefix: &'static str, route: PrefixRoute) -> Self {
        self.prefixes.push((prefix, route));
        self
    }

    /// Adds fields to the `/ready` JSON.
    pub fn ready_detail(mut self, detail: ReadyDetail) -> Self {
        self.ready_detail.push(detail);
        self
    }

    /// Serves on `listener` until the drain begins. Admin connections are not waited for.
    pub async fn serve(self, listener: TcpListener, drain: Drain) {
        let admin = Arc::new(self);
        Accept::new("admin")
            .untracked()
            .serve(listener, drain, move |tcp, _| {
                let admin = admin.clone();
                async move {
                    let service = service_fn(move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(admin.answer(&req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                }
            })
            .await
    }

    async fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let path = req.uri().path();
        if let Some((rest, route)) = self
            .prefixes
            .iter()
            .find_map(|(prefix, route)| Some((path.strip_prefix(prefix)?, route)))
        {
            return route(rest.to_owned()).await;
        }
        match path {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" => self.ready(),
            "/metrics" => match &self.metrics {
                Some(handle) => Response::builder()
                    .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .body(Full::new(Bytes::from(handle.render())))
                    .unwrap_or_default(),
                None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
            },
            path => match self.routes.get(path) {
                Some(route) => route(),
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    fn ready(&self) -> Response<Body> {
        let pending = self.readiness.pending();
        let status = if pending.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut detail = serde_json::json!({ "ready": pending.is_empty(), "pending": pending });
        for add in &self.ready_detail {
            add(&mut detail);
        }
        json(status, &detail)
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_text(status, value.to_string())
}

/// An answer whose JSON is already rendered.
pub fn json_text(status: StatusCode, rendered: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(rendered)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn ask(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("{method} {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn shared_routes_added_routes_and_readiness() {
        let readiness = Readiness::new();
        let pending = readiness.register("identity");
        let admin = Admin::new(readiness, None)
            .route(
                "/config",
                Arc::new(|| json_text(StatusCode::OK, "{\"a\":1}".into())),
            )
            .prefix(
                "/echo/",
                Arc::new(|rest| Box::pin(async move { json_text(StatusCode::OK, rest) })),
            )
            .ready_detail(Arc::new(|d| d["extra"] = serde_json::json!(true)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drain = Drain::new();
        tokio::spawn(admin.serve(listener, drain.clone()));

        let ready = ask(addr, "GET", "/ready").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains(r#""pending":["identity"]"#) && ready.contains(r#""extra":true"#));
        drop(pending);
        assert!(ask(addr, "GET", "/ready").await.starts_with("HTTP/1.1 200"));
        assert!(ask(addr, "GET", "/live").await.ends_with("live\n"));
        assert!(ask(addr, "GET", "/config").await.ends_with("{\"a\":1}"));
        assert!(
            ask(addr, "GET", "/metrics")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(ask(addr, "GET", "/nope").await.starts_with("HTTP/1.1 404"));
        assert!(ask(addr, "GET", "/echo/a/b").await.ends_with("a/b"));
        assert!(
            ask(addr, "POST", "/ready")
                .await
                .starts_with("HTTP/1.1 405")
        );
        drain.start();
    }
}
