//! Discovery on a large cluster, 5,000 injected pods in 100 namespaces and 1,000 Services
//! (10 per namespace, each selecting 5 pods): the endpoints computed whole (a relist), and
//! after one Pod event, which every replica pays for every Pod or Service change.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Pod, Service};
use ward_k8s::discovery::{Changed, Index, Key, endpoints};

const NAMESPACES: usize = 100;
const SERVICES_PER_NAMESPACE: usize = 10;
const PODS_PER_SERVICE: usize = 5;

fn cluster() -> (BTreeMap<Key, Pod>, BTreeMap<Key, Service>) {
    let mut pods = BTreeMap::new();
    let mut services = BTreeMap::new();
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        for s in 0..SERVICES_PER_NAMESPACE {
            let app = format!("app-{s}");
            let service: Service = serde_json::from_value(serde_json::json!({
                "metadata": { "name": app, "namespace": ns },
                "spec": { "clusterIP": format!("10.96.{n}.{s}"), "selector": { "app": app },
                          "ports": [ { "name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http" } ] },
            }))
            .expect("service");
            services.insert((ns.clone(), app.clone()), service);
            for p in 0..PODS_PER_SERVICE {
                let name = format!("{app}-{p}");
                let ip = format!(
                    "10.{}.{}.{}",
                    1 + n / 200,
                    n % 200,
                    s * PODS_PER_SERVICE + p
                );
                let pod: Pod = serde_json::from_value(serde_json::json!({
                    "metadata": { "name": name, "namespace": ns, "labels": { "app": app },
                                  "annotations": { "ward.dev/injected": "0.1.0" } },
                    "spec": { "serviceAccountName": app, "containers": [
                        { "name": "app", "image": "a", "ports": [ { "name": "http", "containerPort": 8080 } ] } ] },
                    "status": { "phase": "Running", "podIP": ip, "podIPs": [ { "ip": ip } ] },
                }))
                .expect("pod");
                pods.insert((ns.clone(), name), pod);
            }
        }
    }
    (pods, services)
}

fn bench(c: &mut Criterion) {
    let (pods, services) = cluster();
    let td = ward_certs::parse_trust_domain("cluster.local").expect("trust domain");
    let all = endpoints(&pods, &services, &td);
    assert_eq!(
        all.len(),
        NAMESPACES * SERVICES_PER_NAMESPACE * (PODS_PER_SERVICE + 1),
        "every pod and every ClusterIP"
    );
    let mut group = c.benchmark_group("discovery");
    group.sample_size(10);
    group.bench_function("all endpoints, computed whole (a relist)", |b| {
        b.iter(|| black_box(endpoints(black_box(&pods), black_box(&services), &td)))
    });
    let mut index = Index::new(td.clone());
    index.refresh(&Changed::All, &pods, &services);
    let one = Changed::Namespace("ns-42".into());
    group.bench_function("after one Pod event (its namespace recomputed)", |b| {
        b.iter(|| {
            index.refresh(black_box(&one), &pods, &services);
            black_box(index.endpoints())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
