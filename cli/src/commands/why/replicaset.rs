//! Why a ReplicaSet has the pods it has: desired against current, expectations, and the
//! order in which upstream's deletion ranking would remove them.

use std::fmt::Write as _;
use std::sync::Arc;

use kulisse_core::client::Client;
use kulisse_core::controllers::replicaset::{EXPECTATIONS_TIMEOUT, pods_to_delete};
use kulisse_core::objects;
use serde_json::Value;

use super::{ago, condition, condition_text, int_at, kind, list, name, str_at};

/// The pods `rs` controls (by uid), split into active ones and the rest.
pub(super) fn owned<'a>(pods: &'a [Value], owner: &Value) -> Vec<&'a Value> {
    let uid = objects::uid(owner).unwrap_or("");
    pods.iter()
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true) && str_at(r, "/uid") == uid)
        })
        .collect()
}

/// Counted by the controller: not being deleted, not finished (upstream's `FilterActivePods`).
pub(super) fn is_active(pod: &Value) -> bool {
    objects::deletion_timestamp(pod).is_none() && !matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
}

pub async fn explain(client: &Client, ns: &str, rs_name: &str) -> anyhow::Result<String> {
    let rs_info = kind("apps/v1", "ReplicaSet");
    let rs = client.get(rs_info, Some(ns), rs_name).await?;
    let pods = list(client, kind("v1", "Pod"), ns, None).await?;
    let mine = owned(&pods, &rs);
    let active: Vec<&Value> = mine.iter().copied().filter(|p| is_active(p)).collect();
    let desired = int_at(&rs, "/spec/replicas", 1);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ReplicaSet {ns}/{rs_name} wants {desired} pods and controls {} active ones (status: replicas {}, ready {}, \
         available {}).",
        active.len(),
        int_at(&rs, "/status/replicas", 0),
        int_at(&rs, "/status/readyReplicas", 0),
        int_at(&rs, "/status/availableReplicas", 0)
    );
    counting(&mut out, &rs, &mine, &active, desired);
    expectations(&mut out, &rs, active.len() as i64);
    ranking(&mut out, client, ns, &rs, &pods, &active).await?;
    Ok(out)
}

/// Desired against current, and what the controller does about the difference.
fn counting(out: &mut String, rs: &Value, mine: &[&Value], active: &[&Value], desired: i64) {
    let have = active.len() as i64;
    let terminating = mine.iter().filter(|p| objects::deletion_timestamp(p).is_some()).count();
    let finished = mine.len() - active.len() - terminating;
    let mut text = match have.cmp(&desired) {
        std::cmp::Ordering::Equal => "Desired equals current: the controller has nothing to do.".to_string(),
        std::cmp::Ordering::Less => format!(
            "It is {} short: the controller creates that many pods from spec.template.",
            desired - have
        ),
        std::cmp::Ordering::Greater => format!(
            "It has {} too many: the controller deletes that many, in the ranking below.",
            have - desired
        ),
    };
    if terminating > 0 || finished > 0 {
        let _ = write!(
            text,
            " Not counted: {terminating} terminating and {finished} finished (Succeeded/Failed) pods it still owns."
        );
    }
    if let Some(c) = condition(rs, "ReplicaFailure") {
        let _ = write!(text, " Its last create or delete failed: {}.", condition_text(c));
    }
    let _ = writeln!(out, "  {text}");
}

/// The controller's expectations, as far as they show from outside.
fn expectations(out: &mut String, rs: &Value, active: i64) {
    let generation = int_at(rs, "/metadata/generation", 1);
    let observed = int_at(rs, "/status/observedGeneration", 0);
    let status = int_at(rs, "/status/replicas", 0);
    let mut text = format!(
        "\nExpectations: after creating or deleting pods, the controller waits (in memory) until its informer has \
         seen every one of those changes, or {}s have passed, before it counts again; so it never creates the same \
         pod twice.",
        EXPECTATIONS_TIMEOUT.as_secs()
    );
    if observed < generation {
        let _ = write!(
            text,
            " It has not yet seen the latest spec (observedGeneration {observed} < generation {generation})."
        );
    } else if status != active {
        let _ = write!(
            text,
            " Its last status counted {status} pods and {active} exist now: a change is in flight."
        );
    } else {
        let _ = write!(
            text,
            " Its last status matches the pods that exist ({status}): nothing is in flight."
        );
    }
    let _ = writeln!(out, "{text}");
}

/// Upstream's deletion ranking (`ActivePodsWithRanks`) of the active pods, first to go first.
async fn ranking(
    out: &mut String,
    client: &Client,
    ns: &str,
    rs: &Value,
    pods: &[Value],
    active: &[&Value],
) -> anyhow::Result<()> {
    if active.is_empty() {
        return Ok(());
    }
    // Pods "doubled up" on a node count the pods of this ReplicaSet and its siblings (the
    // other ReplicaSets of the same Deployment).
    let mut related: Vec<Arc<Value>> = Vec::new();
    let siblings = match super::controller_of(rs) {
        Some((_, owner)) => list(client, kind("apps/v1", "ReplicaSet"), ns, None)
            .await?
            .into_iter()
            .filter(|r| super::controller_of(r).is_some_and(|(_, o)| o == owner))
            .collect(),
        None => vec![rs.clone()],
    };
    for s in &siblings {
        related.extend(
            owned(pods, s)
                .into_iter()
                .filter(|p| is_active(p))
                .cloned()
                .map(Arc::new),
        );
    }
    let mine: Vec<Arc<Value>> = active.iter().map(|p| Arc::new((*p).clone())).collect();
    let order = pods_to_delete(&mine, &related, mine.len());
    let _ = writeln!(
        out,
        "\nDeletion ranking (on scale-down the first go first: unscheduled before scheduled, Pending before Running, \
         not ready before ready, lower pod-deletion-cost first, more pods of the set on the node first, ready more \
         recently first, more restarts first, newer first):"
    );
    let mut table = String::from("  #\tPOD\tNODE\tPHASE\tREADY\tDELETION-COST\tON-NODE\tRESTARTS\tCREATED\n");
    for (i, p) in order.iter().enumerate() {
        let node = str_at(p, "/spec/nodeName");
        let on_node = if node.is_empty() {
            0
        } else {
            related.iter().filter(|r| str_at(r, "/spec/nodeName") == node).count()
        };
        let restarts: i64 = p
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| int_at(c, "/restartCount", 0))
            .max()
            .unwrap_or(0);
        let cost = objects::annotations(p)
            .get("controller.kubernetes.io/pod-deletion-cost")
            .cloned()
            .unwrap_or_else(|| "0".into());
        let _ = writeln!(
            table,
            "  {}\t{}\t{}\t{}\t{}\t{cost}\t{on_node}\t{restarts}\t{}",
            i + 1,
            name(p),
            if node.is_empty() { "<none>" } else { node },
            str_at(p, "/status/phase"),
            objects::pod::is_pod_ready(p),
            ago(str_at(p, "/metadata/creationTimestamp"))
        );
    }
    out.push_str(&super::table(&table));
    Ok(())
}
