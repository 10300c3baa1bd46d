//! Reading and writing the PEM files ward keeps: certificate chains, bundles and private keys.
//!
//! Private keys are written with mode 0600 from the moment the file exists (never created
//! world-readable and then narrowed), through a temporary file and a rename so a crash never
//! leaves half a key behind.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM file ({detail})")]
    NotPem { path: PathBuf, detail: String },
    #[error("{path}: holds no {what}")]
    Empty { path: PathBuf, what: &'static str },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PemError + '_ {
    move |source| PemError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Parses every `CERTIFICATE` block of `pem`, in order. `origin` names the source in errors.
pub fn certs_from_pem(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::NotPem {
            path: origin.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: origin.to_owned(),
            what: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// Reads every certificate from a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = fs::read(path).map_err(io_error(path))?;
    certs_from_pem(&pem, path)
}

/// Reads one private key (PKCS#8, SEC1 or PKCS#1) from a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = fs::read(path).map_err(io_error(path))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            path: path.to_owned(),
            what: "PRIVATE KEY block",
        },
        other => PemError::NotPem {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// Encodes certificates as concatenated PEM blocks.
pub fn certs_to_pem<'a, 'b: 'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'b>>) -> String {
    certs
        .into_iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

/// One PEM block (64-column base64 body, `\n` line endings).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

/// How a file is written: public material (certificates, bundles) or a secret (keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    Public,
    Secret,
}

impl FileMode {
    fn bits(self) -> u32 {
        match self {
            FileMode::Public => 0o644,
            FileMode::Secret => 0o600,
        }
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created
/// with the final mode, synced, then renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: FileMode) -> Result<(), PemError> {
    use std::os::unix::fs::OpenOptionsExt;

    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.bits())
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            // Best effort: persist the rename itself.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        PemError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pem = pem_block("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = certs_from_pem(pem.as_bytes(), Path::new("x.pem")).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref(), der.as_slice());
    }

    #[test]
    fn not_pem_and_empty_are_named() {
        let err = certs_from_pem(b"hello", Path::new("a.pem")).unwrap_err();
        assert!(
            err.to_string().starts_with("a.pem: holds no CERTIFICATE"),
            "{err}"
        );
        let err = certs_from_pem(
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            Path::new("b.pem"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("b.pem: not a PEM file"),
            "{err}"
        );
    }

    #[test]
    fn secret_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_atomic(&path, b"secret", FileMode::Secret).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&path, b"again", FileMode::Secret).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"again");
        let leftovers = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }
}
