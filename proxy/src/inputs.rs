//! What every mode of the proxy is assembled from (after ztunnel's `ProxyInputs`): the
//! workload's identity, its authorizer fed by a policy source, the HTTP servers with their
//! limits, the drain, readiness, and the admin server. [`ProxyInputs::start`] makes them
//! from the configuration; a mode (the sidecar today, the gateway next) then adds its
//! listeners and waits in [`ProxyInputs::serve_until_shutdown`].

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use ward_certs::{SpiffeId, TrustBundle};
use ward_runtime::accept::{Accept, bind};
use ward_runtime::telemetry::{UPKEEP_EVERY, upkeep};
use ward_runtime::{Drain, Readiness};

use crate::admin::Reports;
use crate::authz::{AuditLog, Authorizer, watch_policy_dir};
use crate::config::{Limits, Validated};
use crate::control::identity::ControlPlaneIdentity;
use crate::control::{ControlPlane, Health};
use crate::http::server::Servers;
use crate::identity::files::Files;
use crate::identity::{Identity, IdentityError, Workload};

/// The shared inputs of every listener of one proxy.
pub struct ProxyInputs {
    pub identity: Identity,
    pub own_id: SpiffeId,
    pub authz: Arc<Authorizer>,
    pub limits: Limits,
    pub servers: Servers,
    pub access_log: bool,
    pub drain: Drain,
    pub readiness: Readiness,
    /// The control plane and its streams' health, when the identity comes from one.
    pub control: Option<(ControlPlane, Arc<Health>)>,
}

impl ProxyInputs {
    /// With a control plane: the mesh's endpoints from its discovery, followed from now on.
    pub fn discovery(&self) -> Option<crate::control::discovery::Endpoints> {
        self.control.clone().map(|(client, health)| {
            let map = crate::control::discovery::Endpoints::default();
            tokio::spawn(crate::control::discovery::follow(
                client,
                self.identity.mesh.clone(),
                health,
                map.clone(),
            ));
            map
        })
    }

    /// Where the Workload API's JWT-SVIDs come from: this proxy's identity source.
    pub fn jwt_svids(&self) -> Arc<crate::workload_api::jwt::JwtSvids> {
        use crate::workload_api::jwt::JwtSvids;
        Arc::new(match &self.identity.jwt {
            Some(source) => JwtSvids::new(source.clone()),
            None => JwtSvids::unavailable(
                "this proxy's identity source (files) issues no JWT-SVIDs: take the identity \
                 from the ward control plane or SPIRE",
            ),
        })
    }

    /// Starts the admin server, gets the identity (from files, or from the control plane
    /// with a join token: this waits until the first SVID), and starts following policy.
    /// `/ready` says what is still pending all along: `readiness` may already hold the
    /// caller's conditions (its listeners, not bound yet).
    /// `own` holds the sections of a mode beyond the shared ones (the gateway's), shown in
    /// `/config` beside them.
    pub async fn start(
        validated: &Validated,
        own: Option<serde_json::Value>,
        metrics: Option<PrometheusHandle>,
        readiness: Readiness,
    ) -> anyhow::Result<Self> {
        let config = &validated.config;
        let loading = readiness.register("identity");
        let drain = Drain::new();
        let admin_listener = bind("admin", config.admin).await?;
        if let Some(handle) = &metrics {
            tokio::spawn(upkeep(handle.clone(), UPKEEP_EVERY));
        }
        let reports = Arc::new(Reports::default());
        let role = if own.is_some() { "gateway" } else { "sidecar" };
        let mut shown = serde_json::to_value(config).unwrap_or_default();
        if let (Some(serde_json::Value::Object(own)), serde_json::Value::Object(all)) =
            (own, &mut shown)
        {
            all.extend(own);
        }
        let mut admin = crate::admin::server(
            readiness.clone(),
            metrics.clone(),
            serde_json::to_string_pretty(&shown).unwrap_or_default(),
            reports.clone(),
        );
        if !config.app_probes.is_empty() {
            admin = admin.prefix(
                crate::probes::PREFIX,
                crate::probes::route(config.app_probes.clone()),
            );
        }
        tokio::spawn(admin.serve(admin_listener, drain.clone()));

        let (identity, workload, control) = start_identity(validated, &reports).await?;
        let _ = reports.identity.set(identity.mesh.clone());
        drop(loading);

        let audit = AuditLog::start(&config.audit)
            .await
            .with_context(|| format!("audit.log: cannot open {}", config.audit.log))?;
        let own_id = identity.id.clone();
        let authz = Authorizer::new(
            workload.namespace,
            workload.labels,
            own_id.to_string(),
            audit,
        );
        let inputs = Self {
            identity,
            own_id,
            authz,
            limits: config.limits.clone(),
            servers: Servers::new(&config.limits),
            access_log: config.access_log,
            drain,
            readiness,
            control,
        };
        inputs.follow(validated);
        if let Some((client, _)) = inputs.control.clone() {
            let reporting = crate::control::report::Reporting {
                identity: inputs.identity.mesh.clone(),
                metrics,
                authz: inputs.authz.clone(),
                role,
                every: config.identity.report_every,
            };
            tokio::spawn(crate::control::report::follow(client, reporting));
        }
        Ok(inputs)
    }

    /// Policy from the configured directory or else the control plane; with a control
    /// plane, renewal and the trust bundle too. Until a valid policy set is in force the
    /// proxy is not ready and denies every inbound call.
    fn follow(&self, validated: &Validated) {
        let config = &validated.config;
        if let Some(policy) = &config.policy {
            tokio::spawn(watch_policy_dir(
                policy.dir.clone(),
                self.authz.clone(),
                Some(self.readiness.register("policy")),
                self.drain.clone(),
            ));
        }
        if let Some((client, health)) = self.control.clone()
            && config.policy.is_none()
        {
            let not_ready = self.readiness.register("policy");
            tokio::spawn(crate::control::policy::follow(
                client,
                self.identity.mesh.clone(),
                health,
                self.authz.clone(),
                Some(not_ready),
            ));
        }
    }

    /// Serves `listener` with `handle` for each connection, at most `limits.max_connections`
    /// at once: each listener has its own budget, so peers filling the inbound side never
    /// starve the app's outbound listener, nor the reverse.
    pub fn serve<F, Fut>(&self, name: &'static str, listener: TcpListener, handle: F)
    where
        F: Fn(tokio::net::TcpStream, Drain) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let budget = Arc::new(Semaphore::new(self.limits.max_connections));
        let accept = Accept::new(name).limit(budget);
        tokio::spawn(accept.serve(listener, self.drain.clone(), handle));
    }

    /// Waits for SIGTERM or SIGINT, then drains for at most `limits.drain_timeout`.
    pub async fn serve_until_shutdown(self) {
        ward_runtime::signal::shutdown().await;
        tracing::info!(timeout = ?self.limits.drain_timeout, "draining");
        self.drain.start();
        let left = self.drain.finish(self.limits.drain_timeout).await;
        if left > 0 {
            tracing::warn!(open = left, "drain timeout reached; closing what is left");
        }
    }
}

/// Gets the identity from its source (files, or the control plane: then this waits for
/// the first SVID) and follows it; with a control plane, also the client and the streams'
/// health for the policy stream.
async fn start_identity(
    validated: &Validated,
    reports: &Reports,
) -> anyhow::Result<(Identity, Workload, Option<(ControlPlane, Arc<Health>)>)> {
    let (files, td) = (&validated.config.identity, &validated.trust_domain);
    if let Some(spire) = &files.spire {
        let source = crate::identity::spire::Spire::new(spire, td.clone());
        let jwt = source.jwt();
        let (mut identity, _) = crate::identity::start(source).await?;
        identity.jwt = Some(jwt);
        return Ok((identity, configured_workload(validated), None));
    }
    let Some(url) = &files.control_plane else {
        let (identity, _) = crate::identity::start(Files::new(files, td)?).await?;
        return Ok((identity, configured_workload(validated), None));
    };
    let bundle = files
        .bundle
        .as_ref()
        .ok_or_else(|| IdentityError::ControlPlane("no identity.bundle".into()))?;
    let bootstrap = TrustBundle::read(td.clone(), bundle).map_err(IdentityError::from)?;
    let client = ControlPlane::new(url, td, bootstrap)?.with_watch_token(
        files
            .renew_with_token
            .then(|| files.token_file.clone())
            .flatten(),
    );
    let token_file = files
        .token_file
        .clone()
        .ok_or_else(|| IdentityError::ControlPlane("no token_file".into()))?;
    let health = Arc::new(Health::default());
    let _ = reports.control_plane.set(health.clone());
    let serving = validated
        .config
        .workload
        .serving
        .iter()
        .map(|s| ward_api::v1::Endpoint {
            address: s.address.to_string(),
            spiffe_id: String::new(),
            inbound_port: s.inbound_port.map(u32::from).unwrap_or_default(),
            protocol: s.protocol.clone().unwrap_or_default(),
        })
        .collect();
    let source = ControlPlaneIdentity::new(
        Arc::new(client.clone()),
        td.clone(),
        token_file,
        health.clone(),
    )
    .with_serving(serving)
    .with_token_on_renewal(files.renew_with_token);
    // With a control plane the workload is what attestation says, not what the config says.
    let (mut identity, workload) = crate::identity::start(source).await?;
    identity.jwt = Some(crate::control::jwt::source(
        client.clone(),
        identity.mesh.clone(),
        td,
    ));
    Ok((
        identity,
        workload.unwrap_or_default(),
        Some((client, health)),
    ))
}

/// The workload as the configuration says (files and SPIRE do not attest labels).
fn configured_workload(validated: &Validated) -> Workload {
    let workload = &validated.config.workload;
    Workload {
        namespace: workload.namespace.clone(),
        labels: workload.labels.clone(),
    }
}
