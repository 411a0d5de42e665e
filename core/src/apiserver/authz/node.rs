//! # The Node authorizer and NodeRestriction (mirror `plugin/pkg/auth/authorizer/node` and
//! `plugin/pkg/admission/noderestriction`)
//!
//! A kubelet logs in as `system:node:<node>` in the group `system:nodes`. RBAC alone could
//! only say "kubelets may update nodes", which would let a compromised node rewrite every
//! other node and every pod. Kubernetes narrows it in two places, and kulisse does the same:
//!
//! - the **Node authorizer** (before RBAC in the chain) allows what the `system:node` rules
//!   allow ([`super::bootstrap::node_rules`]), but for some resources only what concerns
//!   *this* node: it may read only its own Node (`node 'node-1' cannot read 'node-2', only
//!   its own Node object`), list and watch only the pods with `spec.nodeName=<itself>`, get
//!   a pod only if it is bound to it, touch only its own Lease in `kube-node-lease`, and get
//!   a Secret or ConfigMap only if a pod bound to it uses it;
//! - **NodeRestriction**, an admission check that runs once the body is read, refuses what
//!   the authorizer could not judge from the URL alone: changing another Node
//!   (`node "node-1" is not allowed to modify node "node-2"`), the status or the deletion of
//!   a pod bound elsewhere, creating a pod that is not a mirror pod.
//!
//! Upstream keeps a graph of pods, nodes, secrets, config maps, volumes and service
//! accounts, fed by informers, and walks it for each question. kulisse asks the store
//! instead (is this pod bound to this node? does a pod on this node use this ConfigMap?),
//! which gives the same answers for the kinds it serves, at the price of a read per
//! question. Node label restrictions (`node-restriction.kubernetes.io/`) are not checked.

use serde_json::Value;

use super::{Attributes, Decision, admission_forbidden};
use crate::apiserver::storage::Storage;
use crate::objects::ApiError;

/// The group every kubelet is in.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

/// The node a user is, if it is one: upstream's `NodeIdentity`. `Some("")` for a member of
/// `system:nodes` whose name does not say which node.
pub fn node_identity(a: &Attributes) -> Option<&str> {
    if !a.user.in_group(NODES_GROUP) {
        return None;
    }
    Some(a.user.name.strip_prefix(NODE_USER_PREFIX).unwrap_or(""))
}

/// Does the field selector ask for `field=value` (`=` or `==`)?
fn selects(selector: &str, field: &str, value: &str) -> bool {
    selector.split(',').any(|req| {
        let req = req.trim();
        let (k, v) = match req.split_once("==").or_else(|| req.split_once('=')) {
            Some(kv) => kv,
            None => return false,
        };
        k.trim() == field && v.trim() == value && !k.ends_with('!')
    })
}

fn pod_info() -> &'static crate::objects::ResourceInfo {
    crate::objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind")
}

/// The Node authorizer: allow, or no opinion with upstream's reason.
pub async fn authorize(storage: &Storage, a: &Attributes) -> Result<(Decision, String), ApiError> {
    let Some(node) = node_identity(a) else {
        return Ok((Decision::NoOpinion, String::new()));
    };
    if node.is_empty() {
        return Ok((Decision::NoOpinion, format!("unknown node for user {:?}", a.user.name)));
    }
    let no = |reason: String| Ok((Decision::NoOpinion, reason));
    if a.resource_request && a.api_group.is_empty() {
        match a.resource.as_str() {
            "nodes" => return Ok(authorize_node(node, a)),
            "pods" => return authorize_pod(storage, node, a).await,
            "secrets" | "configmaps" => {
                if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
                    return no("can only read resources of this type".into());
                }
                if !a.subresource.is_empty() {
                    return no("cannot read subresource".into());
                }
                if a.namespace.is_empty() {
                    return no("can only read namespaced object of this type".into());
                }
                if a.name.is_empty() {
                    return no("No Object name found".into());
                }
                return if used_by_pod_on(storage, node, a).await? {
                    Ok((Decision::Allow, String::new()))
                } else {
                    no(format!("no relationship found between node '{node}' and this object"))
                };
            }
            _ => {}
        }
    }
    if a.resource_request && a.api_group == "coordination.k8s.io" && a.resource == "leases" {
        if !matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a node lease".into());
        }
        if a.namespace != "kube-node-lease" {
            return no("can only access leases in the \"kube-node-lease\" system namespace".into());
        }
        if a.verb != "create" && a.name != node {
            return no("can only access node lease with the same name as the requesting node".into());
        }
        return Ok((Decision::Allow, String::new()));
    }
    let rules: Vec<super::rbac::Rule> = super::bootstrap::node_rules()
        .iter()
        .map(super::rbac::Rule::from_json)
        .collect();
    if rules.iter().any(|r| r.allows(a)) {
        return Ok((Decision::Allow, String::new()));
    }
    no(String::new())
}

/// Upstream's `authorizeNode`.
fn authorize_node(node: &str, a: &Attributes) -> (Decision, String) {
    let allow = (Decision::Allow, String::new());
    match (a.subresource.as_str(), a.verb.as_str()) {
        // NodeRestriction limits these to the node's own object.
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => allow,
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                allow
            } else if a.name.is_empty() {
                (
                    Decision::NoOpinion,
                    format!("node '{node}' cannot read all nodes, only its own Node object"),
                )
            } else {
                (
                    Decision::NoOpinion,
                    format!("node '{node}' cannot read '{}', only its own Node object", a.name),
                )
            }
        }
        _ => (Decision::NoOpinion, String::new()),
    }
}

/// Upstream's `authorizePod`.
async fn authorize_pod(storage: &Storage, node: &str, a: &Attributes) -> Result<(Decision, String), ApiError> {
    let allow = Ok((Decision::Allow, String::new()));
    match (a.subresource.as_str(), a.verb.as_str()) {
        ("", "get") => related_pod(storage, node, a).await,
        ("", "list" | "watch") => {
            if selects(&a.field_selector, "spec.nodeName", node) {
                allow
            } else if !a.name.is_empty() {
                related_pod(storage, node, a).await
            } else {
                Ok((
                    Decision::NoOpinion,
                    "can only list/watch pods with spec.nodeName field selector".into(),
                ))
            }
        }
        // NodeRestriction limits these to pods bound to the node (and mirror pods).
        ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => allow,
        _ => Ok((Decision::NoOpinion, String::new())),
    }
}

/// Is the pod `a` names bound to `node`?
async fn related_pod(storage: &Storage, node: &str, a: &Attributes) -> Result<(Decision, String), ApiError> {
    let stored = storage.get(pod_info(), Some(&a.namespace), &a.name).await?;
    let bound = stored
        .as_ref()
        .and_then(|p| p.object.pointer("/spec/nodeName").and_then(Value::as_str))
        == Some(node);
    Ok(if bound {
        (Decision::Allow, String::new())
    } else {
        (
            Decision::NoOpinion,
            format!("no relationship found between node '{node}' and this object"),
        )
    })
}

/// Does a pod bound to `node`, in the request's namespace, use the Secret or ConfigMap
/// the request names (volumes, `env`, `envFrom`, image pull secrets)?
async fn used_by_pod_on(storage: &Storage, node: &str, a: &Attributes) -> Result<bool, ApiError> {
    let pods = storage.list(pod_info(), Some(&a.namespace), None).await?;
    let (ref_key, volume_key) = if a.resource == "secrets" {
        ("secretKeyRef", "secret")
    } else {
        ("configMapKeyRef", "configMap")
    };
    let env_from_key = if a.resource == "secrets" {
        "secretRef"
    } else {
        "configMapRef"
    };
    let volume_name_key = if a.resource == "secrets" { "secretName" } else { "name" };
    let uses = |pod: &Value| -> bool {
        let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
        let list = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let name_is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(a.name.as_str());
        let volumes = list(&spec, "volumes")
            .iter()
            .any(|v| name_is(v.get(volume_key).and_then(|s| s.get(volume_name_key))));
        let pull = a.resource == "secrets" && list(&spec, "imagePullSecrets").iter().any(|s| name_is(s.get("name")));
        let containers = list(&spec, "containers")
            .into_iter()
            .chain(list(&spec, "initContainers"));
        let env = containers.into_iter().any(|c| {
            list(&c, "env")
                .iter()
                .any(|e| name_is(e.pointer(&format!("/valueFrom/{ref_key}/name"))))
                || list(&c, "envFrom")
                    .iter()
                    .any(|e| name_is(e.get(env_from_key).and_then(|r| r.get("name"))))
        });
        volumes || pull || env
    };
    Ok(pods
        .items
        .iter()
        .any(|p| p.object.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && uses(&p.object)))
}

/// The `metadata.name` of a request body (JSON or YAML), or `""`.
fn body_name(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_saphyr::from_slice(body))
        .unwrap_or(Value::Null);
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// NodeRestriction: once the request's body is known, what a node may still not do.
/// `body` is the decoded request body (JSON), for creates.
pub async fn admit(storage: &Storage, a: &Attributes, body: &[u8]) -> Result<(), ApiError> {
    let Some(node) = node_identity(a).filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    if !a.resource_request {
        return Ok(());
    }
    let writes = matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete");
    let body_name = || body_name(body);
    let forbid = |a: &Attributes, name: String, detail: String| {
        let mut target = a.clone();
        target.name = name;
        Err(admission_forbidden(&target, detail))
    };
    match (a.api_group.as_str(), a.resource.as_str(), a.subresource.as_str()) {
        ("", "nodes", _) if writes => {
            let name = if a.verb == "create" {
                body_name()
            } else {
                a.name.clone()
            };
            if name != node {
                return forbid(
                    a,
                    name.clone(),
                    format!("node {node:?} is not allowed to modify node {name:?}"),
                );
            }
        }
        ("", "pods", "") if a.verb == "create" => {
            let name = body_name();
            return forbid(
                a,
                name,
                format!(
                    "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
                ),
            );
        }
        ("", "pods", sub @ ("" | "status"))
            if (sub.is_empty() && a.verb == "delete") || (sub == "status" && writes) =>
        {
            let stored = storage.get(pod_info(), Some(&a.namespace), &a.name).await?;
            let bound_here = stored
                .as_ref()
                .and_then(|p| p.object.pointer("/spec/nodeName").and_then(Value::as_str))
                == Some(node);
            if stored.is_some() && !bound_here {
                let what = if sub.is_empty() {
                    "delete pods"
                } else {
                    "update pod status for pods"
                };
                return forbid(
                    a,
                    a.name.clone(),
                    format!("node {node:?} can only {what} with spec.nodeName set to itself"),
                );
            }
        }
        ("coordination.k8s.io", "leases", "") if a.verb == "create" => {
            let name = body_name();
            if name != node || a.namespace != "kube-node-lease" {
                return forbid(
                    a,
                    name,
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::auth::UserInfo;

    fn node_attrs(verb: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::authenticated("system:node:node-1", [NODES_GROUP.to_string()]),
            verb: verb.into(),
            resource_request: true,
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn a_node_reads_and_writes_only_its_own_node_object() {
        assert_eq!(
            authorize_node("node-1", &node_attrs("get", "nodes", "", "node-1")).0,
            Decision::Allow
        );
        let (d, reason) = authorize_node("node-1", &node_attrs("get", "nodes", "", "node-2"));
        assert_eq!(d, Decision::NoOpinion);
        assert_eq!(reason, "node 'node-1' cannot read 'node-2', only its own Node object");
        let (_, reason) = authorize_node("node-1", &node_attrs("list", "nodes", "", ""));
        assert_eq!(reason, "node 'node-1' cannot read all nodes, only its own Node object");
        assert_eq!(
            authorize_node("node-1", &node_attrs("delete", "nodes", "", "node-1")).0,
            Decision::NoOpinion
        );
        assert_eq!(
            authorize_node("node-1", &node_attrs("patch", "nodes", "status", "node-2")).0,
            Decision::Allow
        );
    }

    #[test]
    fn field_selectors_are_read_as_upstream() {
        assert!(selects("spec.nodeName=node-1", "spec.nodeName", "node-1"));
        assert!(selects(
            "metadata.namespace=x,spec.nodeName==node-1",
            "spec.nodeName",
            "node-1"
        ));
        assert!(!selects("spec.nodeName!=node-1", "spec.nodeName", "node-1"));
        assert!(!selects("spec.nodeName=node-2", "spec.nodeName", "node-1"));
        assert!(!selects("", "spec.nodeName", "node-1"));
    }
}
