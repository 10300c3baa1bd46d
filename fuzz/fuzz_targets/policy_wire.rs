//! Policy from the control plane: any bytes give a policy set or errors, never a panic;
//! and a set that is accepted goes back on the wire and is accepted again unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ward_api::v1::PolicySnapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = PolicySnapshot::decode(data) else {
        return;
    };
    match ward_policy::wire::policy_set(&snapshot) {
        Ok(set) => {
            let mut names: Vec<_> = set.policies().iter().map(|p| p.namespace.clone()).collect();
            names.dedup();
            for ns in names {
                let again = ward_policy::wire::snapshot(snapshot.version, &set, &ns, &Default::default());
                let reread = ward_policy::wire::policy_set(&again).expect("what was accepted is accepted again");
                let _ = reread.for_workload(&ns, &Default::default());
            }
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
