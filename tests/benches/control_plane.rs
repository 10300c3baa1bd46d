//! Control-plane figures, against the real `ward control-plane` binary (release build):
//! Certify throughput, and how fast one policy change reaches every one of N concurrent
//! `Policy.Watch` streams (default 10,000; `WARD_BENCH_WATCHERS` to change), with the
//! control plane's RSS. Run by `make bench`; prints a table and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use ward_api::v1;
use ward_certs::{ExpectedPeer, MeshIdentity, TrustBundle};
use ward_tests::mesh::{ControlPlane, mesh_default};

fn channel(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> tonic::transport::Channel {
    let connector = tokio_rustls::TlsConnector::from(tls);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let tls = connector
                    .connect(ward_certs::tls::mesh_server_name(), tcp)
                    .await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
}

/// A proxy's first Certify with a join token for `id`: its new key and SVID chain.
async fn bootstrap(
    cp: &ControlPlane,
    bundle: &TrustBundle,
    cp_id: &ward_certs::SpiffeId,
    id: &str,
    labels: &str,
) -> (
    rustls_pki_types::PrivateKeyDer<'static>,
    Vec<rustls_pki_types::CertificateDer<'static>>,
) {
    let token = cp.token(id, labels, &["--uses", "1"]);
    let tls = ward_certs::tls::bootstrap_client_config(
        bundle.clone(),
        ExpectedPeer::Exact(cp_id.clone()),
        &[b"h2"],
    )
    .expect("bootstrap TLS config");
    let mut client = v1::identity_client::IdentityClient::new(channel(cp.listen, tls));
    let (key, csr) = ward_certs::svid::new_key_and_csr(None).expect("key and CSR");
    let resp = client
        .certify(v1::CertifyRequest {
            csr,
            token,
            spiffe_id: String::new(),
            serving: Vec::new(),
        })
        .await
        .expect("bootstrap")
        .into_inner();
    let chain = resp
        .chain
        .into_iter()
        .map(rustls_pki_types::CertificateDer::from)
        .collect();
    (key, chain)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    ward_tests::init();
    let watchers: usize = std::env::var("WARD_BENCH_WATCHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_owned();
    let cp = tokio::task::spawn_blocking(move || {
        ControlPlane::start_with(&d, "24h", &["--certify-rate", "1000000"])
    })
    .await
    .expect("cp");
    cp.set_policy(&mesh_default("allow-authenticated"));
    let td = ward_certs::parse_trust_domain("example.org").unwrap();
    let bundle = TrustBundle::read(td.clone(), &cp.bundle_path()).expect("bundle");
    let cp_id = ward_certs::parse_spiffe_id("spiffe://example.org/ns/ward-system/sa/control-plane")
        .unwrap();

    // Certify throughput: renewals over mTLS (the steady-state load), 64 in flight.
    let ca = ward_certs::CertificateAuthority::load(&cp.data_dir).expect("CA");
    let (key, chain) = bootstrap(
        &cp,
        &bundle,
        &cp_id,
        "spiffe://example.org/ns/bench/sa/svc",
        "app=bench",
    )
    .await;
    let svid = ward_certs::Svid::new(chain, key).unwrap();
    let identity = MeshIdentity::new(&svid, bundle.clone()).unwrap();
    let tls = identity
        .client_config(ExpectedPeer::Exact(cp_id.clone()), &[b"h2"])
        .unwrap();
    let client = v1::identity_client::IdentityClient::new(channel(cp.listen, tls));
    let csrs: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            ward_certs::svid::new_key_and_csr(Some(svid.spiffe_id()))
                .unwrap()
                .1
        })
        .collect();
    let total = 6_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for csr in &csrs {
        let mut client = client.clone();
        let csr = csr.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..total / 64 {
                let req = v1::CertifyRequest {
                    csr: csr.clone(),
                    token: String::new(),
                    spiffe_id: String::new(),
                    serving: Vec::new(),
                };
                if client.certify(req).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let certify_rate = ok as f64 / started.elapsed().as_secs_f64();

    // Fan-out: N watchers, each with its own SVID and TLS connection.
    let mut receivers = Vec::with_capacity(watchers);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let connect_started = Instant::now();
    // One registration for all simulated proxies of one workload.
    bootstrap(
        &cp,
        &bundle,
        &cp_id,
        "spiffe://example.org/ns/bench/sa/watch",
        "app=watch",
    )
    .await;
    let watch_id = ward_certs::parse_spiffe_id("spiffe://example.org/ns/bench/sa/watch").unwrap();
    let watch_svid = ca
        .issue(&watch_id, Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    let watch_identity = MeshIdentity::new(&watch_svid, bundle.clone()).unwrap();
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..watchers {
        let tls = watch_identity
            .client_config(ExpectedPeer::Exact(cp_id.clone()), &[b"h2"])
            .unwrap();
        let mut client = v1::policy_client::PolicyClient::new(channel(cp.listen, tls));
        let tx = tx.clone();
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        receivers.push(tokio::spawn(async move {
            let mut stream = match client.watch(v1::PolicyWatchRequest::default()).await {
                Ok(s) => s.into_inner(),
                Err(_) => return,
            };
            // First snapshot: connected.
            if stream.message().await.ok().flatten().is_none() {
                return;
            }
            drop(permit);
            let _ = tx.send((i, Instant::now()));
            // Second snapshot: the change.
            if stream.message().await.ok().flatten().is_some() {
                let _ = tx.send((usize::MAX - i, Instant::now()));
            }
        }));
    }
    let mut connected = 0;
    while connected < watchers {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await {
            Ok(Some(_)) => connected += 1,
            _ => break,
        }
    }
    let connect_time = connect_started.elapsed();
    let cp_pid = cp.pid();
    let rss_connected = rss_kib(cp_pid);
    cp.set_policy(&format!("{}---\n{}", mesh_default("allow-authenticated"), "apiVersion: ward.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: { name: bench, namespace: bench }\nspec: { action: AUDIT, rules: [ {} ] }\n"));
    let changed = Instant::now();
    let mut latencies = Vec::with_capacity(watchers);
    while latencies.len() < connected {
        match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            Ok(Some((_, at))) => latencies.push(at.duration_since(changed)),
            _ => break,
        }
    }
    let rss_after = rss_kib(cp_pid);
    latencies.sort();
    println!("control-plane bench (release binaries, this machine)");
    println!("| figure | result | target |");
    println!("|---|---|---|");
    println!("| Certify (renewal over mTLS, 64 in flight) | {certify_rate:.0}/s | >= 3,000/s |");
    println!(
        "| Policy.Watch streams connected | {connected} of {watchers} in {:.1} s | 10,000 |",
        connect_time.as_secs_f64()
    );
    println!(
        "| one policy change reaching every watcher (p50 / p99 / max) | {:.0} / {:.0} / {:.0} ms ({} reached) | p99 <= 1 s |",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        latencies.len()
    );
    println!(
        "| control-plane RSS with the streams open (before / after push) | {} / {} MiB | <= 300 MiB |",
        rss_connected / 1024,
        rss_after / 1024
    );
    for r in receivers {
        r.abort();
    }
}
