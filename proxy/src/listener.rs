//! What every listener does the same way: accept within the connection limit, track each
//! connection for the drain, and serve HTTP connections until they end, idle out or drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::drain::Drain;
use crate::http::Body;
use crate::idle::Activity;

/// Binds a listener; the error names the setting (`inbound[0].listen`) and the address.
pub async fn bind(field: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{field}: cannot listen on {addr}"))
}

/// Accepts connections until the drain begins, handing each to `handle` with the drain.
/// Past `limit` open connections a new one is closed at once.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    drain: Drain,
    limit: Arc<Semaphore>,
    handle: F,
) where
    F: Fn(TcpStream, Drain) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.signaled() => return,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let task = handle(tcp, drain.clone());
        drain.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

/// The HTTP server builders, one per way a connection can arrive.
#[derive(Clone)]
pub struct Servers {
    pub auto: auto::Builder<TokioExecutor>,
    pub http1: auto::Builder<TokioExecutor>,
    pub http2: auto::Builder<TokioExecutor>,
}

impl Servers {
    pub fn new(limits: &crate::config::Limits) -> Self {
        let auto = crate::http::server(limits);
        Self {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }
}

/// Serves one HTTP connection until it ends, stays idle for `idle`, or the drain begins (then
/// in-flight requests finish and the connection closes; HTTP/2 peers get GOAWAY).
pub async fn serve_http<I, S, Fut>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    drain: &Drain,
    activity: &Activity,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // hyper keeps room for one in-flight service future per connection for the
    // connection's whole life; boxing it keeps that room a pointer, so an idle keep-alive
    // connection does not hold the (several KiB) state of a request it is not serving.
    let service = hyper::service::service_fn(move |req| {
        let fut = Box::pin(service(req));
        async move { Ok::<_, std::convert::Infallible>(fut.await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
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
}
