//! The control-plane client: the gRPC connection ([`client`]), the identity it issues — a
//! first SVID for a join token, renewal at half-life over mTLS, the trust-bundle stream
//! ([`identity`]) — and the policy stream ([`policy`]).
//!
//! Every stream follows one pattern ([`ward_runtime::follow::reconnect`]): connect,
//! consume, and on any end or error reconnect with capped exponential backoff, keeping the
//! last good value in force meanwhile (fail static).

pub mod client;
pub mod discovery;
pub mod identity;
pub mod jwt;
pub mod policy;
pub mod report;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use metrics::gauge;
use ward_runtime::time::unix_secs;

pub use client::{CaClient, ControlPlane};

/// Whether the control-plane streams are up and how fresh their state is, for `/ready`.
#[derive(Debug, Default)]
pub struct Health {
    pub policy_connected: AtomicBool,
    pub bundle_connected: AtomicBool,
    pub discovery_connected: AtomicBool,
    /// When the last policy snapshot was put in force (Unix seconds; 0: never).
    pub policy_updated_unix: AtomicU64,
    /// When the last trust bundle was put in force (Unix seconds; 0: never).
    pub bundle_updated_unix: AtomicU64,
}

/// The two streams a proxy follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Policy,
    Bundle,
    Discovery,
}

impl Stream {
    pub fn label(self) -> &'static str {
        match self {
            Stream::Policy => "policy",
            Stream::Bundle => "bundle",
            Stream::Discovery => "discovery",
        }
    }
}

impl Health {
    /// The `/ready` detail.
    pub fn describe(&self) -> serde_json::Value {
        let now = unix_secs(SystemTime::now());
        let age = |t: u64| (t > 0).then(|| now.saturating_sub(t));
        serde_json::json!({
            "policy_stream_connected": self.policy_connected.load(Relaxed),
            "bundle_stream_connected": self.bundle_connected.load(Relaxed),
            "discovery_stream_connected": self.discovery_connected.load(Relaxed),
            "policy_age_seconds": age(self.policy_updated_unix.load(Relaxed)),
            "bundle_age_seconds": age(self.bundle_updated_unix.load(Relaxed)),
        })
    }

    /// Marks a stream up or down, in `/ready` and `ward_control_plane_connected`.
    pub fn connected(&self, stream: Stream, up: bool) {
        gauge!("ward_control_plane_connected", "stream" => stream.label()).set(if up {
            1.0
        } else {
            0.0
        });
        match stream {
            Stream::Policy => self.policy_connected.store(up, Relaxed),
            Stream::Bundle => self.bundle_connected.store(up, Relaxed),
            Stream::Discovery => self.discovery_connected.store(up, Relaxed),
        }
    }

    /// Notes that a stream's value was just put in force.
    pub fn updated(&self, stream: Stream) {
        let now = unix_secs(SystemTime::now());
        match stream {
            Stream::Policy => self.policy_updated_unix.store(now, Relaxed),
            Stream::Bundle => self.bundle_updated_unix.store(now, Relaxed),
            Stream::Discovery => {}
        }
    }
}

/// Follows one control-plane stream of snapshots for ever (reconnecting with backoff, the
/// stream marked up or down in `health`), handing each new snapshot to `apply`. Snapshots
/// pass through a `watch`: one that takes long to apply is followed by the newest, never
/// by a queue of stale ones.
pub async fn follow_snapshots<T, O, Fut, St, A, AFut>(
    stream: Stream,
    health: &Health,
    open: O,
    mut apply: A,
) where
    T: Clone + Send + Sync,
    O: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<St, String>>,
    St: tokio_stream::Stream<Item = Result<Option<T>, String>>,
    A: FnMut(T) -> AFut,
    AFut: std::future::Future<Output = ()>,
{
    let (mut snapshots, run) = ward_runtime::follow::stream_to_watch(
        stream.label(),
        None,
        ward_runtime::backoff::Backoff::control_plane(),
        |up| health.connected(stream, up),
        open,
    );
    tokio::pin!(run);
    loop {
        tokio::select! {
            () = &mut run => return,
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(snapshot) = snapshots.borrow_and_update().clone() else { continue };
                apply(snapshot).await;
            }
        }
    }
}

/// A gRPC status as a log line says it: `Unavailable: connection refused`.
pub fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}
