//! What the demo shows: the traffic table, each workload's certificate, and what to try.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;
use ward_runtime::time::human;

use crate::apps::AppKind;
use crate::layout::{Layout, spiffe_id};
use crate::traffic::{self, HttpClient, Scenario};
use crate::{NAMESPACE, TRUST_DOMAIN, get};

/// What each sidecar's `/certs` says, and how many times its serial changed.
#[derive(Default)]
pub(crate) struct CertWatch {
    pub(crate) by_workload: BTreeMap<&'static str, CertState>,
}

#[derive(Default, Clone)]
pub(crate) struct CertState {
    pub(crate) serial: String,
    pub(crate) seconds_left: u64,
    pub(crate) rotations: u32,
}

impl CertWatch {
    pub(crate) async fn refresh(&mut self, http: &HttpClient, layout: &Layout) {
        for w in &layout.workloads {
            let Some((200, body)) = get(http, w.admin, "/certs").await else {
                continue;
            };
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
                continue;
            };
            let serial = json["serial"].as_str().unwrap_or_default().to_owned();
            let seconds_left = json["seconds_left"].as_u64().unwrap_or(0);
            let state = self.by_workload.entry(w.name()).or_default();
            if !state.serial.is_empty() && state.serial != serial {
                state.rotations += 1;
            }
            state.serial = serial;
            state.seconds_left = seconds_left;
        }
    }
}

pub(crate) fn short_serial(serial: &str) -> String {
    let hex: String = serial.chars().filter(|c| *c != ':').collect();
    if hex.len() > 16 {
        format!("{}…", &hex[..16])
    } else {
        hex
    }
}

pub(crate) fn render(
    layout: &Layout,
    scenarios: &[Scenario],
    certs: &CertWatch,
    ward: &Path,
    started: Instant,
    deadline: Option<Instant>,
) -> String {
    let mut out = String::new();
    let elapsed = human(started.elapsed());
    let left = deadline
        .map(|d| {
            format!(
                ", {} left",
                human(d.saturating_duration_since(Instant::now()))
            )
        })
        .unwrap_or_else(|| ", Ctrl-C to stop".into());
    let _ = writeln!(
        out,
        "ward demo — trust domain {TRUST_DOMAIN}, running {elapsed}{left}\n"
    );
    let _ = writeln!(
        out,
        "{:<20} {:<30} {:<6} {:>8} {:>8} {:>7}  LAST",
        "EDGE", "CALL", "POLICY", "ALLOWED", "DENIED", "ERRORS"
    );
    for s in scenarios {
        let last = s.last.as_ref().map_or("-", traffic::Outcome::status);
        let mark = if s.unexpected > 0 {
            "  <- unexpected"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<20} {:<30} {:<6} {:>8} {:>8} {:>7}  {last}{mark}",
            format!("{} → {}", s.source, s.destination),
            s.call,
            s.expect.label(),
            s.allowed,
            s.denied + s.limited,
            s.failed,
        );
    }
    let _ = writeln!(
        out,
        "\n{:<10} {:<40} {:<18} {:>10} {:>9}",
        "WORKLOAD", "SPIFFE ID", "SERIAL", "EXPIRES IN", "ROTATED"
    );
    for w in &layout.workloads {
        let state = certs.by_workload.get(w.name()).cloned().unwrap_or_default();
        let expires = if state.serial.is_empty() {
            "-".to_owned()
        } else {
            human(Duration::from_secs(state.seconds_left))
        };
        let _ = writeln!(
            out,
            "{:<10} {:<40} {:<18} {:>10} {:>9}",
            w.name(),
            w.spiffe_id(),
            short_serial(&state.serial),
            expires,
            state.rotations
        );
    }
    let _ = writeln!(out, "\ndashboard: http://{}/", layout.dashboard);
    let _ = writeln!(out, "\nadmin:");
    let _ = writeln!(
        out,
        "  control plane     http://{}/metrics",
        layout.cp_admin
    );
    for w in &layout.workloads {
        let _ = writeln!(
            out,
            "  {:<17} http://{}/certs   http://{}/metrics",
            format!("{} sidecar", w.name()),
            w.admin,
            w.admin
        );
    }
    let g = layout.gateway_admin;
    let _ = writeln!(
        out,
        "  {:<17} http://{g}/certs   http://{g}/metrics",
        "gateway"
    );
    render_help(&mut out, layout, ward);
    out
}

/// What to try while the demo runs, and where things are.
fn render_help(out: &mut String, layout: &Layout, ward: &Path) {
    let accounts = layout.workload(AppKind::Accounts);
    let via = layout.outbounds.web_accounts;
    let _ = writeln!(out, "\ntry (as web, through its sidecar):");
    let _ = writeln!(
        out,
        "  curl -s http://{via}/accounts/42              # allowed"
    );
    let _ = writeln!(
        out,
        "  curl -s -X DELETE http://{via}/accounts/42    # denied: 403 forbidden"
    );
    let port = layout.gateway_listen.port();
    let _ = writeln!(
        out,
        "try (as alice, from outside, through the gateway):\n  \
         curl -s --cacert {dir}/public-ca.pem --resolve {host}:{port}:127.0.0.1 \\\n    \
         -H \"Authorization: Bearer $(cat {dir}/alice.jwt)\" https://{host}:{port}/accounts/1001   # allowed; /accounts/1002 is 403",
        dir = layout.dir.display(),
        host = crate::edge::HOST,
    );
    let _ = writeln!(out, "why is it denied:");
    let _ = writeln!(
        out,
        "  {} policy check --dir {} --to-namespace {NAMESPACE} --to-labels app=accounts --from {} --port {} --method DELETE --path /accounts/42",
        ward.display(),
        layout.policies.display(),
        spiffe_id(AppKind::Web),
        accounts.app.port()
    );
    let _ = writeln!(
        out,
        "\npolicies: {} (edit them while the demo runs)\nlogs:     {}",
        layout.policies.display(),
        layout.logs.display()
    );
}

/// Prints the verdict of a timed run; true if every call went as the policy says.
pub(crate) fn verdict(scenarios: &[Scenario], layout: &Layout) -> bool {
    let calls: u64 = scenarios.iter().map(Scenario::total).sum();
    let unexpected: u64 = scenarios.iter().map(|s| s.unexpected).sum();
    let untried: Vec<String> = scenarios
        .iter()
        .filter(|s| s.total() == 0 || !s.as_expected())
        .filter(|s| s.unexpected == 0)
        .map(|s| format!("{} -> {} {}", s.source, s.destination, s.call))
        .collect();
    if unexpected == 0 && untried.is_empty() {
        println!(
            "ward demo: PASS: {calls} calls; every allowed call succeeded and every forbidden call was denied"
        );
        true
    } else {
        println!(
            "ward demo: FAIL: {unexpected} of {calls} calls not as the demo policy says{}; logs in {}",
            if untried.is_empty() {
                String::new()
            } else {
                format!("; never tried (or never limited): {}", untried.join(", "))
            },
            layout.logs.display()
        );
        false
    }
}
