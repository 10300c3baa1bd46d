//! Server certificates for clients that are not mesh peers.

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{CLOCK_SKEW, CaError, CertificateAuthority, random_serial, to_offset};

impl CertificateAuthority {
    /// A TLS server certificate for `names` (DNS names or IP addresses) and a fresh P-256
    /// key, for a server whose clients are not mesh peers (the API server calling the
    /// sidecar injector). It carries no URI SAN, so it can never pass as an SVID.
    pub fn issue_server(
        &self,
        names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        if now >= self.not_after {
            return Err(CaError::CaExpired {
                not_after: self.not_after,
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for name in names {
            params
                .subject_alt_names
                .push(match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) if is_dns_name(name) => SanType::DnsName(
                        name.clone()
                            .try_into()
                            .map_err(|e: rcgen::Error| CaError::Signing(e.to_string()))?,
                    ),
                    Err(_) => {
                        return Err(CaError::Signing(format!(
                            "{name:?} is neither a DNS name nor an IP address"
                        )));
                    }
                });
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(now.checked_sub(CLOCK_SKEW.min(ttl / 10)).unwrap_or(now));
        params.not_after = to_offset((now + ttl).min(self.not_after));
        params.serial_number = Some(random_serial()?);
        let leaf = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.chain[..self.chain.len() - 1].iter().cloned());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((chain, key))
    }
}

/// A host name as RFC 1123 allows: dot-separated labels of letters, digits and inner
/// hyphens, 63 bytes each, 253 in all.
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
