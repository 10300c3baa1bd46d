//! No identity, or a useless one, may exhaust a sidecar: a peer that completes the
//! handshake and then sends nothing is closed once the header read timeout has passed since
//! accept (HTTP/1.1 and HTTP/2 alike), and one identity cannot hold more than its share of
//! inbound connections.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use ward_tests::apps;
use ward_tests::mesh::{Pair, PairOptions, mesh_default};
use ward_tests::pki::{Crafted, LeafSpec};

/// An mTLS connection to `pair`'s inbound as `from`, offering `alpn`, after the handshake.
async fn connect(
    pair: &Pair,
    from: &Crafted,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = ward_tests::tls::svid_client(from.chain.clone(), from.key(), &[alpn]);
    ward_tests::tls::connect(pair.inbound, config)
        .await
        .expect("handshake")
}

/// Whether the server closes the connection within `within`.
async fn closed_within(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    within: Duration,
) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, tls.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An HTTP/2 server's SETTINGS (and its GOAWAY) come first.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_nothing_after_the_handshake_is_closed() {
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        limits: vec!["header_read_timeout: 1s".into()],
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let web = pair.pki.craft(&LeafSpec::svid(&pair.web_id()));
    for alpn in [&b"h2"[..], b"http/1.1", b"ward-h2/1"] {
        let mut tls = connect(&pair, &web, alpn).await;
        assert!(
            closed_within(&mut tls, Duration::from_secs(10)).await,
            "{}: a silent peer must be closed",
            String::from_utf8_lossy(alpn)
        );
    }
    let metrics = pair.orders.admin_get("/metrics").1;
    assert!(
        metrics.contains("ward_connections_closed_total{reason=\"no_first_request\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_cannot_take_every_inbound_connection() {
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        limits: vec!["max_connections_per_peer: 2".into()],
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let hog = pair
        .pki
        .craft(&LeafSpec::svid(&pair.pki.id("default", "hog")));
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(connect(&pair, &hog, b"http/1.1").await);
    }
    for tls in &mut held {
        assert!(!closed_within(tls, Duration::from_millis(300)).await);
    }
    let mut third = connect(&pair, &hog, b"http/1.1").await;
    assert!(
        closed_within(&mut third, Duration::from_secs(10)).await,
        "a third connection of the same identity is closed"
    );
    // Everyone else is still served, through the client sidecar.
    let outbound = pair.outbound;
    let status = tokio::task::spawn_blocking(move || ward_tests::mesh::http_get(outbound, "/x"))
        .await
        .expect("task")
        .map(|(code, _)| code);
    assert_eq!(status, Some(200));
    drop(held);
}

/// The control plane's admin listener closes a connection whose request head never
/// completes, and its gRPC listener a connection that never finishes the TLS handshake.
#[test]
fn the_control_plane_closes_half_sent_heads_and_stalled_handshakes() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = ward_tests::mesh::ControlPlane::start(dir.path(), "1h");
    for (addr, partial) in [
        (cp.admin, &b"GET /metrics HTTP/1.1\r\nHost: a\r\n"[..]),
        (cp.listen, b"\x16\x03\x01\x00"),
    ] {
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        tcp.write_all(partial).expect("send");
        let mut buf = [0u8; 64];
        // Closed: end of stream or a reset; a read timing out means it is still open.
        let closed = loop {
            match tcp.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => {
                    break !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        };
        assert!(closed, "{addr}: a stalled peer must be closed");
    }
}

/// One identity can hold only so many Watch streams on the control plane; the next gets
/// RESOURCE_EXHAUSTED and the slots come back when streams close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_identity() {
    use hyper_util::rt::TokioIo;
    use ward_api::v1;
    ward_tests::init();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = {
        let d = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            ward_tests::mesh::ControlPlane::start_with(
                &d,
                "1h",
                &["--max-watches-per-identity", "2"],
            )
        })
        .await
        .expect("start control plane")
    };
    let (cert, key) = (dir.path().join("w.pem"), dir.path().join("w.key"));
    ward_tests::bin::ward([
        "cert".as_ref(),
        "issue".as_ref(),
        "--ca-dir".as_ref(),
        cp.data_dir.as_os_str(),
        "--spiffe-id".as_ref(),
        "spiffe://example.org/ns/default/sa/greedy".as_ref(),
        "--cert".as_ref(),
        cert.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ])
    .ok();
    let svid = ward_certs::Svid::read(&cert, &key).expect("svid");
    let config =
        ward_tests::tls::svid_client(svid.chain().to_vec(), svid.key().clone_key(), &[&b"h2"[..]]);
    let connector = tokio_rustls::TlsConnector::from(config);
    let addr = cp.listen;
    // Each watch on a connection of its own, held with its stream; dropping both closes it.
    let open = || {
        let connector = connector.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_with_connector(tower::service_fn(move |_| {
                    let connector = connector.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(addr).await?;
                        let tls = connector
                            .connect(ward_certs::tls::mesh_server_name(), tcp)
                            .await?;
                        Ok::<_, std::io::Error>(TokioIo::new(tls))
                    }
                }))
                .await
                .expect("connect");
            let mut client = v1::bundle_client::BundleClient::new(channel);
            // The proxy's side of the stream: acknowledgements, ended by dropping `acks`.
            let (acks, rx) = tokio::sync::mpsc::channel::<v1::BundleAck>(1);
            let watch = client
                .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            watch.map(|w| (client, w, acks))
        }
    };
    let first = open().await.expect("first watch");
    let _second = open().await.expect("second watch");
    let Err(refused) = open().await else {
        panic!("a third watch of the same identity must be refused");
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    drop(first);
    // The slot comes back once the server sees the proxy's side end.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open().await {
            Ok(_) => break,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "slot never returned");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("{s:?}"),
        }
    }
}

/// Each listener has its own connection budget: peers holding every inbound slot of a
/// sidecar do not stop its app from calling out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_peers_cannot_starve_the_outbound_listener() {
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    // A third sidecar with both listeners and room for two connections each.
    let mid_id = pair.pki.id("default", "mid");
    pair.pki
        .svid(&mid_id)
        .write(
            &pair.pki.dir().join("mid.pem"),
            &pair.pki.dir().join("mid.key"),
        )
        .expect("write svid");
    let (inbound, outbound) = (ward_tests::mesh::free_addr(), ward_tests::mesh::free_addr());
    let config = format!(
        "trust_domain: example.org\n\
         identity: {{ cert: mid.pem, key: mid.key, bundle: ca/bundle.pem }}\n\
         inbound: [ {{ listen: {inbound}, app: {} }} ]\n\
         outbound: [ {{ listen: {outbound}, upstream: {}, server_identity: \"{}\" }} ]\n\
         policy: {{ dir: policies }}\nadmin: {}\nlimits: {{ max_connections: 2 }}\n",
        app.addr,
        pair.inbound,
        pair.orders_id(),
        ward_tests::mesh::free_addr(),
    );
    let dir = pair.pki.dir().to_owned();
    let _mid =
        tokio::task::spawn_blocking(move || ward_tests::mesh::Proxy::start(&dir, "mid", &config))
            .await
            .expect("start mid");
    let web = pair.pki.craft(&LeafSpec::svid(&pair.web_id()));
    let config = ward_tests::tls::svid_client(web.chain.clone(), web.key(), &[&b"http/1.1"[..]]);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            ward_tests::tls::connect(inbound, config.clone())
                .await
                .expect("handshake"),
        );
    }
    // The inbound budget is spent: a third peer is turned away...
    let third = ward_tests::tls::connect(inbound, config.clone()).await;
    let refused = match third {
        Err(_) => true,
        Ok(mut tls) => closed_within(&mut tls, Duration::from_secs(5)).await,
    };
    assert!(refused, "the inbound listener is full");
    // ...while the app still calls out through the outbound listener.
    let status = tokio::task::spawn_blocking(move || ward_tests::mesh::http_get(outbound, "/x"))
        .await
        .expect("task")
        .map(|(code, _)| code);
    assert_eq!(status, Some(200));
    drop(held);
}

/// A WebSocket spliced from an inbound connection keeps that connection's per-peer slot
/// for as long as it lives: upgrades are no way around the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_keeps_its_connection_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        limits: vec!["max_connections_per_peer: 1".into()],
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let peer = pair
        .pki
        .craft(&LeafSpec::svid(&pair.pki.id("default", "ws")));
    let config = ward_tests::tls::svid_client(peer.chain.clone(), peer.key(), &[&b"http/1.1"[..]]);
    let mut ws = ward_tests::tls::connect(pair.inbound, config.clone())
        .await
        .expect("handshake");
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: orders\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).await.expect("101");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    ws.write_all(b"ping").await.expect("frame");
    let mut echo = [0u8; 4];
    ws.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");

    let mut second = ward_tests::tls::connect(pair.inbound, config.clone())
        .await
        .expect("handshake");
    assert!(
        closed_within(&mut second, Duration::from_secs(5)).await,
        "the WebSocket still holds the identity's only slot"
    );
    drop(ws);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = ward_tests::tls::connect(pair.inbound, config.clone())
            .await
            .expect("handshake");
        if !closed_within(&mut next, Duration::from_millis(300)).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}
