//! The one accept loop: every listener of both binaries (sidecar inbound and outbound,
//! admin servers, the control plane's API) accepts through it, so each waits out the same
//! errors the same way and stops at the same signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::drain::Drain;

pub const ACCEPT_ERRORS_TOTAL: &str = "ward_accept_errors_total";

/// A listener that could not be bound; it names the setting (`inbound[0].listen`,
/// `--admin`) and the address.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: cannot listen on {addr}")]
pub struct BindError {
    pub setting: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds a TCP listener for `setting`.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        setting: setting.to_owned(),
        addr,
        source,
    })
}

/// How a listener accepts. Built with [`Accept::new`] and the setters below.
#[derive(Debug, Clone)]
pub struct Accept {
    name: &'static str,
    limit: Option<Arc<Semaphore>>,
    tracked: bool,
}

impl Accept {
    /// A listener called `name` in logs and in `ward_accept_errors_total{listener}`.
    /// Connections are tracked by the drain and unlimited until [`Accept::limit`].
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            limit: None,
            tracked: true,
        }
    }

    /// At most the semaphore's permits open at once; past them a new connection is
    /// closed at once (and logged).
    pub fn limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Connections the drain does not wait for (an admin scraper's keep-alive connection
    /// must not hold a shutdown to its deadline).
    pub fn untracked(mut self) -> Self {
        self.tracked = false;
        self
    }

    /// Accepts until the drain begins, handing each connection (with `TCP_NODELAY` set)
    /// to `handle` and running what it returns as its own task. Never returns on an
    /// accept error: see [`AcceptErrors`].
    pub async fn serve<F, Fut>(self, listener: TcpListener, drain: Drain, handle: F)
    where
        F: Fn(TcpStream, Drain) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut errors = AcceptErrors::new(self.name);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => {
                        errors.reset();
                        conn
                    }
                    Err(e) => {
                        tokio::select! {
                            _ = errors.wait(&e) => continue,
                            _ = drain.signaled() => return,
                        }
                    }
                },
                _ = drain.signaled() => return,
            };
            let permit = match &self.limit {
                None => None,
                Some(limit) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        tracing::warn!(listener = self.name, %peer, "connection limit reached; closing new connection");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let task = handle(tcp, drain.clone());
            let task = async move {
                task.await;
                drop(permit);
            };
            if self.tracked {
                drain.spawn(task);
            } else {
                tokio::spawn(task);
            }
        }
    }
}

/// Consecutive failed accepts of one listener. Running out of file descriptors
/// (EMFILE/ENFILE) or buffers clears only when connections close, so retrying at once would
/// spin a core: the wait doubles from 5 ms to 1 s, and the loop never gives up. Logged at
/// WARN on the first failure and whenever the count reaches a power of two at the cap.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    failures: u32,
    backoff: Backoff,
}

impl AcceptErrors {
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            failures: 0,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }

    /// A connection was accepted: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.backoff.reset();
    }

    /// Counts and logs `e`, then waits out the backoff.
    pub async fn wait(&mut self, e: &std::io::Error) {
        self.failures = self.failures.saturating_add(1);
        let at_max = self.backoff.at_max();
        let delay = self.backoff.next_delay();
        metrics::counter!(ACCEPT_ERRORS_TOTAL, "listener" => self.listener).increment(1);
        if self.failures == 1 || at_max && self.failures.is_power_of_two() {
            tracing::warn!(listener = self.listener, error = %e, failures = self.failures,
                ?delay, "accept failed; backing off");
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_tracks_and_stops_at_the_drain() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let drain = Drain::new();
        let limit = Arc::new(Semaphore::new(1));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(Accept::new("test").limit(limit.clone()).serve(
            listener,
            drain.clone(),
            move |tcp, drain| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(tcp.nodelay().unwrap_or(false));
                    drain.signaled().await;
                    drop(tcp);
                }
            },
        ));
        let _first = TcpStream::connect(addr).await.unwrap();
        assert_eq!(rx.recv().await, Some(true), "handled, with TCP_NODELAY");
        // The second is over the limit: closed without reaching the handler.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut second, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "closed at once");
        assert!(rx.try_recv().is_err());
        drain.start();
        serving.await.unwrap();
        assert_eq!(drain.finish(Duration::from_secs(5)).await, 0);
        assert_eq!(
            limit.available_permits(),
            1,
            "the permit went with the task"
        );
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }
}
