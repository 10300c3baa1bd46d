//! API keys: `ward gateway key create|revoke|list` on a key store, and the gateway taking
//! keys in `x-api-key` as the principal `apikey/PRINCIPAL` — two keys of one partner at
//! once (rotation with overlap), revocation and expiry taking effect without a restart,
//! forged or doubled credentials refused, the key never passed on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ward_tests::apps;
use ward_tests::bin::ward;
use ward_tests::gateway::{Options, echo, start_with};
use ward_tests::k8s::eventually;

fn create(store: &Path, principal: &str, extra: &[&str]) -> String {
    let store = store.to_str().expect("utf-8");
    let mut args = vec![
        "gateway",
        "key",
        "create",
        "--store",
        store,
        "--principal",
        principal,
    ];
    args.extend_from_slice(extra);
    let run = ward(&args);
    let key = run.ok().trim().to_owned();
    assert!(run.stderr.contains("created for"), "{}", run.stderr);
    key
}

fn revoke(store: &Path, id: &str) {
    let store = store.to_str().expect("utf-8");
    ward(["gateway", "key", "revoke", "--store", store, id]).ok();
}

fn list(store: &Path) -> String {
    ward([
        "gateway",
        "key",
        "list",
        "--store",
        store.to_str().expect("utf-8"),
    ])
    .ok()
    .to_owned()
}

#[test]
fn the_key_commands_keep_hashes_only_and_say_what_is_active() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("keys.json");
    let key = create(&store, "acme", &["--claim", "tier=gold"]);
    assert!(key.starts_with("wardk_"), "{key}");
    let mode = std::fs::metadata(&store)
        .expect("store")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&store).expect("store");
    let secret = key.rsplit('_').next().expect("secret");
    assert!(!text.contains(secret), "only the hash is stored");
    let id = &key[6..18];
    let listed = list(&store);
    assert!(listed.contains(id) && listed.contains("acme") && listed.contains("active"));
    assert!(!listed.contains(secret));
    revoke(&store, id);
    assert!(list(&store).contains("revoked"));
    let line = ward([
        "gateway",
        "key",
        "revoke",
        "--store",
        store.to_str().unwrap(),
        "nope",
    ])
    .fails_with(1)
    .to_owned();
    assert!(line.contains("no key with id \"nope\""), "{line}");
    let line = ward([
        "gateway",
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "--principal",
        "a/b",
    ])
    .fails_with(1)
    .to_owned();
    assert!(line.contains("without '/'"), "{line}");
    ward([
        "gateway",
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "--principal",
        "a",
        "--claim",
        "novalue",
    ])
    .fails_with(2);
    let missing = dir.path().join("none.json");
    ward([
        "gateway",
        "key",
        "list",
        "--store",
        missing.to_str().unwrap(),
    ])
    .fails_with(1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_use_keys_that_rotate_with_overlap_and_stop_when_revoked_or_expired() {
    let app = apps::http_echo().await;
    let addr = app.addr;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("keys.json");
    let old = create(&store, "acme", &[]);
    let short = create(&store, "acme", &["--expires-in", "2s"]);
    let options = Options {
        extra: format!("api_keys: {{ store: {} }}", store.display()),
        ..Options::default()
    };
    tokio::task::spawn_blocking(move || {
        let edge = start_with(addr, &options);
        let new = create(&store, "acme", &[]);
        let with_key = |key: &str| {
            let header = format!("x-api-key: {key}");
            edge.curl("api.bank.test", "/statements/acme/2026", &["-H", &header])
        };
        // The old and the new key both work (the new one once the store is re-read).
        let (code, _, body) = with_key(&old);
        assert_eq!(code, 200, "{body}");
        assert!(
            echo(&body)["headers"].get("x-api-key").is_none(),
            "the key stays at the edge"
        );
        eventually(Duration::from_secs(10), "the new key taken", || {
            (with_key(&new).0 == 200).then_some(())
        });
        // The sidecar judges the partner's own statements from the claims sent on.
        let header = format!("x-api-key: {new}");
        let (code, _, _) = edge.curl("api.bank.test", "/statements/other/2026", &["-H", &header]);
        assert_eq!(code, 403);
        // Revoked: refused within a poll; the other key goes on.
        let id = &old[6..18];
        revoke(&store, id);
        eventually(Duration::from_secs(10), "the revoked key refused", || {
            (with_key(&old).0 == 401).then_some(())
        });
        assert_eq!(with_key(&new).0, 200);
        eventually(Duration::from_secs(10), "the expired key refused", || {
            (with_key(&short).0 == 401).then_some(())
        });
        // Made-up keys, a key sent twice, or a key with a token: 401.
        let forged = format!("{}{}", &new[..19], "0".repeat(64));
        assert_eq!(with_key(&forged).0, 401);
        let (code, _, _) = edge.curl(
            "api.bank.test",
            "/statements/acme/2026",
            &["-H", &header, "-H", &header],
        );
        assert_eq!(code, 401);
        let bearer = format!("Authorization: Bearer {}", edge.alice);
        let (code, _, _) = edge.curl(
            "api.bank.test",
            "/statements/acme/2026",
            &["-H", &header, "-H", &bearer],
        );
        assert_eq!(code, 401);
        // The audit line names the partner and the key, never the key itself.
        let allowed = edge.audit_line("an allowed key", |l| {
            l["decision"] == "allow" && l["issuer"] == "apikey"
        });
        let lines = edge.audit();
        assert_eq!(allowed["request_principal"], "apikey/acme");
        assert_eq!(allowed["kid"], id);
        assert!(lines.iter().any(|l| {
            l["authentication"]
                .as_str()
                .is_some_and(|a| a.contains(&format!("API key {id} is revoked")))
        }));
        let audit = std::fs::read_to_string(edge.pki.dir().join("gateway-audit.log")).unwrap();
        for key in [&old, &new, &short] {
            assert!(!audit.contains(key.as_str()) && !edge.gateway.logs().contains(key.as_str()));
        }
    })
    .await
    .expect("checks");
}
