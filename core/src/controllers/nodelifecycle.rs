//! # The node lifecycle controller (mirrors kube-controller-manager's `pkg/controller/nodelifecycle`)
//!
//! A kubelet proves it is alive by renewing its node's **Lease** (`kube-node-lease/<node>`,
//! field `spec.renewTime`) every few seconds, and by posting the node's status (the `Ready`
//! condition) when something changes. A machine that loses power cannot say so: the only
//! sign is that *nothing happens*. So this controller does not just react to events, it
//! also looks at every node on a timer (upstream: every `--node-monitor-period`, 5 s):
//!
//! 1. **Noticing silence.** It remembers, on its own clock, when it last saw a node's Lease
//!    (or Ready heartbeat) change. After `--node-monitor-grace-period` (50 s since v1.32) without a
//!    change it sets the node's conditions to `Unknown` through `/status` (reason
//!    `NodeStatusUnknown`, "Kubelet stopped posting node status."), records a `NodeNotReady`
//!    event, and marks the Pods on the node not Ready, which takes them out of their
//!    Services' Endpoints. It compares *when it saw a change*, not the timestamps the kubelet
//!    wrote, so clocks that disagree between machines do not matter. (A restarted controller
//!    gives every node a full grace period again.)
//! 2. **Tainting.** A node whose Ready condition is `Unknown` gets the taints
//!    `node.kubernetes.io/unreachable` with effects `NoSchedule` (the scheduler places no new
//!    Pods there) and `NoExecute` (Pods that do not tolerate it must leave); `Ready=False`
//!    gives the same pair with `node.kubernetes.io/not-ready`. When the Lease is renewed again
//!    the unreachable taints go away; the kubelet sets `Ready=True` itself.
//! 3. **Evicting.** The `NoExecute` taint records when it was added (`timeAdded`). A Pod may
//!    tolerate it for `tolerationSeconds`; Pods without such a toleration get the default
//!    (`--pod-eviction-timeout`, upstream the 300 s `DefaultTolerationSeconds` admission adds).
//!    After that the Pod is deleted (with `gracePeriodSeconds: 0`: no kubelet will ever
//!    confirm it stopped) and a `TaintManagerEviction` event says so. Its ReplicaSet then
//!    creates a replacement, which the scheduler puts on a healthy node. This is the
//!    "taint-based eviction" of upstream's taint manager.
//!
//! The periodic check itself writes nothing and traces nothing when all is well: only nodes
//! that need a change are queued, and only changes get a `controller.node_status` span. As no
//! write caused a node to fall silent, that span starts a trace of its own, which the
//! evictions (and the replacement Pods that follow) continue.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use super::reconciler::{Action, Cause, Queue, ReconcileError, ReconcileReason, Reconciler, new_queue};
use super::{Caches, Ctx, Options, SharedInformers};
use crate::client::ClientError;
use crate::client::informer::{Cache, InformerEvent, key_of};
use crate::client::workqueue::WorkQueue;
use crate::events::EventType;
use crate::objects::{self, ResourceInfo};

/// The taint of a node whose kubelet stopped reporting.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose kubelet reports `Ready=False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The namespace of the kubelets' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node lifecycle controller. See the module documentation.
pub struct NodeLifecycleController {
    ctx: Arc<Ctx>,
    state: Arc<Mutex<State>>,
}

/// What the controller observed, on its own clock.
#[derive(Default)]
struct State {
    health: HashMap<String, Health>,
    /// node name → keys of the Pods bound to it.
    pods_by_node: HashMap<String, HashSet<String>>,
    /// pod key → node name (to move a Pod between sets).
    node_of_pod: HashMap<String, String>,
}

struct Health {
    /// When we last saw a sign of life: a new Lease renewTime or Ready heartbeat.
    probe: Instant,
    renew_time: Option<String>,
    heartbeat: Option<String>,
}

impl Health {
    fn new() -> Self {
        Health {
            probe: Instant::now(),
            renew_time: None,
            heartbeat: None,
        }
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn info(kind: &str) -> &'static ResourceInfo {
    objects::by_gvk("v1", kind).expect("built-in kind")
}

/// The node's Ready condition, if it has one.
fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
}

/// `True`, `False`, `Unknown`, or `None` when the kubelet never posted a Ready condition.
fn ready_status(node: &Value) -> Option<&str> {
    ready_condition(node)?.get("status")?.as_str()
}

fn heartbeat(node: &Value) -> Option<String> {
    ready_condition(node)?
        .get("lastHeartbeatTime")?
        .as_str()
        .map(str::to_string)
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_ours(taint: &Value) -> bool {
    matches!(
        taint.get("key").and_then(Value::as_str),
        Some(TAINT_UNREACHABLE | TAINT_NOT_READY)
    )
}

/// The node's taints as they should be: everyone else's kept as they are, ours following
/// the Ready condition (and, for `unreachable`, whether the node is silent).
fn desired_taints(current: &[Value], ready: Option<&str>, silent: bool, now: DateTime<Utc>) -> Vec<Value> {
    let wanted_key = match ready {
        Some("True") => None,
        Some("False") => Some(TAINT_NOT_READY),
        _ if silent => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    let mut out: Vec<Value> = current
        .iter()
        .filter(|t| !is_ours(t) || t.get("key").and_then(Value::as_str) == wanted_key)
        .cloned()
        .collect();
    if let Some(key) = wanted_key {
        for effect in ["NoSchedule", "NoExecute"] {
            let pos = out.iter().position(|t| {
                t.get("key").and_then(Value::as_str) == Some(key)
                    && t.get("effect").and_then(Value::as_str) == Some(effect)
            });
            let fresh = || {
                let mut t = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    t["timeAdded"] = json!(crate::objects::time::time(now));
                }
                t
            };
            match pos {
                None => out.push(fresh()),
                // The eviction clock needs to know when the NoExecute taint came.
                Some(i) if effect == "NoExecute" && out[i].get("timeAdded").and_then(Value::as_str).is_none() => {
                    out[i] = fresh()
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// When `pod` must leave a node with `taints` (client-go's taint manager): the earliest
/// deadline over the `NoExecute` taints of ours. A matching toleration without
/// `tolerationSeconds` means "never"; no matching toleration means the default timeout.
fn eviction_deadline(pod: &Value, taints: &[Value], default_timeout: Duration) -> Option<DateTime<Utc>> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut deadline: Option<DateTime<Utc>> = None;
    for taint in taints
        .iter()
        .filter(|t| is_ours(t) && t.get("effect").and_then(Value::as_str) == Some("NoExecute"))
    {
        let added = taint
            .get("timeAdded")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        let matching: Vec<&Value> = tolerations.iter().filter(|tol| tolerates(tol, taint)).collect();
        let after = if matching.is_empty() {
            Some(chrono::Duration::from_std(default_timeout).unwrap_or(chrono::Duration::MAX))
        } else if matching.iter().any(|t| t.get("tolerationSeconds").is_none()) {
            None // tolerated forever
        } else {
            matching
                .iter()
                .filter_map(|t| t.get("tolerationSeconds").and_then(Value::as_i64))
                .min()
                .map(|s| chrono::Duration::seconds(s.max(0)))
        };
        if let Some(after) = after {
            let d = added.checked_add_signed(after).unwrap_or(DateTime::<Utc>::MAX_UTC);
            deadline = Some(deadline.map_or(d, |x| x.min(d)));
        }
    }
    deadline
}

/// Does `toleration` tolerate `taint`? (`v1.Toleration.ToleratesTaint`)
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let effect = s(toleration, "effect");
    if !effect.is_empty() && effect != s(taint, "effect") {
        return false;
    }
    let key = s(toleration, "key");
    let operator = toleration.get("operator").and_then(Value::as_str).unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != s(taint, "key") {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" => s(toleration, "value") == s(taint, "value"),
        _ => false,
    }
}

/// What a node needs right now.
#[derive(Default)]
struct Plan {
    /// Set the conditions to Unknown (the node went silent).
    mark_unknown: bool,
    /// The new taints, when they differ from the current ones.
    taints: Option<Vec<Value>>,
    /// Pods whose time on the tainted node is up.
    evict: Vec<Arc<Value>>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.mark_unknown && self.taints.is_none() && self.evict.is_empty()
    }
}

fn plan(node: &Value, silent: bool, pods: &[Arc<Value>], now: DateTime<Utc>, options: &Options) -> Plan {
    let ready = ready_status(node);
    let mark_unknown = silent && ready != Some("Unknown");
    let ready_after = if mark_unknown { Some("Unknown") } else { ready };
    let current = taints(node);
    let wanted = desired_taints(&current, ready_after, silent, now);
    let evict = pods
        .iter()
        .filter(|p| eviction_deadline(p, &wanted, options.pod_eviction_timeout).is_some_and(|d| d <= now))
        .cloned()
        .collect();
    Plan {
        mark_unknown,
        taints: (wanted != current).then_some(wanted),
        evict,
    }
}

impl State {
    fn silent(&mut self, node: &str, grace: Duration) -> (bool, Duration) {
        let h = self.health.entry(node.to_string()).or_insert_with(Health::new);
        let age = h.probe.elapsed();
        (age > grace, age)
    }
}

fn pods_on(state: &State, caches: &Caches, node: &str) -> Vec<Arc<Value>> {
    state
        .pods_by_node
        .get(node)
        .map(|keys| keys.iter().filter_map(|k| caches.pods.get(k)).collect())
        .unwrap_or_default()
}

fn requeue(queue: &Queue, node: String) {
    queue.add(
        node,
        Cause {
            reason: ReconcileReason::RequeueRequested,
            traceparent: None,
        },
    );
}

/// Set up the controller: observe Leases, Nodes and Pods; start the periodic check.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<NodeLifecycleController>, Queue) {
    let queue = new_queue();
    let state = Arc::new(Mutex::new(State::default()));
    {
        let (queue, state) = (queue.clone(), state.clone());
        informers.nodes.on_event(move |ev| on_node_event(&queue, &state, ev));
    }
    {
        let (queue, state, nodes) = (queue.clone(), state.clone(), ctx.caches.nodes.clone());
        informers
            .leases
            .on_event(move |ev| on_lease_event(&queue, &state, &nodes, ev));
    }
    {
        let state = state.clone();
        informers.pods.on_event(move |ev| on_pod_event(&state, ev));
    }
    tokio::spawn(monitor(
        Arc::downgrade(&queue),
        state.clone(),
        ctx.caches.clone(),
        ctx.options.clone(),
    ));
    (Arc::new(NodeLifecycleController { ctx, state }), queue)
}

/// A node changed: note a new heartbeat in its status, and queue it when its readiness or
/// taints changed (upstream's node informer handlers).
fn on_node_event(queue: &Queue, state: &Mutex<State>, ev: &InformerEvent) {
    let node = ev.object();
    let name = objects::name(node).unwrap_or("").to_string();
    let mut s = lock(state);
    match ev {
        InformerEvent::Deleted(_) => {
            s.health.remove(&name);
            return;
        }
        InformerEvent::Resync(_) => return, // the periodic check covers it
        _ => {}
    }
    let h = s.health.entry(name.clone()).or_insert_with(Health::new);
    let hb = heartbeat(node);
    if hb.is_some() && hb != h.heartbeat {
        h.probe = Instant::now();
        h.heartbeat = hb;
    }
    drop(s);
    let relevant = match ev {
        InformerEvent::Modified { old, new } => ready_status(old) != ready_status(new) || taints(old) != taints(new),
        _ => true,
    };
    if relevant {
        super::reconciler::enqueue_own(queue, ev);
    }
}

/// A node's Lease changed: note the renewal, and queue a node that is back from silence so
/// its taints go (upstream's lease informer).
fn on_lease_event(queue: &Queue, state: &Mutex<State>, nodes: &Cache, ev: &InformerEvent) {
    let lease = ev.object();
    if matches!(ev, InformerEvent::Deleted(_) | InformerEvent::Resync(_))
        || objects::namespace(lease) != Some(LEASE_NAMESPACE)
    {
        return;
    }
    let name = objects::name(lease).unwrap_or("").to_string();
    let renew = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .map(str::to_string);
    let renewed = {
        let mut s = lock(state);
        let h = s.health.entry(name.clone()).or_insert_with(Health::new);
        if renew.is_some() && renew != h.renew_time {
            h.probe = Instant::now();
            h.renew_time = renew;
            true
        } else {
            false
        }
    };
    // Back from silence: its taints should go.
    if renewed
        && nodes.get(&name).is_some_and(|n| {
            taints(&n)
                .iter()
                .any(|t| t.get("key").and_then(Value::as_str) == Some(TAINT_UNREACHABLE))
        })
    {
        super::reconciler::enqueue_related(queue, name, "Lease", lease);
    }
}

/// A pod changed: keep the index of pods per node up to date (upstream's `podUpdated`).
fn on_pod_event(state: &Mutex<State>, ev: &InformerEvent) {
    let pod = ev.object();
    let key = key_of(pod);
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let mut s = lock(state);
    let node = if matches!(ev, InformerEvent::Deleted(_)) {
        None
    } else {
        node
    };
    let old = s.node_of_pod.get(&key).cloned();
    if old == node {
        return;
    }
    if let Some(old) = old {
        if let Some(set) = s.pods_by_node.get_mut(&old) {
            set.remove(&key);
            if set.is_empty() {
                s.pods_by_node.remove(&old);
            }
        }
        s.node_of_pod.remove(&key);
    }
    if let Some(n) = node {
        s.pods_by_node.entry(n.clone()).or_default().insert(key.clone());
        s.node_of_pod.insert(key, n);
    }
}

/// The check period: upstream's `--node-monitor-period` is 5 s for a 50 s grace period.
fn monitor_period(options: &Options) -> Duration {
    (options.node_monitor_grace_period / 8).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// The periodic check (upstream `monitorNodeHealth`): queue only the nodes that need a
/// change. Ends when the controller's queue is gone.
async fn monitor(queue: Weak<WorkQueue<String, Cause>>, state: Arc<Mutex<State>>, caches: Caches, options: Options) {
    let period = monitor_period(&options);
    loop {
        tokio::time::sleep(period).await;
        let Some(queue) = queue.upgrade() else { return };
        let now = Utc::now();
        let mut due = Vec::new();
        for node in caches.nodes.list() {
            let Some(name) = objects::name(&node) else { continue };
            let (silent, pods) = {
                let mut s = lock(&state);
                let (silent, _) = s.silent(name, options.node_monitor_grace_period);
                let has_no_execute = taints(&node).iter().any(is_ours);
                // Pods only matter on tainted nodes: skip the lookup otherwise.
                let pods = if has_no_execute || silent {
                    pods_on(&s, &caches, name)
                } else {
                    Vec::new()
                };
                (silent, pods)
            };
            if !plan(&node, silent, &pods, now, &options).is_empty() {
                due.push(name.to_string());
            }
        }
        for name in due {
            requeue(&queue, name);
        }
    }
}

impl NodeLifecycleController {
    /// Change a node with `edit` (on `/status` when `sub` says so), starting from `start`
    /// and re-reading on a conflict. Returns the stored node.
    async fn update_node(
        &self,
        name: &str,
        sub: Option<&str>,
        start: Value,
        edit: impl Fn(&mut Value),
    ) -> Result<Value, ClientError> {
        let mut current = Some(start);
        let mut last_err = None;
        for _ in 0..5 {
            let mut node = match current.take() {
                Some(n) => n,
                None => self.ctx.client.get(info("Node"), None, name).await?,
            };
            edit(&mut node);
            match self.ctx.client.replace(info("Node"), None, name, sub, &node).await {
                Ok(stored) => return Ok(stored),
                Err(e) if e.code() == Some(409) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| ClientError::Protocol("conflict".into())))
    }

    /// Set every condition the kubelet reports to Unknown (upstream `tryUpdateNodeHealth`).
    fn mark_conditions_unknown(node: &mut Value, now: &str) {
        let created = node
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or_else(|| json!(now));
        if !node.get("status").is_some_and(Value::is_object) {
            node["status"] = json!({});
        }
        if !node["status"].get("conditions").is_some_and(Value::is_array) {
            node["status"]["conditions"] = json!([]);
        }
        let Some(conds) = node["status"]["conditions"].as_array_mut() else {
            return;
        };
        let kubelet_kinds = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
        for c in conds.iter_mut() {
            let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
            if kubelet_kinds.contains(&kind) && c.get("status").and_then(Value::as_str) != Some("Unknown") {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(now);
            }
        }
        if !conds
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        {
            conds.push(json!({
                "type": "Ready",
                "status": "Unknown",
                "reason": "NodeStatusNeverUpdated",
                "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": created,
                "lastTransitionTime": now,
            }));
        }
    }

    /// Set the Pods' Ready condition to False (upstream `MarkPodsNotReady`), with an event.
    async fn mark_pods_not_ready(&self, pods: &[Arc<Value>], now: &str) -> usize {
        let mut marked = 0;
        for pod in pods {
            if !crate::controllers::endpointutil::is_pod_ready(pod) {
                continue;
            }
            let mut p = (**pod).clone();
            if let Some(conds) = p.pointer_mut("/status/conditions").and_then(Value::as_array_mut) {
                for c in conds.iter_mut() {
                    if c.get("type").and_then(Value::as_str) == Some("Ready") {
                        c["status"] = json!("False");
                        c["lastTransitionTime"] = json!(now);
                    }
                }
            }
            let ns = objects::namespace(pod).unwrap_or("default");
            let name = objects::name(pod).unwrap_or("");
            match self
                .ctx
                .client
                .replace(info("Pod"), Some(ns), name, Some("status"), &p)
                .await
            {
                Ok(stored) => {
                    marked += 1;
                    self.ctx
                        .recorder
                        .record(&stored, EventType::Warning, "NodeNotReady", "Node is not ready")
                        .await;
                }
                // A newer version or a deleted Pod: the next pass looks again.
                Err(e) => tracing::debug!("could not mark Pod {ns}/{name} not ready: {e}"),
            }
        }
        marked
    }

    /// Evict: delete for good, with an event (upstream taint manager's `deletePodHandler`).
    async fn evict(&self, pod: &Value) -> Result<bool, ClientError> {
        let ns = objects::namespace(pod).unwrap_or("default");
        let name = objects::name(pod).unwrap_or("");
        self.ctx
            .recorder
            .record(
                pod,
                EventType::Normal,
                "TaintManagerEviction",
                &format!("Marking for deletion Pod {ns}/{name}"),
            )
            .await;
        let options = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": objects::uid(pod).unwrap_or("")},
        });
        match self
            .ctx
            .client
            .delete_with_options(info("Pod"), Some(ns), name, &options)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some(404) || e.code() == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn describe_taints(taints: &[Value]) -> String {
    taints
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t.get("key").and_then(Value::as_str).unwrap_or(""),
                t.get("effect").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait::async_trait]
impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "nodelifecycle"
    }

    async fn reconcile(&self, name: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let Some(node) = self.ctx.caches.nodes.get(name) else {
            return Ok(Action::await_change());
        };
        let options = &self.ctx.options;
        let now = Utc::now();
        let (silent, age, pods) = {
            let mut s = lock(&self.state);
            let (silent, age) = s.silent(name, options.node_monitor_grace_period);
            (silent, age, pods_on(&s, &self.ctx.caches, name))
        };
        let p = plan(&node, silent, &pods, now, options);
        if p.is_empty() {
            return Ok(Action::await_change());
        }
        let span = node_status_span(name, age);
        let result = async {
            let mut node_obj = (*node).clone();
            if p.mark_unknown {
                node_obj = self.mark_unknown(name, node_obj, &pods, now).await?;
            }
            if p.taints.is_some() {
                self.update_taints(name, node_obj, silent, now).await?;
            }
            self.evict_all(name, &p.evict).await
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_message", e.0.as_str());
        }
        result.map(|()| Action::await_change())
    }
}

/// The `controller.node_status` span of one reconcile. A node going silent is a cause of
/// its own (no write started it): unless this reconcile continues a traced change, the span
/// starts a new trace that the evictions and their consequences (replacement pods,
/// rescheduling) continue.
fn node_status_span(name: &str, age: Duration) -> tracing::Span {
    macro_rules! node_status_span {
        ($($parent:tt)*) => {
            info_span!(
                $($parent)*
                "controller.node_status",
                "kulisse.stage" = "controller",
                "k8s.kind" = "Node",
                "k8s.name" = name,
                "node.silent_for_seconds" = age.as_secs_f64(),
                "node.ready" = tracing::field::Empty,
                "node.taints" = tracing::field::Empty,
                "node.pods.marked_not_ready" = tracing::field::Empty,
                "node.pods.evicted" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
                "otel.status_message" = tracing::field::Empty,
            )
        };
    }
    if kulisse_traces::propagation::is_sampled(&tracing::Span::current()) {
        node_status_span!()
    } else {
        node_status_span!(parent: None,)
    }
}

impl NodeLifecycleController {
    /// A silent node: its conditions become Unknown, with a `NodeNotReady` event, and its
    /// pods not ready (upstream `tryUpdateNodeHealth` and `MarkPodsNotReady`). Returns the
    /// stored node.
    async fn mark_unknown(
        &self,
        name: &str,
        node: Value,
        pods: &[Arc<Value>],
        now: DateTime<Utc>,
    ) -> Result<Value, ReconcileError> {
        let now_s = crate::objects::time::time(now);
        let node_obj = self
            .update_node(name, Some("status"), node, |n| Self::mark_conditions_unknown(n, &now_s))
            .await
            .map_err(|e| ReconcileError(format!("could not set the conditions of node {name} to Unknown: {e}")))?;
        tracing::Span::current().record("node.ready", "Unknown");
        self.ctx
            .recorder
            .record(
                &node_obj,
                EventType::Normal,
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
        let marked = self.mark_pods_not_ready(pods, &now_s).await;
        tracing::Span::current().record("node.pods.marked_not_ready", marked);
        Ok(node_obj)
    }

    /// Write the taints the node should have now (upstream `processTaintBaseEviction`),
    /// recomputed from the node as it is now (the status write may have changed it).
    async fn update_taints(
        &self,
        name: &str,
        node: Value,
        silent: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ReconcileError> {
        let stored = self
            .update_node(name, None, node, |n| {
                let wanted = desired_taints(&taints(n), ready_status(n), silent, now);
                if !n.get("spec").is_some_and(Value::is_object) {
                    n["spec"] = json!({});
                }
                if wanted.is_empty() {
                    if let Some(spec) = n["spec"].as_object_mut() {
                        spec.remove("taints");
                    }
                } else {
                    n["spec"]["taints"] = Value::Array(wanted);
                }
            })
            .await
            .map_err(|e| ReconcileError(format!("could not update the taints of node {name}: {e}")))?;
        tracing::Span::current().record("node.taints", describe_taints(&taints(&stored)).as_str());
        Ok(())
    }

    /// Evict the pods whose time on the tainted node is up (the taint manager).
    async fn evict_all(&self, name: &str, pods: &[Arc<Value>]) -> Result<(), ReconcileError> {
        let mut evicted = 0;
        for pod in pods {
            if self
                .evict(pod)
                .await
                .map_err(|e| ReconcileError(format!("could not evict Pod {} from node {name}: {e}", key_of(pod))))?
            {
                evicted += 1;
            }
        }
        tracing::Span::current().record("node.pods.evicted", evicted);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, taints: Value) -> Value {
        json!({"metadata": {"name": "n1"}, "spec": {"taints": taints},
               "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn silent_node_gets_unknown_and_unreachable_taints_keeping_others() {
        let now = Utc::now();
        let n = node(
            "True",
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        let p = plan(&n, true, &[], now, &Options::fast());
        assert!(p.mark_unknown);
        let t = p.taints.expect("taints change");
        assert_eq!(t.len(), 3);
        assert_eq!(t[0]["key"], "dedicated");
        assert_eq!(
            describe_taints(&t[1..]),
            format!("{TAINT_UNREACHABLE}:NoSchedule,{TAINT_UNREACHABLE}:NoExecute")
        );
        assert!(t[2]["timeAdded"].is_string());
        // Once marked and tainted, nothing more to do until eviction time.
        let n2 = node("Unknown", Value::Array(t.clone()));
        assert!(plan(&n2, true, &[], now, &Options::fast()).is_empty());
        // The lease is renewed: the unreachable taints go, the user's taint stays.
        let p = plan(&n2, false, &[], now, &Options::fast());
        assert_eq!(p.taints.expect("taints change"), vec![t[0].clone()]);
    }

    #[test]
    fn eviction_deadline_follows_tolerations() {
        let added = "2024-01-01T00:00:00Z";
        let taints = vec![json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": added})];
        let t0 = DateTime::parse_from_rfc3339(added).unwrap().with_timezone(&Utc);
        let plain = json!({"spec": {}});
        assert_eq!(
            eviction_deadline(&plain, &taints, Duration::from_secs(300)),
            Some(t0 + chrono::Duration::seconds(300))
        );
        let tolerating = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}});
        assert_eq!(
            eviction_deadline(&tolerating, &taints, Duration::from_secs(300)),
            Some(t0 + chrono::Duration::seconds(10))
        );
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(eviction_deadline(&forever, &taints, Duration::from_secs(300)), None);
    }
}
