//! `ward control-plane` with real sidecar processes: bootstrap by join token, attestation
//! refusals, rotation under load, policy push, and a control plane that dies under load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use ward_api::v1;
use ward_tests::apps;
use ward_tests::mesh::{
    ControlPlane, ManagedPair, ORDERS_ID, WEB_ID, csr_for, http_get, mesh_default,
};

fn allow_all() -> String {
    mesh_default("allow-authenticated")
}

async fn managed(app: SocketAddr, ttl: &'static str, policy: String) -> ManagedPair {
    ManagedPair::launch(app, ttl, policy).await
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http_get(addr, &path).map_or(0, |(s, _)| s))
        .await
        .unwrap()
}

/// Continuous requests until `stop` (or the returned guard is dropped, so a failing test
/// never leaves the load running); counts successes and failures.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> (Load, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (o, f, s) = (ok.clone(), failed.clone(), stop.clone());
    let handle = tokio::task::spawn_blocking(move || {
        while !s.load(Ordering::SeqCst) {
            match http_get(addr, "/orders/1") {
                Some((200, _)) => o.fetch_add(1, Ordering::SeqCst),
                other => {
                    if f.fetch_add(1, Ordering::SeqCst) < 5 {
                        eprintln!("failed request: {other:?}");
                    }
                    0
                }
            };
        }
    });
    (
        Load {
            handle: Some(handle),
            stop,
        },
        ok,
        failed,
    )
}

/// The running load; stops it when dropped.
struct Load {
    handle: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    async fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serial(proxy: &ward_tests::mesh::Proxy) -> String {
    let certs: Value = serde_json::from_str(&proxy.admin_get("/certs").1).expect("certs JSON");
    certs["serial"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_bootstrapped_by_tokens_talk_mtls() {
    let app = apps::http_echo().await;
    let mesh = managed(app.addr, "1h", allow_all()).await;
    assert_eq!(get(mesh.outbound, "/orders/1").await, 200);
    let certs: Value = serde_json::from_str(&mesh.orders.admin_get("/certs").1).unwrap();
    assert_eq!(certs["spiffe_id"], ORDERS_ID);
    let certs: Value = serde_json::from_str(&mesh.web.admin_get("/certs").1).unwrap();
    assert_eq!(certs["spiffe_id"], WEB_ID);
    assert!(
        !mesh.dir.path().join("web.pem").exists(),
        "no certificate files"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = mesh.web.admin_get("/metrics").1;
        if metrics.contains("ward_control_plane_connected{stream=\"bundle\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bundle stream never connected:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gRPC channel to the control plane without an SVID, as a new proxy has.
async fn identity_client(
    cp: &ControlPlane,
) -> v1::identity_client::IdentityClient<tonic::transport::Channel> {
    v1::identity_client::IdentityClient::new(cp_channel(cp, None).await)
}

/// A gRPC channel to the control plane, presenting `svid` if given.
async fn cp_channel(
    cp: &ControlPlane,
    svid: Option<&ward_certs::Svid>,
) -> tonic::transport::Channel {
    ward_tests::mesh::cp_channel(cp.listen, &cp.bundle_path(), "example.org", svid).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_refusals_each_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || ControlPlane::start(&d, "1h")
    })
    .await
    .unwrap();
    let mut client = identity_client(&cp).await;
    let certify = |token: &str, csr: Vec<u8>, spiffe_id: &str| v1::CertifyRequest {
        csr,
        token: token.to_owned(),
        spiffe_id: spiffe_id.to_owned(),
        serving: Vec::new(),
    };

    let token = cp.token(WEB_ID, "app=web", &[]);
    let ok = client
        .certify(certify(&token, csr_for(Some(WEB_ID)), WEB_ID))
        .await
        .expect("first use");
    assert_eq!(ok.into_inner().spiffe_id, WEB_ID);

    let reused = client
        .certify(certify(&token, csr_for(None), ""))
        .await
        .unwrap_err();
    assert_eq!(
        (reused.code(), reused.message()),
        (tonic::Code::Unauthenticated, "join token already used up")
    );

    let unknown = client
        .certify(certify("ward-00", csr_for(None), ""))
        .await
        .unwrap_err();
    assert_eq!(
        (unknown.code(), unknown.message()),
        (tonic::Code::Unauthenticated, "unknown join token")
    );

    let other_id = cp.token(WEB_ID, "app=web", &[]);
    let err = client
        .certify(certify(&other_id, csr_for(None), ORDERS_ID))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("the caller is attested as {WEB_ID}, not {ORDERS_ID}")
    );

    let err = client
        .certify(certify(&other_id, csr_for(Some(ORDERS_ID)), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        err.message(),
        format!("CSR asks for {ORDERS_ID}; the caller is attested as {WEB_ID}")
    );

    let mut forged = csr_for(None);
    let n = forged.len();
    forged[n - 2] ^= 0x01;
    let err = client
        .certify(certify(&other_id, forged, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("CSR signature does not verify"),
        "{}",
        err.message()
    );
    // Refused requests did not spend the token.
    client
        .certify(certify(&other_id, csr_for(None), ""))
        .await
        .expect("token still good");

    let foreign = cp.token("spiffe://other.example/ns/a/sa/b", "", &[]);
    let err = client
        .certify(certify(&foreign, csr_for(None), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message()
            .contains("join token is for trust domain other.example"),
        "{}",
        err.message()
    );

    let short = cp.token(WEB_ID, "app=web", &["--ttl", "1s"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let expired = loop {
        // Poll until the token's second has passed (nothing else to wait on).
        let err = client
            .certify(certify(
                &short,
                csr_for(Some("spiffe://example.org/ns/default/sa/x")),
                "",
            ))
            .await;
        match err {
            Err(s) if s.message() == "join token expired" => break s,
            Err(s) if s.code() == tonic::Code::PermissionDenied => {}
            other => panic!("unexpected: {other:?}"),
        }
        assert!(Instant::now() < deadline, "token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(expired.code(), tonic::Code::Unauthenticated);

    let err = client
        .certify(certify("", csr_for(None), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().starts_with("no attestation"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svids_rotate_under_load_without_a_failed_request() {
    let app = apps::http_echo().await;
    let mesh = managed(app.addr, "20s", allow_all()).await;
    let first = (serial(&mesh.web), serial(&mesh.orders));
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, ok, failed) = load(mesh.outbound, stop.clone());

    // Two rotations each: watch the served serials change twice.
    let mut seen = (vec![first.0.clone()], vec![first.1.clone()]);
    let deadline = Instant::now() + Duration::from_secs(45);
    while seen.0.len() < 3 || seen.1.len() < 3 {
        assert!(Instant::now() < deadline, "rotations seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = (serial(&mesh.web), serial(&mesh.orders));
        if seen.0.last() != Some(&now.0) {
            seen.0.push(now.0);
        }
        if seen.1.last() != Some(&now.1) {
            seen.1.push(now.1);
        }
    }
    handle.finish().await;
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "{}",
        ok.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_on_the_control_plane_is_enforced_within_a_second() {
    let app = apps::http_echo().await;
    let mesh = managed(app.addr, "1h", allow_all()).await;
    assert_eq!(get(mesh.outbound, "/orders/1").await, 200);
    mesh.cp.set_policy(&format!(
        "{}---\napiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {{ name: close, namespace: default }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: orders }} }}\n  action: DENY\n  rules: [ {{ to: [ {{ paths: [\"/orders/*\"] }} ] }} ]\n",
        allow_all()
    ));
    let edited = Instant::now();
    while get(mesh.outbound, "/orders/1").await != 403 {
        assert!(edited.elapsed() < Duration::from_secs(3), "not enforced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        edited.elapsed() < Duration::from_secs(1),
        "{:?}",
        edited.elapsed()
    );
    // The web sidecar's workload got no policy about orders: it is not told about it.
    let audit_free = mesh.web.logs();
    assert!(
        !audit_free.contains("default/close"),
        "policy for orders leaked to web"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_survives_the_control_plane_dying_and_proxies_reconnect() {
    let app = apps::http_echo().await;
    // Short-lived SVIDs, so that renewal against the restarted control plane is seen too.
    let mut mesh = managed(app.addr, "20s", allow_all()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, ok, failed) = load(mesh.outbound, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "load never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mesh.cp.kill9();
    let before = ok.load(Ordering::SeqCst);
    // Fail static: requests keep flowing with no control plane.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok.load(Ordering::SeqCst) < before + 50 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let web = mesh.web.admin_get("/metrics").1;
    assert!(
        web.contains("ward_control_plane_connected{stream=\"policy\"} 0")
            || web.contains("ward_control_plane_connected{stream=\"bundle\"} 0"),
        "{web}"
    );
    // Still ready (fail static), and /ready says the control plane is gone and since when.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = mesh.orders.admin_get("/ready");
        let detail: Value = serde_json::from_str(&body).unwrap();
        if detail["control_plane"]["policy_stream_connected"] == false {
            assert_eq!(code, 200, "{body}");
            assert!(
                detail["control_plane"]["policy_age_seconds"].is_u64(),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::task::block_in_place(|| mesh.cp.restart());
    // Both streams come back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = mesh.orders.admin_get("/metrics").1;
        if m.contains("ward_control_plane_connected{stream=\"policy\"} 1")
            && m.contains("ward_control_plane_connected{stream=\"bundle\"} 1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no reconnect:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...and renew against the restarted control plane.
    let (web, orders) = (serial(&mesh.web), serial(&mesh.orders));
    let deadline = Instant::now() + Duration::from_secs(25);
    while serial(&mesh.web) == web || serial(&mesh.orders) == orders {
        assert!(Instant::now() < deadline, "no renewal after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    handle.finish().await;
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_streams_where_attested_workloads_serve_under_their_attested_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cp = tokio::task::spawn_blocking({
        let d = dir.path().to_owned();
        move || ControlPlane::start(&d, "1h")
    })
    .await
    .unwrap();
    // Without an SVID there is no discovery.
    let mut anonymous = v1::discovery_client::DiscoveryClient::new(cp_channel(&cp, None).await);
    let refused = anonymous
        .watch(v1::DiscoveryWatchRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    // A proxy attests and says where its workload serves; it claims another identity for
    // the address, which is not what the control plane records.
    let token = cp.token(WEB_ID, "app=web", &[]);
    let (key, csr) = ward_certs::svid::new_key_and_csr(None).unwrap();
    let issued = identity_client(&cp)
        .await
        .certify(v1::CertifyRequest {
            csr,
            token,
            spiffe_id: String::new(),
            serving: vec![v1::Endpoint {
                address: "10.1.2.3:8080".into(),
                spiffe_id: ORDERS_ID.into(),
                inbound_port: 0,
                protocol: "http1".into(),
            }],
        })
        .await
        .expect("certify")
        .into_inner();
    let chain = issued
        .chain
        .into_iter()
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    let svid = ward_certs::Svid::new(chain, key).unwrap();
    let mut client = v1::discovery_client::DiscoveryClient::new(cp_channel(&cp, Some(&svid)).await);
    let mut stream = client
        .watch(v1::DiscoveryWatchRequest {})
        .await
        .expect("watch")
        .into_inner();
    let snapshot = stream.message().await.unwrap().expect("a snapshot");
    assert_eq!(snapshot.endpoints.len(), 1, "{snapshot:?}");
    let e = &snapshot.endpoints[0];
    assert_eq!(
        (e.address.as_str(), e.spiffe_id.as_str()),
        ("10.1.2.3:8080", WEB_ID)
    );
    assert_eq!(e.protocol, "http1");
}
