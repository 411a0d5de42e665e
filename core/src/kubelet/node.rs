//! # Node registration and heartbeats (mirrors the kubelet's node status manager and node lease)
//!
//! A kubelet announces its node by creating a **Node** object: how much CPU, memory and
//! how many pods it offers (`capacity`, and `allocatable`, what is left for pods), its
//! addresses, its **conditions** (`Ready`, `MemoryPressure`, `DiskPressure`,
//! `PIDPressure`), and what software it runs (`nodeInfo`). The scheduler reads it to place
//! pods; `kubectl get nodes` prints it.
//!
//! Then it proves it is alive in two ways, as upstream does since Kubernetes 1.17:
//!
//! - the **Lease** `kube-node-lease/<node>` (`coordination.k8s.io/v1`): a tiny object whose
//!   `spec.renewTime` the kubelet bumps every 10 s. Cheap to write and to watch, it is the
//!   heartbeat the node lifecycle controller checks (a lease older than 50 s, upstream's
//!   grace period since v1.32, makes the node `NotReady`).
//! - the **Node status**: every 10 s the kubelet computes it again (the conditions, the
//!   runtime's health), but writes it only when something changed, or when its last write
//!   is five minutes old (upstream's `nodeStatusReportFrequency`): the `Ready` condition's
//!   `lastHeartbeatTime` then moves. A Node write goes to everybody who watches Nodes (the
//!   scheduler, the controllers), so with 5,000 nodes a write every 10 s would be 500
//!   Node events a second that say nothing new; the Lease carries the heartbeat instead.
//!
//! Every status heartbeat also asks the container runtime whether it is up (the CRI's
//! `Status` call, as upstream's kubelet does every few seconds): while it is not, the node's
//! `Ready` condition is `False` with reason `KubeletNotReady` and the message
//! `container runtime is down: ...`, so the scheduler stops placing pods there; it turns
//! `True` again when the runtime answers. The node's size comes from [`super::machine`]
//! (podman) or from flags (mock).
//!
//! Both heartbeats wait their interval plus a random 0–4 % ([`HEARTBEAT_JITTER`]), counted
//! from the end of the last write, as upstream's `wait.JitterUntil` does: nodes that start
//! together drift apart instead of writing in one burst every 10 s.
//!
//! Heartbeats are not traced: they would drown every trace in noise.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::{KUBELET_VERSION, Shared};
use crate::client::ClientError;
use crate::objects;

/// The four conditions a kubelet reports, with their healthy status, reason and message.
const CONDITIONS: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
];

/// What the heartbeat loop needs to know about the registered node.
pub(crate) struct NodeState {
    uid: String,
    /// The last health check of the runtime failed (to log only the changes).
    runtime_down: bool,
    /// The last status written (without its heartbeat times), and when.
    reported: Option<(Value, tokio::time::Instant)>,
}

/// The part of a Node's status the kubelet reports (as [`post_status`] patches it), without
/// its heartbeat times.
fn reported_part(node: &Value) -> Value {
    without_heartbeats(&json!({"status": {
        "conditions": node.pointer("/status/conditions"),
        "daemonEndpoints": node.pointer("/status/daemonEndpoints"),
    }}))
}

/// A status patch without its heartbeat times: what must change for it to be written early.
fn without_heartbeats(patch: &Value) -> Value {
    let mut essence = patch.clone();
    if let Some(conditions) = essence.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastHeartbeatTime");
            }
        }
    }
    essence
}

fn node_info() -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", "Node").expect("Node is a built-in kind")
}

fn lease_info() -> &'static objects::ResourceInfo {
    objects::by_gvk("coordination.k8s.io/v1", "Lease").expect("Lease is a built-in kind")
}

/// Our conditions, keeping `lastTransitionTime` of any `existing` condition whose status
/// did not change, and keeping conditions of other types that someone else reports. `Ready`
/// is `False` (`KubeletNotReady`) while the container runtime is down (`runtime` says why).
fn conditions(existing: Option<&Value>, runtime: &Result<(), String>) -> Value {
    let now = crate::objects::time::now();
    let old: Vec<Value> = existing.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out: Vec<Value> = old
        .iter()
        .filter(|c| {
            let t = c.get("type").and_then(Value::as_str).unwrap_or("");
            !CONDITIONS.iter().any(|(ty, ..)| *ty == t)
        })
        .cloned()
        .collect();
    for (ty, status, reason, message) in CONDITIONS {
        let (status, reason, message) = match runtime {
            Err(e) if ty == "Ready" => ("False", "KubeletNotReady", format!("container runtime is down: {e}")),
            _ => (status, reason, message.to_string()),
        };
        let previous = old.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty));
        let transition = objects::pod::transition_time(previous, status, &now);
        out.push(json!({
            "type": ty,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition,
        }));
    }
    Value::Array(out)
}

/// How long the runtime may take to answer the health check.
const RUNTIME_STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Ask the runtime whether it is up (upstream's kubelet does so every few seconds and
/// reports `container runtime is down` when it is not).
async fn runtime_health(shared: &Shared) -> Result<(), String> {
    match tokio::time::timeout(RUNTIME_STATUS_TIMEOUT, shared.runtime.status()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(crate::runtime::RuntimeError::Backend(why))) => Err(why),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{} did not answer within {}s",
            shared.runtime.name(),
            RUNTIME_STATUS_TIMEOUT.as_secs()
        )),
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn status(
    shared: &Shared,
    port: u16,
    runtime_version: &str,
    existing_conditions: Option<&Value>,
    runtime: &Result<(), String>,
) -> Value {
    let o = &shared.options;
    let resources = json!({
        "cpu": o.cpu,
        "memory": o.memory,
        "pods": o.max_pods.to_string(),
        "ephemeral-storage": "100Gi",
    });
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": conditions(existing_conditions, runtime),
        "addresses": [
            {"type": "InternalIP", "address": o.node_ip},
            {"type": "Hostname", "address": o.node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "kulisse",
            "containerRuntimeVersion": format!("{}://{}", shared.runtime.name(), runtime_version),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": arch(),
        },
    })
}

fn labels(shared: &Shared) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(shared.options.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(arch()));
    for (k, v) in &shared.options.labels {
        labels.insert(k.clone(), json!(v));
    }
    labels
}

/// Create the Node, or bring an existing one up to date (a kubelet restarting).
pub(crate) async fn register(shared: &Shared, port: u16, pod_cidr: &str) -> Result<NodeState, ClientError> {
    let runtime_version = shared
        .runtime
        .version()
        .await
        .map_err(|e| ClientError::Protocol(format!("asking the container runtime for its version: {e}")))?;
    let name = &shared.options.node_name;
    let runtime = runtime_health(shared).await;
    let mut spec = json!({"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]});
    if !shared.options.taints.is_empty() {
        spec["taints"] = json!(shared.options.taints);
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels(shared)},
        "spec": spec,
        "status": status(shared, port, &runtime_version, None, &runtime),
    });
    let created = match shared.client.create(node_info(), None, &node).await {
        Ok(obj) => obj,
        Err(e) if e.code() == Some(409) => update_existing(shared, port, pod_cidr, &runtime_version).await?,
        Err(e) => return Err(e),
    };
    tracing::info!(node = %name, "node registered");
    let state = NodeState {
        uid: objects::uid(&created).unwrap_or("").to_string(),
        runtime_down: false,
        // Registering is a report.
        reported: Some((reported_part(&created), tokio::time::Instant::now())),
    };
    renew_lease(shared, &state).await;
    Ok(state)
}

async fn update_existing(
    shared: &Shared,
    port: u16,
    pod_cidr: &str,
    runtime_version: &str,
) -> Result<Value, ClientError> {
    let name = &shared.options.node_name;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut node = shared.client.get(node_info(), None, name).await?;
        let mut merged_labels = node
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        merged_labels.extend(labels(shared));
        node["metadata"]["labels"] = Value::Object(merged_labels);
        if !node.get("spec").is_some_and(Value::is_object) {
            node["spec"] = json!({});
        }
        node["spec"]["podCIDR"] = json!(pod_cidr);
        node["spec"]["podCIDRs"] = json!([pod_cidr]);
        let mut taints: Vec<Value> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in &shared.options.taints {
            let same = |x: &Value| x.get("key") == t.get("key") && x.get("effect") == t.get("effect");
            if !taints.iter().any(same) {
                taints.push(t.clone());
            }
        }
        if !taints.is_empty() {
            node["spec"]["taints"] = json!(taints);
        }
        let runtime = runtime_health(shared).await;
        let new_status = status(
            shared,
            port,
            runtime_version,
            node.pointer("/status/conditions"),
            &runtime,
        );
        node["status"] = new_status;
        match shared.client.replace(node_info(), None, name, None, &node).await {
            Ok(obj) => return Ok(obj),
            Err(e) if e.code() == Some(409) && attempt < 5 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Bump the Lease's `renewTime`, creating the Lease if it is missing.
async fn renew_lease(shared: &Shared, state: &NodeState) {
    let name = &shared.options.node_name;
    let spec = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": shared.options.lease_duration_seconds,
        "renewTime": crate::objects::time::micro_now(),
    });
    let patch = json!({"spec": spec});
    match shared
        .client
        .merge_patch(lease_info(), Some("kube-node-lease"), name, None, &patch)
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(404) => {
            let mut lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            });
            if !state.uid.is_empty() {
                lease["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1",
                    "kind": "Node",
                    "name": name,
                    "uid": state.uid,
                }]);
            }
            if let Err(e) = shared
                .client
                .create(lease_info(), Some("kube-node-lease"), &lease)
                .await
                && e.code() != Some(409)
            {
                tracing::warn!(node = %name, "creating the node lease failed: {e}");
            }
        }
        Err(e) => tracing::warn!(node = %name, "renewing the node lease failed: {e}"),
    }
}

/// Post the Node's status: fresh heartbeats, transition times kept. Re-registers a Node
/// that was deleted.
async fn post_status(shared: &Shared, state: &mut NodeState, port: u16, pod_cidr: &str) {
    let name = &shared.options.node_name;
    let node = match shared.client.get(node_info(), None, name).await {
        Ok(n) => n,
        Err(e) if e.code() == Some(404) => {
            tracing::info!(node = %name, "the Node object is gone; registering again");
            if let Ok(s) = register(shared, port, pod_cidr).await {
                *state = s;
            }
            return;
        }
        Err(e) => {
            tracing::warn!(node = %name, "reading the node failed: {e}");
            return;
        }
    };
    let runtime = runtime_health(shared).await;
    if runtime.is_err() != state.runtime_down {
        state.runtime_down = runtime.is_err();
        match &runtime {
            Err(e) => tracing::warn!(node = %name, "container runtime is down: {e}; reporting the node NotReady"),
            Ok(()) => tracing::info!(node = %name, "container runtime is up again; reporting the node Ready"),
        }
    }
    let patch = json!({"status": {
        "conditions": conditions(node.pointer("/status/conditions"), &runtime),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }});
    let essence = without_heartbeats(&patch);
    // What the API server holds now, in the same shape: someone else may have changed it
    // (the node lifecycle controller marks a silent node `Unknown`).
    let stored = reported_part(&node);
    let now = tokio::time::Instant::now();
    let unchanged = state.reported.as_ref().is_some_and(|(last, at)| {
        *last == essence && *last == stored && now.duration_since(*at) < shared.options.node_status_report_interval
    });
    if unchanged {
        return; // nothing new, and the last report is recent
    }
    match shared
        .client
        .merge_patch(node_info(), None, name, Some("status"), &patch)
        .await
    {
        Ok(_) => state.reported = Some((essence, now)),
        Err(e) => tracing::warn!(node = %name, "updating the node status failed: {e}"),
    }
}

/// Upstream's jitter factor for both heartbeats: each wait is the interval plus up to 4 % more.
pub const HEARTBEAT_JITTER: f64 = 0.04;

/// `interval` plus a random share of up to [`HEARTBEAT_JITTER`] of it (`wait.Jitter`).
fn jittered(interval: Duration) -> Duration {
    interval
        .max(Duration::from_millis(10))
        .mul_f64(1.0 + rand::random::<f64>() * HEARTBEAT_JITTER)
}

/// Renew the Lease and post the Node status, each on its interval, until shutdown.
///
/// Each wait is jittered and counted from the end of the previous write, as upstream's
/// `wait.JitterUntil(..., 0.04, sliding)` does for both loops: nodes started together (all
/// of `kulisse up --nodes 100`) would otherwise renew at the same instant every 10 s, and
/// the API server would get 200 writes at once, which every other request then waits behind.
pub(crate) async fn heartbeat_loop(
    shared: std::sync::Arc<Shared>,
    mut state: NodeState,
    port: u16,
    pod_cidr: String,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease_every = shared.options.lease_renew_interval;
    let status_every = shared.options.node_status_update_interval;
    let now = tokio::time::Instant::now();
    let (mut lease_at, mut status_at) = (now + jittered(lease_every), now + jittered(status_every));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep_until(lease_at) => {
                renew_lease(&shared, &state).await;
                lease_at = tokio::time::Instant::now() + jittered(lease_every);
            }
            _ = tokio::time::sleep_until(status_at) => {
                post_status(&shared, &mut state, port, &pod_cidr).await;
                status_at = tokio::time::Instant::now() + jittered(status_every);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(conditions: &Value) -> &Value {
        conditions
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
    }

    #[test]
    fn heartbeats_wait_the_interval_plus_up_to_four_percent() {
        let ten = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(ten)).collect();
        assert!(waits.iter().all(|w| *w >= ten && *w <= ten.mul_f64(1.04)), "{waits:?}");
        // Spread, not one value: nodes started together drift apart.
        let spread = *waits.iter().max().unwrap() - *waits.iter().min().unwrap();
        assert!(spread > Duration::from_millis(200), "{spread:?}");
    }

    #[test]
    fn ready_follows_the_runtime() {
        let down = conditions(None, &Err("connection refused".into()));
        let r = ready(&down);
        assert_eq!(r["status"], "False");
        assert_eq!(r["reason"], "KubeletNotReady");
        assert_eq!(r["message"], "container runtime is down: connection refused");
        let pressure = down
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "MemoryPressure")
            .unwrap();
        assert_eq!(pressure["status"], "False", "only Ready reports the runtime");

        // an old transition time shows whether the status changed
        let mut old = down.clone();
        for c in old.as_array_mut().unwrap() {
            c["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        }
        let still_down = conditions(Some(&old), &Err("connection refused".into()));
        assert_eq!(ready(&still_down)["lastTransitionTime"], "2020-01-01T00:00:00Z");
        let up = conditions(Some(&old), &Ok(()));
        let r = ready(&up);
        assert_eq!(r["status"], "True");
        assert_eq!(r["reason"], "KubeletReady");
        assert_ne!(r["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }
}
