//! Running ward's binaries as a user would: real processes, captured output, exit codes.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a binary built from this workspace (`ward`, `ward-proxy`). The test executables
/// live in `target/<profile>/deps/`; the binaries one level up. `make test` builds them first.
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first (cargo build --bins)",
        bin.display()
    );
    bin
}

/// A program the suite builds from its Go modules (`make NAME`; `make test` does), at
/// `target/NAME/bin/NAME`: Dex, Jaeger, promtool.
pub fn go_tool(name: &str) -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name)
        .join("bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run make {name} (make test does)",
        bin.display()
    );
    bin
}

/// What a finished command said and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts the exit code and that stderr is a single line without a panic or backtrace;
    /// returns that line.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr must be one line: {self:#?}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "no panics: {self:#?}"
        );
        lines[0]
    }
}

/// Runs `ward` with `args` to completion.
pub fn ward<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(&path("ward"), args)
}

/// Runs any program to completion.
pub fn run<I, S>(program: &std::path::Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(program)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    Run::from_output(output)
}
