//! A real SPIRE deployment for the tests: `spire-server` and `spire-agent` v1.13.3, built
//! from the SPIRE Go module by `make spire`, each its own process with its own sockets and
//! data under a temporary directory. The agent attests with a join token; workloads are
//! attested by the agent's `unix` plugin (so entries select on `unix:uid:` / `unix:gid:`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bin::Run;
use crate::k8s::eventually;
use crate::net::free_addr;

/// The SPIRE binaries' directory.
fn bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/spire/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run make spire (make test does)",
        path.display()
    );
    path
}

/// A SPIRE server and agent of one trust domain, killed on drop.
pub struct Spire {
    pub dir: tempfile::TempDir,
    pub trust_domain: String,
    server: Child,
    agent: Option<Child>,
    server_socket: PathBuf,
    /// The agent's Workload API socket.
    pub agent_socket: PathBuf,
    /// The agent's SPIFFE ID, the parent of every entry.
    pub agent_id: String,
    port: u16,
}

impl Spire {
    /// Starts the server and waits until it is healthy; the agent starts with
    /// [`Spire::start_agent`], after the entries it should have at once.
    pub fn server(trust_domain: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ward-spire-")
            .tempdir()
            .expect("spire dir");
        {
            use std::os::unix::fs::PermissionsExt;
            // The agent's socket must be reachable by the workloads of other users.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod");
        }
        let port = free_addr().port();
        let server_socket = dir.path().join("server.sock");
        let conf = dir.path().join("server.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{socket}"
  trust_domain = "{trust_domain}"
  data_dir = "{data}"
  log_level = "INFO"
  ca_ttl = "2000h"
  default_x509_svid_ttl = "1h"
  default_jwt_svid_ttl = "5m"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{data}/datastore.sqlite3"
    }}
  }}
  KeyManager "memory" {{ plugin_data {{}} }}
  NodeAttestor "join_token" {{ plugin_data {{}} }}
}}
"#,
                socket = server_socket.display(),
                data = dir.path().join("server-data").display(),
            ),
        )
        .expect("server.conf");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let server = Command::new(bin("spire-server"))
            .args(["run", "-config"])
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn spire-server");
        let mut spire = Self {
            agent_socket: dir.path().join("agent.sock"),
            agent_id: format!("spiffe://{trust_domain}/agent/ward-test"),
            dir,
            trust_domain: trust_domain.to_owned(),
            server,
            agent: None,
            server_socket,
            port,
        };
        eventually(Duration::from_secs(60), "spire-server healthy", || {
            if let Ok(Some(status)) = spire.server.try_wait() {
                panic!(
                    "spire-server exited with {status}:\n{}",
                    spire.logs("server")
                );
            }
            (spire.cli(&["healthcheck"]).code == 0).then_some(())
        });
        spire
    }

    /// `spire-server COMMAND... -socketPath <server socket>`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let (command, rest) = args.split_first().expect("a command");
        let mut cmd = Command::new(bin("spire-server"));
        cmd.arg(command);
        // Subcommands (`entry create`) come before the flags.
        let mut rest = rest.iter().peekable();
        while let Some(word) = rest.next_if(|w| !w.starts_with('-')) {
            cmd.arg(word);
        }
        cmd.arg("-socketPath").arg(&self.server_socket);
        cmd.args(rest);
        Run::from_output(cmd.output().expect("run spire-server"))
    }

    /// Registers a workload: `spiffe_id` for processes matching `selectors`, with more
    /// `entry create` flags (e.g. `-x509SVIDTTL 20`, `-federatesWith spiffe://...`).
    pub fn entry(&self, spiffe_id: &str, selectors: &[&str], more: &[&str]) {
        let mut args = vec![
            "entry",
            "create",
            "-parentID",
            &self.agent_id,
            "-spiffeID",
            spiffe_id,
        ];
        for s in selectors {
            args.extend(["-selector", s]);
        }
        args.extend_from_slice(more);
        self.cli(&args).ok();
    }

    /// Trusts a foreign trust domain's roots (a static federation relationship).
    pub fn federate(&self, trust_domain: &str, bundle_pem: &Path) {
        let id = format!("spiffe://{trust_domain}");
        let path = bundle_pem.display().to_string();
        self.cli(&["bundle", "set", "-id", &id, "-path", &path])
            .ok();
    }

    /// Starts the agent with a fresh join token and waits until it is healthy.
    pub fn start_agent(&mut self) {
        let token = self.cli(&[
            "token",
            "generate",
            "-spiffeID",
            &self.agent_id,
            "-output",
            "json",
        ]);
        let json: serde_json::Value =
            serde_json::from_str(token.ok()).unwrap_or_else(|e| panic!("{token:?}: {e}"));
        let token = json["value"].as_str().expect("token value").to_owned();
        let conf = self.dir.path().join("agent.conf");
        std::fs::write(
            &conf,
            format!(
                r#"agent {{
  data_dir = "{data}"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "{port}"
  socket_path = "{socket}"
  trust_domain = "{td}"
  insecure_bootstrap = true
}}
plugins {{
  NodeAttestor "join_token" {{ plugin_data {{}} }}
  KeyManager "memory" {{ plugin_data {{}} }}
  WorkloadAttestor "unix" {{ plugin_data {{}} }}
}}
"#,
                data = self.dir.path().join("agent-data").display(),
                port = self.port,
                socket = self.agent_socket.display(),
                td = self.trust_domain,
            ),
        )
        .expect("agent.conf");
        let log = std::fs::File::create(self.dir.path().join("agent.log")).expect("log");
        let agent = Command::new(bin("spire-agent"))
            .args(["run", "-config"])
            .arg(&conf)
            .args(["-joinToken", &token])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn spire-agent");
        self.agent = Some(agent);
        let socket = self.agent_socket.clone();
        eventually(Duration::from_secs(60), "spire-agent healthy", || {
            if let Some(Ok(Some(status))) = self.agent.as_mut().map(Child::try_wait) {
                panic!("spire-agent exited with {status}:\n{}", self.logs("agent"));
            }
            let run = Run::from_output(
                Command::new(bin("spire-agent"))
                    .args(["healthcheck", "-socketPath"])
                    .arg(&socket)
                    .output()
                    .expect("spire-agent healthcheck"),
            );
            (run.code == 0).then_some(())
        });
    }

    /// `server` or `agent` log.
    pub fn logs(&self, which: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{which}.log"))).unwrap_or_default()
    }
}

impl Drop for Spire {
    fn drop(&mut self) {
        for child in self
            .agent
            .iter_mut()
            .chain(std::iter::once(&mut self.server))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- spire-server log ----\n{}", self.logs("server"));
            eprintln!("---- spire-agent log ----\n{}", self.logs("agent"));
        }
    }
}
