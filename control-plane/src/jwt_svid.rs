//! JWT-SVIDs signed by the control plane, for the apps behind proxies (the Workload API's
//! FetchJWTSVID when the identity comes from ward).
//!
//! The signing key is an ECDSA P-256 key derived from the CA's signing key
//! ([`CertificateAuthority::derive_secret`]): every replica holding the CA signs with the
//! same key and publishes the same JWT bundle with no key storage of its own, and a new CA
//! (root rotation) brings a new key. The last two keys seen stay in the bundle, so tokens
//! signed just before a rotation still validate for their short life.
//!
//! A token: header `{alg: ES256, kid, typ: JWT}`, claims `sub` (the caller's SPIFFE ID, as
//! its SVID proves), `aud`, `iat`, `exp` (`JWT_SVID_TTL` later); per the JWT-SVID spec.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use ward_certs::SpiffeId;
use ward_certs::ca::CertificateAuthority;

/// How long a JWT-SVID is valid.
pub const JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Keys kept in the bundle: the current one and the one before it.
const KEPT: usize = 2;

/// One signing key.
pub struct JwtKey {
    kid: String,
    pair: EcdsaKeyPair,
    jwk: Value,
}

impl JwtKey {
    /// The JWT-SVID key of `ca`.
    pub fn of(ca: &CertificateAuthority) -> Result<Self, String> {
        // A derived 32-byte string is a valid P-256 scalar unless it is 0 or ≥ n (odds about
        // 2^-32); the next counter value is tried then.
        for counter in 0u8..=255 {
            let purpose = [b"jwt-svid ES256 v1 ".as_slice(), &[counter]].concat();
            let der = rfc5915(&ca.derive_secret(&purpose));
            if let Ok(pair) =
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            {
                return Ok(Self::new(pair));
            }
        }
        Err("no usable JWT-SVID key could be derived from the CA key".into())
    }

    fn new(pair: EcdsaKeyPair) -> Self {
        // The public key is the uncompressed point 04 || x || y.
        let point = pair.public_key().as_ref().to_vec();
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &point);
        let kid = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..18]);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
        });
        Self { kid, pair, jwk }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A JWT-SVID for `sub` and `audience`, valid from `now` for [`JWT_SVID_TTL`].
    pub fn sign(
        &self,
        sub: &SpiffeId,
        audience: &[String],
        now: SystemTime,
    ) -> Result<String, String> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let header = json!({ "alg": "ES256", "kid": self.kid, "typ": "JWT" });
        let aud = match audience {
            [one] => json!(one),
            many => json!(many),
        };
        let claims = json!({
            "sub": sub.to_string(),
            "aud": aud,
            "iat": iat,
            "exp": iat + JWT_SVID_TTL.as_secs(),
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .map_err(|_| "signing failed".to_owned())?;
        Ok(format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The keys in the JWT bundle, newest first.
#[derive(Default)]
pub struct JwtKeys {
    keys: Mutex<Vec<JwtKey>>,
}

impl JwtKeys {
    /// Signs with the key of `ca` (kept from now on); returns the token and the JWKS.
    pub fn sign(
        &self,
        ca: &CertificateAuthority,
        sub: &SpiffeId,
        audience: &[String],
        now: SystemTime,
    ) -> Result<(String, Vec<u8>), String> {
        let key = JwtKey::of(ca)?;
        let token = key.sign(sub, audience, now)?;
        Ok((token, self.keep(key)))
    }

    /// The JWKS: the key of `ca` and the one before it.
    pub fn jwks(&self, ca: &CertificateAuthority) -> Result<Vec<u8>, String> {
        Ok(self.keep(JwtKey::of(ca)?))
    }

    fn keep(&self, key: JwtKey) -> Vec<u8> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.first().is_none_or(|k| k.kid != key.kid) {
            keys.retain(|k| k.kid != key.kid);
            keys.insert(0, key);
            keys.truncate(KEPT);
        }
        let jwks = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        jwks.to_string().into_bytes()
    }
}

/// An RFC 5915 `ECPrivateKey` for a P-256 scalar, without the public key (computed by
/// the parser): SEQUENCE { 1, OCTET STRING scalar, [0] prime256v1 }.
fn rfc5915(scalar: &[u8; 32]) -> Vec<u8> {
    const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
    der.extend_from_slice(scalar);
    der.extend_from_slice(&[0xa0, 0x0a]);
    der.extend_from_slice(&P256_OID);
    der
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_certs::TrustDomain;
    use ward_certs::ca::CaOptions;

    fn ca() -> CertificateAuthority {
        let td = TrustDomain::new("example.org").unwrap();
        CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now()).unwrap()
    }

    #[test]
    fn the_key_is_the_cas_everywhere_and_new_with_a_new_ca() {
        let (one, two) = (ca(), ca());
        let dir = tempfile::tempdir().unwrap();
        one.save(dir.path(), false).unwrap();
        let reloaded = CertificateAuthority::load(dir.path()).unwrap();
        assert_eq!(
            JwtKey::of(&one).unwrap().kid(),
            JwtKey::of(&reloaded).unwrap().kid()
        );
        assert_ne!(
            JwtKey::of(&one).unwrap().kid(),
            JwtKey::of(&two).unwrap().kid()
        );
        // The bundle keeps the new key and the one before it.
        let keys = JwtKeys::default();
        let first: Value = serde_json::from_slice(&keys.jwks(&one).unwrap()).unwrap();
        assert_eq!(first["keys"].as_array().unwrap().len(), 1);
        let both: Value = serde_json::from_slice(&keys.jwks(&two).unwrap()).unwrap();
        let kids: Vec<&str> = both["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(
            kids,
            [
                JwtKey::of(&two).unwrap().kid(),
                JwtKey::of(&one).unwrap().kid()
            ]
        );
    }

    #[test]
    fn tokens_verify_with_the_published_key_and_say_who_and_for_whom() {
        let ca = ca();
        let sub = SpiffeId::new("spiffe://example.org/ns/shop/sa/web").unwrap();
        let keys = JwtKeys::default();
        let (token, jwks) = keys
            .sign(&ca, &sub, &["payments".into()], SystemTime::now())
            .unwrap();
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&jwks).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["payments"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], sub.to_string());
        assert_eq!(data.claims["aud"], "payments");
        let lifetime = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
        assert_eq!(lifetime, JWT_SVID_TTL.as_secs());
        validation.set_audience(&["other"]);
        assert!(jsonwebtoken::decode::<Value>(&token, &key, &validation).is_err());
    }
}
