//! Sending a request on to its next hop — the peer sidecar or the local app — and carrying
//! HTTP/1.1 upgrades (WebSocket) through as spliced byte streams.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::http::pool::H2Pool;
use crate::http::replay::{self, Refusal, ReplayBody};
use crate::http::{Body, Failure};
use crate::metrics;
use crate::transport::connect::Dialer;

/// Where requests go next.
#[derive(Clone)]
pub enum NextHop {
    /// HTTP/2, multiplexed over one pooled connection.
    H2(Arc<H2Pool>),
    /// HTTP/1.1 with keep-alive connection reuse (the app side).
    H1(Box<Client<HttpConnector, ReplayBody>>),
}

/// A keep-alive HTTP/1.1 client for the local app.
pub fn app_h1_client(connect_timeout: Duration) -> Client<HttpConnector, ReplayBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// Sends `req` (not an upgrade) and waits at most `timeout` for the response head.
pub async fn send(
    hop: &NextHop,
    req: Request<Incoming>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    let sent = tokio::time::timeout(timeout, async {
        match hop {
            NextHop::H2(pool) => send_h2(pool, req).await,
            NextHop::H1(client) => client
                .request(req.map(ReplayBody::pass))
                .await
                .map_err(|e| {
                    if e.is_connect() {
                        UPSTREAM_CONNECT.warn(|held| {
                            tracing::warn!(error = %e, held_back = held, "app connection failed");
                        });
                        Failure::ConnectFailed
                    } else {
                        tracing::debug!(error = %e, "app request failed");
                        Failure::UpstreamReset
                    }
                }),
        }
    })
    .await;
    match sent {
        // Switching protocols was not asked for: the stream after it would be unjudged.
        Ok(Ok(resp)) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            tracing::debug!("upstream switched protocols unasked; refused");
            Err(Failure::SwitchRefused)
        }
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout),
    }
}

/// How many times one request may be put on a connection.
const MAX_ATTEMPTS: usize = 3;

async fn send_h2(pool: &H2Pool, req: Request<Incoming>) -> Result<Response<Incoming>, Failure> {
    let (mut req, replay) = ReplayBody::wrap(req);
    // A request goes out again only when the upstream certainly never processed it: the
    // old connection never took it (it had just closed), or the upstream refused the
    // stream (see `replay::Refusal`) and its whole body was recorded.
    for attempt in 1..=MAX_ATTEMPTS {
        let used = pool.sender().await.map_err(|e| {
            UPSTREAM_CONNECT.warn(|held| {
                tracing::warn!(error = %e, held_back = held, "upstream connection failed");
            });
            Failure::from(&e)
        })?;
        let mut sender = used.sender.clone();
        if !used.ward_peer {
            req.headers_mut().remove(crate::http::ORIGINAL_PROTOCOL);
        }
        let mut err = match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(err) => err,
        };
        let again = match err.take_message() {
            Some(unsent) => {
                pool.reset_if(&used);
                Some((unsent, "unsent"))
            }
            None => match replay::refusal(err.error()) {
                // One stream refused: the connection itself is fine.
                Some(why @ Refusal::RefusedStream) => replay.again(why).map(|r| (r, "refused")),
                Some(why @ Refusal::GoingAway) => {
                    pool.reset_if(&used);
                    replay.again(why).map(|r| (r, "goaway"))
                }
                None => None,
            },
        };
        match again {
            Some((next, reason)) if attempt < MAX_ATTEMPTS => {
                metrics::retried(reason);
                crate::trace::retried(attempt);
                req = next;
            }
            Some(_) => {
                tracing::debug!(error = ?err.error(), "upstream refused every attempt");
                return Err(Failure::RetryLimit);
            }
            None if replay.over_limit() => return Err(Failure::TooLarge),
            None => {
                tracing::debug!(error = ?err.error(), "upstream request failed");
                return Err(Failure::UpstreamReset);
            }
        }
    }
    Err(Failure::RetryLimit)
}

/// Failing to reach an upstream (the app, or a peer sidecar) is worth a WARN, but not one
/// per request when it is down under load.
static UPSTREAM_CONNECT: crate::metrics::RateLimitedWarn =
    crate::metrics::RateLimitedWarn::new(std::time::Duration::from_secs(5));

/// Carries an HTTP/1.1 upgrade request (to the protocol `asked`, already allowed) over a
/// connection of its own: the request goes to the next hop as HTTP/1.1 with only
/// `Connection: upgrade` and `Upgrade: asked` as hop-by-hop headers; on a `101` naming the
/// same protocol both sides become one spliced byte stream, which lives on after this
/// returns. A `101` to another protocol is refused (502).
pub async fn upgrade(
    dialer: &Dialer,
    mut req: Request<Incoming>,
    asked: HeaderValue,
    timeout: Duration,
    idle: Duration,
    spliced: Option<crate::http::guard::Spliced>,
) -> Result<Response<Incoming>, Failure> {
    let caller = hyper::upgrade::on(&mut req);
    let headers = req.headers_mut();
    crate::http::strip_hop_by_hop(headers);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, asked.clone());
    let req = req.map(ReplayBody::pass);
    let crate::transport::connect::Connected { stream, .. } = dialer.dial().await.map_err(|e| {
        UPSTREAM_CONNECT.warn(|held| {
            tracing::warn!(error = %e, held_back = held, "upgrade connection failed");
        });
        Failure::from(&e)
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::UpstreamReset)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = tokio::time::timeout(timeout, sender.send_request(req))
        .await
        .map_err(|_| Failure::Timeout)?
        .map_err(|_| Failure::UpstreamReset)?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if !crate::http::upgrade_accepted(&resp, &asked) {
            tracing::debug!("upstream switched to another protocol than asked; refused");
            return Err(Failure::SwitchRefused);
        }
        let callee = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            // The caller's connection keeps its place while this stream lives.
            let _spliced = spliced;
            let (Ok(a), Ok(b)) = (caller.await, callee.await) else {
                return;
            };
            let _ = crate::transport::tcp::splice(TokioIo::new(a), TokioIo::new(b), idle).await;
        });
    }
    Ok(resp)
}
/// The request's authority: from the URI (HTTP/2, absolute-form) or the Host header.
pub fn authority_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Prepares a response from the next hop for the caller.
pub fn from_upstream(resp: Response<Incoming>, caller_http1: bool) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    if parts.status != http::StatusCode::SWITCHING_PROTOCOLS {
        crate::http::strip_hop_by_hop(&mut parts.headers);
    }
    crate::http::strip_mesh_only(&mut parts.headers);
    if caller_http1 {
        parts.version = Version::HTTP_11;
    }
    Response::from_parts(parts, Either::Left(body))
}
