//! `Identity.Certify`: SVIDs for attested callers. A first certificate is paid for with
//! evidence the attestor checks (a join token); a renewal with the caller's current SVID.
//! The identity signed is always the attested one, whatever the request or CSR asks for.

use std::time::SystemTime;

use tonic::{Request, Response, Status};
use ward_api::v1::{self, CertifyRequest, CertifyResponse};
use ward_certs::SpiffeId;
use ward_certs::ca;

use super::{Api, attest_status, ca_status, peer};
use crate::attest::Registration;
use crate::metrics as m;
use crate::trust::signing_root;

#[tonic::async_trait]
impl v1::identity_server::Identity for Api {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let renewal = req.get_ref().token.is_empty();
        let result = self.certify_inner(req).await;
        match &result {
            Ok(_) => {
                let kind = if renewal { "renewal" } else { "bootstrap" };
                metrics::counter!(m::CERTS_ISSUED, "kind" => kind).increment(1);
            }
            Err(status) => {
                let reason = format!("{:?}", status.code());
                metrics::counter!(m::CERTS_REFUSED, "reason" => reason).increment(1);
                tracing::info!(code = ?status.code(), message = status.message(), "Certify refused");
            }
        }
        result
    }
}

/// Who is asking, and with what.
struct Caller {
    id: SpiffeId,
    workload: Registration,
    /// The evidence to use up once the SVID is signed (a first certificate).
    evidence: Option<String>,
}

impl Api {
    async fn certify_inner(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let state = &self.0;
        let peer = peer(&req);
        if state.registry.rate_limited(peer.addr) {
            return Err(Status::resource_exhausted(
                "too many Certify calls; retry later",
            ));
        }
        let msg = req.into_inner();
        let now = SystemTime::now();
        let caller = self.caller(&msg, peer.spiffe_id, now).await?;
        let id = &caller.id;
        if !msg.spiffe_id.is_empty() && msg.spiffe_id != id.to_string() {
            return Err(Status::permission_denied(format!(
                "the caller is attested as {id}, not {}",
                msg.spiffe_id
            )));
        }
        let requested = ca::csr_requested_uris(&msg.csr).map_err(ca_status)?;
        if let Some(other) = requested.iter().find(|u| **u != id.to_string()) {
            return Err(Status::permission_denied(format!(
                "CSR asks for {other}; the caller is attested as {id}"
            )));
        }
        // Check the CSR before spending the evidence on it.
        let signer = state.ca.load();
        let chain = signer
            .sign_csr(&msg.csr, id, state.settings.svid_ttl, now)
            .map_err(ca_status)?;
        if let Some(evidence) = &caller.evidence {
            state
                .attestor
                .redeem(evidence, now)
                .map_err(attest_status)?;
            state.registry.attested(id, caller.workload.clone());
        }
        state.discovery.attested(id, &msg.serving);
        let info =
            ward_certs::CertInfo::parse(&chain[0]).map_err(|e| Status::internal(e.to_string()))?;
        let not_after_unix = ward_runtime::time::unix_secs(info.not_after) as i64;
        // Whoever holds a valid leaf is a proxy a rotation must wait for. A new leaf holder
        // is recorded durably before it gets the leaf: a restart must not forget it
        // (renewals of known proxies are recorded with the next report).
        if state
            .registry
            .issued(id, not_after_unix, &signing_root(&signer), now)
        {
            state.write_status();
        }
        let bundle = state.bundle.borrow().clone();
        tracing::debug!(spiffe_id = %id, serial = %info.serial, renewal = caller.evidence.is_none(), "issued SVID");
        Ok(Response::new(CertifyResponse {
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            bundle: bundle.bundle.roots().map(|r| r.to_vec()).collect(),
            spiffe_id: id.to_string(),
            not_after_unix,
            workload: Some(v1::Workload {
                namespace: caller.workload.namespace,
                labels: caller.workload.labels.into_iter().collect(),
            }),
            bundle_version: bundle.version,
        }))
    }

    /// Attests the caller: by its evidence on a first certificate, by its SVID on renewal.
    async fn caller(
        &self,
        msg: &CertifyRequest,
        svid: Option<SpiffeId>,
        now: SystemTime,
    ) -> Result<Caller, Status> {
        let state = &self.0;
        if msg.token.is_empty() {
            let id = svid.ok_or_else(|| {
                Status::unauthenticated(
                    "no attestation: send a join token, or renew with your SVID",
                )
            })?;
            let workload = state.registry.workload(&id, state.attestor.as_ref())?;
            return Ok(Caller {
                id,
                workload,
                evidence: None,
            });
        }
        let attested = state
            .attestor
            .attest(&msg.token, now)
            .await
            .map_err(attest_status)?;
        let td = &state.settings.trust_domain;
        if !attested.id.is_member_of(td) {
            return Err(Status::permission_denied(format!(
                "join token is for trust domain {}, not {td}",
                attested.id.trust_domain(),
            )));
        }
        Ok(Caller {
            id: attested.id,
            workload: attested.workload,
            evidence: Some(msg.token.clone()),
        })
    }
}
