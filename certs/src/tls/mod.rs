//! rustls configurations for mesh traffic: mutual TLS 1.3 where both sides prove a SPIFFE
//! identity from the trust bundle.
//!
//! The served SVID and the trust bundle sit behind `ArcSwap`s that the configs read on every
//! handshake, so a renewal or a root rotation is one atomic pointer swap: listeners and
//! connection pools are never rebuilt and open connections are untouched. Peers are verified
//! by [`verify_svid`] — chain to the bundle plus the SPIFFE ID — never by DNS name.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::TrustBundle;
use crate::id::{SpiffeId, TrustDomain};
use crate::svid::{Svid, SvidFileError};
use crate::verified::VerifiedChains;
use crate::verify::{Purpose, SvidError, spiffe_id_of, verify_with_window};

mod sessions;

use self::sessions::{TrustBoundSessions, client_session_cache, server_session_cache};
pub use crate::crypto::{install_default_provider, provider, signature_algorithms};

/// The SVID this process presents, swappable while listeners run.
pub struct SvidResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidResolver")
    }
}

impl SvidResolver {
    pub fn new(svid: &Svid) -> Result<Arc<Self>, SvidFileError> {
        Ok(Arc::new(Self {
            current: ArcSwap::new(svid.certified_key()?),
        }))
    }

    /// Serves `svid` from the next handshake on.
    pub fn swap(&self, svid: &Svid) -> Result<(), SvidFileError> {
        self.current.store(svid.certified_key()?);
        Ok(())
    }

    /// The certificate chain served now.
    pub fn current_chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for SvidResolver {
    /// The SVID, if the client can verify a TLS 1.3 signature made with its key. Deciding
    /// here, before ServerHello, makes a client with no usable signature scheme get a
    /// plaintext alert at once (rustls sends `access_denied` for "no certificate"); left to
    /// rustls, the mismatch is only found at CertificateVerify, after ServerHello.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.load_full();
        let usable: Vec<SignatureScheme> = hello
            .signature_schemes()
            .iter()
            .copied()
            .filter(|s| tls13_signature_scheme(*s))
            .collect();
        current
            .key
            .choose_scheme(&usable)
            .is_some()
            .then_some(current)
    }
}

/// Signature schemes TLS 1.3 allows in CertificateVerify (RFC 8446 §4.2.3): no RSA
/// PKCS#1 v1.5, no SHA-1, no DSA.
fn tls13_signature_scheme(scheme: SignatureScheme) -> bool {
    matches!(
        scheme,
        SignatureScheme::ECDSA_NISTP256_SHA256
            | SignatureScheme::ECDSA_NISTP384_SHA384
            | SignatureScheme::ECDSA_NISTP521_SHA512
            | SignatureScheme::RSA_PSS_SHA256
            | SignatureScheme::RSA_PSS_SHA384
            | SignatureScheme::RSA_PSS_SHA512
            | SignatureScheme::ED25519
            | SignatureScheme::ED448
    )
}

impl ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The trust bundle in force, swappable while listeners run.
pub struct BundleStore {
    current: ArcSwap<Trust>,
    /// Bumped on every swap; TLS session caches compare it to forget sessions verified
    /// under an older bundle.
    generation: AtomicU64,
}

/// A bundle and the chains verified under it; they are swapped together, so a new bundle
/// starts with an empty memo.
struct Trust {
    bundle: Arc<TrustBundle>,
    /// Foreign trust domains' bundles (SPIFFE federation), by trust domain name: a peer of
    /// one of them is verified against its own domain's roots.
    federated: Arc<Federation>,
    verified: VerifiedChains,
}

/// Bundles of federated trust domains, by trust domain name.
pub type Federation = std::collections::BTreeMap<String, TrustBundle>;

impl Trust {
    fn new(bundle: Arc<TrustBundle>, federated: Arc<Federation>) -> Self {
        Self {
            bundle,
            federated,
            verified: VerifiedChains::default(),
        }
    }

    /// The bundle a chain whose leaf is `leaf` must chain to: its trust domain's, if that
    /// is a federated one, else ours (which then refuses a foreign leaf).
    fn bundle_for(&self, leaf: &CertificateDer<'_>) -> &TrustBundle {
        if !self.federated.is_empty()
            && let Ok(id) = crate::verify::spiffe_id_of(leaf)
            && let Some(foreign) = self.federated.get(&id.trust_domain().to_string())
            && foreign.trust_domain() != self.bundle.trust_domain()
        {
            return foreign;
        }
        &self.bundle
    }
}

impl fmt::Debug for BundleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bundle = &self.current.load().bundle;
        f.debug_struct("BundleStore")
            .field("trust_domain", bundle.trust_domain())
            .field("roots", &bundle.roots().len())
            .finish()
    }
}

impl BundleStore {
    pub fn new(bundle: TrustBundle) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(Trust::new(Arc::new(bundle), Arc::default())),
            generation: AtomicU64::new(0),
        })
    }

    /// Trusts `bundle` from the next handshake on. Sessions established under the old bundle
    /// are no longer resumed (see [`TrustBoundSessions`]).
    pub fn swap(&self, bundle: TrustBundle) {
        let bundle = Arc::new(bundle);
        // Read-copy-update: a federation swap at the same moment is not lost.
        self.current
            .rcu(|t| Trust::new(bundle.clone(), t.federated.clone()));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Trusts peers of these federated trust domains (each by its own roots) from the next
    /// handshake on, in place of the earlier set.
    pub fn swap_federated(&self, federated: Federation) {
        let federated = Arc::new(federated);
        self.current
            .rcu(|t| Trust::new(t.bundle.clone(), federated.clone()));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The federated trust domains' bundles in force.
    pub fn federated(&self) -> Arc<Federation> {
        self.current.load().federated.clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<TrustBundle> {
        self.current.load().bundle.clone()
    }

    /// Verifies a peer's chain against the bundle in force, as [`crate::verify_svid`] does,
    /// answering from the memo of chains already verified under this bundle when it can.
    pub fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        purpose: Purpose,
    ) -> Result<SpiffeId, SvidError> {
        let trust = self.current.load();
        let key = VerifiedChains::key(leaf, intermediates, purpose);
        if let Some(id) = trust.verified.get(&key, now) {
            return Ok(id);
        }
        let bundle = trust.bundle_for(leaf);
        let verified = verify_with_window(leaf, intermediates, bundle, now, purpose)?;
        trust.verified.insert(
            key,
            verified.id.clone(),
            verified.not_before,
            verified.not_after,
            now,
        );
        Ok(verified.id)
    }
}

/// Which server identities a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// Exactly this SPIFFE ID.
    Exact(SpiffeId),
    /// Any one of these.
    OneOf(BTreeSet<SpiffeId>),
    /// Any SVID of the bundle's trust domain.
    AnyInTrustDomain,
}

impl ExpectedPeer {
    fn check(&self, found: &SpiffeId, own: &TrustDomain) -> Result<(), SvidError> {
        let ok = match self {
            ExpectedPeer::Exact(id) => id == found,
            ExpectedPeer::OneOf(ids) => ids.contains(found),
            // Not a federated domain's: "any" means any of ours.
            ExpectedPeer::AnyInTrustDomain => found.is_member_of(own),
        };
        if ok {
            Ok(())
        } else {
            Err(SvidError::UnexpectedPeer {
                found: found.to_string(),
                expected: self.to_string(),
            })
        }
    }
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedPeer::Exact(id) => write!(f, "{id}"),
            ExpectedPeer::OneOf(ids) => {
                let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
                write!(f, "one of [{}]", list.join(", "))
            }
            ExpectedPeer::AnyInTrustDomain => f.write_str("any identity of the trust domain"),
        }
    }
}

/// An SVID refusal carried through rustls. rustls prints the inner error with `Debug`, so
/// `Debug` here is the rule's sentence: that is what ends up in logs and error chains.
pub struct BrokenRule(pub SvidError);

impl fmt::Debug for BrokenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for BrokenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BrokenRule {}

fn rustls_error(e: SvidError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(BrokenRule(e)))))
}

/// Verifies client SVIDs against the current bundle; a client certificate is mandatory
/// unless `optional` (the control plane, whose first callers attest with a token).
#[derive(Debug)]
struct ClientSvidVerifier {
    bundle: Arc<BundleStore>,
    algorithms: WebPkiSupportedAlgorithms,
    optional: bool,
}

impl ClientCertVerifier for ClientSvidVerifier {
    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SPIFFE peers pick their SVID by identity, not by CA name; sending none also keeps
        // the bundle's subjects out of every handshake.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.bundle
            .verify(end_entity, intermediates, now, Purpose::Client)
            .map_err(rustls_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies the server's SVID against the current bundle and the expected identity.
#[derive(Debug)]
struct ServerSvidVerifier {
    bundle: Arc<BundleStore>,
    expected: ExpectedPeer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerSvidVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = self
            .bundle
            .verify(end_entity, intermediates, now, Purpose::Server)
            .map_err(rustls_error)?;
        let own = self.bundle.current().trust_domain().clone();
        self.expected.check(&id, &own).map_err(rustls_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// What a mesh endpoint presents and trusts: its own SVID and the trust bundle.
#[derive(Debug, Clone)]
pub struct MeshIdentity {
    pub svid: Arc<SvidResolver>,
    pub bundle: Arc<BundleStore>,
}

/// A config could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build TLS configuration: {0}")]
pub struct TlsConfigError(#[from] rustls::Error);

impl MeshIdentity {
    pub fn new(svid: &Svid, bundle: TrustBundle) -> Result<Self, SvidFileError> {
        Ok(Self {
            svid: SvidResolver::new(svid)?,
            bundle: BundleStore::new(bundle),
        })
    }

    pub fn trust_domain(&self) -> TrustDomain {
        self.bundle.current().trust_domain().clone()
    }

    /// A TLS 1.3-only server config that requires a client SVID from the bundle and offers
    /// `alpn` in preference order.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsConfigError> {
        self.server_config_with(alpn, false)
    }

    /// Like [`MeshIdentity::server_config`], but a client may also connect without a
    /// certificate; one it presents is verified all the same. For the control plane, where
    /// a proxy's first request attests with a token instead of an SVID.
    pub fn server_config_client_optional(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, TlsConfigError> {
        self.server_config_with(alpn, true)
    }

    fn server_config_with(
        &self,
        alpn: &[&[u8]],
        optional: bool,
    ) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let verifier = Arc::new(ClientSvidVerifier {
            bundle: self.bundle.clone(),
            algorithms: signature_algorithms(),
            optional,
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.svid.clone());
        config.session_storage = Arc::new(TrustBoundSessions::new(
            self.bundle.clone(),
            server_session_cache,
        ));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A TLS 1.3-only client config that presents our SVID and accepts only a server whose
    /// SVID is from the bundle and matches `expected`. SNI is off: the server is identified
    /// by its SPIFFE ID, not a host name.
    pub fn client_config(
        &self,
        expected: ExpectedPeer,
        alpn: &[&[u8]],
    ) -> Result<Arc<ClientConfig>, TlsConfigError> {
        let verifier = Arc::new(ServerSvidVerifier {
            bundle: self.bundle.clone(),
            expected,
            algorithms: signature_algorithms(),
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(self.svid.clone());
        config.resumption = Resumption::store(Arc::new(TrustBoundSessions::new(
            self.bundle.clone(),
            client_session_cache,
        )));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = false;
        Ok(Arc::new(config))
    }
}

/// A TLS 1.3 client config that verifies the server against `bundle` and `expected` but
/// presents no certificate: how a proxy that has no SVID yet reaches the control plane.
pub fn bootstrap_client_config(
    bundle: TrustBundle,
    expected: ExpectedPeer,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let verifier = Arc::new(ServerSvidVerifier {
        bundle: BundleStore::new(bundle),
        expected,
        algorithms: signature_algorithms(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The server name a mesh client passes to rustls. It is never sent (SNI is off) nor
/// checked (peers are matched by SPIFFE ID); rustls only needs a value.
pub fn mesh_server_name() -> ServerName<'static> {
    ServerName::try_from("ward.mesh.invalid").expect("a constant, valid DNS name")
}

/// The SPIFFE ID of the peer of an established connection (its certificate was verified
/// during the handshake).
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    peer_certificates
        .and_then(|c| c.first())
        .and_then(|leaf| spiffe_id_of(leaf).ok())
}
