//! # Filter and score plugins (mirrors kube-scheduler's `framework/plugins`)
//!
//! kube-scheduler decides in two rounds, each made of small **plugins**:
//!
//! 1. **Filter**: each plugin can veto a node for this pod, with a reason. A node that
//!    passes every filter is *feasible*. The plugins run in this order, and the first veto
//!    stops the check for that node (as upstream):
//!    - `NodeUnschedulable`: the node is cordoned (`spec.unschedulable`, `kubectl cordon`);
//!    - `NodeName`: the pod asks for a specific node (`spec.nodeName`);
//!    - `TaintToleration`: the node has a `NoSchedule`/`NoExecute` taint the pod does not
//!      tolerate. A node whose `Ready` condition is not `True` counts as tainted
//!      `node.kubernetes.io/not-ready` (or `.../unreachable` when `Unknown`), which is what
//!      the node lifecycle controller puts on such nodes;
//!    - `NodeAffinity`: the node's labels do not match the pod's `nodeSelector` or required
//!      node affinity;
//!    - `NodePorts`: a `hostPort` the pod wants is already taken on the node;
//!    - `NodeResourcesFit`: the pod's requests do not fit in `allocatable` minus what the
//!      node's pods already request (`Insufficient cpu`, `Insufficient memory`,
//!      `Too many pods`);
//!    - `PodTopologySpread`: placing the pod there would break one of its
//!      `whenUnsatisfiable: DoNotSchedule` spread constraints ([`super::spread`]).
//! 2. **Score**: each feasible node gets points from 0 to 100 per plugin, and the total is
//!    their sum with the default profile's weights:
//!    - `TaintToleration` (×3): the fewer `PreferNoSchedule` taints the pod does not
//!      tolerate, the better (none: 100; the node with most: 0);
//!    - `NodeAffinity` (×2): the sum of the `weight`s of the pod's *preferred* node affinity
//!      terms the node matches, scaled so that the best node gets 100;
//!    - `NodeResourcesFit` (×1, strategy `LeastAllocated`): the more CPU and memory stays
//!      free after placing the pod, the better;
//!    - `PodTopologySpread` (×2): the fewer pods of the same kind (same Service or
//!      ReplicaSet, or the pod's `ScheduleAnyway` constraints) already in the node's
//!      domain, the better. This is what spreads a Deployment's replicas over the nodes;
//!    - `NodeResourcesBalancedAllocation` (×1): the closer the CPU share and memory share
//!      used are to each other, the better: no node ends up full on CPU but empty on memory.
//!
//!    Plugins that compare nodes with each other (`TaintToleration`, `NodeAffinity`,
//!    `PodTopologySpread`) first give raw points and then *normalise* them over all feasible
//!    nodes, as upstream's `NormalizeScore` does.
//!
//! Only *requests* count, never actual usage: the scheduler plans with what pods reserve.

use std::collections::BTreeMap;

use serde_json::Value;

use super::cache::{NodeInfo, NodeView, PodInfo, Readiness, SchedulerCache, Taint};
use super::spread;

/// The highest score one plugin gives (kube-scheduler's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream's reason texts, as `kubectl describe pod` shows them.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// The taint the node lifecycle controller puts on a node whose `Ready` is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// ... and on a node whose `Ready` is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint that goes with `spec.unschedulable` (`kubectl cordon`).
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// A node vetoed by a filter plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The plugin that said no (`NodeResourcesFit`).
    pub plugin: &'static str,
    /// Its reasons (`Insufficient cpu`, `Insufficient memory`).
    pub reasons: Vec<String>,
}

fn reject(plugin: &'static str, reason: impl Into<String>) -> Rejection {
    Rejection {
        plugin,
        reasons: vec![reason.into()],
    }
}

/// The filter plugins in upstream's order (the `scheduler.filter` span lists them).
pub const FILTER_PLUGINS: &str =
    "NodeUnschedulable,NodeName,TaintToleration,NodeAffinity,NodePorts,NodeResourcesFit,PodTopologySpread";

/// Run the filter plugins in upstream's order; `Ok` means the node is feasible. `spread` is
/// the pod's [`spread::FilterState`] for this cycle (`None`: no hard spread constraints).
pub fn filter(
    pod: &PodInfo,
    node: &NodeInfo,
    view: &NodeView,
    spread: Option<&spread::FilterState>,
) -> Result<(), Rejection> {
    filter_observed(pod, node, view, spread, |_, _| {})
}

/// [`filter`], telling `seen` each plugin's verdict as it comes (the plugin's name, then
/// `Ok` or its rejection); the plugins after a veto do not run. `PodTopologySpread` runs
/// only for a pod with hard spread constraints (upstream's PreFilter says `Skip` otherwise).
pub fn filter_observed(
    pod: &PodInfo,
    node: &NodeInfo,
    view: &NodeView,
    spread: Option<&spread::FilterState>,
    mut seen: impl FnMut(&'static str, &Result<(), Rejection>),
) -> Result<(), Rejection> {
    let mut run = |plugin: &'static str, verdict: Result<(), Rejection>| {
        seen(plugin, &verdict);
        verdict
    };
    run("NodeUnschedulable", node_unschedulable(pod, view))?;
    run("NodeName", node_name(pod, view))?;
    run("TaintToleration", taint_toleration(pod, view))?;
    run("NodeAffinity", node_affinity(pod, view))?;
    run("NodePorts", node_ports(pod, node))?;
    run("NodeResourcesFit", node_resources_fit(pod, node, view))?;
    match spread {
        Some(s) => run("PodTopologySpread", s.check(pod, view)),
        None => Ok(()),
    }
}

/// `NodeUnschedulable`: a cordoned node takes only pods that tolerate
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn node_unschedulable(pod: &PodInfo, view: &NodeView) -> Result<(), Rejection> {
    if !view.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_UNSCHEDULABLE.into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    };
    if pod.tolerations.iter().any(|t| t.tolerates(&taint)) {
        Ok(())
    } else {
        Err(reject("NodeUnschedulable", REASON_UNSCHEDULABLE))
    }
}

/// `NodeName`: a pod that names a node fits only that node.
pub fn node_name(pod: &PodInfo, view: &NodeView) -> Result<(), Rejection> {
    match &pod.node_name {
        Some(n) if *n != view.name => Err(reject("NodeName", REASON_NODE_NAME)),
        _ => Ok(()),
    }
}

/// The taints that block scheduling on this node: its own `NoSchedule`/`NoExecute` taints,
/// plus the condition taint the node lifecycle controller would set if the node is not
/// ready (added here so that a node is never chosen in the moment before the taint lands).
fn blocking_taints(view: &NodeView) -> impl Iterator<Item = Taint> + '_ {
    let implied = match view.readiness {
        Readiness::Ready => None,
        Readiness::NotReady => Some(TAINT_NOT_READY),
        Readiness::Unknown => Some(TAINT_UNREACHABLE),
    }
    .filter(|key| !view.taints.iter().any(|t| t.key == *key))
    .map(|key| Taint {
        key: key.to_string(),
        value: String::new(),
        effect: "NoSchedule".into(),
    });
    view.taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .cloned()
        .chain(implied)
}

/// `TaintToleration`: every `NoSchedule`/`NoExecute` taint must be tolerated.
pub fn taint_toleration(pod: &PodInfo, view: &NodeView) -> Result<(), Rejection> {
    for taint in blocking_taints(view) {
        if !pod.tolerations.iter().any(|t| t.tolerates(&taint)) {
            return Err(reject(
                "TaintToleration",
                format!("node(s) had untolerated taint {{{}: {}}}", taint.key, taint.value),
            ));
        }
    }
    Ok(())
}

/// `NodeAffinity`: `nodeSelector` (every label equal) and the required node affinity
/// (any one term whose expressions all match).
pub fn node_affinity(pod: &PodInfo, view: &NodeView) -> Result<(), Rejection> {
    let selector_ok = pod.node_selector.iter().all(|(k, v)| view.labels.get(k) == Some(v));
    let affinity_ok = pod
        .required_node_affinity
        .as_ref()
        .is_none_or(|terms| terms.iter().any(|term| term_matches(term, view)));
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        Err(reject("NodeAffinity", REASON_NODE_AFFINITY))
    }
}

/// One `nodeSelectorTerm`: all `matchExpressions` on labels and all `matchFields` (only
/// `metadata.name`) must match; a term with neither matches nothing, as upstream.
fn term_matches(term: &Value, view: &NodeView) -> bool {
    let exprs = term.get("matchExpressions").and_then(Value::as_array);
    let fields = term.get("matchFields").and_then(Value::as_array);
    if exprs.is_none_or(|e| e.is_empty()) && fields.is_none_or(|f| f.is_empty()) {
        return false;
    }
    let labels_ok = exprs
        .into_iter()
        .flatten()
        .all(|e| requirement_matches(e, &view.labels));
    let fields_ok = fields.into_iter().flatten().all(|f| {
        let key = f.get("key").and_then(Value::as_str).unwrap_or("");
        if key != "metadata.name" {
            return false;
        }
        let fields = BTreeMap::from([(key.to_string(), view.name.clone())]);
        requirement_matches(f, &fields)
    });
    labels_ok && fields_ok
}

/// A `NodeSelectorRequirement`: `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
fn requirement_matches(req: &Value, labels: &BTreeMap<String, String>) -> bool {
    let key = req.get("key").and_then(Value::as_str).unwrap_or("");
    let values: Vec<&str> = req
        .get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let label = labels.get(key);
    let int = |s: &str| s.parse::<i64>().ok();
    match req.get("operator").and_then(Value::as_str).unwrap_or("") {
        "In" => label.is_some_and(|l| values.contains(&l.as_str())),
        "NotIn" => label.is_none_or(|l| !values.contains(&l.as_str())),
        "Exists" => label.is_some(),
        "DoesNotExist" => label.is_none(),
        "Gt" => match (label.and_then(|l| int(l)), values.first().and_then(|v| int(v))) {
            (Some(l), Some(v)) => l > v,
            _ => false,
        },
        "Lt" => match (label.and_then(|l| int(l)), values.first().and_then(|v| int(v))) {
            (Some(l), Some(v)) => l < v,
            _ => false,
        },
        _ => false,
    }
}

/// `NodePorts`: no `hostPort` of the pod may be in use on the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if pod.host_ports.iter().any(|p| node.port_conflicts(p)) {
        Err(reject("NodePorts", REASON_NODE_PORTS))
    } else {
        Ok(())
    }
}

/// `NodeResourcesFit` (filter): requests must fit into allocatable minus requested, and
/// there must be a pod slot left. All shortfalls are reported, in upstream's order.
pub fn node_resources_fit(pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> Result<(), Rejection> {
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > view.allowed_pods {
        reasons.push(REASON_TOO_MANY_PODS.to_string());
    }
    let req = &pod.requests;
    let free = |alloc: i64, used: i64| alloc.saturating_sub(used);
    if req.milli_cpu > 0 && req.milli_cpu > free(view.allocatable.milli_cpu, node.requested.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if req.memory > 0 && req.memory > free(view.allocatable.memory, node.requested.memory) {
        reasons.push("Insufficient memory".into());
    }
    if req.ephemeral_storage > 0
        && req.ephemeral_storage > free(view.allocatable.ephemeral_storage, node.requested.ephemeral_storage)
    {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, amount) in &req.scalar {
        let alloc = view.allocatable.scalar.get(name).copied().unwrap_or(0);
        let used = node.requested.scalar.get(name).copied().unwrap_or(0);
        if *amount > 0 && *amount > free(alloc, used) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            plugin: "NodeResourcesFit",
            reasons,
        })
    }
}

/// Weights of the score plugins in upstream's default profile.
pub const WEIGHT_TAINT_TOLERATION: i64 = 3;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_NODE_RESOURCES_FIT: i64 = 1;
pub const WEIGHT_POD_TOPOLOGY_SPREAD: i64 = 2;
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;

/// The score plugins and their weights (the `scheduler.score` span lists them).
pub const SCORE_PLUGINS: &str = "TaintToleration=3,NodeAffinity=2,NodeResourcesFit(LeastAllocated)=1,\
PodTopologySpread=2,NodeResourcesBalancedAllocation=1";

/// The scores of one feasible node, each 0–100 before its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scores {
    /// `NodeResourcesFit` with the `LeastAllocated` strategy.
    pub least_allocated: i64,
    /// `NodeResourcesBalancedAllocation`.
    pub balanced_allocation: i64,
    /// `TaintToleration` (normalised: 100 for the nodes with fewest untolerated
    /// `PreferNoSchedule` taints).
    pub taint_toleration: i64,
    /// `NodeAffinity` (normalised preferred-term weights).
    pub node_affinity: i64,
    /// `PodTopologySpread` (normalised; 0 when the pod has nothing to spread).
    pub pod_topology_spread: i64,
}

impl Scores {
    /// The weighted sum, with the default profile's weights.
    pub fn total(&self) -> i64 {
        self.taint_toleration * WEIGHT_TAINT_TOLERATION
            + self.node_affinity * WEIGHT_NODE_AFFINITY
            + self.least_allocated * WEIGHT_NODE_RESOURCES_FIT
            + self.pod_topology_spread * WEIGHT_POD_TOPOLOGY_SPREAD
            + self.balanced_allocation * WEIGHT_BALANCED_ALLOCATION
    }
}

/// Score the feasible nodes (those of `feasible` the cache knows, in that order). Plugins
/// that need all nodes' raw points normalise them here. `default_selector` is the pod's
/// default spreading selector ([`spread::Owners::default_selector`]).
pub fn score_nodes(
    pod: &PodInfo,
    cache: &SchedulerCache,
    feasible: &[String],
    default_selector: Option<&Value>,
) -> Vec<(String, Scores)> {
    let nodes: Vec<(&String, &NodeInfo, &NodeView)> = feasible
        .iter()
        .filter_map(|name| {
            let info = cache.node(name)?;
            Some((name, info, info.node.as_deref()?))
        })
        .collect();
    let spread_state = spread::ScoreState::new(pod, cache, feasible, default_selector);
    let spread_raw: Vec<Option<i64>> = nodes
        .iter()
        .map(|(_, _, view)| spread_state.as_ref().map_or(Some(0), |s| s.raw_score(pod, cache, view)))
        .collect();
    let spread = match spread_state {
        Some(_) => spread::normalize(&spread_raw),
        None => vec![0; nodes.len()],
    };
    let mut affinity: Vec<i64> = nodes
        .iter()
        .map(|(_, _, v)| preferred_affinity_points(pod, v))
        .collect();
    default_normalize(&mut affinity, false);
    let mut taints: Vec<i64> = nodes
        .iter()
        .map(|(_, _, v)| intolerable_prefer_no_schedule(pod, v))
        .collect();
    default_normalize(&mut taints, true);
    nodes
        .iter()
        .enumerate()
        .map(|(i, (name, info, view))| {
            let scores = Scores {
                least_allocated: least_allocated(pod, info, view),
                balanced_allocation: balanced_allocation(pod, info, view),
                taint_toleration: taints[i],
                node_affinity: affinity[i],
                pod_topology_spread: spread[i],
            };
            (name.to_string(), scores)
        })
        .collect()
}

/// Upstream's `DefaultNormalizeScore`: scale so the highest raw score is 100 (`reverse`:
/// the highest becomes 0 and a raw 0 becomes 100). All zero stays 0 (or 100 reversed).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        let scaled = if max > 0 { MAX_NODE_SCORE * *s / max } else { 0 };
        *s = if reverse { MAX_NODE_SCORE - scaled } else { scaled };
    }
}

/// `NodeAffinity` score before normalising: the summed weights of the preferred terms
/// the node matches.
pub fn preferred_affinity_points(pod: &PodInfo, view: &NodeView) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|(_, term)| term_matches(term, view))
        .map(|(weight, _)| *weight)
        .sum()
}

/// `TaintToleration` score before normalising: the node's `PreferNoSchedule` taints that
/// no toleration of the pod (with effect `PreferNoSchedule` or none) tolerates.
pub fn intolerable_prefer_no_schedule(pod: &PodInfo, view: &NodeView) -> i64 {
    let tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|t| t.effect.is_empty() || t.effect == "PreferNoSchedule")
        .collect();
    view.taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
        .count() as i64
}

/// `(capacity - requested) * 100 / capacity`, 0 if over capacity (upstream's
/// `leastRequestedScore`).
fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    ((capacity as i128 - requested as i128) * MAX_NODE_SCORE as i128 / capacity as i128) as i64
}

/// `NodeResourcesFit` score, `LeastAllocated`: the mean over CPU and memory of the share
/// left free, counting pods without requests at the default 100m / 200Mi.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64 {
    let cpu = least_requested_score(
        node.non_zero_cpu.saturating_add(pod.non_zero_cpu),
        view.allocatable.milli_cpu,
    );
    let mem = least_requested_score(
        node.non_zero_memory.saturating_add(pod.non_zero_memory),
        view.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// `NodeResourcesBalancedAllocation`: `(1 - |cpuShare - memShare| / 2) * 100`, where each
/// share is requested / allocatable after placing the pod (capped at 1).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo, view: &NodeView) -> i64 {
    let share =
        |requested: i64, alloc: i64| -> Option<f64> { (alloc > 0).then(|| (requested as f64 / alloc as f64).min(1.0)) };
    let cpu = share(
        node.requested.milli_cpu.saturating_add(pod.requests.milli_cpu),
        view.allocatable.milli_cpu,
    );
    let mem = share(
        node.requested.memory.saturating_add(pod.requests.memory),
        view.allocatable.memory,
    );
    // with a single resource (the other has no allocatable) there is nothing to balance
    let std = match (cpu, mem) {
        (Some(c), Some(m)) => ((c - m) / 2.0).abs(),
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::{PodUsage, SchedulerCache};
    use serde_json::json;

    fn node_json(name: &str, extra: Value) -> Value {
        let mut n = json!({"metadata": {"name": name, "labels": {"disk": "ssd"}}, "status": {
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
            "conditions": [{"type": "Ready", "status": "True"}]}});
        if let (Some(n), Some(e)) = (n.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                n.insert(k.clone(), v.clone());
            }
        }
        n
    }

    fn pod(spec: Value) -> PodInfo {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c"}]);
        }
        PodInfo::from_pod(&json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})).unwrap()
    }

    fn check(pod: &PodInfo, node: &Value, cache: &mut SchedulerCache) -> Result<(), Rejection> {
        cache.upsert_node(node);
        let name = node["metadata"]["name"].as_str().unwrap();
        let info = cache.node(name).unwrap();
        filter(pod, info, info.node.as_ref().unwrap(), None)
    }

    #[test]
    fn each_filter_gives_upstreams_reason() {
        let mut c = SchedulerCache::default();
        let plain = pod(json!({}));
        assert_eq!(check(&plain, &node_json("ok", json!({})), &mut c), Ok(()));

        let cordoned = node_json("cordoned", json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            check(&plain, &cordoned, &mut c).unwrap_err().reasons,
            [REASON_UNSCHEDULABLE]
        );
        let tolerant = pod(json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}]}));
        assert_eq!(check(&tolerant, &cordoned, &mut c), Ok(()));

        let tainted = node_json(
            "tainted",
            json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "soft", "value": "x", "effect": "PreferNoSchedule"}]}}),
        );
        assert_eq!(
            check(&plain, &tainted, &mut c).unwrap_err().reasons,
            ["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let gpu = pod(json!({"tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}));
        assert_eq!(
            check(&gpu, &tainted, &mut c),
            Ok(()),
            "PreferNoSchedule does not filter"
        );

        let not_ready = node_json(
            "nr",
            json!({"status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"},
            "conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let r = check(&plain, &not_ready, &mut c).unwrap_err();
        assert_eq!(r.plugin, "TaintToleration");
        assert_eq!(
            r.reasons,
            ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        let unknown = node_json(
            "unk",
            json!({"status": {"allocatable": {"pods": "3"},
            "conditions": [{"type": "Ready", "status": "Unknown"}]}}),
        );
        assert_eq!(
            check(&plain, &unknown, &mut c).unwrap_err().reasons,
            ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]
        );
        let ds_like =
            pod(json!({"tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(check(&ds_like, &not_ready, &mut c), Ok(()));

        let selective = pod(json!({"nodeSelector": {"disk": "hdd"}}));
        assert_eq!(
            check(&selective, &node_json("a", json!({})), &mut c)
                .unwrap_err()
                .reasons,
            [REASON_NODE_AFFINITY]
        );
        let named = pod(json!({"nodeName": "elsewhere"}));
        assert_eq!(
            check(&named, &node_json("a", json!({})), &mut c).unwrap_err().reasons,
            [REASON_NODE_NAME]
        );

        let big = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "8Gi", "example.com/foo": "1"}}}]}),
        );
        let r = check(&big, &node_json("a", json!({})), &mut c).unwrap_err();
        assert_eq!(r.plugin, "NodeResourcesFit");
        assert_eq!(
            r.reasons,
            [
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient example.com/foo"
            ]
        );
    }

    #[test]
    fn node_affinity_expressions() {
        let mut c = SchedulerCache::default();
        let n = node_json(
            "n1",
            json!({"metadata": {"name": "n1", "labels": {"zone": "a", "gen": "5"}}}),
        );
        let with = |terms: Value| {
            pod(
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            )
        };
        let ok = |terms: Value, c: &mut SchedulerCache| check(&with(terms), &n, c).is_ok();
        assert!(ok(
            json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
            &mut c
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
            &mut c
        ));
        assert!(ok(
            json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]),
            &mut c
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]}]),
            &mut c
        ));
        assert!(ok(
            json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]),
            &mut c
        ));
        assert!(ok(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
            &mut c
        ));
        // terms are ORed, expressions ANDed; an empty term matches nothing
        assert!(ok(
            json!([{"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                          {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]),
            &mut c
        ));
        assert!(!ok(
            json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}, {"key": "x", "operator": "Exists"}]}]),
            &mut c
        ));
        assert!(!ok(json!([{}]), &mut c));
    }

    #[test]
    fn ports_and_pod_count() {
        let mut c = SchedulerCache::default();
        let n = node_json("n1", json!({}));
        c.upsert_node(&n);
        let web = |ip: &str| {
            pod(
                json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}),
            )
        };
        c.upsert_pod("default/a", "n1", web("127.0.0.2").usage());
        let info = c.node("n1").unwrap();
        let view = info.node.clone().unwrap();
        assert_eq!(node_ports(&web("127.0.0.3"), info), Ok(()), "another address is free");
        assert_eq!(
            node_ports(&web("127.0.0.2"), info).unwrap_err().reasons,
            [REASON_NODE_PORTS]
        );
        assert!(
            node_ports(&web(""), info).is_err(),
            "0.0.0.0 conflicts with every address"
        );
        c.upsert_pod("default/b", "n1", PodUsage::default());
        c.upsert_pod("default/c", "n1", PodUsage::default());
        let info = c.node("n1").unwrap();
        assert_eq!(
            node_resources_fit(&pod(json!({})), info, &view).unwrap_err().reasons,
            [REASON_TOO_MANY_PODS]
        );
    }

    #[test]
    fn scores_prefer_free_and_balanced_nodes() {
        let mut c = SchedulerCache::default();
        c.upsert_node(&node_json("empty", json!({})));
        c.upsert_node(&node_json("busy", json!({})));
        let half =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}));
        c.upsert_pod("default/x", "busy", half.usage());
        let small =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}));
        let scored = score_nodes(&small, &c, &["empty".into(), "busy".into()], None);
        let s = |name: &str| scored.iter().find(|(n, _)| n == name).unwrap().1;
        // empty: 1.5 of 2 cpu and 3 of 4 GiB stay free → 75; shares equal → 100; no
        // PreferNoSchedule taint anywhere → 100 each; nothing preferred or spread → 0
        assert_eq!(
            s("empty"),
            Scores {
                least_allocated: 75,
                balanced_allocation: 100,
                taint_toleration: 100,
                node_affinity: 0,
                pod_topology_spread: 0,
            }
        );
        assert_eq!(s("empty").total(), 75 + 100 + 3 * 100);
        assert_eq!(s("busy").least_allocated, 25);
        assert!(s("empty").total() > s("busy").total());
        // a CPU-only pod unbalances the node
        let cpu_only =
            pod(json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "1"}}}]}));
        let info = c.node("empty").unwrap();
        assert_eq!(balanced_allocation(&cpu_only, info, info.node.as_ref().unwrap()), 50);
    }

    fn scored(pod: &PodInfo, nodes: &[Value]) -> Vec<(String, Scores)> {
        let mut c = SchedulerCache::default();
        let names: Vec<String> = nodes
            .iter()
            .map(|n| {
                c.upsert_node(n);
                n["metadata"]["name"].as_str().unwrap().to_string()
            })
            .collect();
        score_nodes(pod, &c, &names, None)
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_taint_toleration_score() {
        let taints = |n: usize| {
            let list: Vec<Value> = (0..n)
                .map(|i| json!({"key": format!("soft{i}"), "value": "x", "effect": "PreferNoSchedule"}))
                .collect();
            json!({"spec": {"taints": list}})
        };
        let nodes = [
            node_json("clean", json!({})),
            node_json("one", taints(1)),
            node_json("two", taints(2)),
        ];
        let plain = pod(json!({}));
        let got: Vec<i64> = scored(&plain, &nodes).iter().map(|(_, s)| s.taint_toleration).collect();
        // reversed DefaultNormalizeScore: 100 - 100 * count / max
        assert_eq!(got, [100, 50, 0]);
        // a toleration with effect PreferNoSchedule (or none) makes the taint not count;
        // one for NoSchedule only does not
        let tolerant = pod(json!({"tolerations": [{"key": "soft0", "operator": "Exists"}]}));
        let got: Vec<i64> = scored(&tolerant, &nodes)
            .iter()
            .map(|(_, s)| s.taint_toleration)
            .collect();
        assert_eq!(got, [100, 100, 0]);
        let wrong_effect =
            pod(json!({"tolerations": [{"key": "soft0", "operator": "Exists", "effect": "NoSchedule"}]}));
        let got: Vec<i64> = scored(&wrong_effect, &nodes)
            .iter()
            .map(|(_, s)| s.taint_toleration)
            .collect();
        assert_eq!(got, [100, 50, 0]);
    }

    #[test]
    fn preferred_node_affinity_weights_are_normalised_to_the_best_node() {
        let labelled =
            |name: &str, labels: Value| node_json(name, json!({"metadata": {"name": name, "labels": labels}}));
        let nodes = [
            labelled("ssd-a", json!({"disk": "ssd", "zone": "a"})),
            labelled("ssd", json!({"disk": "ssd"})),
            labelled("hdd", json!({"disk": "hdd"})),
        ];
        let p = pod(
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 60, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}},
                {"weight": 0, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}},
                {"weight": 50, "preference": {}}
            ]}}}),
        );
        let got = scored(&p, &nodes);
        // raw 80, 60, 0 (weight 0 and empty preferences count nothing) → 100, 75, 0
        let points: Vec<i64> = got.iter().map(|(_, s)| s.node_affinity).collect();
        assert_eq!(points, [100, 75, 0]);
        assert!(got[0].1.total() > got[1].1.total() && got[1].1.total() > got[2].1.total());
        // without preferences every node gets 0 from NodeAffinity
        let plain = scored(&pod(json!({})), &nodes);
        assert!(plain.iter().all(|(_, s)| s.node_affinity == 0));
    }

    #[test]
    fn default_normalize_follows_upstream() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut zeros = [0, 0];
        default_normalize(&mut zeros, true);
        assert_eq!(zeros, [100, 100]);
        let mut zeros = [0, 0];
        default_normalize(&mut zeros, false);
        assert_eq!(zeros, [0, 0]);
    }
}
