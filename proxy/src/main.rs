//! `ward-proxy`: the data-plane binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ward_proxy::config::SidecarConfig;

/// ward's data-plane proxy: mutual TLS with SPIFFE identities and per-call authorization.
#[derive(Debug, Parser)]
#[command(name = "ward-proxy", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run beside a workload: mTLS for its inbound and outbound traffic.
    Sidecar {
        /// YAML configuration; every field can be overridden by WARD_<SECTION>_<FIELD>.
        /// Without it the configuration is the WARD_* variables alone (as injected).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Front the mesh: public TLS, end-user authentication and policy, then mTLS into the
    /// mesh (see the README's "Gateway mode").
    Gateway {
        /// YAML configuration: the sidecar's identity, workload, policy, audit, admin,
        /// limits and runtime sections, and the gateway's listen, tls, issuers and routes.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Install the rules that send the pod's TCP through its sidecar (run as root or with
    /// NET_ADMIN in the pod's network namespace, before the app starts).
    Init(InitArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// UID the proxy runs as: its own connections are never captured.
    #[arg(long, default_value_t = 1337)]
    proxy_uid: u32,
    /// GID the proxy runs as.
    #[arg(long, default_value_t = 1337)]
    proxy_gid: u32,
    /// Where inbound connections are sent.
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    /// Where outbound connections are sent.
    #[arg(long, default_value_t = 15001)]
    outbound_port: u16,
    /// Where outbound connections to opaque ports are sent.
    #[arg(long, default_value_t = 15002)]
    outbound_opaque_port: u16,
    /// The proxy's admin port (reached directly, e.g. by probes).
    #[arg(long, default_value_t = 15000)]
    admin_port: u16,
    /// Inbound ports that reach the app uncaptured.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    exclude_inbound_ports: Vec<u16>,
    /// Outbound ports left uncaptured.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    exclude_outbound_ports: Vec<u16>,
    /// Destinations left uncaptured.
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    exclude_outbound_cidrs: Vec<ward_proxy::init::Cidr>,
    /// Sources whose inbound connections reach the app uncaptured.
    #[arg(long, value_delimiter = ',', value_name = "CIDR,...")]
    exclude_inbound_cidrs: Vec<ward_proxy::init::Cidr>,
    /// The control plane's address, left uncaptured.
    #[arg(long, value_name = "IP:PORT")]
    control_plane: Option<std::net::SocketAddr>,
    /// Destination ports carried as opaque TCP, never sniffed.
    #[arg(long, value_delimiter = ',', value_name = "PORT,...")]
    opaque_ports: Vec<u16>,
    /// Print the rules instead of installing them.
    #[arg(long)]
    dry_run: bool,
    /// Which tool writes the rules: nftables if the machine has it, else iptables.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Remove the rules.
    #[arg(long)]
    undo: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendArg {
    Auto,
    Nftables,
    Iptables,
}

/// `ward-proxy init`: exit 0 when the rules are in force (or printed), 1 with one line when
/// they could not be (and then nothing was changed).
fn init(args: InitArgs) -> ExitCode {
    use ward_proxy::init::{Backend, Plan};
    let plan = Plan {
        proxy_uid: args.proxy_uid,
        proxy_gid: args.proxy_gid,
        inbound_capture_port: args.inbound_port,
        outbound_capture_port: args.outbound_port,
        outbound_opaque_port: args.outbound_opaque_port,
        admin_port: args.admin_port,
        opaque_ports: args.opaque_ports,
        exclude_inbound_ports: args.exclude_inbound_ports,
        exclude_outbound_ports: args.exclude_outbound_ports,
        exclude_outbound_cidrs: args.exclude_outbound_cidrs,
        exclude_inbound_cidrs: args.exclude_inbound_cidrs,
        exclude_outbound_endpoints: args.control_plane.into_iter().collect(),
    };
    if let Err(e) = plan.check() {
        eprintln!("ward-proxy init: {e}");
        return ExitCode::from(2);
    }
    let backend = match args.backend {
        BackendArg::Nftables => Ok(Backend::Nftables),
        BackendArg::Iptables => Ok(Backend::Iptables),
        BackendArg::Auto => Backend::detect(),
    };
    let result = backend.and_then(|backend| {
        if args.dry_run {
            print!("{}", backend.script(&plan, args.undo));
            return Ok(None);
        }
        backend.run(&plan, args.undo).map(|()| Some(backend))
    });
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(backend)) => {
            let done = if args.undo { "removed" } else { "installed" };
            let how = match backend {
                Backend::Nftables => "nftables table inet ward",
                Backend::Iptables => "iptables chains WARD_OUTPUT, WARD_INBOUND",
            };
            eprintln!("ward-proxy init: capture rules {done} ({how})");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ward-proxy init: {e}");
            ExitCode::from(1)
        }
    }
}

/// Installs the log writer and, when the configuration asks for traces, the trace
/// pipeline (`service` is the default `service.name`); returns what must run and live.
fn start_logs(
    format: ward_runtime::telemetry::LogFormat,
    validated: &ward_proxy::config::Validated,
    service: &str,
) -> Result<Option<ward_runtime::traces::Pipeline>, ExitCode> {
    let config = &validated.config;
    let Some(tracing) = &config.tracing else {
        ward_runtime::telemetry::init_logs(format);
        return Ok(None);
    };
    let exporting = tracing.exporting(service, &config.workload.namespace);
    match ward_runtime::traces::pipeline(exporting) {
        Ok((layer, pipeline)) => {
            ward_runtime::telemetry::init_logs_with(format, vec![layer]);
            Ok(Some(pipeline))
        }
        Err(e) => {
            eprintln!("ward-proxy: tracing: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Installs metrics, starts the runtime with `workers` threads and runs a mode on it
/// (and the trace export beside it).
fn serve<F, Fut>(
    workers: usize,
    traces: Option<ward_runtime::traces::Pipeline>,
    mode: F,
) -> ExitCode
where
    F: FnOnce(Option<metrics_exporter_prometheus::PrometheusHandle>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let metrics = match ward_proxy::metrics::install() {
        Ok(handle) => Some(handle),
        Err(e) => {
            eprintln!("ward-proxy: metrics: {e}");
            return ExitCode::from(1);
        }
    };
    // One worker thread is a current-thread runtime: the same single thread doing the
    // work, without the work-stealing scheduler's cross-thread bookkeeping.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ward-proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let _provider = traces.map(|t| {
        runtime.spawn(t.export.run());
        t.provider
    });
    match runtime.block_on(mode(metrics)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ward-proxy: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ward-proxy: internal error: {info}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    ward_certs::tls::install_default_provider();
    let format = match cli.log_format {
        LogFormat::Text => ward_runtime::telemetry::LogFormat::Text,
        LogFormat::Json => ward_runtime::telemetry::LogFormat::Json,
    };
    match cli.command {
        Command::Init(args) => {
            ward_runtime::telemetry::init_logs(format);
            init(args)
        }
        Command::Sidecar { config } => {
            let loaded = match &config {
                Some(file) => SidecarConfig::load(file, std::env::vars()),
                None => SidecarConfig::from_env(std::env::vars()),
            };
            match loaded {
                Ok(v) => {
                    let workers = v.config.runtime.worker_threads;
                    let app = v.config.workload.labels.get("app");
                    match start_logs(format, &v, app.map_or("ward-proxy", String::as_str)) {
                        Ok(traces) => serve(workers, traces, |metrics| {
                            ward_proxy::sidecar::run(v, metrics)
                        }),
                        Err(code) => code,
                    }
                }
                Err(e) => {
                    eprintln!("ward-proxy: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Gateway { config } => {
            match ward_proxy::gateway::config::GatewayValidated::load(&config, std::env::vars()) {
                Ok(v) => {
                    let workers = v.common.config.runtime.worker_threads;
                    match start_logs(format, &v.common, "ward-gateway") {
                        Ok(traces) => serve(workers, traces, |metrics| {
                            ward_proxy::gateway::run(v, metrics)
                        }),
                        Err(code) => code,
                    }
                }
                Err(e) => {
                    eprintln!("ward-proxy: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
