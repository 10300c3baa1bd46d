//! `ward-proxy`: the data plane binary (sidecar and gateway modes arrive with their issues).

use std::process::ExitCode;

use clap::Parser;

/// ward's data-plane proxy: mutual TLS with SPIFFE identities and per-call authorization.
#[derive(Debug, Parser)]
#[command(name = "ward-proxy", version, about)]
struct Cli {}

fn main() -> ExitCode {
    ward_certs::tls::install_default_provider();
    match Cli::try_parse() {
        Ok(Cli {}) => {
            eprintln!("ward-proxy: no mode given yet; see --help");
            ExitCode::from(2)
        }
        Err(e) => {
            let _ = e.print();
            ExitCode::from(if e.use_stderr() { 2 } else { 0 })
        }
    }
}
