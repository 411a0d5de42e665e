//! `kulisse explain KIND NAME`: why an object is as it is (kulisse-only).
//!
//! `kubectl explain pod.spec` documents a *field*; with a second word, the object's name,
//! `kulisse explain` answers a question about one *object* instead, from the data the
//! components left behind, and shows that data:
//!
//! - **a Pod** ([`pod`]): why it runs on its node, or why it is Pending. The answer comes
//!   from the scheduler's last attempt, which the scheduler recorded as spans in the pod's
//!   trace: one `scheduler.plugin` span per filter plugin and node (its verdict and reason)
//!   and per score plugin and feasible node (its points). The CLI reads them from the API
//!   server's trace store (`GET /apis/kulisse.dev/v1/traces/{id}`), never from Jaeger; the
//!   trace id is the one in the pod's `kulisse.dev/traceparent` annotation (the trace of its
//!   last write), else the newest kept trace that holds an attempt for the pod. Then the
//!   Services that select the pod, and whether it is in their endpoints.
//! - **a ReplicaSet** ([`replicaset`]): desired against current pods, the expectations the
//!   controller waits for, and which pods upstream's deletion ranking would remove first.
//! - **a Service** ([`service`]): for each pod of the namespace, whether the selector picks
//!   it and whether it is ready, so in the endpoints or not.
//! - **a Deployment** ([`deployment`]): the rollout's progress, its deadline, and the
//!   maxSurge/maxUnavailable arithmetic that says what the controller may do next.
//!
//! Where kulisse differs: upstream has no such command. kube-scheduler keeps plugin verdicts
//! only in memory for one cycle (the `PodScheduled` condition keeps a summary); the
//! scheduler's spans are kulisse's ([`kulisse_core::scheduler::explain`]). Why chose spans
//! rather than an annotation the scheduler writes on the pod: an annotation would be one more
//! write per attempt through the API server and the store, on the scheduler's hot path, for
//! every pod; the spans are made anyway, cost no write, and a learner sees the same verdicts
//! in the waterfall. The price: the trace store keeps the last 200 traces, so the verdicts of
//! an old attempt can be gone, and the command says so.

mod deployment;
mod pod;
mod replicaset;
mod service;

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::{self, ResourceInfo};
use serde_json::Value;

use super::{client, namespace};
use crate::GlobalArgs;

/// Explain one object of kind `info`.
pub async fn run(global: &GlobalArgs, info: &'static ResourceInfo, name: &str) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let ns = namespace(global, &client);
    let text = match info.kind {
        "Pod" => pod::explain(&client, &ns, name).await?,
        "ReplicaSet" => replicaset::explain(&client, &ns, name).await?,
        "Service" => service::explain(&client, &ns, name).await?,
        "Deployment" => deployment::explain(&client, &ns, name).await?,
        _ => anyhow::bail!(
            "kulisse explain {} NAME: there is no \"why\" for {}; it explains pods, replicasets, services and deployments \
             (without NAME, `kulisse explain {}` documents the kind)",
            info.singular,
            info.kind,
            info.singular
        ),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The built-in kind `kind` of `api_version`.
fn kind(api_version: &str, kind: &str) -> &'static ResourceInfo {
    objects::by_gvk(api_version, kind).expect("a built-in kind")
}

/// Every object of `info` in `ns`, optionally with a label selector.
async fn list(client: &Client, info: &ResourceInfo, ns: &str, selector: Option<String>) -> anyhow::Result<Vec<Value>> {
    let params = ListParams {
        label_selector: selector,
        ..ListParams::default()
    };
    let list = client.list(info, Some(ns), &params).await?;
    Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
}

/// The object named `name`, or `None` if it does not exist.
async fn get_opt(client: &Client, info: &ResourceInfo, ns: &str, name: &str) -> anyhow::Result<Option<Value>> {
    match client.get(info, Some(ns), name).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn name(obj: &Value) -> &str {
    objects::name(obj).unwrap_or("")
}

fn int_at(obj: &Value, pointer: &str, default: i64) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(default)
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The condition `type` of an object's status.
fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// `Ready=False (ContainersNotReady: containers with unready status: [web])`.
fn condition_text(c: &Value) -> String {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    let mut text = format!("{}={}", s("type"), s("status"));
    match (s("reason"), s("message")) {
        ("", "") => {}
        (r, "") => text.push_str(&format!(" ({r})")),
        ("", m) => text.push_str(&format!(" ({m})")),
        (r, m) => text.push_str(&format!(" ({r}: {m})")),
    }
    text
}

/// How long ago an RFC 3339 time was, as kubectl's AGE column says it (`5s`, `3m`).
fn ago(time: &str) -> String {
    match DateTime::parse_from_rfc3339(time) {
        Ok(t) => {
            let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0);
            match secs {
                0..120 => format!("{secs}s ago"),
                120..7200 => format!("{}m ago", secs / 60),
                _ => format!("{}h ago", secs / 3600),
            }
        }
        Err(_) => time.to_string(),
    }
}

/// `a=1,b=2`.
fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The kind and name of the object's controller (its `ownerReferences` entry with
/// `controller: true`).
fn controller_of(obj: &Value) -> Option<(String, String)> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .map(|r| (str_at(r, "/kind").to_string(), str_at(r, "/name").to_string()))
}

/// Lay out tab-separated rows as kubectl's tables are (two spaces between columns), without
/// trailing spaces.
fn table(text: &str) -> String {
    crate::tabwriter::align(text, 2)
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect()
}
