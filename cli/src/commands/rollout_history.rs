//! `kulisse rollout history deployment/web [--revision=N]` (mirrors `kubectl rollout history`).
//!
//! A Deployment keeps no history of its own: its history *is* its ReplicaSets. The
//! Deployment controller gives each new pod template a ReplicaSet and stamps it with the
//! annotation `deployment.kubernetes.io/revision` (1, 2, 3, ...); old ReplicaSets stay at 0
//! replicas, up to `spec.revisionHistoryLimit` of them. So this command, like kubectl, lists
//! the ReplicaSets the Deployment controls, reads each one's revision and its
//! `kubernetes.io/change-cause` annotation, and prints them sorted by revision.
//! `--revision=N` shows that ReplicaSet's pod template instead, in `describe`'s layout.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::bail;
use clap::Args;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects;
use serde_json::Value;

use crate::tabwriter;

/// The annotation kubectl shows as CHANGE-CAUSE.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The revision the Deployment controller gives each ReplicaSet.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// `deployment/web`, or `deployment web`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// Show the pod template of this revision.
    #[arg(long, default_value_t = 0)]
    pub revision: i64,
}

/// A Deployment and the ReplicaSets it controls (`deploymentutil.GetAllReplicaSets`).
pub async fn deployment_and_replicasets(client: &Client, ns: &str, name: &str) -> anyhow::Result<(Value, Vec<Value>)> {
    let deployments = objects::by_gvk("apps/v1", "Deployment").expect("Deployment is built in");
    let replicasets = objects::by_gvk("apps/v1", "ReplicaSet").expect("ReplicaSet is built in");
    let d = client.get(deployments, Some(ns), name).await?;
    let uid = objects::uid(&d).unwrap_or_default().to_string();
    let list = client.list(replicasets, Some(ns), &ListParams::default()).await?;
    let owned = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|rs| objects::controller_uid(rs) == Some(uid.as_str()))
        .cloned()
        .collect();
    Ok((d, owned))
}

/// A ReplicaSet's revision, if it has a readable one.
pub fn revision_of(rs: &Value) -> Option<i64> {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
}

/// Revision → (template, change cause), as `DeploymentHistoryViewer` collects it.
fn history(rss: &[Value]) -> BTreeMap<i64, (Value, String)> {
    let mut out = BTreeMap::new();
    for rs in rss {
        if let Some(rev) = revision_of(rs) {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(Value::Null);
            let cause = rs
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CHANGE_CAUSE))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            out.insert(rev, (template, cause));
        }
    }
    out
}

/// What `rollout history` prints after the object's name.
pub fn history_text(rss: &[Value], revision: i64) -> anyhow::Result<String> {
    let history = history(rss);
    if history.is_empty() {
        return Ok("No rollout history found.".into());
    }
    if revision > 0 {
        let Some((template, cause)) = history.get(&revision) else {
            bail!("unable to find the specified revision");
        };
        let mut template = template.clone();
        if !cause.is_empty() {
            template["metadata"]["annotations"][CHANGE_CAUSE] = Value::String(cause.clone());
        }
        return Ok(describe_pod_template(&template));
    }
    let mut text = String::from("REVISION\tCHANGE-CAUSE\n");
    for (rev, (_, cause)) in &history {
        let cause = if cause.is_empty() { "<none>" } else { cause };
        let _ = writeln!(text, "{rev}\t{cause}");
    }
    Ok(tabwriter::align(&text, 2))
}

pub async fn run(client: &Client, ns: &str, name: &str, args: &HistoryArgs) -> anyhow::Result<()> {
    if args.revision < 0 {
        bail!("revision must be a positive integer: {}", args.revision);
    }
    let (_, rss) = deployment_and_replicasets(client, ns, name).await?;
    let text = history_text(&rss, args.revision)?;
    let with = if args.revision > 0 {
        format!("with revision #{}", args.revision)
    } else {
        String::new()
    };
    // kubectl's name printer: `deployment.apps/web <operation>`, where the operation is
    // "with revision #N" (or nothing), a newline and the history.
    println!("deployment.apps/{name} {with}\n{text}");
    Ok(())
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// `key=value` lines of a string map, sorted, under `title` (`printLabelsMultiline`).
fn map_field(out: &mut String, title: &str, map: Option<&Value>) {
    let entries: BTreeMap<&String, String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    let _ = write!(out, "{title}:\t");
    if entries.is_empty() {
        out.push_str("<none>\n");
    }
    for (i, (k, v)) in entries.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let _ = writeln!(out, "{k}={v}");
    }
}

/// A pod template in `kubectl describe`'s layout (`DescribePodTemplate`), for the fields
/// kulisse's pods use, with the tabs kubectl leaves in it.
pub fn describe_pod_template(template: &Value) -> String {
    let mut out = String::from("Pod Template:\n");
    map_field(&mut out, "  Labels", template.pointer("/metadata/labels"));
    if template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| !a.is_empty())
    {
        map_field(&mut out, "  Annotations", template.pointer("/metadata/annotations"));
    }
    let spec = template.get("spec").cloned().unwrap_or(Value::Null);
    if !s(&spec, "/serviceAccountName").is_empty() {
        let _ = writeln!(out, "  Service Account:\t{}", s(&spec, "/serviceAccountName"));
    }
    let list = |k: &str| spec.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    if !list("initContainers").is_empty() {
        containers(&mut out, "Init Containers", &list("initContainers"));
    }
    containers(&mut out, "Containers", &list("containers"));
    volumes(&mut out, &list("volumes"));
    if !s(&spec, "/priorityClassName").is_empty() {
        let _ = writeln!(out, "  Priority Class Name:\t{}", s(&spec, "/priorityClassName"));
    }
    map_field(&mut out, "  Node-Selectors", spec.get("nodeSelector"));
    tolerations(&mut out, &list("tolerations"));
    // kubectl writes this text with its tabs as they are (no tabwriter here).
    out
}

fn containers(out: &mut String, label: &str, list: &[Value]) {
    let none = if list.is_empty() { " <none>" } else { "" };
    let _ = writeln!(out, "  {label}:{none}");
    for c in list {
        let _ = writeln!(out, "   {}:", s(c, "/name"));
        let _ = writeln!(out, "    Image:\t{}", s(c, "/image"));
        let ports: Vec<&Value> = c.get("ports").and_then(Value::as_array).into_iter().flatten().collect();
        let port = |key: &str| {
            let joined: Vec<String> = ports
                .iter()
                .map(|p| {
                    let n = p.get(key).and_then(Value::as_i64).unwrap_or(0);
                    format!("{n}/{}", p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"))
                })
                .collect();
            joined.join(", ")
        };
        for (one, many, key) in [
            ("Port", "Ports", "containerPort"),
            ("Host Port", "Host Ports", "hostPort"),
        ] {
            let text = port(key);
            let label = if text.contains(',') { many } else { one };
            let _ = writeln!(out, "    {label}:\t{}", if text.is_empty() { "<none>" } else { &text });
        }
        for (key, label) in [("command", "Command"), ("args", "Args")] {
            let items: Vec<&str> = c
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !items.is_empty() {
                let _ = writeln!(out, "    {label}:");
                for line in items.iter().flat_map(|i| i.split('\n')) {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        container_details(out, c);
    }
}

fn container_details(out: &mut String, c: &Value) {
    for (key, label) in [("limits", "Limits"), ("requests", "Requests")] {
        if let Some(m) = c.pointer(&format!("/resources/{key}")).and_then(Value::as_object)
            && !m.is_empty()
        {
            let _ = writeln!(out, "    {label}:");
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            for (k, v) in sorted {
                let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                let _ = writeln!(out, "      {k}:\t{v}");
            }
        }
    }
    let env: Vec<&Value> = c.get("env").and_then(Value::as_array).into_iter().flatten().collect();
    let _ = writeln!(out, "    Environment:{}", if env.is_empty() { "\t<none>" } else { "" });
    for e in env {
        let _ = writeln!(out, "      {}:\t{}", s(e, "/name"), s(e, "/value"));
    }
    let mounts: Vec<&Value> = c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let _ = writeln!(out, "    Mounts:{}", if mounts.is_empty() { "\t<none>" } else { "" });
    for m in mounts {
        let ro = if m.get("readOnly").and_then(Value::as_bool) == Some(true) {
            "ro"
        } else {
            "rw"
        };
        let _ = writeln!(out, "      {} from {} ({ro})", s(m, "/mountPath"), s(m, "/name"));
    }
}

fn volumes(out: &mut String, list: &[Value]) {
    if list.is_empty() {
        out.push_str("  Volumes:\t<none>\n");
        return;
    }
    out.push_str("  Volumes:\n");
    for v in list {
        let _ = writeln!(out, "   {}:", s(v, "/name"));
        let kind = v
            .as_object()
            .and_then(|m| m.keys().find(|k| k.as_str() != "name"))
            .cloned()
            .unwrap_or_default();
        let _ = writeln!(out, "    Type:\t{kind}");
    }
}

fn tolerations(out: &mut String, list: &[Value]) {
    out.push_str("  Tolerations:\t");
    if list.is_empty() {
        out.push_str("<none>\n");
        return;
    }
    for (i, t) in list.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let mut text = s(t, "/key").to_string();
        if !s(t, "/value").is_empty() {
            let _ = write!(text, "={}", s(t, "/value"));
        }
        if !s(t, "/effect").is_empty() {
            let _ = write!(text, ":{}", s(t, "/effect"));
        }
        if s(t, "/operator") == "Exists" && s(t, "/value").is_empty() {
            text = if s(t, "/key").is_empty() {
                "op=Exists".into()
            } else {
                format!("{text} op=Exists")
            };
        }
        let _ = writeln!(out, "{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(rev: &str, image: &str, cause: Option<&str>) -> Value {
        let mut annotations = json!({REVISION: rev});
        if let Some(c) = cause {
            annotations[CHANGE_CAUSE] = json!(c);
        }
        json!({"metadata": {"annotations": annotations},
               "spec": {"template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn history_lists_revisions_in_order_with_their_change_cause() {
        let rss = [rs("10", "b", Some("kubectl apply")), rs("2", "a", None)];
        assert_eq!(
            history_text(&rss, 0).unwrap(),
            "REVISION  CHANGE-CAUSE\n2         <none>\n10        kubectl apply\n"
        );
        assert_eq!(history_text(&[], 0).unwrap(), "No rollout history found.");
        let err = history_text(&rss, 3).unwrap_err().to_string();
        assert_eq!(err, "unable to find the specified revision");
    }

    #[test]
    fn a_revision_shows_its_template_as_describe_does() {
        let text = history_text(&[rs("1", "busybox", None)], 1).unwrap();
        assert_eq!(
            text,
            "Pod Template:\n  Labels:\tapp=web\n\tpod-template-hash=abc\n  Containers:\n   web:\n    \
             Image:\tbusybox\n    Port:\t<none>\n    Host Port:\t<none>\n    Environment:\t<none>\n    \
             Mounts:\t<none>\n  Volumes:\t<none>\n  Node-Selectors:\t<none>\n  Tolerations:\t<none>\n"
        );
    }
}
