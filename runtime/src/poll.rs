//! Files that change under a running process (a policy directory, the CA's data
//! directory) are polled: a cheap fingerprint every interval, and a full load only when it
//! changed. Both run off the async workers, so a large or hostile file never delays
//! handshakes and requests.

use std::future::Future;
use std::time::Duration;

use crate::drain::Drain;

/// How often policy directories are polled.
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Polls until `stop` resolves: `fingerprint` every `every` (and once at the start), and
/// when it differs from the last one (at first, `seen`: what the caller already loaded),
/// `load`, whose result goes to `apply`. A fingerprint or load that panics counts as
/// unchanged and is retried at the next tick.
pub async fn poll_changes<P, T, A>(
    every: Duration,
    mut seen: Option<P>,
    fingerprint: impl Fn() -> P + Send + Clone + 'static,
    load: impl Fn() -> T + Send + Clone + 'static,
    mut apply: A,
    stop: impl Future<Output = ()>,
) where
    P: PartialEq + Send + 'static,
    T: Send + 'static,
    A: FnMut(T),
{
    tokio::pin!(stop);
    loop {
        if let Ok(now) = tokio::task::spawn_blocking(fingerprint.clone()).await
            && seen.as_ref() != Some(&now)
            && let Ok(loaded) = tokio::task::spawn_blocking(load.clone()).await
        {
            seen = Some(now);
            apply(loaded);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
    }
}

/// [`poll_changes`] from nothing loaded until the drain begins.
pub async fn poll_until_drained<P, T, A>(
    every: Duration,
    fingerprint: impl Fn() -> P + Send + Clone + 'static,
    load: impl Fn() -> T + Send + Clone + 'static,
    apply: A,
    drain: Drain,
) where
    P: PartialEq + Send + 'static,
    T: Send + 'static,
    A: FnMut(T),
{
    poll_changes::<P, T, A>(every, None, fingerprint, load, apply, async move {
        drain.signaled().await
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn loads_once_per_change() {
        let version = Arc::new(AtomicU32::new(1));
        let v = version.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let drain = Drain::new();
        let polling = tokio::spawn(poll_until_drained::<u32, u32, _>(
            Duration::from_millis(5),
            move || v.load(Ordering::SeqCst),
            {
                let v = version.clone();
                move || v.load(Ordering::SeqCst) * 10
            },
            move |loaded| {
                let _ = tx.send(loaded);
            },
            drain.clone(),
        ));
        assert_eq!(rx.recv().await, Some(10), "loaded at the start");
        version.store(2, Ordering::SeqCst);
        assert_eq!(rx.recv().await, Some(20), "loaded on change");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(rx.try_recv().is_err(), "not loaded again without a change");
        drain.start();
        polling.await.unwrap();
    }
}
