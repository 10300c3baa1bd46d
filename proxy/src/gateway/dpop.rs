//! DPoP proofs (RFC 9449): a token bound to a key (`cnf.jkt`) is only accepted with a
//! fresh proof, signed by that key, for this very request. Checked as §4.3 lists: one
//! `DPoP` header holding a compact JWS, `typ: dpop+jwt`, an asymmetric `alg` from the
//! allowlist, a public `jwk` (no private member, of the algorithm's type) whose signature
//! holds, `htm` and `htu` naming this request's method and URI (query and fragment left
//! out), `iat` within the window, `ath` the hash of the token presented, the key's
//! thumbprint (RFC 7638) the token's `jkt`, a server nonce when one is required, and a
//! `jti` never seen before within the window.
//!
//! Nonces are stateless: the time they were issued and a MAC of it under a secret, which
//! replicas share through `secret_file` (else each has its own, and a client keeps the
//! replica it got its nonce from). The replay cache is this gateway's own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use ward_policy::Authority;

use super::jwt::{MAX_TOKEN_BYTES, fits, malformed, object};

/// The `dpop` section: how proofs are judged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// The oldest `iat` a proof may have.
    #[serde(default = "default_max_age", with = "crate::config::duration")]
    pub max_age: Duration,
    /// How far in the future `iat` may be (clocks differ).
    #[serde(default = "default_skew", with = "crate::config::duration")]
    pub clock_skew: Duration,
    /// Proof algorithms accepted (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Require a server nonce in every proof (RFC 9449 §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<NonceConfig>,
    /// Proofs remembered at most (their `jti`, until they are too old to be taken).
    #[serde(default = "default_replay_cache")]
    pub replay_cache: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NonceConfig {
    /// How long a nonce is accepted after the gateway issued it.
    #[serde(default = "default_nonce_lifetime", with = "crate::config::duration")]
    pub lifetime: Duration,
    /// A secret (at least 32 bytes) the replicas share, so a nonce one issued is good at
    /// the others. Only the path is ever shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

fn default_max_age() -> Duration {
    Duration::from_secs(60)
}
fn default_skew() -> Duration {
    Duration::from_secs(5)
}
fn default_algorithms() -> Vec<String> {
    ["ES256", "ES384", "EdDSA", "PS256", "RS256"]
        .map(str::to_owned)
        .to_vec()
}
fn default_replay_cache() -> usize {
    100_000
}
fn default_nonce_lifetime() -> Duration {
    Duration::from_secs(300)
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            max_age: default_max_age(),
            clock_skew: default_skew(),
            algorithms: default_algorithms(),
            nonce: None,
            replay_cache: default_replay_cache(),
        }
    }
}

/// Why a proof is not taken (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("no DPoP proof")]
    Missing,
    #[error("more than one DPoP proof")]
    Several,
    #[error("DPoP proof: {0}")]
    Invalid(String),
    #[error("DPoP proof without a valid server nonce")]
    Nonce,
    #[error("DPoP proof replayed (jti seen before)")]
    Replayed,
    #[error("DPoP replay cache is full")]
    Full,
}

fn invalid(why: impl Into<String>) -> ProofError {
    ProofError::Invalid(why.into())
}

/// The request a proof must name: `htm` and `htu`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a str,
    /// `https` or `http`: how the client reached the gateway.
    pub scheme: &'a str,
    pub authority: Option<&'a Authority>,
    /// The path as the client sent it.
    pub path: &'a str,
}

/// Proof checking, with its nonce secret and replay cache.
pub struct Dpop {
    max_age: Duration,
    skew: Duration,
    algorithms: Vec<Algorithm>,
    /// The algorithms as a challenge's `algs` lists them, written once.
    algs: String,
    nonces: Option<Nonces>,
    seen: Mutex<Replay>,
}

impl Dpop {
    pub fn new(config: &DpopConfig) -> Result<Self, String> {
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg = super::issuers::asymmetric(name).ok_or_else(|| {
                format!(
                    "algorithm {name:?} is not accepted (RS256, RS384, PS256, ES256, ES384, EdDSA)"
                )
            })?;
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err("algorithms: at least one".into());
        }
        if config.replay_cache == 0 {
            return Err("replay_cache: at least 1".into());
        }
        let nonces = config.nonce.as_ref().map(Nonces::new).transpose()?;
        Ok(Self {
            max_age: config.max_age,
            skew: config.clock_skew,
            algs: config.algorithms.join(" "),
            algorithms,
            nonces,
            seen: Mutex::new(Replay::new(config.replay_cache)),
        })
    }

    /// The algorithms, as the `WWW-Authenticate` challenge's `algs` lists them.
    pub fn algs(&self) -> &str {
        &self.algs
    }

    /// A fresh nonce, if the gateway requires them.
    pub fn nonce(&self, now: SystemTime) -> Option<String> {
        self.nonces.as_ref().map(|n| n.issue(secs(now)))
    }

    /// Checks the request's proof for `token`, bound to the key whose thumbprint is
    /// `jkt`, and remembers its `jti`.
    pub fn check(
        &self,
        headers: &HeaderMap,
        token: &str,
        jkt: &str,
        target: &Target<'_>,
        now: SystemTime,
    ) -> Result<(), ProofError> {
        let mut proofs = headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) => return Err(ProofError::Missing),
            (Some(_), Some(_)) => return Err(ProofError::Several),
            (Some(p), None) => p.to_str().map_err(|_| invalid("not text"))?,
        };
        let (jwk, claims) = self.verified(proof)?;
        let now = secs(now);
        let text = |name: &str| claims.get(name).and_then(Value::as_str);
        let jti = text("jti")
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or_else(|| invalid("no jti"))?;
        if text("htm") != Some(target.method) {
            return Err(invalid("htm is not this request's method"));
        }
        let htu = text("htu").ok_or_else(|| invalid("no htu"))?;
        if !names_target(htu, target) {
            return Err(invalid("htu is not this request's URI"));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("no iat"))?;
        if iat > now + self.skew.as_secs() {
            return Err(invalid("iat in the future"));
        }
        let expires = iat + self.max_age.as_secs() + self.skew.as_secs();
        if expires < now {
            return Err(invalid("too old"));
        }
        if text("ath") != Some(&token_hash(token)) {
            return Err(invalid("ath is not the hash of the token presented"));
        }
        let thumbprint = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| invalid("no thumbprint for the key"))?;
        if constant_time::verify_slices_are_equal(thumbprint.as_bytes(), jkt.as_bytes()).is_err() {
            return Err(invalid("key is not the one the token is bound to (jkt)"));
        }
        if let Some(nonces) = &self.nonces
            && !text("nonce").is_some_and(|n| nonces.valid(n, now, self.skew.as_secs()))
        {
            return Err(ProofError::Nonce);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.first_use(replay_key(jkt, jti), expires, now)
    }

    /// The proof's key and claims, its form and signature checked.
    fn verified(&self, proof: &str) -> Result<(Jwk, serde_json::Map<String, Value>), ProofError> {
        let as_proof = |e: super::jwt::JwtError| invalid(e.to_string());
        if proof.len() > MAX_TOKEN_BYTES {
            return Err(invalid("too large"));
        }
        let mut parts = proof.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(as_proof(malformed("not three segments")));
        };
        let header = object(header_b64, "header").map_err(as_proof)?;
        let claims = object(payload_b64, "payload").map_err(as_proof)?;
        let typ = header.get("typ").and_then(Value::as_str);
        if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
            return Err(invalid("typ is not dpop+jwt"));
        }
        if header.contains_key("crit") {
            return Err(invalid("critical header extension not understood"));
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|a| a.parse::<Algorithm>().ok())
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| invalid("alg not accepted"))?;
        let jwk = match header.get("jwk") {
            Some(Value::Object(members)) => {
                // A private member means the key has leaked, or the client does not know
                // what it is doing; either way the proof proves nothing (§4.3 step 7).
                const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
                if PRIVATE.iter().any(|m| members.contains_key(*m)) {
                    return Err(invalid("jwk holds a private key"));
                }
                serde_json::from_value::<Jwk>(Value::Object(members.clone()))
                    .map_err(|_| invalid("jwk is not a public key"))?
            }
            _ => return Err(invalid("no jwk")),
        };
        if !fits(&jwk, alg) {
            return Err(invalid("jwk does not fit alg"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| invalid("jwk is not a usable key"))?;
        let message = &proof[..header_b64.len() + 1 + payload_b64.len()];
        let good =
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg).unwrap_or(false);
        if !good {
            return Err(invalid("bad signature"));
        }
        Ok((jwk, claims))
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `ath`: base64url of the SHA-256 of the token as presented.
pub fn token_hash(token: &str) -> String {
    sha256_b64url(token.as_bytes())
}

/// Base64url of the SHA-256 of `bytes` (`ath`, `x5t#S256`).
pub fn sha256_b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, bytes))
}

fn replay_key(jkt: &str, jti: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(jkt.as_bytes());
    ctx.update(&[0]);
    ctx.update(jti.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

/// Whether `htu` names the request: scheme and host alike (case aside), the same port
/// (a default one written or not), the same path; query and fragment left out.
fn names_target(htu: &str, target: &Target<'_>) -> bool {
    let htu = htu.split(['#', '?']).next().unwrap_or_default();
    let Ok(uri) = htu.parse::<http::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(host), Some(authority)) =
        (uri.scheme_str(), uri.host(), target.authority)
    else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" => 80,
        _ => return false,
    };
    let path = match uri.path() {
        "" => "/",
        p => p,
    };
    scheme.eq_ignore_ascii_case(target.scheme)
        && host.eq_ignore_ascii_case(&authority.host)
        && uri.port_u16().unwrap_or(default_port) == authority.port
        && path == target.path
}

/// Nonces: issue time and a MAC of it.
struct Nonces {
    key: hmac::Key,
    lifetime: u64,
}

const NONCE_MAC: usize = 16;

impl Nonces {
    fn new(config: &NonceConfig) -> Result<Self, String> {
        let secret = match &config.secret_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("nonce.secret_file {}: {e}", path.display()))?;
                if bytes.len() < 32 {
                    return Err(format!(
                        "nonce.secret_file {}: at least 32 bytes",
                        path.display()
                    ));
                }
                bytes
            }
            None => {
                let mut bytes = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness for nonces")?;
                bytes
            }
        };
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            lifetime: config.lifetime.as_secs(),
        })
    }

    fn issue(&self, now: u64) -> String {
        let stamp = now.to_be_bytes();
        let tag = hmac::sign(&self.key, &stamp);
        let mut nonce = stamp.to_vec();
        nonce.extend_from_slice(&tag.as_ref()[..NONCE_MAC]);
        URL_SAFE_NO_PAD.encode(nonce)
    }

    fn valid(&self, nonce: &str, now: u64, skew: u64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        if bytes.len() != 8 + NONCE_MAC {
            return false;
        }
        let (stamp, mac) = bytes.split_at(8);
        let tag = hmac::sign(&self.key, stamp);
        if constant_time::verify_slices_are_equal(&tag.as_ref()[..NONCE_MAC], mac).is_err() {
            return false;
        }
        let mut be = [0u8; 8];
        be.copy_from_slice(stamp);
        let issued = u64::from_be_bytes(be);
        issued <= now + skew && now < issued.saturating_add(self.lifetime)
    }
}

/// The proofs seen, until they expire: a proof is taken once.
struct Replay {
    seen: HashMap<[u8; 32], u64>,
    capacity: usize,
    /// When expired entries were last dropped (seconds).
    pruned: u64,
}

impl Replay {
    fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            capacity,
            pruned: 0,
        }
    }

    fn first_use(&mut self, key: [u8; 32], expires: u64, now: u64) -> Result<(), ProofError> {
        if self.seen.get(&key).is_some_and(|e| *e >= now) {
            return Err(ProofError::Replayed);
        }
        if self.seen.len() >= self.capacity && self.pruned != now {
            self.seen.retain(|_, e| *e >= now);
            self.pruned = now;
        }
        if self.seen.len() >= self.capacity {
            // Forgetting a live proof would let it be replayed: refuse instead.
            return Err(ProofError::Full);
        }
        self.seen.insert(key, expires);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(authority: &'a Authority, path: &'a str) -> Target<'a> {
        Target {
            method: "GET",
            scheme: "https",
            authority: Some(authority),
            path,
        }
    }

    #[test]
    fn htu_names_the_request_with_scheme_host_port_and_path_normalized_only_for_case_and_default_port()
     {
        let authority = Authority {
            host: "api.bank.test".into(),
            port: 443,
            default_port: 443,
        };
        let t = target(&authority, "/accounts/alice");
        for good in [
            "https://api.bank.test/accounts/alice",
            "HTTPS://API.bank.test:443/accounts/alice",
            "https://api.bank.test/accounts/alice?x=1",
            "https://api.bank.test/accounts/alice#frag",
        ] {
            assert!(names_target(good, &t), "{good}");
        }
        for bad in [
            "http://api.bank.test/accounts/alice",
            "https://api.bank.test:8443/accounts/alice",
            "https://evil.test/accounts/alice",
            "https://api.bank.test/accounts/bob",
            "https://api.bank.test/accounts/alice/",
            "https://api.bank.test/Accounts/alice",
            "/accounts/alice",
            "ftp://api.bank.test/accounts/alice",
            "",
        ] {
            assert!(!names_target(bad, &t), "{bad}");
        }
        let root = target(&authority, "/");
        assert!(names_target("https://api.bank.test", &root));
        let no_authority = Target {
            authority: None,
            ..t
        };
        assert!(!names_target(
            "https://api.bank.test/accounts/alice",
            &no_authority
        ));
    }

    #[test]
    fn nonces_are_good_for_their_lifetime_under_their_secret_only() {
        let config = NonceConfig {
            lifetime: Duration::from_secs(300),
            secret_file: None,
        };
        let (a, b) = (Nonces::new(&config).unwrap(), Nonces::new(&config).unwrap());
        let nonce = a.issue(1_000);
        assert!(a.valid(&nonce, 1_000, 5));
        assert!(a.valid(&nonce, 1_299, 5));
        assert!(!a.valid(&nonce, 1_300, 5), "expired");
        assert!(!a.valid(&nonce, 990, 5), "issued too far in the future");
        assert!(!b.valid(&nonce, 1_000, 5), "another secret");
        let mut forged = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        forged[7] ^= 1;
        assert!(!a.valid(&URL_SAFE_NO_PAD.encode(forged), 1_000, 5));
        assert!(!a.valid("not-a-nonce", 1_000, 5));
    }

    #[test]
    fn a_shared_secret_makes_nonces_good_at_every_replica_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, [7u8; 32]).unwrap();
        let config = NonceConfig {
            lifetime: Duration::from_secs(60),
            secret_file: Some(path.clone()),
        };
        let (a, b) = (Nonces::new(&config).unwrap(), Nonces::new(&config).unwrap());
        assert!(b.valid(&a.issue(50), 60, 5));
        std::fs::write(&path, [7u8; 31]).unwrap();
        let err = Nonces::new(&config).err().unwrap();
        assert!(err.contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn a_proof_is_taken_once_until_it_expires_and_a_full_cache_refuses_rather_than_forgets() {
        let mut replay = Replay::new(2);
        assert_eq!(replay.first_use([1; 32], 100, 10), Ok(()));
        assert_eq!(
            replay.first_use([1; 32], 100, 50),
            Err(ProofError::Replayed)
        );
        assert_eq!(replay.first_use([2; 32], 20, 10), Ok(()));
        assert_eq!(replay.first_use([3; 32], 100, 10), Err(ProofError::Full));
        // Once [2] has expired it makes room.
        assert_eq!(replay.first_use([3; 32], 100, 30), Ok(()));
        assert_eq!(
            replay.first_use([1; 32], 100, 30),
            Err(ProofError::Replayed)
        );
    }
}
