//! `kulisse drain NODE` (mirrors `kubectl drain`): empty a node for maintenance.
//!
//! 1. **Cordon** the node (`spec.unschedulable: true`), so nothing new lands on it.
//! 2. **Pick** its pods (`fieldSelector=spec.nodeName=NODE`) and check each with kubectl's
//!    filters, in kubectl's order: DaemonSet pods would come right back (refused unless
//!    `--ignore-daemonsets`, which skips them); mirror pods belong to the kubelet (skipped);
//!    pods with `emptyDir` volumes lose that data (refused unless `--delete-emptydir-data`);
//!    pods no controller owns would not come back anywhere (refused unless `--force`).
//!    Finished pods always go. If any pod is refused, nothing is deleted.
//! 3. **Remove** the pods, each with its grace period (`--grace-period`, default: the
//!    pod's own), and wait until they are gone; their ReplicaSets create replacements,
//!    which the scheduler places on the other nodes.
//!
//! Where kulisse differs: Kubernetes *evicts* (`POST pods/NAME/eviction`), which respects
//! PodDisruptionBudgets; kulisse serves neither evictions nor PDBs, so drain deletes the
//! pods, exactly as kubectl itself does against a server without the eviction subresource
//! (or with `--disable-eviction`), and prints kubectl's lines for that path.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::client;
use super::cordon::set_unschedulable;
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// The node.
    pub node: String,
    /// Skip DaemonSet-managed pods instead of refusing.
    #[arg(long = "ignore-daemonsets")]
    pub ignore_daemonsets: bool,
    /// Delete pods with emptyDir volumes (their data is lost).
    #[arg(long = "delete-emptydir-data")]
    pub delete_emptydir_data: bool,
    /// Delete pods no controller manages (they are not recreated).
    #[arg(long)]
    pub force: bool,
    /// Seconds each pod gets to terminate (negative: the pod's own grace period).
    #[arg(long = "grace-period", default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Give up after this long (`30s`, `5m`; 0: wait forever).
    #[arg(long, default_value = "0s")]
    pub timeout: String,
}

/// What the filters decided for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delete,
    DeleteWithWarning(&'static str),
    Skip,
    SkipWithWarning(&'static str),
    Refuse(&'static str),
}

const DAEMONSET_FATAL: &str = "DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
const LOCAL_STORAGE_FATAL: &str = "Pods with local storage (use --delete-emptydir-data to override)";
const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
const UNMANAGED_FATAL: &str = "cannot delete Pods that declare no controller (use --force to override)";
const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";

/// kubectl's drain filters for one pod (`makeFilters`: the first that does not delete
/// decides; otherwise the last warning stays).
pub fn verdict(pod: &Value, args: &DrainArgs) -> Verdict {
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let controller = objects::owner_references(pod)
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let mut result = Verdict::Delete;
    if controller.and_then(|c| c.get("kind")).and_then(Value::as_str) == Some("DaemonSet") && !finished {
        return if args.ignore_daemonsets {
            Verdict::SkipWithWarning(DAEMONSET_WARNING)
        } else {
            Verdict::Refuse(DAEMONSET_FATAL)
        };
    }
    if objects::annotations(pod).contains_key("kubernetes.io/config.mirror") {
        return Verdict::Skip;
    }
    let empty_dir = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.get("emptyDir").is_some()));
    if empty_dir && !finished {
        if !args.delete_emptydir_data {
            return Verdict::Refuse(LOCAL_STORAGE_FATAL);
        }
        result = Verdict::DeleteWithWarning(LOCAL_STORAGE_WARNING);
    }
    if controller.is_none() && !finished {
        if !args.force {
            return Verdict::Refuse(UNMANAGED_FATAL);
        }
        result = Verdict::DeleteWithWarning(UNMANAGED_WARNING);
    }
    result
}

/// `message: ns/a, ns/b`, one per message (kubectl's warning and error lists).
fn grouped(list: &[(&'static str, String)]) -> Vec<String> {
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (msg, pod) in list {
        by.entry(msg).or_default().push(pod);
    }
    by.iter().map(|(m, pods)| format!("{m}: {}", pods.join(", "))).collect()
}

/// The pods to delete, after printing warnings; kubectl's error if any pod is refused.
fn select(pods: &[Value], args: &DrainArgs) -> anyhow::Result<Vec<Value>> {
    let (mut chosen, mut warnings, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    for pod in pods {
        let id = format!(
            "{}/{}",
            objects::namespace(pod).unwrap_or(""),
            objects::name(pod).unwrap_or("")
        );
        match verdict(pod, args) {
            Verdict::Delete => chosen.push(pod.clone()),
            Verdict::DeleteWithWarning(w) => {
                warnings.push((w, id));
                chosen.push(pod.clone());
            }
            Verdict::Skip => {}
            Verdict::SkipWithWarning(w) => warnings.push((w, id)),
            Verdict::Refuse(why) => refused.push((why, id)),
        }
    }
    if !refused.is_empty() {
        // kubectl 1.32 puts "cannot delete" before every reason, even one that starts so.
        let errors: Vec<String> = grouped(&refused).iter().map(|e| format!("cannot delete {e}")).collect();
        let text = if errors.len() == 1 {
            errors.join("")
        } else {
            format!("[{}]", errors.join(", "))
        };
        bail!(
            "unable to drain node \"{}\" due to error: {text}, continuing command...\nThere are pending nodes to be drained:\n {}\n{text}",
            args.node,
            args.node
        );
    }
    if !warnings.is_empty() {
        eprintln!("Warning: {}", grouped(&warnings).join("; "));
    }
    Ok(chosen)
}

/// Delete the pods and wait until each is gone, printing `pod/x deleted` as it goes.
async fn remove(client: &Client, pods: Vec<Value>, args: &DrainArgs, deadline: Option<Instant>) -> anyhow::Result<()> {
    let info = objects::by_gvk("v1", "Pod").expect("Pod is built in");
    let options = if args.grace_period >= 0 {
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": args.grace_period})
    } else {
        json!({"kind": "DeleteOptions", "apiVersion": "v1"})
    };
    // Watch first, so no disappearance can slip between a delete and the watch.
    let list = client.list(info, None, &ListParams::default()).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut events = client.watch(info, None, &ListParams::default(), rv.as_deref()).await?;
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    for pod in &pods {
        let (ns, name) = (objects::namespace(pod).unwrap_or(""), objects::name(pod).unwrap_or(""));
        match client.delete_with_options(info, Some(ns), name, &options).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
        pending.insert(objects::uid(pod).unwrap_or("").to_string(), name.to_string());
    }
    let wait = async {
        while !pending.is_empty() {
            let Some(ev) = events.next().await else {
                bail!("the watch of pods ended while waiting for them to go");
            };
            let ev = ev?;
            if ev.kind == "DELETED"
                && let Some(name) = pending.remove(objects::uid(&ev.object).unwrap_or(""))
            {
                println!("pod/{name} deleted");
            }
        }
        Ok(())
    };
    match deadline {
        None => wait.await,
        Some(d) => match tokio::time::timeout_at(d, wait).await {
            Ok(r) => r,
            Err(_) => bail!(
                "unable to drain node \"{}\" due to error: global timeout reached: {}, continuing command...",
                args.node,
                args.timeout
            ),
        },
    }
}

pub async fn run(global: &GlobalArgs, args: DrainArgs) -> anyhow::Result<ExitCode> {
    let timeout: Duration = super::wait::parse_timeout(&args.timeout)?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let client = client(global)?;
    set_unschedulable(&client, &args.node, true).await?;
    let info = objects::by_gvk("v1", "Pod").expect("Pod is built in");
    let params = ListParams {
        field_selector: Some(format!("spec.nodeName={}", args.node)),
        ..Default::default()
    };
    let list = client.list(info, None, &params).await?;
    let pods: Vec<Value> = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let chosen = select(&pods, &args)?;
    remove(&client, chosen, &args, deadline).await?;
    println!("node/{} drained", args.node);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(force: bool, emptydir: bool, ds: bool) -> DrainArgs {
        DrainArgs {
            node: "node-1".into(),
            ignore_daemonsets: ds,
            delete_emptydir_data: emptydir,
            force,
            grace_period: -1,
            timeout: "0s".into(),
        }
    }

    fn pod(owner: Option<&str>, empty_dir: bool, phase: &str) -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"},
                           "spec": {"volumes": []}, "status": {"phase": phase}});
        if let Some(kind) = owner {
            p["metadata"]["ownerReferences"] = json!([{"kind": kind, "name": "o", "controller": true}]);
        }
        if empty_dir {
            p["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        }
        p
    }

    #[test]
    fn filters_refuse_what_would_be_lost_unless_told_otherwise() {
        let a = args(false, false, false);
        assert_eq!(verdict(&pod(Some("ReplicaSet"), false, "Running"), &a), Verdict::Delete);
        assert_eq!(
            verdict(&pod(None, false, "Running"), &a),
            Verdict::Refuse(UNMANAGED_FATAL)
        );
        assert_eq!(verdict(&pod(None, false, "Succeeded"), &a), Verdict::Delete);
        assert_eq!(
            verdict(&pod(None, false, "Running"), &args(true, false, false)),
            Verdict::DeleteWithWarning(UNMANAGED_WARNING)
        );
        assert_eq!(
            verdict(&pod(Some("ReplicaSet"), true, "Running"), &a),
            Verdict::Refuse(LOCAL_STORAGE_FATAL)
        );
        assert_eq!(
            verdict(&pod(Some("DaemonSet"), false, "Running"), &a),
            Verdict::Refuse(DAEMONSET_FATAL)
        );
        assert_eq!(
            verdict(&pod(Some("DaemonSet"), false, "Running"), &args(false, false, true)),
            Verdict::SkipWithWarning(DAEMONSET_WARNING)
        );
        let err = select(&[pod(None, false, "Running")], &a).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "unable to drain node \"node-1\" due to error: cannot delete cannot delete Pods that declare no \
                 controller (use --force to override): default/p, continuing command..."
            ),
            "{err}"
        );
    }
}
