//! SPIFFE ID parsing: never panics, and what it accepts prints back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = ward_certs::parse_spiffe_id(text) {
        let printed = id.to_string();
        assert_eq!(printed, text, "an accepted ID is kept as written");
        let again = ward_certs::parse_spiffe_id(&printed).expect("its own text parses");
        assert_eq!(again, id);
    }
    let _ = ward_certs::parse_trust_domain(text);
});
