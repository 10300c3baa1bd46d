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
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
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
    ward_runtime::telemetry::init_logs(match cli.log_format {
        LogFormat::Text => ward_runtime::telemetry::LogFormat::Text,
        LogFormat::Json => ward_runtime::telemetry::LogFormat::Json,
    });
    match cli.command {
        Command::Sidecar { config } => {
            let validated = match SidecarConfig::load(&config, std::env::vars()) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("ward-proxy: {e}");
                    return ExitCode::from(1);
                }
            };
            let metrics = match ward_proxy::metrics::install() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    eprintln!("ward-proxy: metrics: {e}");
                    return ExitCode::from(1);
                }
            };
            // One worker thread is a current-thread runtime: the same single thread doing
            // the work, without the work-stealing scheduler's cross-thread bookkeeping.
            let workers = validated.config.runtime.worker_threads;
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
            match runtime.block_on(ward_proxy::sidecar::run(validated, metrics)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ward-proxy: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
