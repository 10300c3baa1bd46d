//! Who the client is when the gateway stands behind load balancers: with `trusted_hops: N`
//! the N proxies nearest the gateway are trusted to have appended what they saw, so the
//! client is the Nth address from the right of `Forwarded` (RFC 7239; preferred when
//! present) or else of `X-Forwarded-For`, and the scheme it used is that element's `proto`
//! (or the last `X-Forwarded-Proto`). Whatever stands further left was written by the
//! client and is never believed. With no trusted hop, or a chain shorter than the hops
//! configured (a hop did not append: misconfigured, so nothing in it is trusted), the
//! client is the connection's peer.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::FORWARDED;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// What a connection says of its peer.
pub struct Peer {
    pub addr: String,
    pub tls: bool,
    /// The SHA-256 thumbprint (base64url) of its certificate, if it showed one.
    pub cert: Option<String>,
    /// The host it named in the TLS handshake.
    pub sni: Option<String>,
}

/// A request's client: who it is (past trusted hops), how it reached the edge, and what
/// its connection showed.
pub struct Client<'a> {
    pub addr: Cow<'a, str>,
    pub https: bool,
    pub cert: Option<&'a str>,
    pub sni: Option<&'a str>,
}

/// The client of one request, as far as the gateway can trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Its IP address, as text.
    pub addr: Cow<'a, str>,
    /// Whether it reached the edge over HTTPS.
    pub https: bool,
}

/// The client of a request with `headers` that came on a connection from `peer` (over TLS
/// or not), `trusted_hops` proxies in front of the gateway.
pub fn origin<'a>(
    headers: &HeaderMap,
    peer: &'a str,
    tls: bool,
    trusted_hops: usize,
) -> Origin<'a> {
    let connection = Origin {
        addr: Cow::Borrowed(peer),
        https: tls,
    };
    if trusted_hops == 0 {
        return connection;
    }
    let told = if headers.contains_key(FORWARDED) {
        from_forwarded(headers, trusted_hops)
    } else {
        from_x_forwarded(headers, trusted_hops)
    };
    match told {
        Some((addr, proto)) => Origin {
            addr: Cow::Owned(addr.to_string()),
            https: proto.unwrap_or(tls),
        },
        None => connection,
    }
}

/// Every comma-separated element of every `name` header, in order.
fn elements(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Vec<&str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// The `hops`th element from the right, if the chain is that long.
fn nth_from_right<'e>(elements: &[&'e str], hops: usize) -> Option<&'e str> {
    elements.len().checked_sub(hops).map(|i| elements[i])
}

fn from_forwarded(headers: &HeaderMap, hops: usize) -> Option<(IpAddr, Option<bool>)> {
    let chain = elements(headers, FORWARDED);
    let element = nth_from_right(&chain, hops)?;
    let mut addr = None;
    let mut proto = None;
    for pair in element.split(';') {
        let Some((name, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("for") {
            addr = node(value);
        } else if name.trim().eq_ignore_ascii_case("proto") {
            proto = scheme(value);
        }
    }
    addr.map(|a| (a, proto))
}

fn from_x_forwarded(headers: &HeaderMap, hops: usize) -> Option<(IpAddr, Option<bool>)> {
    let chain = elements(headers, X_FORWARDED_FOR);
    let addr = node(nth_from_right(&chain, hops)?)?;
    let protos = elements(headers, X_FORWARDED_PROTO);
    Some((addr, protos.last().and_then(|p| scheme(p))))
}

/// An address as a hop writes it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`. `unknown` and obfuscated names are no address.
fn node(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
        })
}

fn scheme(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("https") {
        Some(true)
    } else if text.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn client(pairs: &[(&str, &str)], hops: usize) -> (String, bool) {
        let o = origin(&headers(pairs), "10.0.0.9", false, hops);
        (o.addr.into_owned(), o.https)
    }

    #[test]
    fn without_trusted_hops_the_client_is_the_connection_whatever_it_says() {
        let said = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;proto=https"),
        ];
        assert_eq!(client(&said, 0), ("10.0.0.9".into(), false));
    }

    #[test]
    fn the_nth_address_from_the_right_is_the_client_and_what_the_client_wrote_is_not() {
        // The client forged 1.2.3.4; the load balancer appended what it saw.
        let xff = [
            ("x-forwarded-for", "1.2.3.4, 203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ];
        assert_eq!(client(&xff, 1), ("203.0.113.7".into(), true));
        // Two hops: a CDN then a load balancer, over two header lines.
        let two = [
            ("x-forwarded-for", "1.2.3.4, 203.0.113.7"),
            ("x-forwarded-for", "198.51.100.2"),
        ];
        assert_eq!(client(&two, 2), ("203.0.113.7".into(), false));
        // Fewer elements than trusted hops: nothing in it is believed.
        assert_eq!(
            client(&[("x-forwarded-for", "203.0.113.7")], 2),
            ("10.0.0.9".into(), false)
        );
        // No header at all, or garbage where the address should be.
        assert_eq!(client(&[], 1), ("10.0.0.9".into(), false));
        assert_eq!(
            client(&[("x-forwarded-for", "1.2.3.4, not-an-ip")], 1),
            ("10.0.0.9".into(), false)
        );
    }

    #[test]
    fn forwarded_is_read_by_its_elements_for_and_proto_and_preferred_to_x_forwarded_for() {
        let h = [
            (
                "forwarded",
                "for=1.2.3.4;proto=http, for=\"[2001:db8::7]:4711\";proto=https",
            ),
            ("x-forwarded-for", "198.51.100.9"),
        ];
        assert_eq!(client(&h, 1), ("2001:db8::7".into(), true));
        assert_eq!(client(&h, 2), ("1.2.3.4".into(), false));
        let ported = [("forwarded", "for=203.0.113.7:5555")];
        assert_eq!(client(&ported, 1), ("203.0.113.7".into(), false));
        let hidden = [("forwarded", "for=unknown;proto=https")];
        assert_eq!(client(&hidden, 1), ("10.0.0.9".into(), false));
        let obfuscated = [("forwarded", "for=_gazonk")];
        assert_eq!(client(&obfuscated, 1), ("10.0.0.9".into(), false));
    }
}
