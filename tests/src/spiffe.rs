//! SPIFFE Workload API clients the suite runs as apps would: go-spiffe (built from
//! `tests/peers/go-spiffe` by `make go-spiffe`) and py-spiffe (PyPI `spiffe`, in the venv
//! `scripts/install-deps.sh` makes), each as a real process on the socket.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::bin::Run;

/// The go-spiffe client binary.
pub fn go_spiffe_bin() -> PathBuf {
    crate::bin::go_tool("go-spiffe")
}

/// The py-spiffe venv's Python and the client script.
fn py_spiffe() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../target/py-spiffe/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-deps.sh (make test does)",
        python.display()
    );
    (python, root.join("peers/py-spiffe/client.py"))
}

/// `unix://<socket>`.
pub fn addr(socket: &Path) -> String {
    format!("unix://{}", socket.display())
}

/// Runs the go-spiffe client: `go-spiffe-peer CMD unix://SOCKET ARGS...`.
pub fn go(socket: &Path, cmd: &str, args: &[&str]) -> Run {
    go_as(None, socket, cmd, args)
}

/// [`go`] as another user and group (`setpriv`), or through a command prefix.
pub fn go_as(prefix: Option<&[&str]>, socket: &Path, cmd: &str, args: &[&str]) -> Run {
    let bin = go_spiffe_bin();
    let mut command = match prefix {
        Some([program, rest @ ..]) => {
            let mut c = Command::new(program);
            c.args(rest).arg(&bin);
            c
        }
        _ => Command::new(&bin),
    };
    let output = command
        .arg(cmd)
        .arg(addr(socket))
        .args(args)
        .output()
        .expect("run go-spiffe-peer");
    Run::from_output(output)
}

/// Runs the py-spiffe client: `client.py unix://SOCKET CMD ARGS...`.
pub fn py(socket: &Path, cmd: &str, args: &[&str]) -> Run {
    let (python, script) = py_spiffe();
    let output = Command::new(python)
        .arg(script)
        .arg(addr(socket))
        .arg(cmd)
        .args(args)
        .output()
        .expect("run py-spiffe client");
    Run::from_output(output)
}

/// A go-spiffe `watch` running in the background: its JSON lines as they come.
pub struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    /// Watches `socket` for `n` X.509 contexts.
    pub fn start(socket: &Path, n: usize) -> Self {
        let mut child = Command::new(go_spiffe_bin())
            .args(["watch", &addr(socket), &n.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn go-spiffe-peer watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next context, parsed; panics after `timeout`.
    pub fn next(&self, timeout: Duration) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no X.509 context from the watch within {timeout:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for Workload API sockets that any local user can reach (0711), so that a
/// caller of another UID is refused by the API, not by the file system.
pub fn socket_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("ward-wl-")
        .tempdir()
        .expect("socket dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod socket dir");
    dir
}
