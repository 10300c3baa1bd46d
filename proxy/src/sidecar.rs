//! `ward-proxy sidecar`: loads the identity, binds every listener, serves until SIGTERM or
//! SIGINT, then drains.

use std::sync::Arc;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::admin::{self, Admin};
use crate::authz::Authorizer;
use crate::config::Validated;
use crate::drain::Drain;
use crate::inbound::Inbound;
use crate::listener::{Servers, accept_loop};
use crate::outbound::Outbound;
use crate::readiness::Readiness;

/// Runs the sidecar until a shutdown signal, then drains. Errors name the setting at fault.
pub async fn run(validated: Validated, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let config = &validated.config;
    let readiness = Readiness::new();
    let loading = readiness.register("identity");
    let (identity, own_id) = crate::identity::load(&config.identity, &validated.trust_domain)?;
    if let Some(info) = identity
        .svid
        .current_chain()
        .first()
        .and_then(|leaf| ward_certs::CertInfo::parse(leaf).ok())
    {
        crate::metrics::cert_expiry(info.not_after);
    }
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
    drop(loading);

    let drain = Drain::new();
    let admin_listener = TcpListener::bind(config.admin)
        .await
        .with_context(|| format!("admin: cannot listen on {}", config.admin))?;
    let admin = Arc::new(Admin {
        readiness: readiness.clone(),
        metrics,
        config_json: serde_json::to_string_pretty(config).unwrap_or_default(),
        identity: identity.clone(),
    });
    tokio::spawn(admin::serve(admin_listener, admin, drain.clone()));

    let servers = Servers::new(&config.limits);
    let limit = Arc::new(Semaphore::new(config.limits.max_connections));
    let authz = Authorizer::new(validated.trust_domain.clone());
    let mut pending = pending.into_iter();

    for (i, cfg) in config.inbound.iter().enumerate() {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("inbound[{i}].listen: cannot listen on {}", cfg.listen))?;
        let inbound = Inbound::new(
            cfg,
            &own_id,
            &identity,
            authz.clone(),
            &config.limits,
            servers.clone(),
            config.access_log,
        )?;
        let d = drain.clone();
        tokio::spawn(accept_loop(
            listener,
            drain.clone(),
            limit.clone(),
            move |tcp, _| inbound.clone().connection(tcp, d.clone()),
        ));
        drop(pending.next());
    }
    for (i, cfg) in config.outbound.iter().enumerate() {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("outbound[{i}].listen: cannot listen on {}", cfg.listen))?;
        let outbound = Outbound::new(
            cfg,
            validated.server_identities[i].clone(),
            &identity,
            &config.limits,
            servers.clone(),
            config.access_log,
        )?;
        let d = drain.clone();
        tokio::spawn(accept_loop(
            listener,
            drain.clone(),
            limit.clone(),
            move |tcp, _| outbound.clone().connection(tcp, d.clone()),
        ));
        drop(pending.next());
    }
    tracing::info!(spiffe_id = %own_id, admin = %config.admin,
        inbound = config.inbound.len(), outbound = config.outbound.len(), "sidecar ready");

    shutdown_signal().await;
    tracing::info!(timeout = ?config.limits.drain_timeout, "draining");
    drain.start();
    let left = drain.finish(config.limits.drain_timeout).await;
    if left > 0 {
        tracing::warn!(open = left, "drain timeout reached; closing what is left");
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
