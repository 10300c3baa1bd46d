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

/// Reads what the server sends until it closes (or 5 s pass).
async fn read_all(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// TLS alerts RFC 8446 asks for where rustls sends none, or sends one too late: an
/// oversized first record gets `record_overflow`; a record interleaved with a split
/// ClientHello gets `unexpected_message`; a client with no signature scheme the server's key
/// can use gets an alert before any ServerHello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_end_with_an_alert() {
    use tokio::io::AsyncWriteExt;
    let app = apps::http_echo().await;
    let pair = Pair::launch(app.addr, PairOptions::default()).await;

    let mut tcp = tokio::net::TcpStream::connect(pair.inbound)
        .await
        .expect("connect");
    let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x01];
    record.extend(std::iter::repeat_n(0u8, 16_385));
    tcp.write_all(&record).await.expect("send");
    assert_eq!(
        read_all(&mut tcp).await,
        [0x15, 3, 3, 0, 2, 2, 22],
        "record_overflow"
    );

    ward_tests::init();
    let config = ward_tests::tls::bare_client(None, &[&rustls::version::TLS13]);
    let mut client =
        rustls::ClientConnection::new(config, ward_certs::tls::mesh_server_name()).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    let payload = &hello[5..];
    let mut split = vec![0x16, 0x03, 0x01, 0x00, 10];
    split.extend_from_slice(&payload[..10]);
    split.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x00]);
    let rest = u16::try_from(payload.len() - 10).expect("short hello");
    split.extend_from_slice(&[0x16, 0x03, 0x01]);
    split.extend_from_slice(&rest.to_be_bytes());
    split.extend_from_slice(&payload[10..]);
    let mut tcp = tokio::net::TcpStream::connect(pair.inbound)
        .await
        .expect("connect");
    tcp.write_all(&split).await.expect("send");
    assert_eq!(
        read_all(&mut tcp).await,
        [0x15, 3, 3, 0, 2, 2, 10],
        "unexpected_message"
    );

    let dir = pair.pki.dir().to_owned();
    let inbound = pair.inbound.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-tls1_3",
                "-msg",
                "-sigalgs",
                "rsa_pss_rsae_sha256",
            ])
            .args(["-connect", &inbound, "-cert", "web.pem", "-key", "web.key"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl")
    })
    .await
    .expect("task");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("ServerHello"),
        "no ServerHello first: {text}"
    );
    assert!(text.contains("Alert"), "an alert: {text}");
}
