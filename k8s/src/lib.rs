//! ward-k8s: ward on Kubernetes. [`crd`]: the custom resources, generated from the policy
//! model; [`install`]: the manifests `ward install` prints and `deploy/base` holds.

pub mod crd;
pub mod install;
