//! A pool that multiplexes every HTTP request to one destination over a shared HTTP/2
//! connection.
//!
//! The request path only loads the current connection's sender from an `ArcSwap`; the mutex
//! is taken only to (re)connect, so concurrent requests never queue behind a lock, and a
//! burst after a connection drops opens one new connection, not one per request.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::replay::ReplayBody;
use crate::transport::alpn::ALPN_WARD_H2;
use crate::transport::connect::{ConnectError, Connected, Dialer};

/// A pooled HTTP/2 connection's sender, and whether the peer is a ward sidecar (it
/// agreed to ALPN [`ALPN_WARD_H2`]), which alone may be told
/// `x-ward-original-protocol`.
pub struct Pooled {
    pub sender: http2::SendRequest<ReplayBody>,
    pub ward_peer: bool,
}

/// One shared HTTP/2 connection to a destination, reopened on demand.
pub struct H2Pool {
    dialer: Dialer,
    current: ArcSwapOption<Pooled>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Pool {
    pub fn new(dialer: Dialer) -> Self {
        Self {
            dialer,
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// A sender on a live connection, connecting if there is none. The `Arc` names the
    /// connection for [`H2Pool::reset_if`].
    pub async fn sender(&self) -> Result<Arc<Pooled>, ConnectError> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _guard = self.connecting.lock().await;
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let Connected { stream, alpn } = self.dialer.dial().await?;
        let ward_peer = alpn.as_deref() == Some(ALPN_WARD_H2);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: self.dialer.addr(),
                source,
            })?;
        let addr = self.dialer.addr();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "pooled HTTP/2 connection ended");
            }
        });
        let pooled = Arc::new(Pooled { sender, ward_peer });
        self.current.store(Some(pooled.clone()));
        Ok(pooled)
    }

    fn live(&self) -> Option<Arc<Pooled>> {
        self.current.load_full().filter(|s| !s.sender.is_closed())
    }

    /// Forgets `failed` (a connection that is closing) if it is still the current one, so
    /// the next request reconnects; a connection another request already opened stays.
    pub fn reset_if(&self, failed: &Arc<Pooled>) {
        self.current.compare_and_swap(failed, None);
    }
}
