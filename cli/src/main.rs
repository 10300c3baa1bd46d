//! `ward`: the control plane and the operator CLI — argument parsing and the exit-code
//! contract.
//!
//! Scripts depend on the exit codes: 0 success, 1 a failure (including "this certificate is
//! not a valid SVID"), 2 a usage error. Every error is one line on stderr that names the
//! problem; nothing panics on bad input.

mod ca;
mod cert;
mod gateway;
mod kube;
mod policy;
mod serve;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ward: zero-trust service mesh — control plane and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "ward", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the certificate authority of a trust domain.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Issue and inspect workload certificates (X.509-SVIDs).
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Lint, check, test and review authorization policy offline (the sidecar's engine).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Run the control plane: attested SVID issuance, policy and bundle push.
    ControlPlane(serve::ControlPlaneArgs),
    /// The gateway's API keys (`ward gateway key create|revoke|list`).
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Join tokens that let a proxy get its first SVID.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a whole mesh on this machine: control plane, three workloads, live traffic.
    Demo(ward_demo::DemoArgs),
    /// Print the manifests that install ward on a Kubernetes cluster
    /// (`ward install | kubectl apply -f -`).
    Install(kube::InstallArgs),
    /// Print manifests with the ward sidecar injected, exactly as the injector webhook
    /// would store them (`ward inject -f app.yaml | kubectl apply -f -`).
    Inject(kube::InjectArgs),
    /// Check ward on a cluster (KUBECONFIG or in-cluster): a line per check, exit 1 if
    /// any fails.
    Check(kube::CheckArgs),
    /// One of the demo's apps (started by `ward demo`).
    #[command(hide = true)]
    DemoApp(ward_demo::DemoAppArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token bound to one identity; prints only the token.
    Create(serve::TokenCreateArgs),
}

/// What a command reports besides success.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The command ran but its answer is "no" (e.g. an invalid certificate): exit 1.
    Negative,
    /// `ward policy check` decided the call is denied: exit 3.
    Denied,
}

fn main() -> ExitCode {
    // A bug must still end in one line and exit 1, not a backtrace on an operator's screen.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ward: internal error: {info}");
    }));
    ward_certs::tls::install_default_provider();
    run(std::env::args_os())
}

/// Parses `args` and runs the command, returning the process exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Ca(cmd) => ca::run(cmd),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Policy(cmd) => policy::run(cmd),
        Command::ControlPlane(args) => serve::control_plane(args),
        Command::Token(TokenCommand::Create(args)) => serve::token_create(args),
        Command::Gateway(cmd) => gateway::run(cmd),
        Command::Demo(args) => ward_demo::run(args).map(|passed| {
            if passed {
                Outcome::Success
            } else {
                Outcome::Negative
            }
        }),
        Command::Install(args) => kube::install(args),
        Command::Inject(args) => kube::inject(args),
        Command::Check(args) => kube::check(args),
        Command::DemoApp(args) => ward_demo::demo_app(args).map(|()| Outcome::Success),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Ok(Outcome::Denied) => ExitCode::from(3),
        Err(e) => {
            eprintln!("ward: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Help and version go to stdout with exit 0; any other parse error is reduced to its first
/// line (clap's own text names the flag and the problem) with exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // clap's first paragraph names the problem (and, for missing arguments, lists
            // them on the following lines); the usage and tips after it are left out.
            let text = e.render().to_string();
            let paragraph: Vec<&str> = text
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let line = paragraph.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("ward: {line} (see --help)");
            ExitCode::from(2)
        }
    }
}

pub(crate) use ward_runtime::time::{human, parse_duration, rfc3339};

/// Parses a SPIFFE ID strictly (see `ward_certs::id`).
pub(crate) fn parse_spiffe_id(s: &str) -> Result<ward_certs::SpiffeId, String> {
    ward_certs::parse_spiffe_id(s).map_err(|e| e.to_string())
}

/// Parses a trust domain name strictly.
pub(crate) fn parse_trust_domain(s: &str) -> Result<ward_certs::TrustDomain, String> {
    ward_certs::parse_trust_domain(s).map_err(|e| e.to_string())
}
