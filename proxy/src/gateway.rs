//! Gateway mode (`ward-proxy gateway`): the edge of the mesh. A public listener
//! ([`edge`]: public TLS from [`public_tls`], or plaintext) takes requests from outside,
//! routes them ([`routes`]), authenticates their end user ([`authn`]: the token from
//! [`credentials`], checked by [`jwt`] against the configured issuers), authorizes them
//! with the same policy engine as a sidecar — `requestPrincipals`, claims and claim-bound
//! paths included — and carries them into the mesh over mutual TLS with the gateway's own
//! SVID, the verified end user in `x-ward-end-user` ([`crate::authz::end_user`]).

pub mod api_keys;
pub mod authn;
pub mod config;
pub mod credentials;
pub mod dpop;
pub mod edge;
pub mod forwarded;
pub mod issuers;
pub use crate::jwt;
mod onward;
pub mod public_tls;
pub mod ratelimit;
pub mod routes;

use metrics_exporter_prometheus::PrometheusHandle;
use ward_runtime::Readiness;
use ward_runtime::accept::bind;

use self::config::GatewayValidated;
use crate::inputs::ProxyInputs;

/// Runs the gateway until a shutdown signal, then drains.
pub async fn run(
    validated: GatewayValidated,
    metrics: Option<PrometheusHandle>,
) -> anyhow::Result<()> {
    let readiness = Readiness::new();
    let listening = readiness.register(format!("gateway {}", validated.gateway.listen));
    let issuers = issuers::Issuers::new(&validated.gateway.issuers, validated.issuers.clone())
        .map_err(anyhow::Error::msg)?;
    let keys: Vec<_> = issuers
        .remote_names()
        .into_iter()
        .map(|name| readiness.register(format!("keys of issuer {name}")))
        .collect();
    let tls = match &validated.gateway.tls {
        Some(tls) => {
            let certs = public_tls::Certificates::load(&tls.certificates)?;
            let config = public_tls::server_config(tls, certs.clone())?;
            Some((config, certs))
        }
        None => None,
    };
    let own = serde_json::to_value(&validated.gateway).ok();
    let inputs = ProxyInputs::start(&validated.common, own, metrics, readiness).await?;
    let listener = bind("listen", validated.gateway.listen).await?;
    tokio::spawn(issuers.clone().follow(keys, inputs.drain.clone()));
    let api_keys = match &validated.gateway.api_keys {
        Some(config) => {
            let keys = api_keys::ApiKeys::load(config).map_err(anyhow::Error::msg)?;
            tokio::spawn(keys.clone().follow(inputs.drain.clone()));
            Some(keys)
        }
        None => None,
    };
    if let Some((_, certs)) = &tls {
        tokio::spawn(certs.clone().follow(inputs.drain.clone()));
    }
    let edge = edge::Edge::new(&validated, &inputs, tls, issuers, api_keys)?;
    inputs.serve("gateway", listener, move |tcp, drain| {
        edge.clone().connection(tcp, drain)
    });
    drop(listening);
    tracing::info!(spiffe_id = %inputs.own_id, listen = %validated.gateway.listen,
        routes = validated.gateway.routes.len(), issuers = validated.issuers.len(),
        "gateway ready");
    inputs.serve_until_shutdown().await;
    Ok(())
}
