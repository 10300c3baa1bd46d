//! Checks a configuration as read and resolves what other code needs: every error names
//! the file and the field.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use ward_certs::{SpiffeId, TrustDomain};

use super::{ConfigError, IdentityFiles, SidecarConfig, Validated};

/// Makes errors that name the file and the field.
struct At<'a>(&'a Path);

impl At<'_> {
    fn err(&self, field: &str, msg: &dyn fmt::Display) -> ConfigError {
        ConfigError::new(format!("{}: {field}: {msg}", self.0.display()))
    }
}

impl SidecarConfig {
    pub(super) fn validate(self, path: &Path) -> Result<Validated, ConfigError> {
        let at = At(path);
        let base = path.parent().unwrap_or(Path::new("."));
        let trust_domain = ward_certs::parse_trust_domain(&self.trust_domain)
            .map_err(|e| at.err("trust_domain", &e))?;
        let mut config = self;
        if let Some(tracing) = &config.tracing {
            tracing.check(|field, why| at.err(field, &why))?;
        }
        if let Some(api) = &mut config.workload_api {
            api.check(base, |field, why| at.err(field, &why))?;
        }
        check_identity(&config.identity, &trust_domain, &at)?;
        resolve_identity_files(&mut config.identity, base, &at)?;
        config.resolve_policy_and_audit(base, &at)?;
        let server_identities = config.server_identities(&trust_domain, &at)?;
        config.check_capture(&trust_domain, &at)?;
        config.check_listeners(&at)?;
        config.check_limits(&at)?;
        crate::probes::validate(&config.app_probes)
            .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
        Ok(Validated {
            config,
            trust_domain,
            server_identities,
        })
    }

    /// The audit log and the policy directory, relative to the configuration file; a
    /// policy directory is required with inbound listeners and no control plane.
    fn resolve_policy_and_audit(&mut self, base: &Path, at: &At) -> Result<(), ConfigError> {
        if self.audit.log != "stdout" && Path::new(&self.audit.log).is_relative() {
            self.audit.log = base.join(&self.audit.log).display().to_string();
        }
        if let Some(policy) = &mut self.policy {
            if policy.dir.is_relative() {
                policy.dir = base.join(&policy.dir);
            }
            if !policy.dir.is_dir() {
                return Err(at.err(
                    "policy.dir",
                    &format!("{}: not a directory", policy.dir.display()),
                ));
            }
        } else if (!self.inbound.is_empty() || self.capture.is_some())
            && self.identity.control_plane.is_none()
        {
            return Err(at.err(
                "policy",
                &"required when inbound listeners (or capture) are configured without a control \
                  plane (policy: { dir: PATH })",
            ));
        }
        Ok(())
    }

    /// Each outbound entry's `server_identity`, which must be in the trust domain.
    fn server_identities(&self, td: &TrustDomain, at: &At) -> Result<Vec<SpiffeId>, ConfigError> {
        let mut ids = Vec::with_capacity(self.outbound.len());
        for (i, out) in self.outbound.iter().enumerate() {
            let field = format!("outbound[{i}].server_identity");
            let id = ward_certs::parse_spiffe_id(&out.server_identity)
                .map_err(|e| at.err(&field, &format!("{:?}: {e}", out.server_identity)))?;
            if !id.is_member_of(td) {
                return Err(at.err(&field, &format!("{id} is not in trust domain {td}")));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    /// Each capture destination's identity must be in the trust domain.
    fn check_capture(&self, td: &TrustDomain, at: &At) -> Result<(), ConfigError> {
        let Some(capture) = &self.capture else {
            return Ok(());
        };
        for (i, d) in capture.destinations.iter().enumerate() {
            let field = format!("capture.destinations[{i}].spiffe_id");
            let id = ward_certs::parse_spiffe_id(&d.spiffe_id)
                .map_err(|e| at.err(&field, &format!("{:?}: {e}", d.spiffe_id)))?;
            if !id.is_member_of(td) {
                return Err(at.err(&field, &format!("{id} is not in trust domain {td}")));
            }
        }
        Ok(())
    }

    /// No two listeners on one address (port 0 excepted: the kernel picks).
    fn check_listeners(&self, at: &At) -> Result<(), ConfigError> {
        let named = |kind: &'static str, addrs: Vec<SocketAddr>| {
            addrs
                .into_iter()
                .enumerate()
                .map(move |(i, a)| (format!("{kind}[{i}].listen"), a))
        };
        let listens = std::iter::once(("admin".to_owned(), self.admin))
            .chain(named(
                "inbound",
                self.inbound.iter().map(|l| l.listen).collect(),
            ))
            .chain(named(
                "outbound",
                self.outbound.iter().map(|l| l.listen).collect(),
            ))
            .chain(self.capture.iter().flat_map(|c| {
                [
                    ("capture.inbound".to_owned(), c.inbound),
                    ("capture.outbound".to_owned(), c.outbound),
                    ("capture.outbound_opaque".to_owned(), c.outbound_opaque),
                ]
            }));
        let mut seen = HashSet::new();
        for (field, addr) in listens {
            if addr.port() != 0 && !seen.insert(addr) {
                return Err(at.err(&field, &format!("{addr} is used by another listener")));
            }
        }
        Ok(())
    }

    /// Every limit and timeout must be greater than zero.
    fn check_limits(&self, at: &At) -> Result<(), ConfigError> {
        let l = &self.limits;
        let zeros = [
            ("limits.max_header_bytes", l.max_header_bytes == 0),
            (
                "limits.max_concurrent_streams",
                l.max_concurrent_streams == 0,
            ),
            ("limits.max_connections", l.max_connections == 0),
            (
                "limits.max_connections_per_peer",
                l.max_connections_per_peer == 0,
            ),
            (
                "limits.header_read_timeout",
                l.header_read_timeout.is_zero(),
            ),
            ("limits.detect_timeout", l.detect_timeout.is_zero()),
            ("limits.idle_timeout", l.idle_timeout.is_zero()),
            ("limits.connect_timeout", l.connect_timeout.is_zero()),
            ("limits.request_timeout", l.request_timeout.is_zero()),
            ("runtime.worker_threads", self.runtime.worker_threads == 0),
        ];
        match zeros.iter().find(|(_, zero)| *zero) {
            Some((field, _)) => Err(at.err(field, &"must be greater than zero")),
            None => Ok(()),
        }
    }
}

/// Static files or a control plane, each complete, never both.
fn check_identity(id: &IdentityFiles, td: &TrustDomain, at: &At) -> Result<(), ConfigError> {
    let static_mode = id.cert.is_some() || id.key.is_some();
    let control_mode = id.control_plane.is_some() || id.token_file.is_some();
    if let Some(spire) = &id.spire {
        return check_spire(
            spire,
            static_mode || control_mode || id.bundle.is_some(),
            td,
            at,
        );
    }
    if id.bundle.is_none() {
        return Err(at.err(
            "identity.bundle",
            &"required (PEM roots of the trust domain)",
        ));
    }
    let wrong = match (static_mode, control_mode) {
        (true, true) => Some("give cert + key (static) or control_plane + token_file, not both"),
        (false, false) => {
            Some("needs cert + key (static), control_plane + token_file, or spire: { socket }")
        }
        (true, false) if id.cert.is_none() || id.key.is_none() => Some("cert and key go together"),
        (false, true) if id.control_plane.is_none() || id.token_file.is_none() => {
            Some("control_plane and token_file go together")
        }
        (true, false) if id.renew_with_token => {
            Some("renew_with_token needs control_plane + token_file")
        }
        _ => None,
    };
    if let Some(why) = wrong {
        return Err(at.err("identity", &why));
    }
    if let Some(cp) = &id.control_plane {
        let addr = cp.strip_prefix("https://").unwrap_or("");
        if addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(at.err(
                "identity.control_plane",
                &format!("{cp:?} is not https://HOST:PORT"),
            ));
        }
    }
    Ok(())
}

/// A SPIRE agent is the whole identity source: nothing else may be given beside it.
fn check_spire(
    spire: &super::SpireSource,
    more: bool,
    td: &TrustDomain,
    at: &At,
) -> Result<(), ConfigError> {
    if more {
        return Err(at.err(
            "identity",
            &"spire gives the SVID and the bundles: no cert, key, bundle, control_plane or \
              token_file beside it",
        ));
    }
    if spire.path().as_os_str().is_empty() {
        return Err(at.err("identity.spire.socket", &"empty path"));
    }
    if let Some(id) = &spire.spiffe_id {
        let parsed = ward_certs::parse_spiffe_id(id)
            .map_err(|e| at.err("identity.spire.spiffe_id", &format!("{id:?}: {e}")))?;
        if !parsed.is_member_of(td) {
            return Err(at.err(
                "identity.spire.spiffe_id",
                &format!("{parsed} is not in trust domain {td}"),
            ));
        }
    }
    Ok(())
}

/// Identity files relative to the configuration file (not the working directory); each
/// must exist.
fn resolve_identity_files(id: &mut IdentityFiles, base: &Path, at: &At) -> Result<(), ConfigError> {
    let files = [
        ("identity.cert", id.cert.as_mut()),
        ("identity.key", id.key.as_mut()),
        ("identity.bundle", id.bundle.as_mut()),
        ("identity.token_file", id.token_file.as_mut()),
    ];
    for (field, file) in files {
        let Some(file) = file else { continue };
        if file.is_relative() {
            *file = base.join(&*file);
        }
        if let Err(e) = std::fs::metadata(&*file) {
            return Err(at.err(field, &format!("{}: {e}", file.display())));
        }
    }
    Ok(())
}
