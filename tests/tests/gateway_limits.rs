//! Gateway rate limits end to end: token buckets per end user answered with 429,
//! `Retry-After` and `RateLimit-*`, recovering as the bucket refills; and buckets shared by
//! two gateway replicas through a real Redis server (Debian's redis-server), with the
//! gateways falling back to local buckets when Redis goes away.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ward_tests::apps;
use ward_tests::gateway::{IDP, Options, start_with};
use ward_tests::k8s::eventually;
use ward_tests::mesh::free_addr;

/// A `redis-server` on a free port, no persistence, killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Self {
        let addr = free_addr();
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        eventually(Duration::from_secs(10), "redis-server listening", || {
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
        Self { child, addr }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_end_user_has_a_bucket_and_429_says_when_to_come_back() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let options = Options {
        extra: "rate_limits: [ { name: per-user, by: [principal], rate: 2/s, burst: 3 } ]".into(),
        accounts_route: ", rate_limits: [per-user]".into(),
        ..Options::default()
    };
    let edge = tokio::task::spawn_blocking(move || start_with(addr, &options))
        .await
        .expect("start");
    tokio::task::spawn_blocking(move || {
        let path = "/accounts/alice/balance";
        let (code, head, _) = edge.get(path, Some(&edge.alice), &[]);
        assert_eq!(code, 200);
        assert_eq!(header(&head, "ratelimit-limit").as_deref(), Some("3"));
        // Spend the rest of the burst; the bucket refills at 2/s, so a few more may pass
        // before one is refused.
        let refused = (0..20)
            .map(|_| edge.get(path, Some(&edge.alice), &[]))
            .find(|(code, _, _)| *code == 429)
            .expect("a request over the limit");
        let (_, head, body) = refused;
        assert_eq!(body, "too many requests\n");
        assert_eq!(header(&head, "retry-after").as_deref(), Some("1"));
        assert_eq!(header(&head, "ratelimit-remaining").as_deref(), Some("0"));
        // Bob has his own bucket; the health route has no limit.
        assert_eq!(edge.get("/accounts/bob/x", Some(&edge.bob), &[]).0, 200);
        let (code, head, _) = edge.get("/health", None, &[]);
        assert_eq!((code, header(&head, "ratelimit-limit")), (200, None));
        // The bucket refills.
        eventually(Duration::from_secs(5), "alice served again", || {
            (edge.get(path, Some(&edge.alice), &[]).0 == 200).then_some(())
        });
        let limited = edge.audit_line("the 429 in the audit log", |l| {
            l["policy"] == "rate-limit:per-user"
        });
        assert_eq!(limited["limit"], "per-user");
        assert_eq!(limited["request_principal"], format!("{IDP}/alice"));
        assert_eq!(limited["decision"], "deny");
        let (_, metrics) = edge.gateway.admin_get("/metrics");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ward_gateway_rate_limit_total")
                    && l.contains("outcome=\"limited\"")
                    && l.contains("store=\"local\"")),
            "{metrics}"
        );
    })
    .await
    .expect("checks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_buckets_through_redis_and_fall_back_to_local_without_it() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let redis = Redis::start();
    let options = Options {
        extra: format!(
            "rate_limits: [ {{ name: per-user, by: [principal], rate: 1/h, burst: 4 }} ]\n\
             redis: {{ address: \"{}\", timeout: 500ms }}",
            redis.addr
        ),
        accounts_route: ", rate_limits: [per-user]".into(),
        ..Options::default()
    };
    let edge = tokio::task::spawn_blocking(move || start_with(addr, &options))
        .await
        .expect("start");
    tokio::task::spawn_blocking(move || {
        eventually(
            Duration::from_secs(10),
            "the gateway connected to Redis",
            || {
                edge.gateway
                    .logs()
                    .contains("rate limits shared through Redis")
                    .then_some(())
            },
        );
        let (replica, port) = edge.replica("gateway-2");
        eventually(
            Duration::from_secs(10),
            "the replica connected to Redis",
            || {
                replica
                    .logs()
                    .contains("rate limits shared through Redis")
                    .then_some(())
            },
        );
        let path = "/accounts/alice/balance";
        // Four tokens in all, whichever gateway takes them.
        assert_eq!(edge.get(path, Some(&edge.alice), &[]).0, 200);
        assert_eq!(edge.get_at(port, path, &edge.alice).0, 200);
        assert_eq!(edge.get(path, Some(&edge.alice), &[]).0, 200);
        assert_eq!(edge.get_at(port, path, &edge.alice).0, 200);
        let (code, head, _) = edge.get_at(port, path, &edge.alice);
        assert_eq!(code, 429, "the fifth, on either gateway");
        assert_eq!(edge.get(path, Some(&edge.alice), &[]).0, 429);
        assert!(header(&head, "retry-after").is_some());
        // Redis gone: each gateway decides alone, with fresh local buckets.
        drop(redis);
        assert_eq!(edge.get(path, Some(&edge.alice), &[]).0, 200);
        let (_, metrics) = edge.gateway.admin_get("/metrics");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ward_gateway_rate_limit_total")
                    && l.contains("store=\"local_fallback\"")),
            "{metrics}"
        );
        assert!(
            metrics.contains("ward_gateway_rate_limit_redis_errors_total"),
            "{metrics}"
        );
        drop(replica);
    })
    .await
    .expect("checks");
}
