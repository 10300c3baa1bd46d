//! CSR handling in the CA: arbitrary DER is refused with an error, never a panic; what
//! is accepted yields a leaf for the authorized identity only.
#![no_main]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use ward_certs::{CaOptions, CertificateAuthority, SpiffeId};

fn ca() -> &'static (CertificateAuthority, SpiffeId) {
    static CA: OnceLock<(CertificateAuthority, SpiffeId)> = OnceLock::new();
    CA.get_or_init(|| {
        let td = ward_certs::parse_trust_domain("fuzz.example").expect("trust domain");
        let ca = CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now())
            .expect("CA");
        let id = ward_certs::parse_spiffe_id("spiffe://fuzz.example/ns/a/sa/b").expect("id");
        (ca, id)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = ward_certs::ca::csr_requested_uris(data);
    let (ca, id) = ca();
    if let Ok(chain) = ca.sign_csr(data, id, Duration::from_secs(60), SystemTime::now()) {
        let info = ward_certs::CertInfo::parse(&chain[0]).expect("our own leaf parses");
        assert_eq!(info.spiffe_id.as_ref(), Some(id));
    }
});
