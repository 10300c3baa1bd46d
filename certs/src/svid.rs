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

    /// The key as PKCS#8 DER, as the SPIFFE Workload API hands it out: converted if it was
    /// read as SEC1 (EC) or PKCS#1 (RSA).
    pub fn key_pkcs8(&self) -> Result<Vec<u8>, SvidFileError> {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
        };
        let unusable =
            |what: &str| SvidFileError::Key(format!("cannot convert the {what} key to PKCS#8"));
        match &self.key {
            PrivateKeyDer::Pkcs8(k) => Ok(k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Sec1(k) => [
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &ECDSA_P384_SHA384_FIXED_SIGNING,
            ]
            .into_iter()
            .find_map(|alg| EcdsaKeyPair::from_private_key_der(alg, k.secret_sec1_der()).ok())
            .and_then(|pair| pair.to_pkcs8v1().ok())
            .map(|doc| doc.as_ref().to_vec())
            .ok_or_else(|| unusable("SEC1")),
            PrivateKeyDer::Pkcs1(k) => aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der())
                .ok()
                .and_then(|pair| AsDer::<Pkcs8V1Der>::as_der(&pair).ok())
                .map(|der| der.as_ref().to_vec())
                .ok_or_else(|| unusable("PKCS#1")),
            _ => Err(unusable("unknown")),
        }
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use rustls_pki_types::PrivateSec1KeyDer;

    use super::*;
    use crate::ca::{CaOptions, CertificateAuthority};
    use crate::{SpiffeId, TrustDomain};

    #[test]
    fn a_sec1_key_is_handed_out_as_the_same_key_in_pkcs8() {
        let td = TrustDomain::new("example.org").unwrap();
        let ca =
            CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now()).unwrap();
        let id = SpiffeId::new("spiffe://example.org/ns/a/sa/b").unwrap();
        let svid = ca
            .issue(&id, Duration::from_secs(60), SystemTime::now())
            .unwrap();
        let pkcs8 = svid.key_pkcs8().unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8).unwrap();
        let sec1: EcPrivateKeyRfc5915Der = pair.private_key().as_der().unwrap();
        let as_sec1 = Svid::new(
            svid.chain().to_vec(),
            PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(sec1.as_ref().to_vec())),
        )
        .unwrap();
        let converted = as_sec1.key_pkcs8().unwrap();
        let again = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &converted).unwrap();
        assert_eq!(again.public_key().as_ref(), pair.public_key().as_ref());
    }
}
