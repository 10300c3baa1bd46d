//! The API's transport: TLS 1.3 with the control plane's SVID, a client certificate
//! optional (a proxy's first Certify attests with a token instead), and what the TLS layer
//! learned about the caller for the handlers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use ward_certs::SpiffeId;
use ward_runtime::Drain;
use ward_runtime::accept::Accept;

/// A TLS connection with what the handlers need to know about the peer.
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    info: PeerInfo,
    /// For a peer without an SVID (a proxy attesting with a token): when the connection
    /// ends, whatever it is doing. One `Certify` needs a fraction of this.
    unauthenticated_until: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long a connection that presented no certificate may stay open.
pub const UNAUTHENTICATED_LIFETIME: Duration = Duration::from_secs(30);

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// Set when the peer presented a (verified) SVID.
    pub spiffe_id: Option<SpiffeId>,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(until) = self.unauthenticated_until.as_mut()
            && until.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection without a certificate open too long",
            )));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes their TLS handshakes off the accept loop.
pub(crate) fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    drain: Drain,
) -> impl Stream<Item = Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let handshake = move |tcp: tokio::net::TcpStream, _| {
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        async move {
            let Ok(addr) = tcp.peer_addr() else { return };
            let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            let stream = match accepted {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "control-plane TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let spiffe_id = ward_certs::tls::peer_spiffe_id(stream.get_ref().1.peer_certificates());
            let unauthenticated_until = spiffe_id
                .is_none()
                .then(|| Box::pin(tokio::time::sleep(UNAUTHENTICATED_LIFETIME)));
            let info = PeerInfo {
                addr: Some(addr),
                spiffe_id,
            };
            let conn = TlsConn {
                stream,
                info,
                unauthenticated_until,
            };
            let _ = tx.send(Ok(conn)).await;
        }
    };
    // The handshakes are not waited for at shutdown: tonic's own shutdown ends the
    // connections that made it.
    tokio::spawn(
        Accept::new("grpc")
            .untracked()
            .serve(listener, drain, handshake),
    );
    ReceiverStream::new(rx)
}
