//! JWTs (RFC 7519, JWS compact form) checked against configured issuers: end users' at the
//! gateway, JWT-SVIDs at the Workload API. The token is parsed here, strictly, before any
//! signature work: three base64url segments, a size bound, JSON objects without duplicate
//! names (a claim stated twice could be read differently by the next hop), `alg` from the
//! issuer's allowlist (never `none`, never HMAC: an issuer's keys are public), no `crit`
//! extension (none is understood, so RFC 7515 §4.1.11 says refuse), and the key from the
//! issuer's configured JWKS only: `jku`, `x5u`, `jwk` and `x5c` headers are never key
//! sources. The key must be of the algorithm's type (and curve), and say `use: sig` and
//! this `alg` if it says anything. Then the signature (jsonwebtoken over aws-lc-rs), then `iss`, `aud`, `exp`
//! (required), `nbf` and `iat` against the caller's clock with the issuer's skew.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};

/// The most a token may weigh (header, payload and signature as sent).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// `iss`, exactly.
    pub issuer: String,
    /// `aud` must hold one of these.
    pub audiences: Vec<String>,
    /// The algorithms accepted from this issuer.
    pub algorithms: Vec<Algorithm>,
    pub keys: JwkSet,
    pub clock_skew: Duration,
}

/// A token that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub subject: Option<String>,
    /// The key that signed it.
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
}

/// Why a token is refused: for the audit log, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not accepted from this issuer")]
    Algorithm(String),
    #[error("critical header extension {0:?} is not understood")]
    Critical(String),
    #[error("issuer {0:?} is not trusted")]
    UnknownIssuer(String),
    #[error("no key of the issuer's matches (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("key {0:?} does not fit the algorithm")]
    KeyMismatch(Option<String>),
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("no exp claim")]
    NoExpiry,
    #[error("audience not accepted")]
    Audience,
}

pub(crate) fn malformed(why: impl Into<String>) -> JwtError {
    JwtError::Malformed(why.into())
}

/// Verifies `token` against `issuers` at `now`.
pub fn verify(token: &str, issuers: &[Issuer], now: SystemTime) -> Result<Verified, JwtError> {
    let parsed = parse(token)?;
    let iss = parsed
        .claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no iss"))?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(|| JwtError::UnknownIssuer(iss.to_owned()))?;
    parsed.verify(issuer, now)
}

/// Verifies `token` as signed by `issuer`, whatever its `iss` says (or without one): for
/// JWT-SVIDs, whose signer is their subject's trust domain.
pub fn verify_with(token: &str, issuer: &Issuer, now: SystemTime) -> Result<Verified, JwtError> {
    parse(token)?.verify(issuer, now)
}

/// A token's segments, parsed but not verified.
struct Parsed<'t> {
    token: &'t str,
    signed_len: usize,
    signature: &'t str,
    alg: String,
    algorithm: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
}

/// Parses `token` strictly (size, segments, JSON, `alg`, no `crit`).
fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three segments"));
    };
    let header = object(header_b64, "header")?;
    let claims = object(payload_b64, "payload")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no alg"))?;
    let algorithm: Algorithm = alg
        .parse()
        .map_err(|_| JwtError::Algorithm(alg.to_owned()))?;
    if let Some(crit) = header.get("crit") {
        return Err(JwtError::Critical(crit.to_string()));
    }
    Ok(Parsed {
        token,
        signed_len: header_b64.len() + 1 + payload_b64.len(),
        signature,
        alg: alg.to_owned(),
        algorithm,
        kid: header.get("kid").and_then(Value::as_str).map(str::to_owned),
        claims,
    })
}

impl Parsed<'_> {
    /// The algorithm, the key, the signature, then the claims.
    fn verify(self, issuer: &Issuer, now: SystemTime) -> Result<Verified, JwtError> {
        let algorithm = self.algorithm;
        if !issuer.algorithms.contains(&algorithm) || algorithm.family() == AlgorithmFamily::Hmac {
            return Err(JwtError::Algorithm(self.alg));
        }
        let kid = self.kid;
        let jwk = key_for(issuer, kid.as_deref(), algorithm)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| JwtError::KeyMismatch(kid.clone()))?;
        let message = &self.token[..self.signed_len];
        let good =
            jsonwebtoken::crypto::verify(self.signature, message.as_bytes(), &key, algorithm)
                .map_err(|_| JwtError::Signature)?;
        if !good {
            return Err(JwtError::Signature);
        }
        check_claims(&self.claims, issuer, now)?;
        Ok(Verified {
            issuer: self
                .claims
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            subject: self
                .claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_owned),
            kid,
            claims: self.claims,
        })
    }
}

/// A base64url segment holding a JSON object with no name twice (at any depth).
pub(crate) fn object(segment: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| malformed(format!("{what} is not base64url")))?;
    let strict: Strict =
        serde_json::from_slice(&bytes).map_err(|e| malformed(format!("{what}: {e}")))?;
    match strict.0 {
        Value::Object(map) => Ok(map),
        _ => Err(malformed(format!("{what} is not a JSON object"))),
    }
}

/// A JSON value read refusing any object with a name twice.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some((k, Strict(v))) = map.next_entry::<String, Strict>()? {
            if out.contains_key(&k) {
                return Err(serde::de::Error::custom(format!("duplicate member {k:?}")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The issuer's key for this token: by `kid`, or its only key of the algorithm's type.
fn key_for<'a>(issuer: &'a Issuer, kid: Option<&str>, alg: Algorithm) -> Result<&'a Jwk, JwtError> {
    let fits = |k: &Jwk| fits(k, alg);
    let jwk = match kid {
        Some(kid) => issuer
            .keys
            .find(kid)
            .ok_or_else(|| JwtError::UnknownKey(Some(kid.to_owned())))?,
        None => {
            let mut candidates = issuer.keys.keys.iter().filter(|k| fits(k));
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => only,
                _ => return Err(JwtError::UnknownKey(None)),
            }
        }
    };
    if fits(jwk) {
        Ok(jwk)
    } else {
        Err(JwtError::KeyMismatch(kid.map(str::to_owned)))
    }
}

/// Whether `jwk` may verify `alg`: its type (and curve), its `use` and its `alg`.
pub(crate) fn fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let kind = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), a) => a.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    let usage = !matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature);
    let stated = jwk
        .common
        .key_algorithm
        .is_none_or(|k| KeyAlgorithm::from(alg) == k);
    kind && usage && stated
}

fn check_claims(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    now: SystemTime,
) -> Result<(), JwtError> {
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let skew = issuer.clock_skew.as_secs_f64();
    let time = |name: &str| -> Result<Option<f64>, JwtError> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| malformed(format!("{name} is not a number"))),
        }
    };
    let exp = time("exp")?.ok_or(JwtError::NoExpiry)?;
    if now >= exp + skew {
        return Err(JwtError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now + skew < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if time("iat")?.is_some_and(|iat| now + skew < iat) {
        return Err(JwtError::IssuedInFuture);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .any(|a| issuer.audiences.iter().any(|want| want == a))
    {
        return Err(JwtError::Audience);
    }
    Ok(())
}

/// The `iss` a token claims, unverified: which issuer's keys to refresh when none of the
/// ones held signed it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let claims = object(payload, "payload").ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}
