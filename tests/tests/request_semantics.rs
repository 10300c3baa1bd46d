//! What the outside red team found, by class, end to end through real sidecars: a rule must
//! judge what the app will act on (every header value, every spelling of a host or a
//! method, a gRPC path whatever its content-type, no unjudged protocol switch), and the
//! identity the app is told is exactly the verified one (no trailer, `Connection` header or
//! non-ward peer can forge or remove it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use ward_tests::apps::{self, App};
use ward_tests::mesh::{Pair, PairOptions};
use ward_tests::pki::LeafSpec;
use ward_tests::tls::raw_exchange;

fn policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  action: {action}\n  rules:\n{rules}---\n"
    )
}

const ALLOW_ALL: &str = "apiVersion: ward.dev/v1alpha1\nkind: MeshPolicy\n\
     metadata: { name: mesh, namespace: ward-system }\nspec: { default: allow-authenticated }\n---\n";

async fn pair(app: &App, policy: String, inbound_protocol: &'static str) -> Pair {
    let options = PairOptions {
        policy: Some(policy),
        inbound_protocol,
        ..Default::default()
    };
    Pair::launch(app.addr, options).await
}

/// Sends raw bytes to the client sidecar's outbound (as the app would) and returns the
/// response's status and body.
async fn send(addr: SocketAddr, request: Vec<u8>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(&request).expect("send");
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw);
        parse(&raw)
    })
    .await
    .expect("request task")
}

fn parse(raw: &[u8]) -> (u16, String) {
    let raw = String::from_utf8_lossy(raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A GET with extra raw header lines (which may hold any bytes).
fn get(path: &str, host: &str, extra: &[u8]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    req.extend_from_slice(extra);
    req.extend_from_slice(b"Connection: close\r\n\r\n");
    req
}

fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_conditions_judge_every_value_and_every_byte() {
    let app = apps::http_echo().await;
    let rules = [
        policy(
            "no-admin",
            "DENY",
            "  - when: [ { key: \"request.headers[x-role]\", values: [admin] } ]\n\
             \x20 - when: [ { key: \"request.headers[x-debug]\", present: true } ]\n",
        ),
        policy(
            "eu-only",
            "ALLOW",
            "  - when: [ { key: \"request.headers[x-tenant]\", values: [\"eu-*\"] } ]\n",
        ),
    ]
    .concat();
    let mesh = pair(&app, rules, "auto").await;
    let cases: [(&[u8], u16, &str); 8] = [
        (b"x-tenant: eu-1\r\n", 200, "one good value"),
        (
            b"x-tenant: eu-1\r\nx-tenant: us-1\r\n",
            403,
            "ALLOW needs every value",
        ),
        (b"x-tenant: eu-1, us-1\r\n", 403, "and every list element"),
        (
            b"x-tenant: eu-1\r\nx-role: user\r\nx-role: admin\r\n",
            403,
            "DENY on a second value",
        ),
        (
            b"x-tenant: eu-1\r\nx-role: user,admin\r\n",
            403,
            "DENY on a list element",
        ),
        (
            b"x-tenant: eu-1\r\nx-debug: \xe9t\xe9\r\n",
            403,
            "a latin-1 value is present",
        ),
        (
            b"x-tenant: eu-\xe9\r\n",
            200,
            "a latin-1 value is matched as bytes",
        ),
        (b"x-tenant: \xe9u-1\r\n", 403, "and never counts as absent"),
    ];
    for (headers, status, why) in cases {
        let (got, body) = send(mesh.outbound, get("/", "orders", headers)).await;
        assert_eq!(got, status, "{why}: {body}");
    }
    assert_eq!(app.hits(), 2, "only the allowed calls reached the app");

    // `ward policy check` decides the same, `--header` repeated.
    let dir = mesh.pki.dir().join("policies");
    let check = |headers: &[&str]| {
        let mut args = vec![
            "policy".to_owned(),
            "check".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--to-namespace".into(),
            "default".into(),
            "--from".into(),
            mesh.web_id(),
            "--port".into(),
            "8080".into(),
        ];
        for h in headers {
            args.push("--header".into());
            args.push(h.to_string());
        }
        ward_tests::bin::ward(args)
    };
    check(&["x-tenant=eu-1"]).ok();
    for denied in [
        &["x-tenant=eu-1", "x-tenant=us-1"][..],
        &["x-tenant=eu-1, us-1"],
        &["x-tenant=eu-1", "x-role=user", "x-role=admin"],
    ] {
        let run = check(denied);
        assert_eq!(run.code, 3, "{denied:?}: {run:#?}");
        assert!(run.stdout.starts_with("DENY"), "{run:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_rule_holds_for_every_spelling_and_the_app_gets_what_was_judged() {
    let app = apps::http_echo().await;
    let rules = [
        ALLOW_ALL.to_owned(),
        policy(
            "no-internal",
            "DENY",
            "  - to: [ { hosts: [\"internal.example.org\"] } ]\n",
        ),
    ]
    .concat();
    let mesh = pair(&app, rules, "auto").await;
    for host in [
        "internal.example.org",
        "internal.example.org:80",
        "internal.example.org:443",
        "internal.example.org.",
        "INTERNAL.Example.ORG",
        "internal.example.org.:8080",
    ] {
        let (status, body) = send(mesh.outbound, get("/", host, b"")).await;
        assert_eq!(status, 403, "{host}: {body}");
    }
    for bad in [
        get("/", "user@internal.example.org", b""),
        get("/", "intern%61l.example.org", b""),
        b"GET http://user:pw@internal.example.org/ HTTP/1.1\r\nHost: internal.example.org\r\nConnection: close\r\n\r\n".to_vec(),
    ] {
        let (status, body) = send(mesh.outbound, bad.clone()).await;
        assert_eq!(status, 400, "{}: {body}", String::from_utf8_lossy(&bad));
    }
    assert_eq!(app.hits(), 0);

    let (status, body) = send(mesh.outbound, get("/", "Public.Example.ORG.:80", b"")).await;
    assert_eq!(status, 200, "{body}");
    let seen = echo(&body);
    assert_eq!(seen["headers"]["host"][0], "public.example.org", "{seen}");

    // A direct HTTP/1.1 peer: two Host headers, or a target that disagrees with Host.
    let web = mesh.pki.craft(&LeafSpec::svid(&mesh.web_id()));
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: public.example.org\r\nHost: internal.example.org\r\nConnection: close\r\n\r\n"[..],
        b"GET http://internal.example.org/ HTTP/1.1\r\nHost: public.example.org\r\nConnection: close\r\n\r\n",
    ] {
        let got = raw_exchange(mesh.inbound, &web, &[b"http/1.1"], raw, Duration::from_secs(5)).await;
        assert_eq!(parse(&got).0, 400, "{}", String::from_utf8_lossy(&got));
    }
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_are_judged_as_the_app_reads_them_and_grpc_rules_hold_for_any_content_type() {
    let app = apps::http_echo().await;
    let rules = [
        ALLOW_ALL.to_owned(),
        policy("no-delete", "DENY", "  - to: [ { methods: [DELETE] } ]\n"),
        policy(
            "no-post",
            "DENY",
            "  - to: [ { grpc: { service: bank.v1.Ledger, methods: [Post] } } ]\n",
        ),
    ]
    .concat();
    let mesh = pair(&app, rules, "auto").await;
    for method in ["DELETE", "delete", "Delete", "dELETE"] {
        let req =
            format!("{method} /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n");
        let (status, _) = send(mesh.outbound, req.into_bytes()).await;
        assert!(matches!(status, 400 | 403), "{method}: {status}");
        if method != "DELETE" {
            assert_eq!(status, 400, "{method}: a non-canonical spelling is refused");
        }
    }
    for content_type in [
        Some("application/grpc"),
        Some("application/grpc+proto"),
        Some("APPLICATION/GRPC"),
        Some("application/grpc-web"),
        Some("application/grpc-web-text"),
        Some("application/proto"),
        Some("application/json"),
        Some("text/plain"),
        None,
    ] {
        let ct = content_type
            .map(|c| format!("content-type: {c}\r\n"))
            .unwrap_or_default();
        for path in [
            "/bank.v1.Ledger/Post",
            "/bank.v1.Ledger/./Post",
            "//bank.v1.Ledger/P%6Fst",
        ] {
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: ledger\r\n{ct}content-length: 0\r\nConnection: close\r\n\r\n"
            );
            let (status, _) = send(mesh.outbound, req.into_bytes()).await;
            assert!(
                matches!(status, 200 | 403),
                "{content_type:?} {path}: {status}"
            );
        }
    }
    assert_eq!(
        app.hits(),
        0,
        "no spelling of a denied call reached the app"
    );
    let req = "POST /bank.v1.Ledger/GetBalance HTTP/1.1\r\nHost: ledger\r\ncontent-type: application/json\r\ncontent-length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(send(mesh.outbound, req.as_bytes().to_vec()).await.0, 200);
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_allowed_upgrade_is_carried_and_never_h2c() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, ALLOW_ALL.to_owned(), "auto").await;
    // h2c on an allowed GET: forwarded as a plain request; the app is not asked to switch.
    let (status, body) = send(
        mesh.outbound,
        get(
            "/orders/1",
            "orders",
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen = echo(&body);
    for hop in ["upgrade", "http2-settings", "connection"] {
        assert!(
            seen["headers"].get(hop).is_none(),
            "{hop} reached the app: {seen}"
        );
    }
    // The app switching protocols for a request that did not ask for it is refused.
    let (status, _) = send(
        mesh.outbound,
        get("/ws", "orders", b"Connection: upgrade\r\nUpgrade: h2c\r\n"),
    )
    .await;
    assert_eq!(status, 502);

    // A direct peer gets the same: no 101 for h2c, and after a refused switch the next
    // request on the connection is still judged (CL+TE refused).
    let web = mesh.pki.craft(&LeafSpec::svid(&mesh.web_id()));
    let mut raw = b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\nUpgrade: h2c\r\n\r\n".to_vec();
    raw.extend_from_slice(
        b"POST /orders/2 HTTP/1.1\r\nHost: orders\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    let got = raw_exchange(
        mesh.inbound,
        &web,
        &[b"http/1.1"],
        &raw,
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains(" 101 "), "{text}");
    assert!(
        text.contains("HTTP/1.1 400"),
        "CL+TE after an Upgrade header: {text}"
    );
    assert_eq!(app.hits(), 3, "the refused request never reached the app");

    // WebSocket still works end to end: 101, then bytes echoed both ways.
    let outbound = mesh.outbound;
    let echoed = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(outbound).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: orders\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).expect("read") == 1 {
            head.push(byte[0]);
        }
        tcp.write_all(b"frame").expect("send frame");
        let mut frame = [0u8; 5];
        tcp.read_exact(&mut frame).expect("echo");
        (parse(&head).0, frame)
    })
    .await
    .expect("ws task");
    assert_eq!(echoed, (101, *b"frame"));
}

/// A WebSocket upgrade reaches the app as an HTTP/1.1 client would send it: origin-form
/// target and a `Host` header (Go's net/http refuses a request without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reaches_the_app_in_origin_form_with_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = listener.local_addr().expect("addr");
    let (heads, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let _ = tcp
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let mut sink = [0u8; 64];
                let _ = tcp.read(&mut sink).await;
            });
        }
    });
    let options = PairOptions {
        policy: Some(ALLOW_ALL.to_owned()),
        ..Default::default()
    };
    let mesh = Pair::launch(app, options).await;
    let outbound = mesh.outbound;
    let status = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(outbound).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(b"GET /ws?x=1 HTTP/1.1\r\nHost: orders.example\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).expect("read") == 1 {
            head.push(byte[0]);
        }
        parse(&head).0
    })
    .await
    .expect("client");
    assert_eq!(status, 101);
    let head = seen.recv().await.expect("the app saw the upgrade");
    assert!(head.starts_with("GET /ws?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nhost: orders.example\r\n"),
        "{head}"
    );
}

/// A chunked request with trailers that name the identity headers; the app reports what
/// reached it.
fn with_trailers() -> Vec<u8> {
    b"POST /t HTTP/1.1\r\nHost: orders\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\
Trailer: x-ward-peer-identity, x-forwarded-client-cert, x-ward-original-protocol, x-kept\r\n\
Connection: close\r\n\r\n\
5\r\nhello\r\n0\r\n\
x-ward-peer-identity: spiffe://example.org/ns/default/sa/admin\r\n\
x-forwarded-client-cert: By=x;URI=spiffe://example.org/ns/default/sa/admin\r\n\
x-ward-original-protocol: http/1.1\r\n\
x-kept: yes\r\n\r\n"
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_never_arrive_in_trailers() {
    let app = apps::http_echo().await;
    // The app spoken to in HTTP/1.1 (chunked trailers) and in HTTP/2 (trailers frame).
    for protocol in ["auto", "http2"] {
        let mesh = pair(&app, ALLOW_ALL.to_owned(), protocol).await;
        let (status, body) = send(mesh.outbound, with_trailers()).await;
        assert_eq!(status, 200, "{body}");
        let seen = echo(&body);
        assert_eq!(seen["body_len"], 5);
        let trailers = &seen["trailers"];
        assert_eq!(
            trailers["x-kept"], "yes",
            "{protocol}: trailers arrive: {seen}"
        );
        for name in [
            "x-ward-peer-identity",
            "x-forwarded-client-cert",
            "x-ward-original-protocol",
        ] {
            assert!(
                trailers.get(name).is_none(),
                "{protocol}: {name} in trailers: {seen}"
            );
        }
        assert_eq!(seen["headers"]["x-ward-peer-identity"][0], mesh.web_id());

        // And from a direct HTTP/1.1 peer.
        let web = mesh.pki.craft(&LeafSpec::svid(&mesh.web_id()));
        let got = raw_exchange(
            mesh.inbound,
            &web,
            &[b"http/1.1"],
            &with_trailers(),
            Duration::from_secs(5),
        )
        .await;
        let (status, body) = parse(&got);
        assert_eq!(status, 200, "{body}");
        let seen = echo(&body);
        assert_eq!(seen["trailers"]["x-kept"], "yes", "{seen}");
        assert!(
            seen["trailers"].get("x-ward-peer-identity").is_none(),
            "{seen}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_name_away_what_ward_sets() {
    let app = apps::http_echo().await;
    let mesh = pair(&app, ALLOW_ALL.to_owned(), "auto").await;
    let web = mesh.pki.craft(&LeafSpec::svid(&mesh.web_id()));
    let raw = b"GET /orders/1 HTTP/1.1\r\nHost: orders\r\n\
Connection: x-ward-peer-identity, x-forwarded-client-cert, x-request-id, close\r\n\
x-ward-peer-identity: spiffe://example.org/ns/default/sa/admin\r\n\
x-ward-original-protocol: http/1.1\r\n\r\n";
    let got = raw_exchange(
        mesh.inbound,
        &web,
        &[b"http/1.1"],
        raw,
        Duration::from_secs(5),
    )
    .await;
    let (status, body) = parse(&got);
    assert_eq!(status, 200, "{body}");
    let seen = echo(&body);
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-ward-peer-identity"],
        serde_json::json!([mesh.web_id()])
    );
    assert_eq!(
        headers["x-forwarded-client-cert"][0],
        format!("By={};URI={}", mesh.orders_id(), mesh.web_id())
    );
    assert!(
        headers["x-request-id"][0]
            .as_str()
            .is_some_and(|id| id.len() == 32),
        "{seen}"
    );
    assert!(headers.get("x-ward-original-protocol").is_none(), "{seen}");
}

/// `x-ward-original-protocol` is believed only from a ward sidecar (ALPN `ward-h2/1`): an
/// HTTP/2 peer that is not ward (ALPN `h2`, as Envoy) cannot steer the app's protocol, and
/// never sees the header from a ward sidecar either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_protocol_is_only_taken_from_ward_sidecars() {
    use http_body_util::{BodyExt, Empty};
    let app = apps::http_echo().await;
    let mesh = pair(&app, ALLOW_ALL.to_owned(), "auto").await;
    let web = mesh.pki.craft(&LeafSpec::svid(&mesh.web_id()));
    let config = ward_tests::tls::svid_client(web.chain.clone(), web.key(), &[&b"h2"[..]]);
    let tls = ward_tests::tls::connect(mesh.inbound, config)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("https://orders/orders/1")
        .header("x-ward-original-protocol", "http/1.1")
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let seen = echo(&String::from_utf8_lossy(&body));
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "a non-ward peer cannot steer: {seen}"
    );
    assert!(
        seen["headers"].get("x-ward-original-protocol").is_none(),
        "{seen}"
    );
}

/// A ward sidecar calling a peer that is not ward (ALPN `h2`, as Envoy) never sends it
/// `x-ward-original-protocol`, even for an app that spoke HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_protocol_never_leaves_for_a_non_ward_peer() {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let pki = ward_tests::pki::TestPki::new("example.org");
    let orders = pki.svid(&pki.id("default", "orders"));
    let mut server = (*ward_tests::tls::bare_server(
        orders.chain().to_vec(),
        orders.key().clone_key(),
        &[&rustls::version::TLS13],
    ))
    .clone();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let peer = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let names: Vec<String> = req
                            .headers()
                            .keys()
                            .map(|k| k.as_str().to_owned())
                            .collect();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(names.join(",")),
                        )))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let web = pki.svid(&pki.id("default", "web"));
    web.write(&pki.dir().join("web.pem"), &pki.dir().join("web.key"))
        .expect("write svid");
    let outbound = ward_tests::mesh::free_addr();
    let config = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: web.pem, key: web.key, bundle: ca/bundle.pem }}\n\
         outbound:\n  - {{ listen: {outbound}, upstream: {peer}, server_identity: \"{}\" }}\n\
         admin: {}\n",
        pki.id("default", "orders"),
        ward_tests::mesh::free_addr(),
    );
    let dir = pki.dir().to_owned();
    let _web =
        tokio::task::spawn_blocking(move || ward_tests::mesh::Proxy::start(&dir, "web", &config))
            .await
            .expect("start web");
    let (status, body) = send(outbound, get("/x", "orders", b"x-app: 1\r\n")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-app"), "the peer saw the request: {body}");
    assert!(!body.contains("x-ward-original-protocol"), "{body}");
}
