//! Bytes between processes: connecting (TCP, mTLS), the application protocols agreed in
//! TLS, protocol detection on plaintext, TCP splicing, idle tracking, and the TLS alerts
//! rustls does not send by itself. Nothing here knows HTTP semantics or policy.

pub mod alpn;
pub mod connect;
pub mod detect;
pub mod idle;
pub(crate) mod io;
pub mod orig_dst;
pub mod tcp;
pub mod tls_alerts;

/// `resumed` for an abbreviated (session-resumption) handshake, `ok` for a full one.
pub fn handshake_kind(conn: &rustls::CommonState) -> &'static str {
    match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        _ => "ok",
    }
}
