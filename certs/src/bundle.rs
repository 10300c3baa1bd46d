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

impl TrustBundle {
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
