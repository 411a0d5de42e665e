//! # The bootstrap policy (mirrors `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`)
//!
//! A new cluster already has roles: kube-apiserver creates them at every start (its
//! `rbac/bootstrap-roles` post-start hook), labelled `kubernetes.io/bootstrapping:
//! rbac-defaults`. kulisse creates the same ones when they are missing:
//!
//! - the user-facing roles `cluster-admin`, `admin`, `edit`, `view` (the last three
//!   aggregate the `system:aggregate-to-*` roles, as upstream);
//! - `system:discovery`, `system:basic-user`, `system:public-info-viewer` for everyone;
//! - one role per component: `system:kube-scheduler`, `system:kube-controller-manager`,
//!   `system:node-proxier` (kube-proxy), `system:node` (kept, but bound to nobody: kubelets
//!   are authorized by the Node authorizer, as upstream since 1.8);
//! - the `system:controller:*` roles of the controllers kulisse runs.
//!
//! What differs from upstream, on purpose:
//! - the rule lists are trimmed to the API groups kulisse serves (no batch, policy,
//!   storage, networking, autoscaling, certificates, resource, ...);
//! - upstream's controller manager runs each controller as its own service account
//!   (`--use-service-account-credentials`); kulisse's runs them all as
//!   `system:kube-controller-manager`, so the `system:controller:*` roles are bound to that
//!   user;
//! - kube-proxy in kulisse keeps its rule table in a ConfigMap in `kube-system` (to teach
//!   what it programmed), so `system:node-proxier` is joined by the kulisse-only
//!   `kulisse:node-proxier-rules`, bound to `system:kube-proxy`;
//! - roles are created when missing, never reconciled (upstream adds missing rules back at
//!   every start unless `rbac.authorization.kubernetes.io/autoupdate` is `false`).

use serde_json::{Value, json};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
const CORE: &str = "";
const APPS: &str = "apps";

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

fn named(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

/// `eventsRule()`: create, update and patch events in both event groups.
fn events() -> Value {
    rule(&["create", "update", "patch"], &[CORE, "events.k8s.io"], &["events"])
}

fn metadata(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l = serde_json::Map::new();
    l.insert("kubernetes.io/bootstrapping".into(), "rbac-defaults".into());
    for (k, v) in labels {
        l.insert((*k).into(), (*v).into());
    }
    json!({"name": name, "labels": l, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": metadata(name, labels), "rules": rules})
}

fn aggregated(name: &str, labels: &[(&str, &str)], to: &str, rules: Vec<Value>) -> Value {
    let mut role = cluster_role(name, labels, rules);
    role["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{to}"): "true"}}]});
    role
}

/// A ClusterRoleBinding of `role` to subjects given as `("User"|"Group", name)`.
fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": n}))
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
           "metadata": metadata(name, &[]),
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

/// The rules of `system:node` (upstream's `NodeRules()`, trimmed to what kulisse serves).
/// The Node authorizer allows what they allow, with its own limits per resource.
pub fn node_rules() -> Vec<Value> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[CORE], &["services"]),
        rule(&["create", "get", "list", "watch"], &[CORE], &["nodes"]),
        rule(&["update", "patch"], &[CORE], &["nodes/status"]),
        rule(&["update", "patch"], &[CORE], &["nodes"]),
        rule(&["create", "update", "patch"], &[CORE], &["events"]),
        rule(&["create", "delete"], &[CORE], &["pods"]),
        rule(&["update", "patch"], &[CORE], &["pods/status"]),
        rule(&["create"], &[CORE], &["pods/eviction"]),
        rule(READ, &[CORE], &["secrets", "configmaps"]),
        rule(&["get"], &[CORE], &["endpoints"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
        ),
        rule(&["create"], &[CORE], &["serviceaccounts/token"]),
    ]
}

/// The labels by which `admin`, `edit` and `view` gather the rules of other ClusterRoles.
const TO_ADMIN: [(&str, &str); 1] = [("rbac.authorization.k8s.io/aggregate-to-admin", "true")];
const TO_EDIT: [(&str, &str); 1] = [("rbac.authorization.k8s.io/aggregate-to-edit", "true")];
const TO_VIEW: [(&str, &str); 1] = [("rbac.authorization.k8s.io/aggregate-to-view", "true")];

/// The ClusterRoles kulisse creates at start: discovery, the user-facing roles, the
/// components' roles and the controllers' roles.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = discovery_roles();
    roles.extend(user_facing_roles());
    roles.extend(component_roles());
    roles.extend(controller_roles());
    roles
}

/// `cluster-admin` and the roles everyone gets: discovery, self-reviews, public info.
fn discovery_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
    ]
}

/// `admin`, `edit` and `view`, aggregated from the `system:aggregate-to-*` roles.
fn user_facing_roles() -> Vec<Value> {
    let mut roles = vec![
        aggregated("admin", &[], "admin", vec![]),
        aggregated("edit", &TO_ADMIN, "edit", vec![]),
        aggregated("view", &TO_EDIT, "view", vec![]),
    ];
    roles.extend(aggregated_rules());
    roles
}

/// The `system:aggregate-to-*` roles whose rules `admin`, `edit` and `view` gather.
fn aggregated_rules() -> Vec<Value> {
    vec![
        cluster_role(
            "system:aggregate-to-admin",
            &TO_ADMIN,
            vec![
                rule(&["create"], &["authorization.k8s.io"], &["localsubjectaccessreviews"]),
                rule(READ_WRITE, &["rbac.authorization.k8s.io"], &["roles", "rolebindings"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &TO_EDIT,
            vec![
                rule(READ, &[CORE], &["secrets"]),
                rule(&["impersonate"], &[CORE], &["serviceaccounts"]),
                rule(WRITE, &[CORE], &["pods"]),
                rule(&["create"], &[CORE], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[CORE],
                    &["serviceaccounts", "services", "configmaps", "secrets", "events"],
                ),
                rule(&["create"], &[CORE], &["serviceaccounts/token"]),
                rule(
                    WRITE,
                    &[APPS],
                    &[
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(READ_WRITE, &["coordination.k8s.io"], &["leases"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &TO_VIEW,
            vec![
                rule(
                    READ,
                    &[CORE],
                    &[
                        "pods",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    &[CORE],
                    &["events", "pods/status", "namespaces/status", "pods/log"],
                ),
                rule(READ, &[CORE], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &[APPS],
                    &[
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                ),
            ],
        ),
    ]
}

/// The roles of the system components: kubelets, kube-proxy, the scheduler, the
/// controller manager.
fn component_roles() -> Vec<Value> {
    vec![
        cluster_role("system:node", &[], node_rules()),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[CORE], &["services", "endpoints"]),
                rule(READ, &[CORE], &["nodes"]),
                events(),
                rule(&["list", "watch"], &["discovery.k8s.io"], &["endpointslices"]),
            ],
        ),
        cluster_role(
            "kulisse:node-proxier-rules",
            &[],
            vec![
                rule(&["create"], &[CORE], &["configmaps"]),
                rule(&["get", "update", "patch"], &[CORE], &["configmaps"]),
            ],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                ),
                rule(READ, &[CORE], &["nodes"]),
                rule(&["get", "list", "watch", "delete"], &[CORE], &["pods"]),
                rule(&["create"], &[CORE], &["pods/binding", "bindings"]),
                rule(&["patch", "update"], &[CORE], &["pods/status"]),
                rule(READ, &[CORE], &["services", "replicationcontrollers"]),
                rule(READ, &[APPS, "extensions"], &["replicasets"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(READ, &[CORE], &["namespaces"]),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                events(),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                named(
                    &["get", "update"],
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], &[CORE], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[CORE], &["secrets"]),
                rule(
                    &["get"],
                    &[CORE],
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                rule(&["update"], &[CORE], &["secrets", "serviceaccounts"]),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(&["create"], &["authorization.k8s.io"], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[CORE], &["serviceaccounts/token"]),
            ],
        ),
    ]
}

/// The `system:controller:*` roles of the controllers kulisse runs (upstream's
/// `controller_policy.go`, trimmed to the kulisse groups).
fn controller_roles() -> Vec<Value> {
    let mut roles = workload_controller_roles();
    roles.extend(infra_controller_roles());
    roles
}

/// The Deployment and ReplicaSet controllers' roles.
fn workload_controller_roles() -> Vec<Value> {
    let c = |name: &str, rules: Vec<Value>| cluster_role(&format!("system:controller:{name}"), &[], rules);
    vec![
        c(
            "deployment-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &["extensions", APPS],
                    &["deployments"],
                ),
                rule(&["update"], &["extensions", APPS], &["deployments/status"]),
                rule(&["update"], &["extensions", APPS], &["deployments/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &[APPS, "extensions"],
                    &["replicasets"],
                ),
                rule(&["get", "list", "watch", "update"], &[CORE], &["pods"]),
                events(),
            ],
        ),
        c(
            "replicaset-controller",
            vec![
                rule(
                    &["get", "list", "watch", "update"],
                    &[APPS, "extensions"],
                    &["replicasets"],
                ),
                rule(&["update"], &[APPS, "extensions"], &["replicasets/status"]),
                rule(&["update"], &[APPS, "extensions"], &["replicasets/finalizers"]),
                rule(&["list", "watch", "patch", "create", "delete"], &[CORE], &["pods"]),
                events(),
            ],
        ),
    ]
}

/// The roles of the endpoints, garbage-collector, namespace and node controllers.
fn infra_controller_roles() -> Vec<Value> {
    let c = |name: &str, rules: Vec<Value>| cluster_role(&format!("system:controller:{name}"), &[], rules);
    vec![
        c(
            "endpoint-controller",
            vec![
                rule(&["get", "list", "watch"], &[CORE], &["services", "pods"]),
                rule(&["get", "list", "create", "update", "delete"], &[CORE], &["endpoints"]),
                rule(&["create"], &[CORE], &["endpoints/restricted"]),
                events(),
            ],
        ),
        c(
            "endpointslice-controller",
            vec![
                rule(&["get", "list", "watch"], &[CORE], &["services", "pods", "nodes"]),
                rule(&["update"], &[CORE], &["services/finalizers"]),
                rule(
                    &["get", "list", "create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                events(),
            ],
        ),
        c(
            "generic-garbage-collector",
            vec![
                rule(&["get", "list", "watch", "patch", "update", "delete"], &["*"], &["*"]),
                events(),
            ],
        ),
        c(
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[CORE], &["namespaces"]),
                rule(&["update"], &[CORE], &["namespaces/finalize", "namespaces/status"]),
                rule(&["get", "list", "delete", "deletecollection"], &["*"], &["*"]),
            ],
        ),
        c(
            "node-controller",
            vec![
                rule(&["get", "list", "update", "delete", "patch"], &[CORE], &["nodes"]),
                rule(&["patch", "update"], &[CORE], &["nodes/status"]),
                rule(&["patch", "update"], &[CORE], &["pods/status"]),
                rule(&["list", "delete"], &[CORE], &["pods"]),
                rule(&["get"], &[CORE], &["pods"]),
                events(),
            ],
        ),
    ]
}

/// The names of the controller roles (bound to `system:kube-controller-manager`).
const CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "endpoint-controller",
    "endpointslice-controller",
    "generic-garbage-collector",
    "namespace-controller",
    "node-controller",
];

/// The RoleBindings kulisse creates at start: kube-proxy may write its rule tables, the
/// ConfigMaps in `kube-system` (a kulisse-only role, see the module doc).
pub fn role_bindings() -> Vec<Value> {
    let mut b = binding(
        "kulisse:node-proxier-rules",
        "kulisse:node-proxier-rules",
        &[("User", "system:kube-proxy")],
    );
    b["kind"] = "RoleBinding".into();
    b["metadata"]["namespace"] = "kube-system".into();
    vec![b]
}

/// The ClusterRoleBindings kulisse creates at start.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = vec![
        binding("cluster-admin", "cluster-admin", &[("Group", "system:masters")]),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[("Group", "system:authenticated"), ("Group", "system:unauthenticated")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        // Kept with no subjects, as upstream: the Node authorizer authorizes kubelets.
        binding("system:node", "system:node", &[]),
    ];
    for c in CONTROLLERS {
        let name = format!("system:controller:{c}");
        bindings.push(binding(&name, &name, &[("User", "system:kube-controller-manager")]));
    }
    bindings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_policy_is_valid_and_every_binding_names_a_role() {
        let crs = crate::objects::by_gvk("rbac.authorization.k8s.io/v1", "ClusterRole").unwrap();
        let crbs = crate::objects::by_gvk("rbac.authorization.k8s.io/v1", "ClusterRoleBinding").unwrap();
        let roles = cluster_roles();
        for r in &roles {
            crate::objects::validation::validate(crs, r).unwrap();
        }
        for b in cluster_role_bindings() {
            crate::objects::validation::validate(crbs, &b).unwrap();
            let name = b["roleRef"]["name"].as_str().unwrap();
            assert!(roles.iter().any(|r| r["metadata"]["name"] == name), "{name}");
        }
        let rbs = crate::objects::by_gvk("rbac.authorization.k8s.io/v1", "RoleBinding").unwrap();
        for b in role_bindings() {
            crate::objects::validation::validate(rbs, &b).unwrap();
        }
    }
}
