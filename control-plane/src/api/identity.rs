//! `Identity.Certify`: SVIDs for attested callers.

use std::time::SystemTime;

use crate::api::*;
use crate::attest::tokens::{self};
use crate::metrics as admin;
use tonic::{Request, Response, Status};
use ward_api::v1::{self, CertifyRequest, CertifyResponse};
use ward_certs::ca::{self};

#[tonic::async_trait]
impl v1::identity_server::Identity for Api {
    async fn certify(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let renewal = req.get_ref().token.is_empty();
        let result = self.certify_inner(req);
        match &result {
            Ok(_) => {
                let kind = if renewal { "renewal" } else { "bootstrap" };
                metrics::counter!(admin::CERTS_ISSUED, "kind" => kind).increment(1);
            }
            Err(status) => {
                let reason = format!("{:?}", status.code());
                metrics::counter!(admin::CERTS_REFUSED, "reason" => reason).increment(1);
                tracing::info!(code = ?status.code(), message = status.message(), "Certify refused");
            }
        }
        result
    }
}

impl Api {
    pub(crate) fn certify_inner(
        &self,
        req: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let state = &self.0;
        let peer = peer(&req);
        if state.rate_limited(peer.addr) {
            return Err(Status::resource_exhausted(
                "too many Certify calls; retry later",
            ));
        }
        let msg = req.into_inner();
        let now = SystemTime::now();
        // Who is asking: a join token on first issuance, the current SVID on renewal.
        let (id, registration, token) = if !msg.token.is_empty() {
            let grant = state.tokens.peek(&msg.token, now).map_err(token_status)?;
            let id = ward_certs::parse_spiffe_id(&grant.spiffe_id)
                .map_err(|e| Status::internal(format!("stored token identity: {e}")))?;
            if !id.is_member_of(&state.settings.trust_domain) {
                return Err(Status::permission_denied(format!(
                    "join token is for trust domain {}, not {}",
                    id.trust_domain(),
                    state.settings.trust_domain
                )));
            }
            let registration = tokens::Registration {
                namespace: grant.namespace.clone(),
                labels: grant.labels.clone(),
            };
            (id, registration, Some(msg.token.clone()))
        } else {
            let id = peer.spiffe_id.clone().ok_or_else(|| {
                Status::unauthenticated(
                    "no attestation: send a join token, or renew with your SVID",
                )
            })?;
            let registration = state.registration(&id)?;
            (id, registration, None)
        };
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
        // Check the CSR before spending a token use on it.
        let signer = state.ca.load();
        let chain = signer
            .sign_csr(&msg.csr, &id, state.settings.svid_ttl, now)
            .map_err(ca_status)?;
        let signing_root = root_subject(&signer);
        if let Some(token) = token {
            state.tokens.redeem(&token, now).map_err(token_status)?;
            state
                .registrations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_string(), registration.clone());
        }
        let info =
            ward_certs::CertInfo::parse(&chain[0]).map_err(|e| Status::internal(e.to_string()))?;
        let not_after_unix = info
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs() as i64;
        let first_leaf = {
            // Whoever holds a valid leaf is a proxy a rotation must wait for.
            let mut proxies = state.proxies.lock().unwrap_or_else(|p| p.into_inner());
            let known = proxies.contains_key(&id.to_string());
            let entry = proxies.entry(id.to_string()).or_insert(ProxyState {
                bundle_version: 0,
                leaf_not_after_unix: 0,
                leaf_issuer: String::new(),
                last_seen: now,
                connected: false,
            });
            entry.leaf_not_after_unix = not_after_unix;
            entry.leaf_issuer = signing_root.clone();
            entry.last_seen = now;
            !known
        };
        if first_leaf {
            // Record a new leaf holder durably before handing it the leaf: a restart must
            // not forget it (renewals of known proxies are recorded with the next report).
            state.write_status();
        }
        let bundle = state.bundle.borrow().clone();
        tracing::debug!(spiffe_id = %id, serial = %info.serial, renewal = msg.token.is_empty(), "issued SVID");
        Ok(Response::new(CertifyResponse {
            chain: chain.iter().map(|c| c.to_vec()).collect(),
            bundle: bundle.bundle.roots().map(|r| r.to_vec()).collect(),
            spiffe_id: id.to_string(),
            not_after_unix,
            workload: Some(v1::Workload {
                namespace: registration.namespace,
                labels: registration.labels.into_iter().collect(),
            }),
            bundle_version: bundle.version,
        }))
    }
}
