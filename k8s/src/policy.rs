//! Policy from the cluster: every `AuthorizationPolicy`, and the `MeshPolicy` named
//! `default` in `ward-system`, listed at start and then watched. Each object is read with
//! the same strict deserializers as a policy file; one that does not read is logged with
//! its namespace, name and field, and its last good version (if any) stays in force, so a
//! bad edit never opens or closes anything by itself. An unreachable API server changes
//! nothing: the watch retries with backoff and the last good set stays.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_stream::StreamExt;
use ward_control_plane::policy_source::PolicySource;
use ward_policy::compile::Policy;
use ward_policy::model::{AuthorizationPolicy, AuthorizationSpec, MeshPolicy, MeshSpec};
use ward_policy::{PolicyError, PolicyErrors, PolicySet, ROOT_NAMESPACE};

/// The name of the one MeshPolicy.
pub const MESH_POLICY: &str = "default";

/// The policy CRDs of one cluster.
pub struct CrdPolicies {
    client: kube::Client,
}

impl CrdPolicies {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    fn authorization(&self) -> Api<DynamicObject> {
        Api::all_with(
            self.client.clone(),
            &ApiResource::erase::<AuthorizationPolicy>(&()),
        )
    }

    fn mesh(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            ROOT_NAMESPACE,
            &ApiResource::erase::<MeshPolicy>(&()),
        )
    }
}

/// `namespace/name`
type Key = (String, String);

/// What the watch has seen, and the last good reading of each object.
#[derive(Default)]
struct Objects {
    policies: BTreeMap<Key, Policy>,
    mesh: Option<MeshSpec>,
}

impl Objects {
    /// Reads one AuthorizationPolicy; a bad one keeps its last good reading.
    fn apply_policy(&mut self, object: &DynamicObject) {
        let Some(key) = key(object) else { return };
        match read::<AuthorizationSpec>(object) {
            Ok(spec) => {
                let origin = PathBuf::from(format!("authorizationpolicies/{}/{}", key.0, key.1));
                let policy = Policy::from_spec(key.0.clone(), key.1.clone(), spec, origin);
                self.policies.insert(key, policy);
            }
            Err(reason) => refused(
                "AuthorizationPolicy",
                &key,
                &reason,
                self.policies.contains_key(&key),
            ),
        }
    }

    fn delete_policy(&mut self, object: &DynamicObject) {
        if let Some(key) = key(object) {
            self.policies.remove(&key);
        }
    }

    fn apply_mesh(&mut self, object: &DynamicObject) {
        let Some(key) = key(object) else { return };
        if key.1 != MESH_POLICY {
            tracing::warn!(target: "ward::policy", namespace = %key.0, name = %key.1,
                "MeshPolicy ignored: the mesh's is {ROOT_NAMESPACE}/{MESH_POLICY}");
            return;
        }
        match read::<MeshSpec>(object) {
            Ok(spec) => self.mesh = Some(spec),
            Err(reason) => refused("MeshPolicy", &key, &reason, self.mesh.is_some()),
        }
    }

    fn delete_mesh(&mut self, object: &DynamicObject) {
        if key(object).is_some_and(|k| k.1 == MESH_POLICY) {
            self.mesh = None;
        }
    }

    fn set(&self) -> PolicySet {
        let mesh = self.mesh.as_ref();
        PolicySet::new(
            self.policies.values().cloned().collect(),
            mesh.map(|m| m.default).unwrap_or_default(),
        )
        .with_outbound(mesh.map(|m| m.outbound_traffic_policy).unwrap_or_default())
        .with_gateways(
            mesh.map(|m| m.gateways.iter().map(|g| g.0.clone()).collect())
                .unwrap_or_default(),
        )
    }
}

fn key(object: &DynamicObject) -> Option<Key> {
    Some((
        object.metadata.namespace.clone()?,
        object.metadata.name.clone()?,
    ))
}

/// The object's `spec` read strictly, or `field: reason`.
pub(crate) fn read<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<T, String> {
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        format!("{field}: {}", e.into_inner())
    })
}

fn refused(kind: &str, key: &Key, reason: &str, kept: bool) {
    let outcome = if kept {
        "its last good version stays in force"
    } else {
        "it is not in force"
    };
    tracing::error!(target: "ward::policy", namespace = %key.0, name = %key.1,
        "{kind} {}/{} refused: {reason}; {outcome}", key.0, key.1);
}

fn unavailable(what: &str, e: &kube::Error) -> PolicyErrors {
    PolicyErrors(vec![PolicyError {
        file: PathBuf::from(what),
        line: 0,
        column: 0,
        reason: format!("listing from the Kubernetes API: {e}"),
    }])
}

impl PolicySource for CrdPolicies {
    async fn load(&self) -> Result<PolicySet, PolicyErrors> {
        let mut objects = Objects::default();
        let listed = self
            .authorization()
            .list(&ListParams::default())
            .await
            .map_err(|e| unavailable("authorizationpolicies.ward.dev", &e))?;
        for object in &listed.items {
            objects.apply_policy(object);
        }
        let meshes = self
            .mesh()
            .list(&ListParams::default())
            .await
            .map_err(|e| unavailable("meshpolicies.ward.dev", &e))?;
        for object in &meshes.items {
            objects.apply_mesh(object);
        }
        Ok(objects.set())
    }

    async fn follow(
        self,
        mut apply: impl FnMut(PolicySet) + Send + 'static,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let config = watcher::Config::default();
        let start = || {
            (
                Box::pin(watcher(self.authorization(), config.clone()).default_backoff()),
                Box::pin(watcher(self.mesh(), config.clone()).default_backoff()),
            )
        };
        let (mut policies, mut meshes) = start();
        let mut crds = crate::crd_changes::follow(self.client.clone());
        let mut stop = std::pin::pin!(stop);
        let mut objects = Objects::default();
        // Objects listed since the last (re)start of each watch, put in force together
        // when the list is complete.
        let (mut listing_policies, mut listing_mesh) = (None::<Objects>, None::<Objects>);
        loop {
            let changed = tokio::select! {
                () = &mut stop => return,
                Ok(()) = crds.changed() => {
                    // A relist follows: what reads stays, what no longer does keeps its
                    // last good version.
                    (policies, meshes) = start();
                    false
                }
                Some(event) = policies.next() => match event {
                    Ok(event) => on_event::<Authorization>(event, &mut objects, &mut listing_policies),
                    Err(e) => { watch_failed("AuthorizationPolicy", &e); false }
                },
                Some(event) = meshes.next() => match event {
                    Ok(event) => on_event::<Mesh>(event, &mut objects, &mut listing_mesh),
                    Err(e) => { watch_failed("MeshPolicy", &e); false }
                },
            };
            if changed {
                apply(objects.set());
            }
        }
    }
}

/// One kind of policy object as the watch sees it.
trait Kind {
    /// Before a relisted object is read: carries its earlier good version into `list`.
    fn carry_over(objects: &Objects, list: &mut Objects, object: &DynamicObject);
    fn apply(objects: &mut Objects, object: &DynamicObject);
    fn delete(objects: &mut Objects, object: &DynamicObject);
    /// Puts a complete relist in force.
    fn replace(objects: &mut Objects, list: Objects);
}

struct Authorization;
struct Mesh;

impl Kind for Authorization {
    fn carry_over(objects: &Objects, list: &mut Objects, object: &DynamicObject) {
        if let Some(key) = key(object)
            && let Some(good) = objects.policies.get(&key)
        {
            list.policies.insert(key, good.clone());
        }
    }
    fn apply(objects: &mut Objects, object: &DynamicObject) {
        objects.apply_policy(object);
    }
    fn delete(objects: &mut Objects, object: &DynamicObject) {
        objects.delete_policy(object);
    }
    fn replace(objects: &mut Objects, list: Objects) {
        objects.policies = list.policies;
    }
}

impl Kind for Mesh {
    fn carry_over(objects: &Objects, list: &mut Objects, object: &DynamicObject) {
        if key(object).is_some_and(|k| k.1 == MESH_POLICY) {
            list.mesh.clone_from(&objects.mesh);
        }
    }
    fn apply(objects: &mut Objects, object: &DynamicObject) {
        objects.apply_mesh(object);
    }
    fn delete(objects: &mut Objects, object: &DynamicObject) {
        objects.delete_mesh(object);
    }
    fn replace(objects: &mut Objects, list: Objects) {
        objects.mesh = list.mesh;
    }
}

/// Applies one watch event of kind `K`; true when the set in force changed. A relist is
/// gathered in `listing` and put in force whole when complete; an object that fails to
/// read keeps its earlier good version across it.
fn on_event<K: Kind>(
    event: watcher::Event<DynamicObject>,
    objects: &mut Objects,
    listing: &mut Option<Objects>,
) -> bool {
    match event {
        watcher::Event::Init => {
            *listing = Some(Objects::default());
            false
        }
        watcher::Event::InitApply(object) => {
            let list = listing.get_or_insert_with(Objects::default);
            K::carry_over(objects, list, &object);
            K::apply(list, &object);
            false
        }
        watcher::Event::InitDone => {
            if let Some(list) = listing.take() {
                K::replace(objects, list);
            }
            true
        }
        watcher::Event::Apply(object) => {
            K::apply(objects, &object);
            true
        }
        watcher::Event::Delete(object) => {
            K::delete(objects, &object);
            true
        }
    }
}

fn watch_failed(kind: &str, e: &watcher::Error) {
    tracing::warn!(target: "ward::policy", error = %e,
        "watching {kind} objects failed; retrying, the last good policy stays in force");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "ward.dev/v1alpha1", "kind": kind,
            "metadata": { "name": name, "namespace": ns },
            "spec": spec,
        }))
        .unwrap()
    }

    fn allow(principal: &str) -> serde_json::Value {
        json!({ "action": "ALLOW", "rules": [{ "from": [{ "principals": [principal] }] }] })
    }

    fn principals(objects: &Objects) -> Vec<String> {
        objects
            .policies
            .values()
            .flat_map(|p| p.rules.iter().flat_map(|r| r.from.iter()))
            .flat_map(|s| s.principals.iter().map(ToString::to_string))
            .collect()
    }

    #[test]
    fn a_bad_edit_keeps_the_last_good_version_and_a_bad_new_object_is_not_in_force() {
        let mut objects = Objects::default();
        let good = "spiffe://cluster.local/ns/web/sa/frontend";
        // Passes the CRD's schema, not the SPIFFE ID rules (upper-case trust domain).
        let bad = "spiffe://Cluster.local/ns/web/sa/frontend";
        let mut listing = None;
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(object("AuthorizationPolicy", "bank", "a", allow(good))),
            watcher::Event::InitApply(object("AuthorizationPolicy", "bank", "b", allow(bad))),
            watcher::Event::InitDone,
        ] {
            on_event::<Authorization>(event, &mut objects, &mut listing);
        }
        assert_eq!(
            principals(&objects),
            [good],
            "the bad new object is not in force"
        );
        on_event::<Authorization>(
            watcher::Event::Apply(object("AuthorizationPolicy", "bank", "a", allow(bad))),
            &mut objects,
            &mut listing,
        );
        assert_eq!(principals(&objects), [good], "the bad edit changed nothing");
        // A relist (after a lost watch) keeps it too, and drops what was deleted meanwhile.
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(object("AuthorizationPolicy", "bank", "a", allow(bad))),
            watcher::Event::InitDone,
        ] {
            on_event::<Authorization>(event, &mut objects, &mut listing);
        }
        assert_eq!(principals(&objects), [good]);
        on_event::<Authorization>(
            watcher::Event::Delete(object("AuthorizationPolicy", "bank", "a", allow(bad))),
            &mut objects,
            &mut listing,
        );
        assert!(objects.policies.is_empty());
    }

    #[test]
    fn only_the_default_mesh_policy_counts_and_a_bad_one_keeps_the_last_good() {
        let mut objects = Objects::default();
        let mut listing = None;
        let mesh = |name: &str, default: &str| {
            object(
                "MeshPolicy",
                ROOT_NAMESPACE,
                name,
                json!({ "default": default }),
            )
        };
        on_event::<Mesh>(
            watcher::Event::Apply(mesh("other", "allow")),
            &mut objects,
            &mut listing,
        );
        assert!(objects.mesh.is_none(), "only {MESH_POLICY} counts");
        on_event::<Mesh>(
            watcher::Event::Apply(mesh(MESH_POLICY, "allow-authenticated")),
            &mut objects,
            &mut listing,
        );
        assert_eq!(
            objects.set().mesh_default(),
            ward_policy::MeshDefault::AllowAuthenticated
        );
        on_event::<Mesh>(
            watcher::Event::Apply(mesh(MESH_POLICY, "maybe")),
            &mut objects,
            &mut listing,
        );
        assert_eq!(
            objects.set().mesh_default(),
            ward_policy::MeshDefault::AllowAuthenticated
        );
        on_event::<Mesh>(
            watcher::Event::Delete(mesh(MESH_POLICY, "deny")),
            &mut objects,
            &mut listing,
        );
        assert_eq!(objects.set().mesh_default(), ward_policy::MeshDefault::Deny);
    }

    #[test]
    fn refusals_name_the_field() {
        let bad = object(
            "AuthorizationPolicy",
            "bank",
            "a",
            json!({ "action": "ALLOW", "rules": [{ "to": [{ "methods": ["get"] }] }] }),
        );
        let err = read::<AuthorizationSpec>(&bad).unwrap_err();
        assert!(err.starts_with("spec.rules[0].to[0].methods[0]: "), "{err}");
    }
}
