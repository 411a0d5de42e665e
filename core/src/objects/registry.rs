//! # The resource registry: which kinds of objects the cluster knows
//!
//! Every object in Kubernetes has a *type*, written in two ways:
//!
//! - In a manifest, as a **GroupVersionKind** (GVK): `apiVersion: apps/v1` plus
//!   `kind: Deployment`. The `apiVersion` is `group/version`; the *core* group has the empty
//!   name and is written as just the version (`v1`).
//! - In a URL, as a **GroupVersionResource** (GVR): `/apis/apps/v1/namespaces/default/deployments`.
//!   The *resource* is the lowercase plural (`deployments`). The core group lives under
//!   `/api/v1/...` instead of `/apis/<group>/<version>/...`.
//!
//! The API server needs a table that maps between the two and knows, for each resource,
//! whether its objects live inside a namespace (Pods do, Nodes do not), which short names
//! kubectl accepts (`po`, `deploy`, `svc`) and which *categories* it belongs to (`kubectl get
//! all` lists every resource in the category `all`). In Kubernetes this is the *RESTMapper*
//! (`k8s.io/apimachinery/pkg/api/meta`) fed by API *discovery*; kubectl builds the same table
//! from `kubectl api-resources`. Here it is a static list, [`RESOURCES`].
//!
//! Each row also carries the per-kind facts the API server acts on, so that they live in one
//! table instead of in `match`es over kind names: which [`Subresource`]s a kind serves,
//! whether its `metadata.generation` counts spec changes, whether it owns other objects.
//!
//! A "group resource" such as `deployments.apps` is how Kubernetes names a resource in
//! messages (`deployments.apps "web" not found`); core resources have no suffix (`pods`).

/// One resource type the cluster serves: its GroupVersionKind, its REST name and its scope.
///
/// This mirrors one row of `kubectl api-resources` (an `APIResource` from discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceInfo {
    /// API group; empty for the core group (`Pod`, `Service`, ...), `apps` for `Deployment`.
    pub group: &'static str,
    /// API version inside the group, e.g. `v1`.
    pub version: &'static str,
    /// The `kind` written in manifests, e.g. `Deployment`.
    pub kind: &'static str,
    /// The resource name used in URLs, lowercase plural, e.g. `deployments`.
    pub plural: &'static str,
    /// Lowercase singular, accepted by kubectl (`kubectl get deployment`).
    pub singular: &'static str,
    /// kubectl short names (`deploy`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace (`true`) or are cluster-scoped (`false`).
    pub namespaced: bool,
    /// The subresources the API server serves below each object (`pods/web/log`).
    pub subresources: &'static [Subresource],
    /// Whether `metadata.generation` starts at 1 and counts changes of the desired state
    /// (everything but metadata and status), for controllers' `status.observedGeneration`.
    pub tracks_generation: bool,
    /// Whether objects of this kind own others through `ownerReferences` in kulisse, so
    /// that a `Foreground` or `Orphan` delete leaves its finalizer for the garbage collector.
    pub owns_dependents: bool,
    /// Categories such as `all` (what `kubectl get all` lists).
    pub categories: &'static [&'static str],
}

/// A subresource: a URL below one object that serves one aspect of it, with its own verbs
/// (discovery lists them as `pods/log`, `deployments/scale`). Upstream registers each as a
/// storage of its own next to the resource's (`pods/status` → `StatusREST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subresource {
    /// `/status`: the only way to change `status`, and a write there changes nothing else.
    Status,
    /// `/scale`: the `autoscaling/v1` `Scale` view of the replica count.
    Scale,
    /// `pods/binding`: the scheduler's way to place a pod on a node.
    Binding,
    /// `pods/log`: the container log, proxied from the kubelet.
    Log,
    /// `pods/exec` and `pods/attach`: a WebSocket to the container, proxied to the kubelet.
    Exec,
    /// `namespaces/finalize`: how the namespace controller removes `spec.finalizers`.
    Finalize,
    /// `serviceaccounts/token`: a `TokenRequest` answers a signed token for the account.
    Token,
}

impl Subresource {
    /// The URL segment (`status`, `scale`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Finalize => "finalize",
            Subresource::Token => "token",
        }
    }
}

impl ResourceInfo {
    /// The `apiVersion` string of manifests: `v1` for the core group, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource name Kubernetes uses in messages: `pods`,
    /// `deployments.apps`, `leases.coordination.k8s.io`.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The group-qualified kind Kubernetes uses in validation messages: `Pod`,
    /// `Deployment.apps` (as in `Deployment.apps "web" is invalid: ...`).
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Does this resource serve `sub` below its objects?
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The kind of a list of these objects, e.g. `DeploymentList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The URL path prefix of this resource's group and version: `/api/v1` for the core
    /// group, `/apis/apps/v1` for the others.
    pub fn api_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// Every resource type kulisse serves, in the order `kubectl api-resources` shows them
/// (core group first).
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        subresources: &[],
        tracks_generation: true,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        subresources: &[],
        tracks_generation: true,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        subresources: &[],
        tracks_generation: true,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        subresources: &[Subresource::Status, Subresource::Finalize],
        tracks_generation: true,
        owns_dependents: true,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        subresources: &[Subresource::Status],
        tracks_generation: true,
        owns_dependents: true,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        subresources: &[
            Subresource::Status,
            Subresource::Binding,
            Subresource::Log,
            Subresource::Exec,
        ],
        tracks_generation: true,
        owns_dependents: true,
        categories: &["all"],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        subresources: &[Subresource::Token],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        subresources: &[Subresource::Status],
        tracks_generation: true,
        owns_dependents: true,
        categories: &["all"],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        subresources: &[Subresource::Status, Subresource::Scale],
        tracks_generation: true,
        owns_dependents: true,
        categories: &["all"],
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        subresources: &[Subresource::Status, Subresource::Scale],
        tracks_generation: true,
        owns_dependents: true,
        categories: &["all"],
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        tracks_generation: true,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        tracks_generation: true,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        tracks_generation: false,
        owns_dependents: false,
        categories: &[],
    },
];

/// Find the resource for a manifest's `apiVersion` and `kind` (exact, case-sensitive, as
/// the API server matches them).
pub fn by_gvk(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Find the resource for a URL's group, version and plural resource name
/// (`("apps", "v1", "deployments")`, `("", "v1", "pods")`).
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Split an `apiVersion` into group and version: `apps/v1` → `("apps", "v1")`,
/// `v1` → `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Does `text` (already lowercase) name this resource without a group?
fn names_resource(r: &ResourceInfo, text: &str) -> bool {
    r.plural == text || r.singular == text || r.kind.eq_ignore_ascii_case(text) || r.short_names.contains(&text)
}

/// Resolve what a user types after `kubectl get`, the way kubectl does: plural (`pods`),
/// singular (`pod`), short name (`po`), kind (`Pod`), case-insensitive, optionally qualified
/// with the group (`deployments.apps`, `deployment.apps`, `deploy.apps`) or with version and
/// group (`deployments.v1.apps`, `leases.v1.coordination.k8s.io`).
pub fn lookup(user_text: &str) -> Option<&'static ResourceInfo> {
    let text = user_text.trim().to_ascii_lowercase();
    if text.is_empty() {
        return None;
    }
    // Unqualified names first: `pods`, `pod`, `po`, `Pod`.
    if let Some(r) = RESOURCES.iter().find(|r| names_resource(r, &text)) {
        return Some(r);
    }
    let (name, rest) = text.split_once('.')?;
    // `resource.group`, e.g. `deployments.apps`, `leases.coordination.k8s.io`.
    if let Some(r) = RESOURCES
        .iter()
        .find(|r| !r.group.is_empty() && r.group == rest && names_resource(r, name))
    {
        return Some(r);
    }
    // `resource.version.group`, e.g. `deployments.v1.apps`.
    let (version, group) = rest.split_once('.')?;
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && names_resource(r, name))
}

/// All known kinds with their apiVersion, sorted, for error messages such as
/// `no matches for kind "Foo"; known kinds: ConfigMap (v1), Deployment (apps/v1), ...`.
pub fn kind_names() -> Vec<String> {
    let mut names: Vec<String> = RESOURCES
        .iter()
        .map(|r| format!("{} ({})", r.kind, r.api_version()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_and_group_resource() {
        let deploy = by_gvk("apps/v1", "Deployment").expect("deployment");
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.group_resource(), "deployments.apps");
        assert_eq!(deploy.group_kind(), "Deployment.apps");
        assert_eq!(deploy.list_kind(), "DeploymentList");
        assert_eq!(deploy.api_prefix(), "/apis/apps/v1");
        let pod = by_gvk("v1", "Pod").expect("pod");
        assert_eq!(pod.api_version(), "v1");
        assert_eq!(pod.group_resource(), "pods");
        assert_eq!(pod.group_kind(), "Pod");
        assert_eq!(pod.api_prefix(), "/api/v1");
        let lease = by_gvk("coordination.k8s.io/v1", "Lease").expect("lease");
        assert_eq!(lease.group_resource(), "leases.coordination.k8s.io");
        assert!(lease.short_names.is_empty());
    }

    #[test]
    fn by_gvk_is_exact() {
        assert!(
            by_gvk("v1", "Deployment").is_none(),
            "Deployment is not in the core group"
        );
        assert!(by_gvk("apps/v1", "deployment").is_none(), "kinds are case-sensitive");
        assert!(by_gvk("apps/v1beta1", "Deployment").is_none());
        assert_eq!(by_gvk("v1", "Event").map(|r| r.plural), Some("events"));
    }

    #[test]
    fn by_resource_finds_url_names() {
        assert_eq!(by_resource("", "v1", "pods").map(|r| r.kind), Some("Pod"));
        assert_eq!(
            by_resource("apps", "v1", "replicasets").map(|r| r.kind),
            Some("ReplicaSet")
        );
        assert!(by_resource("", "v1", "deployments").is_none());
        assert!(by_resource("apps", "v1", "deployment").is_none());
    }

    #[test]
    fn lookup_accepts_what_kubectl_accepts() {
        for text in ["pods", "pod", "po", "Pod", "PODS", " pods "] {
            assert_eq!(lookup(text).map(|r| r.kind), Some("Pod"), "{text}");
        }
        for text in [
            "deployments",
            "deployment",
            "deploy",
            "Deployment",
            "deployments.apps",
            "deployment.apps",
            "deploy.apps",
            "deployments.v1.apps",
            "Deployment.apps",
        ] {
            assert_eq!(lookup(text).map(|r| r.kind), Some("Deployment"), "{text}");
        }
        assert_eq!(lookup("rs").map(|r| r.kind), Some("ReplicaSet"));
        assert_eq!(lookup("svc").map(|r| r.kind), Some("Service"));
        assert_eq!(lookup("ep").map(|r| r.kind), Some("Endpoints"));
        assert_eq!(lookup("endpoints").map(|r| r.kind), Some("Endpoints"));
        assert_eq!(lookup("no").map(|r| r.kind), Some("Node"));
        assert_eq!(lookup("ns").map(|r| r.kind), Some("Namespace"));
        assert_eq!(lookup("ev").map(|r| r.kind), Some("Event"));
        assert_eq!(lookup("cm").map(|r| r.kind), Some("ConfigMap"));
        assert_eq!(lookup("secrets").map(|r| r.kind), Some("Secret"));
        assert_eq!(lookup("secret").map(|r| r.kind), Some("Secret"));
        assert_eq!(lookup("sa").map(|r| r.kind), Some("ServiceAccount"));
        assert_eq!(lookup("leases").map(|r| r.kind), Some("Lease"));
        assert_eq!(lookup("leases.coordination.k8s.io").map(|r| r.kind), Some("Lease"));
        assert_eq!(lookup("lease.v1.coordination.k8s.io").map(|r| r.kind), Some("Lease"));
    }

    #[test]
    fn lookup_rejects_unknown_and_wrong_groups() {
        for text in [
            "",
            "foo",
            "pods.apps",
            "deployments.v2.apps",
            "deployments.extensions",
            "pods.v1",
            ".",
            "deployments.",
        ] {
            assert!(lookup(text).is_none(), "{text:?} should not resolve");
        }
    }

    #[test]
    fn categories_all_as_in_kubernetes() {
        let mut all: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| r.categories.contains(&"all"))
            .map(|r| r.plural)
            .collect();
        all.sort();
        assert_eq!(all, ["deployments", "pods", "replicasets", "services"]);
    }

    #[test]
    fn scopes() {
        let cluster: Vec<&str> = RESOURCES.iter().filter(|r| !r.namespaced).map(|r| r.kind).collect();
        assert_eq!(cluster, ["Namespace", "Node", "ClusterRoleBinding", "ClusterRole"]);
    }

    #[test]
    fn per_kind_facts() {
        let with =
            |sub: Subresource| -> Vec<&str> { RESOURCES.iter().filter(|r| r.has(sub)).map(|r| r.plural).collect() };
        assert_eq!(with(Subresource::Scale), ["deployments", "replicasets"]);
        assert_eq!(with(Subresource::Binding), ["pods"]);
        assert_eq!(with(Subresource::Log), ["pods"]);
        assert_eq!(with(Subresource::Finalize), ["namespaces"]);
        assert_eq!(with(Subresource::Token), ["serviceaccounts"]);
        assert_eq!(
            with(Subresource::Status),
            ["namespaces", "nodes", "pods", "services", "deployments", "replicasets"]
        );
        let untracked: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| !r.tracks_generation)
            .map(|r| r.kind)
            .collect();
        // RBAC objects have no spec, so no generation to count (as upstream).
        assert_eq!(
            untracked,
            [
                "Secret",
                "ServiceAccount",
                "ClusterRoleBinding",
                "ClusterRole",
                "RoleBinding",
                "Role"
            ]
        );
        assert_eq!(Subresource::Finalize.name(), "finalize");
    }

    #[test]
    fn kind_names_lists_every_kind() {
        let names = kind_names();
        assert_eq!(names.len(), RESOURCES.len());
        assert!(names.contains(&"Deployment (apps/v1)".to_string()));
        assert!(names.contains(&"Pod (v1)".to_string()));
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn split_api_version_handles_core_and_groups() {
        assert_eq!(split_api_version("v1"), ("", "v1"));
        assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
        assert_eq!(
            split_api_version("coordination.k8s.io/v1"),
            ("coordination.k8s.io", "v1")
        );
    }
}
