//! A memo of chains already verified under one trust bundle, so a peer that connects again
//! with the same certificate does not pay for the chain's signature check again.
//!
//! A full SVID check costs one ECDSA P-256 verification per signature in the chain (about
//! 53 µs each on the 2-core machine this was measured on); a repeat peer costs a SHA-256 of
//! its certificates and a map lookup. Correctness rests on three things: the key is a digest
//! of the exact certificate bytes and the purpose, so any other chain misses; the memo belongs
//! to one bundle and is dropped with it when the bundle is swapped; and the validity window
//! is re-checked against the caller's clock on every hit. Only successes are remembered —
//! a refused chain is verified afresh each time, so its error is always current.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::id::SpiffeId;
use crate::verify::Purpose;

/// Entries kept per bundle; past this, expired entries go, and if none had expired, all.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Clone)]
struct Verdict {
    id: SpiffeId,
    /// The chain's combined validity window, Unix seconds.
    not_before: u64,
    not_after: u64,
}

/// Chains verified under one bundle. See the module docs.
#[derive(Debug, Default)]
pub struct VerifiedChains {
    entries: Mutex<HashMap<[u8; 32], Verdict>>,
}

/// The digest that names a chain presented for a purpose.
pub type ChainKey = [u8; 32];

impl VerifiedChains {
    /// The memo key of `leaf` + `intermediates` for `purpose`.
    pub fn key(
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        purpose: Purpose,
    ) -> ChainKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&[purpose as u8]);
        for cert in std::iter::once(leaf).chain(intermediates) {
            // Length-prefixed, so certificate boundaries are part of what is hashed.
            ctx.update(&(cert.len() as u64).to_be_bytes());
            ctx.update(cert.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The identity verified for `key`, if it was and the chain is still valid at `now`.
    pub fn get(&self, key: &ChainKey, now: UnixTime) -> Option<SpiffeId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let verdict = entries.get(key)?;
        let now = now.as_secs();
        (verdict.not_before <= now && now <= verdict.not_after).then(|| verdict.id.clone())
    }

    /// Remembers a successful verification, valid over `[not_before, not_after]`.
    pub fn insert(
        &self,
        key: ChainKey,
        id: SpiffeId,
        not_before: u64,
        not_after: u64,
        now: UnixTime,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= CAPACITY {
            let now = now.as_secs();
            entries.retain(|_, v| v.not_after >= now);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Verdict {
                id,
                not_before,
                not_after,
            },
        );
    }

    /// How many chains are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::parse_spiffe_id;
    use std::time::Duration;

    fn t(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn der(bytes: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from(bytes.to_vec())
    }

    #[test]
    fn keys_separate_chains_boundaries_and_purposes() {
        let (a, b, ab) = (der(b"a"), der(b"b"), der(b"ab"));
        let k = VerifiedChains::key(&a, std::slice::from_ref(&b), Purpose::Client);
        assert_eq!(
            k,
            VerifiedChains::key(&a, std::slice::from_ref(&b), Purpose::Client)
        );
        assert_ne!(
            k,
            VerifiedChains::key(&a, std::slice::from_ref(&b), Purpose::Server)
        );
        assert_ne!(k, VerifiedChains::key(&ab, &[], Purpose::Client));
        assert_ne!(k, VerifiedChains::key(&a, &[], Purpose::Client));
    }

    #[test]
    fn hits_only_inside_the_validity_window() {
        let memo = VerifiedChains::default();
        let id = parse_spiffe_id("spiffe://td/a").unwrap();
        let key = VerifiedChains::key(&der(b"leaf"), &[], Purpose::Client);
        assert_eq!(memo.get(&key, t(150)), None);
        memo.insert(key, id.clone(), 100, 200, t(150));
        assert_eq!(memo.get(&key, t(150)), Some(id.clone()));
        assert_eq!(memo.get(&key, t(200)), Some(id));
        assert_eq!(memo.get(&key, t(201)), None, "expired");
        assert_eq!(memo.get(&key, t(99)), None, "not yet valid");
    }

    #[test]
    fn stays_bounded() {
        let memo = VerifiedChains::default();
        let id = parse_spiffe_id("spiffe://td/a").unwrap();
        for i in 0..(CAPACITY as u64 + 10) {
            let key = VerifiedChains::key(&der(&i.to_be_bytes()), &[], Purpose::Client);
            memo.insert(key, id.clone(), 0, 1_000, t(1));
        }
        assert!(memo.len() <= CAPACITY);
        assert!(!memo.is_empty());
    }
}
