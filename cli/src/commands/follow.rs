//! `kulisse apply --follow`: narrate the road of an apply, live, one line per step.
//!
//! After the API server has answered, the work goes on without the CLI: controllers,
//! the scheduler, kubelets and kube-proxy react to the change. They all continue the
//! apply's trace, and send their spans to the control plane. `--follow` reads that trace
//! every 250 ms and prints a sentence for each new step (taken from the span catalogue's
//! narrations), until every applied Deployment is rolled out and every applied Service has
//! its proxy rules — or until something fails, which it then explains.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::bail;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects;
use kulisse_traces::StoredSpan;
use serde_json::Value;

/// What was applied, to know when the road is travelled to its end.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: String,
}

/// Where the narration gets its spans from: the control plane over HTTP, or (in
/// `kulisse demo`) the process's own trace store.
pub enum SpanSource<'a> {
    ControlPlane(&'a Client),
    Local,
}

impl SpanSource<'_> {
    async fn spans(&self, trace_id: &str) -> Vec<StoredSpan> {
        match self {
            SpanSource::ControlPlane(client) => super::trace::fetch_spans(client, trace_id, true)
                .await
                .unwrap_or_default(),
            SpanSource::Local => kulisse_traces::span_store::global().spans_of_linked(trace_id),
        }
    }
}

/// Narrate `trace_id` until the applied objects are in place. Returns an error that
/// explains a failure.
pub async fn follow(
    client: &Client,
    source: SpanSource<'_>,
    trace_id: &str,
    applied: &[Applied],
    timeout: Duration,
) -> anyhow::Result<()> {
    let changed: Vec<&Applied> = applied.iter().filter(|a| a.outcome != "unchanged").collect();
    if changed.is_empty() {
        println!("nothing changed: the API server wrote nothing, so no controller has anything to do");
        return Ok(());
    }
    println!("following trace {trace_id} (kulisse trace {trace_id} draws it)");
    let start = Instant::now();
    let mut seen: HashSet<String> = HashSet::new();
    let mut origin: Option<u64> = None;
    let mut done_since: Option<Instant> = None;
    loop {
        let mut spans = source.spans(trace_id).await;
        spans.sort_by_key(|s| s.start_unix_nanos);
        if origin.is_none() {
            origin = spans.iter().map(|s| s.start_unix_nanos).min();
        }
        // Spans from other processes arrive in batches; hold each back until it ended a
        // moment ago, so the story is told in the order it happened.
        let settled = now_nanos().saturating_sub(SETTLE.as_nanos() as u64);
        for span in &spans {
            if span.end_unix_nanos > settled && done_since.is_none() {
                continue;
            }
            if !seen.insert(span.span_id.clone()) {
                continue;
            }
            if let Some(line) = kulisse_traces::narrate(span).filter(|l| worth_telling(l)) {
                let at = span
                    .start_unix_nanos
                    .saturating_sub(origin.unwrap_or(span.start_unix_nanos)) as f64
                    / 1e6;
                println!("{at:>8.1} ms  {line}");
            }
        }
        if let Some(problem) = first_problem(client, &changed).await {
            bail!("{problem}");
        }
        let done = all_in_place(client, &changed, &spans).await;
        match (done, done_since) {
            (true, None) => done_since = Some(Instant::now()),
            // A short grace period lets the last spans (status writes, rule syncs) arrive.
            (true, Some(t)) if t.elapsed() > Duration::from_millis(750) => break,
            (false, _) => done_since = None,
            _ => {}
        }
        if start.elapsed() > timeout {
            bail!(
                "gave up after {}s: the applied objects are not all in place yet (see `kulisse get pods` and `kulisse describe`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "done in {:.1} s: every pod runs and the proxy rules are in place",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long a span waits before it is told (spans of other processes arrive every 500 ms).
const SETTLE: Duration = Duration::from_millis(700);

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Leave out the bookkeeping a learner need not follow step by step: Event objects and
/// kube-proxy's published rule ConfigMaps (the `proxy.sync_rules` line tells that story).
fn worth_telling(line: &str) -> bool {
    !(line.contains("event/") || line.contains("/registry/events/") || line.contains("kube-proxy-rules"))
}

/// Deployments rolled out, Services with endpoints synced by kube-proxy.
async fn all_in_place(client: &Client, applied: &[&Applied], spans: &[StoredSpan]) -> bool {
    for a in applied {
        match a.kind {
            "Deployment" => {
                let info = objects::by_gvk("apps/v1", "Deployment").expect("built-in kind");
                let Ok(d) = client.get(info, a.namespace.as_deref(), &a.name).await else {
                    return false;
                };
                if !super::rollout::rollout_message(&d).0 {
                    return false;
                }
            }
            "Pod" => {
                let info = objects::by_gvk("v1", "Pod").expect("built-in kind");
                let Ok(p) = client.get(info, a.namespace.as_deref(), &a.name).await else {
                    return false;
                };
                let phase = p.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
                let ready = objects::pod::is_pod_ready(&p);
                if !(phase == "Succeeded" || (phase == "Running" && ready)) {
                    return false;
                }
            }
            "Service" => {
                let key = format!("{}/{}", a.namespace.as_deref().unwrap_or("default"), a.name);
                let synced = spans
                    .iter()
                    .any(|s| s.name == "proxy.sync_rules" && s.attributes.values().any(|v| v.contains(&key)));
                if !synced {
                    return false;
                }
            }
            _ => {}
        }
    }
    true
}

/// A pod of an applied Deployment that cannot go on by itself: say why, in a learner's words.
async fn first_problem(client: &Client, applied: &[&Applied]) -> Option<String> {
    let pods = objects::by_gvk("v1", "Pod").expect("built-in kind");
    let deployments = objects::by_gvk("apps/v1", "Deployment").expect("built-in kind");
    for a in applied.iter().filter(|a| a.kind == "Deployment" || a.kind == "Pod") {
        let candidates: Vec<Value> = if a.kind == "Pod" {
            client
                .get(pods, a.namespace.as_deref(), &a.name)
                .await
                .ok()
                .into_iter()
                .collect()
        } else {
            let d = client.get(deployments, a.namespace.as_deref(), &a.name).await.ok()?;
            let selector = kulisse_core::printers::selector_text(d.pointer("/spec/selector/matchLabels"));
            let params = ListParams {
                label_selector: Some(selector),
                ..Default::default()
            };
            let list = client.list(pods, a.namespace.as_deref(), &params).await.ok()?;
            list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
        };
        for pod in &candidates {
            let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            for c in pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let reason = c.pointer("/state/waiting/reason").and_then(Value::as_str).unwrap_or("");
                let message = c
                    .pointer("/state/waiting/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let why = match reason {
                    "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" => "the kubelet cannot pull the image",
                    "CrashLoopBackOff" => {
                        "the container keeps exiting, and the kubelet waits longer before each restart"
                    }
                    "CreateContainerConfigError" | "CreateContainerError" => "the runtime cannot create the container",
                    _ => continue,
                };
                return Some(format!(
                    "pod {name}: {reason}: {why}. {message} (kulisse describe pod {name} shows the events)"
                ));
            }
            let unschedulable = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter().find(|c| {
                        c.get("type").and_then(Value::as_str) == Some("PodScheduled")
                            && c.get("reason").and_then(Value::as_str) == Some("Unschedulable")
                    })
                });
            if let Some(c) = unschedulable {
                let msg = c.get("message").and_then(Value::as_str).unwrap_or("");
                return Some(format!(
                    "pod {name} cannot be scheduled: {msg} The scheduler will try again when nodes or pods change."
                ));
            }
        }
    }
    None
}
