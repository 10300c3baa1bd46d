//! Configuration loading, overrides and validation.
use super::*;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for f in ["web.pem", "web.key", "bundle.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        Self { dir }
    }

    fn load(&self, yaml: &str, env: &[(&str, &str)]) -> Result<Validated, String> {
        let path = self.dir.path().join("sidecar.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        SidecarConfig::load(&path, env).map_err(|e| e.to_string())
    }
}

const GOOD: &str = "\
trust_domain: example.org
identity: { cert: web.pem, key: web.key, bundle: bundle.pem }
workload: { namespace: default, labels: { app: web } }
inbound:
  - { listen: 127.0.0.1:16006, app: 127.0.0.1:9080, protocol: auto }
outbound:
  - listen: 127.0.0.1:17001
    upstream: 127.0.0.1:16106
    server_identity: spiffe://example.org/ns/default/sa/orders
    protocol: tcp
admin: 127.0.0.1:15000
policy: { dir: policies }
audit: { decisions: all, log: stdout }
limits: { max_header_bytes: 65536, header_read_timeout: 10s, detect_timeout: 300ms,
          max_concurrent_streams: 1024, max_connections: 10000, idle_timeout: 300s,
          drain_timeout: 20s }
";

#[test]
fn the_documented_example_loads() {
    let files = Files::new();
    let v = files.load(GOOD, &[]).unwrap();
    assert_eq!(v.trust_domain.to_string(), "example.org");
    assert_eq!(v.config.outbound[0].protocol, Protocol::Tcp);
    assert_eq!(v.config.limits.detect_timeout, Duration::from_millis(300));
    assert_eq!(
        v.server_identities[0].to_string(),
        "spiffe://example.org/ns/default/sa/orders"
    );
    assert!(
        v.config
            .identity
            .cert
            .as_ref()
            .is_some_and(|c| c.is_absolute()),
        "relative to the config file"
    );
    assert_eq!(v.config.runtime.worker_threads, 2);
}

#[test]
fn environment_overrides_fields_and_lists() {
    let files = Files::new();
    let v = files
        .load(
            GOOD,
            &[
                ("WARD_LIMITS_IDLE_TIMEOUT", "30s"),
                ("WARD_ADMIN", "127.0.0.1:15999"),
                ("WARD_WORKLOAD_LABELS", "app=api, tier=backend"),
                ("WARD_RUNTIME_WORKER_THREADS", "4"),
                ("WARD_ACCESS_LOG", "true"),
                ("WARD_OUTBOUND", "[]"),
                ("WARD_LOG", "debug"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
    let c = &v.config;
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.admin.port(), 15999);
    assert_eq!(c.workload.labels["tier"], "backend");
    assert_eq!(c.runtime.worker_threads, 4);
    assert!(c.access_log);
    assert!(c.outbound.is_empty());
}

#[test]
fn spire_and_the_workload_api_are_read_from_the_file_and_the_environment() {
    let files = Files::new();
    let yaml = GOOD.replace(
        "{ cert: web.pem, key: web.key, bundle: bundle.pem }",
        "{ spire: { socket: \"unix:///run/spire/agent.sock\" } }",
    );
    let v = files
        .load(
            &yaml,
            &[
                ("WARD_WORKLOAD_API_SOCKET", "api.sock"),
                ("WARD_WORKLOAD_API_ALLOWED_UIDS", "[1000, 1001]"),
            ],
        )
        .unwrap();
    let spire = v.config.identity.spire.as_ref().unwrap();
    assert_eq!(spire.path(), std::path::Path::new("/run/spire/agent.sock"));
    let api = v.config.workload_api.as_ref().unwrap();
    assert_eq!(api.allowed_uids, [1000, 1001]);
    assert_eq!(api.socket, files.dir.path().join("api.sock"));
}

#[test]
fn each_bad_config_is_one_line_naming_the_field_or_file() {
    let files = Files::new();
    type Env = Vec<(&'static str, &'static str)>;
    let cases: Vec<(String, Env, &str)> = vec![
        (
            GOOD.replace("idle_timeout: 300s", "idle_timout: 300s"),
            vec![],
            "limits.idle_timout: unknown field `idle_timout`",
        ),
        (
            GOOD.replace("bundle: bundle.pem", "bundle: nope.pem"),
            vec![],
            "identity.bundle: ",
        ),
        (
            GOOD.replace("app: 127.0.0.1:9080", "app: localhost"),
            vec![],
            "inbound[0].app: invalid socket address",
        ),
        (
            GOOD.replace(
                "protocol: auto }",
                "protocol: auto, upgrades: [websocket, h2c] }",
            ),
            vec![],
            "inbound[0].upgrades[1]: h2c is never carried",
        ),
        (
            GOOD.replace("127.0.0.1:17001", "127.0.0.1:16006"),
            vec![],
            "outbound[0].listen: 127.0.0.1:16006 is used by another listener",
        ),
        (
            GOOD.replace("sa/orders", "sa/../orders"),
            vec![],
            "outbound[0].server_identity",
        ),
        (
            GOOD.replace("spiffe://example.org/ns", "spiffe://other.org/ns"),
            vec![],
            "not in trust domain example.org",
        ),
        (
            GOOD.replace("detect_timeout: 300ms", "detect_timeout: soon"),
            vec![],
            "limits.detect_timeout: invalid duration",
        ),
        (
            GOOD.replace("protocol: tcp", "protocol: quic"),
            vec![],
            "outbound[0].protocol: unknown variant `quic`",
        ),
        (
            GOOD.replace("trust_domain: example.org", "trust_domain: Example.org"),
            vec![],
            "trust_domain:",
        ),
        (
            GOOD.to_owned(),
            vec![("WARD_LIMITS_IDLE_TIMOUT", "1s")],
            "limits.idle_timout: unknown field `idle_timout`",
        ),
        (
            GOOD.to_owned(),
            vec![("WARD_BOGUS", "1")],
            "WARD_BOGUS: not a ward-proxy setting",
        ),
        (
            GOOD.to_owned(),
            vec![("WARD_RUNTIME_WORKER_THREADS", "0")],
            "runtime.worker_threads: must be greater than zero",
        ),
        (
            "trust_domain: [unclosed\n".to_owned(),
            vec![],
            "sidecar.yaml:2:1: did not find expected",
        ),
        (
            GOOD.replace(
                "bundle: bundle.pem",
                "bundle: bundle.pem, spire: { socket: /run/spire/agent.sock }",
            ),
            vec![],
            "identity: spire gives the SVID and the bundles: no cert, key, bundle",
        ),
        (
            GOOD.replace(
                "{ cert: web.pem, key: web.key, bundle: bundle.pem }",
                "{ spire: { socket: /a.sock, spiffe_id: \"spiffe://other.org/x\" } }",
            ),
            vec![],
            "identity.spire.spiffe_id: spiffe://other.org/x is not in trust domain example.org",
        ),
        (
            GOOD.replace(
                "{ cert: web.pem, key: web.key, bundle: bundle.pem }",
                "{ spire: { sockt: /a.sock } }",
            ),
            vec![],
            "unknown field `sockt`",
        ),
        (
            GOOD.replace(
                "{ cert: web.pem, key: web.key, bundle: bundle.pem }",
                "{ cert: web.pem, key: web.key }",
            ),
            vec![],
            "identity.bundle: required",
        ),
        (
            GOOD.to_owned(),
            vec![("WARD_WORKLOAD_API_SOCKET", "/run/w.sock")],
            "workload_api: name who may fetch this workload's identity",
        ),
        (
            GOOD.replace("dir: policies", "dir: nowhere"),
            vec![],
            "policy.dir: ",
        ),
        (
            GOOD.replace("policy: { dir: policies }\n", ""),
            vec![],
            "policy: required when inbound listeners",
        ),
        (
            GOOD.replace("decisions: all", "decisions: some"),
            vec![],
            "audit.decisions: unknown variant",
        ),
        (
            GOOD.replace(
                "key: web.key,",
                "key: web.key, control_plane: \"https://127.0.0.1:15012\",",
            ),
            vec![],
            "identity: give cert + key (static) or control_plane + token_file, not both",
        ),
        (
            GOOD.replace(
                "cert: web.pem, key: web.key,",
                "control_plane: \"https://127.0.0.1:15012\",",
            ),
            vec![],
            "identity: control_plane and token_file go together",
        ),
        (
            GOOD.replace("key: web.key,", "key: web.key, renew_with_token: true,"),
            vec![],
            "identity: renew_with_token needs control_plane + token_file",
        ),
        (
            GOOD.replace(
                "cert: web.pem, key: web.key,",
                "control_plane: \"http://cp\", token_file: web.key,",
            ),
            vec![],
            "identity.control_plane: \"http://cp\" is not https://HOST:PORT",
        ),
    ];
    for (yaml, env, want) in cases {
        let err = files.load(&yaml, &env).expect_err(want);
        assert!(err.contains(want), "want {want:?} in {err:?}");
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(
            err.contains("sidecar.yaml") || err.starts_with("WARD_"),
            "{err}"
        );
    }
}

#[test]
fn a_control_plane_identity_needs_no_cert_files_and_no_policy_dir() {
    let files = Files::new();
    let yaml = GOOD
        .replace(
            "cert: web.pem, key: web.key,",
            "control_plane: \"https://127.0.0.1:15012\", token_file: web.key,",
        )
        .replace("policy: { dir: policies }\n", "");
    let v = files.load(&yaml, &[]).unwrap();
    assert!(v.config.identity.cert.is_none());
    assert!(
        v.config.policy.is_none(),
        "policy comes from the control plane"
    );
}

#[test]
fn missing_config_file_is_named() {
    let err = SidecarConfig::load(Path::new("/nonexistent/ward.yaml"), Vec::new()).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/ward.yaml: "),
        "{err}"
    );
}

#[test]
fn a_configuration_from_the_environment_alone_loads_and_errors_name_it() {
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let files = Files::new();
    let bundle = files.dir.path().join("bundle.pem");
    let bundle = bundle.to_str().unwrap();
    let token = files.dir.path().join("web.key");
    let token = token.to_str().unwrap();
    let v = SidecarConfig::from_env(env(&[
        ("WARD_TRUST_DOMAIN", "cluster.local"),
        ("WARD_ADMIN", "0.0.0.0:15000"),
        (
            "WARD_IDENTITY_CONTROL_PLANE",
            "https://ward-control-plane.ward-system.svc:15012",
        ),
        ("WARD_IDENTITY_TOKEN_FILE", token),
        ("WARD_IDENTITY_RENEW_WITH_TOKEN", "true"),
        ("WARD_IDENTITY_BUNDLE", bundle),
        ("WARD_CAPTURE_INBOUND", "0.0.0.0:15006"),
    ]))
    .unwrap();
    assert!(v.config.identity.renew_with_token);
    let capture = v.config.capture.expect("capture from WARD_CAPTURE_*");
    assert_eq!(capture.inbound, "0.0.0.0:15006".parse().unwrap());
    let err = SidecarConfig::from_env(env(&[("WARD_TRUST_DOMAIN", "cluster.local")]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("WARD_* environment: "), "{err}");
}
