//! `ward-proxy sidecar`: a proxy whose listeners are the configuration's `inbound` and
//! `outbound` entries; serves until SIGTERM or SIGINT, then drains.

use metrics_exporter_prometheus::PrometheusHandle;
use ward_runtime::Readiness;
use ward_runtime::accept::bind;

use crate::capture::Capture;
use crate::config::Validated;
use crate::inbound::Inbound;
use crate::inputs::ProxyInputs;
use crate::outbound::Outbound;
use crate::resolve::{Destination, Static};

/// Runs the sidecar until a shutdown signal, then drains. Errors name the setting at fault.
pub async fn run(validated: Validated, metrics: Option<PrometheusHandle>) -> anyhow::Result<()> {
    let config = &validated.config;
    // Registered before anything else, so /ready names every listener still to come.
    let readiness = Readiness::new();
    let mut pending: Vec<_> = config
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
    let capture = config
        .capture
        .as_ref()
        .map(|_| readiness.register("capture"));
    pending.reverse();
    let inputs = ProxyInputs::start(&validated, None, metrics, readiness).await?;

    for (i, cfg) in config.inbound.iter().enumerate() {
        let listener = bind(&format!("inbound[{i}].listen"), cfg.listen).await?;
        let inbound = Inbound::new(cfg, &inputs)?;
        inputs.serve("inbound", listener, move |tcp, drain| {
            inbound.clone().connection(tcp, drain)
        });
        drop(pending.pop());
    }
    for (i, cfg) in config.outbound.iter().enumerate() {
        let listener = bind(&format!("outbound[{i}].listen"), cfg.listen).await?;
        let to = Destination {
            addr: cfg.upstream,
            identity: validated.server_identities[i].clone(),
        };
        let resolver = std::sync::Arc::new(Static(to));
        let outbound = Outbound::new(cfg.protocol, &cfg.upgrades, resolver, &inputs)?;
        inputs.serve("outbound", listener, move |tcp, drain| {
            outbound.clone().connection(tcp, drain)
        });
        drop(pending.pop());
    }
    if let Some(capture) = &config.capture {
        let ids = capture
            .destinations
            .iter()
            .map(|d| ward_certs::parse_spiffe_id(&d.spiffe_id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("capture.destinations: {e}"))?;
        // With a control plane, its discovery names the mesh destinations too.
        let discovered = inputs.discovery();
        let captured = Capture::new(config, capture, ids, discovered, &inputs)?;
        let listener = bind("capture.inbound", capture.inbound).await?;
        let inbound = Inbound::captured(capture.protocol, &capture.upgrades, &inputs)?;
        inputs.serve("inbound", listener, move |tcp, drain| {
            inbound.clone().connection(tcp, drain)
        });
        for (setting, addr, opaque) in [
            ("capture.outbound", capture.outbound, false),
            ("capture.outbound_opaque", capture.outbound_opaque, true),
        ] {
            let listener = bind(setting, addr).await?;
            let captured = captured.clone();
            inputs.serve("capture", listener, move |tcp, drain| {
                captured.clone().connection(tcp, drain, opaque)
            });
        }
    }
    drop(capture);
    if let Some(api) = &config.workload_api {
        let attestor = crate::workload_api::attest::Attestor::new(api)
            .map_err(|e| anyhow::anyhow!("workload_api.same_network_namespace: {e}"))?;
        let service = crate::workload_api::Service::new(
            inputs.identity.clone(),
            attestor,
            inputs.jwt_svids(),
            inputs.drain.clone(),
        );
        crate::workload_api::serve(api, service).await?;
    }
    tracing::info!(spiffe_id = %inputs.own_id, admin = %config.admin,
        inbound = config.inbound.len(), outbound = config.outbound.len(), "sidecar ready");
    inputs.serve_until_shutdown().await;
    Ok(())
}
