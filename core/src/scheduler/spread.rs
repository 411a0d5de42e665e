//! # PodTopologySpread (mirrors kube-scheduler's `podtopologyspread` plugin)
//!
//! Three replicas of a web server on one node are one node failure away from an outage.
//! A pod says how its kind should be spread with `spec.topologySpreadConstraints`:
//!
//! ```yaml
//! topologySpreadConstraints:
//!   - maxSkew: 1                             # at most 1 pod more than the emptiest domain
//!     topologyKey: kubernetes.io/hostname    # a domain = the nodes sharing this label's value
//!     whenUnsatisfiable: DoNotSchedule       # a hard rule (filter); ScheduleAnyway: a wish (score)
//!     labelSelector: {matchLabels: {app: web}}   # which pods count
//! ```
//!
//! The nodes are grouped into **domains** by the value of `topologyKey` (one domain per node
//! for `kubernetes.io/hostname`, one per zone for `topology.kubernetes.io/zone`). The
//! **skew** of a domain is how many selected pods it has, plus one if this pod (when it
//! matches the selector itself) lands there, minus the count of the emptiest domain.
//!
//! - **Filter** (`DoNotSchedule`): a node whose domain would end up with a skew above
//!   `maxSkew` is ruled out (`node(s) didn't match pod topology spread constraints`), and
//!   so is a node without the `topologyKey` label (`... (missing required label)`). With
//!   `minDomains`, fewer domains than that count as an emptiest domain of 0 pods.
//! - **Score** (`ScheduleAnyway`): each node gets, per constraint, `pods in its domain ×
//!   log(domains + 2) + maxSkew - 1`; fewer is better, and the raw points are turned into
//!   0–100 as upstream's `NormalizeScore` does (the emptiest node 100, the fullest
//!   `100 × min / max`). The plugin counts twice (weight 2) in the total.
//!
//! **System defaults.** A pod without constraints of its own still gets two soft ones if it
//! belongs to a Service or a ReplicaSet: `kubernetes.io/hostname` with `maxSkew: 3` and
//! `topology.kubernetes.io/zone` with `maxSkew: 5`, both `ScheduleAnyway`, selecting the
//! pods that the Services' selectors and the ReplicaSet's selector select. This is what
//! spreads the replicas of a Deployment over the nodes even though nobody asked, and it
//! replaced the older `SelectorSpread` plugin. The zone constraint only counts where nodes
//! carry the zone label, so on kulisse's nodes (hostname labels only) it changes nothing.
//!
//! Counting sees every pod the scheduler cache counts, the *assumed* ones too: the second
//! replica, scheduled a moment after the first, already sees where the first one went.
//!
//! Where kulisse differs: it knows no StatefulSets or ReplicationControllers (kinds it does
//! not serve), and when a pod's ReplicaSet is not in the scheduler's cache yet, the pod's
//! own labels stand in for the ReplicaSet's selector (a ReplicaSet's selector always
//! selects its pods' labels), so that a freshly created ReplicaSet's pods spread as well.
//! Counting reads the pods on each node, so a pod with constraints costs `O(pods)` rather
//! than `O(nodes)`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use super::cache::{NodeView, PodInfo, PodUsage, SchedulerCache};
use super::plugins::{self, MAX_NODE_SCORE, Rejection};
use crate::client::informer::Cache;
use crate::objects::LabelSelector;

/// The plugin's name, as upstream.
pub const PLUGIN: &str = "PodTopologySpread";
/// The well-known label every kubelet puts on its node.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The well-known zone label (cloud providers set it; `kulisse patch node` can, to try zones).
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";
/// `whenUnsatisfiable` values.
pub const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
pub const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";

/// Upstream's filter reasons.
pub const REASON_CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint, with its selector resolved (`matchLabelKeys` merged in).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    /// The `labelSelector` as requirements, made once per cycle and matched against every
    /// pod counted; `None` selects no pod (no `labelSelector`, or one that selects nothing).
    pub selector: Option<LabelSelector>,
    /// Below this many domains, the emptiest domain counts as 0 pods (1 when unset).
    pub min_domains: i64,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes that match the pod's
    /// `nodeSelector` and required node affinity are counted.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default `Ignore`): only nodes whose taints the pod
    /// tolerates are counted.
    pub honor_node_taints: bool,
}

impl Constraint {
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches_labels(labels))
    }

    /// The node inclusion policies: are this node's pods counted for `pod`?
    fn includes(&self, pod: &PodInfo, view: &NodeView) -> bool {
        let affinity_ok = !self.honor_node_affinity || plugins::node_affinity(pod, view).is_ok();
        let taints_ok = !self.honor_node_taints
            || view
                .taints
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)));
        affinity_ok && taints_ok
    }

    /// How many of `pods` this constraint selects (same namespace, not terminating).
    fn count<'a>(&self, namespace: &str, pods: impl Iterator<Item = &'a PodUsage>) -> i64 {
        pods.filter(|p| !p.terminating && p.namespace == namespace && self.selects(&p.labels))
            .count() as i64
    }
}

/// The pod's own constraints with `whenUnsatisfiable == action`.
pub fn pod_constraints(pod: &PodInfo, action: &str) -> Vec<Constraint> {
    pod.topology_spread_constraints
        .iter()
        .filter(|c| c.get("whenUnsatisfiable").and_then(Value::as_str) == Some(action))
        .map(|c| {
            let mut selector = c.get("labelSelector").filter(|s| s.is_object()).cloned();
            // matchLabelKeys: the pod's own values of these labels join the selector.
            let extra: Map<String, Value> = c
                .get("matchLabelKeys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter_map(|k| pod.labels.get(k).map(|v| (k.to_string(), json!(v))))
                .collect();
            if !extra.is_empty() {
                let sel = selector.get_or_insert_with(|| json!({}));
                let ml = sel
                    .as_object_mut()
                    .map(|o| o.entry("matchLabels").or_insert_with(|| json!({})));
                if let Some(Value::Object(ml)) = ml {
                    ml.extend(extra);
                }
            }
            let policy = |field: &str| c.get(field).and_then(Value::as_str).unwrap_or("");
            Constraint {
                max_skew: c.get("maxSkew").and_then(Value::as_i64).unwrap_or(1).max(1),
                topology_key: c.get("topologyKey").and_then(Value::as_str).unwrap_or("").to_string(),
                selector: selector.as_ref().and_then(LabelSelector::from_structured),
                min_domains: c.get("minDomains").and_then(Value::as_i64).unwrap_or(1).max(1),
                honor_node_affinity: policy("nodeAffinityPolicy") != "Ignore",
                honor_node_taints: policy("nodeTaintsPolicy") == "Honor",
            }
        })
        .collect()
}

/// Upstream's system default constraints, selecting with `selector`.
pub fn system_default_constraints(selector: &Value) -> Vec<Constraint> {
    [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| Constraint {
            max_skew,
            topology_key: key.to_string(),
            selector: LabelSelector::from_structured(selector),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect()
}

/// The objects a pod's default spreading selector comes from (upstream's listers of
/// Services and ReplicaSets).
#[derive(Clone)]
pub struct Owners {
    pub services: Cache,
    pub replica_sets: Cache,
}

impl Owners {
    /// Upstream's `DefaultSelector`: the selectors of the Services that select the pod,
    /// merged, and the selector of its controlling ReplicaSet; `None` if neither exists.
    pub fn default_selector(&self, pod: &PodInfo) -> Option<Value> {
        let services = self
            .services
            .filter(|s| crate::objects::namespace(s) == Some(pod.namespace.as_str()));
        let rs = match &pod.controller {
            Some((api, kind, name)) if api == "apps/v1" && kind == "ReplicaSet" => Some(
                self.replica_sets
                    .get(&format!("{}/{name}", pod.namespace))
                    .and_then(|rs| rs.pointer("/spec/selector").cloned())
                    // not seen yet: the pod's labels stand in (see the module doc)
                    .unwrap_or_else(|| json!({"matchLabels": pod.labels})),
            ),
            _ => None,
        };
        default_selector(pod, services.iter().map(|s| s.as_ref()), rs.as_ref())
    }
}

/// [`Owners::default_selector`] over given Services and a ReplicaSet selector.
pub fn default_selector<'a>(
    pod: &PodInfo,
    services: impl Iterator<Item = &'a Value>,
    replica_set_selector: Option<&Value>,
) -> Option<Value> {
    let mut match_labels = Map::new();
    for svc in services {
        // a Service without a selector selects nothing, not everything
        let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
            continue;
        };
        let selects = sel
            .iter()
            .all(|(k, v)| v.as_str().is_some() && pod.labels.get(k).map(String::as_str) == v.as_str());
        if selects {
            match_labels.extend(sel.clone());
        }
    }
    // The ReplicaSet's selector is ANDed in as requirements (`In [value]` for its labels).
    let mut expressions: Vec<Value> = Vec::new();
    if let Some(sel) = replica_set_selector {
        for (k, v) in sel.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
            expressions.push(json!({"key": k, "operator": "In", "values": [v]}));
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            expressions.extend(exprs.iter().cloned());
        }
    }
    if match_labels.is_empty() && expressions.is_empty() {
        return None;
    }
    Some(json!({"matchLabels": match_labels, "matchExpressions": expressions}))
}

fn has_all_keys(view: &NodeView, constraints: &[Constraint]) -> bool {
    constraints.iter().all(|c| view.labels.contains_key(&c.topology_key))
}

fn views(cache: &SchedulerCache) -> impl Iterator<Item = (&String, &NodeView)> {
    cache
        .node_names()
        .iter()
        .filter_map(|name| Some((name, cache.node(name)?.node.as_deref()?)))
}

/// What the filter needs, computed once per scheduling cycle over all nodes (upstream's
/// `PreFilter` state): per hard constraint, the matching pods per domain.
#[derive(Debug)]
pub struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    /// `None` when the pod has no `DoNotSchedule` constraint (nothing to check).
    pub fn new(pod: &PodInfo, cache: &SchedulerCache) -> Option<FilterState> {
        let constraints = pod_constraints(pod, DO_NOT_SCHEDULE);
        if constraints.is_empty() {
            return None;
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        for (name, view) in views(cache) {
            if !has_all_keys(view, &constraints) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.includes(pod, view) {
                    let n = c.count(&pod.namespace, cache.pods_on(name));
                    *counts[i].entry(view.labels[&c.topology_key].clone()).or_insert(0) += n;
                }
            }
        }
        Some(FilterState { constraints, counts })
    }

    /// The filter verdict for one node.
    pub fn check(&self, pod: &PodInfo, view: &NodeView) -> Result<(), Rejection> {
        for (c, domains) in self.constraints.iter().zip(&self.counts) {
            let Some(value) = view.labels.get(&c.topology_key) else {
                return Err(reject(REASON_NODE_LABEL_NOT_MATCH));
            };
            let min = if (domains.len() as i64) < c.min_domains {
                0
            } else {
                domains.values().copied().min().unwrap_or(0)
            };
            let here = domains.get(value).copied().unwrap_or(0);
            let skew = here + i64::from(c.selects(&pod.labels)) - min;
            if skew > c.max_skew {
                return Err(reject(REASON_CONSTRAINTS_NOT_MATCH));
            }
        }
        Ok(())
    }
}

fn reject(reason: &str) -> Rejection {
    Rejection {
        plugin: PLUGIN,
        reasons: vec![reason.to_string()],
    }
}

/// What the score needs, computed once per cycle (upstream's `PreScore` state).
#[derive(Debug)]
pub struct ScoreState {
    constraints: Vec<Constraint>,
    /// Own constraints: nodes missing a topology key are not scored. System defaults: they are.
    require_all_keys: bool,
    /// Per constraint (hostname aside): matching pods per domain among the feasible nodes.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: `log(domains + 2)`, so that few big domains weigh as much as many small.
    weights: Vec<f64>,
}

impl ScoreState {
    /// `None` when there is nothing to spread: no `ScheduleAnyway` constraint and, for a pod
    /// without constraints, no default selector.
    pub fn new(
        pod: &PodInfo,
        cache: &SchedulerCache,
        feasible: &[String],
        default_selector: Option<&Value>,
    ) -> Option<ScoreState> {
        let (constraints, require_all_keys) = if pod.topology_spread_constraints.is_empty() {
            (default_selector.map(system_default_constraints)?, false)
        } else {
            (pod_constraints(pod, SCHEDULE_ANYWAY), true)
        };
        if constraints.is_empty() {
            return None;
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        let mut scored = 0usize;
        for view in feasible.iter().filter_map(|n| cache.node(n)?.node.as_deref()) {
            if require_all_keys && !has_all_keys(view, &constraints) {
                continue;
            }
            scored += 1;
            for (i, c) in constraints.iter().enumerate() {
                if let Some(v) = view.labels.get(&c.topology_key)
                    && c.topology_key != LABEL_HOSTNAME
                {
                    counts[i].entry(v.clone()).or_insert(0);
                }
            }
        }
        let weights = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    scored
                } else {
                    domains.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let mut state = ScoreState {
            constraints,
            require_all_keys,
            counts,
            weights,
        };
        state.count_domains(pod, cache);
        Some(state)
    }

    /// Add up the matching pods of every node (feasible or not) into its domain.
    ///
    /// Only the domains the feasible nodes are in are counted, so a constraint none of them
    /// has a domain for (a zone constraint on nodes without a zone label: the system default
    /// on kulisse's nodes) costs nothing, instead of a look at every node for every pod.
    fn count_domains(&mut self, pod: &PodInfo, cache: &SchedulerCache) {
        let counted: Vec<bool> = (self.constraints.iter().zip(&self.counts))
            .map(|(c, domains)| c.topology_key != LABEL_HOSTNAME && !domains.is_empty())
            .collect();
        if !counted.contains(&true) {
            return;
        }
        for (name, view) in views(cache) {
            if self.require_all_keys && !has_all_keys(view, &self.constraints) {
                continue;
            }
            let constraints = self.constraints.iter().zip(self.counts.iter_mut());
            for ((c, domains), counted) in constraints.zip(&counted) {
                let slot = view.labels.get(&c.topology_key).and_then(|v| domains.get_mut(v));
                if let Some(slot) = slot.filter(|_| *counted && c.includes(pod, view)) {
                    *slot += c.count(&pod.namespace, cache.pods_on(name));
                }
            }
        }
    }

    /// A node's raw points (lower is better); `None` for a node that is not scored.
    pub fn raw_score(&self, pod: &PodInfo, cache: &SchedulerCache, view: &NodeView) -> Option<i64> {
        if self.require_all_keys && !has_all_keys(view, &self.constraints) {
            return None;
        }
        let mut score = 0.0;
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = view.labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                c.count(&pod.namespace, cache.pods_on(&view.name))
            } else {
                self.counts[i].get(value).copied().unwrap_or(0)
            };
            score += count as f64 * self.weights[i] + (c.max_skew - 1) as f64;
        }
        Some(score.round() as i64)
    }
}

/// Upstream's `NormalizeScore` of this plugin: fewer pods is better; the lowest raw score
/// gets 100, the others `100 × (max + min - raw) / max`; nodes not scored get 0.
pub fn normalize(raw: &[Option<i64>]) -> Vec<i64> {
    let valid = raw.iter().flatten().copied();
    let min = valid.clone().min().unwrap_or(0);
    let max = valid.max().unwrap_or(0).max(0);
    raw.iter()
        .map(|r| match r {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::{Scores, score_nodes};

    fn node(name: &str, zone: Option<&str>) -> Value {
        let mut labels = json!({LABEL_HOSTNAME: name});
        if let Some(z) = zone {
            labels[LABEL_ZONE] = json!(z);
        }
        json!({"metadata": {"name": name, "labels": labels}, "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}})
    }

    fn pod(name: &str, labels: Value, spec: Value) -> PodInfo {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]);
        PodInfo::from_pod(&json!({"metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec}))
            .unwrap()
    }

    fn web(name: &str) -> PodInfo {
        pod(name, json!({"app": "web"}), json!({}))
    }

    /// A cache with `nodes`, and `counts[i]` web pods on node i.
    fn cluster(nodes: &[Value], counts: &[usize]) -> SchedulerCache {
        let mut c = SchedulerCache::default();
        for n in nodes {
            c.upsert_node(n);
        }
        for (n, count) in nodes.iter().zip(counts) {
            let node = n["metadata"]["name"].as_str().unwrap();
            for i in 0..*count {
                let p = web(&format!("{node}-{i}"));
                c.upsert_pod(&format!("default/{node}-{i}"), node, p.usage());
            }
        }
        c
    }

    fn hard(key: &str, max_skew: i64, extra: Value) -> Value {
        let mut c = json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": DO_NOT_SCHEDULE,
            "labelSelector": {"matchLabels": {"app": "web"}}});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// A pod labelled `app` with one hard constraint on `key` selecting `app=web`.
    fn spread_pod(app: &str, key: &str, max_skew: i64) -> PodInfo {
        let spec = json!({"topologySpreadConstraints": [hard(key, max_skew, json!({}))]});
        pod("new", json!({ "app": app }), spec)
    }

    fn verdict(state: &FilterState, pod: &PodInfo, c: &SchedulerCache, node: &str) -> Result<(), Vec<String>> {
        let view = c.node(node).unwrap().node.clone().unwrap();
        state.check(pod, &view).map_err(|r| {
            assert_eq!(r.plugin, "PodTopologySpread");
            r.reasons
        })
    }

    #[test]
    fn do_not_schedule_filters_nodes_whose_skew_would_grow_too_big() {
        let nodes = [node("n1", Some("a")), node("n2", Some("a")), node("n3", Some("b"))];
        let c = cluster(&nodes, &[2, 1, 0]);
        let p = spread_pod("web", LABEL_HOSTNAME, 1);
        let s = FilterState::new(&p, &c).unwrap();
        // skew = pods in the domain + 1 (the pod matches itself) - 0 (n3 is empty)
        assert_eq!(
            verdict(&s, &p, &c, "n1"),
            Err(vec![REASON_CONSTRAINTS_NOT_MATCH.to_string()])
        );
        assert_eq!(
            verdict(&s, &p, &c, "n2"),
            Err(vec![REASON_CONSTRAINTS_NOT_MATCH.to_string()])
        );
        assert_eq!(verdict(&s, &p, &c, "n3"), Ok(()));
        // maxSkew 2 lets n2 in
        let p2 = spread_pod("web", LABEL_HOSTNAME, 2);
        let s2 = FilterState::new(&p2, &c).unwrap();
        assert_eq!(verdict(&s2, &p2, &c, "n2"), Ok(()));
        // a pod that does not match its own selector does not add itself
        let other = spread_pod("other", LABEL_HOSTNAME, 1);
        let so = FilterState::new(&other, &c).unwrap();
        assert_eq!(verdict(&so, &other, &c, "n2"), Ok(()));
        // zones: a has 3, b has 0
        let z = spread_pod("web", LABEL_ZONE, 1);
        let sz = FilterState::new(&z, &c).unwrap();
        assert!(verdict(&sz, &z, &c, "n2").is_err());
        assert_eq!(verdict(&sz, &z, &c, "n3"), Ok(()));
        // no soft constraints, no filter state
        assert!(FilterState::new(&web("w"), &c).is_none());
    }

    #[test]
    fn a_node_without_the_topology_label_is_filtered_with_its_own_reason() {
        let nodes = [node("n1", Some("a")), node("n2", None)];
        let c = cluster(&nodes, &[0, 0]);
        let p = spread_pod("web", LABEL_ZONE, 1);
        let s = FilterState::new(&p, &c).unwrap();
        assert_eq!(verdict(&s, &p, &c, "n1"), Ok(()));
        assert_eq!(
            verdict(&s, &p, &c, "n2"),
            Err(vec![REASON_NODE_LABEL_NOT_MATCH.to_string()])
        );
    }

    #[test]
    fn min_domains_counts_missing_domains_as_empty() {
        let nodes = [node("n1", Some("a")), node("n2", Some("b"))];
        let c = cluster(&nodes, &[1, 1]);
        let with = |min_domains: i64| {
            pod(
                "new",
                json!({"app": "web"}),
                json!({"topologySpreadConstraints": [
                hard(LABEL_ZONE, 1, json!({"minDomains": min_domains}))]}),
            )
        };
        // 2 zones with 1 pod each: skew 1 + 1 - 1 = 1 is fine
        let p = with(2);
        assert_eq!(verdict(&FilterState::new(&p, &c).unwrap(), &p, &c, "n1"), Ok(()));
        // minDomains 3 > 2 zones: the global minimum counts as 0, skew 2 > 1
        let p = with(3);
        assert_eq!(
            verdict(&FilterState::new(&p, &c).unwrap(), &p, &c, "n1"),
            Err(vec![REASON_CONSTRAINTS_NOT_MATCH.to_string()])
        );
    }

    #[test]
    fn only_same_namespace_live_matching_pods_count() {
        let nodes = [node("n1", None), node("n2", None)];
        let mut c = cluster(&nodes, &[0, 0]);
        let mut elsewhere = web("x").usage();
        elsewhere.namespace = "other".into();
        c.upsert_pod("other/x", "n1", elsewhere);
        let mut leaving = web("y").usage();
        leaving.terminating = true;
        c.upsert_pod("default/y", "n1", leaving);
        let p = spread_pod("web", LABEL_HOSTNAME, 1);
        let s = FilterState::new(&p, &c).unwrap();
        assert_eq!(s.counts[0].get("n1"), Some(&0));
    }

    #[test]
    fn match_label_keys_join_the_selector_and_policies_are_read() {
        let p = pod(
            "p",
            json!({"app": "web", "pod-template-hash": "abc"}),
            json!({"topologySpreadConstraints": [
                hard(LABEL_HOSTNAME, 1, json!({"matchLabelKeys": ["pod-template-hash", "absent"],
                    "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor"})),
                {"maxSkew": 2, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": SCHEDULE_ANYWAY}]}),
        );
        let hard = pod_constraints(&p, DO_NOT_SCHEDULE);
        assert_eq!(hard.len(), 1);
        assert_eq!(
            hard[0].selector,
            LabelSelector::from_structured(&json!({"matchLabels": {"app": "web", "pod-template-hash": "abc"}}))
        );
        assert!(!hard[0].honor_node_affinity && hard[0].honor_node_taints);
        let soft = pod_constraints(&p, SCHEDULE_ANYWAY);
        assert_eq!(soft.len(), 1);
        assert_eq!(soft[0].max_skew, 2);
        assert_eq!(soft[0].selector, None, "no labelSelector selects no pod");
        assert!(soft[0].honor_node_affinity && !soft[0].honor_node_taints);
    }

    #[test]
    fn the_default_selector_comes_from_services_and_the_replica_set() {
        let p = web("p");
        let svc = |sel: Value| json!({"metadata": {"name": "s", "namespace": "default"}, "spec": {"selector": sel}});
        let matching = svc(json!({"app": "web"}));
        let other = svc(json!({"app": "db"}));
        let none = json!({"metadata": {"name": "s"}, "spec": {}});
        assert_eq!(
            default_selector(&p, [&matching, &other, &none].into_iter(), None),
            Some(json!({"matchLabels": {"app": "web"}, "matchExpressions": []}))
        );
        let rs = json!({"matchLabels": {"app": "web", "pod-template-hash": "h"}});
        let sel = default_selector(&p, std::iter::empty(), Some(&rs)).unwrap();
        assert_eq!(sel["matchExpressions"].as_array().unwrap().len(), 2);
        assert!(default_selector(&p, [&other, &none].into_iter(), None).is_none());
    }

    #[test]
    fn the_score_prefers_nodes_with_fewer_pods_of_the_same_kind() {
        let nodes = [node("n1", None), node("n2", None), node("n3", None)];
        let c = cluster(&nodes, &[1, 0, 0]);
        let sel = json!({"matchLabels": {"app": "web"}});
        let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let p = web("new");
        let state = ScoreState::new(&p, &c, &names, Some(&sel)).unwrap();
        let raw: Vec<Option<i64>> = names
            .iter()
            .map(|n| state.raw_score(&p, &c, c.node(n).unwrap().node.as_ref().unwrap()))
            .collect();
        // 1 pod × ln(3 + 2) + (3 - 1) = 3.6 → 4; empty nodes 0 + 2 = 2. The zone default
        // adds nothing: no node has a zone.
        assert_eq!(raw, [Some(4), Some(2), Some(2)]);
        assert_eq!(normalize(&raw), [50, 100, 100]);
        let scored = score_nodes(&p, &c, &names, Some(&sel));
        let spread: Vec<i64> = scored.iter().map(|(_, s)| s.pod_topology_spread).collect();
        assert_eq!(spread, [50, 100, 100]);
        // nodes not scored get 0; all equal get 100
        assert_eq!(normalize(&[None, Some(3), Some(3)]), [0, 100, 100]);
        assert_eq!(normalize(&[Some(0), Some(0)]), [100, 100]);
        // a pod without constraints and without owners spreads nothing
        assert!(ScoreState::new(&p, &c, &names, None).is_none());
    }

    #[test]
    fn own_soft_constraints_ignore_nodes_without_the_key() {
        let nodes = [node("n1", Some("a")), node("n2", Some("b")), node("n3", None)];
        let c = cluster(&nodes, &[2, 0, 0]);
        let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let p = pod(
            "new",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": LABEL_ZONE, "whenUnsatisfiable": SCHEDULE_ANYWAY,
            "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        );
        let spread: Vec<i64> = score_nodes(&p, &c, &names, None)
            .iter()
            .map(|(_, s)| s.pod_topology_spread)
            .collect();
        // zone a: 2 × ln(4) = 2.8 → 3; zone b: 0; n3 has no zone: not scored (0)
        assert_eq!(spread, [0, 100, 0]);
    }

    /// Schedule `n` pods one after another as the scheduler does: score, pick the best
    /// (first on a tie), assume it on its node.
    fn place(c: &mut SchedulerCache, names: &[String], pods: &[PodInfo], sel: Option<&Value>) -> Vec<String> {
        let mut placed = Vec::new();
        for p in pods {
            let scored: Vec<(String, Scores)> = score_nodes(p, c, names, sel);
            let best = scored.iter().map(|(_, s)| s.total()).max().unwrap();
            let node = scored.iter().find(|(_, s)| s.total() == best).unwrap().0.clone();
            c.assume(&format!("default/{}", p.name), &node, p.usage());
            placed.push(node);
        }
        placed
    }

    /// Three empty nodes, where another workload makes n2 and n3 fuller: a backend pod
    /// (different labels, so it does not count for spreading) asking 500m and 512Mi on each.
    fn with_backends() -> SchedulerCache {
        let mut c = cluster(&[node("n1", None), node("n2", None), node("n3", None)], &[0, 0, 0]);
        for n in ["n2", "n3"] {
            let mut backend = pod(&format!("b-{n}"), json!({"app": "backend"}), json!({}));
            backend.requests.milli_cpu = 500;
            backend.requests.memory = 512 << 20;
            backend.non_zero_cpu = 500;
            backend.non_zero_memory = 512 << 20;
            c.upsert_pod(&format!("default/b-{n}"), n, backend.usage());
        }
        c
    }

    #[test]
    fn three_replicas_land_on_three_nodes_despite_resource_differences() {
        let names: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let replicas: Vec<PodInfo> = (0..3).map(|i| web(&format!("web-{i}"))).collect();
        // resources alone pile all three onto the emptiest node ...
        assert_eq!(place(&mut with_backends(), &names, &replicas, None), ["n1", "n1", "n1"]);
        // ... the spread score (weight 2) outweighs that: one replica per node
        let sel = json!({"matchLabels": {"app": "web"}});
        let mut placed = place(&mut with_backends(), &names, &replicas, Some(&sel));
        assert_eq!(placed[0], "n1");
        placed.sort();
        assert_eq!(placed, ["n1", "n2", "n3"]);
    }
}
