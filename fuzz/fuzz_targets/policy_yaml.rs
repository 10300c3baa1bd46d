//! Policy loading: any text gives a policy set or located errors, never a panic or a hang
//! (size and nesting are bounded before the YAML parser runs).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    match ward_policy::load_sources(&[("fuzz.yaml".into(), text)]) {
        Ok(set) => {
            let _ = set.for_workload("default", &Default::default());
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
