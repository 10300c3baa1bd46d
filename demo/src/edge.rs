//! The demo's edge: `ward-proxy gateway` in front of `web`, with a public CA and
//! certificate for `bank.localhost`, a demo token issuer (an ES256 key and its JWKS file)
//! and tokens for three customers, written where a user can pick them up and curl.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use ward_certs::pem::{FileMode, write_atomic};

use crate::{NAMESPACE, TRUST_DOMAIN};

/// The host name the gateway serves (resolved to loopback by the demo's client and by
/// `curl --resolve`).
pub(crate) const HOST: &str = "bank.localhost";
/// The demo token issuer's `iss`.
pub(crate) const ISSUER: &str = "https://login.bank.local";
pub(crate) const AUDIENCE: &str = "bank-api";

/// A customer of the demo bank: their name, `sub` (their account) and token.
pub(crate) struct Customer {
    pub(crate) name: &'static str,
    pub(crate) account: &'static str,
    pub(crate) token: String,
}

/// What the edge needs from the demo's directory.
pub(crate) struct EdgeFiles {
    pub(crate) ca: PathBuf,
    pub(crate) customers: Vec<Customer>,
}

pub(crate) fn spiffe_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/sa/gateway")
}

/// Writes the public CA and certificate, the issuer's JWKS and each customer's token
/// (`NAME.jwt`, mode 0600) into `dir`.
pub(crate) fn prepare(dir: &Path) -> anyhow::Result<EdgeFiles> {
    let write = |name: &str, bytes: &[u8], mode| {
        let path = dir.join(name);
        write_atomic(&path, bytes, mode).with_context(|| format!("writing {}", path.display()))
    };
    let (ca_pem, cert_pem, key_pem) = public_certificate().context("making the public CA")?;
    write("public-ca.pem", ca_pem.as_bytes(), FileMode::Public)?;
    write("public.pem", cert_pem.as_bytes(), FileMode::Public)?;
    write("public.key", key_pem.as_bytes(), FileMode::Secret)?;

    let signing = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).context("issuer key")?;
    let encoding = EncodingKey::from_ec_pem(signing.serialize_pem().as_bytes())
        .context("issuer key for signing")?;
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).context("issuer JWK")?;
    jwk.common.key_id = Some("demo-1".into());
    let jwks = serde_json::to_vec(&JwkSet { keys: vec![jwk] }).context("JWKS")?;
    write("issuer-jwks.json", &jwks, FileMode::Public)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("demo-1".into());
    let mut customers = Vec::new();
    for (name, account) in [("alice", "1001"), ("bob", "1002"), ("carol", "1003")] {
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": account, "aud": AUDIENCE, "name": name,
            "iat": now, "exp": now + 24 * 3600,
        });
        let token = jsonwebtoken::encode(&header, &claims, &encoding).context("a token")?;
        write(&format!("{name}.jwt"), token.as_bytes(), FileMode::Secret)?;
        customers.push(Customer {
            name,
            account,
            token,
        });
    }
    Ok(EdgeFiles {
        ca: dir.join("public-ca.pem"),
        customers,
    })
}

/// A public CA (PEM) and a certificate for [`HOST`] (PEM) with its key (PEM).
fn public_certificate() -> Result<(String, String, String), rcgen::Error> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "ward demo public CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec![HOST.to_owned()])?;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// The gateway's configuration: its SVID from the control plane, public TLS, the demo
/// issuer, one route to the `web` service (found through the control plane's discovery,
/// and only if it is web's identity) limited per customer, its policy from the control
/// plane; `tracing` is the demo's trace section, if any.
pub(crate) fn gateway_config(
    dir: &Path,
    cp: SocketAddr,
    bundle: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    web: (SocketAddr, &str),
    logs: &Path,
) -> String {
    let (web_app, web_id) = web;
    format!(
        "# Written by `ward demo`: the edge, in front of web.\n\
         trust_domain: {TRUST_DOMAIN}\n\
         identity:\n  control_plane: \"https://{cp}\"\n  token_file: \"{token}\"\n  bundle: \"{bundle}\"\n  report_every: 1s\n\
         listen: {listen}\n\
         tls: {{ certificates: [ {{ cert: \"{cert}\", key: \"{key}\" }} ] }}\n\
         issuers:\n  - {{ issuer: \"{ISSUER}\", audiences: [{AUDIENCE}], algorithms: [ES256], jwks_file: \"{jwks}\" }}\n\
         rate_limits:\n  - {{ name: per-customer, by: [principal], rate: 10/s, burst: 10 }}\n\
         forward_claims: [sub, name]\n\
         routes:\n  - {{ host: {HOST}, path: {{ prefix: /accounts }}, service: {web_app}, \
         server_identity: \"{web_id}\", rate_limits: [per-customer] }}\n\
         audit: {{ decisions: denied, log: \"{audit}\" }}\n\
         admin: {admin}\n",
        token = dir.join("gateway.token").display(),
        bundle = bundle.display(),
        cert = dir.join("public.pem").display(),
        key = dir.join("public.key").display(),
        jwks = dir.join("issuer-jwks.json").display(),
        audit = logs.join("gateway-audit.log").display(),
    )
}

/// The gateway's policy: a customer may read their own account, nobody else's.
pub(crate) fn gateway_policy() -> String {
    format!(
        "# Customers read their own account through the gateway (sub = account), nothing else.\n\
         apiVersion: ward.dev/v1alpha1\n\
         kind: AuthorizationPolicy\n\
         metadata: {{ name: customers-read-own-account, namespace: {NAMESPACE} }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: gateway }} }}\n  action: ALLOW\n  rules:\n\
         \x20 - from: [ {{ requestPrincipals: [\"{ISSUER}/*\"] }} ]\n\
         \x20   to: [ {{ methods: [GET], paths: [\"/accounts/{{request.auth.claims[sub]}}\"] }} ]\n"
    )
}
