//! A decision against 1,000 policies (target <= 1 us p50) and compiling 1,000 policies
//! (target <= 50 ms), in the shapes a large mesh has: one ALLOW policy per calling service,
//! all applying to the workload under test, plus mesh-wide DENY and AUDIT policies.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use ward_policy::compile::namespace_of;
use ward_policy::{Call, HttpCall, load_sources};

const N: usize = 1000;

fn policies() -> String {
    let mut yaml = String::new();
    for i in 0..N {
        let _ = write!(
            yaml,
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: allow-{i}, namespace: bank }}\n\
             spec:\n  selector: {{ matchLabels: {{ app: accounts }} }}\n  action: ALLOW\n  rules:\n\
             \x20 - from: [ {{ principals: [\"spiffe://bank.example/ns/web/sa/svc-{i}\"] }} ]\n\
             \x20   to: [ {{ ports: [8080], methods: [GET, HEAD], paths: [\"/accounts/*\"] }} ]\n---\n"
        );
    }
    yaml.push_str(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: { name: no-admin, namespace: ward-system }\n\
         spec:\n  action: DENY\n  rules: [ { to: [ { paths: [\"/admin*\"] } ] } ]\n---\n\
         apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: { name: audit-writes, namespace: ward-system }\n\
         spec:\n  action: AUDIT\n  rules: [ { to: [ { methods: [POST, PUT, DELETE] } ] } ]\n",
    );
    yaml
}

fn bench(c: &mut Criterion) {
    let yaml = policies();
    let sources = vec![(PathBuf::from("bench.yaml"), yaml)];
    let labels: BTreeMap<String, String> = [("app".to_owned(), "accounts".to_owned())].into();

    c.bench_function("compile_1000_policies", |b| {
        b.iter(|| {
            let set = load_sources(black_box(&sources)).expect("valid");
            set.for_workload("bank", &labels)
        })
    });

    let set = load_sources(&sources).expect("valid");
    let workload = set.for_workload("bank", &labels);
    assert_eq!(workload.len(), N + 2);
    let headers: Vec<(String, String)> = Vec::new();
    let authority = ward_policy::Authority::parse("accounts.bank", 80).expect("valid");
    let mut group = c.benchmark_group("decide_1000_policies");
    for (name, principal, allowed) in [
        (
            "allowed_last_policy",
            "spiffe://bank.example/ns/web/sa/svc-999",
            true,
        ),
        (
            "allowed_first_policy",
            "spiffe://bank.example/ns/web/sa/svc-0",
            true,
        ),
        (
            "denied_unknown_caller",
            "spiffe://bank.example/ns/web/sa/stranger",
            false,
        ),
    ] {
        let call = Call {
            principal,
            namespace: namespace_of(principal),
            port: 8080,
            http: Some(HttpCall {
                method: "GET",
                path: "/accounts/42",
                authority: Some(&authority),
                headers: &headers,
                auth: None,
            }),
        };
        assert_eq!(workload.decide(&call).allowed, allowed);
        group.bench_function(name, |b| b.iter(|| workload.decide(black_box(&call))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
