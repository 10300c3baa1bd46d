//! The SPIFFE Workload API a sidecar serves its app on a Unix socket, used by real clients:
//! go-spiffe (Go module) and py-spiffe (PyPI `spiffe`), each as its own process.
//!
//! - The app gets the sidecar's SVID (chain, key, own bundle) and verifies it with the
//!   bundles; uses it for its own mTLS call into the mesh (go-spiffe's TLS, the other
//!   sidecar's policy); a rotation of the SVID reaches a watching client with no new call.
//! - Callers are attested by the kernel: a UID or GID the configuration does not name, or a
//!   process outside the proxy's network namespace, gets PermissionDenied and nothing else;
//!   a call without the `workload.spiffe.io` header gets InvalidArgument.
//! - A configuration that names no caller, or a socket path holding another file, is refused.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ward_tests::apps::http_echo;
use ward_tests::k8s::eventually;
use ward_tests::mesh::{Pair, PairOptions, Proxy};
use ward_tests::net::free_addr;
use ward_tests::netns;
use ward_tests::pki::TestPki;
use ward_tests::spiffe::{self, Watch, socket_dir};

/// Writes the SVID of `id` as `name.pem` / `name.key` into the PKI's directory.
fn write_svid(pki: &TestPki, id: &str, name: &str) {
    let dir = pki.dir();
    pki.svid_ttl(id, Duration::from_secs(3600))
        .write(
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )
        .expect("write svid");
}

/// A sidecar named `name` with identity files `app.pem`/`app.key` and no listeners but the Workload
/// API on `socket` with `rules` (e.g. `allowed_uids: [0]`).
fn api_sidecar(pki: &TestPki, name: &str, socket: &Path, rules: &str) -> Proxy {
    let config = format!(
        "trust_domain: {td}\n\
         identity: {{ cert: app.pem, key: app.key, bundle: ca/bundle.pem }}\n\
         workload_api: {{ socket: {socket}, {rules} }}\n\
         admin: {admin}\n",
        td = "example.org",
        socket = socket.display(),
        admin = free_addr(),
    );
    Proxy::start(pki.dir(), name, &config)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_get_their_identity_and_follow_its_rotation() {
    ward_tests::init();
    let app = http_echo().await;
    let pair = Pair::launch(app.addr, PairOptions::default()).await;
    let sockets = socket_dir();
    let socket = sockets.path().join("api.sock");
    let web = pair.web_id();
    write_svid(&pair.pki, &web, "app");
    let rules = format!("allowed_uids: [{}]", euid());
    let sidecar = api_sidecar(&pair.pki, "app", &socket, &rules);
    let socket2 = socket.clone();
    let orders = pair.orders_id();
    let inbound = pair.inbound;
    tokio::task::spawn_blocking(move || {
        let socket = socket2;
        // go-spiffe: the SVID, its key and chain, checked against the bundle it came with.
        let ctx = json(spiffe::go(&socket, "x509", &[]).ok());
        let svid = &ctx["svids"][0];
        assert_eq!(ctx["svids"].as_array().map(Vec::len), Some(1), "{ctx}");
        assert_eq!(svid["spiffe_id"], web.as_str(), "{ctx}");
        assert_eq!(svid["key_type"], "*ecdsa.PrivateKey", "{ctx}");
        assert_eq!(svid["chain"], 1, "{ctx}");
        let roots = &ctx["bundles"]["spiffe://example.org"];
        assert_eq!(roots.as_array().map(Vec::len), Some(1), "{ctx}");
        assert_eq!(
            svid["verified_chain_subjects"].as_array().map(Vec::len),
            Some(2)
        );
        // Bundles only.
        let bundles = json(spiffe::go(&socket, "bundles", &[]).ok());
        assert_eq!(bundles["spiffe://example.org"], *roots, "{bundles}");

        // py-spiffe: the same identity, and the key is the leaf's.
        let py = json(spiffe::py(&socket, "x509", &[]).ok());
        assert_eq!(py["svids"][0]["spiffe_id"], web.as_str(), "{py}");
        assert_eq!(py["svids"][0]["serial"], svid["serial"], "{py}");
        assert_eq!(py["svids"][0]["key_matches_leaf"], true, "{py}");
        assert_eq!(
            py["bundles"]["example.org"].as_array().map(Vec::len),
            Some(1)
        );

        // The app's own mTLS call into the mesh with that SVID: orders' sidecar verifies it
        // and its policy admits web; go-spiffe checks orders' identity.
        let url = format!("https://{inbound}/direct");
        let got = json(spiffe::go(&socket, "mtls-get", &[&url, &orders]).ok());
        assert_eq!(got["status"], 200, "{got}");
        assert!(
            got["body"].as_str().unwrap_or_default().contains("/direct"),
            "{got}"
        );
        // Expecting another identity of the server, go-spiffe refuses it.
        let wrong = spiffe::go(&socket, "mtls-get", &[&url, &web]);
        assert_eq!(wrong.code, 1, "{wrong:?}");
        assert!(wrong.stderr.contains("unexpected ID"), "{wrong:?}");
    })
    .await
    .expect("clients");

    // Rotation: a watching client gets the new SVID on its open stream.
    let watch = Watch::start(&socket, 2);
    let first = watch.next(Duration::from_secs(20));
    write_svid(&pair.pki, &pair.web_id(), "app");
    let second = watch.next(Duration::from_secs(20));
    let serial = |ctx: &Value| {
        ctx["svids"][0]["serial"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_ne!(serial(&first), serial(&second), "{first}\n{second}");
    assert_eq!(second["svids"][0]["spiffe_id"], pair.web_id().as_str());
    assert!(app.hits() >= 1);

    // No JWT-SVIDs from a files identity: a clear refusal, not a hang.
    let jwt = spiffe::go(&socket, "jwt", &["bank"]);
    assert_eq!(jwt.code, 1, "{jwt:?}");
    assert!(jwt.stderr.contains("issues no JWT-SVIDs"), "{jwt:?}");
    assert!(jwt.stderr.contains("Unavailable"), "{jwt:?}");
    drop(sidecar);
}

#[test]
fn callers_the_rules_do_not_name_get_nothing() {
    ward_tests::init();
    if let Some(why) = netns::unavailable() {
        panic!("this test needs root and network namespaces: {why}");
    }
    let pki = TestPki::new("example.org");
    let id = pki.id("default", "web");
    write_svid(&pki, &id, "app");
    let sockets = socket_dir();
    let by_uid = sockets.path().join("uid.sock");
    let by_gid = sockets.path().join("gid.sock");
    let same_ns = sockets.path().join("netns.sock");
    let uid_sidecar = api_sidecar(&pki, "app", &by_uid, "allowed_uids: [0]");
    let gid_sidecar = api_sidecar(&pki, "app2", &by_gid, "allowed_gids: [65534]");
    let ns_sidecar = api_sidecar(
        &pki,
        "app3",
        &same_ns,
        "allowed_uids: [0], same_network_namespace: true",
    );
    let nobody: &[&str] = &[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];

    // Root is named by UID; nobody (65534) is not.
    let ok = json(spiffe::go(&by_uid, "x509", &[]).ok());
    assert_eq!(ok["svids"][0]["spiffe_id"], id.as_str());
    let refused = spiffe::go_as(Some(nobody), &by_uid, "x509", &[]);
    assert_refused(&refused);
    assert_refused(&spiffe::go_as(Some(nobody), &by_uid, "bundles", &[]));
    let line = eventually(Duration::from_secs(5), "the refusal in the log", || {
        uid_sidecar
            .logs()
            .lines()
            .find(|l| l.contains("caller refused"))
            .map(str::to_owned)
    });
    assert!(line.contains("uid 65534 gid 65534"), "{line}");
    assert!(line.contains("FetchX509SVID"), "{line}");

    // By GID: nobody's group is named, root's is not.
    let ok = json(spiffe::go_as(Some(nobody), &by_gid, "x509", &[]).ok());
    assert_eq!(ok["svids"][0]["spiffe_id"], id.as_str());
    assert_refused(&spiffe::go(&by_gid, "x509", &[]));

    // Same network namespace: root here is let in, root in another namespace is not.
    json(spiffe::go(&same_ns, "x509", &[]).ok());
    let ns = netns::Netns::create();
    let prefix = ["ip", "netns", "exec", ns.name.as_str()];
    assert_refused(&spiffe::go_as(Some(&prefix), &same_ns, "x509", &[]));
    let line = eventually(Duration::from_secs(5), "the namespace refusal", || {
        ns_sidecar
            .logs()
            .lines()
            .find(|l| l.contains("not in this proxy's network namespace"))
            .map(str::to_owned)
    });
    assert!(line.contains("uid 0"), "{line}");
    drop((uid_sidecar, gid_sidecar));
}

/// PermissionDenied, with nothing about why and no key material.
#[track_caller]
fn assert_refused(run: &ward_tests::bin::Run) {
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("PermissionDenied"), "{run:?}");
    assert!(run.stderr.contains("no identity issued"), "{run:?}");
    for leak in ["uid", "gid", "allowed", "namespace", "BEGIN", "spiffe://"] {
        assert!(
            !run.stderr.contains(leak),
            "{leak} told to the caller: {run:?}"
        );
    }
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[tokio::test]
async fn calls_without_the_security_header_are_invalid() {
    use ward_api::workload::X509svidRequest;
    use ward_api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;

    ward_tests::init();
    let pki = TestPki::new("example.org");
    write_svid(&pki, &pki.id("default", "web"), "app");
    let sockets = socket_dir();
    let socket = sockets.path().join("api.sock");
    let rules = format!("allowed_uids: [{}]", euid());
    let (pki, sidecar) = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            let sidecar = api_sidecar(&pki, "app", &socket, &rules);
            (pki, sidecar)
        }
    })
    .await
    .expect("start");
    let channel = ward_proxy::identity::spire::unix_channel(socket.clone());
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let status = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .expect_err("no header: refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "security header missing from request");
    // A wrong value is no header either.
    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "yes".parse().expect("value"));
    let status = client
        .fetch_x509svid(request)
        .await
        .expect_err("wrong value");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // With it, the SVID.
    let mut request = tonic::Request::new(X509svidRequest {});
    request
        .metadata_mut()
        .insert("workload.spiffe.io", "true".parse().expect("value"));
    let mut stream = client
        .fetch_x509svid(request)
        .await
        .expect("fetch")
        .into_inner();
    let first = stream.message().await.expect("message").expect("one");
    assert_eq!(first.svids[0].spiffe_id, pki.id("default", "web"));
    drop(sidecar);
}

#[test]
fn bad_workload_api_settings_are_refused() {
    ward_tests::init();
    let pki = TestPki::new("example.org");
    write_svid(&pki, &pki.id("default", "web"), "app");
    let sockets = socket_dir();
    let cases = [
        (
            "workload_api: { socket: SOCK }".to_owned(),
            "workload_api: name who may fetch this workload's identity",
        ),
        (
            "workload_api: { socket: FILE, allowed_uids: [0] }".to_owned(),
            "exists and is not a socket",
        ),
    ];
    let file = pki.dir().join("app.pem");
    for (i, (section, expect)) in cases.iter().enumerate() {
        let section = section
            .replace("SOCK", &sockets.path().join("x.sock").display().to_string())
            .replace("FILE", &file.display().to_string());
        let config = format!(
            "trust_domain: example.org\n\
             identity: {{ cert: app.pem, key: app.key, bundle: ca/bundle.pem }}\n\
             {section}\nadmin: {}\n",
            free_addr()
        );
        let mut proxy = Proxy::spawn(pki.dir(), &format!("bad{i}"), &config, &[]);
        let status = proxy.wait_exit(Duration::from_secs(20)).expect("exits");
        assert!(!status.success());
        let logs = proxy.logs();
        assert!(logs.contains(expect), "{expect}: {logs}");
    }
    // The file the bad socket path named is untouched.
    assert!(
        std::fs::read_to_string(&file)
            .expect("still there")
            .contains("BEGIN")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_svids_come_from_the_ward_control_plane() {
    use ward_tests::mesh::{Extra, ManagedPair, WEB_ID, mesh_default};

    ward_tests::init();
    let app = http_echo().await;
    let sockets = socket_dir();
    let (web_api, orders_api) = (
        sockets.path().join("web.sock"),
        sockets.path().join("orders.sock"),
    );
    let section = |socket: &Path| {
        format!(
            "workload_api: {{ socket: {}, allowed_uids: [{}] }}\n",
            socket.display(),
            euid()
        )
    };
    let extra = Extra {
        web: section(&web_api),
        orders: section(&orders_api),
    };
    let mesh =
        ManagedPair::launch_with(app.addr, "1h", mesh_default("allow-authenticated"), extra).await;
    tokio::task::spawn_blocking(move || {
        // web's app gets a JWT-SVID for orders; orders' app validates it with the JWT
        // bundle its own sidecar follows from the control plane.
        let got = json(spiffe::go(&web_api, "jwt", &["orders"]).ok());
        assert_eq!(got["spiffe_id"], WEB_ID, "{got}");
        assert_eq!(got["audience"], serde_json::json!(["orders"]), "{got}");
        let token = got["token"].as_str().expect("token").to_owned();
        let valid = eventually(Duration::from_secs(10), "orders validates it", || {
            let run = spiffe::go(&orders_api, "validate", &["orders", &token]);
            (run.code == 0).then(|| json(&run.stdout))
        });
        assert_eq!(valid["spiffe_id"], WEB_ID, "{valid}");
        assert_eq!(valid["claims"]["sub"], WEB_ID, "{valid}");
        let py = json(spiffe::py(&orders_api, "validate", &["orders", &token]).ok());
        assert_eq!(py["spiffe_id"], WEB_ID, "{py}");
        let py_jwt = json(spiffe::py(&orders_api, "jwt", &["ledger"]).ok());
        assert_eq!(py_jwt["spiffe_id"], ward_tests::mesh::ORDERS_ID, "{py_jwt}");

        // Another audience, a changed payload, or a token from another CA are invalid.
        let wrong = spiffe::go(&orders_api, "validate", &["payments", &token]);
        assert_eq!(wrong.code, 1, "{wrong:?}");
        assert!(wrong.stderr.contains("audience"), "{wrong:?}");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = parts[1].chars().rev().collect();
        let forged = spiffe::go(&orders_api, "validate", &["orders", &parts.join(".")]);
        assert_eq!(forged.code, 1, "{forged:?}");
        assert!(forged.stderr.contains("InvalidArgument"), "{forged:?}");
        // No audience: refused before anything is signed.
        let none = spiffe::go(&web_api, "jwt", &[""]);
        assert_eq!(none.code, 1, "{none:?}");
    })
    .await
    .expect("clients");
    drop(mesh);
}
