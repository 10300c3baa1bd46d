//! The issuers a gateway trusts and where their keys come from: a JWKS file read at start,
//! a `jwks_uri`, or the issuer's OIDC discovery document
//! (`ISSUER/.well-known/openid-configuration`, whose `issuer` must be the configured one
//! exactly, OIDC Discovery §4.3) naming its `jwks_uri`. Remote keys are fetched over HTTPS
//! at start (the gateway is not ready until each issuer's first set arrives), refreshed
//! every `refresh_interval`, and at once when a token names a key not held — at most once
//! per `min_refresh_interval`, so tokens with made-up `kid`s cannot make the gateway hammer
//! the IdP. A fetch that fails or returns nothing usable keeps the last good keys.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use ward_runtime::{Drain, Pending};

use super::jwt::Issuer;

/// An issuer as configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Accepted `alg` values: RS256, RS384, PS256, ES256, ES384, EdDSA.
    pub algorithms: Vec<String>,
    /// The issuer's JWKS (RFC 7517 JSON), read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Where the issuer publishes its JWKS (HTTPS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Find `jwks_uri` in the issuer's OIDC discovery document.
    #[serde(default)]
    pub discovery: bool,
    /// Roots for the IdP's HTTPS (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_refresh", with = "crate::config::duration")]
    pub refresh_interval: Duration,
    #[serde(default = "default_min_refresh", with = "crate::config::duration")]
    pub min_refresh_interval: Duration,
    #[serde(default = "default_skew", with = "crate::config::duration")]
    pub clock_skew: Duration,
}

fn default_skew() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_min_refresh() -> Duration {
    Duration::from_secs(30)
}

/// The algorithms an issuer may be configured with: asymmetric only.
const CONFIGURABLE: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The asymmetric signature algorithm `name` names, if it is one accepted here.
pub fn asymmetric(name: &str) -> Option<Algorithm> {
    name.parse().ok().filter(|a| CONFIGURABLE.contains(a))
}

/// Where a remote issuer's keys are fetched.
#[derive(Debug, Clone)]
pub enum KeySource {
    Discovery(String),
    Jwks(String),
}

impl IssuerConfig {
    /// The issuer with its keys if they are in a file (read and checked now: every key
    /// usable, every kid distinct); with a remote source, without keys yet.
    pub fn load(&self) -> Result<Issuer, String> {
        if self.issuer.is_empty() || self.audiences.is_empty() {
            return Err(format!(
                "issuer {:?}: issuer and audiences are required",
                self.issuer
            ));
        }
        let mut algorithms = Vec::new();
        for name in &self.algorithms {
            let alg = asymmetric(name).ok_or_else(|| {
                    format!(
                        "issuer {}: algorithm {name:?} is not accepted (RS256, RS384, PS256, ES256, ES384, EdDSA; never none or HMAC)",
                        self.issuer
                    )
                })?;
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err(format!("issuer {}: no algorithms", self.issuer));
        }
        let sources = [
            self.jwks_file.is_some(),
            self.jwks_uri.is_some(),
            self.discovery,
        ];
        if sources.iter().filter(|&&s| s).count() != 1 {
            return Err(format!(
                "issuer {}: name one key source: jwks_file, jwks_uri or discovery: true",
                self.issuer
            ));
        }
        let keys = match &self.jwks_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                checked_keys(&text, true).map_err(|e| format!("{}: {e}", file.display()))?
            }
            None => JwkSet { keys: Vec::new() },
        };
        Ok(Issuer {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            algorithms,
            keys,
            clock_skew: self.clock_skew,
        })
    }

    /// Where the keys are fetched, for a remote issuer; every URL must be HTTPS.
    pub fn source(&self) -> Result<Option<KeySource>, String> {
        let https = |url: &str| {
            if url.starts_with("https://") {
                Ok(())
            } else {
                Err(format!(
                    "issuer {}: {url:?} is not an https:// URL",
                    self.issuer
                ))
            }
        };
        if self.discovery {
            https(&self.issuer)?;
            let base = self.issuer.trim_end_matches('/');
            return Ok(Some(KeySource::Discovery(format!(
                "{base}/.well-known/openid-configuration"
            ))));
        }
        match &self.jwks_uri {
            Some(uri) => https(uri).map(|()| Some(KeySource::Jwks(uri.clone()))),
            None => Ok(None),
        }
    }
}

/// A JWKS document read and checked. `strict` (a file the operator wrote): every key
/// must be usable. Fetched: unusable keys (other uses, unknown types) are left out.
fn checked_keys(text: &str, strict: bool) -> Result<JwkSet, String> {
    let mut keys: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut kids = std::collections::BTreeSet::new();
    let mut usable = Vec::new();
    for key in keys.keys.drain(..) {
        if DecodingKey::from_jwk(&key).is_err() {
            if strict {
                return Err(format!(
                    "key {:?} is not a usable public key",
                    key.common.key_id
                ));
            }
            continue;
        }
        if let Some(kid) = &key.common.key_id
            && !kids.insert(kid.clone())
        {
            return Err(format!("kid {kid:?} appears twice"));
        }
        usable.push(key);
    }
    Ok(JwkSet { keys: usable })
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// The largest discovery document or JWKS read.
const MAX_DOCUMENT: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One remote issuer's fetching state.
struct Remote {
    /// Its place in the issuer list.
    index: usize,
    issuer: String,
    source: KeySource,
    client: HttpsClient,
    refresh_interval: Duration,
    min_refresh_interval: Duration,
    last_attempt: Mutex<Option<Instant>>,
    /// One fetch at a time per issuer.
    fetching: tokio::sync::Mutex<()>,
}

/// The issuers in force; remote ones' keys swap in as they are fetched.
pub struct Issuers {
    current: ArcSwap<Vec<Issuer>>,
    remotes: Vec<Remote>,
}

impl Issuers {
    /// From the configuration; remote issuers start without keys (see [`Issuers::follow`]).
    pub fn new(configs: &[IssuerConfig], loaded: Vec<Issuer>) -> Result<Arc<Self>, String> {
        let mut remotes = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let Some(source) = config.source()? else {
                continue;
            };
            remotes.push(Remote {
                index,
                issuer: config.issuer.clone(),
                source,
                client: https_client(config.ca_file.as_ref())?,
                refresh_interval: config.refresh_interval,
                min_refresh_interval: config.min_refresh_interval,
                last_attempt: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(loaded),
            remotes,
        }))
    }

    /// The issuers and keys in force now.
    pub fn current(&self) -> Arc<Vec<Issuer>> {
        self.current.load_full()
    }

    /// The names of the remote issuers (for readiness).
    pub fn remote_names(&self) -> Vec<String> {
        self.remotes.iter().map(|r| r.issuer.clone()).collect()
    }

    /// Fetches `issuer`'s keys now for a token naming a key not held, unless a token made
    /// it fetch within its minimum interval (scheduled fetches do not count); whether a new
    /// key set was put in force.
    pub async fn refresh(&self, issuer: &str) -> bool {
        let Some(remote) = self.remotes.iter().find(|r| r.issuer == issuer) else {
            return false;
        };
        {
            let mut last = remote
                .last_attempt
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < remote.min_refresh_interval) {
                metrics::counter!("ward_gateway_jwks_refreshes_total", "issuer" => issuer.to_owned(),
                    "result" => "rate_limited")
                .increment(1);
                return false;
            }
            *last = Some(Instant::now());
        }
        self.fetch_and_install(remote).await
    }

    /// Fetches every remote issuer's keys now (each one's `pending` clears on its first
    /// success), then again every refresh interval, until the drain.
    pub async fn follow(self: Arc<Self>, pending: Vec<Pending>, drain: Drain) {
        let mut pending: Vec<Option<Pending>> = pending.into_iter().map(Some).collect();
        let mut next: Vec<Instant> = self.remotes.iter().map(|_| Instant::now()).collect();
        loop {
            for (i, remote) in self.remotes.iter().enumerate() {
                if Instant::now() < next[i] {
                    continue;
                }
                let ok = self.fetch_and_install(remote).await;
                let held = !self.current()[remote.index].keys.keys.is_empty();
                if held && let Some(p) = pending.get_mut(i) {
                    p.take();
                }
                // Until the first keys arrive, try again soon.
                let wait = if ok || held {
                    remote.refresh_interval
                } else {
                    Duration::from_secs(2)
                };
                next[i] = Instant::now() + wait;
            }
            let soonest = next.iter().min().copied();
            let sleep = soonest.map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(Instant::now())
            });
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = drain.signaled() => return,
            }
        }
    }

    async fn fetch_and_install(&self, remote: &Remote) -> bool {
        let _one = remote.fetching.lock().await;
        let result = match tokio::time::timeout(FETCH_TIMEOUT, fetch_keys(remote)).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_owned()),
        };
        let issuer = remote.issuer.clone();
        match result {
            Ok(keys) if keys.keys.is_empty() => {
                metrics::counter!("ward_gateway_jwks_refreshes_total", "issuer" => issuer.clone(),
                    "result" => "error")
                .increment(1);
                tracing::warn!(%issuer, "the issuer's JWKS holds no usable key; keeping the last good keys");
                false
            }
            Ok(keys) => {
                let kids: Vec<String> = keys
                    .keys
                    .iter()
                    .filter_map(|k| k.common.key_id.clone())
                    .collect();
                self.current.rcu(|list| {
                    let mut list = (**list).clone();
                    if let Some(entry) = list.get_mut(remote.index) {
                        entry.keys = keys.clone();
                    }
                    list
                });
                metrics::counter!("ward_gateway_jwks_refreshes_total", "issuer" => issuer.clone(),
                    "result" => "ok")
                .increment(1);
                tracing::info!(%issuer, ?kids, "issuer keys in force");
                true
            }
            Err(e) => {
                metrics::counter!("ward_gateway_jwks_refreshes_total", "issuer" => issuer.clone(),
                    "result" => "error")
                .increment(1);
                tracing::warn!(%issuer, error = %e, "cannot fetch the issuer's keys; keeping the last good keys");
                false
            }
        }
    }
}

/// The discovery document's fields used here.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

async fn fetch_keys(remote: &Remote) -> Result<JwkSet, String> {
    let jwks_uri = match &remote.source {
        KeySource::Jwks(uri) => uri.clone(),
        KeySource::Discovery(url) => {
            let body = get(&remote.client, url).await?;
            let doc: Discovery = serde_json::from_slice(&body)
                .map_err(|e| format!("{url}: not an OIDC discovery document: {e}"))?;
            if doc.issuer != remote.issuer {
                return Err(format!(
                    "{url}: names issuer {:?}, not {:?}",
                    doc.issuer, remote.issuer
                ));
            }
            if !doc.jwks_uri.starts_with("https://") {
                return Err(format!("{url}: jwks_uri {:?} is not https", doc.jwks_uri));
            }
            doc.jwks_uri
        }
    };
    let body = get(&remote.client, &jwks_uri).await?;
    let text = std::str::from_utf8(&body).map_err(|_| format!("{jwks_uri}: not UTF-8"))?;
    checked_keys(text, false).map_err(|e| format!("{jwks_uri}: {e}"))
}

/// GET `url`: a 200 with a body of at most [`MAX_DOCUMENT`] bytes.
async fn get(client: &HttpsClient, url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("{url}: status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_DOCUMENT)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(body.to_bytes())
}

/// An HTTPS-only client trusting `ca_file`'s roots, or the system's.
fn https_client(ca_file: Option<&PathBuf>) -> Result<HttpsClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(file) => {
            let certs = ward_certs::pem::read_certs(file).map_err(|e| e.to_string())?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("{}: not a usable root: {e}", file.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
        }
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
