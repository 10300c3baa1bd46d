//! Protocol detection on every prefix of arbitrary bytes: never panics, and once it has
//! decided, more bytes never change the decision.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ward_proxy::transport::detect::{Verdict, classify};

fuzz_target!(|data: &[u8]| {
    let mut decided = None;
    for end in 0..=data.len().min(512) {
        match classify(&data[..end]) {
            Verdict::NeedMore => assert!(decided.is_none(), "undecided after deciding"),
            Verdict::Is(d) => {
                if let Some(before) = decided {
                    assert_eq!(before, d, "a decision never changes");
                }
                decided = Some(d);
            }
        }
    }
});
