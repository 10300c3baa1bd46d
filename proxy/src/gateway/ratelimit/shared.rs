//! Buckets kept in Redis, so every gateway replica draws from the same ones. One Lua script
//! refills and takes a token atomically, on Redis's own clock (no skew between replicas),
//! and lets an idle bucket expire once it would be full anyway. Redis is asked with a short
//! deadline; no answer in time, an error, or no connection yet means the caller decides
//! locally instead, and the gateway keeps trying to (re)connect in the background.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::LimitSpec;

/// `redis: { address: HOST:PORT, timeout: 50ms }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub address: String,
    /// How long a request waits for Redis before its local bucket decides.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_millis(50)
}

/// KEYS[1] the bucket; ARGV burst, tokens per second. Returns {allowed, tokens left}.
const TAKE: &str = r"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
";

/// The connection to Redis, once there is one.
pub struct Shared {
    connection: ArcSwapOption<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
}

impl Shared {
    /// Starts connecting to `config.address` in the background (retrying every second);
    /// until connected, every decision is local.
    pub fn start(config: &RedisConfig) -> Result<Arc<Self>, String> {
        let client = redis::Client::open(format!("redis://{}/", config.address))
            .map_err(|e| format!("redis.address {:?}: {e}", config.address))?;
        let this = Arc::new(Self {
            connection: ArcSwapOption::empty(),
            script: redis::Script::new(TAKE),
            timeout: config.timeout,
        });
        let weak = Arc::downgrade(&this);
        let address = config.address.clone();
        tokio::spawn(async move {
            loop {
                let Some(this) = weak.upgrade() else { return };
                let connect = ConnectionManager::new(client.clone());
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(manager)) => {
                        this.connection.store(Some(Arc::new(manager)));
                        tracing::info!(%address, "rate limits shared through Redis");
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%address, error = %e, "Redis unreachable; rate limits are local")
                    }
                    Err(_) => {
                        tracing::warn!(%address, "Redis did not answer; rate limits are local")
                    }
                }
                drop(this);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(this)
    }

    /// Takes a token from the shared bucket `key` of `spec`: `(allowed, tokens left)`, or
    /// `None` when Redis could not say in time (the caller decides locally).
    pub async fn take(&self, spec: &LimitSpec, key: &str) -> Option<(bool, f64)> {
        let connection = self.connection.load_full()?;
        let mut connection = (*connection).clone();
        let mut call = self
            .script
            .key(format!("ward:ratelimit:{}:{key}", spec.name));
        call.arg(spec.burst).arg(spec.per_second);
        let answer = tokio::time::timeout(
            self.timeout,
            call.invoke_async::<(i64, String)>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok((allowed, tokens))) => Some((allowed == 1, tokens.parse().unwrap_or(0.0))),
            Ok(Err(e)) => {
                metrics::counter!("ward_gateway_rate_limit_redis_errors_total").increment(1);
                tracing::debug!(error = %e, "Redis refused; this request is limited locally");
                None
            }
            Err(_) => {
                metrics::counter!("ward_gateway_rate_limit_redis_errors_total").increment(1);
                tracing::debug!("Redis too slow; this request is limited locally");
                None
            }
        }
    }
}
