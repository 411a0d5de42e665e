//! `kulisse label TYPE NAME KEY=VAL... KEY-...` (mirrors `kubectl label`), and the shared
//! machinery of `kulisse annotate`.
//!
//! Labels and annotations are both string maps in `metadata`: labels are what selectors
//! match (a Service's `spec.selector`, `get -l`), annotations carry everything else. Both
//! verbs read the objects named (through the resource builder, so `TYPE NAME`,
//! `TYPE/NAME`, `-l` and `--all` work), check that no key would be overwritten unless
//! `--overwrite` says so, and send one JSON merge patch per object:
//! `{"metadata":{"labels":{"tier":"front","old":null}}}` (`null` removes a key).

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use http::Method;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::ResourceInfo;
use serde_json::{Map, Value, json};

use super::{client, namespace, object_ref};
use crate::{GlobalArgs, builder};

#[derive(Args, Debug)]
pub struct LabelArgs {
    /// `TYPE NAME...` or `TYPE/NAME...`, then the changes: `KEY=VALUE` sets, `KEY-` removes.
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Replace values of keys that already exist.
    #[arg(long)]
    pub overwrite: bool,
    /// Change every object of the kind(s) whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Change every object of the kind(s) in the namespace.
    #[arg(long)]
    pub all: bool,
}

/// Which map of `metadata` a command changes, and its words.
#[derive(Clone, Copy)]
pub struct MapKind {
    /// `labels` or `annotations`.
    pub field: &'static str,
    /// `label` or `annotation`.
    pub noun: &'static str,
    /// `labeled` or `annotated`.
    pub done: &'static str,
}

pub const LABELS: MapKind = MapKind {
    field: "labels",
    noun: "label",
    done: "labeled",
};

pub async fn run(global: &GlobalArgs, args: LabelArgs) -> anyhow::Result<ExitCode> {
    run_map(global, LABELS, &args).await
}

/// The changes typed: keys to set (with values) and keys to remove.
struct Changes {
    set: Vec<(String, String)>,
    remove: Vec<String>,
}

/// Split arguments into resource words and changes (`k=v`, `k-`), as kubectl does.
fn split_args(args: &[String], kind: MapKind) -> anyhow::Result<(Vec<String>, Changes)> {
    let mut resources = Vec::new();
    let mut changes = Changes {
        set: Vec::new(),
        remove: Vec::new(),
    };
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            if k.is_empty() {
                bail!("invalid {} format: {a}", kind.noun);
            }
            changes.set.push((k.to_string(), v.to_string()));
        } else if let Some(k) = a.strip_suffix('-') {
            changes.remove.push(k.to_string());
        } else {
            resources.push(a.clone());
        }
    }
    if changes.set.is_empty() && changes.remove.is_empty() {
        bail!("at least one {} update is required", kind.noun);
    }
    if let Some((k, _)) = changes.set.iter().find(|(k, _)| changes.remove.contains(k)) {
        if kind.field == "labels" {
            bail!("can not both modify and remove a label in the same command");
        }
        bail!("can not both modify and remove the following annotation(s) in the same command: {k}");
    }
    Ok((resources, changes))
}

/// `label` and `annotate`: find the objects, check, patch, say what happened.
pub async fn run_map(global: &GlobalArgs, kind: MapKind, args: &LabelArgs) -> anyhow::Result<ExitCode> {
    let (resources, changes) = split_args(&args.args, kind)?;
    if resources.is_empty() {
        bail!("one or more resources must be specified as <resource> <name> or <resource>/<name>");
    }
    let sel = builder::parse(&resources)?;
    sel.check_selector(args.selector.as_deref(), args.all)?;
    if !sel.has_names() && args.selector.is_none() && !args.all {
        bail!("resource(s) were provided, but no name was specified");
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let (found, mut errors) = builder::fetch(&client, &sel, &ns, global.all_namespaces, &params).await;
    for f in &found {
        for obj in &f.objects {
            if let Err(e) = change_one(&client, f.info, obj, kind, &changes, args.overwrite).await {
                errors.push(e);
            }
        }
    }
    if found.iter().all(|f| f.objects.is_empty()) && errors.is_empty() {
        eprintln!("No resources found in {ns} namespace.");
    }
    Ok(super::finish(&errors))
}

async fn change_one(
    client: &Client,
    info: &ResourceInfo,
    obj: &Value,
    kind: MapKind,
    changes: &Changes,
    overwrite: bool,
) -> anyhow::Result<()> {
    let current = obj
        .pointer(&format!("/metadata/{}", kind.field))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !overwrite {
        let clashes: Vec<String> = changes
            .set
            .iter()
            .filter_map(|(k, v)| {
                let old = current.get(k)?.as_str().unwrap_or("");
                (old != v).then(|| format!("'{k}' already has a value ({old})"))
            })
            .collect();
        if clashes.len() > 1 && kind.field == "labels" {
            // Several errors: kubectl prints one per line, without `error: `.
            return Err(crate::output::Bare(overwrite_error(kind, &clashes)).into());
        }
        if !clashes.is_empty() {
            bail!(overwrite_error(kind, &clashes));
        }
    }
    let mut patch = Map::new();
    for (k, v) in &changes.set {
        patch.insert(k.clone(), json!(v));
    }
    for k in &changes.remove {
        if current.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        } else if kind.field == "labels" {
            println!("label \"{k}\" not found.");
        }
    }
    let changed = patch
        .iter()
        .any(|(k, v)| current.get(k) != Some(v) && !(v.is_null() && current.get(k).is_none()));
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if changed {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let path = format!(
            "{}?fieldManager=kulisse",
            kulisse_core::client::path(info, ns, Some(name), None)
        );
        let body = json!({"metadata": {kind.field: patch}});
        client
            .json(Method::PATCH, &path, Some("application/merge-patch+json"), Some(&body))
            .await?;
    }
    println!("{} {}", object_ref(info, name), outcome(kind, changed, changes));
    Ok(())
}

/// kubectl's last word: `labeled`, `unlabeled` (only removals), `not labeled` (nothing
/// changed); `annotate` always says `annotated`.
fn outcome(kind: MapKind, changed: bool, changes: &Changes) -> String {
    match (changed, kind.field) {
        (false, "labels") => "not labeled".into(),
        (true, "labels") if changes.set.is_empty() => "unlabeled".into(),
        _ => kind.done.into(),
    }
}

fn overwrite_error(kind: MapKind, clashes: &[String]) -> String {
    if kind.field == "labels" {
        clashes
            .iter()
            .map(|c| format!("{c}, and --overwrite is false"))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        format!(
            "--overwrite is false but found the following declared annotation(s): {}",
            clashes.join("; ")
        )
    }
}
