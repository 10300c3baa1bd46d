//! After ALPN, a sidecar speaks only the protocol agreed: HTTP/1.1 bytes on an `h2`
//! connection get an HTTP/2 protocol error (GOAWAY, then close), never an HTTP/1.1 answer;
//! an HTTP/2 preface on an `http/1.1` connection is a malformed request, never HTTP/2.

use std::time::Duration;

use ward_tests::apps;
use ward_tests::mesh::{Pair, PairOptions, mesh_default};
use ward_tests::pki::LeafSpec;
use ward_tests::tls::raw_exchange;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP/2 frames in `bytes`: (type, payload).
fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        out.push((bytes[3], bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_alpn_only_the_agreed_protocol_is_spoken() {
    let app = apps::http_echo().await;
    let options = PairOptions {
        policy: Some(mesh_default("allow-authenticated")),
        ..Default::default()
    };
    let pair = Pair::launch(app.addr, options).await;
    let web = pair.pki.craft(&LeafSpec::svid(&pair.web_id()));
    let quiet = Duration::from_secs(5);

    for alpn in [&b"h2"[..], b"ward-h2/1"] {
        let got = raw_exchange(
            pair.inbound,
            &web,
            &[alpn],
            b"GET / HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n",
            quiet,
        )
        .await;
        assert!(
            !got.starts_with(b"HTTP/1"),
            "no HTTP/1.1 answer after ALPN h2: {}",
            String::from_utf8_lossy(&got)
        );
        // What comes back, if anything, is HTTP/2: a GOAWAY with PROTOCOL_ERROR (1).
        let goaway = frames(&got).into_iter().find(|(t, _)| *t == 0x7);
        if !got.is_empty() {
            let (_, payload) =
                goaway.unwrap_or_else(|| panic!("a GOAWAY frame: {:?}", frames(&got)));
            assert_eq!(&payload[4..8], &[0, 0, 0, 1], "PROTOCOL_ERROR");
        }
    }

    let mut h2_on_h1 = PREFACE.to_vec();
    h2_on_h1.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let got = raw_exchange(pair.inbound, &web, &[b"http/1.1"], &h2_on_h1, quiet).await;
    assert!(
        frames(&got).iter().all(|(t, _)| *t != 0x4),
        "no HTTP/2 SETTINGS after ALPN http/1.1: {got:?}"
    );
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 5"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(app.hits(), 0);
}
