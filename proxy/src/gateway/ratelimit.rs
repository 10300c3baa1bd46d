//! Rate limits at the gateway: token buckets keyed by any combination of the end user's
//! principal, the client's address and the route. A request takes one token from every
//! limit its route names; when one is empty the answer is `429` with `Retry-After`, and
//! every answer on a limited route carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (of the limit closest to running out).
//!
//! Buckets live in this process, or with `redis` configured in Redis, shared by every
//! gateway replica ([`shared`]); if Redis cannot answer in time the local bucket decides
//! (and the fallback is counted), so an outage of Redis never stops traffic.

pub mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde::{Deserialize, Serialize};

/// What a bucket is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The verified end user (`anonymous` without one).
    Principal,
    /// The API key presented (`none` without one).
    ApiKey,
    /// The client's address.
    Client,
    /// The route taken.
    Route,
}

/// A limit as configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Named by routes (`rate_limits: [NAME]`) and in metrics and the audit log.
    pub name: String,
    /// One bucket per distinct combination of these (one bucket for all without).
    #[serde(default)]
    pub by: Vec<KeyPart>,
    /// `N/s`, `N/m` or `N/h`.
    pub rate: String,
    /// The most tokens a bucket holds (default: N).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A checked limit's numbers.
#[derive(Debug, Clone)]
pub struct LimitSpec {
    pub name: String,
    pub by: Vec<KeyPart>,
    /// Bucket size.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl RateLimitConfig {
    pub fn check(&self) -> Result<LimitSpec, String> {
        let bad = || format!("rate {:?} is not N/s, N/m or N/h with N > 0", self.rate);
        let (n, unit) = self.rate.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().ok().filter(|&n| n > 0).ok_or_else(bad)?;
        let seconds = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let burst = self.burst.unwrap_or(n);
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        if self.name.is_empty() {
            return Err("a limit needs a name".into());
        }
        Ok(LimitSpec {
            name: self.name.clone(),
            by: self.by.clone(),
            burst,
            per_second: f64::from(n) / seconds,
        })
    }
}

/// What a request is keyed by.
pub struct KeyFacts<'a> {
    pub principal: Option<&'a str>,
    /// The id of the API key presented.
    pub api_key: Option<&'a str>,
    pub client: &'a str,
    pub route: usize,
}

impl LimitSpec {
    /// The bucket's key for a request: the parts joined by a separator no part holds.
    fn key(&self, facts: &KeyFacts<'_>) -> String {
        let mut key = String::new();
        for (i, part) in self.by.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match part {
                KeyPart::Principal => key.push_str(facts.principal.unwrap_or("anonymous")),
                KeyPart::ApiKey => key.push_str(facts.api_key.unwrap_or("none")),
                KeyPart::Client => key.push_str(facts.client),
                KeyPart::Route => key.push_str(&facts.route.to_string()),
            }
        }
        key
    }

    /// Seconds until a bucket holding `tokens` is full again.
    fn reset_after(&self, tokens: f64) -> u64 {
        ((f64::from(self.burst) - tokens).max(0.0) / self.per_second).ceil() as u64
    }
}

/// One limit's answer for a request.
#[derive(Debug, Clone)]
pub struct Taken {
    pub limit: usize,
    pub allowed: bool,
    /// Tokens left after this request.
    pub remaining: f64,
}

/// The answer for a request over all its route's limits.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// The name of the limit that refused it, if one did.
    pub limited_by: Option<String>,
    /// `RateLimit-*` and (when refused) `Retry-After` for the response.
    pub headers: Vec<(&'static str, HeaderValue)>,
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// At most this many buckets per limit are kept in memory; past it, full ones are
/// forgotten (a forgotten bucket comes back full, which is what it was).
const MAX_BUCKETS: usize = 100_000;

/// The limits of a gateway.
pub struct Limiter {
    specs: Vec<LimitSpec>,
    local: Vec<Mutex<HashMap<String, Bucket>>>,
    shared: Option<Arc<shared::Shared>>,
}

impl Limiter {
    pub fn new(specs: Vec<LimitSpec>, shared: Option<Arc<shared::Shared>>) -> Self {
        let local = specs.iter().map(|_| Mutex::default()).collect();
        Self {
            specs,
            local,
            shared,
        }
    }

    /// The index of the limit named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.name == name)
    }

    /// Takes a token from each of `limits` for a request with `facts`.
    pub async fn check(&self, limits: &[usize], facts: &KeyFacts<'_>) -> Verdict {
        if limits.is_empty() {
            return Verdict::default();
        }
        let mut taken = Vec::with_capacity(limits.len());
        for &i in limits {
            let spec = &self.specs[i];
            let key = spec.key(facts);
            let shared = match &self.shared {
                Some(s) => s.take(spec, &key).await,
                None => None,
            };
            let (allowed, remaining, store) = match shared {
                Some((allowed, remaining)) => (allowed, remaining, "redis"),
                None => {
                    let (allowed, remaining) = self.take_local(i, key, Instant::now());
                    let store = if self.shared.is_some() {
                        "local_fallback"
                    } else {
                        "local"
                    };
                    (allowed, remaining, store)
                }
            };
            let outcome = if allowed { "allowed" } else { "limited" };
            metrics::counter!("ward_gateway_rate_limit_total", "limit" => spec.name.clone(),
                "outcome" => outcome, "store" => store)
            .increment(1);
            taken.push(Taken {
                limit: i,
                allowed,
                remaining,
            });
        }
        self.verdict(&taken)
    }

    fn take_local(&self, i: usize, key: String, now: Instant) -> (bool, f64) {
        let spec = &self.specs[i];
        let mut buckets = self.local[i].lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            forget_full(&mut buckets, spec, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: f64::from(spec.burst),
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * spec.per_second).min(f64::from(spec.burst));
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            (true, bucket.tokens)
        } else {
            (false, bucket.tokens)
        }
    }

    fn verdict(&self, taken: &[Taken]) -> Verdict {
        let refused = taken.iter().find(|t| !t.allowed);
        let shown = refused.or_else(|| {
            taken
                .iter()
                .min_by(|a, b| a.remaining.total_cmp(&b.remaining))
        });
        let Some(shown) = shown else {
            return Verdict::default();
        };
        let spec = &self.specs[shown.limit];
        let number = |n: u64| HeaderValue::from(n);
        let mut headers = vec![
            ("ratelimit-limit", number(u64::from(spec.burst))),
            (
                "ratelimit-remaining",
                number(shown.remaining.floor() as u64),
            ),
            ("ratelimit-reset", number(spec.reset_after(shown.remaining))),
        ];
        if refused.is_some() {
            let wait = ((1.0 - shown.remaining) / spec.per_second).ceil().max(1.0) as u64;
            headers.push(("retry-after", number(wait)));
        }
        Verdict {
            limited_by: refused.map(|_| spec.name.clone()),
            headers,
        }
    }
}

/// Forgets buckets that are full by now (they hold nothing a new bucket would not); if
/// none is, forgets an arbitrary tenth so memory stays bounded.
fn forget_full(buckets: &mut HashMap<String, Bucket>, spec: &LimitSpec, now: Instant) {
    let full_after = Duration::from_secs_f64(f64::from(spec.burst) / spec.per_second);
    buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
    if buckets.len() >= MAX_BUCKETS {
        let drop: Vec<String> = buckets.keys().take(MAX_BUCKETS / 10).cloned().collect();
        for k in drop {
            buckets.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: &str, burst: Option<u32>, by: Vec<KeyPart>) -> Limiter {
        let spec = RateLimitConfig {
            name: "l".into(),
            by,
            rate: rate.into(),
            burst,
        }
        .check()
        .unwrap();
        Limiter::new(vec![spec], None)
    }

    #[test]
    fn buckets_empty_at_the_burst_and_refill_at_the_rate() {
        let l = limiter("2/s", Some(3), vec![KeyPart::Principal]);
        let t0 = Instant::now();
        let take = |key: &str, at: Duration| l.take_local(0, key.into(), t0 + at).0;
        assert!(take("a", Duration::ZERO));
        assert!(take("a", Duration::ZERO));
        assert!(take("a", Duration::ZERO));
        assert!(!take("a", Duration::ZERO), "burst of 3 spent");
        assert!(take("b", Duration::ZERO), "another key, another bucket");
        assert!(!take("a", Duration::from_millis(400)), "0.8 tokens");
        assert!(take("a", Duration::from_millis(600)), "1.2 tokens");
        assert!(take("a", Duration::from_secs(10)));
    }

    #[test]
    fn keys_combine_their_parts_and_rates_are_checked() {
        let spec = RateLimitConfig {
            name: "x".into(),
            by: vec![KeyPart::Principal, KeyPart::Client, KeyPart::Route],
            rate: "60/m".into(),
            burst: None,
        }
        .check()
        .unwrap();
        assert_eq!(spec.burst, 60);
        assert!((spec.per_second - 1.0).abs() < 1e-9);
        let facts = KeyFacts {
            principal: None,
            api_key: None,
            client: "10.0.0.1",
            route: 2,
        };
        assert_eq!(spec.key(&facts), "anonymous\u{1f}10.0.0.1\u{1f}2");
        for bad in ["0/s", "5", "5/d", "x/s", "-1/s"] {
            let c = RateLimitConfig {
                name: "x".into(),
                by: vec![],
                rate: bad.into(),
                burst: None,
            };
            assert!(c.check().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_verdict_names_the_refusing_limit_and_says_when_to_retry() {
        let l = limiter("1/m", Some(1), vec![]);
        let v = l.verdict(&[Taken {
            limit: 0,
            allowed: false,
            remaining: 0.5,
        }]);
        assert_eq!(v.limited_by.as_deref(), Some("l"));
        let get = |name: &str| {
            v.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert_eq!(get("retry-after").as_deref(), Some("30"));
        assert_eq!(get("ratelimit-remaining").as_deref(), Some("0"));
        assert_eq!(get("ratelimit-limit").as_deref(), Some("1"));
    }
}
