//! Who is calling: the Workload API attests a caller by the kernel's word about the
//! process at the other end of the Unix socket (SO_PEERCRED: user, group, process), never
//! by anything the caller says.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use tokio::net::unix::UCred;

use crate::config::WorkloadApi;

/// The rules a caller must meet to get the workload's identity.
#[derive(Debug, Clone)]
pub struct Attestor {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    /// This process's network namespace (`net:[inode]`), when callers must share it.
    netns: Option<PathBuf>,
}

/// A caller the rules let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid {} gid {}", self.uid, self.gid)?;
        match self.pid {
            Some(pid) => write!(f, " pid {pid}"),
            None => f.write_str(" (pid not visible)"),
        }
    }
}

/// Why a caller was refused: for the proxy's log only, never for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the kernel gave no peer credentials for the connection")]
    NoCredentials,
    #[error("{0}: neither the user nor the group is allowed (workload_api.allowed_uids/gids)")]
    NotAllowed(Caller),
    #[error("{0}: not in this proxy's network namespace (workload_api.same_network_namespace)")]
    OtherNamespace(Caller),
}

impl Attestor {
    pub fn new(config: &WorkloadApi) -> std::io::Result<Self> {
        let netns = if config.same_network_namespace {
            Some(std::fs::read_link("/proc/self/ns/net")?)
        } else {
            None
        };
        Ok(Self {
            uids: config.allowed_uids.iter().copied().collect(),
            gids: config.allowed_gids.iter().copied().collect(),
            netns,
        })
    }

    /// Lets the caller in, or says why not.
    pub fn check(&self, cred: Option<UCred>) -> Result<Caller, Refusal> {
        let cred = cred.ok_or(Refusal::NoCredentials)?;
        // A process in a PID namespace this proxy cannot see is reported with pid 0.
        let caller = Caller {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid().filter(|p| *p > 0),
        };
        if !self.uids.contains(&caller.uid) && !self.gids.contains(&caller.gid) {
            return Err(Refusal::NotAllowed(caller));
        }
        if let Some(own) = &self.netns {
            let theirs = caller
                .pid
                .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok());
            if theirs.as_ref() != Some(own) {
                return Err(Refusal::OtherNamespace(caller));
            }
        }
        Ok(caller)
    }
}
