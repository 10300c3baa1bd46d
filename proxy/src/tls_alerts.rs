//! Two TLS alerts rustls 0.23 does not send, sent by the inbound listener itself.
//!
//! - A record longer than 2^14 bytes before encryption starts (RFC 8446 §5.1:
//!   `record_overflow`): rustls accepts plaintext records up to 2^14 + 2048, the limit of
//!   encrypted ones. The first record's header is peeked before the handshake, so a
//!   ClientHello record that is too long is refused with the right alert.
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

/// The alert to send if the first record `tcp` has for us announces a plaintext longer
/// than 2^14 bytes; `None` otherwise (or if the header does not arrive, which the
/// handshake itself then handles).
pub async fn oversized_first_record(tcp: &TcpStream) -> Option<[u8; 7]> {
    let mut header = [0u8; 5];
    loop {
        let n = tcp.peek(&mut header).await.ok()?;
        if n == 0 {
            return None;
        }
        if n == header.len() {
            break;
        }
        // Part of the header so far (rare: clients send it in one segment). `peek` would
        // return the same bytes at once, so wait a little; the handshake timeout bounds it.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    oversized(&header).then(|| alert(RECORD_OVERFLOW))
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
