//! Bootstrap, renewal and bundle following against a CA in this process: no sockets, and
//! tokio's paused clock, so hours of renewal schedule and backoff pass at once.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;
use ward_certs::ca::{CaOptions, CertificateAuthority};

use super::*;
use crate::control::client::BundleStream;

const TD: &str = "example.org";
const WORKLOAD: &str = "spiffe://example.org/ns/shop/sa/orders";

/// What the proxy sent in one Certify call.
#[derive(Debug, Clone)]
struct Call {
    presenting: bool,
    token: String,
    spiffe_id: String,
}

/// A control plane in the process: signs CSRs with whichever CA is current, fails the
/// next `fail` calls with UNAVAILABLE, and serves a bundle stream the test writes to.
struct FakeCa {
    ca: Mutex<CertificateAuthority>,
    roots: Mutex<Vec<Vec<u8>>>,
    fail: AtomicUsize,
    calls: Mutex<Vec<Call>>,
    bundles: Mutex<Option<mpsc::UnboundedReceiver<Result<v1::TrustBundle, Status>>>>,
    acks: mpsc::UnboundedSender<v1::BundleAck>,
}

impl FakeCa {
    fn new() -> (
        Arc<Self>,
        mpsc::UnboundedSender<Result<v1::TrustBundle, Status>>,
        mpsc::UnboundedReceiver<v1::BundleAck>,
    ) {
        let ca = new_ca();
        let roots = vec![ca.root().to_vec()];
        let (bundle_tx, bundle_rx) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let fake = Arc::new(Self {
            ca: Mutex::new(ca),
            roots: Mutex::new(roots),
            fail: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
            bundles: Mutex::new(Some(bundle_rx)),
            acks: ack_tx,
        });
        (fake, bundle_tx, ack_rx)
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

fn new_ca() -> CertificateAuthority {
    let td = TrustDomain::new(TD).unwrap();
    CertificateAuthority::create(td, &CaOptions::default(), SystemTime::now()).unwrap()
}

impl CaClient for FakeCa {
    async fn certify(
        &self,
        presenting: Option<&MeshIdentity>,
        req: v1::CertifyRequest,
    ) -> Result<v1::CertifyResponse, Status> {
        self.calls.lock().unwrap().push(Call {
            presenting: presenting.is_some(),
            token: req.token.clone(),
            spiffe_id: req.spiffe_id.clone(),
        });
        let failing = self.fail.load(Ordering::SeqCst);
        if failing > 0 {
            self.fail.store(failing - 1, Ordering::SeqCst);
            return Err(Status::unavailable("connection refused"));
        }
        let id = SpiffeId::new(WORKLOAD).unwrap();
        let chain = self
            .ca
            .lock()
            .unwrap()
            .sign_csr(&req.csr, &id, Duration::from_secs(3600), SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(v1::CertifyResponse {
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            bundle: self.roots.lock().unwrap().clone(),
            spiffe_id: WORKLOAD.into(),
            workload: Some(v1::Workload {
                namespace: "shop".into(),
                labels: [("app".to_owned(), "orders".to_owned())].into(),
            }),
            ..Default::default()
        })
    }

    async fn watch_bundle(
        &self,
        _identity: &MeshIdentity,
        mut acks: mpsc::Receiver<v1::BundleAck>,
    ) -> Result<BundleStream, Status> {
        let Some(mut bundles) = self.bundles.lock().unwrap().take() else {
            return Err(Status::unavailable("one stream at a time"));
        };
        let ack_tx = self.acks.clone();
        tokio::spawn(async move {
            while let Some(ack) = acks.recv().await {
                let _ = ack_tx.send(ack);
            }
        });
        Ok(Box::pin(async_stream(move || bundles.try_recv().ok())))
    }
}

/// A stream that polls `next` and waits a little when it has nothing.
fn async_stream<T: Send + 'static>(
    mut next: impl FnMut() -> Option<T> + Send + 'static,
) -> impl tokio_stream::Stream<Item = T> + Send {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            match next() {
                Some(item) => {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn source(fake: &Arc<FakeCa>, token: &tempfile::NamedTempFile) -> ControlPlaneIdentity<FakeCa> {
    ControlPlaneIdentity::new(
        fake.clone(),
        TrustDomain::new(TD).unwrap(),
        token.path().to_owned(),
        Arc::new(Health::default()),
    )
}

fn token_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "join-token-1\n").unwrap();
    file
}

fn serial(svid: &Svid) -> String {
    svid.leaf_info().unwrap().serial
}

#[tokio::test(start_paused = true)]
async fn bootstrap_retries_with_backoff_then_renews_over_mtls_before_expiry() {
    let (fake, _bundles, _acks) = FakeCa::new();
    let token = token_file();
    fake.fail.store(2, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let source = Arc::new(source(&fake, &token));
    let first = source.first().await.unwrap();
    // Two refusals: waits of 250 ms and 500 ms, each at least 75 % of nominal.
    assert!(
        started.elapsed() >= Duration::from_millis(562),
        "{:?}",
        started.elapsed()
    );
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .all(|c| !c.presenting && c.token == "join-token-1")
    );
    assert_eq!(first.svid.spiffe_id().to_string(), WORKLOAD);
    let workload = first.workload.clone().unwrap();
    assert_eq!(workload.namespace, "shop");
    assert_eq!(workload.labels["app"], "orders");

    let (publisher, identity) = Publisher::new(first).unwrap();
    let mut svids = identity.svid();
    let first_serial = serial(&svids.borrow_and_update());
    // The renewal fails once, is retried, and replaces the SVID before it expires.
    fake.fail.store(1, Ordering::SeqCst);
    let renewing = started.elapsed();
    tokio::spawn(source.follow(publisher));
    svids.changed().await.unwrap();
    let waited = started.elapsed() - renewing;
    assert!(
        waited >= Duration::from_secs(900) && waited < Duration::from_secs(3600),
        "renewed after {waited:?} of a one-hour SVID"
    );
    let renewed = svids.borrow_and_update().clone();
    assert_ne!(serial(&renewed), first_serial);
    let calls = fake.calls();
    let renewals: Vec<_> = calls[3..].iter().collect();
    assert_eq!(renewals.len(), 2, "one refused, one issued: {calls:?}");
    assert!(
        renewals
            .iter()
            .all(|c| c.presenting && c.token.is_empty() && c.spiffe_id == WORKLOAD)
    );
    // What TLS serves is the renewed SVID.
    let served = identity.mesh.svid.current_chain();
    assert_eq!(served[0], renewed.chain()[0]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_token_file_is_retried_until_it_appears() {
    let (fake, _bundles, _acks) = FakeCa::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let source = Arc::new(ControlPlaneIdentity::new(
        fake.clone(),
        TrustDomain::new(TD).unwrap(),
        path.clone(),
        Arc::new(Health::default()),
    ));
    let first = tokio::spawn({
        let source = source.clone();
        async move { source.first().await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!first.is_finished());
    assert!(fake.calls().is_empty(), "nothing is sent without a token");
    std::fs::write(&path, "late-token").unwrap();
    let issued = first.await.unwrap().unwrap();
    assert_eq!(issued.svid.spiffe_id().to_string(), WORKLOAD);
    assert_eq!(fake.calls()[0].token, "late-token");
}

#[tokio::test(start_paused = true)]
async fn bundles_are_put_in_force_and_acknowledged_and_a_new_signing_root_renews_at_once() {
    let (fake, bundles, mut acks) = FakeCa::new();
    let token = token_file();
    let source = Arc::new(source(&fake, &token));
    let health = source.health.clone();
    let (publisher, identity) = Publisher::new(source.first().await.unwrap()).unwrap();
    let old_root = fake.roots.lock().unwrap()[0].clone();
    let old_key = ward_certs::verify::key_id(&CertificateDer::from(old_root.clone())).unwrap();
    tokio::spawn(source.follow(publisher));

    // A rotation's first step: the next root is trusted, the old one still signs.
    let next = new_ca();
    let next_root = next.root().to_vec();
    let next_key = ward_certs::verify::key_id(next.root()).unwrap();
    let both = vec![old_root.clone(), next_root.clone()];
    let mut in_force = identity.bundle();
    bundles
        .send(Ok(v1::TrustBundle {
            version: 2,
            roots: both.clone(),
            active_root: old_key.clone(),
        }))
        .unwrap();
    in_force.changed().await.unwrap();
    assert_eq!(in_force.borrow_and_update().roots().count(), 2);
    assert!(health.bundle_connected.load(Relaxed));
    let ack = acks.recv().await.unwrap();
    assert_eq!((ack.applied_version, ack.leaf_issuer_root), (2, old_key));
    let calls_before = fake.calls().len();

    // The next root becomes the signer: the proxy renews now, not at half-life, and
    // reports its new leaf.
    *fake.ca.lock().unwrap() = next;
    *fake.roots.lock().unwrap() = both.clone();
    let mut svids = identity.svid();
    svids.borrow_and_update();
    let asked = tokio::time::Instant::now();
    bundles
        .send(Ok(v1::TrustBundle {
            version: 3,
            roots: both,
            active_root: next_key.clone(),
        }))
        .unwrap();
    svids.changed().await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(fake.calls().len(), calls_before + 1);
    let reported = loop {
        let ack = acks.recv().await.unwrap();
        if ack.leaf_issuer_root == next_key {
            break ack;
        }
    };
    assert_eq!(reported.applied_version, 3);
}

#[tokio::test(start_paused = true)]
async fn a_bundle_that_does_not_parse_is_refused_and_the_last_good_one_stays() {
    let (fake, bundles, mut acks) = FakeCa::new();
    let token = token_file();
    let source = Arc::new(source(&fake, &token));
    let (publisher, identity) = Publisher::new(source.first().await.unwrap()).unwrap();
    tokio::spawn(source.follow(publisher));
    let before: Vec<_> = identity.mesh.bundle.current().roots().cloned().collect();
    bundles
        .send(Ok(v1::TrustBundle {
            version: 2,
            roots: vec![b"not a certificate".to_vec()],
            active_root: String::new(),
        }))
        .unwrap();
    // Then a stream error: the stream is marked down and opened again (the fake allows
    // one stream, so it stays down), while the bundle in force stays.
    bundles.send(Err(Status::internal("reset"))).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after: Vec<_> = identity.mesh.bundle.current().roots().cloned().collect();
    assert_eq!(before, after);
    assert!(
        acks.try_recv().is_err(),
        "a refused bundle is not acknowledged"
    );
    assert!(!identity.bundle().has_changed().unwrap());
}
