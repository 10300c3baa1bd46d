//! Real loopback TLS handshakes between peers holding SVIDs: who gets in, who does not, and
//! why — each refusal must name its own rule.

use std::collections::BTreeSet;

use rustls::version::{TLS12, TLS13};
use ward_certs::tls::{ExpectedPeer, MeshIdentity};
use ward_certs::{Svid, parse_spiffe_id};
use ward_tests::pki::{LeafSpec, TestPki, bad_leaves};
use ward_tests::tls::{EchoServer, bare_client, bare_server, connect, echo, refused};

const ALPN: &[&[u8]] = &[b"h2"];

fn mesh(pki: &TestPki, svid: &Svid) -> MeshIdentity {
    MeshIdentity::new(svid, pki.bundle()).expect("mesh identity")
}

fn exact(id: &str) -> ExpectedPeer {
    ExpectedPeer::Exact(parse_spiffe_id(id).expect("id"))
}

async fn mesh_server(pki: &TestPki, id: &str) -> (EchoServer, MeshIdentity) {
    let identity = mesh(pki, &pki.svid(id));
    let server = EchoServer::start(identity.server_config(ALPN).expect("server config")).await;
    (server, identity)
}

#[tokio::test]
async fn mutual_tls_succeeds_with_the_right_identities() {
    let pki = TestPki::new("example.org");
    let server_id = pki.id("default", "orders");
    let client_id = pki.id("default", "web");
    let (mut server, _) = mesh_server(&pki, &server_id).await;
    let client = mesh(&pki, &pki.svid(&client_id));

    let mut stream = connect(
        server.addr,
        client.client_config(exact(&server_id), ALPN).unwrap(),
    )
    .await
    .expect("handshake");
    let (_, conn) = stream.get_ref();
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    let seen_by_client = ward_certs::tls::peer_spiffe_id(conn.peer_certificates());
    assert_eq!(seen_by_client.map(|i| i.to_string()), Some(server_id));
    assert_eq!(echo(&mut stream, b"ping").await.unwrap(), b"ping");
    assert_eq!(server.next_handshake().await, Ok(Some(client_id)));
}

#[tokio::test]
async fn mutual_tls_through_an_intermediate() {
    let pki = TestPki::with_intermediate("example.org");
    let server_id = pki.id("default", "orders");
    let (mut server, _) = mesh_server(&pki, &server_id).await;
    let client = mesh(&pki, &pki.svid(&pki.id("default", "web")));
    assert_eq!(pki.svid(&server_id).chain().len(), 2, "leaf + intermediate");

    let mut stream = connect(
        server.addr,
        client.client_config(exact(&server_id), ALPN).unwrap(),
    )
    .await
    .expect("handshake");
    assert_eq!(echo(&mut stream, b"x").await.unwrap(), b"x");
    assert!(server.next_handshake().await.is_ok());
}

#[tokio::test]
async fn client_accepts_any_of_a_set_or_any_in_the_trust_domain() {
    let pki = TestPki::new("example.org");
    let server_id = pki.id("default", "orders");
    let (server, _) = mesh_server(&pki, &server_id).await;
    let client = mesh(&pki, &pki.svid(&pki.id("default", "web")));

    let set: BTreeSet<_> = [pki.id("default", "billing"), server_id.clone()]
        .iter()
        .map(|s| parse_spiffe_id(s).unwrap())
        .collect();
    for expected in [ExpectedPeer::OneOf(set), ExpectedPeer::AnyInTrustDomain] {
        let config = client.client_config(expected.clone(), ALPN).unwrap();
        connect(server.addr, config)
            .await
            .unwrap_or_else(|e| panic!("{expected}: {e}"));
    }
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate() {
    let pki = TestPki::new("example.org");
    let (mut server, _) = mesh_server(&pki, &pki.id("default", "orders")).await;

    let result = connect(server.addr, bare_client(None, &[&TLS13])).await;
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");
    if let Ok(mut stream) = result {
        assert!(
            echo(&mut stream, b"x").await.is_err(),
            "no data after refusal"
        );
    }
}

#[tokio::test]
async fn server_refuses_each_bad_client_certificate_naming_the_rule() {
    let pki = TestPki::new("example.org");
    let foreign = TestPki::new("example.org");
    let (mut server, _) = mesh_server(&pki, &pki.id("default", "orders")).await;

    for (case, leaf, rule) in bad_leaves(&pki, &foreign) {
        let client = bare_client(Some((leaf.chain.clone(), leaf.key())), &[&TLS13]);
        let result = connect(server.addr, client).await;
        let err = server
            .next_handshake()
            .await
            .expect_err(&format!("{case}: must be refused"));
        assert!(
            err.contains(rule),
            "{case}: server said {err:?}, want {rule:?}"
        );
        if let Ok(mut stream) = result {
            let sent = echo(&mut stream, b"secret").await;
            assert!(sent.is_err(), "{case}: no data may flow after refusal");
        }
    }

    // The same server still admits a good client afterwards.
    let good = pki.craft(&LeafSpec::svid(&pki.id("default", "client")));
    let mut ok = connect(
        server.addr,
        bare_client(Some((good.chain.clone(), good.key())), &[&TLS13]),
    )
    .await
    .expect("good client");
    assert_eq!(echo(&mut ok, b"ok").await.unwrap(), b"ok");
    assert!(server.next_handshake().await.is_ok());
}

#[tokio::test]
async fn client_refuses_each_bad_server_certificate_naming_the_rule() {
    let pki = TestPki::new("example.org");
    let foreign = TestPki::new("example.org");
    let client = mesh(&pki, &pki.svid(&pki.id("default", "web")));
    let config = client
        .client_config(ExpectedPeer::AnyInTrustDomain, ALPN)
        .unwrap();

    for (case, leaf, rule) in bad_leaves(&pki, &foreign) {
        let server =
            EchoServer::start(bare_server(leaf.chain.clone(), leaf.key(), &[&TLS13])).await;
        let err = refused(connect(server.addr, config.clone()).await, case);
        assert!(
            err.contains(rule),
            "{case}: client said {err:?}, want {rule:?}"
        );
    }
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let pki = TestPki::new("example.org");
    let (server, _) = mesh_server(&pki, &pki.id("default", "billing")).await;
    let client = mesh(&pki, &pki.svid(&pki.id("default", "web")));
    let want = pki.id("default", "orders");

    let err = refused(
        connect(
            server.addr,
            client.client_config(exact(&want), ALPN).unwrap(),
        )
        .await,
        "must refuse",
    );
    assert!(
        err.contains(&format!(
            "peer is {}, expected {want}",
            pki.id("default", "billing")
        )),
        "{err}"
    );
}

#[tokio::test]
async fn tls12_only_peers_are_refused_both_ways() {
    let pki = TestPki::new("example.org");
    let client_id = pki.id("default", "web");
    let (mut server, _) = mesh_server(&pki, &pki.id("default", "orders")).await;

    // A TLS 1.2-only client against a mesh server.
    let leaf = pki.craft(&LeafSpec::svid(&client_id));
    let client_err = refused(
        connect(
            server.addr,
            bare_client(Some((leaf.chain.clone(), leaf.key())), &[&TLS12]),
        )
        .await,
        "client must fail",
    );
    let server_err = server.next_handshake().await.unwrap_err();
    assert!(server_err.contains("incompatible"), "{server_err}");
    assert!(client_err.contains("ProtocolVersion"), "{client_err}");

    // A mesh client against a TLS 1.2-only server.
    let server_leaf = pki.craft(&LeafSpec::svid(&pki.id("default", "orders")));
    let old = EchoServer::start(bare_server(
        server_leaf.chain.clone(),
        server_leaf.key(),
        &[&TLS12],
    ))
    .await;
    let client = mesh(&pki, &pki.svid(&client_id));
    let err = refused(
        connect(
            old.addr,
            client
                .client_config(ExpectedPeer::AnyInTrustDomain, ALPN)
                .unwrap(),
        )
        .await,
        "must refuse TLS 1.2",
    );
    assert!(
        err.contains("ProtocolVersion") || err.contains("incompatible"),
        "{err}"
    );
}

#[tokio::test]
async fn certificate_and_bundle_swap_without_touching_the_listener() {
    let pki = TestPki::new("example.org");
    let server_id = pki.id("default", "orders");
    let (mut server, identity) = mesh_server(&pki, &server_id).await;
    let client = mesh(&pki, &pki.svid(&pki.id("default", "web")));
    let config = client.client_config(exact(&server_id), ALPN).unwrap();

    let serial_of = |stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        let leaf = &stream.get_ref().1.peer_certificates().expect("peer certs")[0];
        ward_certs::CertInfo::parse(leaf).expect("parse").serial
    };

    let mut old = connect(server.addr, config.clone()).await.expect("first");
    server.next_handshake().await.expect("first accepted");
    let old_serial = serial_of(&old);

    let renewed = pki.svid(&server_id);
    let new_serial = renewed.leaf_info().unwrap().serial;
    assert_ne!(old_serial, new_serial);
    identity.svid.swap(&renewed).expect("swap");

    let fresh = connect(server.addr, config.clone())
        .await
        .expect("after swap");
    server.next_handshake().await.expect("accepted after swap");
    assert_eq!(
        serial_of(&fresh),
        new_serial,
        "new handshakes see the new cert"
    );
    assert_eq!(
        echo(&mut old, b"still here").await.unwrap(),
        b"still here",
        "the open connection survives the swap"
    );

    // Swapping the server's bundle to a foreign root locks out clients of the old one
    // from the next handshake on, again without a new listener.
    let foreign = TestPki::new("example.org");
    identity.bundle.swap(foreign.bundle());
    let _ = connect(server.addr, config).await;
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("does not lead to a root"), "{err}");
    assert_eq!(echo(&mut old, b"again").await.unwrap(), b"again");
}

#[tokio::test]
async fn a_bundle_with_old_and_new_roots_trusts_both() {
    let old_ca = TestPki::new("example.org");
    let new_ca = TestPki::new("example.org");
    let mut bundle = old_ca.bundle();
    assert!(bundle.add(new_ca.ca.root().clone()).unwrap());
    assert!(
        !bundle.add(new_ca.ca.root().clone()).unwrap(),
        "adding twice is a no-op"
    );

    let server_id = old_ca.id("default", "orders");
    let identity = MeshIdentity::new(&old_ca.svid(&server_id), bundle.clone()).unwrap();
    let mut server = EchoServer::start(identity.server_config(ALPN).unwrap()).await;

    for ca in [&old_ca, &new_ca] {
        let client = MeshIdentity::new(&ca.svid(&ca.id("default", "web")), bundle.clone()).unwrap();
        connect(
            server.addr,
            client.client_config(exact(&server_id), ALPN).unwrap(),
        )
        .await
        .expect("handshake");
        assert!(server.next_handshake().await.is_ok());
    }

    // Finishing the rotation: the server serves a leaf of the new root and drops the old
    // root, which ends trust in the old root's leaves.
    let both = bundle.clone();
    bundle.remove(old_ca.ca.root()).unwrap();
    assert!(
        bundle.remove(new_ca.ca.root()).is_err(),
        "the last root stays"
    );
    identity.svid.swap(&new_ca.svid(&server_id)).unwrap();
    identity.bundle.swap(bundle);
    let client = MeshIdentity::new(&old_ca.svid(&old_ca.id("default", "web")), both).unwrap();
    let _ = connect(
        server.addr,
        client.client_config(exact(&server_id), ALPN).unwrap(),
    )
    .await;
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("does not lead to a root"), "{err}");
}

/// openssl, a TLS stack we did not write, as the client: it verifies the server's SVID
/// chain to the bundle, and the server admits it only with an SVID over TLS 1.3.
#[tokio::test]
async fn openssl_s_client_as_a_peer() {
    let pki = TestPki::new("example.org");
    let (mut server, _) = mesh_server(&pki, &pki.id("default", "orders")).await;
    let client_id = pki.id("default", "web");
    let (cert, key) = (pki.dir().join("web.pem"), pki.dir().join("web.key"));
    pki.svid(&client_id).write(&cert, &key).unwrap();
    let addr = server.addr.to_string();
    let bundle = pki.bundle_path();

    let s_client = |extra: &[&str]| {
        let mut args = vec![
            "s_client",
            "-connect",
            &addr,
            "-CAfile",
            bundle.to_str().unwrap(),
            "-verify_return_error",
        ];
        args.extend_from_slice(extra);
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.args(args).stdin(std::process::Stdio::null());
        async move {
            let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
                .await
                .expect("openssl finishes")
                .expect("openssl runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };

    let with_svid = [
        "-tls1_3",
        "-alpn",
        "h2",
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ];
    let out = s_client(&with_svid).await;
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert_eq!(server.next_handshake().await, Ok(Some(client_id)));

    s_client(&["-tls1_3"]).await;
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");

    let old = [
        "-tls1_2",
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ];
    s_client(&old).await;
    let err = server.next_handshake().await.unwrap_err();
    assert!(err.contains("incompatible"), "{err}");
}
