//! `JwtSvids`: JWT-SVIDs for callers that prove their identity with their SVID (mTLS).

use std::time::SystemTime;

use tonic::{Request, Response, Status};
use ward_api::v1::{self, JwtBundleRequest, JwtBundleResponse, JwtSvidRequest, JwtSvidResponse};

use super::{Api, caller_svid};

/// At most this many audiences, each at most this long.
const MAX_AUDIENCES: usize = 16;
const MAX_AUDIENCE_LEN: usize = 256;

#[tonic::async_trait]
impl v1::jwt_svids_server::JwtSvids for Api {
    async fn sign(
        &self,
        req: Request<JwtSvidRequest>,
    ) -> Result<Response<JwtSvidResponse>, Status> {
        let id = caller_svid(&req)?;
        let audience = req.into_inner().audience;
        if audience.is_empty()
            || audience.len() > MAX_AUDIENCES
            || audience
                .iter()
                .any(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN)
        {
            return Err(Status::invalid_argument(format!(
                "audience: 1 to {MAX_AUDIENCES} non-empty values of at most {MAX_AUDIENCE_LEN} bytes"
            )));
        }
        let ca = self.0.ca.load();
        let (token, jwks) = self
            .0
            .jwt_keys
            .sign(&ca, &id, &audience, SystemTime::now())
            .map_err(Status::internal)?;
        metrics::counter!("ward_cp_jwt_svids_issued_total").increment(1);
        tracing::debug!(spiffe_id = %id, ?audience, "JWT-SVID signed");
        Ok(Response::new(JwtSvidResponse { token, jwks }))
    }

    async fn bundle(
        &self,
        req: Request<JwtBundleRequest>,
    ) -> Result<Response<JwtBundleResponse>, Status> {
        caller_svid(&req)?;
        let ca = self.0.ca.load();
        let jwks = self.0.jwt_keys.jwks(&ca).map_err(Status::internal)?;
        Ok(Response::new(JwtBundleResponse { jwks }))
    }
}
