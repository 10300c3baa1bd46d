//! API keys at the gateway (`api_keys: { store: FILE, header: x-api-key }`): a partner
//! sends its key in the header instead of a token; the key store (`ward gateway key`,
//! see [`ward_certs::api_key`]) says which principal and claims it stands for. Policy sees
//! the principal `apikey/PRINCIPAL` (issuer `apikey`), the claims, `sub` and `key_id`. The
//! store is re-read when it changes, so a revoked key is refused within a second or two; a
//! store that does not read keeps the last good one.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use ward_certs::api_key::KeyStore;
use ward_runtime::Drain;

use crate::authz::end_user::EndUser;

/// The issuer part of an API key's principal.
pub const ISSUER: &str = "apikey";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The key store `ward gateway key` writes.
    pub store: PathBuf,
    /// The header a key is sent in.
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

/// The keys in force.
pub struct ApiKeys {
    header: HeaderName,
    store: PathBuf,
    current: ArcSwap<KeyStore>,
}

impl ApiKeys {
    /// Reads the store now; one that does not read stops the start.
    pub fn load(config: &ApiKeysConfig) -> Result<Arc<Self>, String> {
        let header = HeaderName::from_bytes(config.header.as_bytes())
            .map_err(|_| format!("api_keys.header: {:?} is not a header name", config.header))?;
        let store = KeyStore::read(&config.store, false).map_err(|e| e.to_string())?;
        Ok(Arc::new(Self {
            header,
            store: config.store.clone(),
            current: ArcSwap::from_pointee(store),
        }))
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The key a request presents: none, one, or (sent twice) refused.
    pub fn presented<'a>(&self, headers: &'a HeaderMap) -> Result<Option<&'a str>, String> {
        let mut values = headers.get_all(&self.header).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(format!("more than one {}", self.header));
        }
        first
            .to_str()
            .map(Some)
            .map_err(|_| "API key is not visible ASCII".to_owned())
    }

    /// The end user a presented key stands for, or why it is refused.
    pub fn verify(&self, key: &str) -> Result<EndUser, String> {
        let store = self.current.load();
        let now = ward_runtime::time::unix_secs(SystemTime::now());
        let stored = store.verify(key, now).map_err(|e| e.to_string())?;
        let mut claims: Map<String, Value> = stored
            .claims
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        claims.insert("iss".into(), Value::String(ISSUER.into()));
        claims.insert("sub".into(), Value::String(stored.principal.clone()));
        claims.insert("key_id".into(), Value::String(stored.id.clone()));
        Ok(EndUser::new(
            ISSUER.to_owned(),
            Some(&stored.principal),
            Some(stored.id.clone()),
            claims,
        ))
    }

    /// Re-reads the store when its contents change, until the drain.
    pub async fn follow(self: Arc<Self>, drain: Drain) {
        let (fp, load) = (self.store.clone(), self.store.clone());
        let this = self.clone();
        ward_runtime::poll::poll_changes(
            Duration::from_secs(1),
            Some(fingerprint(&self.store)),
            move || fingerprint(&fp),
            move || KeyStore::read(&load, false),
            move |loaded| match loaded {
                Ok(store) => {
                    let n = store.keys.len();
                    this.current.store(Arc::new(store));
                    tracing::info!(keys = n, "API key store reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "API key store refused; the last good one stays")
                }
            },
            async move { drain.signaled().await },
        )
        .await
    }
}

fn fingerprint(path: &PathBuf) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(path).ok().hash(&mut h);
    h.finish()
}
