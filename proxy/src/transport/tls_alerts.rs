//! Two TLS alerts rustls 0.23 does not send, sent by the inbound listener itself.
//!
//! - A record longer than 2^14 bytes before encryption starts (RFC 8446 §5.1:
//!   `record_overflow`): rustls accepts plaintext records up to 2^14 + 2048, the limit of
//!   encrypted ones. The first record's header is read before the handshake (and handed
//!   back to it), so a ClientHello record that is too long is refused with the right alert.
//! - A record of another type between the fragments of a handshake message (an empty
//!   application_data record inside a split ClientHello): rustls fails the handshake
//!   without queueing an alert; we write `unexpected_message`.
//!
//! Both alerts are plaintext (the handshake has no keys yet) and end the connection.

use rustls::{Error as TlsError, PeerMisbehaved};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest TLSPlaintext.length RFC 8446 allows.
const MAX_PLAINTEXT: usize = 1 << 14;

/// A fatal alert record: level 2, then the description.
fn alert(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

const RECORD_OVERFLOW: u8 = 22;
const UNEXPECTED_MESSAGE: u8 = 10;

/// Reads the first record's header before rustls does: one that announces a plaintext
/// longer than 2^14 bytes gets `record_overflow` and the connection ends; otherwise the
/// header is handed back in front of the stream for the handshake to read.
pub async fn first_record_checked(
    mut tcp: TcpStream,
) -> std::io::Result<crate::transport::detect::Prefixed<TcpStream>> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 5];
    tcp.read_exact(&mut header).await?;
    if oversized(&header) {
        let _ = tcp.write_all(&alert(RECORD_OVERFLOW)).await;
        let _ = tcp.shutdown().await;
        return Err(std::io::Error::other("TLS record longer than 2^14 bytes"));
    }
    Ok(crate::transport::detect::Prefixed::new(
        bytes::BytesMut::from(&header[..]),
        tcp,
    ))
}

/// Whether a record header announces more than 2^14 bytes of plaintext.
fn oversized(header: &[u8; 5]) -> bool {
    let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
    length > MAX_PLAINTEXT
}

/// After a failed handshake, the alert rustls should have queued and did not.
pub async fn after_failed_handshake<S: AsyncWrite + Unpin>(e: &std::io::Error, io: &mut S) {
    let interleaved = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
        .is_some_and(|tls| {
            matches!(
                tls,
                TlsError::PeerMisbehaved(PeerMisbehaved::MessageInterleavedWithHandshakeMessage)
            )
        });
    if interleaved {
        let _ = io.write_all(&alert(UNEXPECTED_MESSAGE)).await;
        let _ = io.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_two_to_the_fourteen() {
        assert!(!oversized(&[0x16, 3, 1, 0x40, 0x00]));
        assert!(oversized(&[0x16, 3, 1, 0x40, 0x01]));
        assert_eq!(alert(RECORD_OVERFLOW), [0x15, 3, 3, 0, 2, 2, 22]);
    }
}
