//! The application protocols sidecars agree on in their TLS handshake.

/// ALPN for opaque TCP between sidecars.
pub const ALPN_TCP: &[u8] = b"ward-tcp/1";
/// ALPN for HTTP/2 between ward sidecars. Offered before `h2`: a ward peer picks it, and
/// only then is `x-ward-original-protocol` sent or believed; any other SPIFFE peer (Envoy)
/// picks `h2` and never sees it.
pub const ALPN_WARD_H2: &[u8] = b"ward-h2/1";
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
