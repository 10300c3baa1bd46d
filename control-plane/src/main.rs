//! `ward`: the control plane and the operator CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    ward_certs::tls::install_default_provider();
    ward_control_plane::cli::run(std::env::args_os())
}
