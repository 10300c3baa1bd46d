//! An X.509-SVID held by a workload: its certificate chain and private key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::id::SpiffeId;
use crate::pem::{self, FileMode, PemError};
use crate::verify::{CertInfo, SvidError, spiffe_id_of};

/// An SVID that could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum SvidFileError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("{path}: {source}")]
    NotSvid {
        path: String,
        #[source]
        source: SvidError,
    },
    #[error("private key cannot be used for TLS: {0}")]
    Key(String),
}

/// A certificate chain (leaf first, then intermediates; never the root) and its private key.
pub struct Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Clone for Svid {
    fn clone(&self) -> Self {
        Self {
            spiffe_id: self.spiffe_id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// A fresh ECDSA P-256 key (PKCS#8) and a CSR for it, as a proxy makes for every renewal:
/// the key never leaves the process. The CSR names `id` as its URI SAN, which the control
/// plane checks against what the caller proved.
pub fn new_key_and_csr(
    id: Option<&SpiffeId>,
) -> Result<(PrivateKeyDer<'static>, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = id {
        params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into()?)];
    }
    let csr = params.serialize_request(&key)?;
    let key_der = PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        key.serialize_der(),
    ));
    Ok((key_der, csr.der().to_vec()))
}

impl Svid {
    /// Assembles an SVID; the SPIFFE ID is read from the leaf's URI SAN.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, SvidError> {
        let leaf = chain.first().ok_or(SvidError::EmptyChain)?;
        let spiffe_id = spiffe_id_of(leaf)?;
        Ok(Self {
            spiffe_id,
            chain,
            key,
        })
    }

    /// Reads an SVID from a PEM chain file and a PEM key file.
    pub fn read(cert_path: &Path, key_path: &Path) -> Result<Self, SvidFileError> {
        let chain = pem::read_certs(cert_path)?;
        let key = pem::read_key(key_path)?;
        Self::new(chain, key).map_err(|source| SvidFileError::NotSvid {
            path: cert_path.display().to_string(),
            source,
        })
    }

    /// Writes the chain (public) and the key (mode 0600), each atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PemError> {
        pem::write_atomic(key_path, self.key_pem().as_bytes(), FileMode::Secret)?;
        pem::write_atomic(
            cert_path,
            pem::certs_to_pem(&self.chain).as_bytes(),
            FileMode::Public,
        )
    }

    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// Serial, validity and names of the leaf.
    pub fn leaf_info(&self) -> Result<CertInfo, SvidError> {
        CertInfo::parse(self.leaf())
    }

    /// The chain and key loaded for rustls signing.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, SvidFileError> {
        let provider = crate::crypto::provider();
        let key = CertifiedKey::from_der(self.chain.clone(), self.key.clone_key(), &provider)
            .map_err(|e| SvidFileError::Key(e.to_string()))?;
        Ok(Arc::new(key))
    }

    /// The key as PEM, for those it is handed to (a file of mode 0600, Envoy over SDS).
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::pem_block(label, self.key.secret_der())
    }
}
