//! ward-control-plane: the control plane server and the operator CLI (`ward`).

pub mod cli;
pub mod demo;
pub mod server;
