//! Connections towards an upstream: mTLS to a peer sidecar, or plain TCP to the local app.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use ward_certs::SvidError;
use ward_certs::tls::{BrokenRule, mesh_server_name};

use crate::metrics::{self, Direction};

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr}: timed out")]
    Timeout { addr: SocketAddr },
    #[error("TLS to {addr}: peer is not the expected identity: {rule}")]
    Identity { addr: SocketAddr, rule: String },
    #[error("TLS to {addr}: peer certificate refused: {rule}")]
    BadCertificate { addr: SocketAddr, rule: String },
    #[error("TLS to {addr}: {source}")]
    Tls { addr: SocketAddr, source: io::Error },
    #[error("HTTP/2 handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// A byte stream to an upstream, whatever carries it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

pub type BoxStream = Box<dyn Stream>;
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Connected, ConnectError>> + Send>>;

/// A connection and what its TLS handshake agreed on.
pub struct Connected {
    pub stream: BoxStream,
    /// The ALPN protocol negotiated (`None` for plain TCP).
    pub alpn: Option<Vec<u8>>,
}

/// How to reach one destination.
#[derive(Clone)]
pub enum Dialer {
    /// Plain TCP (the local app).
    Tcp { addr: SocketAddr, timeout: Duration },
    /// mTLS to a peer sidecar with a client config that pins its identity and ALPN.
    Mesh {
        addr: SocketAddr,
        timeout: Duration,
        tls: Arc<ClientConfig>,
    },
}

impl Dialer {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Dialer::Tcp { addr, .. } | Dialer::Mesh { addr, .. } => *addr,
        }
    }

    pub fn dial(&self) -> ConnectFuture {
        let this = self.clone();
        Box::pin(async move {
            match this {
                Dialer::Tcp { addr, timeout } => {
                    let tcp = tcp_connect(addr, timeout).await?;
                    Ok(Connected {
                        stream: Box::new(tcp),
                        alpn: None,
                    })
                }
                Dialer::Mesh { addr, timeout, tls } => {
                    let tcp = tcp_connect(addr, timeout).await?;
                    let handshake = TlsConnector::from(tls).connect(mesh_server_name(), tcp);
                    match tokio::time::timeout(timeout, handshake).await {
                        Err(_) => {
                            metrics::handshake(Direction::Outbound, "timeout");
                            Err(ConnectError::Timeout { addr })
                        }
                        Ok(Err(e)) => {
                            let err = classify_tls_error(addr, e);
                            let label = match err {
                                ConnectError::Identity { .. } => "identity_mismatch",
                                ConnectError::BadCertificate { .. } => "bad_certificate",
                                _ => "error",
                            };
                            metrics::handshake(Direction::Outbound, label);
                            Err(err)
                        }
                        Ok(Ok(tls)) => {
                            let session = tls.get_ref().1;
                            let kind = super::handshake_kind(session);
                            metrics::handshake(Direction::Outbound, kind);
                            let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                            Ok(Connected {
                                stream: Box::new(tls),
                                alpn,
                            })
                        }
                    }
                }
            }
        })
    }
}

async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr })?
        .map_err(|source| ConnectError::Io { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Tells an upstream that is not who it must be from other TLS failures.
fn classify_tls_error(addr: SocketAddr, e: io::Error) -> ConnectError {
    let rule = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<BrokenRule>().map(|b| b.0.clone())
            }
            _ => None,
        });
    match rule {
        Some(rule @ SvidError::UnexpectedPeer { .. }) => ConnectError::Identity {
            addr,
            rule: rule.to_string(),
        },
        Some(rule) => ConnectError::BadCertificate {
            addr,
            rule: rule.to_string(),
        },
        None => ConnectError::Tls { addr, source: e },
    }
}
