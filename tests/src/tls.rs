//! TLS endpoints on loopback for handshake tests: a server that reports every handshake's
//! outcome and then echoes, and clients built from arbitrary (possibly bad) certificates.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ward_certs::tls::{mesh_server_name, peer_spiffe_id, provider};

/// How one inbound handshake ended: the peer's SPIFFE ID, or the server-side error text.
pub type Handshake = Result<Option<String>, String>;

/// A TLS server on an ephemeral loopback port.
pub struct EchoServer {
    pub addr: SocketAddr,
    handshakes: mpsc::UnboundedReceiver<Handshake>,
}

impl EchoServer {
    /// Starts accepting with `config`. Each handshake's outcome is reported; established
    /// connections echo what they receive until the peer closes.
    pub async fn start(config: Arc<ServerConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, handshakes) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let peer = peer_spiffe_id(tls.get_ref().1.peer_certificates())
                                .map(|id| id.to_string());
                            let _ = tx.send(Ok(peer));
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = tls.read(&mut buf).await {
                                if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            }
        });
        Self { addr, handshakes }
    }

    /// The outcome of the next inbound handshake.
    pub async fn next_handshake(&mut self) -> Handshake {
        self.handshakes.recv().await.expect("server task alive")
    }
}

/// Connects over TLS; the error text is the client side's.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    TlsConnector::from(config)
        .connect(mesh_server_name(), tcp)
        .await
        .map_err(|e| e.to_string())
}

/// Expects the client side to have refused the handshake; returns its error text.
#[track_caller]
pub fn refused(outcome: Result<TlsStream<TcpStream>, String>, what: &str) -> String {
    match outcome {
        Ok(_) => panic!("{what}: the handshake must be refused"),
        Err(e) => e,
    }
}

/// Writes `msg` and reads the echo back; an error once the server has refused us.
pub async fn echo(stream: &mut TlsStream<TcpStream>, msg: &[u8]) -> Result<Vec<u8>, String> {
    stream.write_all(msg).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; msg.len()];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// A client that presents `identity` (any chain and key, or none) and does not check the
/// server: for tests of what a server refuses.
pub fn bare_client(
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A server that presents any chain and key and asks for no client certificate: for tests
/// of what a client refuses.
pub fn bare_server(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server cert"),
    )
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
pub struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client presenting `chain` and `key` and offering `alpn`, that does not check
/// the server: a peer holding an SVID, for tests of what a server does with it.
pub fn svid_client(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What a peer holding a valid SVID (`from`) gets back for `bytes` sent raw over mTLS to
/// `addr`, offering `alpn`: every byte the server sends until it closes, or until
/// `quiet` passes without one (then the connection is still open).
pub async fn raw_exchange(
    addr: SocketAddr,
    from: &crate::pki::Crafted,
    alpn: &[&[u8]],
    bytes: &[u8],
    quiet: std::time::Duration,
) -> Vec<u8> {
    let config = svid_client(from.chain.clone(), from.key(), alpn);
    let mut tls = connect(addr, config).await.expect("handshake");
    tls.write_all(bytes).await.expect("send");
    tls.flush().await.expect("flush");
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(quiet, tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}
