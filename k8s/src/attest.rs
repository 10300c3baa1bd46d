//! Attesting a proxy by its pod's projected service-account token: the control plane asks
//! the API server (TokenReview, audience `ward`) who the token belongs to, and signs
//! `spiffe://TD/ns/NS/sa/SA` for the reviewed service account, never what the proxy asks
//! for. The token must be bound to a pod that still exists (same UID); the pod's namespace
//! and labels become the workload policy is selected by.
//!
//! Tokens are short-lived and refreshed by the kubelet, so a proxy on Kubernetes sends its
//! current token with every Certify, renewals included: any replica can attest it, and a
//! deleted service account or pod stops renewals at once.

use std::time::SystemTime;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use ward_certs::{SpiffeId, TrustDomain};
use ward_control_plane::attest::{AttestError, AttestFuture, Attested, Attestor, Registration};

/// The audience a proxy's token must be issued for.
pub const AUDIENCE: &str = "ward";
/// The longest token reviewed (a projected token is about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Service-account tokens reviewed by the API server.
pub struct ServiceAccountTokens {
    client: kube::Client,
    trust_domain: TrustDomain,
}

impl ServiceAccountTokens {
    pub fn new(client: kube::Client, trust_domain: TrustDomain) -> Self {
        Self {
            client,
            trust_domain,
        }
    }

    async fn review(&self, token: &str) -> Result<Attested, AttestError> {
        if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AttestError::Refused(
                "the token is not a service-account token".into(),
            ));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AttestError::Unavailable(format!("TokenReview: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            // The API server's reason goes to our log, not to the caller.
            tracing::info!(target: "ward::attest", reason = status.error.as_deref().unwrap_or("not authenticated"),
                "service-account token refused");
            return Err(AttestError::Refused(
                "the service-account token is not valid for audience ward".into(),
            ));
        }
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Err(AttestError::Refused(
                "the token is not for audience ward".into(),
            ));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (namespace, account) = service_account(&username)
            .ok_or_else(|| AttestError::Refused("the token is not a service account's".into()))?;
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (first(POD_NAME), first(POD_UID)) else {
            return Err(AttestError::Refused(
                "the token is not bound to a pod".into(),
            ));
        };
        let pod = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(&pod_name)
            .await
            .map_err(|e| {
                AttestError::Unavailable(format!("reading pod {namespace}/{pod_name}: {e}"))
            })?
            .filter(|p| p.metadata.uid.as_deref() == Some(pod_uid.as_str()))
            .ok_or_else(|| AttestError::Refused("the token's pod no longer exists".into()))?;
        let id =
            ward_certs::id::workload_id(&self.trust_domain, namespace, account).map_err(|e| {
                AttestError::Refused(format!("service account {namespace}/{account}: {e}"))
            })?;
        Ok(Attested {
            id,
            workload: Registration {
                namespace: namespace.to_owned(),
                labels: pod.metadata.labels.unwrap_or_default(),
            },
        })
    }
}

/// `system:serviceaccount:NS:SA` -> (NS, SA).
pub fn service_account(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, account) = rest.split_once(':')?;
    (!namespace.is_empty() && !account.is_empty() && !account.contains(':'))
        .then_some((namespace, account))
}

impl Attestor for ServiceAccountTokens {
    fn attest<'a>(&'a self, evidence: &'a str, _now: SystemTime) -> AttestFuture<'a, Attested> {
        Box::pin(self.review(evidence))
    }

    /// A reviewed token may be presented again until it expires (the kubelet refreshes it).
    fn redeem(&self, _evidence: &str, _now: SystemTime) -> Result<(), AttestError> {
        Ok(())
    }

    /// Renewals on Kubernetes carry the pod's token; an SVID alone names no pod.
    fn workload(&self, _id: &SpiffeId) -> Result<Option<Registration>, AttestError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_service_account_usernames_name_an_identity() {
        assert_eq!(
            service_account("system:serviceaccount:bank:accounts"),
            Some(("bank", "accounts"))
        );
        for not in [
            "system:serviceaccount:bank",
            "system:serviceaccount::accounts",
            "system:serviceaccount:bank:",
            "system:serviceaccount:bank:a:b",
            "admin",
            "system:node:n1",
        ] {
            assert_eq!(service_account(not), None, "{not}");
        }
    }
}
