//! `kulisse history TYPE/NAME`: every stored revision of one object, who wrote it, and what
//! changed (kulisse only; kubectl has no such command).
//!
//! Three things Kubernetes already keeps make an object's past visible:
//!
//! 1. **The store keeps every revision until it is compacted.** A watch that starts at an
//!    old `resourceVersion` replays each change since then, as etcd does for a watch from
//!    an old revision. `history` watches the object's namespace from revision 1 and keeps
//!    the events of this one object, until it has seen the object's current
//!    `resourceVersion`.
//! 2. **The audit log names the writer.** Each stored write leaves an `audit.k8s.io/v1`
//!    event with the user and the revision it produced (`<data-dir>/audit.log`, see
//!    `kulisse_core::apiserver::audit`); `history` reads it from the cluster's data dir.
//!    A revision the log does not know (the log was off, or rotated away) shows `?`.
//! 3. **The trace id of the write** is on that audit line too: `kulisse trace ID` opens it.
//!
//! Each revision is shown as a unified diff of its YAML against the one before (without
//! `resourceVersion` and `managedFields`, which change on every write). `kulisse get
//! TYPE/NAME --revision N` shows one revision whole.
//!
//! Where kulisse differs: upstream has no such view; `kubectl rollout history` lists only
//! the ReplicaSets a Deployment keeps, and the audit log is read with other tools. After a
//! compaction the older revisions are gone, in kulisse as in etcd: `history` says so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use kulisse_core::apiserver::audit::{self, WriteRecord};
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::ResourceInfo;
use serde_json::Value;

use super::{client, namespace, object_ref};
use crate::{GlobalArgs, builder, output};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  kulisse history deployment/web
  kulisse history pod web-6dc9c4df99-x2k4p --data-dir /tmp/kulisse")]
pub struct HistoryArgs {
    /// `TYPE/NAME` or `TYPE NAME`.
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<String>,
    /// The cluster's data dir, where the audit log is (default: the directory of the
    /// kubeconfig in use).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// One stored revision of the object.
struct Revision {
    revision: i64,
    event: String,
    object: Value,
}

pub async fn run(global: &GlobalArgs, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let (info, name) = builder::one(&args.args)?;
    let client = client(global)?;
    let ns = info.namespaced.then(|| namespace(global, &client));
    let current = client
        .get(info, ns.as_deref(), &name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let target: i64 = current
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .context("the object has no resourceVersion")?;
    let revisions = replay(&client, info, ns.as_deref(), &name, target).await?;
    let dir = super::ps::data_dir(global, &args.data_dir);
    let writers = audit_records(&dir, info, ns.as_deref(), &name);
    print!("{}", render(info, &name, &revisions, &writers));
    Ok(ExitCode::SUCCESS)
}

/// The object's changes from the store's history, oldest first, up to revision `target`.
async fn replay(
    client: &Client,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    target: i64,
) -> anyhow::Result<Vec<Revision>> {
    let params = ListParams {
        field_selector: Some(format!("metadata.name={name}")),
        ..Default::default()
    };
    let mut events = client
        .watch(info, ns, &params, Some("1"))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|r: &Revision| r.revision < target) {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let event = match next {
            Err(_) => bail!("the store's history did not reach revision {target} within 30 s"),
            Ok(None) => bail!("the watch ended before revision {target}"),
            Ok(Some(e)) => e.map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        match event.kind.as_str() {
            "ERROR" => bail!("{}", history_gone(&event.object)),
            "BOOKMARK" => continue,
            _ => {}
        }
        let revision = event
            .object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        out.push(Revision {
            revision,
            event: event.kind,
            object: event.object,
        });
    }
    Ok(out)
}

/// The message for a watch error: usually `410 Gone`, the history was compacted.
fn history_gone(status: &Value) -> String {
    let message = status["message"].as_str().unwrap_or("the watch failed");
    if status["code"] == 410 {
        format!("the store no longer holds this object's early revisions (it was compacted): {message}")
    } else {
        message.to_string()
    }
}

/// Who wrote which revision, from the audit logs in the data dir (also those of each API
/// server of `kulisse up --masters 3`, in `apiserver-N/`).
fn audit_records(dir: &Path, info: &ResourceInfo, ns: Option<&str>, name: &str) -> HashMap<i64, WriteRecord> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    let mut out = HashMap::new();
    for d in dirs {
        for file in ["audit.log.1", "audit.log"] {
            if let Ok(text) = std::fs::read_to_string(d.join(file)) {
                for r in audit::records_for(&text, info.plural, ns, name) {
                    out.insert(r.revision, r);
                }
            }
        }
    }
    out
}

/// The revisions, each with its writer and its diff against the one before.
fn render(info: &ResourceInfo, name: &str, revisions: &[Revision], writers: &HashMap<i64, WriteRecord>) -> String {
    let mut out = format!(
        "{}: {} revisions in the store's history\n",
        object_ref(info, name),
        revisions.len()
    );
    let mut previous: Option<String> = None;
    for r in revisions {
        let (who, verb, time, trace) = match writers.get(&r.revision) {
            Some(w) => (w.user.as_str(), w.verb.as_str(), w.time.as_str(), w.trace_id.as_deref()),
            None => ("?", "", "", None),
        };
        let time = if time.is_empty() {
            "?"
        } else {
            time.get(..19).unwrap_or(time)
        };
        out.push_str(&format!("\nrevision {}  {time}  {who}", r.revision));
        if !verb.is_empty() {
            out.push_str(&format!(" ({verb})"));
        }
        if let Some(t) = trace {
            out.push_str(&format!("  trace {t}"));
        }
        out.push('\n');
        let text = output::yaml(&comparable(&r.object));
        match (&previous, r.event.as_str()) {
            (_, "DELETED") => out.push_str("  deleted\n"),
            (None, _) => out.push_str("  created\n"),
            (Some(before), _) => out.push_str(&diff(before, &text)),
        }
        previous = Some(text);
    }
    out
}

/// The object without what changes on every write.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

/// A unified diff with one line of context, indented under its revision.
fn diff(before: &str, after: &str) -> String {
    let d = similar::TextDiff::from_lines(before, after);
    let mut out = String::new();
    for hunk in d.unified_diff().context_radius(1).iter_hunks() {
        for line in hunk.to_string().lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() {
        out.push_str("  (no change but bookkeeping)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_shows_its_writer_and_only_what_changed() {
        let info = kulisse_core::objects::by_gvk("apps/v1", "Deployment").expect("Deployment");
        let v = |rv: &str, replicas: i64| serde_json::json!({"metadata": {"name": "web", "resourceVersion": rv}, "spec": {"replicas": replicas, "paused": false}});
        let revisions = vec![
            Revision {
                revision: 5,
                event: "ADDED".into(),
                object: v("5", 1),
            },
            Revision {
                revision: 9,
                event: "MODIFIED".into(),
                object: v("9", 3),
            },
        ];
        let writers = HashMap::from([(
            9,
            WriteRecord {
                revision: 9,
                user: "kubernetes-admin".into(),
                verb: "patch".into(),
                time: "2026-12-05T18:00:00.123456Z".into(),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            },
        )]);
        let text = render(info, "web", &revisions, &writers);
        assert!(text.starts_with("deployment.apps/web: 2 revisions"), "{text}");
        assert!(text.contains("revision 5  ?  ?\n  created\n"), "{text}");
        assert!(
            text.contains(
                "revision 9  2026-12-05T18:00:00  kubernetes-admin (patch)  trace 4bf92f3577b34da6a3ce929d0e0e4736"
            ),
            "{text}"
        );
        assert!(
            text.contains("-  replicas: 1\n") && text.contains("+  replicas: 3\n"),
            "{text}"
        );
        assert!(!text.contains("resourceVersion"), "{text}");
    }
}
