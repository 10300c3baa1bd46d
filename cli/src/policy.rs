//! `ward policy …`: the sidecar's authorization engine, offline — lint a policy directory,
//! check one call, run a suite of expected decisions in CI, and review who can reach a
//! workload. Every decision comes from `ward-policy`, the code the sidecar runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use ward_policy::compile::{grpc_route, namespace_of};
use ward_policy::model::{Action, Operation, Rule, Source};
use ward_policy::request::{Admitted, Incoming};
use ward_policy::{Call, Decision, HttpCall, PolicySet, RequestAuth};

mod end_user;

use self::end_user::{EndUserSpec, HeaderValues};
use super::Outcome;
use super::serve::parse_labels;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Report every error as file:line:column, and rules that cannot do what they say.
    Lint {
        /// The policy directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Decide one call: ALLOW (exit 0) or DENY (exit 3), and which policy and rule decided.
    Check(Box<CheckArgs>),
    /// Run a file of cases (a call and its expected decision); exit 1 on any mismatch.
    Test {
        #[arg(value_name = "CASES.yaml")]
        cases: PathBuf,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Access review: who may reach which ports, methods and paths of a workload.
    WhoCan(Callee),
}

/// The policy directory and the called workload, as `check` and `who-can` take them.
#[derive(Debug, Args)]
pub struct Callee {
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The called workload's namespace.
    #[arg(long, value_name = "NS")]
    to_namespace: String,
    /// The called workload's labels.
    #[arg(long, value_name = "k=v[,k=v]", value_parser = parse_labels, default_value = "")]
    to_labels: BTreeMap<String, String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    target: Callee,
    /// The caller's SPIFFE ID (leave it out, with --request-principal, for a call from
    /// outside the mesh judged at a gateway).
    #[arg(long, value_name = "SPIFFE_ID", value_parser = super::parse_spiffe_id,
          required_unless_present = "request_principal")]
    from: Option<ward_certs::SpiffeId>,
    /// The application port called.
    #[arg(long, value_name = "N")]
    port: u16,
    #[arg(long, value_name = "M", conflicts_with_all = ["grpc", "tcp"])]
    method: Option<String>,
    #[arg(long, value_name = "P", conflicts_with_all = ["grpc", "tcp"])]
    path: Option<String>,
    #[arg(long, value_name = "HOST", conflicts_with = "tcp")]
    host: Option<String>,
    /// A request header (repeatable; a name given again is a second value).
    #[arg(long = "header", value_name = "K=V", value_parser = parse_header, conflicts_with = "tcp")]
    headers: Vec<(String, String)>,
    /// A gRPC call: SERVICE/METHOD, e.g. bank.v1.Ledger/GetBalance.
    #[arg(long, value_name = "SERVICE/METHOD", conflicts_with = "tcp")]
    grpc: Option<String>,
    /// A TCP connection (no HTTP facts).
    #[arg(long)]
    tcp: bool,
    /// The verified end user, ISSUER/SUBJECT (as the gateway puts it).
    #[arg(long, value_name = "ISS/SUB", conflicts_with = "tcp")]
    request_principal: Option<String>,
    /// One of the end user's claims (repeatable; a name given again is another element of
    /// a list). NAME is a top-level claim or request.auth.claims[a][b].
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = parse_header,
          requires = "request_principal")]
    claims: Vec<(String, String)>,
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<Outcome> {
    match cmd {
        PolicyCommand::Lint { dir } => lint(&dir),
        PolicyCommand::Check(args) => check(*args),
        PolicyCommand::Test { cases, dir } => test(&cases, &dir),
        PolicyCommand::WhoCan(t) => who_can(&t.dir, &t.to_namespace, &t.to_labels),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.to_owned()))
        .ok_or_else(|| format!("header {s:?} is not NAME=VALUE"))
}

fn load(dir: &Path) -> anyhow::Result<PolicySet> {
    ward_policy::load_dir(dir).map_err(|errors| {
        // Multi-line by nature: one line per error, as lint prints them.
        anyhow::anyhow!(
            "{} has errors (run `ward policy lint`):\n{errors}",
            dir.display()
        )
    })
}

fn lint(dir: &Path) -> anyhow::Result<Outcome> {
    match ward_policy::load_dir(dir) {
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            Ok(Outcome::Negative)
        }
        Ok(set) => {
            for w in ward_policy::lint::warnings(&set) {
                println!("{w}");
            }
            println!(
                "{}: {} policies, mesh default {}",
                dir.display(),
                set.policies().len(),
                set.mesh_default().name()
            );
            Ok(Outcome::Success)
        }
    }
}

/// A call as the cases file and `check` describe it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    host: Option<String>,
    /// A name maps to one value or a list (a header sent more than once).
    #[serde(default)]
    headers: BTreeMap<String, HeaderValues>,
    #[serde(default)]
    grpc: Option<String>,
    #[serde(default)]
    tcp: bool,
    /// The verified end user (as a gateway or a sidecar behind one sees them).
    #[serde(default)]
    end_user: Option<EndUserSpec>,
}

/// The outcome of deciding a described call.
enum Verdict {
    Decided(Decision),
    /// The sidecar would refuse the request before authorization (400).
    Refused(String),
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self {
            Verdict::Decided(d) => d.verdict(),
            Verdict::Refused(_) => "DENY",
        }
    }

    fn allowed(&self) -> bool {
        matches!(self, Verdict::Decided(d) if d.allowed)
    }

    fn explain(&self) -> String {
        match self {
            Verdict::Decided(d) => {
                let mut s = format!("decided by {}", d.decider);
                if let Some(a) = &d.audit {
                    s.push_str(&format!("; audited by {a}"));
                }
                s
            }
            Verdict::Refused(why) => format!("refused before authorization (400): {why}"),
        }
    }
}

fn decide(
    set: &PolicySet,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    from: &str,
    port: u16,
    req: &Request,
) -> anyhow::Result<Verdict> {
    let workload = set.for_workload(namespace, labels);
    if req.tcp {
        let call = Call {
            principal: from,
            namespace: namespace_of(from),
            port,
            http: None,
        };
        return Ok(Verdict::Decided(workload.decide(&call)));
    }
    let (method, raw_path) = match &req.grpc {
        Some(route) => (
            "POST".to_owned(),
            format!("/{}", route.trim_start_matches('/')),
        ),
        None => (
            req.method.clone().unwrap_or_else(|| "GET".into()),
            req.path.clone().unwrap_or_else(|| "/".into()),
        ),
    };
    // What the sidecar refuses with 400 before authorization, refused here the same way:
    // the same admission, in the same order.
    let raw_path = raw_path.split('?').next().unwrap_or("/");
    let admitted = Incoming {
        method: &method,
        path: raw_path,
        target_authority: None,
        // `--host`, and any `host` header given with `--header`: each is a Host line.
        hosts: req.host.iter().map(|h| h.as_bytes()).chain(
            req.headers
                .iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
                .flat_map(|(_, values)| values.values().iter().map(|v| v.as_bytes())),
        ),
        default_port: 80,
        header_names: req.headers.keys().map(String::as_str),
        allow_header_underscores: false,
    }
    .admit();
    let Admitted { path, authority } = match admitted {
        Ok(admitted) => admitted,
        Err(e) => return Ok(Verdict::Refused(e.to_string())),
    };
    if let Some(route) = &req.grpc {
        grpc_route(&path).with_context(|| format!("--grpc {route:?} is not SERVICE/METHOD"))?;
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .flat_map(|(name, values)| {
            let name = name.to_ascii_lowercase();
            values
                .values()
                .iter()
                .map(move |v| (name.clone(), v.as_bytes().to_vec()))
        })
        .collect();
    let claims = match &req.end_user {
        Some(user) => user.pairs()?,
        None => Vec::new(),
    };
    let auth = req.end_user.as_ref().map(|user| RequestAuth {
        principal: &user.principal,
        claims: &claims,
    });
    let call = Call {
        principal: from,
        namespace: namespace_of(from),
        port,
        http: Some(HttpCall {
            method: &method,
            path: &path,
            authority: authority.as_ref(),
            headers: &headers,
            auth,
        }),
    };
    Ok(Verdict::Decided(workload.decide(&call)))
}

/// `--header` pairs, a name given more than once keeping every value in order.
fn repeated(pairs: Vec<(String, String)>) -> BTreeMap<String, HeaderValues> {
    let mut out: BTreeMap<String, HeaderValues> = BTreeMap::new();
    for (k, v) in pairs {
        match out.remove(&k) {
            None => out.insert(k, HeaderValues::One(v)),
            Some(prev) => {
                let mut all = prev.values().to_vec();
                all.push(v);
                out.insert(k, HeaderValues::Many(all))
            }
        };
    }
    out
}

fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let set = load(&args.target.dir)?;
    let req = Request {
        method: args.method,
        path: args.path,
        host: args.host,
        headers: repeated(args.headers),
        grpc: args.grpc,
        tcp: args.tcp,
        end_user: args.request_principal.map(|principal| EndUserSpec {
            principal,
            claims: repeated(args.claims),
        }),
    };
    let from = args.from.map(|f| f.to_string()).unwrap_or_default();
    let verdict = decide(
        &set,
        &args.target.to_namespace,
        &args.target.to_labels,
        &from,
        args.port,
        &req,
    )?;
    println!("{}", verdict.word());
    println!("  {}", verdict.explain());
    Ok(if verdict.allowed() {
        Outcome::Success
    } else {
        Outcome::Denied
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    from: String,
    to: Target,
    #[serde(default)]
    request: Request,
    /// ALLOW or DENY (an AUDIT+ prefix may be given to require an audit match too).
    expect: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    port: u16,
}

fn test(cases_path: &Path, dir: &Path) -> anyhow::Result<Outcome> {
    let set = load(dir)?;
    let text = std::fs::read_to_string(cases_path)
        .with_context(|| format!("reading {}", cases_path.display()))?;
    let cases: Cases = yaml_serde::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        anyhow::anyhow!("{}{at}: {e}", cases_path.display())
    })?;
    let (mut passed, mut failed) = (0, 0);
    for case in &cases.cases {
        if !(case.from.is_empty() && case.request.end_user.is_some()) {
            ward_certs::parse_spiffe_id(&case.from)
                .with_context(|| format!("case {:?}: from", case.name))?;
        }
        let verdict = decide(
            &set,
            &case.to.namespace,
            &case.to.labels,
            &case.from,
            case.to.port,
            &case.request,
        )?;
        let want = case.expect.trim().to_ascii_uppercase();
        let ok = match want.as_str() {
            "ALLOW" => verdict.allowed(),
            "DENY" => !verdict.allowed(),
            exact @ ("AUDIT+ALLOW" | "AUDIT+DENY") => verdict.word() == exact,
            other => bail!(
                "case {:?}: expect {other:?} is not ALLOW or DENY",
                case.name
            ),
        };
        if ok {
            passed += 1;
        } else {
            failed += 1;
            println!(
                "FAIL {}: expected {want}, got {} — {}",
                case.name,
                verdict.word(),
                verdict.explain()
            );
        }
    }
    println!("policy cases: {passed} passed, {failed} failed");
    Ok(if failed == 0 {
        Outcome::Success
    } else {
        Outcome::Negative
    })
}

fn who_can(
    dir: &Path,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<Outcome> {
    let set = load(dir)?;
    let applying: Vec<_> = set
        .policies()
        .iter()
        .filter(|p| p.applies_to(namespace, labels))
        .collect();
    let labels_text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!(
        "workload: namespace {namespace}, labels {{{}}}",
        labels_text.join(",")
    );
    let has_allow = applying.iter().any(|p| p.action == Action::Allow);
    if has_allow {
        println!(
            "ALLOW policies apply: a call is allowed only if one of their rules matches and no DENY rule does."
        );
    } else {
        println!(
            "no ALLOW policy applies: calls not denied below fall to the mesh default ({}).",
            set.mesh_default().name()
        );
    }
    for action in [Action::Allow, Action::Deny, Action::Audit] {
        for p in applying.iter().filter(|p| p.action == action) {
            println!(
                "\n{} {} ({}:{})",
                action.label(),
                p.id(),
                p.file.display(),
                p.line
            );
            if p.rules.is_empty() {
                println!("  (no rules: matches nothing)");
            }
            for (i, rule) in p.rules.iter().enumerate() {
                println!("  rule {i}:");
                for line in describe_rule(rule) {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(Outcome::Success)
}

fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_rule(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if rule.from.is_empty() {
        out.push("from: any authenticated caller".to_owned());
    }
    for s in &rule.from {
        out.push(format!("from: {}", describe_source(s)));
    }
    if rule.to.is_empty() {
        out.push("to:   any port, method and path".to_owned());
    }
    for o in &rule.to {
        out.push(format!("to:   {}", describe_operation(o)));
    }
    for c in &rule.when {
        let mut cond = match &c.key {
            ward_policy::model::ConditionKey::Header(name) => format!("when: header {name}"),
            ward_policy::model::ConditionKey::Claim(path) => format!("when: {path}"),
        };
        if let Some(present) = c.present {
            cond.push_str(if present { " present" } else { " absent" });
        }
        if !c.values.is_empty() {
            cond.push_str(&format!(" in [{}]", list(&c.values)));
        }
        out.push(cond);
    }
    out
}

fn describe_source(s: &Source) -> String {
    let mut parts = Vec::new();
    let principals: Vec<_> = s.principals.iter().map(|p| p.0.clone()).collect();
    let not_principals: Vec<_> = s.not_principals.iter().map(|p| p.0.clone()).collect();
    if !principals.is_empty() {
        parts.push(format!("principals [{}]", list(&principals)));
    }
    if !not_principals.is_empty() {
        parts.push(format!("not principals [{}]", list(&not_principals)));
    }
    if !s.namespaces.is_empty() {
        parts.push(format!("namespaces [{}]", list(&s.namespaces)));
    }
    if !s.not_namespaces.is_empty() {
        parts.push(format!("not namespaces [{}]", list(&s.not_namespaces)));
    }
    if parts.is_empty() {
        "any authenticated caller".to_owned()
    } else {
        parts.join("; ")
    }
}

fn describe_operation(o: &Operation) -> String {
    let mut parts = Vec::new();
    let methods: Vec<_> = o.methods.iter().map(|m| m.0.clone()).collect();
    let not_methods: Vec<_> = o.not_methods.iter().map(|m| m.0.clone()).collect();
    let paths: Vec<_> = o.paths.iter().map(ToString::to_string).collect();
    let not_paths: Vec<_> = o.not_paths.iter().map(ToString::to_string).collect();
    let push = |parts: &mut Vec<String>, name: &str, v: String| {
        if !v.is_empty() {
            parts.push(format!("{name} [{v}]"));
        }
    };
    push(&mut parts, "ports", list(&o.ports));
    push(&mut parts, "not ports", list(&o.not_ports));
    push(&mut parts, "methods", list(&methods));
    push(&mut parts, "not methods", list(&not_methods));
    push(&mut parts, "paths", list(&paths));
    push(&mut parts, "not paths", list(&not_paths));
    push(&mut parts, "hosts", list(&o.hosts));
    if let Some(g) = &o.grpc {
        let service = g
            .service
            .as_ref()
            .map_or("*".to_owned(), ToString::to_string);
        let methods = if g.methods.is_empty() {
            "*".to_owned()
        } else {
            list(&g.methods)
        };
        parts.push(format!("gRPC {service} methods [{methods}]"));
    }
    if parts.is_empty() {
        "any port, method and path".to_owned()
    } else {
        parts.join("; ")
    }
}
