//! The certificate authority: creates a trust domain's root (and optionally an intermediate),
//! keeps it on disk, and signs workload SVIDs.
//!
//! The CA signs exactly the SPIFFE ID its caller authorizes. Whatever a CSR asks for in its
//! subject or SANs is ignored; only the CSR's public key (after its self-signature and key
//! strength are checked) goes into the certificate. Leaves are short-lived, backdated by a
//! small clock-skew allowance, and never outlive the certificate that signs them.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509CertificationRequest};
use x509_parser::public_key::PublicKey;

use crate::bundle::{BundleError, TrustBundle};
use crate::id::{SpiffeId, TrustDomain, parse_trust_domain};
use crate::pem::{self, FileMode, PemError};
use crate::svid::Svid;
use crate::verify::{CertInfo, SvidError};

/// How far back a certificate's notBefore is set, so that a peer whose clock runs a little
/// behind ours still accepts a certificate issued a moment ago (leaves: at most a tenth of
/// their lifetime).
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Default lifetime of a root (and intermediate): one year.
pub const DEFAULT_CA_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of a workload SVID.
pub const DEFAULT_SVID_TTL: Duration = Duration::from_secs(24 * 3600);
/// Smallest RSA modulus accepted in a CSR.
pub const MIN_RSA_BITS: usize = 2048;

/// File names inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const BUNDLE_FILE: &str = "bundle.pem";
/// The root's key when the CA signs through an intermediate; it can be moved offline.
pub const ROOT_KEY_FILE: &str = "root.key";

/// What went wrong creating, loading or using the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path} already exists; pass --force to replace the CA")]
    Exists { path: PathBuf },
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("{path}: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    CsrMalformed(String),
    #[error("CSR signature does not verify (the requester does not hold the key)")]
    CsrSignature,
    #[error("CSR is signed with SHA-1, which is not accepted")]
    CsrWeakSignature,
    #[error("CSR key is too weak: RSA {bits} bits (minimum {MIN_RSA_BITS})")]
    WeakKey { bits: usize },
    #[error("CSR key uses an unsupported elliptic curve{}", .0.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    UnsupportedCurve(Option<String>),
    #[error(
        "CSR key algorithm {0} is not supported (use ECDSA P-256/P-384, Ed25519 or RSA >= 2048)"
    )]
    UnsupportedKey(String),
    #[error("{id} is not in this CA's trust domain {trust_domain}")]
    ForeignIdentity { id: String, trust_domain: String },
    #[error("{id} has no path; only workload IDs (spiffe://td/...) are issued")]
    IdWithoutPath { id: String },
    #[error("the CA certificate expired at {not_after:?}; rotate the CA")]
    CaExpired { not_after: SystemTime },
    #[error("lifetime must be at least one second")]
    ZeroTtl,
    #[error("signing failed: {0}")]
    Signing(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Signing(e.to_string())
    }
}

/// Options for a new CA.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub ttl: Duration,
    /// Sign workload certificates with an intermediate instead of the root.
    pub intermediate: bool,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_CA_TTL,
            intermediate: false,
        }
    }
}

/// A private key in PKCS#8 PEM form that never prints itself.
struct SecretPem(String);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A trust domain's signing authority.
pub struct CertificateAuthority {
    trust_domain: TrustDomain,
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate first, up to and including the root.
    chain: Vec<CertificateDer<'static>>,
    /// The earliest notAfter along `chain`: no leaf may outlive it.
    not_after: SystemTime,
    key_pem: SecretPem,
    /// Present only for a freshly created CA that signs through an intermediate.
    root_key_pem: Option<SecretPem>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("key", &self.key_pem)
            .finish()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed root for `trust_domain` (and an intermediate under it if
    /// asked): ECDSA P-256, CA=true with a path length constraint, keyCertSign + cRLSign, and
    /// the trust domain's SPIFFE ID (`spiffe://td`, no path) as its URI SAN.
    pub fn create(
        trust_domain: TrustDomain,
        options: &CaOptions,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        if options.ttl < Duration::from_secs(1) {
            return Err(CaError::ZeroTtl);
        }
        let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
        let not_after = now + options.ttl;
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let root_path_len = if options.intermediate { 1 } else { 0 };
        let root_params = ca_params(
            &trust_domain,
            "ward root CA",
            root_path_len,
            not_before,
            not_after,
        )?;
        let root_cert = root_params.self_signed(&root_key)?;
        let root_der = root_cert.der().clone();

        if !options.intermediate {
            let key_pem = SecretPem(root_key.serialize_pem());
            return Ok(Self {
                trust_domain,
                issuer: Issuer::new(root_params, root_key),
                chain: vec![root_der],
                not_after: truncate(not_after),
                key_pem,
                root_key_pem: None,
            });
        }

        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let int_params = ca_params(
            &trust_domain,
            "ward intermediate CA",
            0,
            not_before,
            not_after,
        )?;
        let root_issuer = Issuer::new(root_params, root_key);
        let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
        Ok(Self {
            trust_domain,
            key_pem: SecretPem(int_key.serialize_pem()),
            root_key_pem: Some(SecretPem(root_issuer.key().serialize_pem())),
            issuer: Issuer::new(int_params, int_key),
            chain: vec![int_cert.der().clone(), root_der],
            not_after: truncate(not_after),
        })
    }

    /// Writes `ca.pem` (signing chain), `ca.key` (0600), `bundle.pem` (the root) and, for an
    /// intermediate CA, `root.key` (0600) into `dir`, creating it (0700) if needed. Refuses to
    /// replace an existing CA unless `force`.
    pub fn save(&self, dir: &Path, force: bool) -> Result<(), CaError> {
        let files = [CA_CERT_FILE, CA_KEY_FILE, BUNDLE_FILE, ROOT_KEY_FILE];
        if let Some(existing) = files
            .iter()
            .map(|f| dir.join(f))
            .find(|p| !force && p.exists())
        {
            return Err(CaError::Exists { path: existing });
        }
        create_private_dir(dir)?;
        if let Some(root_key) = &self.root_key_pem {
            pem::write_atomic(
                &dir.join(ROOT_KEY_FILE),
                root_key.0.as_bytes(),
                FileMode::Secret,
            )?;
        } else if force {
            // A replaced intermediate CA must not leave its old root key behind.
            let stale = dir.join(ROOT_KEY_FILE);
            if stale.exists() {
                fs::remove_file(&stale).map_err(|source| PemError::Io {
                    path: stale,
                    source,
                })?;
            }
        }
        pem::write_atomic(
            &dir.join(CA_KEY_FILE),
            self.key_pem.0.as_bytes(),
            FileMode::Secret,
        )?;
        pem::write_atomic(
            &dir.join(CA_CERT_FILE),
            pem::certs_to_pem(&self.chain).as_bytes(),
            FileMode::Public,
        )?;
        pem::write_atomic(
            &dir.join(BUNDLE_FILE),
            self.bundle()?.to_pem().as_bytes(),
            FileMode::Public,
        )?;
        Ok(())
    }

    /// Loads the CA from `dir/ca.pem` and `dir/ca.key`, checking that the key belongs to the
    /// signing certificate and that the certificate may sign.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let chain = pem::read_certs(&cert_path)?;
        let key_pem = fs::read_to_string(&key_path).map_err(|source| PemError::Io {
            path: key_path.clone(),
            source,
        })?;
        let bad = |path: &Path, detail: String| CaError::BadCa {
            path: path.to_owned(),
            detail,
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad(&key_path, format!("not a usable private key ({e})")))?;

        let signing = CertInfo::parse(&chain[0]).map_err(|e| bad(&cert_path, e.to_string()))?;
        if !signing.is_ca {
            return Err(bad(&cert_path, "first certificate is not a CA".into()));
        }
        let trust_domain = signing
            .uri_sans
            .iter()
            .find_map(|u| parse_trust_domain(u).ok())
            .ok_or_else(|| {
                bad(
                    &cert_path,
                    "signing certificate has no spiffe://<trust-domain> URI SAN".into(),
                )
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(chain[0].as_ref())
            .map_err(|e| bad(&cert_path, e.to_string()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad(
                &key_path,
                format!("key does not belong to the certificate in {CA_CERT_FILE}"),
            ));
        }
        let mut not_after = signing.not_after;
        for der in &chain[1..] {
            let info = CertInfo::parse(der).map_err(|e| bad(&cert_path, e.to_string()))?;
            not_after = not_after.min(info.not_after);
        }
        let issuer =
            Issuer::from_ca_cert_der(&chain[0], key).map_err(|e| bad(&cert_path, e.to_string()))?;
        if !issuer.key_usages().is_empty()
            && !issuer.key_usages().contains(&KeyUsagePurpose::KeyCertSign)
        {
            return Err(bad(&cert_path, "keyUsage lacks keyCertSign".into()));
        }
        Ok(Self {
            trust_domain,
            issuer,
            chain,
            not_after,
            key_pem: SecretPem(key_pem),
            root_key_pem: None,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificate (last of the signing chain).
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.chain[self.chain.len() - 1]
    }

    /// The certificate that signs leaves, then its issuers up to the root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The CA's earliest expiry along the chain.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A 32-byte secret derived from this CA's signing key for `purpose` (HKDF-SHA256): the
    /// same on every control-plane replica holding this CA, different for every purpose and
    /// every CA, and telling nothing about the CA key. The JWT-SVID signing key is made
    /// from it, so it needs no storage of its own and rotates with the CA.
    pub fn derive_secret(&self, purpose: &[u8]) -> [u8; 32] {
        use aws_lc_rs::hkdf;
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ward: a key derived from the CA key");
        let prk = salt.extract(self.key_pem.0.as_bytes());
        let mut out = [0u8; 32];
        // Infallible for a 32-byte output of SHA-256 HKDF (at most 255 blocks).
        if let Ok(okm) = prk.expand(&[purpose], hkdf::HKDF_SHA256) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    /// A bundle holding this CA's root.
    pub fn bundle(&self) -> Result<TrustBundle, BundleError> {
        TrustBundle::new(self.trust_domain.clone(), [self.root().clone()])
    }

    /// Signs a PKCS#10 CSR into a leaf SVID for `id`, which the caller has authorized.
    /// Returns the chain to serve: the leaf, then any intermediate (never the root).
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let public_key = checked_csr_key(csr_der)?;
        self.sign_leaf(&public_key, id, ttl, now)
    }

    /// Generates a fresh P-256 key and an SVID for `id`.
    pub fn issue(&self, id: &SpiffeId, ttl: Duration, now: SystemTime) -> Result<Svid, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let chain = self.sign_leaf(&key, id, ttl, now)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Svid::new(chain, key_der).map_err(|e: SvidError| CaError::Signing(e.to_string()))
    }

    fn sign_leaf(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if !id.is_member_of(&self.trust_domain) {
            return Err(CaError::ForeignIdentity {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        if id.path().is_empty() {
            return Err(CaError::IdWithoutPath { id: id.to_string() });
        }
        if ttl < Duration::from_secs(1) {
            return Err(CaError::ZeroTtl);
        }
        if now >= self.not_after {
            return Err(CaError::CaExpired {
                not_after: self.not_after,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names =
            vec![SanType::URI(id.to_string().try_into().map_err(
                |e: rcgen::Error| CaError::Signing(e.to_string()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        // Backdate by the skew allowance, but by no more than a tenth of the lifetime: a
        // 20 s SVID backdated by 5 minutes would be past half-life (renewal time) at birth.
        let skew = CLOCK_SKEW.min(ttl / 10);
        params.not_before = to_offset(now.checked_sub(skew).unwrap_or(now));
        params.not_after = to_offset((now + ttl).min(self.not_after));
        params.serial_number = Some(random_serial()?);
        let leaf = params.signed_by(public_key, &self.issuer)?;

        let mut chain = Vec::with_capacity(self.chain.len());
        chain.push(leaf.der().clone());
        // Serve the intermediates, not the root: the peer has the root in its bundle.
        chain.extend(self.chain[..self.chain.len() - 1].iter().cloned());
        Ok(chain)
    }
}

fn ca_params(
    trust_domain: &TrustDomain,
    common_name: &str,
    path_len: u8,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let serial = random_serial()?;
    // A per-CA suffix keeps the names of successive roots (rotation) and of unrelated CAs of
    // one trust domain apart, so path building never confuses one root for another.
    let tag: String = serial.to_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain.as_str());
    dn.push(DnType::CommonName, format!("{common_name} {tag}"));
    params.distinguished_name = dn;
    params.subject_alt_names =
        vec![SanType::URI(trust_domain.id_string().try_into().map_err(
            |e: rcgen::Error| CaError::Signing(e.to_string()),
        )?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_after);
    params.serial_number = Some(serial);
    Ok(params)
}

/// Parses a CSR, refuses weak or unknown keys and SHA-1 signatures, and verifies its
/// self-signature (proof that the requester holds the private key). Everything else the CSR
/// says is ignored.
fn checked_csr_key(csr_der: &[u8]) -> Result<SubjectPublicKeyInfo, CaError> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| CaError::CsrMalformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::CsrMalformed(
            "trailing bytes after the request".into(),
        ));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => {}
            other => return Err(CaError::UnsupportedCurve(other.map(|c| c.to_id_string()))),
        }
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if rsa.key_size() >= MIN_RSA_BITS => {}
            Ok(PublicKey::RSA(rsa)) => {
                return Err(CaError::WeakKey {
                    bits: rsa.key_size(),
                });
            }
            _ => return Err(CaError::CsrMalformed("unreadable RSA public key".into())),
        }
    } else if *alg != OID_SIG_ED25519 {
        return Err(CaError::UnsupportedKey(alg.to_id_string()));
    }
    let sig_alg = &csr.signature_algorithm.algorithm;
    if *sig_alg == OID_PKCS1_SHA1WITHRSA || *sig_alg == OID_SHA1_WITH_RSA {
        return Err(CaError::CsrWeakSignature);
    }
    csr.verify_signature().map_err(|_| CaError::CsrSignature)?;
    SubjectPublicKeyInfo::from_der(spki.raw).map_err(|e| CaError::UnsupportedKey(e.to_string()))
}

/// The URI SANs a CSR asks for. The CA never signs them as such (it signs the identity its
/// caller authorizes); the control plane uses them to refuse a request whose stated
/// identity differs from the attested one.
pub fn csr_requested_uris(csr_der: &[u8]) -> Result<Vec<String>, CaError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| CaError::CsrMalformed(e.to_string()))?;
    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push((*uri).to_owned());
                }
            }
        }
    }
    Ok(uris)
}

/// A random positive serial of 128 bits (RFC 5280 allows up to 20 octets; CA/B asks for at
/// least 64 bits of randomness).
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CaError::Signing("no randomness".into()))?;
    // Clear the sign bit (serials are positive) and set the next one so the DER integer
    // keeps all 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn truncate(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn to_offset(t: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from(truncate(t))
}

fn create_private_dir(dir: &Path) -> Result<(), PemError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PemError::Io {
            path: dir.to_owned(),
            source,
        })
}

mod server;

#[cfg(test)]
mod tests;
