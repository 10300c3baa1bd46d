//! SPIRE as the identity source (`identity: { spire: { socket } }`), against a real SPIRE
//! server and agent (v1.13.3, built from the SPIRE Go module by `make spire`; join-token
//! node attestation, `unix` workload attestation).
//!
//! - Two sidecars take their SVIDs from the agent (told apart by group ID) and carry a
//!   request over mTLS, authorized by policy on the SPIRE identity; a sidecar started
//!   before its registration entry exists waits, not ready, and comes up once it does.
//! - SVIDs rotate (a 20 s TTL: the agent renews at half-life) while requests go on.
//! - Federation: a peer of a trust domain the SPIRE server federates with is verified by
//!   that domain's roots and let in as far as policy says; a peer of a domain nobody
//!   federates with is refused at the handshake.
//! - The app's Workload API on the sidecar hands out JWT-SVIDs signed by SPIRE, validates
//!   them with SPIRE's JWT bundles (go-spiffe and py-spiffe), and refuses a wrong audience
//!   or a forged token.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ward_tests::apps::http_echo;
use ward_tests::k8s::eventually;
use ward_tests::mesh::Proxy;
use ward_tests::net::{free_addr, http_get};
use ward_tests::pki::{LeafSpec, TestPki};
use ward_tests::spiffe;
use ward_tests::spire::Spire;
use ward_tests::tls::{connect, svid_client};

const WEB: &str = "spiffe://example.org/ns/default/sa/web";
const ORDERS: &str = "spiffe://example.org/ns/default/sa/orders";
const PARTNER: &str = "spiffe://partner.org/ns/shop/sa/checkout";
/// orders' sidecar runs with this group, which its SPIRE entry selects.
const ORDERS_GID: &str = "1001";

fn policy() -> String {
    format!(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: orders, namespace: default }}\n\
         spec:\n  selector: {{ matchLabels: {{ app: orders }} }}\n  action: ALLOW\n  rules:\n\
         \x20   - from: [{{ principals: [\"{WEB}\"] }}]\n\
         \x20   - from: [{{ principals: [\"{PARTNER}\"] }}]\n\
         \x20     to: [{{ methods: [GET] }}]\n\
         \x20   - from: [{{ namespaces: [shop] }}]\n\
         \x20     to: [{{ methods: [DELETE] }}]\n"
    )
}

/// A GET (or another method) sent raw by a peer holding `chain`/`key` over mTLS: the
/// response's status line, or the error that ended the exchange.
async fn peer_request(addr: SocketAddr, peer: &ward_tests::pki::Crafted, method: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = svid_client(peer.chain.clone(), peer.key(), &[b"http/1.1"]);
    let mut tls = match connect(addr, config).await {
        Ok(tls) => tls,
        Err(e) => return format!("handshake: {e}"),
    };
    let request =
        format!("{method} /partner HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n");
    if let Err(e) = tls.write_all(request.as_bytes()).await {
        return format!("write: {e}");
    }
    let mut got = Vec::new();
    match tls.read_to_end(&mut got).await {
        Err(e) if got.is_empty() => format!("read: {e}"),
        _ => String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn serial(proxy: &Proxy) -> String {
    let (status, body) = proxy.admin_get("/certs");
    assert_eq!(status, 200, "{body}");
    let certs: Value = serde_json::from_str(&body).expect("json");
    certs["serial"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_take_identities_and_federation_from_spire() {
    ward_tests::init();
    let app = http_echo().await;
    let app_addr = app.addr;
    tokio::task::spawn_blocking(move || run(app_addr))
        .await
        .expect("spire test");
    assert!(app.hits() >= 3, "the app was reached");
}

fn run(app: SocketAddr) {
    let partner = TestPki::new("partner.org");
    let stranger = TestPki::new("partner.org");
    let mut spire = Spire::server("example.org");
    spire.federate("partner.org", &partner.bundle_path());
    spire.entry(
        ORDERS,
        &[&format!("unix:gid:{ORDERS_GID}")],
        &[
            "-x509SVIDTTL",
            "20",
            "-federatesWith",
            "spiffe://partner.org",
        ],
    );
    spire.start_agent();

    let dir = spire.dir.path().to_owned();
    std::fs::create_dir_all(dir.join("policies")).expect("policies");
    std::fs::write(dir.join("policies/orders.yaml"), policy()).expect("policy");
    let (inbound, outbound) = (free_addr(), free_addr());
    let socket = spire.agent_socket.display().to_string();
    let orders_config = format!(
        "trust_domain: example.org\n\
         identity: {{ spire: {{ socket: \"unix://{socket}\" }} }}\n\
         workload: {{ namespace: default, labels: {{ app: orders }} }}\n\
         inbound: [{{ listen: {inbound}, app: {app} }}]\n\
         policy: {{ dir: policies }}\n\
         audit: {{ decisions: all, log: orders-audit.log }}\n\
         admin: {}\n",
        free_addr()
    );
    let gid = format!("--regid={ORDERS_GID}");
    let prefix = ["setpriv", gid.as_str(), "--clear-groups"];
    let mut orders = Proxy::spawn_prefixed(&dir, "orders", &orders_config, &[], &[], &prefix, None);
    orders.wait_ready();

    // web starts before its entry exists: it waits for its SVID, not ready meanwhile.
    let api_socket = dir.join("web-api.sock");
    let web_config = format!(
        "trust_domain: example.org\n\
         identity: {{ spire: {{ socket: {socket} }} }}\n\
         outbound: [{{ listen: {outbound}, upstream: {inbound}, server_identity: \"{ORDERS}\" }}]\n\
         workload_api: {{ socket: {}, allowed_uids: [0] }}\n\
         admin: {}\n",
        api_socket.display(),
        free_addr()
    );
    let mut web = Proxy::spawn(&dir, "web", &web_config, &[]);
    eventually(Duration::from_secs(10), "web waits for SPIRE", || {
        web.logs()
            .contains("no SVID from the SPIRE agent yet")
            .then_some(())
    });
    let (status, body) = web.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("identity"), "{body}");
    spire.entry(WEB, &["unix:gid:0"], &["-x509SVIDTTL", "20"]);
    web.wait_ready();

    // web → orders over mTLS with SPIRE's SVIDs; orders' policy admits web.
    let (status, body) = http_get(outbound, "/hello").expect("answer");
    assert_eq!(status, 200, "{body}");
    let audit = std::fs::read_to_string(dir.join("orders-audit.log")).unwrap_or_default();
    assert!(audit.contains(WEB), "{audit}");

    // Federation: a partner.org peer is verified by partner.org's roots and policy lets it
    // GET; its DELETE is denied; the same name under roots nobody federates with is refused
    // at the handshake.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let peer = partner.craft(&LeafSpec::svid(PARTNER));
    let got = rt.block_on(peer_request(inbound, &peer, "GET"));
    assert!(got.contains("200"), "{got}");
    // Our namespace `shop` may DELETE; the partner's `ns/shop` is not ours.
    let got = rt.block_on(peer_request(inbound, &peer, "DELETE"));
    assert!(got.contains("403"), "{got}");
    let impostor = stranger.craft(&LeafSpec::svid(PARTNER));
    let got = rt.block_on(peer_request(inbound, &impostor, "GET"));
    assert!(
        !got.contains("HTTP/1.1"),
        "an unfederated root's SVID got an answer: {got}"
    );
    let foreign = TestPki::new("other.org");
    let other = foreign.craft(&LeafSpec::svid("spiffe://other.org/ns/x/sa/y"));
    let got = rt.block_on(peer_request(inbound, &other, "GET"));
    assert!(
        !got.contains("HTTP/1.1"),
        "an unfederated domain got an answer: {got}"
    );
    let logs = orders.logs();
    assert!(
        logs.contains("partner.org") || logs.contains("other.org"),
        "{logs}"
    );
    let (_, certs) = orders.admin_get("/certs");
    assert!(
        certs.contains("partner.org"),
        "federated bundle shown in /certs: {certs}"
    );

    // Rotation: SVIDs of 20 s renew at half-life; requests go on across it.
    let before = serial(&web);
    eventually(Duration::from_secs(40), "web's SVID rotated", || {
        (serial(&web) != before).then_some(())
    });
    let (status, body) = http_get(outbound, "/after-rotation").expect("answer");
    assert_eq!(status, 200, "{body}");

    jwt_svids(&api_socket);
    drop((web, orders, spire));
}

/// The app's Workload API on the web sidecar: JWT-SVIDs from SPIRE.
fn jwt_svids(socket: &Path) {
    let got: Value =
        serde_json::from_str(spiffe::go(socket, "jwt", &["payments"]).ok()).expect("json");
    assert_eq!(got["spiffe_id"], WEB, "{got}");
    let token = got["token"].as_str().expect("token").to_owned();
    let valid: Value =
        serde_json::from_str(spiffe::go(socket, "validate", &["payments", &token]).ok())
            .expect("json");
    assert_eq!(valid["spiffe_id"], WEB, "{valid}");
    assert_eq!(valid["claims"]["sub"], WEB, "{valid}");
    let py: Value =
        serde_json::from_str(spiffe::py(socket, "validate", &["payments", &token]).ok())
            .expect("json");
    assert_eq!(py["spiffe_id"], WEB, "{py}");
    let py_jwt: Value =
        serde_json::from_str(spiffe::py(socket, "jwt", &["ledger"]).ok()).expect("json");
    assert_eq!(py_jwt["spiffe_id"], WEB, "{py_jwt}");

    // Another audience, or a token whose payload was changed, is invalid.
    let wrong = spiffe::go(socket, "validate", &["other", &token]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(wrong.stderr.contains("audience"), "{wrong:?}");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let forged = parts.join(".");
    let bad = spiffe::go(socket, "validate", &["payments", &forged]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("InvalidArgument"), "{bad:?}");
}
