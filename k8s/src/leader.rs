//! One leader among the control-plane replicas, by a `coordination.k8s.io` Lease
//! (`ward-system/ward-control-plane`): every replica serves proxies; the leader alone does
//! the work that must happen once (publishing the trust bundle to namespaces today). The
//! holder renews every `lease / 5`; another replica takes over when it has seen the
//! Lease unchanged for a whole `lease` on its own clock (never by comparing clocks), and a
//! replica that stops gives the Lease up so the next takes over at once. Every write is
//! conditional on the version read, so two replicas never both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use ward_runtime::Drain;

use crate::install::names::LEASE;

/// The metric: 1 on the leader.
pub const LEADER_METRIC: &str = "ward_cp_leader";

/// Who this replica is and how long a Lease lasts.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub namespace: String,
    /// The holder identity: the pod's name.
    pub identity: String,
    pub lease: Duration,
}

/// Competes for the Lease until the drain begins; the receiver says whether this replica
/// leads now.
pub fn start(client: kube::Client, candidate: Candidate, drain: Drain) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    // Tracked by the drain: a stopping replica waits until it has given the Lease up.
    drain.clone().spawn(run(client, candidate, tx, drain));
    rx
}

/// What this replica last saw of another holder's Lease, and when (its own clock).
struct Seen {
    version: Option<String>,
    since: Instant,
}

async fn run(client: kube::Client, candidate: Candidate, tx: watch::Sender<bool>, drain: Drain) {
    let api = Api::<Lease>::namespaced(client, &candidate.namespace);
    let mut seen: Option<Seen> = None;
    loop {
        let leading = match step(&api, &candidate, &mut seen).await {
            Ok(leading) => leading,
            Err(e) => {
                // Unsure: stop leading before the others may take over.
                tracing::warn!(error = %e, "leader election: cannot reach the Lease");
                let lost_for = seen.as_ref().map_or(Duration::ZERO, |s| s.since.elapsed());
                *tx.borrow() && lost_for < candidate.lease / 2
            }
        };
        if *tx.borrow() != leading {
            tracing::info!(identity = %candidate.identity, leading, "leadership changed");
            metrics::gauge!(LEADER_METRIC).set(if leading { 1.0 } else { 0.0 });
        }
        tx.send_replace(leading);
        tokio::select! {
            () = tokio::time::sleep(candidate.lease / 5) => {}
            () = drain.signaled() => break,
        }
    }
    if *tx.borrow() {
        release(&api, &candidate).await;
        tx.send_replace(false);
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One round: returns whether this replica holds the Lease after it.
async fn step(
    api: &Api<Lease>,
    candidate: &Candidate,
    seen: &mut Option<Seen>,
) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(candidate.lease.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    let Some(mut lease) = api.get_opt(LEASE).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE.into()),
                namespace: Some(candidate.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(candidate.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return conditional(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == candidate.identity {
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(seconds);
        *seen = None;
        return conditional(api.replace(LEASE, &PostParams::default(), &lease).await);
    }
    let version = lease.metadata.resource_version.clone();
    let free = holder.is_empty();
    let expired = match seen {
        Some(s) if s.version == version => s.since.elapsed() >= candidate.lease,
        _ => {
            *seen = Some(Seen {
                version,
                since: Instant::now(),
            });
            false
        }
    };
    if !free && !expired {
        return Ok(false);
    }
    spec.holder_identity = Some(candidate.identity.clone());
    spec.lease_duration_seconds = Some(seconds);
    spec.acquire_time = Some(now());
    spec.renew_time = Some(now());
    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    let taken = conditional(api.replace(LEASE, &PostParams::default(), &lease).await)?;
    if taken {
        tracing::info!(previous = %holder, identity = %candidate.identity, "took over the Lease");
        *seen = None;
    }
    Ok(taken)
}

/// A write's outcome: true if it went through, false if another replica wrote first.
fn conditional<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (no holder), so another replica takes over without waiting.
async fn release(api: &Api<Lease>, candidate: &Candidate) {
    let Ok(Some(mut lease)) = api.get_opt(LEASE).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(candidate.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(identity = %candidate.identity, "gave up the Lease"),
        Err(e) => tracing::warn!(error = %e, "cannot give up the Lease; it expires by itself"),
    }
}
