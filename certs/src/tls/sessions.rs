//! TLS session resumption bound to the trust bundle: sessions never outlive the bundle
//! they were verified under, nor [`SESSION_MAX_AGE`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::NamedGroup;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls_pki_types::ServerName;

use super::BundleStore;

/// How many TLS sessions each side remembers for resumption.
pub(super) const SESSION_CACHE_SIZE: usize = 1024;

/// How long a TLS session may be resumed at most. A resumed session skips certificate
/// verification, so this bounds how long a peer whose certificate has since expired can
/// still resume. rustls itself would keep stateful sessions for 24 hours.
pub const SESSION_MAX_AGE: Duration = Duration::from_secs(5 * 60);

/// Which session cache is current: a new one for every bundle swap and every
/// [`SESSION_MAX_AGE`] period. Sessions therefore never outlive the bundle they were verified
/// under, nor the age limit.
pub(super) fn session_epoch(
    bundle_generation: u64,
    now: SystemTime,
    max_age: Duration,
) -> (u64, u64) {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    (bundle_generation, secs / max_age.as_secs().max(1))
}

/// A TLS session cache that starts empty again whenever the trust bundle changes, and at
/// least every [`SESSION_MAX_AGE`].
///
/// A resumed session skips certificate verification. Without this, a peer whose root was
/// just dropped from the bundle could keep resuming a session verified under the old bundle;
/// with it, every handshake after a swap verifies the peer against the bundle in force.
pub(super) struct TrustBoundSessions<C> {
    bundle: Arc<BundleStore>,
    cache: ArcSwap<((u64, u64), C)>,
    make: fn() -> C,
}

impl<C> TrustBoundSessions<C> {
    pub(super) fn new(bundle: Arc<BundleStore>, make: fn() -> C) -> Self {
        let epoch = session_epoch(bundle.generation(), SystemTime::now(), SESSION_MAX_AGE);
        Self {
            bundle,
            cache: ArcSwap::from_pointee((epoch, make())),
            make,
        }
    }

    fn current(&self) -> arc_swap::Guard<Arc<((u64, u64), C)>> {
        let epoch = session_epoch(self.bundle.generation(), SystemTime::now(), SESSION_MAX_AGE);
        let cache = self.cache.load();
        if cache.0 == epoch {
            return cache;
        }
        self.cache.store(Arc::new((epoch, (self.make)())));
        self.cache.load()
    }
}

impl<C> fmt::Debug for TrustBoundSessions<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBoundSessions")
            .field("epoch", &self.cache.load().0)
            .finish()
    }
}

pub(super) fn server_session_cache() -> Arc<ServerSessionMemoryCache> {
    ServerSessionMemoryCache::new(SESSION_CACHE_SIZE)
}

pub(super) fn client_session_cache() -> ClientSessionMemoryCache {
    ClientSessionMemoryCache::new(SESSION_CACHE_SIZE)
}

impl StoresServerSessions for TrustBoundSessions<Arc<ServerSessionMemoryCache>> {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.current().1.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().1.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.current().1.take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

impl ClientSessionStore for TrustBoundSessions<ClientSessionMemoryCache> {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.current().1.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.current().1.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.current().1.set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.current().1.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.current().1.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.current().1.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.current().1.take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn session_epochs_turn_over_with_the_bundle_and_the_age_limit() {
        let age = Duration::from_secs(300);
        assert_eq!(
            session_epoch(0, at(600), age),
            session_epoch(0, at(899), age)
        );
        assert_ne!(
            session_epoch(0, at(899), age),
            session_epoch(0, at(900), age)
        );
        assert_ne!(
            session_epoch(0, at(600), age),
            session_epoch(1, at(600), age)
        );
        // No session is resumed longer than the age limit.
        for start in [600, 750, 899] {
            assert_ne!(
                session_epoch(0, at(start), age),
                session_epoch(0, at(start + 300), age)
            );
        }
    }
}
