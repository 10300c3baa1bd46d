//! The authorization hook every inbound connection and request passes through before the
//! app sees it. Until the policy engine lands it allows any verified SVID of our trust
//! domain and nothing else.

use ward_certs::{SpiffeId, TrustDomain};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
pub struct Authorizer {
    trust_domain: TrustDomain,
}

impl Authorizer {
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self { trust_domain }
    }

    /// A new connection from `peer` (the only check a TCP connection gets).
    pub fn connection(&self, peer: &SpiffeId) -> Decision {
        if peer.is_member_of(&self.trust_domain) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }

    /// One HTTP request or gRPC call from `peer`.
    pub fn request(&self, peer: &SpiffeId, _request: &http::request::Parts) -> Decision {
        self.connection(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_only_the_trust_domain() {
        let td = ward_certs::parse_trust_domain("example.org").unwrap();
        let authz = Authorizer::new(td);
        let ours = ward_certs::parse_spiffe_id("spiffe://example.org/ns/a/sa/b").unwrap();
        let theirs = ward_certs::parse_spiffe_id("spiffe://evil.org/ns/a/sa/b").unwrap();
        assert_eq!(authz.connection(&ours), Decision::Allow);
        assert_eq!(authz.connection(&theirs), Decision::Deny);
    }
}
