//! Why a pod is on its node, or Pending: the scheduler's last attempt, read from its spans.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use http::Method;
use kulisse_core::client::Client;
use kulisse_core::controllers::endpointutil;
use kulisse_core::objects;
use kulisse_traces::StoredSpan;
use serde_json::Value;

use super::{condition, condition_text, get_opt, kind, labels_text, list, str_at};
use crate::commands::trace::fetch_spans;

/// One attempt of the scheduler: its `scheduler.schedule_pod` span and the spans of its trace.
struct Attempt {
    schedule: StoredSpan,
    spans: Vec<StoredSpan>,
}

impl Attempt {
    fn child(&self, parent: &str, name: &str) -> Option<&StoredSpan> {
        self.spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id.as_deref() == Some(parent))
    }

    /// The `scheduler.plugin` spans under `parent`, in the order they ran.
    fn plugins(&self, parent: &StoredSpan) -> Vec<&StoredSpan> {
        let mut v: Vec<&StoredSpan> = self
            .spans
            .iter()
            .filter(|s| s.name == "scheduler.plugin" && s.parent_span_id.as_deref() == Some(&parent.span_id))
            .collect();
        v.sort_by_key(|s| s.start_unix_nanos);
        v
    }

    fn attr(&self, key: &str) -> &str {
        self.schedule.attr(key).unwrap_or("")
    }
}

pub async fn explain(client: &Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let pod = client.get(kind("v1", "Pod"), Some(ns), name).await?;
    let mut out = String::new();
    let attempt = last_attempt(client, &pod, &format!("{ns}/{name}")).await?;
    headline(&mut out, &pod, attempt.as_ref());
    if let Some(a) = &attempt {
        filter_section(&mut out, a);
        score_section(&mut out, a);
    }
    services(&mut out, client, ns, &pod).await?;
    if let Some(owner) = super::controller_of(&pod) {
        let _ = writeln!(
            out,
            "\nOwner: {} {}; `kulisse explain {} {}` says why it has the pods it has.",
            owner.0,
            owner.1,
            owner.0.to_lowercase(),
            owner.1
        );
    }
    Ok(out)
}

/// The newest `scheduler.schedule_pod` span for `key` in the pod's trace (the one in its
/// `kulisse.dev/traceparent` annotation), else in the newest kept trace that has one.
async fn last_attempt(client: &Client, pod: &Value, key: &str) -> anyhow::Result<Option<Attempt>> {
    let annotated = objects::annotations(pod)
        .get(kulisse_traces::propagation::TRACEPARENT_ANNOTATION)
        .and_then(|tp| tp.split('-').nth(1).map(str::to_string));
    let mut candidates: Vec<String> = annotated.into_iter().collect();
    let (list, _) = client
        .json(Method::GET, "/apis/kulisse.dev/v1/traces", None, None)
        .await?;
    for item in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let services = item.get("services").map(Value::to_string).unwrap_or_default();
        if let Some(id) = item.get("traceId").and_then(Value::as_str)
            && services.contains("scheduler")
            && !candidates.iter().any(|c| c == id)
        {
            candidates.push(id.to_string());
        }
    }
    for id in candidates {
        let Ok(spans) = fetch_spans(client, &id, true).await else {
            continue; // forgotten meanwhile
        };
        let newest = spans
            .iter()
            .filter(|s| s.name == "scheduler.schedule_pod" && s.attr("scheduler.pod") == Some(key))
            .max_by_key(|s| s.start_unix_nanos)
            .cloned();
        if let Some(schedule) = newest {
            return Ok(Some(Attempt { schedule, spans }));
        }
    }
    Ok(None)
}

fn headline(out: &mut String, pod: &Value, attempt: Option<&Attempt>) {
    let key = format!(
        "{}/{}",
        objects::namespace(pod).unwrap_or(""),
        objects::name(pod).unwrap_or("")
    );
    let node = str_at(pod, "/spec/nodeName");
    let phase = str_at(pod, "/status/phase");
    let Some(a) = attempt else {
        let _ = writeln!(out, "Pod {key} is {} on {}.", or(phase, "Pending"), or(node, "no node"));
        no_attempt(out, pod, node);
        return;
    };
    let when = kulisse_traces::view::format_duration(a.schedule.duration_nanos());
    let _ = writeln!(
        out,
        "Pod {key} is {}{}. The scheduler's last attempt (attempt {}, trace {}, took {when}): {}{}.",
        or(phase, "Pending"),
        if node.is_empty() {
            String::new()
        } else {
            format!(" on node {node}")
        },
        a.attr("scheduler.attempt"),
        a.schedule.trace_id,
        a.attr("scheduler.result"),
        match a.attr("scheduler.node") {
            "" => String::new(),
            n => format!(" on {n}"),
        }
    );
    if let Some(message) = a.schedule.attr("scheduler.message") {
        let _ = writeln!(out, "  {message}");
    }
    let _ = writeln!(
        out,
        "  {} nodes known, {} evaluated, {} feasible. `kulisse trace {}` draws the attempt.",
        a.attr("scheduler.nodes.total"),
        a.attr("scheduler.nodes.evaluated"),
        a.attr("scheduler.nodes.feasible"),
        a.schedule.trace_id
    );
}

/// Why there is no attempt to show.
fn no_attempt(out: &mut String, pod: &Value, node: &str) {
    let gates = pod.pointer("/spec/schedulingGates").and_then(Value::as_array);
    let scheduler = str_at(pod, "/spec/schedulerName");
    let text = if gates.is_some_and(|g| !g.is_empty()) {
        "Its spec.schedulingGates hold it back: no scheduler looks at it until they are removed.".to_string()
    } else if !scheduler.is_empty() && scheduler != kulisse_core::scheduler::DEFAULT_SCHEDULER_NAME {
        format!("It asks for the scheduler \"{scheduler}\" (spec.schedulerName), which kulisse does not run.")
    } else if !node.is_empty() {
        "The trace store holds no attempt of the scheduler for it: either the pod named its node itself \
         (spec.nodeName, so no scheduler was involved), or its trace is forgotten (the store keeps the last \
         200 traces: `kulisse trace --list`)."
            .to_string()
    } else {
        "The trace store holds no attempt of the scheduler for it yet: the scheduler has not tried, or its \
         trace is forgotten (the store keeps the last 200 traces)."
            .to_string()
    };
    let _ = writeln!(out, "  {text}");
    if let Some(c) = condition(pod, "PodScheduled") {
        let _ = writeln!(out, "  The pod's condition: {}", condition_text(c));
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

/// Node → plugin → (verdict, reason), nodes in the order the filter visited them.
type Verdicts = Vec<(String, BTreeMap<String, (String, String)>)>;

fn filter_section(out: &mut String, a: &Attempt) {
    let Some(filter) = a.child(&a.schedule.span_id, "scheduler.filter") else {
        return;
    };
    let _ = writeln!(
        out,
        "\nFilter: on each node the plugins run in upstream's order ({}); the first Unschedulable ends the \
         node's check, so the plugins after it did not run.",
        filter.attr("scheduler.plugins").unwrap_or("").replace(',', ", ")
    );
    let order: Vec<&str> = filter.attr("scheduler.plugins").unwrap_or("").split(',').collect();
    let nodes = filter_verdicts(a, filter);
    let mut shown: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let from_events = beyond_the_cap(filter, &mut shown);
    if !nodes.is_empty() {
        let (table, reasons) = verdict_table(&order, &nodes);
        out.push_str(&super::table(&table));
        let _ = writeln!(
            out,
            "  (- did not run: an earlier plugin had said Unschedulable, or there was nothing to check)"
        );
        for line in reasons {
            let _ = writeln!(out, "{line}");
        }
    }
    for line in from_events {
        let _ = writeln!(out, "{line}");
    }
    let count = |key: &str| -> usize { filter.attr(key).and_then(|n| n.parse().ok()).unwrap_or(0) };
    let (evaluated, total) = (count("scheduler.nodes.evaluated"), count("scheduler.nodes.total"));
    if evaluated > shown.len() {
        let _ = writeln!(
            out,
            "  ({} more nodes were evaluated; a trace keeps the verdicts of the first 100 only: {})",
            evaluated - shown.len(),
            filter.attr("scheduler.rejections").unwrap_or("all feasible")
        );
    }
    if evaluated < total {
        let _ = writeln!(
            out,
            "  The scheduler stopped after {evaluated} of {total} nodes: it had found enough feasible ones \
             (percentageOfNodesToScore)."
        );
    }
}

/// The filter plugins' verdicts from the `scheduler.plugin` spans under `filter`.
fn filter_verdicts(a: &Attempt, filter: &StoredSpan) -> Verdicts {
    let mut nodes: Verdicts = Vec::new();
    for p in a.plugins(filter) {
        let get = |k: &str| p.attr(k).unwrap_or("").to_string();
        let node = get("scheduler.plugin.node");
        let i = match nodes.iter().position(|(n, _)| *n == node) {
            Some(i) => i,
            None => {
                nodes.push((node, BTreeMap::new()));
                nodes.len() - 1
            }
        };
        nodes[i].1.insert(
            get("scheduler.plugin.name"),
            (get("scheduler.plugin.verdict"), get("scheduler.plugin.reason")),
        );
    }
    nodes
}

/// Nodes past the plugin spans' cap: the filter's per-node events still name the veto.
fn beyond_the_cap(filter: &StoredSpan, shown: &mut Vec<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for e in &filter.events {
        let Some(node) = e.attributes.get("scheduler.node") else {
            continue;
        };
        if shown.contains(node) {
            continue;
        }
        shown.push(node.clone());
        let result = e.attributes.get("scheduler.result").map(String::as_str).unwrap_or("");
        lines.push(match e.attributes.get("scheduler.plugin") {
            Some(p) => format!("  {node}: Unschedulable by {p}: {result}"),
            None => format!("  {node}: Success (every plugin)"),
        });
    }
    lines
}

/// One row per node, one column per plugin (`-`: did not run); and the reasons of the vetoes.
fn verdict_table(order: &[&str], nodes: &Verdicts) -> (String, Vec<String>) {
    let mut table = String::from("  NODE");
    for plugin in order {
        let _ = write!(table, "\t{plugin}");
    }
    table.push('\n');
    let mut reasons = Vec::new();
    for (node, verdicts) in nodes {
        let _ = write!(table, "  {node}");
        for plugin in order {
            let cell = match verdicts.get(*plugin) {
                Some((verdict, reason)) => {
                    if !reason.is_empty() {
                        reasons.push(format!("  {node}: {plugin}: {reason}"));
                    }
                    verdict.as_str()
                }
                None => "-",
            };
            let _ = write!(table, "\t{cell}");
        }
        table.push('\n');
    }
    (table, reasons)
}

fn score_section(out: &mut String, a: &Attempt) {
    let Some(score) = a.child(&a.schedule.span_id, "scheduler.score") else {
        return;
    };
    let plugins = a.plugins(score);
    let winner = score.attr("scheduler.node").unwrap_or("");
    if plugins.is_empty() {
        let _ = writeln!(
            out,
            "\nScore: only one node was feasible, so the scheduler skipped scoring (as upstream) and chose {winner}."
        );
        return;
    }
    let _ = writeln!(
        out,
        "\nScore: each plugin gives a feasible node 0-100 points, counted as many times as its weight; the \
         highest total wins."
    );
    // node → [(plugin, points, weight, reason)], in the order they were scored
    let mut nodes: Vec<(String, Vec<(&str, i64, i64, &str)>)> = Vec::new();
    for p in &plugins {
        let node = p.attr("scheduler.plugin.node").unwrap_or("").to_string();
        let num = |k: &str| p.attr(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let row = (
            p.attr("scheduler.plugin.name").unwrap_or(""),
            num("scheduler.plugin.points"),
            num("scheduler.plugin.weight"),
            p.attr("scheduler.plugin.reason").unwrap_or(""),
        );
        match nodes.iter_mut().find(|(n, _)| *n == node) {
            Some((_, rows)) => rows.push(row),
            None => nodes.push((node, vec![row])),
        }
    }
    let mut table = String::from("  NODE");
    for (plugin, _, weight, _) in &nodes[0].1 {
        let _ = write!(table, "\t{plugin}×{weight}");
    }
    table.push_str("\tTOTAL\n");
    for (node, rows) in &nodes {
        let _ = write!(table, "  {node}");
        for (_, points, _, _) in rows {
            let _ = write!(table, "\t{points}");
        }
        let total: i64 = rows.iter().map(|(_, p, w, _)| p * w).sum();
        let _ = writeln!(table, "\t{total}");
    }
    out.push_str(&super::table(&table));
    let _ = writeln!(
        out,
        "  Winner: {winner} with {}{}.",
        score.attr("scheduler.score").unwrap_or("?"),
        match score.attr("scheduler.ties") {
            Some(t) if t != "1" => format!(" ({t} nodes tied; tied nodes take turns)"),
            _ => String::new(),
        }
    );
    if let Some((_, rows)) = nodes.iter().find(|(n, _)| n == winner) {
        let _ = writeln!(out, "  What {winner}'s points are made of:");
        for (plugin, points, _, reason) in rows {
            let _ = writeln!(out, "    {plugin} {points}: {reason}");
        }
    }
}

/// The Services of the namespace that select the pod, and whether it is in their endpoints.
async fn services(out: &mut String, client: &Client, ns: &str, pod: &Value) -> anyhow::Result<()> {
    let labels = objects::labels(pod);
    let all = list(client, kind("v1", "Service"), ns, None).await?;
    let selecting: Vec<&Value> = all
        .iter()
        .filter(|s| endpointutil::service_selector(s).is_some_and(|sel| endpointutil::selector_matches(&sel, &labels)))
        .collect();
    let _ = writeln!(out);
    if selecting.is_empty() {
        let _ = writeln!(
            out,
            "Services: none of the {} Services in namespace {ns} selects this pod (its labels: {}).",
            all.len(),
            or(&labels_text(&labels), "none")
        );
        return Ok(());
    }
    for svc in selecting {
        let selector = endpointutil::service_selector(svc).unwrap_or_default();
        let _ = writeln!(
            out,
            "Service {} selects this pod (selector {}); {}",
            objects::name(svc).unwrap_or(""),
            labels_text(&selector),
            endpoint_verdict(client, ns, svc, pod).await?
        );
    }
    Ok(())
}

/// One Service and one pod it selects: in its endpoints or not, and why.
pub(super) async fn endpoint_verdict(client: &Client, ns: &str, svc: &Value, pod: &Value) -> anyhow::Result<String> {
    let svc_name = objects::name(svc).unwrap_or("");
    let endpoints = get_opt(client, kind("v1", "Endpoints"), ns, svc_name).await?;
    let ip = endpointutil::pod_ip(pod).unwrap_or("");
    let listed = |field: &str| {
        endpoints.as_ref().is_some_and(|ep| {
            ep.get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| {
                    s.get(field)
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .any(|a| !ip.is_empty() && a.get("ip").and_then(Value::as_str) == Some(ip))
                })
        })
    };
    let publish = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ready = objects::pod::is_pod_ready(pod);
    let why = if objects::deletion_timestamp(pod).is_some() {
        "it is terminating (metadata.deletionTimestamp is set)".to_string()
    } else if ip.is_empty() {
        "it has no IP yet (status.podIP): it is not running on a node".to_string()
    } else if ready {
        "its Ready condition is True".to_string()
    } else if publish {
        "it is not ready, but the Service sets publishNotReadyAddresses".to_string()
    } else {
        format!(
            "it is not ready: {}",
            condition(pod, "Ready")
                .map(condition_text)
                .unwrap_or_else(|| "no Ready condition".into())
        )
    };
    let place = if listed("addresses") {
        "is in its endpoints as ready (addresses), so kube-proxy sends it traffic"
    } else if listed("notReadyAddresses") {
        "is in its endpoints as not ready (notReadyAddresses), so kube-proxy sends it no traffic"
    } else {
        "is not in its endpoints"
    };
    let should = endpointutil::should_pod_be_in_endpoints(pod, false);
    let lag = match (should, listed("addresses") || listed("notReadyAddresses")) {
        (true, false) => " (it should be: the endpoints controller has not caught up yet)",
        (false, true) => " (it should not be: the endpoints controller has not caught up yet)",
        _ => "",
    };
    Ok(format!("the pod ({}) {place}{lag}: {why}.", or(ip, "no IP")))
}
