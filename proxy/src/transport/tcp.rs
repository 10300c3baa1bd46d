//! Opaque TCP: copy both ways until both sides are done. An EOF from one side becomes a
//! shutdown of the write half towards the other (a TLS close_notify between sidecars), so a
//! client that half-closes still receives the rest of the server's reply.

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::Dialer;
use crate::metrics::{self, Direction};
use crate::transport::idle::{Activity, Tracked};

/// Bytes carried each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Carried {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Splices `a` and `b` until both directions end, an error, or `idle` with no traffic.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> io::Result<Carried>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Tracked::new(a, activity.clone());
    let mut b = Tracked::new(b, activity.clone());
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => {
            copied.map(|(a_to_b, b_to_a)| Carried { a_to_b, b_to_a })
        }
        _ = activity.idle_for(idle) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))
        }
    }
}

/// Carries an accepted connection as opaque TCP to what `next` dials, counting the bytes
/// and, when `access_log` is on, logging one line for the connection.
pub async fn forward<S>(
    accepted: S,
    next: &Dialer,
    direction: Direction,
    peer: &str,
    idle: Duration,
    access_log: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let other = match next.dial().await {
        Ok(connected) => connected.stream,
        Err(e) => {
            tracing::warn!(direction = direction.label(), error = %e, "TCP: next hop unavailable");
            return;
        }
    };
    match splice(accepted, other, idle).await {
        Ok(carried) => {
            metrics::tcp_bytes(direction, carried.a_to_b + carried.b_to_a);
            if access_log {
                tracing::info!(target: "ward::access", direction = direction.label(),
                    protocol = "tcp", peer, bytes_in = carried.a_to_b, bytes_out = carried.b_to_a,
                    duration_ms = started.elapsed().as_millis() as u64);
            }
        }
        Err(e) => {
            tracing::debug!(direction = direction.label(), error = %e, "TCP connection ended")
        }
    }
}
