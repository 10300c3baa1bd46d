//! Join tokens: single-identity, expiring, use-counted attestation for a proxy's first
//! certificate, and the workload registrations they leave behind.
//!
//! Only a SHA-256 of each token is stored, so the data directory never holds a usable
//! secret. The file is shared by `ward token create` and the running server; every
//! read-modify-write holds an exclusive lock on `tokens.lock` and ends in an atomic rename.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use ward_certs::pem::{FileMode, write_atomic};

const TOKENS_FILE: &str = "tokens.json";
const LOCK_FILE: &str = "tokens.lock";

/// What a token proves, and how often and how long it may prove it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub spiffe_id: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub expires_unix: u64,
    pub uses_left: u32,
}

/// A workload known from a redeemed token: what renewals and policy selection rely on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    /// By SHA-256 of the token, hex.
    tokens: BTreeMap<String, Grant>,
    /// By SPIFFE ID.
    registrations: BTreeMap<String, Registration>,
}

/// Why a token was not accepted; each is its own message to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown join token")]
    Unknown,
    #[error("join token expired")]
    Expired,
    #[error("join token already used up")]
    UsedUp,
    #[error("token store: {0}")]
    Store(String),
}

pub struct TokenStore {
    dir: PathBuf,
}

fn digest(token: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

use ward_runtime::time::unix_secs as unix;

impl TokenStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    fn with_file<T>(
        &self,
        f: impl FnOnce(&mut TokenFile) -> Result<(T, bool), TokenError>,
    ) -> Result<T, TokenError> {
        let store = |e: std::io::Error| TokenError::Store(e.to_string());
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(store)?;
        lock.lock().map_err(store)?;
        let path = self.dir.join(TOKENS_FILE);
        let mut file: TokenFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TokenError::Store(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenFile::default(),
            Err(e) => return Err(store(e)),
        };
        let (out, changed) = f(&mut file)?;
        if changed {
            let bytes =
                serde_json::to_vec_pretty(&file).map_err(|e| TokenError::Store(e.to_string()))?;
            write_atomic(&path, &bytes, FileMode::Secret)
                .map_err(|e| TokenError::Store(e.to_string()))?;
        }
        drop::<File>(lock);
        Ok(out)
    }

    /// Creates a token for `grant`; returns the token (shown once, stored only hashed).
    pub fn create(&self, grant: Grant) -> Result<String, TokenError> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| TokenError::Store("no randomness".into()))?;
        let token = format!(
            "ward-{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let key = digest(&token);
        self.with_file(|f| {
            f.tokens.insert(key, grant);
            Ok(((), true))
        })?;
        Ok(token)
    }

    /// Checks `token` at `now` without using it.
    pub fn peek(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        let key = digest(token);
        self.with_file(|f| {
            let grant = f.tokens.get(&key).ok_or(TokenError::Unknown)?;
            check(grant, now)?;
            Ok((grant.clone(), false))
        })
    }

    /// Uses `token` once (it must still be valid) and records the workload it registers.
    pub fn redeem(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        let key = digest(token);
        self.with_file(|f| {
            let grant = f.tokens.get_mut(&key).ok_or(TokenError::Unknown)?;
            check(grant, now)?;
            grant.uses_left -= 1;
            let grant = grant.clone();
            f.registrations.insert(
                grant.spiffe_id.clone(),
                Registration {
                    namespace: grant.namespace.clone(),
                    labels: grant.labels.clone(),
                },
            );
            Ok((grant, true))
        })
    }

    /// The workload registered for `spiffe_id`, if any.
    pub fn registration(&self, spiffe_id: &str) -> Result<Option<Registration>, TokenError> {
        self.with_file(|f| Ok((f.registrations.get(spiffe_id).cloned(), false)))
    }
}

fn check(grant: &Grant, now: SystemTime) -> Result<(), TokenError> {
    if unix(now) >= grant.expires_unix {
        return Err(TokenError::Expired);
    }
    if grant.uses_left == 0 {
        return Err(TokenError::UsedUp);
    }
    Ok(())
}

/// A grant for `spiffe_id` valid for `ttl` from `now`.
pub fn grant(
    spiffe_id: &ward_certs::SpiffeId,
    labels: BTreeMap<String, String>,
    ttl: Duration,
    uses: u32,
    now: SystemTime,
) -> Grant {
    let namespace = ward_certs::WorkloadIdentity::from_spiffe_id(spiffe_id)
        .map(|w| w.namespace)
        .unwrap_or_default();
    Grant {
        spiffe_id: spiffe_id.to_string(),
        namespace,
        labels,
        expires_unix: unix(now + ttl),
        uses_left: uses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_identity_expiring_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let id = ward_certs::parse_spiffe_id("spiffe://td/ns/web/sa/frontend").unwrap();
        let now = SystemTime::now();
        let g = grant(
            &id,
            [("app".into(), "web".into())].into(),
            Duration::from_secs(60),
            1,
            now,
        );
        assert_eq!(g.namespace, "web");
        let token = store.create(g).unwrap();
        assert!(token.starts_with("ward-") && token.len() == 69);
        let stored = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&token), "only a digest is stored");

        assert_eq!(store.peek(&token, now).unwrap().spiffe_id, id.to_string());
        assert_eq!(store.peek("ward-nope", now), Err(TokenError::Unknown));
        assert_eq!(
            store.peek(&token, now + Duration::from_secs(61)),
            Err(TokenError::Expired)
        );
        store.redeem(&token, now).unwrap();
        assert_eq!(store.redeem(&token, now), Err(TokenError::UsedUp));
        let reg = store.registration(&id.to_string()).unwrap().unwrap();
        assert_eq!(reg.labels["app"], "web");
    }
}
