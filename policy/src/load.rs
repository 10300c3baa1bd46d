//! Reading a directory of policy files into a [`PolicySet`], or every error in it as
//! `file:line:column: reason`.
//!
//! A file may hold several YAML documents. Each document is parsed on its own, twice: once
//! loosely to learn its `kind`, then strictly as that kind, straight from the text, so that
//! an error keeps the line and column of the value at fault.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::compile::{Policy, PolicySet};
use crate::model::{AuthorizationPolicyDoc, Head, MeshPolicyDoc, MeshSpec, ROOT_NAMESPACE};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.reason
        )
    }
}

/// Every error found; the set is refused whole if there is any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for PolicyErrors {}

/// The largest policy file (or pushed document set) read: policies are small, and a
/// parser fed megabytes on a proxy's worker would delay its traffic.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// The deepest nesting of flow collections (`[`, `{`) in a document.
pub const MAX_FLOW_DEPTH: usize = 64;
/// The furthest column at which a line's content may start (after its indentation and
/// any `- ` indicators): block nesting, bounded the same way.
pub const MAX_INDENT_COLUMN: usize = 512;

/// The policy files of `dir`: `*.yaml` and `*.yml`, sorted by name, not recursive. A name
/// that is not a directory is listed even if it cannot be read (a dangling symlink), so
/// reading it reports the error instead of silently dropping its rules.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PolicyErrors(vec![PolicyError {
            file: dir.to_owned(),
            line: 0,
            column: 0,
            reason: e.to_string(),
        }])
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.is_dir()
                && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What changes when a policy file changes: names, sizes and modification times. Pollers
/// compare successive fingerprints to know when to reload.
pub type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

pub fn fingerprint(dir: &Path) -> Option<Fingerprint> {
    let files = policy_files(dir).ok()?;
    Some(
        files
            .into_iter()
            .map(|f| {
                let meta = std::fs::metadata(&f).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (f, len, modified)
            })
            .collect(),
    )
}

/// Loads every policy file of `dir`.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for file in policy_files(dir)? {
        match std::fs::read_to_string(&file) {
            Ok(text) => sources.push((file, text)),
            Err(e) => errors.push(PolicyError {
                file,
                line: 0,
                column: 0,
                reason: e.to_string(),
            }),
        }
    }
    match load_sources(&sources) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(PolicyErrors(errors)),
        Err(PolicyErrors(more)) => {
            errors.extend(more);
            Err(PolicyErrors(errors))
        }
    }
}

/// Loads policies from `(file name, text)` pairs. Sources larger than
/// [`MAX_SOURCE_BYTES`] or nested deeper than the limits are refused before parsing.
pub fn load_sources(sources: &[(PathBuf, String)]) -> Result<PolicySet, PolicyErrors> {
    let mut policies = Vec::new();
    let mut mesh_default: Option<(MeshSpec, PathBuf, usize)> = None;
    let mut errors = Vec::new();
    for (file, text) in sources {
        if let Err((line, column, reason)) = within_limits(text) {
            errors.push(PolicyError {
                file: file.clone(),
                line,
                column,
                reason,
            });
            continue;
        }
        for (first_line, doc) in split_documents(text) {
            let at = |line: usize, column: usize, reason: String| PolicyError {
                file: file.clone(),
                line: first_line + line.saturating_sub(1),
                column,
                reason,
            };
            match parse_document(doc) {
                Ok(None) => {}
                Ok(Some(Parsed::Authorization(doc))) => {
                    let Some(namespace) = doc.metadata.namespace.clone() else {
                        errors.push(at(1, 1, "metadata.namespace is required".into()));
                        continue;
                    };
                    let key = (namespace.clone(), doc.metadata.name.clone());
                    if let Some(prev) = policies
                        .iter()
                        .find(|p: &&Policy| (p.namespace.clone(), p.name.clone()) == key)
                    {
                        errors.push(at(
                            1,
                            1,
                            format!(
                                "policy {}/{} is already defined at {}:{}",
                                key.0,
                                key.1,
                                prev.file.display(),
                                prev.line
                            ),
                        ));
                        continue;
                    }
                    policies.push(Policy::new(doc, namespace, file.clone(), first_line));
                }
                Ok(Some(Parsed::Mesh(doc))) => {
                    let ns = doc.metadata.namespace.as_deref().unwrap_or(ROOT_NAMESPACE);
                    if ns != ROOT_NAMESPACE {
                        errors.push(at(
                            1,
                            1,
                            format!("MeshPolicy belongs in namespace {ROOT_NAMESPACE}, not {ns}"),
                        ));
                    } else if let Some((_, prev_file, prev_line)) = &mesh_default {
                        errors.push(at(
                            1,
                            1,
                            format!(
                                "a MeshPolicy is already defined at {}:{prev_line}; there is one per mesh",
                                prev_file.display()
                            ),
                        ));
                    } else {
                        mesh_default = Some((doc.spec, file.clone(), first_line));
                    }
                }
                Err((line, column, reason)) => errors.push(at(line, column, reason)),
            }
        }
    }
    if errors.is_empty() {
        let default = mesh_default
            .as_ref()
            .map(|m| m.0.default)
            .unwrap_or_default();
        let outbound = mesh_default
            .as_ref()
            .map(|m| m.0.outbound_traffic_policy)
            .unwrap_or_default();
        let gateways = mesh_default
            .as_ref()
            .map(|m| m.0.gateways.iter().map(|g| g.0.clone()).collect())
            .unwrap_or_default();
        Ok(PolicySet::new(policies, default)
            .with_outbound(outbound)
            .with_gateways(gateways))
    } else {
        Err(PolicyErrors(errors))
    }
}

enum Parsed {
    Authorization(AuthorizationPolicyDoc),
    Mesh(MeshPolicyDoc),
}

/// Parses one document; errors carry line and column within the document.
fn parse_document(doc: &str) -> Result<Option<Parsed>, (usize, usize, String)> {
    let value: yaml_serde::Value = yaml_serde::from_str(doc).map_err(|e| located(&e))?;
    if value.is_null() {
        return Ok(None);
    }
    let head: Head =
        yaml_serde::from_value(value).map_err(|e| (1, 1, strip_location(&e.to_string())))?;
    match head.kind.as_str() {
        "AuthorizationPolicy" => {
            strict::<AuthorizationPolicyDoc>(doc).map(|d| Some(Parsed::Authorization(d)))
        }
        "MeshPolicy" => strict::<MeshPolicyDoc>(doc).map(|d| Some(Parsed::Mesh(d))),
        other => Err((
            1,
            1,
            format!("unknown kind {other:?} (AuthorizationPolicy or MeshPolicy)"),
        )),
    }
}

/// yaml_serde's messages already name the field path (`spec.rules[0].from: …`).
fn strict<T: serde::de::DeserializeOwned>(doc: &str) -> Result<T, (usize, usize, String)> {
    yaml_serde::from_str(doc).map_err(|e| located(&e))
}

fn located(e: &yaml_serde::Error) -> (usize, usize, String) {
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    (line, column, strip_location(&e.to_string()))
}

fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Checks size and nesting before the YAML parser sees the text: the first place a limit
/// is passed, as (line, column, reason).
fn within_limits(text: &str) -> Result<(), (usize, usize, String)> {
    if text.len() > MAX_SOURCE_BYTES {
        return Err((
            1,
            1,
            format!(
                "{} bytes is more than a policy source may hold ({MAX_SOURCE_BYTES})",
                text.len()
            ),
        ));
    }
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let mut column = 0;
        while column < bytes.len() {
            match bytes[column] {
                b' ' => column += 1,
                b'-' | b'?' if bytes.get(column + 1) == Some(&b' ') => column += 2,
                _ => break,
            }
        }
        if column > MAX_INDENT_COLUMN {
            return Err((
                i + 1,
                column + 1,
                format!(
                    "nested deeper than a policy may be (content past column {MAX_INDENT_COLUMN})"
                ),
            ));
        }
        // Flow depth, outside quoted scalars and comments.
        let mut quote = None;
        for (at, &b) in bytes.iter().enumerate() {
            match (quote, b) {
                (Some(q), _) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'#') if at == 0 || bytes[at - 1] == b' ' => break,
                (None, b'[' | b'{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err((
                            i + 1,
                            at + 1,
                            format!(
                                "nested deeper than a policy may be (more than {MAX_FLOW_DEPTH} levels of [ and {{)"
                            ),
                        ));
                    }
                }
                (None, b']' | b'}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Splits a YAML stream at `---` lines; returns each document with the number of its
/// first line in the file.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            docs.push((first_line, &text[start..offset]));
            start = offset + line.len();
            first_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((first_line, &text[start..]));
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_deeply_nested_sources_are_refused_where_the_limit_is_passed() {
        let deep_flow = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let err = load_sources(&[(PathBuf::from("deep.yaml"), deep_flow)]).unwrap_err();
        assert_eq!((err.0[0].line, err.0[0].column), (1, 4 + MAX_FLOW_DEPTH));
        assert!(err.0[0].reason.contains("nested deeper"), "{err}");

        let deep_block = format!("a:\n{}x: 1\n", "- ".repeat(100_000));
        let err = load_sources(&[(PathBuf::from("deep.yaml"), deep_block)]).unwrap_err();
        assert_eq!(err.0[0].line, 2);
        assert!(err.0[0].reason.contains("nested deeper"), "{err}");

        let big = format!("# {}\n", "x".repeat(MAX_SOURCE_BYTES));
        let err = load_sources(&[(PathBuf::from("big.yaml"), big)]).unwrap_err();
        assert!(
            err.0[0]
                .reason
                .contains("more than a policy source may hold"),
            "{err}"
        );

        // Brackets inside quotes or comments are not nesting.
        let fine = format!("# {}\nname: \"{}\"\n", "[".repeat(100), "{".repeat(100));
        assert!(within_limits(&fine).is_ok());
    }

    #[test]
    fn a_file_that_became_a_dangling_symlink_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.txt");
        std::fs::write(&target, "kind: MeshPolicy\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("p.yaml")).unwrap();
        std::fs::remove_file(&target).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(err.0[0].file.ends_with("p.yaml"), "{err}");
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[test]
    fn documents_are_split_with_their_first_lines() {
        let text = "a: 1\n---\nb: 2\nc: 3\n--- \nd: 4\n";
        let docs = split_documents(text);
        assert_eq!(
            docs,
            vec![(1, "a: 1\n"), (3, "b: 2\nc: 3\n"), (6, "d: 4\n")]
        );
    }
}
