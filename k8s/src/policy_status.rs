//! The policy objects' status, written by the leader replica: an `Accepted` condition for
//! each AuthorizationPolicy and MeshPolicy generation, True when the control plane reads
//! it (so it is in force), False with the field and reason when it does not (an object
//! stored before a stricter CRD, or a MeshPolicy that is not the mesh's), and
//! `acceptedGeneration`: the generation in force meanwhile. `kubectl get wap` shows it.

use std::time::SystemTime;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use ward_policy::ROOT_NAMESPACE;
use ward_policy::model::{
    AuthorizationPolicy, AuthorizationSpec, MeshPolicy, MeshSpec, PolicyCondition, PolicyStatus,
};
use ward_runtime::Drain;

use crate::policy::{MESH_POLICY, read};

/// The condition's type.
pub const ACCEPTED: &str = "Accepted";

/// Writes statuses while this replica leads, until the drain begins.
pub async fn write(client: kube::Client, mut leader: watch::Receiver<bool>, drain: Drain) {
    let authorization = ApiResource::erase::<AuthorizationPolicy>(&());
    let mesh = ApiResource::erase::<MeshPolicy>(&());
    loop {
        tokio::select! {
            () = drain.signaled() => return,
            led = leader.wait_for(|leads| *leads) => if led.is_err() { return },
        }
        let config = watcher::Config::default();
        let start = || {
            let all = Api::<DynamicObject>::all_with(client.clone(), &authorization);
            let in_root =
                Api::<DynamicObject>::namespaced_with(client.clone(), ROOT_NAMESPACE, &mesh);
            (
                Box::pin(watcher(all, config.clone()).default_backoff()),
                Box::pin(watcher(in_root, config.clone()).default_backoff()),
            )
        };
        let (mut policies, mut meshes) = start();
        let mut crds = crate::crd_changes::follow(client.clone());
        loop {
            let (object, resource, judged) = tokio::select! {
                () = drain.signaled() => return,
                Ok(()) = crds.changed() => {
                    (policies, meshes) = start();
                    continue;
                }
                changed = leader.changed() => {
                    if changed.is_err() { return }
                    if !*leader.borrow() { break }
                    continue;
                }
                Some(event) = policies.next() => match applied(event) {
                    Some(o) => { let j = judge_policy(&o); (o, &authorization, j) }
                    None => continue,
                },
                Some(event) = meshes.next() => match applied(event) {
                    Some(o) => { let j = judge_mesh(&o); (o, &mesh, j) }
                    None => continue,
                },
            };
            if let Some(status) = next_status(&object, judged, SystemTime::now())
                && let Err(e) = patch(&client, &object, resource, &status).await
            {
                tracing::warn!(target: "ward::policy", object = ?object.metadata.name, error = %e, "cannot write a policy's status");
            }
        }
    }
}

/// The object of an event that (re)states one.
fn applied(event: Result<watcher::Event<DynamicObject>, watcher::Error>) -> Option<DynamicObject> {
    match event {
        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => Some(o),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(target: "ward::policy", error = %e, "policy status watch failed; retrying");
            None
        }
    }
}

/// Whether an AuthorizationPolicy reads: Ok, or (reason, message).
fn judge_policy(object: &DynamicObject) -> Result<(), (&'static str, String)> {
    read::<AuthorizationSpec>(object)
        .map(drop)
        .map_err(|e| ("Invalid", e))
}

fn judge_mesh(object: &DynamicObject) -> Result<(), (&'static str, String)> {
    if object.metadata.name.as_deref() != Some(MESH_POLICY) {
        return Err((
            "Ignored",
            format!(
                "the mesh's MeshPolicy is {ROOT_NAMESPACE}/{MESH_POLICY}; this one is not read"
            ),
        ));
    }
    read::<MeshSpec>(object)
        .map(drop)
        .map_err(|e| ("Invalid", e))
}

/// The status `object` should have, if it differs from what it has.
pub fn next_status(
    object: &DynamicObject,
    judged: Result<(), (&'static str, String)>,
    now: SystemTime,
) -> Option<PolicyStatus> {
    let current: PolicyStatus = object
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let generation = object.metadata.generation;
    let (status, reason, message, accepted_generation) = match judged {
        Ok(()) => (
            "True",
            "Valid",
            format!("in force (generation {})", generation.unwrap_or_default()),
            generation,
        ),
        Err((reason, why)) => {
            let kept = current.accepted_generation;
            let outcome = match kept {
                Some(g) => format!("generation {g} stays in force"),
                None => "it is not in force".to_owned(),
            };
            ("False", reason, format!("{why}; {outcome}"), kept)
        }
    };
    let before = current.conditions.iter().find(|c| c.type_ == ACCEPTED);
    let same = before.is_some_and(|c| {
        c.status == status
            && c.reason == reason
            && c.message == message
            && c.observed_generation == generation
    }) && current.observed_generation == generation
        && current.accepted_generation == accepted_generation;
    if same {
        return None;
    }
    let last_transition_time = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => ward_runtime::time::rfc3339(now),
    };
    Some(PolicyStatus {
        observed_generation: generation,
        accepted_generation,
        conditions: vec![PolicyCondition {
            type_: ACCEPTED.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
    })
}

async fn patch(
    client: &kube::Client,
    object: &DynamicObject,
    resource: &ApiResource,
    status: &PolicyStatus,
) -> Result<(), kube::Error> {
    let (Some(namespace), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
        return Ok(());
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(generation: i64, status: Option<&PolicyStatus>) -> DynamicObject {
        let mut o =
            DynamicObject::new("p", &ApiResource::erase::<AuthorizationPolicy>(&())).within("shop");
        o.metadata.generation = Some(generation);
        if let Some(s) = status {
            o.data["status"] = serde_json::to_value(s).unwrap();
        }
        o
    }

    #[test]
    fn a_bad_generation_names_the_good_one_in_force_and_nothing_is_rewritten_needlessly() {
        let t0 = SystemTime::UNIX_EPOCH;
        let good = next_status(&object(1, None), Ok(()), t0).unwrap();
        assert_eq!(good.accepted_generation, Some(1));
        assert_eq!(good.conditions[0].status, "True");
        assert!(
            next_status(&object(1, Some(&good)), Ok(()), t0).is_none(),
            "unchanged"
        );
        let later = t0 + std::time::Duration::from_secs(60);
        let bad = next_status(
            &object(2, Some(&good)),
            Err(("Invalid", "spec.rules[0]: unknown field `frm`".into())),
            later,
        )
        .unwrap();
        let c = &bad.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
        assert_eq!(
            c.message,
            "spec.rules[0]: unknown field `frm`; generation 1 stays in force"
        );
        assert_eq!(
            (bad.observed_generation, bad.accepted_generation),
            (Some(2), Some(1))
        );
        assert_ne!(
            c.last_transition_time,
            good.conditions[0].last_transition_time
        );
        let new_and_bad = next_status(&object(1, None), Err(("Invalid", "x".into())), t0).unwrap();
        assert!(
            new_and_bad.conditions[0]
                .message
                .ends_with("it is not in force")
        );
    }
}
