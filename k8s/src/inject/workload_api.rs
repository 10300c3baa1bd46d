//! `ward.dev/workload-api: enabled`: the sidecar serves the SPIFFE Workload API to the
//! pod's apps. The socket lives in a memory-backed emptyDir that only this pod's
//! containers mount (so no one outside the pod reaches it); each app container gets it
//! read-only at [`DIR`] with `SPIFFE_ENDPOINT_SOCKET` set; the sidecar lets in the apps'
//! users — `ward.dev/workload-api-uids: "1000,1001"`, or else each app container's
//! `runAsUser` (its own or the pod's). A pod that asks for the API without saying who its
//! apps run as is refused: the kernel's word about the caller's user is the attestation.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, EmptyDirVolumeSource, PodSpec, Volume, VolumeMount};

use super::{InjectError, env};

pub const ANNOTATION: &str = "ward.dev/workload-api";
pub const UIDS_ANNOTATION: &str = "ward.dev/workload-api-uids";
/// Where the socket's directory is mounted, in the sidecar and in the apps.
pub const DIR: &str = "/run/ward/workload-api";
const VOLUME: &str = "ward-workload-api";

/// The users allowed to fetch the identity, when the pod asks for the Workload API.
pub fn allowed_uids(
    annotations: &BTreeMap<String, String>,
    spec: &PodSpec,
) -> Result<Option<Vec<i64>>, InjectError> {
    let bad = |annotation, value: &str, why| InjectError::Annotation {
        annotation,
        value: value.to_owned(),
        why,
    };
    match annotations.get(ANNOTATION).map(String::as_str) {
        None | Some("disabled") => return Ok(None),
        Some("enabled") => {}
        Some(other) => return Err(bad(ANNOTATION, other, "is not enabled or disabled")),
    }
    if let Some(value) = annotations.get(UIDS_ANNOTATION) {
        let uids: Result<BTreeSet<i64>, _> = value
            .split(',')
            .map(|u| u.trim().parse::<u32>().map(i64::from))
            .collect();
        return match uids {
            Ok(uids) if !uids.is_empty() => Ok(Some(uids.into_iter().collect())),
            _ => Err(bad(
                UIDS_ANNOTATION,
                value,
                "is not a comma-separated list of user IDs",
            )),
        };
    }
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut uids = BTreeSet::new();
    for container in &spec.containers {
        let user = container
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user);
        match user {
            Some(uid) => uids.insert(uid),
            None => {
                return Err(bad(
                    ANNOTATION,
                    "enabled",
                    "needs the apps' users: set runAsUser (pod or container) or ward.dev/workload-api-uids",
                ));
            }
        };
    }
    Ok(Some(uids.into_iter().collect()))
}

/// Adds the socket volume, the sidecar's settings and each app container's mount and
/// `SPIFFE_ENDPOINT_SOCKET`.
pub fn apply(spec: &mut PodSpec, proxy: &mut Container, uids: &[i64]) {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    });
    let mount = |read_only| VolumeMount {
        name: VOLUME.into(),
        mount_path: DIR.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    proxy
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(mount(false));
    let list: Vec<String> = uids.iter().map(ToString::to_string).collect();
    proxy.env.get_or_insert_with(Vec::new).extend([
        env("WARD_WORKLOAD_API_SOCKET", format!("{DIR}/socket")),
        env(
            "WARD_WORKLOAD_API_ALLOWED_UIDS",
            format!("[{}]", list.join(", ")),
        ),
    ]);
    for app in &mut spec.containers {
        app.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount(true));
        let vars = app.env.get_or_insert_with(Vec::new);
        if !vars.iter().any(|e| e.name == "SPIFFE_ENDPOINT_SOCKET") {
            vars.push(env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{DIR}/socket"),
            ));
        }
    }
}
