//! Authorization at the inbound side: every HTTP request, gRPC call and TCP connection is
//! decided by the policy engine before the app sees it, and the decision is explained in
//! the audit log and counted — never to the caller.
//!
//! The compiled policy for this workload sits behind an `ArcSwap`: a reload swaps it and
//! bumps a generation that open TCP connections watch, so they are re-checked and closed if
//! no longer allowed. Until a valid policy set has been loaded every call is denied.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use metrics::counter;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use ward_policy::{Call, Decider, Decision, MeshDefault, PolicySet, WorkloadPolicy};

use crate::config::{Audit, AuditDecisions};

pub mod anomaly;
pub mod end_user;
pub mod recent;
use ward_runtime::Drain;
use ward_runtime::Pending;

pub const DECISIONS_TOTAL: &str = "ward_authz_decisions_total";
pub const POLICY_RELOADS_TOTAL: &str = "ward_policy_reloads_total";
pub const ANOMALIES_TOTAL: &str = "ward_anomalies_total";

/// What the audit line says about a call besides the decision.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The caller's workload identity as a metrics label (`external` at the gateway).
    pub source: &'a crate::metrics::Label,
    pub protocol: &'static str,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// At the gateway: the client and how its end user was authenticated.
    pub edge: Option<EdgeFacts<'a>>,
}

/// What the gateway adds to an audit line. Never the token.
#[derive(Debug, Clone, Copy)]
pub struct EdgeFacts<'a> {
    /// The client's address (as the connection, or trusted hops, say).
    pub client: &'a str,
    /// `routes[N]` of the gateway's configuration.
    pub route: Option<usize>,
    /// `none` (no token read), `anonymous`, `verified`, or why the token was refused.
    pub authentication: &'a str,
    pub issuer: Option<&'a str>,
    pub kid: Option<&'a str>,
    /// The rate limit that refused the request, if one did.
    pub limit: Option<&'a str>,
}

/// The workload's authorizer.
pub struct Authorizer {
    namespace: String,
    labels: BTreeMap<String, String>,
    destination: String,
    current: ArcSwapOption<WorkloadPolicy>,
    /// The MeshPolicy in force says only mesh destinations may be called.
    registry_only: std::sync::atomic::AtomicBool,
    generation: watch::Sender<u64>,
    audit: AuditLog,
    spikes: anomaly::Spikes,
    /// Denials and anomalies not yet reported to the control plane.
    pub recent: recent::Recent,
}

impl Authorizer {
    pub fn new(
        namespace: String,
        labels: BTreeMap<String, String>,
        destination: String,
        audit: AuditLog,
    ) -> Arc<Self> {
        Arc::new(Self {
            namespace,
            labels,
            destination,
            current: ArcSwapOption::empty(),
            registry_only: std::sync::atomic::AtomicBool::new(false),
            generation: watch::Sender::new(0),
            audit,
            spikes: anomaly::Spikes::default(),
            recent: recent::Recent::default(),
        })
    }

    /// Compiles `set` for this workload and puts it in force for the next call.
    /// Whether the policy in force allows captured connections only to mesh destinations
    /// (MeshPolicy `outboundTrafficPolicy: REGISTRY_ONLY`).
    pub fn registry_only(&self) -> bool {
        self.registry_only
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn install(&self, set: &PolicySet) -> usize {
        let registry_only =
            set.outbound_traffic_policy() == ward_policy::OutboundTrafficPolicy::RegistryOnly;
        self.registry_only
            .store(registry_only, std::sync::atomic::Ordering::Relaxed);
        let workload = set.for_workload(&self.namespace, &self.labels);
        let applying = workload.len();
        self.current.store(Some(Arc::new(workload)));
        self.generation.send_modify(|g| *g += 1);
        applying
    }

    /// Whether `principal` is one of the mesh's gateways (MeshPolicy `gateways`), whose
    /// `x-ward-end-user` is believed. Nobody is before a policy set is in force.
    pub fn trusts_gateway(&self, principal: &str) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|p| p.trusts_gateway(principal))
    }

    /// Changes whenever a new policy set is installed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Decides one call and records it (audit log, metrics).
    pub fn decide(&self, call: &Call<'_>, facts: Facts<'_>) -> Decision {
        let decision = match self.current.load().as_ref() {
            Some(policy) => policy.decide(call),
            None => WorkloadPolicy::empty(MeshDefault::Deny).decide(call),
        };
        let label = decision.decider.policy_label();
        let verdict = if decision.allowed { "allow" } else { "deny" };
        let source = facts.source.clone();
        let policy = (!decision.allowed).then(|| label.clone());
        counter!(DECISIONS_TOTAL, "decision" => verdict, "policy" => label, "source" => source)
            .increment(1);
        if let Some(audit) = &decision.audit {
            let (policy, source) = (audit.policy_label(), facts.source.clone());
            counter!(DECISIONS_TOTAL, "decision" => "audit", "policy" => policy, "source" => source)
                .increment(1);
        }
        self.audit
            .record(call, &decision, facts, call.port, &self.destination);
        if let Some(policy) = policy {
            self.keep_denial(facts, &policy, decision.decider.rule());
            self.judge_denial(call, facts);
        }
        decision
    }

    /// A denial, for the next report to the control plane.
    fn keep_denial(&self, facts: Facts<'_>, policy: &str, rule: Option<usize>) {
        self.recent.denied(ward_api::v1::Denial {
            time_unix_ms: recent::now_ms(),
            source: facts.source.to_string(),
            destination: self.destination.clone(),
            protocol: facts.protocol.to_owned(),
            method: facts.method.unwrap_or_default().to_owned(),
            path: facts.path.unwrap_or_default().to_owned(),
            policy: policy.to_owned(),
            rule: rule.and_then(|r| i32::try_from(r).ok()).unwrap_or(-1),
            request_id: facts.request_id.unwrap_or_default().to_owned(),
        });
    }

    /// A denial, against its caller's baseline: a spike is counted and audited.
    fn judge_denial(&self, call: &Call<'_>, facts: Facts<'_>) {
        let Some(spike) = self.spikes.denied(facts.source) else {
            return;
        };
        let source = facts.source.clone();
        counter!(ANOMALIES_TOTAL, "kind" => "denial_spike", "source" => source).increment(1);
        tracing::warn!(source = %facts.source, denials = spike.denials,
            baseline = spike.baseline, "denial spike");
        let principal = if call.principal.is_empty() {
            &**facts.source
        } else {
            call.principal
        };
        self.recent.anomaly(ward_api::v1::Anomaly {
            time_unix_ms: recent::now_ms(),
            kind: "denial_spike".into(),
            source: facts.source.to_string(),
            destination: self.destination.clone(),
            denials_this_minute: spike.denials,
            baseline_per_minute: spike.baseline,
        });
        self.audit.write(
            json!({
                "time": ward_runtime::time::rfc3339_millis(SystemTime::now()),
                "kind": "anomaly",
                "anomaly": "denial_spike",
                "source": principal,
                "destination": self.destination,
                "denials_this_minute": spike.denials,
                "baseline_per_minute": (spike.baseline * 100.0).round() / 100.0,
            }),
            None,
        );
    }

    /// Records a call refused before any policy could judge it (at the gateway: no valid
    /// end-user token), as a denial by `policy` (e.g. `authentication`).
    pub fn refused(&self, call: &Call<'_>, facts: Facts<'_>, policy: &str) {
        let source = facts.source.clone();
        counter!(DECISIONS_TOTAL, "decision" => "deny", "policy" => policy.to_owned(), "source" => source)
            .increment(1);
        let decision = Decision {
            allowed: false,
            decider: Decider::Default(MeshDefault::Deny),
            audit: None,
        };
        self.audit.write(
            self.audit
                .line(call, &decision, facts, call.port, &self.destination),
            Some(policy),
        );
        self.keep_denial(facts, policy, None);
        self.judge_denial(call, facts);
    }
}

/// Where audit lines go. Lines are handed to a writer task, so a request never waits on a
/// file or a lock; if the writer falls behind by more than the queue, lines are dropped and
/// counted rather than slowing traffic.
#[derive(Clone)]
pub struct AuditLog {
    mode: AuditDecisions,
    lines: mpsc::Sender<String>,
}

const AUDIT_QUEUE: usize = 8192;

impl AuditLog {
    /// Starts the writer for `config` (`stdout` or a file, appended to).
    pub async fn start(config: &Audit) -> std::io::Result<Self> {
        let (lines, mut rx) = mpsc::channel::<String>(AUDIT_QUEUE);
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if config.log == "stdout" {
            Box::new(tokio::io::stdout())
        } else {
            Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&config.log)
                    .await?,
            )
        };
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if out.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                if rx.is_empty() {
                    let _ = out.flush().await;
                }
            }
        });
        Ok(Self {
            mode: config.decisions,
            lines,
        })
    }

    fn record(
        &self,
        call: &Call<'_>,
        decision: &Decision,
        facts: Facts<'_>,
        port: u16,
        destination: &str,
    ) {
        let wanted =
            !decision.allowed || decision.audit.is_some() || self.mode == AuditDecisions::All;
        if wanted {
            self.write(self.line(call, decision, facts, port, destination), None);
        }
    }

    fn line(
        &self,
        call: &Call<'_>,
        decision: &Decision,
        facts: Facts<'_>,
        port: u16,
        destination: &str,
    ) -> serde_json::Value {
        let rule = |d: &Decider| d.rule();
        let mut line = json!({
            "time": ward_runtime::time::rfc3339_millis(SystemTime::now()),
            "kind": "decision",
            "source": call.principal,
            "destination": destination,
            "port": port,
            "protocol": facts.protocol,
            "method": facts.method,
            "path": facts.path,
            "decision": if decision.allowed { "allow" } else { "deny" },
            "policy": decision.decider.policy_label(),
            "rule": rule(&decision.decider),
            "request_id": facts.request_id,
        });
        if let Some(audit) = &decision.audit {
            line["audit_policy"] = json!(audit.policy_label());
            line["audit_rule"] = json!(rule(audit));
        }
        if let Some(auth) = call.http.as_ref().and_then(|h| h.auth.as_ref()) {
            line["request_principal"] = json!(auth.principal);
        }
        if let Some(edge) = facts.edge {
            line["client"] = json!(edge.client);
            line["route"] = json!(edge.route);
            line["authentication"] = json!(edge.authentication);
            line["issuer"] = json!(edge.issuer);
            line["kid"] = json!(edge.kid);
            line["limit"] = json!(edge.limit);
        }
        line
    }

    /// Queues one line; `policy` replaces the decider's label (a refusal no policy made).
    fn write(&self, mut line: serde_json::Value, policy: Option<&str>) {
        if let Some(policy) = policy {
            line["policy"] = json!(policy);
            line["rule"] = serde_json::Value::Null;
        }
        let mut text = line.to_string();
        text.push('\n');
        if self.lines.try_send(text).is_err() {
            counter!("ward_audit_lines_dropped_total").increment(1);
        }
    }
}

/// A load that did not finish (its blocking task panicked), as a policy error.
pub fn load_failed(
    source: &std::path::Path,
    e: &dyn std::fmt::Display,
) -> ward_policy::PolicyErrors {
    ward_policy::PolicyErrors(vec![ward_policy::PolicyError {
        file: source.to_owned(),
        line: 0,
        column: 0,
        reason: format!("loading failed: {e}"),
    }])
}

/// Loads the policy directory now, then watches it: a change is in force within a second;
/// a broken set is refused with every error logged, and the last good one stays.
pub async fn watch_policy_dir(
    dir: PathBuf,
    authz: Arc<Authorizer>,
    mut not_ready: Option<Pending>,
    drain: Drain,
) {
    let (print, fp, load) = (dir.clone(), dir.clone(), dir.clone());
    let apply = move |loaded: Result<PolicySet, ward_policy::PolicyErrors>| match loaded {
        Ok(set) => {
            let applying = authz.install(&set);
            counter!(POLICY_RELOADS_TOTAL, "result" => "ok").increment(1);
            tracing::info!(dir = %print.display(), loaded = set.policies().len(),
                applying, default = set.mesh_default().name(), "policy in force");
            not_ready.take();
        }
        Err(errors) => {
            counter!(POLICY_RELOADS_TOTAL, "result" => "error").increment(1);
            for e in &errors.0 {
                tracing::error!(target: "ward::policy", "{e}");
            }
            tracing::warn!(dir = %print.display(), errors = errors.0.len(),
                "policy refused; the last good policy stays in force");
        }
    };
    ward_runtime::poll::poll_until_drained(
        ward_runtime::poll::POLL_EVERY,
        move || ward_policy::load::fingerprint(&fp),
        move || ward_policy::load_dir(&load),
        apply,
        drain,
    )
    .await
}
