//! The trust bundle: the set of root certificates a trust domain's SVIDs chain to.
//!
//! A bundle holds one or more roots so that during a root rotation the old and the new root
//! are trusted at once. Roots are checked when they enter (a CA certificate that may sign
//! certificates) and turned into webpki trust anchors once, so verification on the
//! handshake path does no parsing of the bundle.

use std::path::Path;

use rustls_pki_types::{CertificateDer, TrustAnchor};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::id::TrustDomain;
use crate::pem::{self, PemError};

/// Why a certificate cannot be a root of the bundle, or a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("root #{index} is not a valid X.509 certificate: {detail}")]
    Malformed { index: usize, detail: String },
    #[error("root #{index} ({subject}) is not a CA certificate (basicConstraints CA=true)")]
    NotCa { index: usize, subject: String },
    #[error("root #{index} ({subject}) may not sign certificates (keyUsage lacks keyCertSign)")]
    NoCertSign { index: usize, subject: String },
    #[error("the bundle would be empty; a trust bundle needs at least one root")]
    Empty,
}

/// A root of the bundle, with its prepared trust anchor.
/// `certificate #0 (subject) expired at …` → `expired at …` (the caller names the root).
fn strip_index(text: &str) -> &str {
    text.split_once(") ").map_or(text, |(_, rest)| rest)
}

#[derive(Debug, Clone)]
struct Root {
    der: CertificateDer<'static>,
    anchor: TrustAnchor<'static>,
}

/// The roots trusted for one trust domain.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<Root>,
    /// The anchors of `roots`, in order, kept contiguous for webpki.
    anchors: Vec<TrustAnchor<'static>>,
}

/// How long before a root expires it is reported (as the control plane warns for its CA).
pub const ROOT_EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

impl TrustBundle {
    /// What is wrong, or soon will be, with the bundle's roots at `now`: expired or not yet
    /// valid, expiring within [`ROOT_EXPIRY_WARNING`], an unknown critical extension, a key
    /// the mesh does not accept. A chain through such a root is refused (or soon will be);
    /// loading the bundle is still allowed, so that a rotation can replace the root, but
    /// every place that loads one reports these (log, metric, `ward ca status`).
    pub fn root_warnings(&self, now: std::time::SystemTime) -> Vec<String> {
        let unix = now
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let soon = unix.saturating_add(ROOT_EXPIRY_WARNING.as_secs() as i64);
        let mut out = Vec::new();
        for root in &self.roots {
            let Ok((_, cert)) = X509Certificate::from_der(root.der.as_ref()) else {
                continue;
            };
            let name = cert.subject().to_string();
            if let Err(e) = crate::path::check_validity(&cert, 0, unix) {
                out.push(format!("root {name}: {}", strip_index(&e.to_string())));
            } else if cert.validity().not_after.timestamp() < soon {
                out.push(format!(
                    "root {name}: expires at {} (within 30 days)",
                    cert.validity().not_after
                ));
            }
            for check in [
                crate::path::check_critical_extensions(&cert, 0),
                crate::path::check_key(&cert, 0),
            ] {
                if let Err(e) = check {
                    out.push(format!("root {name}: {}", strip_index(&e.to_string())));
                }
            }
        }
        out
    }

    /// A bundle of the given roots. Fails on an empty list or a root that is not a signing CA.
    pub fn new(
        trust_domain: TrustDomain,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, BundleError> {
        let mut bundle = Self {
            trust_domain,
            roots: Vec::new(),
            anchors: Vec::new(),
        };
        for der in roots {
            bundle.add(der)?;
        }
        if bundle.roots.is_empty() {
            return Err(BundleError::Empty);
        }
        Ok(bundle)
    }

    /// Parses the `CERTIFICATE` blocks of a PEM bundle.
    pub fn from_pem(
        trust_domain: TrustDomain,
        pem_bytes: &[u8],
        origin: &Path,
    ) -> Result<Self, BundleError> {
        Self::new(trust_domain, pem::certs_from_pem(pem_bytes, origin)?)
    }

    /// Reads a PEM bundle file.
    pub fn read(trust_domain: TrustDomain, path: &Path) -> Result<Self, BundleError> {
        Self::new(trust_domain, pem::read_certs(path)?)
    }

    /// Adds a root. Adding a root that is already present changes nothing. Returns whether the
    /// bundle changed.
    pub fn add(&mut self, der: CertificateDer<'static>) -> Result<bool, BundleError> {
        if self.contains(&der) {
            return Ok(false);
        }
        let index = self.roots.len();
        check_root(&der, index)?;
        let anchor = webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| BundleError::Malformed {
                index,
                detail: format!("{e:?}"),
            })?
            .to_owned();
        self.anchors.push(anchor.clone());
        self.roots.push(Root { der, anchor });
        Ok(true)
    }

    /// Removes a root. Refuses to remove the last one. Returns whether the bundle changed.
    pub fn remove(&mut self, der: &CertificateDer<'_>) -> Result<bool, BundleError> {
        let Some(pos) = self.roots.iter().position(|r| r.der == *der) else {
            return Ok(false);
        };
        if self.roots.len() == 1 {
            return Err(BundleError::Empty);
        }
        self.roots.remove(pos);
        self.anchors = self.roots.iter().map(|r| r.anchor.clone()).collect();
        Ok(true)
    }

    pub fn contains(&self, der: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.der == *der)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The roots, in the order they were added.
    pub fn roots(&self) -> impl ExactSizeIterator<Item = &CertificateDer<'static>> {
        self.roots.iter().map(|r| &r.der)
    }

    /// The prepared trust anchors, one per root.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The bundle as concatenated PEM blocks.
    pub fn to_pem(&self) -> String {
        pem::certs_to_pem(self.roots())
    }
}

/// A root must be a CA allowed to sign certificates; anything else in a bundle is a mistake
/// that would otherwise surface only as a confusing chain failure later.
fn check_root(der: &CertificateDer<'_>, index: usize) -> Result<(), BundleError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| BundleError::Malformed {
        index,
        detail: e.to_string(),
    })?;
    let subject = cert.subject().to_string();
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(BundleError::NotCa { index, subject });
    }
    let cert_sign = cert
        .key_usage()
        .ok()
        .flatten()
        .is_none_or(|ku| ku.value.key_cert_sign());
    if !cert_sign {
        return Err(BundleError::NoCertSign { index, subject });
    }
    Ok(())
}
