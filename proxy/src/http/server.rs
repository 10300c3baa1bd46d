//! What every listener does the same way: accept within the connection limit, track each
//! connection for the drain, and serve HTTP connections until they end, idle out or drain.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Limits;
use crate::http::Body;
use crate::http::guard::{H1Guard, SwitchSignal};
use crate::transport::idle::Activity;
use ward_runtime::Drain;

/// The HTTP server for app (outbound) and peer (inbound) connections, with every limit set.
pub fn server(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper needs at least 8 KiB; past this the head is refused with 431.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): a peer whose reset streams pile up gets GOAWAY.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    match (limits.h2_stream_window, limits.h2_connection_window) {
        (None, None) => {
            builder.http2().adaptive_window(true);
        }
        (stream, connection) => {
            builder
                .http2()
                .initial_stream_window_size(stream)
                .initial_connection_window_size(connection);
        }
    }
    builder
}

/// The HTTP server builders, one per way a connection can arrive.
#[derive(Clone)]
pub struct Servers {
    pub auto: auto::Builder<TokioExecutor>,
    pub http1: auto::Builder<TokioExecutor>,
    pub http2: auto::Builder<TokioExecutor>,
}

impl Servers {
    pub fn new(limits: &Limits) -> Self {
        let auto = server(limits);
        Self {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }
}

/// What was agreed on for a connection (by ALPN, or by detection on plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speak {
    /// HTTP/1.1 only (with upgrades); an HTTP/2 preface is a malformed request.
    Http1,
    /// HTTP/2 only: anything but its preface gets a protocol error, never an HTTP/1 answer.
    Http2,
    /// Either, by the first bytes (no ALPN).
    Either,
}

/// Serves one HTTP connection in the protocol agreed (`speak`) until it ends, stays idle
/// for `limits.idle_timeout`, sends no complete first request within
/// `limits.header_read_timeout` of being accepted (an HTTP/1 head or an HTTP/2 preface and
/// request that never come hold a slot for nothing), or the drain begins (then in-flight
/// requests finish and the connection closes; HTTP/2 peers get GOAWAY).
///
/// hyper-util's `serve_connection_with_upgrades` sniffs the version whatever the builder
/// was limited to, so only the `Http1` and `Either` cases use it (WebSocket needs it), and
/// `Http1` connections are behind the H1 guard, which refuses an HTTP/2 preface there.
pub async fn serve_http<I, S, Fut>(
    servers: &Servers,
    speak: Speak,
    io: I,
    service: S,
    drain: &Drain,
    activity: &Activity,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // hyper keeps room for one in-flight service future per connection for the
    // connection's whole life; boxing it keeps that room a pointer, so an idle keep-alive
    // connection does not hold the (several KiB) state of a request it is not serving.
    let served = Arc::new(AtomicBool::new(false));
    let first = served.clone();
    let service = hyper::service::service_fn(move |req| {
        first.store(true, Ordering::Relaxed);
        let fut = Box::pin(service(req));
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    let idle = limits.idle_timeout;
    // One body for the three connection types hyper-util gives back.
    macro_rules! drive {
        ($conn:expr) => {{
            // Boxed: the connection task's state is the largest of the three arms for every
            // connection otherwise (an HTTP/2 connection inline for each HTTP/1 one).
            let mut conn = Box::pin($conn);
            let first_request = async {
                tokio::time::sleep(limits.header_read_timeout).await;
                if served.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = first_request => {
                    metrics::counter!("ward_connections_closed_total", "reason" => "no_first_request")
                        .increment(1);
                    tracing::debug!("no request within the header read timeout of accept; closing");
                }
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = drain.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                _ = activity.idle_for(idle) => {
                    tracing::debug!("HTTP connection idle; closing");
                }
            }
        }};
    }
    match speak {
        Speak::Http2 => {
            let Some(io) = h2_preface(io, limits.header_read_timeout).await else {
                return;
            };
            drive!(servers.http2.serve_connection(TokioIo::new(io), service))
        }
        Speak::Http1 => {
            let io = TokioIo::new(io);
            drive!(servers.http1.serve_connection_with_upgrades(io, service))
        }
        Speak::Either => {
            let io = TokioIo::new(io);
            drive!(servers.auto.serve_connection_with_upgrades(io, service))
        }
    }
}

/// Serves an HTTP/1 (or, with `Speak::Either`, either) connection behind the H1 framing
/// guard: `service` is made with the connection's [`SwitchSignal`], and the task lasts until
/// every stream spliced from the connection after an upgrade has ended, so a WebSocket keeps
/// the connection's place in the budgets.
pub async fn serve_guarded<I, F, S, Fut>(
    servers: &Servers,
    speak: Speak,
    io: I,
    service: F,
    drain: &Drain,
    activity: &Activity,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(SwitchSignal) -> S,
    S: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let switch = SwitchSignal::default();
    let guard = H1Guard::new(
        io,
        limits.max_header_bytes,
        limits.header_read_timeout,
        switch.clone(),
    );
    let guard = if speak == Speak::Either {
        guard.allowing_h2_preface()
    } else {
        guard
    };
    let service = service(switch.clone());
    serve_http(servers, speak, guard, service, drain, activity, limits).await;
    switch.splices_done().await;
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the client preface of an HTTP/2 connection before hyper does: a client that sends
/// anything else (an HTTP/1.1 request after ALPN `h2`, say) gets a SETTINGS frame and a
/// GOAWAY with PROTOCOL_ERROR, then the connection closes (RFC 9113 §3.4 allows leaving
/// the GOAWAY out; a peer debugging its client learns more with it). `None`: refused, or
/// nothing within `timeout`.
async fn h2_preface<I>(
    mut io: I,
    timeout: Duration,
) -> Option<crate::transport::detect::Prefixed<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut got = bytes::BytesMut::with_capacity(H2_PREFACE.len());
    let read = async {
        while got.len() < H2_PREFACE.len() {
            let mut chunk = [0u8; 24];
            let want = H2_PREFACE.len() - got.len();
            match io.read(&mut chunk[..want]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
            if !H2_PREFACE.starts_with(&got) {
                return false;
            }
        }
        true
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(true) => Some(crate::transport::detect::Prefixed::new(got, io)),
        Ok(false) => {
            metrics::counter!("ward_connections_closed_total", "reason" => "bad_h2_preface")
                .increment(1);
            // SETTINGS (empty), then GOAWAY: last stream 0, PROTOCOL_ERROR (1).
            let mut refusal = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
            refusal.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            let _ = io.write_all(&refusal).await;
            let _ = io.shutdown().await;
            None
        }
        Err(_) => {
            metrics::counter!("ward_connections_closed_total", "reason" => "no_first_request")
                .increment(1);
            None
        }
    }
}
