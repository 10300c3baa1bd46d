//! Opaque TCP: copy both ways until both sides are done. An EOF from one side becomes a
//! shutdown of the write half towards the other (a TLS close_notify between sidecars), so a
//! client that half-closes still receives the rest of the server's reply.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::connect::Dialer;
use crate::metrics::Direction;
use crate::transport::idle::{Activity, Tracked};

/// Bytes carried each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Carried {
    pub a_to_b: u64,
    pub b_to_a: u64,
}

/// Splices `a` and `b` until both directions end, an error, or `idle` with no traffic.
/// Returns the bytes carried each way — also when it ended in an error (then with it).
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> (Carried, io::Result<()>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut a = Tracked::new(a, activity.clone());
    let mut b = Tracked::new(b, activity.clone());
    let ended = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut a, &mut b) => copied.map(|_| ()),
        _ = activity.idle_for(idle) => {
            Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))
        }
    };
    let carried = Carried {
        a_to_b: b.written(),
        b_to_a: a.written(),
    };
    (carried, ended)
}

/// Carries an accepted connection as opaque TCP to what `next` dials. Returns what was
/// carried (also by a connection that broke, logged here), or `None` if the next hop
/// could not be reached; the caller writes the connection's record.
pub async fn forward<S>(
    accepted: S,
    next: &Dialer,
    direction: Direction,
    idle: Duration,
) -> Option<Carried>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let other = match next.dial().await {
        Ok(connected) => connected.stream,
        Err(e) => {
            tracing::warn!(direction = direction.label(), error = %e, "TCP: next hop unavailable");
            return None;
        }
    };
    let (carried, ended) = splice(accepted, other, idle).await;
    if let Err(e) = ended {
        tracing::debug!(direction = direction.label(), error = %e, "TCP connection ended");
    }
    Some(carried)
}
