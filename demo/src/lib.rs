//! `ward demo`: a whole mesh on one machine. It starts the control plane (on a temporary
//! data directory unless told otherwise), three workloads of a small bank — `web`,
//! `accounts` (HTTP) and `ledger` (gRPC `ledger.v1.Ledger`) — each an app with its own
//! sidecar bootstrapped by a join token, writes the demo policies as files the user can edit
//! while it runs, drives light traffic (some of it forbidden), and shows what happens in a
//! refreshing table. Every process is the real binary with the flags a user would give it.

pub mod apps;
/// The `ledger.v1.Ledger` service of the demo's bank.
pub mod pb {
    tonic::include_proto!("ledger.v1");
}
mod edge;
mod layout;
mod procs;
mod traffic;
mod view;

use std::io::{IsTerminal, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use tokio::time::{Instant, MissedTickBehavior};
use ward_certs::pem::{FileMode, write_atomic};

use apps::AppKind;
use layout::{Layout, sibling_binary, write_policies};
use procs::Procs;
use traffic::{Expect, HttpClient, LedgerCall, Scenario};
use view::{CertWatch, render, verdict};
use ward_runtime::time::parse_duration;

const TRUST_DOMAIN: &str = "bank.local";
const NAMESPACE: &str = "bank";
/// How often the traffic generator makes one round of calls.
const ROUND: Duration = Duration::from_millis(250);
/// How often the table is redrawn on a terminal (and printed, when not a terminal).
const REDRAW: Duration = Duration::from_secs(1);
const PRINT_EVERY: Duration = Duration::from_secs(10);
/// How long every child gets to drain and exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run this long, then stop and exit 0 only if every allowed call succeeded and every
    /// forbidden call was denied (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Keep the mesh's files (CA, tokens, configs, policies, logs) here instead of in a
    /// temporary directory removed at exit. Existing policy files are kept.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Lifetime of the SVIDs the control plane issues: short, so rotation shows.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    svid_ttl: Duration,
    /// The `ward-proxy` binary (default: the one next to this `ward`).
    #[arg(long, value_name = "PATH")]
    proxy_bin: Option<PathBuf>,
    /// Send every sidecar's and the gateway's request spans to this OpenTelemetry
    /// collector (OTLP), e.g. http://127.0.0.1:4317.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    /// Serve the control plane's dashboard here (default: a free loopback port; the demo
    /// prints its URL).
    #[arg(long, value_name = "ADDR")]
    dashboard: Option<SocketAddr>,
    /// How to speak to the collector: grpc (its port 4317) or http (4318).
    #[arg(long, value_name = "PROTOCOL", default_value = "grpc",
        value_parser = clap::builder::PossibleValuesParser::new(["grpc", "http"]))]
    otlp_protocol: String,
}

#[derive(Debug, Args)]
pub struct DemoAppArgs {
    #[arg(value_enum)]
    app: AppKind,
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Where the app's own calls go (its sidecar's outbound listener): web calls accounts
    /// there, accounts calls the ledger.
    #[arg(long, value_name = "ADDR")]
    calls: Option<SocketAddr>,
}

/// `ward demo-app`: one of the demo's apps (started by `ward demo`).
pub fn demo_app(args: DemoAppArgs) -> anyhow::Result<()> {
    ward_runtime::telemetry::init_logs(ward_runtime::telemetry::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(apps::serve(args.app, args.listen, args.calls))?;
    Ok(())
}

/// `ward demo`.
/// Runs the demo; `Ok(false)` when it ran but something it checks went wrong (exit 1).
pub fn run(args: DemoArgs) -> anyhow::Result<bool> {
    // One thread: the children's parent-death signal is tied to the thread that spawned
    // them, and this one lives as long as the demo.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let temp;
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("ward-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            temp.path().to_owned()
        }
    };
    let dir = std::path::absolute(&dir).context("resolving the data directory")?;
    let mut procs = Procs::new(&dir);
    runtime.block_on(async {
        let outcome = demo(&args, &dir, &mut procs).await;
        procs.stop(STOP_GRACE).await;
        outcome
    })
}

async fn demo(args: &DemoArgs, dir: &Path, procs: &mut Procs) -> anyhow::Result<bool> {
    let ward = std::env::current_exe().context("locating the ward binary")?;
    let proxy = match &args.proxy_bin {
        Some(path) => path.clone(),
        None => sibling_binary("ward-proxy")?,
    };
    let layout = Layout::for_demo(args, dir)?;
    std::fs::create_dir_all(&layout.logs)
        .with_context(|| format!("creating {}", layout.logs.display()))?;
    write_policies(&layout.policies)?;
    let edge_files = edge::prepare(&layout.dir)?;
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut stop = Stop::new()?;
    say(
        terminal,
        &format!("ward demo: starting in {}", dir.display()),
    );
    let http = traffic::http_client();
    let start = start_mesh(args, &layout, &ward, &proxy, procs, &http);
    tokio::select! {
        started = start => started?,
        () = stop.recv() => {
            println!("ward demo: stopped while starting");
            return Ok(interrupted_outcome(args));
        }
    }

    say(
        terminal,
        &format!(
            "ward demo: mesh up in {:.1}s; driving traffic; dashboard at http://{}/",
            started.elapsed().as_secs_f64(),
            layout.dashboard
        ),
    );

    let mut scenarios = scenarios(&layout, &edge_files)?;
    let mut certs = CertWatch::default();
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut round = tokio::time::interval(ROUND);
    round.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_print = Instant::now();
    let mut account = 0u32;
    let interrupted = loop {
        tokio::select! {
            _ = round.tick() => {
                procs.check()?;
                account = account % 9_999 + 1;
                // Stop and the deadline are heard during a round too (a call may wait
                // up to its timeout).
                let calls = async {
                    for scenario in &mut scenarios {
                        scenario.run(&http, account).await;
                    }
                };
                tokio::select! {
                    () = calls => {}
                    () = sleep_until(deadline) => break false,
                    () = stop.recv() => break true,
                }
            }
            _ = redraw.tick() => {
                certs.refresh(&http, &layout).await;
                if terminal {
                    let table = render(&layout, &scenarios, &certs, &ward, started, deadline);
                    print!("\x1b[H\x1b[2J{table}");
                    let _ = std::io::stdout().flush();
                } else if last_print.elapsed() >= PRINT_EVERY {
                    last_print = Instant::now();
                    println!("{}", render(&layout, &scenarios, &certs, &ward, started, deadline));
                }
            }
            () = sleep_until(deadline) => break false,
            () = stop.recv() => break true,
        }
    };

    certs.refresh(&http, &layout).await;
    println!(
        "{}",
        render(&layout, &scenarios, &certs, &ward, started, deadline)
    );
    if interrupted {
        let calls: u64 = scenarios.iter().map(Scenario::total).sum();
        let unexpected: u64 = scenarios.iter().map(|s| s.unexpected).sum();
        println!("ward demo: stopped; {calls} calls, {unexpected} not as the demo policy says");
        return Ok(interrupted_outcome(args));
    }
    Ok(verdict(&scenarios, &layout))
}

/// Starts the control plane, the join tokens, the apps and their sidecars, and waits
/// until every sidecar is ready.
async fn start_mesh(
    args: &DemoArgs,
    layout: &Layout,
    ward: &Path,
    proxy: &Path,
    procs: &mut Procs,
    http: &HttpClient,
) -> anyhow::Result<()> {
    // The control plane, as an operator would run it.
    let svid_ttl = format!("{}s", args.svid_ttl.as_secs());
    procs.spawn(
        "control-plane",
        ward,
        [
            "control-plane".as_ref(),
            "--trust-domain".as_ref(),
            TRUST_DOMAIN.as_ref(),
            "--data-dir".as_ref(),
            layout.cp_data.as_os_str(),
            "--policy-dir".as_ref(),
            layout.policies.as_os_str(),
            "--listen".as_ref(),
            layout.cp_listen.to_string().as_ref(),
            "--admin".as_ref(),
            layout.cp_admin.to_string().as_ref(),
            "--svid-ttl".as_ref(),
            std::ffi::OsStr::new(&svid_ttl),
            "--dashboard".as_ref(),
            std::ffi::OsStr::new(&layout.dashboard.to_string()),
        ],
        &layout.logs,
    )?;
    let bundle = layout.cp_data.join("bundle.pem");
    wait_for(procs, "the control plane", || {
        bundle.is_file() && TcpStream::connect(layout.cp_listen).is_ok()
    })
    .await?;

    // A join token per workload (and the gateway), bound to its identity and labels.
    let identities = layout
        .workloads
        .iter()
        .map(|w| (w.name(), w.spiffe_id(), w.label()))
        .chain([("gateway", edge::spiffe_id(), "app=gateway".to_owned())]);
    for (name, id, label) in identities {
        let token = create_token(ward, &layout.dir, &layout.cp_data, name, &id, &label).await?;
        let path = layout.dir.join(format!("{name}.token"));
        write_atomic(&path, token.as_bytes(), FileMode::Secret)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    // The apps, then their sidecars.
    for w in &layout.workloads {
        let mut app_args = vec!["demo-app".to_owned(), w.name().to_owned()];
        app_args.extend(["--listen".to_owned(), w.app.to_string()]);
        if let Some(calls) = layout.calls_of(w.kind) {
            app_args.extend(["--calls".to_owned(), calls.to_string()]);
        }
        procs.spawn(w.name(), ward, app_args, &layout.logs)?;
    }
    for w in &layout.workloads {
        let config = layout.dir.join(format!("{}-sidecar.yaml", w.name()));
        write_atomic(
            &config,
            layout.sidecar_config(w).as_bytes(),
            FileMode::Public,
        )
        .with_context(|| format!("writing {}", config.display()))?;
        procs.spawn(
            &format!("{}-sidecar", w.name()),
            proxy,
            ["sidecar".as_ref(), "--config".as_ref(), config.as_os_str()],
            &layout.logs,
        )?;
    }
    start_gateway(layout, proxy, procs)?;
    for w in &layout.workloads {
        let what = format!("the {} app", w.name());
        wait_for(procs, &what, || TcpStream::connect(w.app).is_ok()).await?;
    }
    wait_ready(layout, procs, http).await
}

/// Waits until every sidecar and the gateway say they are ready.
async fn wait_ready(layout: &Layout, procs: &mut Procs, http: &HttpClient) -> anyhow::Result<()> {
    let ready: fn(&[u8]) -> bool = |_| true;
    // The gateway finds web through discovery: the demo's first calls wait for it.
    let discovered: fn(&[u8]) -> bool = |metrics| {
        String::from_utf8_lossy(metrics).lines().any(|l| {
            l.strip_prefix("ward_discovery_endpoints ")
                .and_then(|n| n.trim().parse::<f64>().ok())
                .is_some_and(|n| n >= 1.0)
        })
    };
    let waits = layout
        .workloads
        .iter()
        .map(|w| {
            (
                format!("the {} sidecar to be ready", w.name()),
                w.admin,
                "/ready",
                ready,
            )
        })
        .chain([
            (
                "the gateway to be ready".to_owned(),
                layout.gateway_admin,
                "/ready",
                ready,
            ),
            (
                "the gateway to discover web".to_owned(),
                layout.gateway_admin,
                "/metrics",
                discovered,
            ),
        ]);
    for (what, admin, path, done) in waits {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            procs.check()?;
            if matches!(get(http, admin, path).await, Some((200, body)) if done(&body)) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; see {}",
                    layout.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The edge, in front of web: its configuration written, the gateway started.
fn start_gateway(layout: &Layout, proxy: &Path, procs: &mut Procs) -> anyhow::Result<()> {
    let web = layout.workload(AppKind::Web);
    let config = layout.dir.join("gateway.yaml");
    let text = edge::gateway_config(
        &layout.dir,
        layout.cp_listen,
        &layout.cp_data.join("bundle.pem"),
        layout.gateway_listen,
        layout.gateway_admin,
        (web.app, &web.spiffe_id()),
        &layout.logs,
    ) + &layout.tracing("gateway");
    write_atomic(&config, text.as_bytes(), FileMode::Public)
        .with_context(|| format!("writing {}", config.display()))?;
    procs.spawn(
        "gateway",
        proxy,
        ["gateway".as_ref(), "--config".as_ref(), config.as_os_str()],
        &layout.logs,
    )?;
    Ok(())
}

/// Whether being stopped by a signal passes: yes for an interactive demo, no for a timed
/// self-check (`--duration`), which did not get to check what it promised.
fn interrupted_outcome(args: &DemoArgs) -> bool {
    args.duration.is_none()
}

fn say(terminal: bool, line: &str) {
    if terminal {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP, caught from the moment the demo starts: before any
/// child exists, so that a Ctrl-C at any point still stops every child.
struct Stop {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// The terminal closing.
    hup: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("catching SIGHUP")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
            _ = self.hup.recv() => {}
        }
    }
}

/// Polls `ready` until it holds, failing if a child exits or it takes too long.
async fn wait_for(
    procs: &mut Procs,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        procs.check()?;
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// `ward token create` for one workload, as an operator would run it.
async fn create_token(
    ward: &Path,
    demo_dir: &Path,
    data_dir: &Path,
    name: &str,
    spiffe_id: &str,
    labels: &str,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new(ward)
        .args(["token", "create", "--data-dir"])
        .arg(data_dir)
        .args(["--spiffe-id", spiffe_id, "--labels", labels])
        .args(["--ttl", "10m"])
        .env(procs::MARKER_ENV, demo_dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(START_TIMEOUT, output)
        .await
        .context("ward token create did not finish")?
        .context("running ward token create")?;
    if !output.status.success() {
        bail!(
            "ward token create for {} failed: {}",
            name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let token = String::from_utf8(output.stdout)
        .context("token is not UTF-8")?
        .trim()
        .to_owned();
    if token.is_empty() {
        bail!("ward token create printed no token");
    }
    Ok(token)
}

/// GET `path` on an admin server: (status, body), or None if it did not answer.
async fn get(http: &HttpClient, addr: SocketAddr, path: &str) -> Option<(u16, bytes::Bytes)> {
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().ok()?;
    let call = async {
        let response = http.get(uri).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests;

/// The demo's traffic: every edge, allowed and forbidden calls.
fn scenarios(layout: &Layout, edge_files: &edge::EdgeFiles) -> anyhow::Result<Vec<Scenario>> {
    let o = &layout.outbounds;
    let ca = std::fs::read(&edge_files.ca)
        .with_context(|| format!("reading {}", edge_files.ca.display()))?;
    let https = traffic::https_client(&ca, layout.gateway_listen)?;
    let base = format!("https://{}:{}", edge::HOST, layout.gateway_listen.port());
    let [alice, bob, carol] = &edge_files.customers[..] else {
        bail!("the demo has three customers");
    };
    let as_customer = |who: &edge::Customer, account: &edge::Customer, calls: u32, expect| {
        let call = if who.account == account.account {
            format!("GET /accounts/{{own}} x{calls}")
        } else {
            format!("GET /accounts/{{{}'s}}", account.name)
        };
        Scenario::edge(
            who.name,
            call,
            format!("{base}/accounts/{}", account.account),
            Some(who.token.clone()),
            calls,
            expect,
            https.clone(),
        )
    };
    let mut edge = vec![
        as_customer(alice, alice, 1, Expect::Allow),
        as_customer(alice, bob, 1, Expect::Deny),
        // Ten a second per customer: four calls a round is sixteen.
        as_customer(carol, carol, 4, Expect::Limit),
        Scenario::edge(
            "anonymous",
            "GET /accounts/{id}, no token".into(),
            format!("{base}/accounts/{}", alice.account),
            None,
            1,
            Expect::Deny,
            https.clone(),
        ),
    ];
    let mut mesh = vec![
        Scenario::http(
            "web",
            "accounts",
            Method::GET,
            o.web_accounts,
            Expect::Allow,
        ),
        Scenario::http(
            "web",
            "accounts",
            Method::DELETE,
            o.web_accounts,
            Expect::Deny,
        ),
        Scenario::grpc(
            "accounts",
            "ledger",
            LedgerCall::GetBalance,
            o.accounts_ledger,
            Expect::Allow,
        )?,
        Scenario::grpc(
            "accounts",
            "ledger",
            LedgerCall::Post,
            o.accounts_ledger,
            Expect::Deny,
        )?,
        Scenario::grpc(
            "web",
            "ledger",
            LedgerCall::GetBalance,
            o.web_ledger,
            Expect::Deny,
        )?,
    ];
    mesh.append(&mut edge);
    Ok(mesh)
}
