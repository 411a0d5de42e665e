//! Why a Deployment's rollout is where it is: its progress deadline, and the
//! maxSurge/maxUnavailable arithmetic that bounds what the controller may do next.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kulisse_core::client::Client;
use kulisse_core::controllers::deployment::{REVISION_ANNOTATION, resolve_fenceposts};
use kulisse_core::objects;
use serde_json::Value;

use super::replicaset::{is_active, owned};
use super::{condition, condition_text, int_at, kind, list, name, str_at};

pub async fn explain(client: &Client, ns: &str, d_name: &str) -> anyhow::Result<String> {
    let d = client.get(kind("apps/v1", "Deployment"), Some(ns), d_name).await?;
    let all_rs = list(client, kind("apps/v1", "ReplicaSet"), ns, None).await?;
    let sets: Vec<&Value> = owned(&all_rs, &d);
    let revision = objects::annotations(&d)
        .get(REVISION_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    let new_rs = sets
        .iter()
        .copied()
        .find(|rs| objects::annotations(rs).get(REVISION_ANNOTATION) == Some(&revision));
    let desired = int_at(&d, "/spec/replicas", 1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Deployment {ns}/{d_name} wants {desired} pods of revision {}: {} updated, {} available, {} unavailable \
         (its status).",
        if revision.is_empty() { "?" } else { &revision },
        int_at(&d, "/status/updatedReplicas", 0),
        int_at(&d, "/status/availableReplicas", 0),
        int_at(&d, "/status/unavailableReplicas", 0)
    );
    progress(&mut out, &d);
    if str_at(&d, "/spec/strategy/type") == "Recreate" {
        let _ = writeln!(
            out,
            "\nStrategy Recreate: every old pod goes first, then the new ReplicaSet is scaled up; no surge, no \
             minimum."
        );
    } else {
        arithmetic(&mut out, &d, &sets, new_rs, desired)?;
    }
    if let Some(rs) = new_rs {
        unavailable_pods(&mut out, client, ns, rs).await?;
    }
    Ok(out)
}

/// The Progressing condition and the deadline.
fn progress(out: &mut String, d: &Value) {
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        let _ = writeln!(
            out,
            "  It is paused (spec.paused): the controller does not roll out, and the deadline does not run."
        );
    }
    let Some(c) = condition(d, "Progressing") else {
        let _ = writeln!(out, "  It has no Progressing condition yet.");
        return;
    };
    let deadline = int_at(d, "/spec/progressDeadlineSeconds", 600);
    let last = str_at(c, "/lastUpdateTime");
    let reason = str_at(c, "/reason");
    let text = match reason {
        "NewReplicaSetAvailable" => "The rollout is complete.".to_string(),
        "ProgressDeadlineExceeded" => format!(
            "The rollout is stuck: nothing moved for progressDeadlineSeconds ({deadline}s), so the controller \
             gave up reporting progress (it keeps trying; `kubectl rollout status` fails)."
        ),
        _ => match DateTime::parse_from_rfc3339(last) {
            Ok(t) => {
                let left = (t.with_timezone(&Utc) + chrono::Duration::seconds(deadline) - Utc::now()).num_seconds();
                format!(
                    "The rollout is in progress; it last moved at {last}, and if nothing moves for {deadline}s \
                     (progressDeadlineSeconds) it is declared stuck: {}.",
                    if left > 0 {
                        format!("{left}s left")
                    } else {
                        "due now".to_string()
                    }
                )
            }
            Err(_) => "The rollout is in progress.".to_string(),
        },
    };
    let _ = writeln!(out, "  {} {text}", condition_text(c));
}

/// maxSurge and maxUnavailable, resolved as upstream does, and what they allow now.
fn arithmetic(
    out: &mut String,
    d: &Value,
    sets: &[&Value],
    new_rs: Option<&Value>,
    desired: i64,
) -> anyhow::Result<()> {
    let (surge, unavailable) = resolve_fenceposts(d).map_err(anyhow::Error::msg)?;
    let raw = |field: &str| {
        d.pointer(&format!("/spec/strategy/rollingUpdate/{field}"))
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .unwrap_or_else(|| "25%".into())
    };
    let unavailable = unavailable.min(desired);
    let max_total = desired + surge;
    let min_available = desired - unavailable;
    let total: i64 = sets.iter().map(|rs| int_at(rs, "/spec/replicas", 0)).sum();
    let _ = writeln!(
        out,
        "\nStrategy RollingUpdate: maxSurge {} of {desired} is {surge} (rounded up), maxUnavailable {} of {desired} is \
         {unavailable} (rounded down; both 0 would deadlock, so then it is 1). So at most {desired} + {surge} = \
         {max_total} pods may exist, and at least {desired} - {unavailable} = {min_available} must stay available.",
        raw("maxSurge"),
        raw("maxUnavailable")
    );
    let mut table = String::from("  REPLICASET\tREVISION\tDESIRED\tAVAILABLE\tNEW\n");
    for rs in sets {
        let _ = writeln!(
            table,
            "  {}\t{}\t{}\t{}\t{}",
            name(rs),
            objects::annotations(rs)
                .get(REVISION_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            int_at(rs, "/spec/replicas", 0),
            int_at(rs, "/status/availableReplicas", 0),
            new_rs.is_some_and(|n| name(n) == name(rs))
        );
    }
    out.push_str(&super::table(&table));
    let new_spec = new_rs.map_or(0, |rs| int_at(rs, "/spec/replicas", 0));
    let new_unavailable = new_rs.map_or(0, |rs| {
        new_spec - int_at(rs, "/status/availableReplicas", 0).min(new_spec)
    });
    let up = (max_total - total).max(0).min((desired - new_spec).max(0));
    let down = total - min_available - new_unavailable;
    let _ = writeln!(
        out,
        "  Scale up the new ReplicaSet: {max_total} allowed - {total} pods the ReplicaSets want = {} room; it needs {} \
         more, so it may add {up}.",
        max_total - total,
        (desired - new_spec).max(0)
    );
    let _ = writeln!(
        out,
        "  Scale down the old ones: {total} pods - {min_available} that must stay available - {new_unavailable} new \
         ones not yet available = {down}, so it may remove {}.",
        down.max(0)
    );
    if up == 0 && down <= 0 && new_spec < desired {
        let _ = writeln!(
            out,
            "  Neither is possible: the rollout waits for the new pods to become available."
        );
    }
    Ok(())
}

/// The pods of the new ReplicaSet that are not ready, and why.
async fn unavailable_pods(out: &mut String, client: &Client, ns: &str, rs: &Value) -> anyhow::Result<()> {
    let pods = list(client, kind("v1", "Pod"), ns, None).await?;
    let waiting: Vec<&Value> = owned(&pods, rs)
        .into_iter()
        .filter(|p| is_active(p) && !objects::pod::is_pod_ready(p))
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let _ = writeln!(out, "\nNew pods not ready yet:");
    for p in waiting {
        let why = match condition(p, "PodScheduled") {
            Some(c) if str_at(c, "/status") == "False" => format!("not scheduled: {}", condition_text(c)),
            _ => condition(p, "Ready")
                .map(condition_text)
                .unwrap_or_else(|| format!("phase {}", str_at(p, "/status/phase"))),
        };
        let _ = writeln!(
            out,
            "  pod {}: {why} (`kulisse explain pod {}` says more)",
            name(p),
            name(p)
        );
    }
    Ok(())
}
