//! Certificates for tests: a real ward CA on disk, good SVIDs from it, and deliberately bad
//! leaves signed by the same CA key, each breaking one rule, so that a refusal can only be
//! for that rule.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use time::OffsetDateTime;
use ward_certs::ca::{self, CaOptions, CertificateAuthority};
use ward_certs::pem::{self, FileMode};
use ward_certs::{Svid, TrustBundle, TrustDomain, parse_spiffe_id, parse_trust_domain};

/// A trust domain's CA in a temporary directory, as `ward ca init` lays it out.
pub struct TestPki {
    dir: TempDir,
    pub trust_domain: TrustDomain,
    pub ca: CertificateAuthority,
    /// The same CA key and name, loaded into rcgen to sign crafted leaves.
    issuer: Issuer<'static, KeyPair>,
    /// With an intermediate: the root's key and name, to sign a CA beside the intermediate.
    root_issuer: Option<Issuer<'static, KeyPair>>,
}

impl TestPki {
    pub fn new(trust_domain: &str) -> Self {
        Self::create(trust_domain, false)
    }

    /// A CA that signs through an intermediate.
    pub fn with_intermediate(trust_domain: &str) -> Self {
        Self::create(trust_domain, true)
    }

    fn create(trust_domain: &str, intermediate: bool) -> Self {
        crate::init();
        let td = parse_trust_domain(trust_domain).expect("test trust domain");
        let options = CaOptions {
            ttl: Duration::from_secs(24 * 3600),
            intermediate,
        };
        let ca = CertificateAuthority::create(td.clone(), &options, SystemTime::now())
            .expect("create CA");
        let dir = tempfile::tempdir().expect("temp dir");
        ca.save(&dir.path().join("ca"), false).expect("save CA");
        let ca_dir = dir.path().join("ca");
        let key = KeyPair::from_pem(
            &std::fs::read_to_string(ca_dir.join(ca::CA_KEY_FILE)).expect("read ca.key"),
        )
        .expect("parse ca.key");
        let issuer = Issuer::from_ca_cert_der(&ca.chain()[0], key).expect("load CA into rcgen");
        let root_issuer = intermediate.then(|| {
            let pem = std::fs::read_to_string(ca_dir.join(ca::ROOT_KEY_FILE)).expect("root.key");
            let key = KeyPair::from_pem(&pem).expect("parse root.key");
            let root = ca.chain().last().expect("root");
            Issuer::from_ca_cert_der(root, key).expect("load root into rcgen")
        });
        Self {
            dir,
            trust_domain: td,
            ca,
            issuer,
            root_issuer,
        }
    }

    /// A scratch directory for the test's files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    pub fn bundle_path(&self) -> PathBuf {
        self.ca_dir().join(ca::BUNDLE_FILE)
    }

    pub fn bundle(&self) -> TrustBundle {
        self.ca.bundle().expect("bundle")
    }

    /// The SPIFFE ID `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn id(&self, ns: &str, sa: &str) -> String {
        format!("spiffe://{}/ns/{ns}/sa/{sa}", self.trust_domain)
    }

    /// A good SVID from ward's own CA code.
    pub fn svid(&self, id: &str) -> Svid {
        self.svid_ttl(id, Duration::from_secs(3600))
    }

    pub fn svid_ttl(&self, id: &str, ttl: Duration) -> Svid {
        let id = parse_spiffe_id(id).expect("test SPIFFE ID");
        self.ca
            .issue(&id, ttl, SystemTime::now())
            .expect("issue SVID")
    }

    /// A leaf built to `spec`, signed by this CA's key; the chain includes any intermediate.
    pub fn craft(&self, spec: &LeafSpec) -> Crafted {
        let (leaf, key) = sign(spec, &self.issuer);
        let mut chain = vec![leaf];
        chain.extend(self.ca_intermediates());
        Crafted { chain, key }
    }

    /// A signing certificate under this CA, built to `spec` (set `is_ca` and `key_usages` to
    /// make a good or a bad one), for chains that go through it.
    pub fn signer(&self, spec: &LeafSpec) -> Signer {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = params(spec);
        let cert = params.signed_by(&key, &self.issuer).expect("sign signer");
        Signer {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            under_root: false,
        }
    }

    /// A signing certificate directly under the root (a CA made `with_intermediate`, whose
    /// root allows one CA below it), for chains leaf → signer → root.
    pub fn root_signer(&self, spec: &LeafSpec) -> Signer {
        let root = self
            .root_issuer
            .as_ref()
            .expect("root_signer needs TestPki::with_intermediate");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = params(spec);
        let cert = params.signed_by(&key, root).expect("sign signer");
        Signer {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            under_root: true,
        }
    }

    /// A leaf built to `spec` and signed by `signer`; the chain is leaf, signer, then any
    /// intermediate of the CA the signer sits under.
    pub fn craft_under(&self, spec: &LeafSpec, signer: &Signer) -> Crafted {
        let (leaf, key) = sign(spec, &signer.issuer);
        let mut chain = vec![leaf, signer.cert.clone()];
        if !signer.under_root {
            chain.extend(self.ca_intermediates());
        }
        Crafted { chain, key }
    }

    fn ca_intermediates(&self) -> Vec<CertificateDer<'static>> {
        self.ca.chain()[..self.ca.chain().len() - 1].to_vec()
    }

    /// Writes a chain as `<name>.pem` in the scratch directory.
    pub fn write_chain(&self, name: &str, chain: &[CertificateDer<'_>]) -> PathBuf {
        let path = self.dir().join(format!("{name}.pem"));
        pem::write_atomic(&path, pem::certs_to_pem(chain).as_bytes(), FileMode::Public)
            .expect("write chain");
        path
    }
}

fn params(spec: &LeafSpec) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = spec
        .uris
        .iter()
        .map(|u| SanType::URI(u.as_str().try_into().expect("ia5 URI")))
        .chain(
            spec.dns
                .iter()
                .map(|d| SanType::DnsName(d.as_str().try_into().expect("ia5 DNS"))),
        )
        .collect();
    params.is_ca = if spec.is_ca {
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = spec.key_usages.clone();
    params.extended_key_usages = spec.extended_key_usages.clone();
    params.use_authority_key_identifier_extension = true;
    params.not_before = OffsetDateTime::from(spec.not_before);
    params.not_after = OffsetDateTime::from(spec.not_after);
    params
}

fn sign(
    spec: &LeafSpec,
    issuer: &Issuer<'static, KeyPair>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params(spec).signed_by(&key, issuer).expect("sign leaf");
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), key_der)
}

/// A crafted signing certificate and its key.
pub struct Signer {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    under_root: bool,
}

/// The shape of a crafted leaf. [`LeafSpec::svid`] is a valid SVID; tests change one field.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub is_ca: bool,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafSpec {
    pub fn svid(id: &str) -> Self {
        let now = SystemTime::now();
        Self {
            uris: vec![id.to_owned()],
            dns: Vec::new(),
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            extended_key_usages: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(3600),
        }
    }
}

/// A crafted certificate chain and its key.
pub struct Crafted {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Crafted {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// The bad certificates every verifier must refuse, each with the text its refusal must
/// contain. Signed by `pki`'s CA unless the case is about the CA; `foreign` is another CA.
pub fn bad_leaves(pki: &TestPki, foreign: &TestPki) -> Vec<(&'static str, Crafted, &'static str)> {
    let id = pki.id("default", "client");
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let with = |f: &dyn Fn(&mut LeafSpec)| {
        let mut spec = LeafSpec::svid(&id);
        f(&mut spec);
        spec
    };
    vec![
        (
            "foreign CA",
            foreign.craft(&LeafSpec::svid(&id)),
            "does not lead to a root in the trust bundle",
        ),
        (
            "expired leaf",
            pki.craft(&with(&|s| {
                s.not_before = now - 2 * hour;
                s.not_after = now - hour;
            })),
            "expired at",
        ),
        (
            "not-yet-valid leaf",
            pki.craft(&with(&|s| {
                s.not_before = now + hour;
                s.not_after = now + 2 * hour;
            })),
            "is not valid before",
        ),
        (
            "two URI SANs",
            pki.craft(&with(&|s| s.uris.push(pki.id("default", "other")))),
            "leaf has 2 URI SANs",
        ),
        (
            "only a DNS SAN",
            pki.craft(&with(&|s| {
                s.uris.clear();
                s.dns.push("client.example.org".into());
            })),
            "leaf has no URI SAN",
        ),
        (
            "CA=true leaf",
            pki.craft(&with(&|s| {
                s.is_ca = true;
            })),
            "leaf is a CA certificate",
        ),
        (
            "wrong trust domain",
            pki.craft(&with(&|s| {
                s.uris = vec!["spiffe://other.example/ns/default/sa/client".into()]
            })),
            "is not in trust domain",
        ),
    ]
}

/// A CA built to order with rcgen — any validity, path length, EKU or extra extension —
/// for the certificate-path cases a careful validator must refuse or accept.
pub struct CustomCa {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The certificates between this CA and its root (nearest first), for chains.
    above: Vec<CertificateDer<'static>>,
}

/// The shape of a [`CustomCa`].
#[derive(Clone)]
pub struct CaSpec {
    /// `spiffe://td` as its URI SAN.
    pub trust_domain: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// `None`: no pathLenConstraint.
    pub path_len: Option<u8>,
    pub extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub extensions: Vec<rcgen::CustomExtension>,
    pub name: String,
}

impl CaSpec {
    pub fn new(trust_domain: &str, name: &str) -> Self {
        let now = SystemTime::now();
        Self {
            trust_domain: trust_domain.to_owned(),
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(24 * 3600),
            path_len: None,
            extended_key_usages: Vec::new(),
            extensions: Vec::new(),
            name: name.to_owned(),
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.name.clone());
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{}", self.trust_domain)
                .try_into()
                .expect("URI SAN"),
        )];
        params.is_ca = IsCa::Ca(match self.path_len {
            Some(n) => rcgen::BasicConstraints::Constrained(n),
            None => rcgen::BasicConstraints::Unconstrained,
        });
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.extended_key_usages = self.extended_key_usages.clone();
        params.custom_extensions = self.extensions.clone();
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
        params
    }
}

impl CustomCa {
    /// A self-signed root.
    pub fn root(spec: &CaSpec) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = spec.params();
        let cert = params.self_signed(&key).expect("self-sign root");
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            above: Vec::new(),
        }
    }

    /// A CA signed by this one.
    pub fn sub(&self, spec: &CaSpec) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let params = spec.params();
        let cert = params.signed_by(&key, &self.issuer).expect("sign sub-CA");
        let mut above = vec![self.cert.clone()];
        above.extend(self.above.iter().cloned());
        Self {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
            above,
        }
    }

    /// A leaf built to `spec` under this CA; the chain holds the leaf and every CA between
    /// it and the root (not the root).
    pub fn leaf(&self, spec: &LeafSpec) -> Crafted {
        let (leaf, key) = sign(spec, &self.issuer);
        let mut chain = vec![leaf];
        if !self.above.is_empty() {
            chain.push(self.cert.clone());
            chain.extend(self.above[..self.above.len() - 1].iter().cloned());
        }
        Crafted { chain, key }
    }
}

/// A nameConstraints extension with URI subtrees (rcgen has no URI form), critical.
pub fn uri_name_constraints(permitted: &[&str], excluded: &[&str]) -> rcgen::CustomExtension {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 128 {
            out.push(len as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }
    let subtrees = |uris: &[&str]| -> Vec<u8> {
        uris.iter()
            .flat_map(|u| der(0x30, &der(0x86, u.as_bytes())))
            .collect()
    };
    let mut body = Vec::new();
    if !permitted.is_empty() {
        body.extend(der(0xa0, &subtrees(permitted)));
    }
    if !excluded.is_empty() {
        body.extend(der(0xa1, &subtrees(excluded)));
    }
    let mut ext = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], der(0x30, &body));
    ext.set_criticality(true);
    ext
}

/// A leaf followed by `n` CA certificates that all have one name and one key, so each one
/// verifies as the issuer of every other: the shape that makes a naive path search try
/// every ordering of them.
pub fn tangled_chain(leaf: &LeafSpec, n: usize) -> Vec<CertificateDer<'static>> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let spec = CaSpec::new("example.org", "tangle");
    let mut chain = Vec::with_capacity(n + 1);
    let issuer = Issuer::new(
        spec.params(),
        KeyPair::from_pem(&key.serialize_pem()).expect("key"),
    );
    chain.push(sign(leaf, &issuer).0);
    for _ in 0..n {
        chain.push(spec.params().self_signed(&key).expect("sign").der().clone());
    }
    chain
}
