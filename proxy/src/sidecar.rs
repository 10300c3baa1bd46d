//! `ward-proxy sidecar`: loads the identity, binds every listener, serves until SIGTERM or
//! SIGINT, then drains.

use std::sync::Arc;

use anyhow::Context;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use ward_runtime::accept::{Accept, bind};
use ward_runtime::telemetry::{UPKEEP_EVERY, upkeep};
use ward_runtime::{Drain, Readiness};

use crate::authz::{AuditLog, Authorizer, watch_policy_dir};
use crate::config::Validated;
use crate::control::ControlPlane;
use crate::http::server::Servers;
use crate::inbound::Inbound;
use crate::outbound::Outbound;

/// Runs the sidecar until a shutdown signal, then drains. Errors name the setting at fault.
pub async fn run(validated: Validated, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let config = &validated.config;
    let readiness = Readiness::new();
    let loading = readiness.register("identity");
    let pending: Vec<_> = config
        .inbound
        .iter()
        .map(|l| readiness.register(format!("inbound {}", l.listen)))
        .chain(
            config
                .outbound
                .iter()
                .map(|l| readiness.register(format!("outbound {}", l.listen))),
        )
        .collect();

    // Admin first, so /ready can say what is still pending while the identity is fetched.
    let drain = Drain::new();
    let admin_listener = bind("admin", config.admin).await?;
    if let Some(handle) = &metrics {
        tokio::spawn(upkeep(handle.clone(), UPKEEP_EVERY));
    }
    let admin = Arc::new(crate::admin::Reports::default());
    let server = crate::admin::server(
        readiness.clone(),
        metrics,
        serde_json::to_string_pretty(config).unwrap_or_default(),
        admin.clone(),
    );
    tokio::spawn(server.serve(admin_listener, drain.clone()));

    let td = &validated.trust_domain;
    let (identity, own_id, control) = if config.identity.control_plane.is_some() {
        let cp = ControlPlane::new(&config.identity, td)?;
        let _ = admin.control_plane.set(cp.health.clone());
        let boot = cp.bootstrap().await;
        let workload = (boot.namespace, boot.labels);
        (boot.identity, boot.spiffe_id, Some((cp, workload)))
    } else {
        let (identity, id) = crate::identity::load_static(&config.identity, td)?;
        (identity, id, None)
    };
    if let Some(info) = identity
        .svid
        .current_chain()
        .first()
        .and_then(|leaf| ward_certs::CertInfo::parse(leaf).ok())
    {
        crate::metrics::cert_expiry(info.not_after);
    }
    let _ = admin.identity.set(identity.clone());
    drop(loading);

    let servers = Servers::new(&config.limits);
    // Each listener has its own connection budget: peers filling the inbound side must
    // never starve the app's outbound listener, nor the reverse.
    let budget = || Arc::new(Semaphore::new(config.limits.max_connections));
    let audit = AuditLog::start(&config.audit)
        .await
        .with_context(|| format!("audit.log: cannot open {}", config.audit.log))?;
    // With a control plane the workload is what attestation says, not what the config says.
    let (namespace, labels) = match &control {
        Some((_, (ns, labels))) => (ns.clone(), labels.clone()),
        None => (
            config.workload.namespace.clone(),
            config.workload.labels.clone(),
        ),
    };
    let authz = Authorizer::new(namespace, labels, own_id.to_string(), audit);
    if let Some(policy) = &config.policy {
        // Not ready, and denying every inbound call, until a valid policy set is in force.
        let not_ready = readiness.register("policy");
        tokio::spawn(watch_policy_dir(
            policy.dir.clone(),
            authz.clone(),
            Some(not_ready),
            drain.clone(),
        ));
    }
    if let Some((cp, _)) = &control {
        tokio::spawn(cp.clone().renew_forever(identity.clone(), own_id.clone()));
        tokio::spawn(cp.clone().follow_bundle(identity.clone()));
        if config.policy.is_none() {
            let not_ready = readiness.register("policy");
            tokio::spawn(cp.clone().follow_policy(
                identity.clone(),
                authz.clone(),
                Some(not_ready),
            ));
        }
    }
    let mut pending = pending.into_iter();

    for (i, cfg) in config.inbound.iter().enumerate() {
        let listener = bind(&format!("inbound[{i}].listen"), cfg.listen).await?;
        let inbound = Inbound::new(
            cfg,
            &own_id,
            &identity,
            authz.clone(),
            &config.limits,
            servers.clone(),
            config.access_log,
        )?;
        let handle = move |tcp, drain| inbound.clone().connection(tcp, drain);
        let accept = Accept::new("inbound").limit(budget());
        tokio::spawn(accept.serve(listener, drain.clone(), handle));
        drop(pending.next());
    }
    for (i, cfg) in config.outbound.iter().enumerate() {
        let listener = bind(&format!("outbound[{i}].listen"), cfg.listen).await?;
        let outbound = Outbound::new(
            cfg,
            validated.server_identities[i].clone(),
            &identity,
            &config.limits,
            servers.clone(),
            config.access_log,
        )?;
        let handle = move |tcp, drain| outbound.clone().connection(tcp, drain);
        let accept = Accept::new("outbound").limit(budget());
        tokio::spawn(accept.serve(listener, drain.clone(), handle));
        drop(pending.next());
    }
    tracing::info!(spiffe_id = %own_id, admin = %config.admin,
        inbound = config.inbound.len(), outbound = config.outbound.len(), "sidecar ready");

    ward_runtime::signal::shutdown().await;
    tracing::info!(timeout = ?config.limits.drain_timeout, "draining");
    drain.start();
    let left = drain.finish(config.limits.drain_timeout).await;
    if left > 0 {
        tracing::warn!(open = left, "drain timeout reached; closing what is left");
    }
    Ok(())
}
