//! # Recording why: one `scheduler.plugin` span per plugin verdict (kulisse-only)
//!
//! kube-scheduler keeps each plugin's verdict only for the length of a scheduling cycle: what
//! a user sees afterwards is the summary in the `PodScheduled` condition (`0/3 nodes are
//! available: 3 Insufficient cpu.`) or, for a scheduled pod, nothing at all. (The
//! kube-scheduler-simulator project records the verdicts as annotations on the pod, by
//! patching the scheduler's plugins.) kulisse records them as spans of the pod's trace, so
//! that `kulisse explain pod NAME` can answer "why is it there?" and "why is it Pending?"
//! from the scheduler's last attempt, and the waterfall shows the same:
//!
//! - under `scheduler.filter`: for each node, one span per filter plugin that ran on it,
//!   with its verdict in upstream's status words (`Success`, `Unschedulable`) and the reason.
//!   The plugins after the first veto do not run (as upstream), so they have no span;
//! - under `scheduler.score`: for each feasible node, one span per score plugin, with its
//!   points (0–100, after normalising), its weight in the profile and what the points are
//!   made of (the requests and allocatable behind `NodeResourcesFit`, the taints behind
//!   `TaintToleration`).
//!
//! **Cap.** A verdict is a span (an event costs less, but a span is what a trace viewer can
//! filter and what the issue asked for), so a cycle over many nodes would make thousands of
//! them and push older traces out of the trace store (50 000 spans). As the per-node events
//! are capped at the first 100 nodes, the plugin spans are capped at the first
//! [`MAX_PLUGIN_SPAN_NODES`] nodes the cycle visits; `kulisse explain` falls back to the
//! events (one per node, the veto's plugin and reason) for the nodes after those, and says
//! how many nodes it could not show at all.

use tracing::{Span, info_span};

use super::cache::{NodeInfo, NodeView, PodInfo, SchedulerCache};
use super::plugins::{self, Rejection, Scores};
use super::spread;

/// Plugin spans are recorded for at most this many nodes per filter or score step (see the
/// module docs for why fewer than the per-node events).
pub const MAX_PLUGIN_SPAN_NODES: usize = 20;

/// Upstream's status code of a passed filter.
pub const VERDICT_SUCCESS: &str = "Success";
/// Upstream's status code of a veto.
pub const VERDICT_UNSCHEDULABLE: &str = "Unschedulable";

/// Run the filter plugins on one node (as [`plugins::filter`]) and record each verdict as a
/// `scheduler.plugin` span under `parent` (the `scheduler.filter` span).
pub fn filter_recorded(
    parent: &Span,
    pod: &PodInfo,
    node: &NodeInfo,
    view: &NodeView,
    spread: Option<&spread::FilterState>,
) -> Result<(), Rejection> {
    plugins::filter_observed(pod, node, view, spread, |plugin, verdict| {
        let (verdict, reason) = match verdict {
            Ok(()) => (VERDICT_SUCCESS, String::new()),
            Err(r) => (VERDICT_UNSCHEDULABLE, r.reasons.join(", ")),
        };
        let span = info_span!(
            parent: parent,
            "scheduler.plugin",
            "kulisse.stage" = "scheduler",
            "scheduler.plugin.name" = plugin,
            "scheduler.plugin.extension_point" = "Filter",
            "scheduler.plugin.node" = %view.name,
            "scheduler.plugin.verdict" = verdict,
            "scheduler.plugin.reason" = tracing::field::Empty,
        );
        if !reason.is_empty() {
            span.record("scheduler.plugin.reason", reason.as_str());
        }
    })
}

/// Record each score plugin's points for the first [`MAX_PLUGIN_SPAN_NODES`] scored nodes as
/// `scheduler.plugin` spans under `parent` (the `scheduler.score` span).
pub fn record_scores(parent: &Span, pod: &PodInfo, cache: &SchedulerCache, scored: &[(String, Scores)]) {
    for (name, s) in scored.iter().take(MAX_PLUGIN_SPAN_NODES) {
        let Some(info) = cache.node(name) else { continue };
        let Some(view) = info.node.as_deref() else { continue };
        for (plugin, weight, points, reason) in score_parts(pod, info, view, s) {
            let _span = info_span!(
                parent: parent,
                "scheduler.plugin",
                "kulisse.stage" = "scheduler",
                "scheduler.plugin.name" = plugin,
                "scheduler.plugin.extension_point" = "Score",
                "scheduler.plugin.node" = %name,
                "scheduler.plugin.points" = points,
                "scheduler.plugin.weight" = weight,
                "scheduler.plugin.reason" = %reason,
            );
        }
    }
}

/// Each score plugin's name, weight, points and what they are made of, in the order of the
/// profile.
fn score_parts(pod: &PodInfo, node: &NodeInfo, view: &NodeView, s: &Scores) -> [(&'static str, i64, i64, String); 5] {
    let cpu_after = node.non_zero_cpu.saturating_add(pod.non_zero_cpu);
    let mem_after = node.non_zero_memory.saturating_add(pod.non_zero_memory);
    let share = |used: i64, alloc: i64| if alloc > 0 { used.saturating_mul(100) / alloc } else { 0 };
    let taints = plugins::intolerable_prefer_no_schedule(pod, view);
    let affinity = plugins::preferred_affinity_points(pod, view);
    [
        (
            "TaintToleration",
            plugins::WEIGHT_TAINT_TOLERATION,
            s.taint_toleration,
            format!("{taints} PreferNoSchedule taint(s) not tolerated"),
        ),
        (
            "NodeAffinity",
            plugins::WEIGHT_NODE_AFFINITY,
            s.node_affinity,
            format!("preferred terms matched, weight {affinity}"),
        ),
        (
            "NodeResourcesFit",
            plugins::WEIGHT_NODE_RESOURCES_FIT,
            s.least_allocated,
            format!(
                "LeastAllocated: with the pod, cpu {cpu_after}m of {}m and memory {}Mi of {}Mi requested",
                view.allocatable.milli_cpu,
                mem_after >> 20,
                view.allocatable.memory >> 20
            ),
        ),
        (
            "PodTopologySpread",
            plugins::WEIGHT_POD_TOPOLOGY_SPREAD,
            s.pod_topology_spread,
            "fewer matching pods in the node's domain score higher".to_string(),
        ),
        (
            "NodeResourcesBalancedAllocation",
            plugins::WEIGHT_BALANCED_ALLOCATION,
            s.balanced_allocation,
            format!(
                "with the pod, {}% of cpu and {}% of memory requested",
                share(
                    node.requested.milli_cpu.saturating_add(pod.requests.milli_cpu),
                    view.allocatable.milli_cpu
                ),
                share(
                    node.requested.memory.saturating_add(pod.requests.memory),
                    view.allocatable.memory
                )
            ),
        ),
    ]
}
