//! Station ④ · chapter "The scheduler" (book/src/scheduler.md) · spans `scheduler.*`
//!
//! # The scheduler (mirrors kube-scheduler)
//!
//! A new Pod says what it needs (`resources.requests`, a `nodeSelector`, tolerations, host
//! ports) but not *where* to run. The scheduler is the component that picks a node for
//! every pod whose `spec.nodeName` is empty and whose `spec.schedulerName` is its own
//! (`default-scheduler`). It never starts anything itself: it only writes the decision, by
//! POSTing a **Binding** to the pod's `pods/{name}/binding` subresource. The kubelet of
//! the chosen node sees the pod appear in its watch and runs it.
//!
//! One pod at a time, a **scheduling cycle** goes:
//!
//! ```text
//!  informers (Nodes, Pods) ─► scheduler cache (per node: requested cpu/memory/pods, ports)
//!            │
//!            └─► scheduling queue ─► pop pod ─► Filter every node ─► Score the feasible ones
//!                      ▲                             │ none fits           │ best node
//!                      │                             ▼                     ▼
//!        cluster events (node added, pod deleted)  PodScheduled=False   assume in cache,
//!        move parked pods back                     + FailedScheduling    bind (async),
//!                                                  event; park the pod   Scheduled event
//! ```
//!
//! - [`cache`]: the per-node totals, kept up to date one informer event at a time.
//! - [`queue`]: activeQ / backoffQ / unschedulable pods, and when pods move between them.
//! - [`plugins`]: the filter and score plugins, under their upstream names.
//! - [`explain`]: each plugin's verdict as a `scheduler.plugin` span, for `kulisse explain`.
//! - [`spread`]: PodTopologySpread, the plugin that spreads a Deployment's replicas (and a
//!   Service's pods) over nodes and zones.
//!
//! When no node fits, the message says why, counted per reason exactly as kube-scheduler
//! writes it: `0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu},
//! 2 Insufficient cpu.` You find it in `kulisse describe pod` (the `PodScheduled`
//! condition and a `FailedScheduling` event).
//!
//! **Scale.** Each decision costs `O(nodes)`: filters and scores read the cache's totals,
//! never the list of pods, except PodTopologySpread, which counts the pods its selector
//! picks on each node (`O(pods)`, as upstream). In large clusters, as upstream, the scheduler stops filtering once
//! it has found enough feasible nodes (`percentageOfNodesToScore`: all nodes below 100,
//! then a share that shrinks from 50 % to 5 % as the cluster grows), starting each cycle where
//! the previous one stopped so every node gets its turn.
//!
//! **Traces.** Every attempt is a `scheduler.schedule_pod` span in the pod's trace (it
//! continues the `kulisse.dev/traceparent` annotation), with children `scheduler.filter`
//! (an event per node that was ruled out, and why), `scheduler.score` (an event per node with
//! its points per plugin) and `scheduler.bind`. Below the first two, a `scheduler.plugin` span
//! per plugin and node keeps each verdict and its reason ([`explain`]). Those per-node
//! details are written unless OpenTelemetry has decided the cycle goes to no trace: a pod
//! that only background work touched (a load generator's writes, which count as a
//! component's, unless `KULISSE_TRACE_BACKGROUND=1`) is scheduled without them, because the
//! layer builds a span that is not sampled as fully as one that is, and drops it at its end.
//!
//! **Several schedulers.** A cluster with several masters runs a scheduler on each, but only
//! one may act: they elect a leader through the Lease `kube-system/kube-scheduler`
//! ([`crate::client::leaderelection`], client-go's `leaderelection`). The others stand by and
//! take over when the leader's lease runs out; each change of leadership is a
//! `scheduler.leader_election` span ([`leader_election_span`]) with the event
//! `started leading`, `stopped leading` or `new leader`. Unlike kube-scheduler, which fills
//! its caches while it stands by, kulisse starts [`run`] only once it leads.

pub mod cache;
pub mod explain;
pub mod plugins;
pub mod queue;
pub mod spread;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, Span, info_span};

use crate::client::Client;
use crate::client::informer::{Cache, Informer, InformerEvent, key_of};
use crate::controllers::reconciler::traceparent_of;
use crate::events::{EventRecorder, EventType};
use crate::objects;
use cache::{PodInfo, PodUsage, SchedulerCache};
use plugins::Rejection;
use queue::{Popped, SchedulingQueue};

/// The scheduler's name unless configured otherwise.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// The Lease in `kube-system` the schedulers elect their leader with (kube-scheduler's
/// `--leader-elect-resource-name`).
pub const LEASE_NAME: &str = "kube-scheduler";

/// The span of one change of leadership among the schedulers: its event says which
/// (`started leading`, `stopped leading`, `new leader`); see [`crate::client::leaderelection`].
pub fn leader_election_span(lease: &str, identity: &str, holder: &str, transitions: i64) -> Span {
    info_span!(
        "scheduler.leader_election",
        "kulisse.stage" = "scheduler",
        "leaderelection.lease" = lease,
        "leaderelection.identity" = identity,
        "leaderelection.holder" = holder,
        "leaderelection.transitions" = transitions,
    )
}

/// At most this many per-node events are attached to one filter or score span, so that a
/// decision among thousands of nodes stays readable (the span's counts cover the rest).
const MAX_NODE_EVENTS: usize = 100;

/// Below this many nodes every node is checked (upstream's `minFeasibleNodesToFind`).
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest adaptive share of nodes to check (`minFeasibleNodesPercentageToFind`).
const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// The default [`Options::assumed_pod_ttl`]: upstream's `durationToExpireAssumedPod` before
/// it was set to "never" (see [`cache`]).
pub const ASSUMED_POD_TTL: Duration = Duration::from_secs(15 * 60);
/// How often expired assumptions are swept (upstream's `cleanAssumedPeriod`).
const CLEAN_ASSUMED_PERIOD: Duration = Duration::from_secs(1);

/// Settings of the scheduler (kube-scheduler's `KubeSchedulerConfiguration`, in part).
#[derive(Debug, Clone)]
pub struct Options {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// Share of nodes to find feasible before scoring, 1–100; `None` (or 0): adaptive, as
    /// upstream (all nodes below 100; `50 - nodes/125` percent, at least 5 %).
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Back-off of a pod after its first failed attempt (`podInitialBackoffSeconds`, 1 s).
    pub pod_initial_backoff: Duration,
    /// Largest back-off (`podMaxBackoffSeconds`, 10 s).
    pub pod_max_backoff: Duration,
    /// An unschedulable pod is retried after this long even without a cluster event
    /// (`podMaxInUnschedulablePodsDuration`, 5 min).
    pub pod_max_in_unschedulable_pods_duration: Duration,
    /// How often that is checked (upstream: every 30 s).
    pub flush_interval: Duration,
    /// Binds (API calls) running at once while the next pods are already being scheduled.
    pub parallel_binds: usize,
    /// How long an assumed pod whose bind succeeded may go unconfirmed by the informer
    /// before the cache drops it and frees its capacity (see [`cache`]; 15 min).
    pub assumed_pod_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            percentage_of_nodes_to_score: None,
            pod_initial_backoff: Duration::from_secs(1),
            pod_max_backoff: Duration::from_secs(10),
            pod_max_in_unschedulable_pods_duration: Duration::from_secs(300),
            flush_interval: Duration::from_secs(30),
            parallel_binds: 32,
            assumed_pod_ttl: ASSUMED_POD_TTL,
        }
    }
}

/// How many feasible nodes to look for among `total` (upstream's `numFeasibleNodesToFind`).
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, total: usize) -> usize {
    if total < MIN_FEASIBLE_NODES_TO_FIND {
        return total;
    }
    let mut pct = percentage.unwrap_or(0) as usize;
    if pct >= 100 {
        return total;
    }
    if pct == 0 {
        pct = 50usize.saturating_sub(total / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE);
    }
    (total * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// kube-scheduler's `FitError` message: `0/3 nodes are available: 1 node(s) were
/// unschedulable, 2 Insufficient cpu.` — each reason with the number of nodes that gave it,
/// sorted as text, joined by `, `.
pub fn fit_error_message(total_nodes: usize, rejections: &[(String, Rejection)]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, r) in rejections {
        for reason in &r.reasons {
            *counts.entry(reason.as_str()).or_insert(0) += 1;
        }
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let mut msg = format!("0/{total_nodes} nodes are available:");
    if !parts.is_empty() {
        msg.push_str(&format!(" {}.", parts.join(", ")));
    }
    msg
}

/// Upstream's `ErrNoNodesAvailable`.
pub const NO_NODES_MESSAGE: &str = "no nodes available to schedule pods";

/// The outcome of the filter step.
#[derive(Default)]
struct Filtered {
    feasible: Vec<String>,
    rejections: Vec<(String, Rejection)>,
    evaluated: usize,
}

/// The outcome of the algorithm for one pod.
enum Decision {
    Scheduled {
        node: String,
        evaluated: usize,
        feasible: usize,
    },
    Unschedulable {
        message: String,
        evaluated: usize,
    },
}

/// The scheduler's shared state.
struct Scheduler {
    client: Client,
    options: Options,
    cache: Mutex<SchedulerCache>,
    queue: SchedulingQueue,
    pods: Cache,
    recorder: EventRecorder,
    /// Where the next cycle starts visiting nodes (upstream's `nextStartNodeIndex`).
    next_start_node_index: AtomicUsize,
    /// Round-robin among equally good nodes.
    tie_breaker: AtomicUsize,
    /// Services and ReplicaSets, for PodTopologySpread's default constraints.
    owners: spread::Owners,
}

fn pod_info_kind() -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind")
}

fn node_name_of(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn priority_of(pod: &Value) -> i32 {
    pod.pointer("/spec/priority")
        .and_then(Value::as_i64)
        .map(|p| p.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
        .unwrap_or(0)
}

/// What a pod update must change for a parked pod to be worth another try (upstream
/// ignores status-only updates, including our own `PodScheduled` condition). The
/// `kulisse.dev/traceparent` annotation changes with every write, so it does not count.
fn scheduling_relevant_change(old: &Value, new: &Value) -> bool {
    let annotations = |v: &Value| {
        let mut a = objects::annotations(v);
        a.remove(crate::controllers::reconciler::TRACEPARENT_ANNOTATION);
        a
    };
    old.get("spec") != new.get("spec")
        || old.pointer("/metadata/labels") != new.pointer("/metadata/labels")
        || annotations(old) != annotations(new)
}

impl Scheduler {
    /// Is this pending pod ours to schedule now?
    fn wants(&self, pod: &Value) -> bool {
        let name = pod.pointer("/spec/schedulerName").and_then(Value::as_str).unwrap_or("");
        (name.is_empty() || name == self.options.scheduler_name)
            && objects::deletion_timestamp(pod).is_none()
            && !is_terminal(pod)
            && pod
                .pointer("/spec/schedulingGates")
                .and_then(Value::as_array)
                .is_none_or(|g| g.is_empty())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, SchedulerCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_node_event(&self, ev: &InformerEvent) {
        match ev {
            InformerEvent::Added(n) | InformerEvent::Resync(n) | InformerEvent::Modified { new: n, .. } => {
                let changed = self.lock_cache().upsert_node(n);
                if changed {
                    self.queue.move_all_to_active_or_backoff();
                }
            }
            InformerEvent::Deleted(n) => {
                self.lock_cache().remove_node(objects::name(n).unwrap_or(""));
            }
        }
    }

    fn on_pod_event(&self, ev: &InformerEvent) {
        match ev {
            InformerEvent::Added(p) | InformerEvent::Resync(p) => self.pod_seen(None, p),
            InformerEvent::Modified { old, new } => self.pod_seen(Some(old), new),
            InformerEvent::Deleted(p) => {
                let key = key_of(p);
                self.queue.delete(&key);
                if self.lock_cache().remove_pod(&key).is_some() {
                    // room was freed: parked pods may fit now
                    self.queue.move_all_to_active_or_backoff();
                }
            }
        }
    }

    fn pod_seen(&self, old: Option<&Arc<Value>>, pod: &Value) {
        let key = key_of(pod);
        if let Some(node) = node_name_of(pod) {
            // Bound (by us or anyone): count it on its node, unless it has finished.
            self.queue.delete(&key);
            if is_terminal(pod) {
                if self.lock_cache().remove_pod(&key).is_some() {
                    self.queue.move_all_to_active_or_backoff();
                }
            } else {
                self.lock_cache().upsert_pod(&key, node, PodUsage::of_pod(pod));
            }
            return;
        }
        if !self.wants(pod) {
            self.queue.delete(&key);
            return;
        }
        if self.lock_cache().is_assumed(&key) {
            return; // placed, bind in progress
        }
        let priority = priority_of(pod);
        match old {
            Some(old) if scheduling_relevant_change(old, pod) => self.queue.pod_updated(&key, priority),
            _ => self.queue.add(&key, priority),
        }
    }

    /// Filter and score under the cache lock (upstream `schedulePod`); on success the pod is
    /// assumed on its node.
    fn schedule_pod(&self, key: &str, pod: &PodInfo, span: &Span) -> Decision {
        let mut cache = self.lock_cache();
        let total = cache.node_names().len();
        span.record("scheduler.nodes.total", total);
        if total == 0 {
            return Decision::Unschedulable {
                message: NO_NODES_MESSAGE.into(),
                evaluated: 0,
            };
        }
        // The verdict of each plugin on each node is for the reader of the pod's trace; a
        // cycle no trace will show skips writing them (they were half the scheduler's CPU).
        let explained = !kulisse_traces::propagation::is_known_unsampled(span);
        let Filtered {
            feasible,
            rejections,
            evaluated,
        } = self.find_nodes_that_fit(&cache, pod, span, explained);
        span.record("scheduler.nodes.evaluated", evaluated);
        span.record("scheduler.nodes.feasible", feasible.len());
        let chosen = if feasible.is_empty() {
            None
        } else {
            self.prioritize_nodes(&cache, pod, span, &feasible, explained)
        };
        let Some(chosen) = chosen else {
            return Decision::Unschedulable {
                message: fit_error_message(total, &rejections),
                evaluated,
            };
        };
        cache.assume(key, &chosen, pod.usage());
        Decision::Scheduled {
            node: chosen,
            evaluated,
            feasible: feasible.len(),
        }
    }

    /// The filter step (a `scheduler.filter` span, upstream `findNodesThatFitPod`): every
    /// node, starting where the last cycle stopped, until enough feasible ones are found.
    /// `explained`: record each plugin's verdict for the first nodes ([`explain`]).
    fn find_nodes_that_fit(&self, cache: &SchedulerCache, pod: &PodInfo, span: &Span, explained: bool) -> Filtered {
        let names = cache.node_names();
        let total = names.len();
        let to_find = num_feasible_nodes_to_find(self.options.percentage_of_nodes_to_score, total);
        let start = self.next_start_node_index.load(Ordering::Relaxed) % total;
        let fspan = info_span!(
            parent: span,
            "scheduler.filter",
            "kulisse.stage" = "scheduler",
            "scheduler.plugins" = plugins::FILTER_PLUGINS,
            "scheduler.nodes.total" = total,
            "scheduler.nodes.to_find" = to_find,
            "scheduler.nodes.evaluated" = tracing::field::Empty,
            "scheduler.nodes.feasible" = tracing::field::Empty,
            "scheduler.rejections" = tracing::field::Empty,
        );
        // upstream's PreFilter: the spread counts over all nodes, once per cycle
        let spread = spread::FilterState::new(pod, cache);
        let mut out = Filtered::default();
        for i in 0..total {
            let name = &names[(start + i) % total];
            out.evaluated += 1;
            let Some(info) = cache.node(name) else { continue };
            let Some(view) = info.node.as_ref() else { continue };
            let verdict = if explained && out.evaluated <= explain::MAX_PLUGIN_SPAN_NODES {
                explain::filter_recorded(&fspan, pod, info, view, spread.as_ref())
            } else {
                plugins::filter(pod, info, view, spread.as_ref())
            };
            if explained && out.evaluated <= MAX_NODE_EVENTS {
                match &verdict {
                    Ok(()) => {
                        tracing::info!(parent: &fspan, scheduler.node = %name, scheduler.result = "feasible", "{name}: fits")
                    }
                    Err(rejection) => {
                        let reasons = rejection.reasons.join(", ");
                        tracing::info!(
                            parent: &fspan,
                            scheduler.node = %name,
                            scheduler.plugin = rejection.plugin,
                            scheduler.result = %reasons,
                            "{name}: {reasons} ({})", rejection.plugin
                        );
                    }
                }
            }
            match verdict {
                Ok(()) => {
                    out.feasible.push(name.clone());
                    if out.feasible.len() >= to_find {
                        break;
                    }
                }
                Err(rejection) => out.rejections.push((name.clone(), rejection)),
            }
        }
        self.next_start_node_index
            .store((start + out.evaluated) % total, Ordering::Relaxed);
        fspan.record("scheduler.nodes.evaluated", out.evaluated);
        fspan.record("scheduler.nodes.feasible", out.feasible.len());
        if !out.rejections.is_empty() {
            fspan.record(
                "scheduler.rejections",
                fit_error_message(total, &out.rejections).as_str(),
            );
        }
        out
    }

    /// The score step (a `scheduler.score` span, upstream `prioritizeNodes`), then
    /// [`Self::select_host`] picks the winner.
    fn prioritize_nodes(
        &self,
        cache: &SchedulerCache,
        pod: &PodInfo,
        span: &Span,
        feasible: &[String],
        explained: bool,
    ) -> Option<String> {
        let sspan = info_span!(
            parent: span,
            "scheduler.score",
            "kulisse.stage" = "scheduler",
            "scheduler.plugins" = plugins::SCORE_PLUGINS,
            "scheduler.nodes.scored" = feasible.len(),
            "scheduler.node" = tracing::field::Empty,
            "scheduler.score" = tracing::field::Empty,
            "scheduler.ties" = tracing::field::Empty,
        );
        if feasible.len() == 1 {
            // as upstream: with one candidate there is nothing to compare
            tracing::info!(parent: &sspan, "only one feasible node ({}): scoring skipped", feasible[0]);
            sspan.record("scheduler.node", feasible[0].as_str());
            return Some(feasible[0].clone());
        }
        let default_selector = if pod.topology_spread_constraints.is_empty() {
            self.owners.default_selector(pod)
        } else {
            None
        };
        let scored = plugins::score_nodes(pod, cache, feasible, default_selector.as_ref());
        if explained {
            explain::record_scores(&sspan, pod, cache, &scored);
            for (name, s) in scored.iter().take(MAX_NODE_EVENTS) {
                tracing::info!(
                    parent: &sspan,
                    scheduler.node = %name,
                    scheduler.score.NodeResourcesFit = s.least_allocated,
                    scheduler.score.NodeResourcesBalancedAllocation = s.balanced_allocation,
                    scheduler.score.TaintToleration = s.taint_toleration,
                    scheduler.score.NodeAffinity = s.node_affinity,
                    scheduler.score.PodTopologySpread = s.pod_topology_spread,
                    scheduler.score = s.total(),
                    "{name}: NodeResourcesFit={} NodeResourcesBalancedAllocation={} TaintToleration={} NodeAffinity={} PodTopologySpread={} total={}",
                    s.least_allocated, s.balanced_allocation, s.taint_toleration, s.node_affinity, s.pod_topology_spread, s.total()
                );
            }
        }
        let (pick, best_score, ties) = self.select_host(&scored)?;
        sspan.record("scheduler.node", pick.as_str());
        sspan.record("scheduler.score", best_score);
        sspan.record("scheduler.ties", ties);
        Some(pick)
    }

    /// The node with the best total score (upstream `selectHost`); nodes that tie take
    /// turns. Returns the node, its score and how many nodes had that score.
    fn select_host(&self, scored: &[(String, plugins::Scores)]) -> Option<(String, i64, usize)> {
        let best_score = scored.iter().map(|(_, s)| s.total()).max()?;
        let best: Vec<&String> = scored
            .iter()
            .filter(|(_, s)| s.total() == best_score)
            .map(|(n, _)| n)
            .collect();
        let pick = best[self.tie_breaker.fetch_add(1, Ordering::Relaxed) % best.len()];
        Some((pick.clone(), best_score, best.len()))
    }

    /// One scheduling cycle for one popped pod.
    async fn schedule_one(self: &Arc<Self>, popped: Popped, tasks: &mut JoinSet<()>, permits: &Arc<Semaphore>) {
        let key = popped.key.clone();
        let Some(pod) = self.pods.get(&key) else {
            self.queue.delete(&key);
            return;
        };
        if node_name_of(&pod).is_some() || !self.wants(&pod) {
            self.queue.delete(&key);
            return;
        }
        let ns = objects::namespace(&pod).unwrap_or("default").to_string();
        let name = objects::name(&pod).unwrap_or("").to_string();
        let span_traceparent = traceparent_of(&pod);
        let span = kulisse_traces::caused_span!(
            span_traceparent.as_deref(),
                "scheduler.schedule_pod",
                "kulisse.stage" = "scheduler",
                "k8s.kind" = "Pod",
                "k8s.namespace" = %ns,
                "k8s.name" = %name,
                "scheduler.pod" = %key,
                "scheduler.name" = %self.options.scheduler_name,
                "scheduler.attempt" = popped.attempts,
                "scheduler.nodes.total" = tracing::field::Empty,
                "scheduler.nodes.evaluated" = tracing::field::Empty,
                "scheduler.nodes.feasible" = tracing::field::Empty,
                "scheduler.node" = tracing::field::Empty,
                "scheduler.result" = tracing::field::Empty,
                "scheduler.message" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
                "otel.status_description" = tracing::field::Empty,
        );
        let priority = priority_of(&pod);
        let decision = match PodInfo::from_pod(&pod) {
            Ok(info) => self.schedule_pod(&key, &info, &span),
            Err(e) => Decision::Unschedulable {
                message: format!("the pod's spec cannot be read: {e}"),
                evaluated: 0,
            },
        };
        let permit = match permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return, // closed: shutting down
        };
        match decision {
            Decision::Scheduled {
                node,
                evaluated,
                feasible,
            } => {
                span.record("scheduler.node", node.as_str());
                span.record("scheduler.result", "scheduled");
                tracing::debug!(parent: &span, "{key}: {node} chosen among {feasible} feasible of {evaluated} evaluated nodes");
                self.queue.done(&key);
                let me = self.clone();
                tasks.spawn(async move {
                    me.bind(pod, key, node, priority, span).await;
                    drop(permit);
                });
            }
            Decision::Unschedulable { message, evaluated } => {
                span.record("scheduler.nodes.evaluated", evaluated);
                span.record("scheduler.result", "unschedulable");
                span.record("scheduler.message", message.as_str());
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", message.as_str());
                self.queue.add_unschedulable(&key, priority, popped.cycle);
                let me = self.clone();
                tasks.spawn(async move {
                    me.report_unschedulable(&pod, &message).instrument(span).await;
                    drop(permit);
                });
            }
        }
    }

    /// The binding cycle: POST the Binding; on failure, undo the assumption and retry later.
    async fn bind(&self, pod: Arc<Value>, key: String, node: String, priority: i32, parent: Span) {
        let ns = objects::namespace(&pod).unwrap_or("default").to_string();
        let name = objects::name(&pod).unwrap_or("").to_string();
        let span = info_span!(
            parent: &parent,
            "scheduler.bind",
            "kulisse.stage" = "scheduler",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %ns,
            "k8s.name" = %name,
            "scheduler.node" = %node,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        );
        let sent = chrono::Utc::now();
        let result = self.client.bind(&ns, &name, &node).instrument(span.clone()).await;
        match result {
            Ok(()) => {
                let ttl = self.options.assumed_pod_ttl;
                self.lock_cache().finish_binding(&key, std::time::Instant::now(), ttl);
                self.recorder
                    .record_at(
                        sent,
                        &pod,
                        EventType::Normal,
                        "Scheduled",
                        &format!("Successfully assigned {ns}/{name} to {node}"),
                    )
                    .instrument(span)
                    .await;
            }
            Err(e) => {
                let message = format!("Binding rejected: {e}");
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", message.as_str());
                parent.record("scheduler.result", "bind failed");
                // Upstream's handleBindingCycleError: forget the assumption (its capacity is
                // free again) and send the pod back through the queue with back-off. A pod
                // that was bound by someone else or is being deleted drops out of the queue
                // as soon as the informer shows it.
                self.lock_cache().forget(&key);
                self.queue.move_all_to_active_or_backoff();
                if e.code() == Some(404) {
                    self.queue.delete(&key); // the pod is gone
                    return;
                }
                self.queue.add_backoff(&key, priority);
                self.recorder
                    .record(&pod, EventType::Warning, "FailedScheduling", &message)
                    .instrument(span)
                    .await;
            }
        }
    }

    /// Tell the user: `PodScheduled=False` (written only when it changes) and a
    /// `FailedScheduling` event.
    async fn report_unschedulable(&self, pod: &Value, message: &str) {
        if let Err(e) = self.set_unschedulable_condition(pod, message).await {
            tracing::debug!("could not update the PodScheduled condition of {}: {e}", key_of(pod));
        }
        self.recorder
            .record(pod, EventType::Warning, "FailedScheduling", message)
            .await;
    }

    async fn set_unschedulable_condition(&self, pod: &Value, message: &str) -> Result<(), crate::client::ClientError> {
        let info = pod_info_kind();
        let ns = objects::namespace(pod).unwrap_or("default").to_string();
        let name = objects::name(pod).unwrap_or("").to_string();
        let mut current = pod.clone();
        for _ in 0..3 {
            if node_name_of(&current).is_some() {
                return Ok(()); // bound meanwhile
            }
            let Some(updated) = with_unschedulable_condition(&current, message) else {
                return Ok(()); // already says so
            };
            match self
                .client
                .replace(info, Some(&ns), &name, Some("status"), &updated)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(409) => {
                    current = self.client.get(info, Some(&ns), &name).await?;
                }
                Err(e) if e.code() == Some(404) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The pod with `PodScheduled=False, reason Unschedulable, message`, or `None` if its
/// condition already says exactly that. `lastTransitionTime` changes only with the status.
fn with_unschedulable_condition(pod: &Value, message: &str) -> Option<Value> {
    let existing = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
        });
    let same = |field: &str, want: &str| existing.and_then(|c| c.get(field)).and_then(Value::as_str) == Some(want);
    if same("status", "False") && same("reason", "Unschedulable") && same("message", message) {
        return None;
    }
    let transition = if same("status", "False") {
        existing
            .and_then(|c| c.get("lastTransitionTime"))
            .cloned()
            .unwrap_or_else(|| json!(crate::objects::time::now()))
    } else {
        json!(crate::objects::time::now())
    };
    let condition = json!({
        "type": "PodScheduled",
        "status": "False",
        "lastProbeTime": null,
        "lastTransitionTime": transition,
        "reason": "Unschedulable",
        "message": message,
    });
    let mut updated = pod.clone();
    if !updated.get("status").is_some_and(Value::is_object) {
        updated["status"] = json!({});
    }
    let status = updated["status"].as_object_mut()?;
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut()?;
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
    {
        Some(c) => *c = condition,
        None => list.push(condition),
    }
    if !status.contains_key("phase") {
        status.insert("phase".into(), json!("Pending"));
    }
    Some(updated)
}

/// Every [`CLEAN_ASSUMED_PERIOD`], drop assumed pods whose bind succeeded but which the
/// informer never showed bound within the TTL; pods still pending go back to the queue.
async fn expire_assumed_pods(s: Arc<Scheduler>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CLEAN_ASSUMED_PERIOD);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|x| *x) => return,
        }
        let expired = s.lock_cache().cleanup_expired(std::time::Instant::now());
        if expired.is_empty() {
            continue;
        }
        for key in expired {
            tracing::warn!(pod = %key, "scheduler: the assumed pod was never confirmed bound; its assumption expired");
            if let Some(pod) = s.pods.get(&key).filter(|p| node_name_of(p).is_none() && s.wants(p)) {
                s.queue.add(&key, priority_of(&pod));
            }
        }
        s.queue.move_all_to_active_or_backoff();
    }
}

/// Informers on Services and ReplicaSets, whose selectors give PodTopologySpread's default
/// constraints (upstream's plugin uses listers of the same).
fn owner_informers(client: &Client) -> anyhow::Result<(spread::Owners, Vec<Informer>)> {
    let kind =
        |api: &str, kind: &str| objects::by_gvk(api, kind).ok_or_else(|| anyhow::anyhow!("{kind} is not a known kind"));
    let services = Informer::new(client.clone(), kind("v1", "Service")?, None);
    let replica_sets = Informer::new(client.clone(), kind("apps/v1", "ReplicaSet")?, None);
    let owners = spread::Owners {
        services: services.cache(),
        replica_sets: replica_sets.cache(),
    };
    Ok((owners, vec![services, replica_sets]))
}

/// Run the scheduler until `shutdown` turns true.
pub async fn run(client: Client, options: Options, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let node_kind = objects::by_gvk("v1", "Node").ok_or_else(|| anyhow::anyhow!("Node is not a known kind"))?;
    let mut pods_informer = Informer::new(client.clone(), pod_info_kind(), None);
    let mut nodes_informer = Informer::new(client.clone(), node_kind, None);
    let (owners, owner_informers) = owner_informers(&client)?;
    let sched = Arc::new(Scheduler {
        client: client.for_component("scheduler", ""),
        queue: SchedulingQueue::new(options.pod_initial_backoff, options.pod_max_backoff),
        cache: Mutex::new(SchedulerCache::default()),
        pods: pods_informer.cache(),
        recorder: EventRecorder::new(client, &options.scheduler_name, None),
        next_start_node_index: AtomicUsize::new(0),
        tie_breaker: AtomicUsize::new(0),
        owners,
        options,
    });
    let s = sched.clone();
    nodes_informer.on_event(move |ev| s.on_node_event(ev));
    let s = sched.clone();
    pods_informer.on_event(move |ev| s.on_pod_event(ev));

    let mut synced_rx = vec![nodes_informer.synced(), pods_informer.synced()];
    let mut background = JoinSet::new();
    background.spawn(nodes_informer.run(shutdown.clone()));
    background.spawn(pods_informer.run(shutdown.clone()));
    for informer in owner_informers {
        synced_rx.push(informer.synced());
        background.spawn(informer.run(shutdown.clone()));
    }
    let synced = async {
        for rx in &mut synced_rx {
            let _ = rx.wait_for(|ok| *ok).await;
        }
    };
    tokio::select! {
        _ = synced => {}
        _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
    }
    tracing::info!(
        scheduler = %sched.options.scheduler_name,
        "scheduler: caches synced, scheduling"
    );

    // The safety net: pods parked too long are tried again.
    {
        let s = sched.clone();
        let mut stop = shutdown.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(s.options.flush_interval.max(Duration::from_millis(10)));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        s.queue.flush_unschedulable_leftover(s.options.pod_max_in_unschedulable_pods_duration);
                    }
                    _ = stop.wait_for(|x| *x) => return,
                }
            }
        });
    }

    background.spawn(expire_assumed_pods(sched.clone(), shutdown.clone()));

    let permits = Arc::new(Semaphore::new(sched.options.parallel_binds.max(1)));
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        let next = tokio::select! {
            p = sched.queue.pop() => p,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(popped) = next else { break };
        sched.schedule_one(popped, &mut tasks, &permits).await;
        while tasks.try_join_next().is_some() {}
    }
    sched.queue.close();
    permits.close();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    while background.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rej(reasons: &[&str]) -> Rejection {
        Rejection {
            plugin: "X",
            reasons: reasons.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn fit_error_messages_match_kube_scheduler() {
        let three: Vec<_> = (1..=3).map(|i| (format!("n{i}"), rej(&["Insufficient cpu"]))).collect();
        assert_eq!(
            fit_error_message(3, &three),
            "0/3 nodes are available: 3 Insufficient cpu."
        );
        let mixed = vec![
            ("a".into(), rej(&["Insufficient cpu", "Insufficient memory"])),
            ("b".into(), rej(&["node(s) had untolerated taint {dedicated: gpu}"])),
            ("c".into(), rej(&["Insufficient cpu"])),
        ];
        assert_eq!(
            fit_error_message(3, &mixed),
            "0/3 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
        assert_eq!(fit_error_message(0, &[]), "0/0 nodes are available:");
    }

    #[test]
    fn feasible_nodes_to_find_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(None, 3), 3);
        assert_eq!(num_feasible_nodes_to_find(None, 99), 99);
        assert_eq!(
            num_feasible_nodes_to_find(None, 100),
            100,
            "50% of 100 is below the minimum"
        );
        assert_eq!(num_feasible_nodes_to_find(None, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(None, 10000), 500, "never below 5%");
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 5000), 100);
    }

    #[test]
    fn only_spec_labels_and_annotations_wake_a_parked_pod() {
        let base = json!({"metadata": {"name": "p", "labels": {"a": "1"},
            "annotations": {"kulisse.dev/traceparent": "00-1-2-01"}}, "spec": {"nodeSelector": {"d": "x"}}});
        let mut status_only = base.clone();
        status_only["status"] = json!({"conditions": [{"type": "PodScheduled", "status": "False"}]});
        status_only["metadata"]["annotations"]["kulisse.dev/traceparent"] = json!("00-3-4-01");
        status_only["metadata"]["resourceVersion"] = json!("9");
        assert!(!scheduling_relevant_change(&base, &status_only));
        let mut relabelled = base.clone();
        relabelled["metadata"]["labels"]["a"] = json!("2");
        assert!(scheduling_relevant_change(&base, &relabelled));
        let mut tolerating = base.clone();
        tolerating["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        assert!(scheduling_relevant_change(&base, &tolerating));
    }

    #[test]
    fn the_condition_is_rewritten_only_when_it_changes() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        let once = with_unschedulable_condition(&pod, "0/1 nodes are available: 1 Insufficient cpu.").unwrap();
        let c = &once["status"]["conditions"][0];
        assert_eq!(c["type"], "PodScheduled");
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "Unschedulable");
        assert!(with_unschedulable_condition(&once, "0/1 nodes are available: 1 Insufficient cpu.").is_none());
        let twice = with_unschedulable_condition(&once, "0/2 nodes are available: 2 Insufficient cpu.").unwrap();
        assert_eq!(twice["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(
            twice["status"]["conditions"][0]["lastTransitionTime"], c["lastTransitionTime"],
            "the status did not change, so neither does the transition time"
        );
    }
}
