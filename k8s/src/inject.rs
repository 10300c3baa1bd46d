//! The sidecar injector: one function, [`inject`], used by the admission webhook and by
//! `ward inject -f`, so what the cluster stores is what `ward inject` prints.
//!
//! A pod gets `ward-init` (an init container that installs the capture rules) and
//! `ward-proxy` as a native sidecar (an init container with `restartPolicy: Always`: it
//! starts, and is ready, before the app's containers, and stops after them, so Jobs
//! finish), the projected service-account token (audience `ward`) it attests with, the
//! trust bundle, its configuration in the environment, probes on the admin port, and
//! resources. Pods say what they want with labels and annotations:
//!
//! - label `ward.dev/inject`: `disabled` opts a pod out (`enabled` opts it in where its
//!   namespace is not);
//! - annotations `ward.dev/exclude-inbound-ports`, `ward.dev/exclude-outbound-ports`
//!   (`PORT,...`), `ward.dev/exclude-outbound-cidrs` (`CIDR,...`), `ward.dev/opaque-ports`
//!   (`PORT,...`), `ward.dev/proxy-cpu-request`, `ward.dev/proxy-memory-request`,
//!   `ward.dev/proxy-cpu-limit`, `ward.dev/proxy-memory-limit` (quantities),
//!   `ward.dev/rewrite-app-probes` (`"false"` keeps the app's probes as they are; by
//!   default they move to the admin port, see [`probes`]), `ward.dev/workload-api`
//!   (`enabled`: the SPIFFE Workload API for the apps, see [`workload_api`]) with
//!   `ward.dev/workload-api-uids`.
//!
//! A pod that already has `ward-proxy` is left alone (never injected twice); a
//! `hostNetwork` pod is refused with the reason (its capture rules would take the node's
//! traffic).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Pod, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::install::names::BUNDLE_CONFIGMAP;
use crate::install::names::{CONTROL_PLANE, GRPC_PORT, INJECT_LABEL};

pub const PROXY: &str = "ward-proxy";
pub const INIT: &str = "ward-init";
/// Set on every injected pod, with the injector's version.
pub const INJECTED_ANNOTATION: &str = "ward.dev/injected";
pub const BUNDLE_KEY: &str = "bundle.pem";
pub const PROXY_UID: i64 = 1337;
pub const ADMIN_PORT: u16 = 15000;
pub const INBOUND_PORT: u16 = 15006;
pub const TOKEN_DIR: &str = "/var/run/secrets/ward";
pub const BUNDLE_DIR: &str = "/var/run/ward/bundle";
/// A projected token lives 10 minutes (the API server's minimum); the kubelet refreshes it
/// at 80% of that.
pub const TOKEN_SECONDS: i64 = 600;

/// What every injection needs to know.
#[derive(Debug, Clone)]
pub struct Injector {
    pub proxy_image: String,
    pub trust_domain: String,
    /// `https://HOST:PORT` of the control plane as pods reach it.
    pub control_plane: String,
}

impl Injector {
    /// The control plane reached through its Service in `namespace`.
    pub fn new(proxy_image: String, trust_domain: String, namespace: &str) -> Self {
        Self {
            proxy_image,
            trust_domain,
            control_plane: format!("https://{CONTROL_PLANE}.{namespace}.svc:{GRPC_PORT}"),
        }
    }
}

/// What [`inject`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Injected {
    /// The pod, with the sidecar.
    Pod(Box<Pod>),
    /// Left as it was, and why.
    Skipped(&'static str),
}

/// Why a pod cannot be injected; said to whoever creates it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error(
        "cannot inject the sidecar into a hostNetwork pod: its capture rules would take the node's traffic; label the pod {INJECT_LABEL}=disabled to run it outside the mesh"
    )]
    HostNetwork,
    #[error("annotation {annotation}: {value:?} {why}")]
    Annotation {
        annotation: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The pod with the sidecar, or why not.
pub fn inject(pod: &Pod, injector: &Injector) -> Result<Injected, InjectError> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels.get(INJECT_LABEL).map(String::as_str) == Some("disabled") {
        return Ok(Injected::Skipped(
            "the pod opted out (ward.dev/inject=disabled)",
        ));
    }
    let Some(spec) = &pod.spec else {
        return Ok(Injected::Skipped("the pod has no spec"));
    };
    if already_injected(spec) {
        return Ok(Injected::Skipped("the pod already has the sidecar"));
    }
    if spec.host_network == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let options = Options::read(&annotations)?;
    let mut pod = pod.clone();
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let probes = if options.rewrite_probes {
        probes::rewrite(spec, &options.exclude_inbound_ports)
    } else {
        BTreeMap::new()
    };
    let mut proxy = proxy_container(injector, &options, &probes);
    if let Some(uids) = workload_api::allowed_uids(&annotations, spec)? {
        workload_api::apply(spec, &mut proxy, &uids);
    }
    let mut init = vec![init_container(injector, &options), proxy];
    init.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(init);
    spec.volumes.get_or_insert_with(Vec::new).extend(volumes());
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED_ANNOTATION.into(), env!("CARGO_PKG_VERSION").into());
    Ok(Injected::Pod(Box::new(pod)))
}

fn already_injected(spec: &PodSpec) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| c.name == PROXY)
}

/// What a pod's annotations ask for, checked.
#[derive(Debug, Default)]
struct Options {
    exclude_inbound_ports: Vec<u16>,
    exclude_outbound_ports: Vec<u16>,
    exclude_outbound_cidrs: Vec<String>,
    opaque_ports: Vec<u16>,
    resources: BTreeMap<&'static str, Quantity>,
    rewrite_probes: bool,
}

const RESOURCE_ANNOTATIONS: [(&str, &str); 4] = [
    ("ward.dev/proxy-cpu-request", "requests.cpu"),
    ("ward.dev/proxy-memory-request", "requests.memory"),
    ("ward.dev/proxy-cpu-limit", "limits.cpu"),
    ("ward.dev/proxy-memory-limit", "limits.memory"),
];

impl Options {
    fn read(annotations: &BTreeMap<String, String>) -> Result<Self, InjectError> {
        let ports = |annotation: &'static str| -> Result<Vec<u16>, InjectError> {
            let Some(value) = annotations.get(annotation) else {
                return Ok(Vec::new());
            };
            value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| p.parse::<u16>().ok().filter(|&p| p != 0))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| InjectError::Annotation {
                    annotation,
                    value: value.clone(),
                    why: "is not a list of ports (1-65535, comma-separated)",
                })
        };
        let cidrs_annotation = "ward.dev/exclude-outbound-cidrs";
        let exclude_outbound_cidrs = match annotations.get(cidrs_annotation) {
            None => Vec::new(),
            Some(value) => value
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| is_cidr(c).then(|| c.to_owned()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| InjectError::Annotation {
                    annotation: cidrs_annotation,
                    value: value.clone(),
                    why: "is not a list of CIDRs (10.0.0.0/8,fd00::/8)",
                })?,
        };
        let mut resources = BTreeMap::new();
        for (annotation, key) in RESOURCE_ANNOTATIONS {
            if let Some(value) = annotations.get(annotation) {
                if !is_quantity(value) {
                    return Err(InjectError::Annotation {
                        annotation,
                        value: value.clone(),
                        why: "is not a quantity (e.g. 100m, 64Mi)",
                    });
                }
                resources.insert(key, Quantity(value.clone()));
            }
        }
        let rewrite_probes = match annotations
            .get(probes::REWRITE_ANNOTATION)
            .map(String::as_str)
        {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(InjectError::Annotation {
                    annotation: probes::REWRITE_ANNOTATION,
                    value: other.to_owned(),
                    why: "is not \"true\" or \"false\"",
                });
            }
        };
        Ok(Self {
            rewrite_probes,
            exclude_inbound_ports: ports("ward.dev/exclude-inbound-ports")?,
            exclude_outbound_ports: ports("ward.dev/exclude-outbound-ports")?,
            exclude_outbound_cidrs,
            opaque_ports: ports("ward.dev/opaque-ports")?,
            resources,
        })
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// A Kubernetes quantity, in the forms people write: digits with an optional fraction and
/// one suffix (m, k, M, G, T, Ki, Mi, Gi, Ti).
fn is_quantity(s: &str) -> bool {
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    !number.is_empty()
        && number.bytes().filter(|&b| b == b'.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit())
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

fn list<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn init_container(injector: &Injector, options: &Options) -> Container {
    let mut args: Vec<String> = ["init", "--proxy-uid", "1337", "--proxy-gid", "1337"]
        .map(String::from)
        .to_vec();
    let mut flag = |name: &str, value: String| {
        if !value.is_empty() {
            args.push(format!("--{name}={value}"));
        }
    };
    flag(
        "exclude-inbound-ports",
        list(&options.exclude_inbound_ports),
    );
    flag(
        "exclude-outbound-ports",
        list(&options.exclude_outbound_ports),
    );
    flag(
        "exclude-outbound-cidrs",
        list(&options.exclude_outbound_cidrs),
    );
    flag("opaque-ports", list(&options.opaque_ports));
    Container {
        name: INIT.into(),
        image: Some(injector.proxy_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["ward-proxy".into()]),
        args: Some(args),
        resources: Some(resources(&[
            ("requests.cpu", "10m"),
            ("requests.memory", "16Mi"),
            ("limits.memory", "64Mi"),
        ])),
        security_context: Some(SecurityContext {
            // Writing the pod's netfilter rules needs NET_ADMIN (and NET_RAW for
            // iptables); nothing else, and only in this short-lived container.
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn resources(pairs: &[(&str, &str)]) -> ResourceRequirements {
    let mut requirements = ResourceRequirements::default();
    for (key, value) in pairs {
        let (kind, resource) = key.split_once('.').expect("kind.resource");
        let map = match kind {
            "requests" => requirements.requests.get_or_insert_with(BTreeMap::new),
            _ => requirements.limits.get_or_insert_with(BTreeMap::new),
        };
        map.insert(resource.to_owned(), Quantity((*value).to_owned()));
    }
    requirements
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn admin_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(ADMIN_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn proxy_container(
    injector: &Injector,
    options: &Options,
    probes: &BTreeMap<String, serde_json::Value>,
) -> Container {
    let mut resources = resources(&[
        ("requests.cpu", "100m"),
        ("requests.memory", "32Mi"),
        ("limits.memory", "256Mi"),
    ]);
    for (key, quantity) in &options.resources {
        let (kind, resource) = key.split_once('.').expect("kind.resource");
        let map = match kind {
            "requests" => resources.requests.get_or_insert_with(BTreeMap::new),
            _ => resources.limits.get_or_insert_with(BTreeMap::new),
        };
        map.insert(resource.to_owned(), quantity.clone());
    }
    let mut environment = vec![
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        env("WARD_TRUST_DOMAIN", injector.trust_domain.clone()),
        env("WARD_ADMIN", format!("0.0.0.0:{ADMIN_PORT}")),
        env(
            "WARD_IDENTITY_CONTROL_PLANE",
            injector.control_plane.clone(),
        ),
        env("WARD_IDENTITY_TOKEN_FILE", format!("{TOKEN_DIR}/token")),
        env("WARD_IDENTITY_RENEW_WITH_TOKEN", "true"),
        env("WARD_IDENTITY_BUNDLE", format!("{BUNDLE_DIR}/{BUNDLE_KEY}")),
        env("WARD_CAPTURE_INBOUND", format!("0.0.0.0:{INBOUND_PORT}")),
    ];
    if !probes.is_empty() {
        let json = serde_json::to_string(probes).unwrap_or_default();
        environment.push(env(probes::PROBES_ENV, json));
    }
    Container {
        name: PROXY.into(),
        image: Some(injector.proxy_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["ward-proxy".into()]),
        args: Some(vec!["sidecar".into(), "--log-format".into(), "json".into()]),
        // A native sidecar: started (and ready, by its startup probe) before the app's
        // containers, stopped after them.
        restart_policy: Some("Always".into()),
        env: Some(environment),
        ports: Some(vec![ContainerPort {
            name: Some("ward-admin".into()),
            container_port: i32::from(ADMIN_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(admin_probe("/ready", 1, 120)),
        readiness_probe: Some(admin_probe("/ready", 5, 3)),
        liveness_probe: Some(admin_probe("/live", 10, 3)),
        resources: Some(resources),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "ward-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "ward-bundle".into(),
                mount_path: BUNDLE_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn volumes() -> Vec<Volume> {
    vec![
        Volume {
            name: "ward-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(crate::attest::AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "ward-bundle".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: BUNDLE_CONFIGMAP.into(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

mod manifests;
pub mod probes;
pub mod workload_api;

pub use manifests::inject_manifests;

#[cfg(test)]
mod tests;
