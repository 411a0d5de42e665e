//! # Defaulting: filling in what the user left out
//!
//! A manifest only says what its author cares about. Before validating and storing an
//! object, the API server *defaults* it: every field the user left out that has a
//! well-defined default gets that default written into the object (`SetDefaults_*`
//! functions in `pkg/apis/*/v1/defaults.go` of kube-apiserver). That is why
//! `kubectl get deployment web -o yaml` shows many fields you never wrote:
//! `strategy.rollingUpdate.maxSurge: 25%`, `revisionHistoryLimit: 10`,
//! `terminationMessagePath: /dev/termination-log`...
//!
//! Defaulting runs *once*, when the object is written, so the stored object is explicit and
//! every reader (controllers, kubelets, other clients) sees the same values. It only ever
//! fills **absent** fields (missing or `null`); a value the user wrote is never changed.
//!
//! What the API server fills in elsewhere is not done here: `metadata.namespace` (taken from
//! the URL), `uid`, `creationTimestamp`, `resourceVersion`, a Service's `clusterIP`.

use serde_json::{Map, Value, json};

use super::registry::ResourceInfo;

/// Set `obj[key] = value` if the key is absent or null.
fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    match obj.get(key) {
        None | Some(Value::Null) => {
            obj.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The object at `obj[key]`, created as `{}` if absent or null. `None` if the field holds
/// something that is not an object (validation reports that; defaulting leaves it alone).
fn object_at<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    set_default(obj, key, Value::Object(Map::new()));
    obj.get_mut(key).and_then(Value::as_object_mut)
}

/// The image pull policy Kubernetes picks for an image reference: `Always` when the tag is
/// `latest` or missing (and there is no digest), `IfNotPresent` otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    // Strip a digest first: `nginx@sha256:...` has no tag but is pinned.
    if image.contains('@') {
        let (name, _) = image.split_once('@').unwrap_or((image, ""));
        let last = name.rsplit('/').next().unwrap_or(name);
        return match last.split_once(':') {
            Some((_, "latest")) => "Always",
            _ => "IfNotPresent",
        };
    }
    // The tag follows the last ':' of the last path component (a ':' before a '/' is a
    // registry port, as in `localhost:5000/app`).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set_default(c, "imagePullPolicy", Value::from(default_pull_policy(&image)));
    set_default(c, "terminationMessagePath", Value::from("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", Value::from("File"));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", Value::from("TCP"));
        }
    }
}

/// Defaults of a `PodSpec` (`SetDefaults_PodSpec`, `SetDefaults_Container`).
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", Value::from("Always"));
    set_default(spec, "dnsPolicy", Value::from("ClusterFirst"));
    set_default(spec, "schedulerName", Value::from("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", Value::from(30));
    set_default(spec, "securityContext", Value::Object(Map::new()));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

fn default_template(spec: &mut Map<String, Value>) {
    if let Some(template) = object_at(spec, "template")
        && let Some(pod_spec) = object_at(template, "spec")
    {
        default_pod_spec(pod_spec);
    }
}

fn default_deployment(root: &mut Map<String, Value>) {
    let Some(spec) = object_at(root, "spec") else {
        return;
    };
    set_default(spec, "replicas", Value::from(1));
    if let Some(strategy) = object_at(spec, "strategy") {
        set_default(strategy, "type", Value::from("RollingUpdate"));
        if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
            && let Some(ru) = object_at(strategy, "rollingUpdate")
        {
            set_default(ru, "maxUnavailable", Value::from("25%"));
            set_default(ru, "maxSurge", Value::from("25%"));
        }
    }
    set_default(spec, "revisionHistoryLimit", Value::from(10));
    set_default(spec, "progressDeadlineSeconds", Value::from(600));
    default_template(spec);
}

fn default_replica_set(root: &mut Map<String, Value>) {
    let Some(spec) = object_at(root, "spec") else {
        return;
    };
    set_default(spec, "replicas", Value::from(1));
    default_template(spec);
}

fn default_service(root: &mut Map<String, Value>) {
    let Some(spec) = object_at(root, "spec") else {
        return;
    };
    set_default(spec, "type", Value::from("ClusterIP"));
    set_default(spec, "sessionAffinity", Value::from("None"));
    let svc_type = spec.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    if svc_type != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", Value::from("Cluster"));
    }
    if svc_type == "NodePort" || svc_type == "LoadBalancer" {
        set_default(spec, "externalTrafficPolicy", Value::from("Cluster"));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", Value::from("TCP"));
            // targetPort defaults to port; an explicit 0 or "" counts as unset.
            let unset = match port.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                Some(_) => false,
            };
            if unset && let Some(p) = port.get("port").cloned() {
                port.insert("targetPort".into(), p);
            }
        }
    }
}

/// Apply the defaults kube-apiserver applies to a `info.kind`, only where a field is
/// absent (missing or `null`):
///
/// - **Pod** `spec` and the **Deployment/ReplicaSet** `spec.template.spec`: `restartPolicy:
///   Always`, `dnsPolicy: ClusterFirst`, `schedulerName: default-scheduler`,
///   `terminationGracePeriodSeconds: 30`, `securityContext: {}`; per container
///   `imagePullPolicy` (`Always` for a `latest` or missing tag, else `IfNotPresent`),
///   `terminationMessagePath: /dev/termination-log`, `terminationMessagePolicy: File`,
///   `ports[].protocol: TCP`.
/// - **Deployment**: `replicas: 1`, `strategy: {type: RollingUpdate, rollingUpdate:
///   {maxUnavailable: 25%, maxSurge: 25%}}`, `revisionHistoryLimit: 10`,
///   `progressDeadlineSeconds: 600`.
/// - **ReplicaSet**: `replicas: 1`.
/// - **Service**: `type: ClusterIP`, `sessionAffinity: None`, `internalTrafficPolicy:
///   Cluster` (and `externalTrafficPolicy: Cluster` for NodePort/LoadBalancer),
///   `ports[].protocol: TCP`, `ports[].targetPort` = `ports[].port`.
///
/// Objects that are not JSON objects are left untouched (validation rejects them).
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (info.group, info.kind) {
        ("", "Pod") => {
            if let Some(spec) = object_at(root, "spec") {
                default_pod_spec(spec);
            }
        }
        ("apps", "Deployment") => default_deployment(root),
        ("apps", "ReplicaSet") => default_replica_set(root),
        ("", "Service") => default_service(root),
        ("", "Secret") => super::secret::apply_defaults(root),
        ("discovery.k8s.io", "EndpointSlice") => default_endpoint_slice(root),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => default_subjects(root),
        _ => {}
    }
}

/// An EndpointSlice port without a protocol is TCP, without a name `""`
/// (upstream's `SetDefaults_EndpointPort`).
/// `SetDefaults_Subject`: a User or Group subject is in the RBAC API group, a
/// ServiceAccount in the core group.
fn default_subjects(root: &mut Map<String, Value>) {
    if let Some(Value::Array(subjects)) = root.get_mut("subjects") {
        for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let group = match subject.get("kind").and_then(Value::as_str) {
                Some("User" | "Group") => "rbac.authorization.k8s.io",
                Some("ServiceAccount") => "",
                _ => continue,
            };
            if subject.get("apiGroup").and_then(Value::as_str).unwrap_or("").is_empty() {
                subject.insert("apiGroup".to_string(), Value::from(group));
            }
        }
    }
}

fn default_endpoint_slice(root: &mut Map<String, Value>) {
    let ports = root.get_mut("ports").and_then(Value::as_array_mut);
    for port in ports.into_iter().flatten().filter_map(Value::as_object_mut) {
        set_default(port, "name", Value::from(""));
        set_default(port, "protocol", Value::from("TCP"));
    }
}

/// The defaulted Deployment strategy, for readers that want it spelled out.
pub fn default_rolling_update() -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::registry::by_gvk;

    fn info(api_version: &str, kind: &str) -> &'static ResourceInfo {
        by_gvk(api_version, kind).expect("known kind")
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v2"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost/busybox:latest"), "Always");
        assert_eq!(default_pull_policy("nginx@sha256:abcd"), "IfNotPresent");
        assert_eq!(default_pull_policy(""), "Always");
    }

    #[test]
    fn pod_defaults() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [
            {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "busybox:1.36", "imagePullPolicy": "Never"}
        ]}});
        apply_defaults(info("v1", "Pod"), &mut pod);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        let a = &spec["containers"][0];
        assert_eq!(a["imagePullPolicy"], "Always");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["terminationMessagePolicy"], "File");
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "Never", "user value kept");
        assert!(
            pod["metadata"].get("namespace").is_none(),
            "namespace is the API server's job"
        );
    }

    #[test]
    fn existing_values_are_kept_and_null_counts_as_absent() {
        let mut pod = json!({"spec": {"restartPolicy": "Never", "dnsPolicy": null,
            "terminationGracePeriodSeconds": 0, "containers": []}});
        apply_defaults(info("v1", "Pod"), &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
    }

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}});
        apply_defaults(info("apps/v1", "Deployment"), &mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"], default_rolling_update());
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        // Unknown fields survive.
        let mut d2 = json!({"spec": {"replicas": 3, "custom": {"x": 1}, "strategy": {"type": "Recreate"}}});
        apply_defaults(info("apps/v1", "Deployment"), &mut d2);
        assert_eq!(d2["spec"]["replicas"], 3);
        assert_eq!(d2["spec"]["custom"], json!({"x": 1}));
        assert_eq!(
            d2["spec"]["strategy"],
            json!({"type": "Recreate"}),
            "no rollingUpdate for Recreate"
        );
    }

    #[test]
    fn replica_set_defaults() {
        let mut rs = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:latest"}]}}}});
        apply_defaults(info("apps/v1", "ReplicaSet"), &mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert_eq!(
            rs["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Always"
        );
        assert!(rs["spec"].get("revisionHistoryLimit").is_none());
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"},
            {"port": 53, "protocol": "UDP", "targetPort": 0}]}});
        apply_defaults(info("v1", "Service"), &mut s);
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert_eq!(spec["ports"][2]["protocol"], "UDP");
        assert_eq!(spec["ports"][2]["targetPort"], 53);
        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply_defaults(info("v1", "Service"), &mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn other_kinds_and_odd_shapes_are_untouched() {
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
        let before = cm.clone();
        apply_defaults(info("v1", "ConfigMap"), &mut cm);
        assert_eq!(cm, before);
        let mut not_obj = json!([1, 2]);
        apply_defaults(info("v1", "Pod"), &mut not_obj);
        assert_eq!(not_obj, json!([1, 2]));
        let mut bad_spec = json!({"spec": "oops"});
        apply_defaults(info("apps/v1", "Deployment"), &mut bad_spec);
        assert_eq!(bad_spec, json!({"spec": "oops"}));
        let mut bad_containers = json!({"spec": {"containers": [1, "x"]}});
        apply_defaults(info("v1", "Pod"), &mut bad_containers);
        assert_eq!(bad_containers["spec"]["containers"], json!([1, "x"]));
    }
}
