//! # Printers: the columns of `get` (mirrors Kubernetes' server-side printing, `pkg/printers`)
//!
//! Why does `kubectl get pods` show READY and STATUS columns, while `kubectl get
//! deployments` shows UP-TO-DATE and AVAILABLE? Since Kubernetes 1.10 the *server*
//! decides: a client asks for a `Table` (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`)
//! and the API server turns each object into a row of cells. kulisse does the same, so
//! `kulisse get` and the real `kubectl get` print the same columns.
//!
//! Columns with `priority: 0` are always shown; `priority: 1` ones only with `-o wide`.

use serde_json::{Value, json};

use crate::objects::ResourceInfo;

/// A column: title, JSON type, and whether it is a `-o wide` column.
struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
    description: &'static str,
}

const fn col(name: &'static str, kind: &'static str, priority: u8, description: &'static str) -> Column {
    Column {
        name,
        kind,
        priority,
        description,
    }
}

const NAME: Column = col("Name", "string", 0, "Name must be unique within a namespace.");
const AGE: Column = col("Age", "string", 0, "How long ago the object was created.");
const CONTAINERS: Column = col("Containers", "string", 1, "Container names.");
const IMAGES: Column = col("Images", "string", 1, "Container images.");
const POD_SELECTOR: Column = col("Selector", "string", 1, "The label selector of the pods.");

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Ready containers / all containers."),
    col("Status", "string", 0, "The pod's phase, or why it is not running."),
    col("Restarts", "string", 0, "How often the containers restarted."),
    AGE,
    col("IP", "string", 1, "The pod's IP address."),
    col("Node", "string", 1, "The node the pod is bound to."),
    col(
        "Nominated Node",
        "string",
        1,
        "The node the scheduler nominated for preemption.",
    ),
    col("Readiness Gates", "string", 1, "Extra readiness conditions."),
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Ready replicas / desired replicas."),
    col("Up-to-date", "integer", 0, "Replicas running the newest pod template."),
    col("Available", "integer", 0, "Replicas available to users."),
    AGE,
    CONTAINERS,
    IMAGES,
    POD_SELECTOR,
];

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", 0, "The number of pods wanted."),
    col("Current", "integer", 0, "The number of pods that exist."),
    col("Ready", "integer", 0, "The number of ready pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    POD_SELECTOR,
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", 0, "ClusterIP, NodePort or LoadBalancer."),
    col("Cluster-IP", "string", 0, "The virtual address kube-proxy serves."),
    col("External-IP", "string", 0, "Addresses outside the cluster."),
    col("Port(s)", "string", 0, "port[:nodePort]/protocol."),
    AGE,
    col("Selector", "string", 1, "The labels of the pods behind the service."),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col("Endpoints", "string", 0, "Ready pod addresses and ports."),
    AGE,
];

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        0,
        "The type of the addresses: IPv4, IPv6 or FQDN.",
    ),
    col("Ports", "string", 0, "The ports the endpoints offer."),
    col("Endpoints", "string", 0, "The endpoints' addresses."),
    AGE,
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", 0, "Whether the node's kubelet reports Ready."),
    col("Roles", "string", 0, "The node's roles."),
    AGE,
    col("Version", "string", 0, "The kubelet's version."),
    col("Internal-IP", "string", 1, "The node's internal address."),
    col("External-IP", "string", 1, "The node's external address."),
    col("OS-Image", "string", 1, "The node's operating system."),
    col("Kernel-Version", "string", 1, "The node's kernel."),
    col(
        "Container-Runtime",
        "string",
        1,
        "The container runtime the kubelet uses.",
    ),
];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", 0, "Active or Terminating."), AGE];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", 0, "When the event last happened."),
    col("Type", "string", 0, "Normal or Warning."),
    col("Reason", "string", 0, "A short machine-readable reason."),
    col("Object", "string", 0, "The object the event is about."),
    col("Subobject", "string", 1, "The part of the object (e.g. a container)."),
    col("Source", "string", 1, "The component that reported it."),
    col("Message", "string", 0, "What happened, for humans."),
    col("First Seen", "string", 1, "When the event first happened."),
    col("Count", "string", 1, "How often it happened."),
    col("Name", "string", 1, "The event object's name."),
];

const CONFIGMAP_COLUMNS: &[Column] = &[NAME, col("Data", "integer", 0, "Number of keys."), AGE];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", 0, "The type of secret."),
    col("Data", "integer", 0, "Number of keys."),
    AGE,
];

const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "string", 0, "Who holds the lease."), AGE];

const ROLE_COLUMNS: &[Column] = &[NAME, col("Created At", "date", 0, "When the role was created.")];

const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", 0, "The role the binding grants, as Kind/name."),
    AGE,
    col("Users", "string", 1, "The users the role is granted to."),
    col("Groups", "string", 1, "The groups the role is granted to."),
    col(
        "ServiceAccounts",
        "string",
        1,
        "The service accounts (namespace:name) the role is granted to.",
    ),
];

/// The cells of one row: `(column, object, now) -> cell`.
type CellFn = fn(&str, &Value, Now) -> Value;

/// A kind's columns and the function that fills them (upstream registers one `printX`
/// handler per kind the same way). Kinds without a printer get `Name` and `Age`.
fn printer(kind: &str) -> (&'static [Column], CellFn) {
    match kind {
        "Pod" => (POD_COLUMNS, pod_cell),
        "Deployment" => (DEPLOYMENT_COLUMNS, deployment_cell),
        "ReplicaSet" => (REPLICASET_COLUMNS, replicaset_cell),
        "Service" => (SERVICE_COLUMNS, service_cell),
        "Endpoints" => (ENDPOINTS_COLUMNS, endpoints_cell),
        "EndpointSlice" => (ENDPOINTSLICE_COLUMNS, endpointslice_cell),
        "Node" => (NODE_COLUMNS, node_cell),
        "Namespace" => (NAMESPACE_COLUMNS, namespace_cell),
        "Event" => (EVENT_COLUMNS, event_cell),
        "ConfigMap" => (CONFIGMAP_COLUMNS, configmap_cell),
        "Secret" => (SECRET_COLUMNS, secret_cell),
        "Lease" => (LEASE_COLUMNS, lease_cell),
        "Role" | "ClusterRole" => (ROLE_COLUMNS, role_cell),
        "RoleBinding" | "ClusterRoleBinding" => (BINDING_COLUMNS, binding_cell),
        _ => (&[NAME, AGE], no_cell),
    }
}

/// A `meta.k8s.io/v1` `Table` of `items`, with the columns kubectl shows for `info`'s kind.
pub fn table(info: &ResourceInfo, items: &[Value], resource_version: &str) -> Value {
    let now = chrono::Utc::now();
    let (cols, kind_cell) = printer(info.kind);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" }, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(kind_cell, c.name, obj, now)).collect();
            let mut meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version}, "columnDefinitions": defs, "rows": rows})
}

fn s<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn i(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(v: String) -> Value {
    Value::String(if v.is_empty() { "<none>".into() } else { v })
}

/// One cell: `Name` and `Age` are the same for every kind, the rest is the kind's own.
fn cell(kind_cell: CellFn, column: &str, obj: &Value, now: Now) -> Value {
    match column {
        "Name" => json!(s(obj, "/metadata/name")),
        "Age" => json!(age(s(obj, "/metadata/creationTimestamp"), now)),
        _ => kind_cell(column, obj, now),
    }
}

type Now = chrono::DateTime<chrono::Utc>;

fn no_cell(_: &str, _: &Value, _: Now) -> Value {
    json!("")
}

/// `printPod`.
fn pod_cell(column: &str, obj: &Value, _: Now) -> Value {
    let statuses = obj.pointer("/status/containerStatuses").and_then(Value::as_array);
    match column {
        "Ready" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |st| {
                st.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            json!(format!("{ready}/{total}"))
        }
        "Status" => json!(pod_status(obj)),
        "Restarts" => json!(pod_status_and_restarts(obj).1.to_string()),
        "IP" => or_none(s(obj, "/status/podIP").to_string()),
        "Node" => or_none(s(obj, "/spec/nodeName").to_string()),
        "Nominated Node" => or_none(s(obj, "/status/nominatedNodeName").to_string()),
        "Readiness Gates" => json!("<none>"),
        _ => json!(""),
    }
}

/// The `-o wide` columns Deployments and ReplicaSets share.
fn pod_template_cell(column: &str, obj: &Value) -> Value {
    match column {
        "Containers" => json!(containers(obj, "name")),
        "Images" => json!(containers(obj, "image")),
        "Selector" => or_none(selector_text(obj.pointer("/spec/selector/matchLabels"))),
        _ => json!(""),
    }
}

/// `printDeployment`.
fn deployment_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Ready" => json!(format!(
            "{}/{}",
            i(obj, "/status/readyReplicas"),
            i(obj, "/spec/replicas")
        )),
        "Up-to-date" => json!(i(obj, "/status/updatedReplicas")),
        "Available" => json!(i(obj, "/status/availableReplicas")),
        _ => pod_template_cell(column, obj),
    }
}

/// `printReplicaSet`.
fn replicaset_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Desired" => json!(i(obj, "/spec/replicas")),
        "Current" => json!(i(obj, "/status/replicas")),
        "Ready" => json!(i(obj, "/status/readyReplicas")),
        _ => pod_template_cell(column, obj),
    }
}

/// `printService`.
fn service_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Type" => json!(s(obj, "/spec/type")),
        "Cluster-IP" => or_none(s(obj, "/spec/clusterIP").to_string()),
        "External-IP" => or_none(
            obj.pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        ),
        "Port(s)" => or_none(service_ports(obj)),
        "Selector" => or_none(selector_text(obj.pointer("/spec/selector"))),
        _ => json!(""),
    }
}

/// `printEndpoints`.
fn endpoints_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Endpoints" => or_none(endpoints_text(obj)),
        _ => json!(""),
    }
}

/// `printEndpointSlice`.
fn endpointslice_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "AddressType" => json!(s(obj, "/addressType")),
        "Ports" => json!(slice_ports_text(obj)),
        "Endpoints" => json!(slice_endpoints_text(obj)),
        _ => json!(""),
    }
}

/// `printNode`.
fn node_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Status" => json!(node_status(obj)),
        "Roles" => json!("<none>"),
        "Version" => json!(s(obj, "/status/nodeInfo/kubeletVersion")),
        "Internal-IP" => or_none(node_address(obj, "InternalIP")),
        "External-IP" => or_none(node_address(obj, "ExternalIP")),
        "OS-Image" => or_none(s(obj, "/status/nodeInfo/osImage").to_string()),
        "Kernel-Version" => or_none(s(obj, "/status/nodeInfo/kernelVersion").to_string()),
        "Container-Runtime" => or_none(s(obj, "/status/nodeInfo/containerRuntimeVersion").to_string()),
        _ => json!(""),
    }
}

/// `printNamespace`.
fn namespace_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Status" => json!(if s(obj, "/status/phase").is_empty() {
            "Active"
        } else {
            s(obj, "/status/phase")
        }),
        _ => json!(""),
    }
}

/// The first of an event's times that is set, for LAST SEEN and FIRST SEEN.
fn event_time<'a>(obj: &'a Value, own: &str) -> &'a str {
    [own, "/eventTime", "/metadata/creationTimestamp"]
        .into_iter()
        .map(|p| s(obj, p))
        .find(|t| !t.is_empty())
        .unwrap_or("")
}

/// `printEvent`.
fn event_cell(column: &str, obj: &Value, now: Now) -> Value {
    match column {
        "Last Seen" => json!(age(event_time(obj, "/lastTimestamp"), now)),
        "Type" => json!(s(obj, "/type")),
        "Reason" => json!(s(obj, "/reason")),
        "Object" => json!(format!(
            "{}/{}",
            s(obj, "/involvedObject/kind").to_lowercase(),
            s(obj, "/involvedObject/name")
        )),
        "Message" => json!(s(obj, "/message")),
        "Subobject" => json!(s(obj, "/involvedObject/fieldPath")),
        "Source" => {
            let (component, host) = (s(obj, "/source/component"), s(obj, "/source/host"));
            let component = if component.is_empty() {
                s(obj, "/reportingComponent")
            } else {
                component
            };
            json!(if host.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {host}")
            })
        }
        "First Seen" => json!(age(event_time(obj, "/firstTimestamp"), now)),
        "Count" => json!(i(obj, "/count").max(1).to_string()),
        _ => json!(""),
    }
}

/// `printConfigMap`.
fn configmap_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Data" => json!(
            obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len())
                + obj.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len())
        ),
        _ => json!(""),
    }
}

/// `printSecret`.
fn secret_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Type" => json!(s(obj, "/type")),
        "Data" => json!(obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len())),
        _ => json!(""),
    }
}

/// `printLease`.
fn role_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Created At" => obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(json!("")),
        _ => json!(""),
    }
}

fn binding_cell(column: &str, obj: &Value, _: Now) -> Value {
    let subjects = |kind: &str| -> String {
        let names: Vec<String> = obj
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
            .map(|s| {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                match s.get("namespace").and_then(Value::as_str) {
                    Some(ns) if kind == "ServiceAccount" => format!("{ns}:{name}"),
                    _ => name.to_string(),
                }
            })
            .collect();
        names.join(", ")
    };
    match column {
        "Role" => {
            let r = |k: &str| {
                obj.pointer(&format!("/roleRef/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
            };
            json!(format!("{}/{}", r("kind"), r("name")))
        }
        "Users" => json!(subjects("User")),
        "Groups" => json!(subjects("Group")),
        "ServiceAccounts" => json!(subjects("ServiceAccount")),
        _ => json!(""),
    }
}

fn lease_cell(column: &str, obj: &Value, _: Now) -> Value {
    match column {
        "Holder" => json!(s(obj, "/spec/holderIdentity")),
        _ => json!(""),
    }
}

/// The STATUS column of a pod, as kubectl's printer (`printPod`) computes it: the phase,
/// overridden by an init container that has not succeeded (`Init:1/2`, `Init:Error`,
/// `Init:CrashLoopBackOff`), else by the reason a container is waiting or terminated
/// (`PodInitializing`, `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`,
/// `Completed`, ...), and `Terminating` once deletion started.
pub fn pod_status(pod: &Value) -> String {
    pod_status_and_restarts(pod).0
}

/// `Signal:N` / `ExitCode:N` of a terminated state without a reason.
fn terminated_reason(t: &Value) -> String {
    match t.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => match t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
            Some(sig) => format!("Signal:{sig}"),
            None => format!("ExitCode:{}", t.get("exitCode").and_then(Value::as_i64).unwrap_or(0)),
        },
    }
}

/// The init container that holds the pod back, as `Init:...`, with the restarts counted
/// up to it; `None` when every init container succeeded.
fn init_status(pod: &Value) -> Option<(String, i64)> {
    let statuses = pod.pointer("/status/initContainerStatuses").and_then(Value::as_array)?;
    let total = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut restarts = 0;
    for (i, c) in statuses.iter().enumerate() {
        restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
        let terminated = c.pointer("/state/terminated");
        let waiting = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "PodInitializing");
        match (terminated, waiting) {
            (Some(t), _) if t.get("exitCode").and_then(Value::as_i64) == Some(0) => continue,
            (Some(t), _) => return Some((format!("Init:{}", terminated_reason(t)), restarts)),
            (None, Some(w)) => return Some((format!("Init:{w}"), restarts)),
            (None, None) => return Some((format!("Init:{i}/{total}"), restarts)),
        }
    }
    None
}

/// STATUS and RESTARTS of a pod (`printPod`): while an init container holds the pod back
/// (and it was never `Initialized`), its state and the init containers' restarts;
/// else the app containers'.
fn pod_status_and_restarts(pod: &Value) -> (String, i64) {
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let initialized = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Initialized")
                && c.get("status").and_then(Value::as_str) == Some("True")
        });
    let mut restarts = 0;
    match init_status(pod) {
        Some((init_reason, init_restarts)) if !initialized => {
            reason = init_reason;
            restarts = init_restarts;
        }
        _ => {
            let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
            for c in statuses.into_iter().flatten().rev() {
                restarts += c.get("restartCount").and_then(Value::as_i64).unwrap_or(0);
                if let Some(r) = c
                    .pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
                {
                    reason = r.to_string();
                } else if let Some(t) = c.pointer("/state/terminated") {
                    reason = terminated_reason(t);
                }
            }
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    (reason, restarts)
}

fn node_status(node: &Value) -> String {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut out = match ready {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        out.push_str(",SchedulingDisabled");
    }
    out
}

fn node_address(node: &Value, kind: &str) -> String {
    node.pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a.get("type").and_then(Value::as_str) == Some(kind)))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn containers(obj: &Value, field: &str) -> String {
    obj.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get(field).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `{"app":"web"}` → `app=web`
pub fn selector_text(map: Option<&Value>) -> String {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn service_ports(svc: &Value) -> String {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{port}:{np}/{proto}"),
                        None => format!("{port}/{proto}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn endpoints_text(ep: &Value) -> String {
    let mut all = Vec::new();
    for subset in ep.get("subsets").and_then(Value::as_array).into_iter().flatten() {
        let ports: Vec<i64> = subset
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("port").and_then(Value::as_i64))
            .collect();
        for addr in subset.get("addresses").and_then(Value::as_array).into_iter().flatten() {
            let ip = addr.get("ip").and_then(Value::as_str).unwrap_or("");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for p in &ports {
                all.push(format!("{ip}:{p}"));
            }
        }
    }
    if all.len() > 3 {
        let more = all.len() - 3;
        all.truncate(3);
        format!("{} + {more} more...", all.join(","))
    } else {
        all.join(",")
    }
}

/// kubectl's short list: the first three, then `+ N more...`; `<unset>` when empty.
fn list_with_more(all: Vec<String>) -> String {
    match all.len() {
        0 => "<unset>".to_string(),
        n if n > 3 => format!("{} + {} more...", all[..3].join(","), n - 3),
        _ => all.join(","),
    }
}

/// An EndpointSlice's ports: the numbers (a name, or `*`, where a port has no number).
fn slice_ports_text(slice: &Value) -> String {
    let ports = slice.get("ports").and_then(Value::as_array).into_iter().flatten();
    list_with_more(
        ports
            .map(|p| {
                match (
                    p.get("port").and_then(Value::as_i64),
                    p.get("name").and_then(Value::as_str),
                ) {
                    (Some(n), _) => n.to_string(),
                    (None, Some(name)) => name.to_string(),
                    (None, None) => "*".to_string(),
                }
            })
            .collect(),
    )
}

/// An EndpointSlice's endpoints: every address of every endpoint.
fn slice_endpoints_text(slice: &Value) -> String {
    let endpoints = slice.get("endpoints").and_then(Value::as_array).into_iter().flatten();
    list_with_more(
        endpoints
            .flat_map(|e| e.get("addresses").and_then(Value::as_array).into_iter().flatten())
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

/// How long ago `timestamp` was, in kubectl's words: `45s`, `3m12s`, `25m`, `4h10m`, `3d`.
pub fn age(timestamp: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0);
    human_duration(secs)
}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(25 * 60), "25m");
        assert_eq!(human_duration(4 * 3600 + 600), "4h10m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn pod_status_prefers_container_reasons() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&pod), "CrashLoopBackOff");
        let term = json!({"status": {"phase": "Running"}, "metadata": {"deletionTimestamp": "x"}});
        assert_eq!(pod_status(&term), "Terminating");
    }

    #[test]
    fn pod_status_shows_init_containers_as_kubectl_does() {
        let pod = |inits: Value, conds: Value| {
            json!({
                "spec": {"initContainers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Pending", "conditions": conds, "initContainerStatuses": inits,
                    "containerStatuses": [{"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]},
            })
        };
        let waiting = json!({"restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}});
        let done = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
        let running = json!({"restartCount": 0, "state": {"running": {}}});
        let failed = json!({"restartCount": 0, "state": {"terminated": {"exitCode": 1, "reason": "Error"}}});
        let crashing = json!({"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}});
        let no = json!([{"type": "Initialized", "status": "False"}]);
        let yes = json!([{"type": "Initialized", "status": "True"}]);
        assert_eq!(pod_status(&pod(json!([waiting, waiting]), no.clone())), "Init:0/2");
        assert_eq!(pod_status(&pod(json!([done, running]), no.clone())), "Init:1/2");
        assert_eq!(pod_status(&pod(json!([failed, waiting]), no.clone())), "Init:Error");
        let p = pod(json!([done, crashing]), no);
        assert_eq!(pod_status_and_restarts(&p), ("Init:CrashLoopBackOff".to_string(), 3));
        assert_eq!(pod_status(&pod(json!([done, done]), yes)), "PodInitializing");
        let signal = json!({"state": {"terminated": {"exitCode": 137, "signal": 9}}});
        let p = pod(json!([signal, waiting]), json!([]));
        assert_eq!(pod_status(&p), "Init:Signal:9");
    }
}
