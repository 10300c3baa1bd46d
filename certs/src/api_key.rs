//! API keys: the credentials the gateway takes from partner integrations in place of an
//! end-user token. A key is `wardk_<ID>_<SECRET>` (a 12-hex-digit id to find it by and 256
//! random bits), shown once when created; the store keeps only its SHA-256 (the secret is
//! random, so a slow password hash would add nothing), the principal and claims it stands
//! for, and when it was created, expires and was revoked. A principal may hold several
//! active keys, so a partner rotates by taking a new key before the old one is revoked.
//!
//! The store is a JSON file written atomically with mode 0600; `ward gateway key` edits it
//! and the gateway re-reads it when it changes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::pem::{FileMode, write_atomic};

const PREFIX: &str = "wardk_";

/// Why a store cannot be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("no key with id {0:?}")]
    UnknownId(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a presented key is refused (for the audit log; the caller hears only 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("not an API key")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("API key {0} is revoked")]
    Revoked(String),
    #[error("API key {0} has expired")]
    Expired(String),
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    pub id: String,
    /// Who the key stands for.
    pub principal: String,
    /// Claims policy sees for it (`request.auth.claims[NAME]`).
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    /// SHA-256 of the whole key, hex.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub expires: Option<u64>,
    #[serde(default)]
    pub revoked: Option<u64>,
}

impl StoredKey {
    /// `active`, `expired` or `revoked` at `now` (unix seconds).
    pub fn status(&self, now: u64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.expires.is_some_and(|e| now >= e) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Every key of a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStore {
    pub keys: Vec<StoredKey>,
}

fn sha256_hex(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    hex(digest.as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, KeyStoreError> {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| KeyStoreError::Invalid("no randomness available".into()))?;
    Ok(hex(&bytes))
}

impl KeyStore {
    /// Reads a store; a missing file is an empty store only if `missing_ok`.
    pub fn read(path: &Path, missing_ok: bool) -> Result<Self, KeyStoreError> {
        let err = |reason: String| KeyStoreError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(e) => return Err(err(e.to_string())),
        };
        let store: Self =
            serde_json::from_str(&text).map_err(|e| err(format!("not an API key store: {e}")))?;
        let mut ids = std::collections::BTreeSet::new();
        for k in &store.keys {
            if !ids.insert(&k.id) {
                return Err(err(format!("key id {} appears twice", k.id)));
            }
        }
        Ok(store)
    }

    /// Writes the store atomically, readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<(), KeyStoreError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| KeyStoreError::Invalid(e.to_string()))?;
        write_atomic(path, text.as_bytes(), FileMode::Secret).map_err(|e| KeyStoreError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Adds a key for `principal`; returns the key, which is never stored or shown again.
    pub fn create(
        &mut self,
        principal: &str,
        claims: BTreeMap<String, String>,
        expires: Option<u64>,
        now: u64,
    ) -> Result<(String, String), KeyStoreError> {
        let principal_ok = !principal.is_empty()
            && principal
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'*');
        if !principal_ok {
            return Err(KeyStoreError::Invalid(format!(
                "principal {principal:?} must be visible ASCII without '/' or '*'"
            )));
        }
        let id = loop {
            let id = random_hex(6)?;
            if !self.keys.iter().any(|k| k.id == id) {
                break id;
            }
        };
        let key = format!("{PREFIX}{id}_{}", random_hex(32)?);
        self.keys.push(StoredKey {
            id: id.clone(),
            principal: principal.to_owned(),
            claims,
            sha256: sha256_hex(&key),
            created: now,
            expires,
            revoked: None,
        });
        Ok((id, key))
    }

    /// Marks key `id` revoked at `now` (revoking twice keeps the first time).
    pub fn revoke(&mut self, id: &str, now: u64) -> Result<(), KeyStoreError> {
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| KeyStoreError::UnknownId(id.to_owned()))?;
        key.revoked.get_or_insert(now);
        Ok(())
    }

    /// The key `presented` stands for, if it is one of these, active at `now`.
    pub fn verify(&self, presented: &str, now: u64) -> Result<&StoredKey, KeyRefusal> {
        let rest = presented
            .strip_prefix(PREFIX)
            .ok_or(KeyRefusal::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(KeyRefusal::Malformed)?;
        let hexes = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hexes(id, 12) || !hexes(secret, 64) {
            return Err(KeyRefusal::Malformed);
        }
        let stored = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(KeyRefusal::Unknown)?;
        let hash = sha256_hex(presented);
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            hash.as_bytes(),
            stored.sha256.as_bytes(),
        )
        .is_err()
        {
            return Err(KeyRefusal::Unknown);
        }
        match stored.status(now) {
            "revoked" => Err(KeyRefusal::Revoked(stored.id.clone())),
            "expired" => Err(KeyRefusal::Expired(stored.id.clone())),
            _ => Ok(stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_verify_until_revoked_or_expired_and_only_their_hash_is_kept() {
        let mut store = KeyStore::default();
        let (id, key) = store
            .create("acme", BTreeMap::new(), Some(2_000), 1_000)
            .unwrap();
        let (_, other) = store.create("acme", BTreeMap::new(), None, 1_000).unwrap();
        assert!(key.starts_with("wardk_") && key.len() == 6 + 12 + 1 + 64);
        let text = serde_json::to_string(&store).unwrap();
        assert!(!text.contains(&key[18..]), "the secret is not stored");
        assert_eq!(store.verify(&key, 1_500).unwrap().principal, "acme");
        assert_eq!(store.verify(&other, 1_500).unwrap().principal, "acme");
        assert_eq!(
            store.verify(&key, 2_000),
            Err(KeyRefusal::Expired(id.clone()))
        );
        store.revoke(&id, 1_600).unwrap();
        assert_eq!(
            store.verify(&key, 1_700),
            Err(KeyRefusal::Revoked(id.clone()))
        );
        assert!(store.verify(&other, 1_700).is_ok(), "the other key stays");
        let mut forged = key.clone();
        forged.replace_range(key.len() - 1.., if key.ends_with('0') { "1" } else { "0" });
        let mut fresh = KeyStore::default();
        let (_, k) = fresh.create("b", BTreeMap::new(), None, 0).unwrap();
        let wrong_secret = format!("{}{}", &k[..19], &forged[19..]);
        assert_eq!(fresh.verify(&wrong_secret, 1), Err(KeyRefusal::Unknown));
        for bad in [
            "",
            "wardk_",
            "wardk_zz_yy",
            "Bearer x",
            &key[..key.len() - 1],
        ] {
            assert_eq!(
                store.verify(bad, 1_500),
                Err(KeyRefusal::Malformed),
                "{bad}"
            );
        }
        assert!(store.create("a/b", BTreeMap::new(), None, 0).is_err());
        assert!(matches!(
            store.revoke("nope", 0),
            Err(KeyStoreError::UnknownId(_))
        ));
    }
}
