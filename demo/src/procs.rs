//! The demo's child processes: each in its own process group with its output in a log file,
//! stopped with SIGTERM (then SIGKILL) when the demo stops, and killed by the kernel if the
//! demo itself dies (`PR_SET_PDEATHSIG`), so no process outlives `ward demo`.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Set in every child's environment to the demo's data directory, so that the demo's
/// processes can be found (e.g. by a test checking that none outlived it).
pub const MARKER_ENV: &str = "DEMO_MESH_DIR";

/// Every process the demo started, in start order.
pub struct Procs {
    procs: Vec<Proc>,
    marker: PathBuf,
}

impl Procs {
    /// Children started from here carry `DEMO_MESH_DIR=dir` in their environment.
    pub fn new(dir: &Path) -> Self {
        Self {
            procs: Vec::new(),
            marker: dir.to_owned(),
        }
    }

    /// Starts `program args` as `name`, its stdout and stderr appended to `logs/NAME.log`.
    /// Must be called from the thread that lives as long as the demo (the kernel sends the
    /// parent-death signal when the spawning *thread* exits).
    pub fn spawn<I, S>(
        &mut self,
        name: &str,
        program: &Path,
        args: I,
        logs: &Path,
    ) -> anyhow::Result<u32>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = logs.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log handle")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env(MARKER_ENV, &self.marker)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo may have died between fork and prctl: then nobody would
                // signal this child, so it must not start.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("ward demo exited while starting it"));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().unwrap_or(0);
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
        });
        Ok(pid)
    }

    /// Fails, naming the process and quoting the end of its log, if any child has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        for proc in &mut self.procs {
            if let Ok(Some(status)) = proc.child.try_wait() {
                bail!(
                    "{} exited ({status}); the end of {}:\n{}",
                    proc.name,
                    proc.log.display(),
                    tail(&proc.log, 15)
                );
            }
        }
        Ok(())
    }

    /// Stops every child, the most recently started first: SIGTERM, then SIGKILL for any
    /// still running after `grace`. Returns once all have been reaped.
    pub async fn stop(&mut self, grace: Duration) {
        for proc in self.procs.iter().rev() {
            if let Some(pid) = proc.child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: plain kill(2) on our own child's PID.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for proc in self.procs.iter_mut().rev() {
            if tokio::time::timeout_at(deadline, proc.child.wait())
                .await
                .is_err()
            {
                tracing::warn!(process = %proc.name, "did not stop in time; killing it");
                let _ = proc.child.kill().await;
            }
        }
        self.procs.clear();
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
