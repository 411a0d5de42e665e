//! # The scheduler cache (mirrors kube-scheduler's `internal/cache` and `framework.NodeInfo`)
//!
//! To decide where a pod fits, the scheduler needs, for every node, how much of its
//! `allocatable` CPU, memory and pod slots is already *requested* by the pods bound to it,
//! and which host ports those pods use. Adding this up from all pods for every decision
//! would cost `pods × nodes`; kube-scheduler instead keeps a **cache** that is updated one
//! event at a time: a pod bound to `node-2` adds its requests to `node-2`'s totals, a pod
//! deleted subtracts them. Each decision then reads ready-made totals: `O(nodes)` per pod.
//!
//! The cache also holds **assumed** pods. Binding a pod is an API call that takes time; the
//! scheduler does not wait for it. It *assumes* the pod is on the chosen node right away
//! (so the next pod sees the capacity as taken) and moves on. When the informer later shows
//! the pod bound, the assumption becomes fact; if the bind fails, the assumption is
//! *forgotten* and the capacity is free again.
//!
//! An assumption whose bind *succeeded* but which the informer never confirms (the pod's
//! update was lost, or the pod vanished while the watch was down) would hold its capacity
//! forever. So, as upstream's cache did, an assumed pod **expires**: when its bind finishes
//! it gets a deadline ([`SchedulerCache::finish_binding`]), and a periodic sweep
//! ([`SchedulerCache::cleanup_expired`], every second as upstream's `cleanAssumedPeriod`)
//! drops assumptions past it. Upstream's TTL (`durationToExpireAssumedPod`) was 30 s, then
//! 15 min (kubernetes#106412: a short TTL expired pods whose confirmation was merely slow,
//! and double-booked their nodes); since 1.25 it is 0, "never", and the mechanism was later
//! removed. kulisse keeps the 15-minute safety net (`scheduler::Options::assumed_pod_ttl`).
//!
//! This module also turns the raw JSON of Pods and Nodes into the few numbers and lists the
//! filter and score plugins use ([`PodInfo`], [`NodeView`]), parsed once per change instead
//! of once per decision.
//!
//! A node's entry holds its pods' usage itself (shared with the pod's own entry), so counting
//! the pods on a node, which topology spreading does for every scored node of every cycle, is
//! one walk over the node's pods and not a lookup per pod. The maps hash their string keys
//! with foldhash, not the standard library's SipHash: a scheduling cycle looks nodes up by
//! name thousands of times, and in a profile of the scheduler alone at 5,000 nodes SipHash
//! took about 8 % of the scheduler's CPU.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::objects::quantity;

/// The cache's maps: keyed by node names and pod keys, hashed with foldhash.
type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// What a pod asks for when it does not say (kube-scheduler's `DefaultMilliCPURequest`):
/// used for *scoring* only, so that pods without requests still spread out.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The same for memory (`DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of resources: CPU in millicores, memory and ephemeral storage in bytes, plus
/// extended resources (`nvidia.com/gpu`, `hugepages-2Mi`, ...) in their own units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Add `other` to `self` (saturating: hostile numbers cannot overflow).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    /// Subtract `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.scalar.remove(k);
                }
            }
        }
    }

    /// Component-wise maximum.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// Read a `requests`/`allocatable`-shaped map (`{"cpu": "500m", "memory": "1Gi"}`).
    /// `pods` is returned apart (it is a count, only nodes have it). Errors name the resource.
    pub fn from_map(map: Option<&serde_json::Map<String, Value>>) -> Result<(Resources, Option<i64>), String> {
        let mut r = Resources::default();
        let mut pods = None;
        for (name, v) in map.into_iter().flatten() {
            let parsed = match name.as_str() {
                "cpu" => quantity::cpu_millis(v).map(|m| r.milli_cpu = m),
                "memory" => quantity::whole_units(v).map(|b| r.memory = b),
                "ephemeral-storage" => quantity::whole_units(v).map(|b| r.ephemeral_storage = b),
                "pods" => quantity::whole_units(v).map(|n| pods = Some(n)),
                // `storage` is a volume claim resource, never a container one.
                "storage" => Ok(()),
                other => quantity::whole_units(v).map(|n| {
                    if n != 0 {
                        r.scalar.insert(other.to_string(), n);
                    }
                }),
            };
            parsed.map_err(|e| format!("{name}: {e}"))?;
        }
        Ok((r, pods))
    }
}

/// One host port a pod asks for (`ports[].hostPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `hostIP`, `0.0.0.0` when not given (all addresses).
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub port: i64,
}

/// A taint on a node (`spec.taints[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A toleration of a pod (`spec.tolerations[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    /// `Equal` (the default) or `Exists`.
    pub operator: String,
    pub value: String,
    /// Empty: tolerates every effect.
    pub effect: String,
}

impl Toleration {
    /// Kubernetes' `Toleration.ToleratesTaint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "Exists" => true,
            "" | "Equal" => self.value == taint.value,
            _ => false,
        }
    }
}

/// What the scheduler needs to know about a pod, parsed once from its JSON.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The effective requests: containers summed, init containers as Kubernetes counts
    /// them, plus the pod overhead.
    pub requests: Resources,
    /// CPU and memory with the defaults filled in for containers that request none (for
    /// scoring only).
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    pub node_selector: BTreeMap<String, String>,
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms`.
    pub required_node_affinity: Option<Vec<Value>>,
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeName` (set: the pod is bound, or was created for a fixed node).
    pub node_name: Option<String>,
    /// `spec.priority`: higher goes first in the scheduling queue.
    pub priority: i32,
    /// `metadata.labels` (what topology spread constraints select on).
    pub labels: BTreeMap<String, String>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// `affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution`: `(weight,
    /// preference)`, terms of weight 0 left out.
    pub preferred_node_affinity: Vec<(i64, Value)>,
    /// `spec.topologySpreadConstraints`, as written (see [`super::spread`]).
    pub topology_spread_constraints: Vec<Value>,
    /// The `ownerReference` with `controller: true`: `(apiVersion, kind, name)`.
    pub controller: Option<(String, String, String)>,
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// One container's requests: `resources.requests`, and for resources with only a limit, the
/// limit (the API server defaults a missing request to the limit in Kubernetes).
fn container_requests(c: &Value, which: &str) -> Result<Resources, String> {
    let requests = c.pointer("/resources/requests").and_then(Value::as_object);
    let limits = c.pointer("/resources/limits").and_then(Value::as_object);
    let mut merged = requests.cloned().unwrap_or_default();
    for (k, v) in limits.into_iter().flatten() {
        merged.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let name = str_at(c, "name");
    Resources::from_map(Some(&merged))
        .map(|(r, _)| r)
        .map_err(|e| format!("{which} {name:?}: resources.requests.{e}"))
}

/// What a pod requests from a node (`PodRequests`), and the same with the defaults the
/// scoring uses for containers without a request (`GetNonzeroRequests`): `(requests,
/// non-zero milli-CPU, non-zero memory)`.
///
/// Kubernetes' AggregateContainerRequests: regular containers run together (sum); init
/// containers run one after another (max), next to the sidecars (restartable init
/// containers) started before them; the pod's `overhead` comes on top.
fn pod_requests(
    spec: &Value,
    containers: &[Value],
    init_containers: &[Value],
) -> Result<(Resources, i64, i64), String> {
    let mut sum = Resources::default();
    let mut non_zero_cpu: i64 = 0;
    let mut non_zero_memory: i64 = 0;
    for c in containers {
        let r = container_requests(c, "container")?;
        non_zero_cpu = non_zero_cpu.saturating_add(if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU_REQUEST
        } else {
            r.milli_cpu
        });
        non_zero_memory = non_zero_memory.saturating_add(if r.memory == 0 {
            DEFAULT_MEMORY_REQUEST
        } else {
            r.memory
        });
        sum.add(&r);
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in init_containers {
        let r = container_requests(c, "init container")?;
        if str_at(c, "restartPolicy") == "Always" {
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut during = r.clone();
            during.add(&sidecars);
            init_max.max_with(&during);
        }
    }
    sum.add(&sidecars);
    sum.max_with(&init_max);
    if let Some(overhead) = spec.get("overhead").and_then(Value::as_object) {
        let (o, _) = Resources::from_map(Some(overhead)).map_err(|e| format!("overhead.{e}"))?;
        sum.add(&o);
        non_zero_cpu = non_zero_cpu.saturating_add(o.milli_cpu);
        non_zero_memory = non_zero_memory.saturating_add(o.memory);
    }
    non_zero_cpu = non_zero_cpu.max(sum.milli_cpu);
    non_zero_memory = non_zero_memory.max(sum.memory);
    Ok((sum, non_zero_cpu, non_zero_memory))
}

/// The host ports the pod's containers ask for (`GetContainerPorts`, those with a
/// `hostPort`), with upstream's defaults: IP `0.0.0.0`, protocol TCP.
fn host_ports(containers: &[Value]) -> Vec<HostPort> {
    let mut host_ports = Vec::new();
    for c in containers {
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            let port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
            if port > 0 {
                let ip = str_at(p, "hostIP");
                let protocol = str_at(p, "protocol");
                host_ports.push(HostPort {
                    ip: if ip.is_empty() {
                        "0.0.0.0".into()
                    } else {
                        ip.to_string()
                    },
                    protocol: if protocol.is_empty() {
                        "TCP".into()
                    } else {
                        protocol.to_string()
                    },
                    port,
                });
            }
        }
    }
    host_ports
}

impl PodInfo {
    /// Parse a Pod. An error (an invalid quantity, say) names the container and resource.
    pub fn from_pod(pod: &Value) -> Result<PodInfo, String> {
        let spec = pod.get("spec").unwrap_or(&Value::Null);
        let empty = Vec::new();
        let containers = spec.get("containers").and_then(Value::as_array).unwrap_or(&empty);
        let init_containers = spec.get("initContainers").and_then(Value::as_array).unwrap_or(&empty);
        let (sum, non_zero_cpu, non_zero_memory) = pod_requests(spec, containers, init_containers)?;
        let host_ports = host_ports(containers);

        let node_selector = spec
            .get("nodeSelector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let required_node_affinity = spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array)
            .cloned();
        let tolerations = spec
            .get("tolerations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| Toleration {
                key: str_at(t, "key").to_string(),
                operator: str_at(t, "operator").to_string(),
                value: str_at(t, "value").to_string(),
                effect: str_at(t, "effect").to_string(),
            })
            .collect();
        Ok(PodInfo {
            labels: crate::objects::labels(pod),
            terminating: crate::objects::deletion_timestamp(pod).is_some(),
            preferred_node_affinity: preferred_terms(spec),
            topology_spread_constraints: spec
                .get("topologySpreadConstraints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            controller: controller_of(pod),
            namespace: crate::objects::namespace(pod).unwrap_or("default").to_string(),
            name: crate::objects::name(pod).unwrap_or("").to_string(),
            requests: sum,
            non_zero_cpu,
            non_zero_memory,
            host_ports,
            node_selector,
            required_node_affinity,
            tolerations,
            node_name: spec
                .get("nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            priority: spec
                .get("priority")
                .and_then(Value::as_i64)
                .map(|p| p.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
                .unwrap_or(0),
        })
    }

    /// What the pod takes from a node once placed there.
    pub fn usage(&self) -> PodUsage {
        PodUsage {
            requests: self.requests.clone(),
            non_zero_cpu: self.non_zero_cpu,
            non_zero_memory: self.non_zero_memory,
            host_ports: self.host_ports.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            terminating: self.terminating,
        }
    }
}

/// The preferred node affinity terms with a weight (upstream skips weight 0).
fn preferred_terms(spec: &Value) -> Vec<(i64, Value)> {
    spec.pointer("/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let weight = t.get("weight").and_then(Value::as_i64).unwrap_or(0);
            let preference = t.get("preference").cloned().unwrap_or(Value::Null);
            (weight != 0).then_some((weight, preference))
        })
        .collect()
}

/// The controlling owner of a pod (`controller: true`), as kube-scheduler's
/// `GetControllerOf`.
fn controller_of(pod: &Value) -> Option<(String, String, String)> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| {
            (
                str_at(r, "apiVersion").to_string(),
                str_at(r, "kind").to_string(),
                str_at(r, "name").to_string(),
            )
        })
}

/// What a placed pod takes from its node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub requests: Resources,
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    pub host_ports: Vec<HostPort>,
    /// Namespace and labels, for counting the pods a topology spread constraint selects.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: not counted by topology spread (as upstream).
    pub terminating: bool,
}

impl PodUsage {
    /// The usage of a bound pod. A pod the API server accepted with an unreadable quantity
    /// counts as requesting nothing of that kind (it cannot be helped at this point).
    pub fn of_pod(pod: &Value) -> PodUsage {
        match PodInfo::from_pod(pod) {
            Ok(info) => info.usage(),
            Err(e) => {
                tracing::debug!(pod = %crate::client::informer::key_of(pod), "scheduler cache: {e}");
                PodUsage::default()
            }
        }
    }
}

/// Readiness of a node from its `Ready` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// `Ready` is `False`, or the node never reported it.
    NotReady,
    /// `Ready` is `Unknown`: the node stopped reporting.
    Unknown,
}

/// The parts of a Node the plugins read, parsed once per node change.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub readiness: Readiness,
    pub allocatable: Resources,
    /// `allocatable.pods`: how many pods the kubelet accepts.
    pub allowed_pods: i64,
    /// A problem reading the node (an invalid allocatable quantity), shown in traces.
    pub problem: Option<String>,
}

impl NodeView {
    pub fn from_node(node: &Value) -> NodeView {
        let name = crate::objects::name(node).unwrap_or("").to_string();
        let taints = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: str_at(t, "key").to_string(),
                value: str_at(t, "value").to_string(),
                effect: str_at(t, "effect").to_string(),
            })
            .collect();
        let readiness = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| str_at(c, "type") == "Ready"))
            .map(|c| match str_at(c, "status") {
                "True" => Readiness::Ready,
                "Unknown" => Readiness::Unknown,
                _ => Readiness::NotReady,
            })
            .unwrap_or(Readiness::NotReady);
        let (allocatable, allowed_pods, problem) =
            match Resources::from_map(node.pointer("/status/allocatable").and_then(Value::as_object)) {
                Ok((r, pods)) => (r, pods.unwrap_or(0), None),
                Err(e) => (Resources::default(), 0, Some(format!("status.allocatable.{e}"))),
            };
        NodeView {
            name,
            labels: crate::objects::labels(node),
            taints,
            unschedulable: node
                .pointer("/spec/unschedulable")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            readiness,
            allocatable,
            allowed_pods,
            problem,
        }
    }

    /// True if the two views differ in anything the filters or scores read: a change that
    /// may make an unschedulable pod fit.
    pub fn differs_for_scheduling(&self, other: &NodeView) -> bool {
        self.labels != other.labels
            || self.taints != other.taints
            || self.unschedulable != other.unschedulable
            || self.readiness != other.readiness
            || self.allocatable != other.allocatable
            || self.allowed_pods != other.allowed_pods
    }
}

/// One node's entry in the cache (kube-scheduler's `NodeInfo`).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `None` when the Node object is gone but pods bound to it are still known.
    pub node: Option<Arc<NodeView>>,
    /// Sum of the requests of the pods on the node (for the fit check).
    pub requested: Resources,
    /// Sum with the defaults for pods that request nothing (for scoring).
    pub non_zero_cpu: i64,
    pub non_zero_memory: i64,
    /// The pods on the node by key (`namespace/name`), assumed ones included, with what
    /// they take (shared with the cache's entry of the pod).
    pub pods: Map<String, Arc<PodUsage>>,
    /// Host ports in use: (protocol, port) → addresses → how many pods use it.
    pub used_ports: Map<(String, i64), Map<String, u32>>,
}

impl NodeInfo {
    fn add(&mut self, key: &str, usage: &Arc<PodUsage>) {
        let std::collections::hash_map::Entry::Vacant(slot) = self.pods.entry(key.to_string()) else {
            return;
        };
        slot.insert(usage.clone());
        self.requested.add(&usage.requests);
        self.non_zero_cpu = self.non_zero_cpu.saturating_add(usage.non_zero_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_add(usage.non_zero_memory);
        for hp in &usage.host_ports {
            *self
                .used_ports
                .entry((hp.protocol.clone(), hp.port))
                .or_default()
                .entry(hp.ip.clone())
                .or_insert(0) += 1;
        }
    }

    fn remove(&mut self, key: &str, usage: &PodUsage) {
        if self.pods.remove(key).is_none() {
            return;
        }
        self.requested.sub(&usage.requests);
        self.non_zero_cpu = self.non_zero_cpu.saturating_sub(usage.non_zero_cpu);
        self.non_zero_memory = self.non_zero_memory.saturating_sub(usage.non_zero_memory);
        for hp in &usage.host_ports {
            let k = (hp.protocol.clone(), hp.port);
            if let Some(ips) = self.used_ports.get_mut(&k) {
                if let Some(n) = ips.get_mut(&hp.ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        ips.remove(&hp.ip);
                    }
                }
                if ips.is_empty() {
                    self.used_ports.remove(&k);
                }
            }
        }
    }

    /// True if `port` conflicts with a host port in use (kube-scheduler's `HostPortInfo.CheckConflict`):
    /// same protocol and port, and the same address or either side on `0.0.0.0`.
    pub fn port_conflicts(&self, port: &HostPort) -> bool {
        let Some(ips) = self.used_ports.get(&(port.protocol.clone(), port.port)) else {
            return false;
        };
        port.ip == "0.0.0.0" || ips.contains_key("0.0.0.0") || ips.contains_key(&port.ip)
    }
}

/// A pod the cache counts on a node.
#[derive(Debug, Clone)]
struct CachedPod {
    node: String,
    usage: Arc<PodUsage>,
    /// Placed by this scheduler, bind not yet confirmed by the informer.
    assumed: bool,
    /// For an assumed pod whose bind finished: when the assumption expires.
    deadline: Option<Instant>,
}

/// The cache: nodes with their running totals, and the pods counted on them.
#[derive(Debug, Default)]
pub struct SchedulerCache {
    nodes: Map<String, NodeInfo>,
    /// Names of the nodes whose Node object exists, sorted: the order nodes are visited in.
    order: Vec<String>,
    pods: Map<String, CachedPod>,
}

impl SchedulerCache {
    /// Add or replace a node. Returns true if it is new or changed in a way that matters to
    /// scheduling (so pods that did not fit before should be tried again).
    pub fn upsert_node(&mut self, node: &Value) -> bool {
        let view = NodeView::from_node(node);
        let name = view.name.clone();
        if name.is_empty() {
            return false;
        }
        let info = self.nodes.entry(name.clone()).or_default();
        let changed = match &info.node {
            Some(old) => old.differs_for_scheduling(&view),
            None => true,
        };
        let was_listed = info.node.is_some();
        info.node = Some(Arc::new(view));
        if !was_listed && let Err(pos) = self.order.binary_search(&name) {
            self.order.insert(pos, name);
        }
        changed
    }

    /// Remove a node. Pods still bound to it stay counted until they are deleted.
    pub fn remove_node(&mut self, name: &str) {
        if let Ok(pos) = self.order.binary_search_by(|n| n.as_str().cmp(name)) {
            self.order.remove(pos);
        }
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Count a bound pod on `node` (add, or update an earlier entry, confirming an
    /// assumption).
    pub fn upsert_pod(&mut self, key: &str, node: &str, usage: PodUsage) {
        if let Some(old) = self.pods.get(key)
            && old.node == node
            && *old.usage == usage
        {
            if let Some(p) = self.pods.get_mut(key) {
                p.assumed = false;
                p.deadline = None;
            }
            return;
        }
        self.remove_pod(key);
        let usage = Arc::new(usage);
        self.nodes.entry(node.to_string()).or_default().add(key, &usage);
        self.pods.insert(
            key.to_string(),
            CachedPod {
                node: node.to_string(),
                usage,
                assumed: false,
                deadline: None,
            },
        );
    }

    /// Stop counting a pod (deleted, or finished). Returns the node it was on.
    pub fn remove_pod(&mut self, key: &str) -> Option<String> {
        let old = self.pods.remove(key)?;
        if let Some(info) = self.nodes.get_mut(&old.node) {
            info.remove(key, &old.usage);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&old.node);
            }
        }
        Some(old.node)
    }

    /// Count a pod on `node` before its bind is confirmed.
    pub fn assume(&mut self, key: &str, node: &str, usage: PodUsage) {
        self.upsert_pod(key, node, usage);
        if let Some(p) = self.pods.get_mut(key) {
            p.assumed = true;
        }
    }

    /// Undo [`SchedulerCache::assume`] after a failed bind (no-op if the informer has
    /// confirmed the pod meanwhile).
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    /// The bind of an assumed pod returned successfully: the informer should confirm it
    /// soon, and if it has not after `ttl`, the assumption expires (upstream's
    /// `FinishBinding`). No-op for a pod that is not assumed.
    pub fn finish_binding(&mut self, key: &str, now: Instant, ttl: Duration) {
        if let Some(p) = self.pods.get_mut(key).filter(|p| p.assumed) {
            p.deadline = now.checked_add(ttl);
        }
    }

    /// Drop the assumptions whose deadline has passed, freeing their capacity. Returns
    /// their keys (upstream's `cleanupAssumedPods`). Pods whose bind is still running have
    /// no deadline and never expire.
    pub fn cleanup_expired(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.assumed && p.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            self.remove_pod(key);
        }
        expired
    }

    /// True while a pod is assumed but its bind is not confirmed.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Node names in visiting order (only nodes whose Node object exists).
    pub fn node_names(&self) -> &[String] {
        &self.order
    }

    /// One node's entry.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// What the pods counted on `node` (bound or assumed) take, with their labels.
    pub fn pods_on<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a PodUsage> + 'a {
        self.nodes
            .get(node)
            .into_iter()
            .flat_map(|n| n.pods.values())
            .map(|usage| usage.as_ref())
    }

    /// How many pods are counted (bound or assumed).
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": name}, "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(cpu: &str, mem: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}},
             "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})
    }

    #[test]
    fn requests_sum_containers_and_take_the_max_of_init_containers() {
        let p = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m"}}},
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1", "memory": "16Mi"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
            ],
            "overhead": {"cpu": "10m"}
        }});
        let info = PodInfo::from_pod(&p).unwrap();
        // containers 300m + sidecar 50m = 350m; init i1 alone 1000m → max 1000m; + overhead
        assert_eq!(info.requests.milli_cpu, 1010);
        assert_eq!(info.requests.memory, 64 << 20);
        // b requests no memory: the default 200Mi counts for scoring
        assert_eq!(info.non_zero_memory, (64 << 20) + DEFAULT_MEMORY_REQUEST);
        assert_eq!(info.non_zero_cpu, 1010);
    }

    #[test]
    fn invalid_quantity_names_the_container() {
        let p = json!({"spec": {"containers": [{"name": "web", "resources": {"requests": {"cpu": "lots"}}}]}});
        let err = PodInfo::from_pod(&p).unwrap_err();
        assert!(
            err.contains("container \"web\"") && err.contains("cpu") && err.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn totals_follow_pod_events_incrementally() {
        let mut c = SchedulerCache::default();
        assert!(c.upsert_node(&node("n1", "2", "4Gi")));
        assert!(!c.upsert_node(&node("n1", "2", "4Gi")), "same node again is no change");
        assert!(c.upsert_node(&node("n1", "4", "4Gi")));
        let usage = PodUsage::of_pod(&pod("500m", "1Gi"));
        c.assume("default/a", "n1", usage.clone());
        assert!(c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 500);
        // the informer confirms: counted once, no longer assumed
        c.upsert_pod("default/a", "n1", usage.clone());
        assert!(!c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 500);
        c.forget("default/a");
        assert_eq!(c.node("n1").unwrap().pods.len(), 1, "a confirmed pod is not forgotten");
        c.upsert_pod("default/b", "n1", usage.clone());
        assert_eq!(c.node("n1").unwrap().requested.memory, 2 << 30);
        assert!(c.node("n1").unwrap().port_conflicts(&usage.host_ports[0]));
        c.remove_pod("default/a");
        c.remove_pod("default/b");
        let n1 = c.node("n1").unwrap();
        assert_eq!(n1.requested, Resources::default());
        assert!(n1.used_ports.is_empty());
        // a node deleted while pods remain stays until they go
        c.upsert_pod("default/c", "n1", usage);
        c.remove_node("n1");
        assert!(c.node_names().is_empty());
        assert!(c.node("n1").is_some());
        c.remove_pod("default/c");
        assert!(c.node("n1").is_none());
    }

    #[test]
    fn assumptions_expire_only_after_their_bind_finished() {
        let mut c = SchedulerCache::default();
        c.upsert_node(&node("n1", "4", "4Gi"));
        let usage = PodUsage::of_pod(&pod("1", "1Gi"));
        let t0 = Instant::now();
        let ttl = Duration::from_secs(900);
        c.assume("default/binding", "n1", usage.clone());
        c.assume("default/lost", "n1", usage.clone());
        c.assume("default/confirmed", "n1", usage.clone());
        c.finish_binding("default/lost", t0, ttl);
        c.finish_binding("default/confirmed", t0, ttl);
        c.upsert_pod("default/confirmed", "n1", usage.clone());
        assert!(c.cleanup_expired(t0 + ttl - Duration::from_secs(1)).is_empty());
        assert_eq!(c.cleanup_expired(t0 + ttl), ["default/lost"]);
        let n1 = c.node("n1").unwrap();
        assert_eq!(n1.requested.milli_cpu, 2000, "the lost pod's cpu is free again");
        assert!(c.is_assumed("default/binding"), "a bind in progress never expires");
        assert!(!c.is_assumed("default/lost") && c.node("n1").unwrap().pods.len() == 2);
        assert!(c.cleanup_expired(t0 + ttl * 10).is_empty());
    }

    #[test]
    fn toleration_matching() {
        let t = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoSchedule".into(),
        };
        let tol = |key: &str, op: &str, value: &str, effect: &str| Toleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
        };
        assert!(tol("k", "Equal", "v", "NoSchedule").tolerates(&t));
        assert!(tol("k", "", "v", "").tolerates(&t));
        assert!(tol("k", "Exists", "", "").tolerates(&t));
        assert!(
            tol("", "Exists", "", "").tolerates(&t),
            "an empty key with Exists tolerates everything"
        );
        assert!(!tol("k", "Equal", "w", "").tolerates(&t));
        assert!(!tol("k", "Exists", "", "NoExecute").tolerates(&t));
        assert!(!tol("other", "Exists", "", "").tolerates(&t));
    }
}
