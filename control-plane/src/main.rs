//! `ward`: the control plane and the operator CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    // A bug must still end in one line and exit 1, not a backtrace on an operator's screen.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("ward: internal error: {info}");
    }));
    ward_certs::tls::install_default_provider();
    ward_control_plane::cli::run(std::env::args_os())
}
