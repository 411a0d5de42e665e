//! # RBAC (mirrors `plugin/pkg/auth/authorizer/rbac`)
//!
//! Role-based access control keeps permissions in four kinds of objects of the API group
//! `rbac.authorization.k8s.io/v1`:
//!
//! - a **Role** (in a namespace) or **ClusterRole** (cluster-wide) is a list of *rules*:
//!   verbs × API groups × resources (optionally only some `resourceNames`), or verbs ×
//!   `nonResourceURLs` (`/healthz`, `/api/*`) for paths that name no resource;
//! - a **RoleBinding** grants a Role or a ClusterRole to *subjects* (users, groups, service
//!   accounts) inside its namespace; a **ClusterRoleBinding** grants a ClusterRole
//!   everywhere.
//!
//! Rules only ever allow: RBAC has no deny. The authorizer looks for one binding that
//! applies to the user and one rule of its role that matches the request; when there is
//! none it has no opinion, and the request is refused at the end of the chain.
//!
//! kulisse reads the four kinds from the store into memory on first use and reads them
//! again after any write to them (upstream keeps them in informers). A ClusterRole with an
//! `aggregationRule` gets the rules of the ClusterRoles its `matchLabels` select, as
//! upstream's aggregation controller would write them into it (kulisse does not write
//! them back into the object).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::Attributes;
use crate::apiserver::auth::UserInfo;
use crate::apiserver::storage::Storage;
use crate::objects::ApiError;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// One rule of a Role or ClusterRole (`rbacv1.PolicyRule`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    /// Upstream's `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !verb {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|prefix| a.path.starts_with(prefix))
            });
        }
        let group = self.api_groups.iter().any(|g| g == "*" || *g == a.api_group);
        let combined = a.resource_and_subresource();
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        let name = self.resource_names.is_empty() || self.resource_names.iter().any(|n| *n == a.name);
        group && resource && name
    }
}

/// A binding's subject (`rbacv1.Subject`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Subject {
    kind: String,
    name: String,
    namespace: String,
}

/// A RoleBinding or ClusterRoleBinding, reduced to what authorization needs.
#[derive(Clone, Debug)]
struct Binding {
    /// The binding's own namespace (empty for a ClusterRoleBinding).
    namespace: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn from_json(v: &Value) -> Binding {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let role_ref = v.get("roleRef").cloned().unwrap_or(Value::Null);
        Binding {
            namespace: v
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            role_kind: s(&role_ref, "kind"),
            role_name: s(&role_ref, "name"),
            subjects: v
                .get("subjects")
                .and_then(Value::as_array)
                .map(|subjects| {
                    subjects
                        .iter()
                        .map(|x| Subject {
                            kind: s(x, "kind"),
                            name: s(x, "name"),
                            namespace: s(x, "namespace"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Upstream's `appliesToUser`: a User by name, a Group by membership, a ServiceAccount
    /// by its user name `system:serviceaccount:<namespace>:<name>`.
    fn applies_to(&self, user: &UserInfo) -> bool {
        self.subjects.iter().any(|s| match s.kind.as_str() {
            "User" => s.name == user.name,
            "Group" => user.in_group(&s.name),
            "ServiceAccount" => {
                let ns = if s.namespace.is_empty() {
                    &self.namespace
                } else {
                    &s.namespace
                };
                user.name == format!("system:serviceaccount:{ns}:{}", s.name)
            }
            _ => false,
        })
    }
}

/// Every Role, ClusterRole and binding, as read from the store.
#[derive(Debug, Default)]
pub struct Policy {
    cluster_roles: BTreeMap<String, Vec<Rule>>,
    roles: BTreeMap<(String, String), Vec<Rule>>,
    cluster_role_bindings: Vec<Binding>,
    role_bindings: Vec<Binding>,
}

impl Policy {
    /// Build the policy from the stored objects of the four kinds.
    pub fn from_objects(cluster_roles: &[Value], roles: &[Value], crbs: &[Value], rbs: &[Value]) -> Policy {
        let name = |v: &Value| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let rules = |v: &Value| -> Vec<Rule> {
            v.get("rules")
                .and_then(Value::as_array)
                .map(|r| r.iter().map(Rule::from_json).collect())
                .unwrap_or_default()
        };
        let mut policy = Policy::default();
        for cr in cluster_roles {
            let mut own = rules(cr);
            // Aggregation: the rules of every ClusterRole whose labels match a selector.
            let selectors = cr
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for selector in selectors {
                let wanted = selector
                    .get("matchLabels")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                if wanted.is_empty() {
                    continue;
                }
                for other in cluster_roles {
                    let labels = other.pointer("/metadata/labels").and_then(Value::as_object);
                    let matches = wanted.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
                    if matches && name(other) != name(cr) {
                        for r in rules(other) {
                            if !own.contains(&r) {
                                own.push(r);
                            }
                        }
                    }
                }
            }
            policy.cluster_roles.insert(name(cr), own);
        }
        for r in roles {
            let ns = r
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            policy.roles.insert((ns, name(r)), rules(r));
        }
        policy.cluster_role_bindings = crbs.iter().map(Binding::from_json).collect();
        policy.role_bindings = rbs.iter().map(Binding::from_json).collect();
        policy
    }

    /// The rules a binding grants, or the upstream error when its role is missing.
    fn rules_of(&self, b: &Binding) -> Result<&[Rule], String> {
        let found = match b.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&b.role_name),
            "Role" => self.roles.get(&(b.namespace.clone(), b.role_name.clone())),
            _ => None,
        };
        found.map(Vec::as_slice).ok_or_else(|| {
            let kind = b.role_kind.to_ascii_lowercase();
            format!("{kind}.{GROUP} {:?} not found", b.role_name)
        })
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included), and
    /// the errors met on the way (bindings to missing roles). Upstream's `VisitRulesFor`.
    pub fn rules_for<'a>(&'a self, user: &UserInfo, namespace: &str) -> (Vec<&'a Rule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let namespaced = self
            .role_bindings
            .iter()
            .filter(|b| !namespace.is_empty() && b.namespace == namespace);
        for b in self.cluster_role_bindings.iter().chain(namespaced) {
            if !b.applies_to(user) {
                continue;
            }
            match self.rules_of(b) {
                Ok(found) => rules.extend(found),
                Err(e) => errors.push(e),
            }
        }
        (rules, errors)
    }

    /// Allow, or no opinion with upstream's reason (`RBAC: clusterrole... not found`, or
    /// empty).
    pub fn authorize(&self, a: &Attributes) -> (bool, String) {
        let (rules, errors) = self.rules_for(&a.user, &a.namespace);
        if rules.iter().any(|r| r.allows(a)) {
            return (true, String::new());
        }
        let reason = if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: {}", errors.join(", "))
        };
        (false, reason)
    }
}

/// The RBAC authorizer: the policy, read from the store when needed.
#[derive(Default)]
pub struct RbacAuthorizer {
    /// The policy and the generation it was read at.
    cached: tokio::sync::RwLock<Option<(u64, Arc<Policy>)>>,
    /// Bumped by every write to an RBAC object: a policy of an older generation is read anew.
    generation: AtomicU64,
}

impl RbacAuthorizer {
    /// Forget the policy: an RBAC object was written.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current policy.
    pub async fn policy(&self, storage: &Storage) -> Result<Arc<Policy>, ApiError> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((g, p)) = self.cached.read().await.as_ref()
            && *g == generation
        {
            return Ok(p.clone());
        }
        let list = |kind: &'static str| async move {
            let info = crate::objects::by_gvk("rbac.authorization.k8s.io/v1", kind).expect("RBAC kinds are built in");
            let listed = storage.list(info, None, None).await?;
            Ok::<_, ApiError>(listed.items.into_iter().map(|i| i.object).collect::<Vec<Value>>())
        };
        let policy = Arc::new(Policy::from_objects(
            &list("ClusterRole").await?,
            &list("Role").await?,
            &list("ClusterRoleBinding").await?,
            &list("RoleBinding").await?,
        ));
        *self.cached.write().await = Some((generation, policy.clone()));
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(user: &UserInfo, verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    #[test]
    fn rules_match_as_upstream() {
        let r = Rule::from_json(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/status"]}));
        let u = UserInfo::authenticated("bob", []);
        assert!(r.allows(&attrs(&u, "get", "", "pods", "status", "d", "x")));
        assert!(!r.allows(&attrs(&u, "get", "", "pods", "", "d", "x")));
        let r = Rule::from_json(
            &json!({"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"]}),
        );
        assert!(r.allows(&attrs(&u, "delete", "apps", "deployments", "", "d", "web")));
        assert!(!r.allows(&attrs(&u, "delete", "apps", "deployments", "", "d", "db")));
        assert!(!r.allows(&attrs(&u, "list", "apps", "deployments", "", "d", "")));
        let r = Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/api/*", "/healthz"]}));
        let mut a = attrs(&u, "get", "", "", "", "", "");
        a.resource_request = false;
        a.path = "/api/v1".into();
        assert!(r.allows(&a));
        a.path = "/apis".into();
        assert!(!r.allows(&a));
    }

    #[test]
    fn bindings_grant_roles_to_users_groups_and_service_accounts() {
        let roles = [json!({"metadata": {"name": "reader", "namespace": "dev"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]})];
        let rbs = [
            json!({"metadata": {"name": "b", "namespace": "dev"}, "roleRef": {"kind": "Role", "name": "reader"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "ci"}]}),
            json!({"metadata": {"name": "c", "namespace": "dev"}, "roleRef": {"kind": "ClusterRole", "name": "gone"},
                "subjects": [{"kind": "Group", "name": "devs"}]}),
        ];
        let p = Policy::from_objects(&[], &roles, &[], &rbs);
        let alice = UserInfo::authenticated("alice", []);
        assert!(p.authorize(&attrs(&alice, "list", "", "pods", "", "dev", "")).0);
        assert!(!p.authorize(&attrs(&alice, "list", "", "pods", "", "prod", "")).0);
        assert!(!p.authorize(&attrs(&alice, "delete", "", "pods", "", "dev", "x")).0);
        let ci = UserInfo::authenticated("system:serviceaccount:dev:ci", []);
        assert!(p.authorize(&attrs(&ci, "get", "", "pods", "", "dev", "x")).0);
        let dev = UserInfo::authenticated("carol", ["devs".to_string()]);
        let (ok, reason) = p.authorize(&attrs(&dev, "get", "", "pods", "", "dev", "x"));
        assert!(!ok);
        assert_eq!(reason, "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found");
    }

    #[test]
    fn aggregated_cluster_roles_collect_the_selected_rules() {
        let crs = [
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            json!({"metadata": {"name": "extra", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]}),
        ];
        let crbs = [
            json!({"metadata": {"name": "v"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "bob"}]}),
        ];
        let p = Policy::from_objects(&crs, &[], &crbs, &[]);
        let bob = UserInfo::authenticated("bob", []);
        assert!(
            p.authorize(&attrs(&bob, "get", "example.com", "widgets", "", "x", "w"))
                .0
        );
    }
}
