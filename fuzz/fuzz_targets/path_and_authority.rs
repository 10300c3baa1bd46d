//! Path normalization and authority canonicalization: never panic, and both are idempotent
//! (what was judged is a fixed point, so the app reads it the same way).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ward_policy::Authority;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = ward_policy::normalize_path(text) {
        assert_eq!(
            ward_policy::normalize_path(&path).as_deref(),
            Ok(path.as_str()),
            "normalization is idempotent"
        );
    }
    if let Ok(authority) = Authority::parse(text, 80) {
        let again = Authority::parse(&authority.canonical(), 80).expect("canonical form parses");
        assert_eq!(again, authority, "canonicalization is idempotent");
        assert!(!authority.host.contains('@'));
    }
    let _ = ward_policy::request::check_method(text);
});
