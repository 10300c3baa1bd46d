//! `workload_api:` — the SPIFFE Workload API served to the app on a Unix socket (see the
//! README's "Workload API").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where the Workload API is served and who may call it; absent: it is not served.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadApi {
    /// The Unix socket (relative to the configuration file's directory if relative). Apps
    /// find it as `SPIFFE_ENDPOINT_SOCKET=unix://<path>`.
    pub socket: PathBuf,
    /// Callers running as one of these user IDs get the identity.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Callers whose primary group is one of these get the identity.
    #[serde(default)]
    pub allowed_gids: Vec<u32>,
    /// The caller must also be in this proxy's network namespace (its pod): a process
    /// this proxy cannot see (another PID namespace) is then refused.
    #[serde(default)]
    pub same_network_namespace: bool,
    /// Also serve Envoy's secret discovery service (SDS) on the socket, to the same
    /// callers: an Envoy beside this identity gets its certificate and roots from it.
    #[serde(default)]
    pub sds: bool,
}

impl WorkloadApi {
    /// Someone must be named: an empty list would hand the workload's key to every local
    /// user, which is never what a zero-trust mesh means by default.
    pub(super) fn check(
        &mut self,
        base: &Path,
        err: impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.allowed_uids.is_empty() && self.allowed_gids.is_empty() {
            return Err(err(
                "workload_api",
                "name who may fetch this workload's identity: allowed_uids or allowed_gids \
                 (the app's user or group)"
                    .into(),
            ));
        }
        if self.socket.as_os_str().is_empty() {
            return Err(err("workload_api.socket", "empty path".into()));
        }
        if self.socket.is_relative() {
            self.socket = base.join(&self.socket);
        }
        // sockaddr_un holds 108 bytes with the terminating NUL.
        if self.socket.as_os_str().len() > 107 {
            return Err(err(
                "workload_api.socket",
                format!(
                    "{}: longer than a Unix socket path may be (107 bytes)",
                    self.socket.display()
                ),
            ));
        }
        Ok(())
    }
}
