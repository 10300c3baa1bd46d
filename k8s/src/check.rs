//! `ward check`: is ward healthy on this cluster? One line per check, as `linkerd check`
//! does: the API server, the CRDs, the control plane (Deployment and leader Lease), the
//! injector (configuration, caBundle, and a dry-run injection), the CA's expiry and the
//! injected pods' proxy versions. A check fails, warns or passes; any failure makes the
//! exit code 1.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};

use crate::inject::{INJECTED_ANNOTATION, PROXY};
use crate::install::names::{CA_SECRET, CONTROL_PLANE, INJECT_LABEL, LEASE, WEBHOOK_CONFIGURATION};

use crate::check_line::check;
pub use crate::check_line::{Check, Status};

/// The CA's last 30 days are a warning.
const CA_WARN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Runs every check against the cluster of KUBECONFIG (or the in-cluster config).
pub async fn run_default(namespace: &str) -> Vec<Check> {
    match kube::Client::try_default().await {
        Ok(client) => run(&client, namespace).await,
        Err(e) => vec![check(
            Status::Fail,
            "kubernetes API",
            format!("no client (KUBECONFIG, or in-cluster config): {e}"),
        )],
    }
}

/// Runs every check against the cluster of `client`, the control plane in `namespace`.
pub async fn run(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    match client.apiserver_version().await {
        Ok(v) => checks.push(check(
            Status::Ok,
            "kubernetes API",
            format!("reachable ({})", v.git_version),
        )),
        Err(e) => {
            checks.push(check(
                Status::Fail,
                "kubernetes API",
                format!("unreachable: {e}"),
            ));
            return checks;
        }
    }
    checks.push(crds(client).await);
    checks.push(deployment(client, namespace).await);
    checks.push(leader(client, namespace).await);
    checks.extend(webhook(client, namespace).await);
    checks.push(ca(client, namespace).await);
    checks.push(proxies(client).await);
    checks.extend(crate::check_certs::run(client, namespace).await);
    checks
}

async fn crds(client: &kube::Client) -> Check {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut missing = Vec::new();
    for name in ["authorizationpolicies.ward.dev", "meshpolicies.ward.dev"] {
        let established = api.get_opt(name).await.ok().flatten().is_some_and(|crd| {
            crd.status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if !established {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        check(
            Status::Ok,
            "CRDs",
            "AuthorizationPolicy and MeshPolicy established",
        )
    } else {
        check(
            Status::Fail,
            "CRDs",
            format!(
                "not established: {} (ward install | kubectl apply -f -)",
                missing.join(", ")
            ),
        )
    }
}

async fn deployment(client: &kube::Client, namespace: &str) -> Check {
    let name = "control plane";
    match Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(CONTROL_PLANE)
        .await
    {
        Ok(Some(d)) => {
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            let status = if ready == 0 {
                Status::Fail
            } else if ready < want {
                Status::Warn
            } else {
                Status::Ok
            };
            check(status, name, format!("{ready}/{want} replicas ready"))
        }
        Ok(None) => check(
            Status::Fail,
            name,
            format!("no Deployment {namespace}/{CONTROL_PLANE}"),
        ),
        Err(e) => check(
            Status::Fail,
            name,
            format!("cannot read the Deployment: {e}"),
        ),
    }
}

async fn leader(client: &kube::Client, namespace: &str) -> Check {
    let name = "control-plane leader";
    match Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE)
        .await
    {
        Ok(Some(lease)) => {
            let spec = lease.spec.unwrap_or_default();
            let holder = spec.holder_identity.unwrap_or_default();
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let age = spec
                .renew_time
                .map(|t| k8s_openapi::jiff::Timestamp::now().as_second() - t.0.as_second());
            match age {
                _ if holder.is_empty() => check(Status::Fail, name, "no replica holds the Lease"),
                Some(age) if age <= duration => {
                    check(Status::Ok, name, format!("{holder} (renewed {age}s ago)"))
                }
                Some(age) => check(
                    Status::Fail,
                    name,
                    format!("{holder} has not renewed for {age}s (lease {duration}s)"),
                ),
                None => check(Status::Fail, name, format!("{holder} never renewed")),
            }
        }
        Ok(None) => check(
            Status::Fail,
            name,
            "no Lease: no control-plane replica has started",
        ),
        Err(e) => check(Status::Fail, name, format!("cannot read the Lease: {e}")),
    }
}

/// The configuration and its caBundle, then a dry-run pod in a meshed namespace.
async fn webhook(client: &kube::Client, namespace: &str) -> Vec<Check> {
    let name = "injector configuration";
    let bundle = ca_secret_file(client, namespace, ward_certs::ca::BUNDLE_FILE).await;
    let config = match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt(WEBHOOK_CONFIGURATION)
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            return vec![check(
                Status::Fail,
                name,
                format!("no MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"),
            )];
        }
        Err(e) => return vec![check(Status::Fail, name, format!("cannot read it: {e}"))],
    };
    let bundles: Vec<Vec<u8>> = config
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .clone()
                .map(|b| b.0)
                .unwrap_or_default()
        })
        .collect();
    let first = match bundle {
        Some(bundle) if !bundles.is_empty() && bundles.iter().all(|b| *b == bundle) => {
            check(Status::Ok, name, "caBundle is the mesh CA's")
        }
        Some(_) => check(
            Status::Fail,
            name,
            "caBundle is not the mesh CA's (is the control plane running?)",
        ),
        None => check(
            Status::Fail,
            name,
            format!("no {CA_SECRET} Secret to compare the caBundle with"),
        ),
    };
    vec![first, dry_run(client).await]
}

async fn dry_run(client: &kube::Client) -> Check {
    let name = "injector webhook";
    let labelled = ListParams::default().labels(&format!("{INJECT_LABEL}=enabled"));
    let ns = match Api::<Namespace>::all(client.clone()).list(&labelled).await {
        Ok(list) => list.items.into_iter().find_map(|n| n.metadata.name),
        Err(e) => return check(Status::Fail, name, format!("cannot list namespaces: {e}")),
    };
    let Some(ns) = ns else {
        return check(
            Status::Warn,
            name,
            format!("not tried: no namespace is labelled {INJECT_LABEL}=enabled"),
        );
    };
    let pod: Pod = match serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "ward-check-", "namespace": ns },
        "spec": { "serviceAccountName": "default", "containers": [{ "name": "check", "image": "ward-check" }] },
    })) {
        Ok(pod) => pod,
        Err(e) => return check(Status::Fail, name, format!("internal: {e}")),
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&params, &pod)
        .await
    {
        Ok(created) => {
            let injected = created
                .spec
                .and_then(|s| s.init_containers)
                .into_iter()
                .flatten()
                .any(|c| c.name == PROXY);
            if injected {
                check(
                    Status::Ok,
                    name,
                    format!("a dry-run pod in {ns} was injected"),
                )
            } else {
                check(
                    Status::Fail,
                    name,
                    format!("a dry-run pod in {ns} was not injected"),
                )
            }
        }
        Err(e) => check(
            Status::Fail,
            name,
            format!("a dry-run pod in {ns} was refused: {e}"),
        ),
    }
}

async fn ca_secret_file(client: &kube::Client, namespace: &str, file: &str) -> Option<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(CA_SECRET)
        .await
        .ok()??;
    Some(secret.data?.remove(file)?.0)
}

async fn ca(client: &kube::Client, namespace: &str) -> Check {
    let name = "CA";
    let Some(pem) = ca_secret_file(client, namespace, ward_certs::ca::CA_CERT_FILE).await else {
        return check(
            Status::Fail,
            name,
            format!("no {namespace}/{CA_SECRET} Secret (the control plane creates it)"),
        );
    };
    let not_after = pem::parse(&pem).ok().and_then(|p| {
        let (_, cert) = x509_parser::parse_x509_certificate(p.contents()).ok()?;
        u64::try_from(cert.validity().not_after.timestamp()).ok()
    });
    let Some(not_after) = not_after else {
        return check(Status::Fail, name, "the CA certificate does not parse");
    };
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after);
    let when = ward_runtime::time::rfc3339(not_after);
    match not_after.duration_since(SystemTime::now()) {
        Err(_) => check(Status::Fail, name, format!("expired at {when}")),
        Ok(left) if left < CA_WARN => check(
            Status::Warn,
            name,
            format!(
                "expires at {when}, in {} (ward ca rotate)",
                ward_runtime::time::human(left)
            ),
        ),
        Ok(left) => check(
            Status::Ok,
            name,
            format!(
                "valid until {when} ({} left)",
                ward_runtime::time::human(left)
            ),
        ),
    }
}

async fn proxies(client: &kube::Client) -> Check {
    let name = "proxies";
    let pods = match Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => return check(Status::Fail, name, format!("cannot list pods: {e}")),
    };
    let ours = env!("CARGO_PKG_VERSION");
    let mut total = 0;
    let mut other: Vec<String> = Vec::new();
    for pod in &pods {
        let Some(version) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_ANNOTATION))
        else {
            continue;
        };
        total += 1;
        if version != ours {
            other.push(format!(
                "{}/{} ({version})",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if other.is_empty() {
        check(
            Status::Ok,
            name,
            format!("{total} injected pods, all at {ours}"),
        )
    } else {
        check(
            Status::Warn,
            name,
            format!(
                "{} of {total} injected pods are not at {ours}: {}",
                other.len(),
                other.join(", ")
            ),
        )
    }
}
