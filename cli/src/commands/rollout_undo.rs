//! `kulisse rollout undo deployment/web [--to-revision=N]` (mirrors `kubectl rollout undo`).
//!
//! There is no "rollback" verb in the API (the old `deployments/rollback` subresource is
//! gone since apps/v1). Like kubectl, the client does it: it finds the ReplicaSet of the
//! wanted revision (default: the one before the newest), takes its pod template without
//! the `pod-template-hash` label and writes it back into the Deployment with a JSON patch
//! that replaces `spec.template` and `metadata.annotations`. To the Deployment controller
//! this is just a new template, one that equals an old ReplicaSet's: it scales that
//! ReplicaSet up again and gives it the next revision number (the old number moves to
//! `deployment.kubernetes.io/revision-history`).

use anyhow::bail;
use clap::Args;
use kulisse_core::client::Client;
use kulisse_core::objects;
use serde_json::{Map, Value, json};

use super::rollout_history::{deployment_and_replicasets, describe_pod_template, revision_of};
use crate::commands::create::DryRun;

/// Deployment annotations a rollback keeps from the Deployment instead of copying them
/// from the ReplicaSet (kubectl's `annotationsToSkip`).
const KEEP_FROM_DEPLOYMENT: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

#[derive(Args, Debug)]
pub struct UndoArgs {
    /// `deployment/web`, or `deployment web`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The revision to roll back to (0: the one before the current).
    #[arg(long = "to-revision", default_value_t = 0)]
    pub to_revision: i64,
    /// `none`, `client` (print the template) or `server` (the API server checks, stores nothing).
    #[arg(long = "dry-run", value_enum, default_value_t = DryRun::None, num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

/// The ReplicaSet to roll back to (`deploymentRevision`).
pub fn pick_revision<'a>(name: &str, rss: &'a [Value], to: i64) -> anyhow::Result<&'a Value> {
    if to < 0 {
        bail!("unable to find specified revision {to} in history");
    }
    let mut with_rev: Vec<(i64, &Value)> = rss.iter().filter_map(|rs| Some((revision_of(rs)?, rs))).collect();
    if to > 0 {
        return match with_rev.iter().find(|(r, _)| *r == to) {
            Some((_, rs)) => Ok(rs),
            None => bail!("unable to find specified revision {to} in history"),
        };
    }
    with_rev.sort_by_key(|(r, _)| std::cmp::Reverse(*r));
    match with_rev.get(1) {
        Some((_, rs)) => Ok(rs),
        None => bail!("no rollout history found for deployment \"{name}\""),
    }
}

/// A template without the pod-template-hash label (an emptied label map goes too, as Go
/// drops an empty map).
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove("pod-template-hash");
        if labels.is_empty()
            && let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
    t
}

/// The JSON patch kubectl sends: the old template, and the annotations merged from the
/// Deployment (the kept ones) and the ReplicaSet (all others).
pub fn rollback_patch(d: &Value, rs: &Value) -> Value {
    let mut annotations = Map::new();
    let d_ann = objects::annotations(d);
    for key in KEEP_FROM_DEPLOYMENT {
        if let Some(v) = d_ann.get(*key) {
            annotations.insert((*key).to_string(), json!(v));
        }
    }
    for (k, v) in objects::annotations(rs) {
        if !KEEP_FROM_DEPLOYMENT.contains(&k.as_str()) {
            annotations.insert(k, json!(v));
        }
    }
    let template = without_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null));
    json!([
        {"op": "replace", "path": "/spec/template", "value": template},
        {"op": "replace", "path": "/metadata/annotations", "value": annotations},
    ])
}

pub async fn run(client: &Client, ns: &str, name: &str, args: &UndoArgs) -> anyhow::Result<()> {
    let (d, rss) = deployment_and_replicasets(client, ns, name).await?;
    let rs = pick_revision(name, &rss, args.to_revision)?;
    if args.dry_run == DryRun::Client {
        let template = describe_pod_template(rs.pointer("/spec/template").unwrap_or(&Value::Null));
        println!("deployment.apps/{name} {template} (dry run)");
        return Ok(());
    }
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        bail!("you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again");
    }
    let current = without_hash(d.pointer("/spec/template").unwrap_or(&Value::Null));
    if without_hash(rs.pointer("/spec/template").unwrap_or(&Value::Null)) == current {
        println!(
            "deployment.apps/{name} skipped rollback (current template already matches revision {}){}",
            args.to_revision,
            args.dry_run.suffix()
        );
        return Ok(());
    }
    let info = objects::by_gvk("apps/v1", "Deployment").expect("Deployment is built in");
    let patch = rollback_patch(&d, rs);
    let server_dry_run = args.dry_run == DryRun::Server;
    let json_patch = "application/json-patch+json";
    let patched = super::patch_as(
        client,
        info,
        Some(ns),
        name,
        json_patch,
        "kubectl-rollout",
        &patch,
        server_dry_run,
    );
    if let Err(e) = patched.await {
        bail!("failed restoring revision {}: {e}", args.to_revision);
    }
    println!("deployment.apps/{name} rolled back{}", args.dry_run.suffix());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(rev: &str, image: &str) -> Value {
        json!({"metadata": {"name": format!("web-{rev}"), "annotations": {
                   "deployment.kubernetes.io/revision": rev, "team": "a",
                   "deployment.kubernetes.io/desired-replicas": "3"}},
               "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "h"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn the_default_target_is_the_revision_before_the_newest() {
        let rss = [rs("1", "a"), rs("3", "c"), rs("2", "b")];
        assert_eq!(objects::name(pick_revision("web", &rss, 0).unwrap()), Some("web-2"));
        assert_eq!(objects::name(pick_revision("web", &rss, 1).unwrap()), Some("web-1"));
        let err = pick_revision("web", &rss, 7).unwrap_err().to_string();
        assert_eq!(err, "unable to find specified revision 7 in history");
        let err = pick_revision("web", &rss[..1], 0).unwrap_err().to_string();
        assert_eq!(err, "no rollout history found for deployment \"web\"");
    }

    #[test]
    fn the_patch_restores_the_template_without_its_hash_and_keeps_the_deployments_revision() {
        let d = json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "3", "old": "x"}}});
        let patch = rollback_patch(&d, &rs("1", "a"));
        assert_eq!(patch[0]["path"], "/spec/template");
        assert_eq!(patch[0]["value"]["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(patch[0]["value"]["spec"]["containers"][0]["image"], "a");
        assert_eq!(
            patch[1]["value"],
            json!({"deployment.kubernetes.io/revision": "3", "team": "a"}),
            "the Deployment's revision stays, the ReplicaSet's other annotations come back"
        );
    }
}
