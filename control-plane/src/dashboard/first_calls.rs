//! First-ever calls: the control plane remembers every (source, destination) pair of
//! workload identities any proxy has reported a call for, in the data directory
//! (`edges.json`), so "first" survives restarts of proxies and of the control plane. A
//! pair not seen before is an anomaly: counted (`ward_cp_anomalies_total{kind="first_call"}`)
//! and written to the control plane's audit log (`audit.log` in the data directory) as a
//! line of kind `anomaly`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use ward_certs::pem::{FileMode, write_atomic};

/// Pairs remembered at most; past it new pairs are still flagged but no longer stored.
const MAX_KNOWN: usize = 100_000;

#[derive(Debug, Default)]
pub struct FirstCalls {
    /// The data directory, when persisted (tests keep it in memory).
    dir: Option<PathBuf>,
    known: BTreeSet<(String, String)>,
}

impl FirstCalls {
    /// The pairs the data directory remembers (none if it has no `edges.json` yet; an
    /// unreadable one is reported and started over).
    pub fn open(dir: &Path) -> Self {
        let file = dir.join("edges.json");
        let known = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice::<Vec<(String, String)>>(&bytes)
                .map(|pairs| pairs.into_iter().collect())
                .unwrap_or_else(|e| {
                    tracing::warn!(file = %file.display(), error = %e,
                        "cannot read the known calls; every call is new again");
                    BTreeSet::new()
                }),
            Err(_) => BTreeSet::new(),
        };
        Self {
            dir: Some(dir.to_owned()),
            known,
        }
    }

    /// Whether `source` → `destination` is a first call (then it is remembered, counted
    /// and audited; `reported_by` is the proxy that saw it).
    pub fn seen(&mut self, source: &str, destination: &str, reported_by: &str) -> bool {
        let pair = (source.to_owned(), destination.to_owned());
        if self.known.contains(&pair) {
            return false;
        }
        if self.known.len() < MAX_KNOWN {
            self.known.insert(pair);
            self.persist();
        }
        metrics::counter!("ward_cp_anomalies_total", "kind" => "first_call").increment(1);
        tracing::info!(%source, %destination, "first call between these workloads");
        self.audit(json!({
            "time": ward_runtime::time::rfc3339_millis(std::time::SystemTime::now()),
            "kind": "anomaly",
            "anomaly": "first_call",
            "source": source,
            "destination": destination,
            "reported_by": reported_by,
        }));
        true
    }

    fn persist(&self) {
        let Some(dir) = &self.dir else { return };
        let pairs: Vec<&(String, String)> = self.known.iter().collect();
        let written = serde_json::to_vec(&pairs)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                write_atomic(&dir.join("edges.json"), &bytes, FileMode::Public)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot save the known calls");
        }
    }

    fn audit(&self, line: serde_json::Value) {
        let Some(dir) = &self.dir else { return };
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("audit.log"))
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = appended {
            tracing::warn!(error = %e, "cannot write the control plane's audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_first_once_and_stays_known_across_restarts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut calls = FirstCalls::open(dir.path());
        assert!(calls.seen("spiffe://t/a", "spiffe://t/b", "spiffe://t/b"));
        assert!(!calls.seen("spiffe://t/a", "spiffe://t/b", "spiffe://t/b"));
        assert!(
            calls.seen("spiffe://t/b", "spiffe://t/a", "spiffe://t/a"),
            "direction counts"
        );
        let mut again = FirstCalls::open(dir.path());
        assert!(!again.seen("spiffe://t/a", "spiffe://t/b", "spiffe://t/b"));
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit");
        let lines: Vec<serde_json::Value> = audit
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "anomaly");
        assert_eq!(lines[0]["anomaly"], "first_call");
        std::fs::write(dir.path().join("edges.json"), "not json").expect("write");
        assert!(FirstCalls::open(dir.path()).seen("spiffe://t/a", "spiffe://t/b", "x"));
    }
}
