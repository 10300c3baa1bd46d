//! The control plane's view of the mesh for its dashboard: what each proxy last reported
//! (`Telemetry.Report`: cumulative counters by source and destination identity, its recent
//! denials and anomalies, the SVID it serves), kept in memory and bounded. Rates are the
//! difference of a proxy's last two reports; nothing is stored elsewhere.
//!
//! [`crate::page`] puts it on a read-only web page (`--dashboard ADDR`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use ward_api::v1;

pub mod first_calls;

/// Denials kept, newest last (about half a minute of the demo's forbidden traffic).
const DENIALS_KEPT: usize = 1000;
/// Denials in the view, and matches of a search at most.
pub const DENIALS_SHOWN: usize = 25;
/// Anomalies kept, newest last.
const RECENT: usize = 100;
/// SVIDs remembered per workload (its rotation timeline).
const SERIALS: usize = 12;
/// A proxy that has not reported for this long is shown as gone.
pub const STALE_AFTER: Duration = Duration::from_secs(15);
/// Proxies tracked at most (a report from one more is dropped and counted).
const MAX_PROXIES: usize = 10_000;

/// One SVID a workload served, as first reported.
#[derive(Debug, Clone)]
struct Served {
    serial: String,
    not_before: i64,
    not_after: i64,
    first_seen_ms: i64,
}

#[derive(Debug, Default)]
struct ProxyView {
    role: String,
    /// The last two reports' time and counters (previous, last).
    reports: VecDeque<(i64, Vec<v1::EdgeCounts>)>,
    serials: VecDeque<Served>,
    last_seen: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Inner {
    proxies: HashMap<String, ProxyView>,
    denials: VecDeque<(String, v1::Denial)>,
    anomalies: VecDeque<(String, v1::Anomaly)>,
    first_calls: first_calls::FirstCalls,
}

/// The dashboard's state, fed by proxies' reports.
#[derive(Debug, Default)]
pub struct Dashboard {
    inner: Mutex<Inner>,
}

/// The last path segment of a SPIFFE ID (`.../sa/web` → `web`).
pub fn short_name(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

impl Dashboard {
    /// The dashboard of the control plane on `data_dir` (which remembers the calls seen).
    pub fn open(data_dir: &std::path::Path) -> Self {
        Self {
            inner: Mutex::new(Inner {
                first_calls: first_calls::FirstCalls::open(data_dir),
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A report from the proxy whose SVID is `id` (verified by the caller).
    ///
    /// A proxy speaks only for calls it took part in: edges where it is neither end,
    /// denials and anomalies of another workload, and an SVID of another identity are
    /// dropped (and counted), so one compromised workload cannot paint calls, denials or
    /// first calls between others on the page.
    pub fn report(&self, id: &str, mut report: v1::ProxyReport, now: SystemTime) {
        let before = report.edges.len()
            + report.denials.len()
            + report.anomalies.len()
            + usize::from(report.svid.is_some());
        report
            .edges
            .retain(|e| e.source == id || e.destination == id);
        report.denials.retain(|d| d.destination == id);
        report.anomalies.retain(|a| a.destination == id);
        report.svid = report.svid.filter(|s| s.spiffe_id == id);
        let kept = report.edges.len()
            + report.denials.len()
            + report.anomalies.len()
            + usize::from(report.svid.is_some());
        if kept < before {
            metrics::counter!("ward_cp_report_items_refused_total")
                .increment((before - kept) as u64);
            tracing::warn!(proxy = %id, refused = before - kept,
                "a report spoke for other workloads; those parts are dropped");
        }
        let mut inner = self.lock();
        if !inner.proxies.contains_key(id) && inner.proxies.len() >= MAX_PROXIES {
            metrics::counter!("ward_cp_reports_dropped_total").increment(1);
            return;
        }
        let first: Vec<v1::Anomaly> = report
            .edges
            .iter()
            .filter(|e| e.requests > 0 || e.tcp_bytes > 0)
            .filter(|e| called_side(e) || leaves_mesh(e))
            .filter(|e| inner.first_calls.seen(&e.source, &e.destination, id))
            .map(|e| v1::Anomaly {
                time_unix_ms: ward_runtime::time::unix_millis(now),
                kind: "first_call".into(),
                source: e.source.clone(),
                destination: e.destination.clone(),
                ..Default::default()
            })
            .collect();
        inner
            .anomalies
            .extend(first.into_iter().map(|a| (id.to_owned(), a)));
        let proxy = inner.proxies.entry(id.to_owned()).or_default();
        proxy.role = report.role;
        proxy.last_seen = Some(now);
        proxy
            .reports
            .push_back((ward_runtime::time::unix_millis(now), report.edges));
        while proxy.reports.len() > 2 {
            proxy.reports.pop_front();
        }
        if let Some(svid) = report.svid
            && proxy.serials.back().is_none_or(|s| s.serial != svid.serial)
        {
            proxy.serials.push_back(Served {
                serial: svid.serial,
                not_before: svid.not_before_unix,
                not_after: svid.not_after_unix,
                first_seen_ms: ward_runtime::time::unix_millis(now),
            });
            while proxy.serials.len() > SERIALS {
                proxy.serials.pop_front();
            }
        }
        for denial in report.denials {
            inner.denials.push_back((id.to_owned(), denial));
        }
        for anomaly in report.anomalies {
            inner.anomalies.push_back((id.to_owned(), anomaly));
        }
        while inner.denials.len() > DENIALS_KEPT {
            inner.denials.pop_front();
        }
        while inner.anomalies.len() > RECENT {
            inner.anomalies.pop_front();
        }
    }

    /// The newest kept denials with `text` in their caller, called workload, path, policy
    /// or request id (an operator looking for one denial among many).
    pub fn denials_matching(&self, text: &str) -> Value {
        let inner = self.lock();
        let fields = |d: &v1::Denial| {
            [
                &d.source,
                &d.destination,
                &d.path,
                &d.policy,
                &d.request_id,
                &d.method,
            ]
            .into_iter()
            .any(|f| f.contains(text))
        };
        Value::Array(denials_view(&inner, fields))
    }

    /// The identities known from reports.
    pub fn identities(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().proxies.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The mesh as the page shows it: workloads with their SVIDs and rotation state, the
    /// edges between them with rates, recent denials and anomalies.
    pub fn view(&self, now: SystemTime) -> Value {
        let inner = self.lock();
        let now_ms = ward_runtime::time::unix_millis(now);
        let mut workloads: Vec<Value> = inner
            .proxies
            .iter()
            .map(|(id, p)| workload(id, p, now, now_ms))
            .collect();
        workloads.sort_by(|a, b| a["spiffe_id"].as_str().cmp(&b["spiffe_id"].as_str()));
        let mut edges = BTreeMap::new();
        for proxy in inner.proxies.values() {
            add_edges(&mut edges, proxy);
        }
        let edges: Vec<Value> = edges.into_values().collect();
        let denials = denials_view(&inner, |_| true);
        let anomalies: Vec<Value> = inner
            .anomalies
            .iter()
            .rev()
            .map(|(at, a)| {
                json!({
                    "time_ms": a.time_unix_ms, "reported_by": at, "kind": a.kind,
                    "source": a.source, "destination": a.destination,
                    "denials_this_minute": a.denials_this_minute,
                    "baseline_per_minute": a.baseline_per_minute,
                })
            })
            .collect();
        json!({
            "time_ms": now_ms,
            "workloads": workloads,
            "edges": edges,
            "denials": denials,
            "anomalies": anomalies,
        })
    }
}

/// The newest kept denials that pass `keep`, at most [`DENIALS_SHOWN`].
fn denials_view(inner: &Inner, keep: impl Fn(&v1::Denial) -> bool) -> Vec<Value> {
    inner
        .denials
        .iter()
        .rev()
        .filter(|(_, d)| keep(d))
        .take(DENIALS_SHOWN)
        .map(|(at, d)| {
            json!({
                "time_ms": d.time_unix_ms, "reported_by": at, "source": d.source,
                "destination": d.destination, "protocol": d.protocol, "method": d.method,
                "path": d.path, "policy": d.policy,
                "rule": (d.rule >= 0).then_some(d.rule), "request_id": d.request_id,
            })
        })
        .collect()
}

/// One workload: its SVID now, its rotation timeline and state.
fn workload(id: &str, p: &ProxyView, now: SystemTime, now_ms: i64) -> Value {
    let reporting = p
        .last_seen
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|d| d < STALE_AFTER);
    let current = p.serials.back();
    let rotation = current.map_or("unknown", |s| rotation_state(s, now_ms / 1000));
    let timeline: Vec<Value> = p
        .serials
        .iter()
        .map(|s| {
            json!({ "serial": s.serial, "not_before": s.not_before, "not_after": s.not_after,
                    "first_seen_ms": s.first_seen_ms })
        })
        .collect();
    json!({
        "spiffe_id": id,
        "name": short_name(id),
        "role": p.role,
        "reporting": reporting,
        "serial": current.map(|s| s.serial.clone()),
        "not_before": current.map(|s| s.not_before),
        "not_after": current.map(|s| s.not_after),
        "rotation": rotation,
        "rotations": p.serials.len().saturating_sub(1),
        "svids": timeline,
    })
}

/// Counted where it was called (a sidecar's inbound side, a gateway's clients): each call
/// once, by the proxy that judged it.
fn called_side(edge: &v1::EdgeCounts) -> bool {
    edge.direction == "inbound" || edge.direction == "gateway"
}

/// A call out of the mesh (a passthrough): only the caller's sidecar sees it.
fn leaves_mesh(edge: &v1::EdgeCounts) -> bool {
    edge.direction == "outbound" && edge.destination == "external"
}

/// Where an SVID is in its life: `ok` before renewal is due (55%), `renewing` until 75%,
/// `stuck` after that, `expired` past notAfter.
fn rotation_state(s: &Served, now: i64) -> &'static str {
    let life = (s.not_after - s.not_before).max(1) as f64;
    let used = (now - s.not_before) as f64 / life;
    match used {
        u if u >= 1.0 => "expired",
        u if u > 0.75 => "stuck",
        u if u > 0.55 => "renewing",
        _ => "ok",
    }
}

/// The edges one proxy saw as the called side (inbound, or a gateway's clients), and its
/// calls out of the mesh, with rates from its last two reports.
fn add_edges(edges: &mut BTreeMap<(String, String), Value>, proxy: &ProxyView) {
    let Some((last_ms, last)) = proxy.reports.back() else {
        return;
    };
    let prev = (proxy.reports.len() == 2)
        .then(|| proxy.reports.front())
        .flatten();
    for edge in last.iter().filter(|e| called_side(e) || leaves_mesh(e)) {
        let before = prev.and_then(|(ms, edges)| {
            edges
                .iter()
                .find(|e| {
                    e.direction == edge.direction
                        && e.source == edge.source
                        && e.destination == edge.destination
                })
                .map(|e| (*ms, e))
        });
        let mut rates = json!({"rate": null, "success": null, "denied": null,
            "latency_ms": null, "tcp_bytes_per_s": null});
        if let Some((ms, b)) = before.filter(|(ms, _)| *last_ms > *ms) {
            let secs = (*last_ms - ms) as f64 / 1000.0;
            let requests = edge.requests.saturating_sub(b.requests);
            let share = |n: u64| (requests > 0).then(|| n as f64 / requests as f64);
            let count = edge.latency_count.saturating_sub(b.latency_count);
            let sum = edge.latency_seconds_sum - b.latency_seconds_sum;
            rates = json!({
                "rate": requests as f64 / secs,
                "success": share(edge.server_errors.saturating_sub(b.server_errors)).map(|e| 1.0 - e),
                "denied": share(edge.client_errors.saturating_sub(b.client_errors)),
                "latency_ms": (count > 0).then(|| sum / count as f64 * 1000.0),
                "tcp_bytes_per_s": edge.tcp_bytes.saturating_sub(b.tcp_bytes) as f64 / secs,
            });
        }
        let security = match (edge.source.as_str(), edge.destination.as_str()) {
            ("external", _) => "tls",
            (_, "external") => "none",
            _ => "mtls",
        };
        let mut view = json!({
            "source": edge.source, "destination": edge.destination,
            "security": security, "requests": edge.requests,
            "server_errors": edge.server_errors, "client_errors": edge.client_errors,
        });
        if let (Some(view), Value::Object(rates)) = (view.as_object_mut(), rates) {
            view.extend(rates);
        }
        edges.insert((edge.source.clone(), edge.destination.clone()), view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(source: &str, destination: &str, requests: u64, errors: u64) -> v1::EdgeCounts {
        v1::EdgeCounts {
            direction: "inbound".into(),
            source: source.into(),
            destination: destination.into(),
            requests,
            server_errors: errors,
            client_errors: 0,
            latency_seconds_sum: requests as f64 * 0.002,
            latency_count: requests,
            tcp_bytes: 0,
        }
    }

    fn report(edges: Vec<v1::EdgeCounts>, serial: &str) -> v1::ProxyReport {
        v1::ProxyReport {
            time_unix_ms: 0,
            role: "sidecar".into(),
            edges,
            denials: vec![],
            anomalies: vec![],
            svid: Some(v1::Svid {
                spiffe_id: "spiffe://t/ns/a/sa/b".into(),
                serial: serial.into(),
                not_before_unix: 0,
                not_after_unix: 4_000_000_000,
            }),
        }
    }

    #[test]
    fn rates_come_from_the_last_two_reports_and_rotations_from_serials() {
        let d = Dashboard::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let id = "spiffe://t/ns/a/sa/b";
        d.report(
            id,
            report(vec![edge("spiffe://t/ns/a/sa/a", id, 100, 0)], "01"),
            t0,
        );
        let later = t0 + Duration::from_secs(5);
        d.report(
            id,
            report(vec![edge("spiffe://t/ns/a/sa/a", id, 150, 5)], "02"),
            later,
        );
        let view = d.view(later);
        let e = &view["edges"][0];
        assert_eq!(e["rate"], 10.0);
        assert_eq!(e["success"], 0.9);
        assert_eq!(e["security"], "mtls");
        assert!((e["latency_ms"].as_f64().unwrap_or(0.0) - 2.0).abs() < 1e-9);
        let w = &view["workloads"][0];
        assert_eq!(
            (w["serial"].as_str(), w["rotations"].as_u64()),
            (Some("02"), Some(1))
        );
        assert_eq!(w["name"], "b");
        assert_eq!(w["reporting"], true);
        assert_eq!(
            d.view(later + STALE_AFTER)["workloads"][0]["reporting"],
            false
        );
    }

    #[test]
    fn the_view_shows_the_newest_denials_and_a_search_finds_older_ones() {
        let d = Dashboard::default();
        let now = SystemTime::now();
        let mut r = report(vec![], "01");
        r.denials = (0..200)
            .map(|i| v1::Denial {
                destination: "spiffe://t/ns/a/sa/b".into(),
                path: format!("/p/{i}"),
                request_id: if i == 3 {
                    "needle".into()
                } else {
                    format!("r{i}")
                },
                ..Default::default()
            })
            .collect();
        d.report("spiffe://t/ns/a/sa/b", r, now);
        let view = d.view(now);
        let shown = view["denials"].as_array().expect("denials");
        assert_eq!(shown.len(), DENIALS_SHOWN);
        assert_eq!(shown[0]["path"], "/p/199", "newest first");
        let found = d.denials_matching("needle");
        assert_eq!(found.as_array().map(Vec::len), Some(1));
        assert_eq!(found[0]["path"], "/p/3");
        assert_eq!(
            d.denials_matching("/p/1").as_array().map(Vec::len),
            Some(DENIALS_SHOWN)
        );
    }

    #[test]
    fn a_proxy_speaks_only_for_its_own_calls() {
        let d = Dashboard::default();
        let now = SystemTime::now();
        let me = "spiffe://t/ns/a/sa/b";
        let mut r = report(
            vec![
                edge("spiffe://t/ns/a/sa/a", me, 5, 0),
                edge("spiffe://t/ns/x/sa/x", "spiffe://t/ns/y/sa/y", 5, 0),
            ],
            "01",
        );
        r.denials = vec![
            v1::Denial {
                destination: me.into(),
                ..Default::default()
            },
            v1::Denial {
                destination: "spiffe://t/ns/y/sa/y".into(),
                ..Default::default()
            },
        ];
        d.report(me, r, now);
        let view = d.view(now);
        assert_eq!(view["edges"].as_array().map(Vec::len), Some(1), "{view}");
        assert_eq!(view["denials"].as_array().map(Vec::len), Some(1), "{view}");
        let firsts: Vec<&Value> = view["anomalies"].as_array().into_iter().flatten().collect();
        assert!(firsts.iter().all(|a| a["destination"] == me), "{firsts:?}");
        // An SVID of another identity is not taken for this workload's.
        let mut other = report(vec![], "99");
        if let Some(svid) = other.svid.as_mut() {
            svid.spiffe_id = "spiffe://t/ns/x/sa/x".into();
        }
        d.report(me, other, now);
        assert_eq!(d.view(now)["workloads"][0]["serial"], "01");
    }

    #[test]
    fn rotation_states_follow_the_lifetime_used() {
        let s = Served {
            serial: "x".into(),
            not_before: 0,
            not_after: 100,
            first_seen_ms: 0,
        };
        let states: Vec<&str> = [10, 60, 80, 100]
            .iter()
            .map(|&t| rotation_state(&s, t))
            .collect();
        assert_eq!(states, ["ok", "renewing", "stuck", "expired"]);
    }
}
