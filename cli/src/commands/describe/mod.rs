//! `kulisse describe KIND NAME` (mirrors `kubectl describe`).
//!
//! A human-readable page about one object: its metadata, the fields that matter for its
//! kind, and at the bottom the **events** the cluster's components recorded about it
//! (found with `fieldSelector=involvedObject.name=...,involvedObject.namespace=...`, as
//! kubectl does). Events are where the scheduler says why a pod stays Pending, or the
//! kubelet why a container keeps restarting.
//!
//! As in kubectl's `pkg/describe`, each kind has its own describer (`PodDescriber`,
//! `NodeDescriber`, ...), chosen by kind ([`describer_for`], kubectl's `DescriberFor`), and
//! a generic one for every other kind. This file holds the dispatch and the sections every
//! page shares: the metadata on top (name, namespace, labels, annotations, creation time),
//! the events at the bottom, and the container and condition lists that several kinds show.
//!
//! | file | describes | kubectl |
//! |---|---|---|
//! | `workload.rs` | Deployment, ReplicaSet | `DeploymentDescriber`, `ReplicaSetDescriber` |
//! | `pod.rs` | Pod | `PodDescriber` |
//! | `service.rs` | Service | `ServiceDescriber` |
//! | `node.rs` | Node | `NodeDescriber` |
//! | `secret.rs` | Secret | `SecretDescriber` |
//! | `generic.rs` | every other kind: its `spec` and `data` as YAML | `genericDescriber` |

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::{self, ResourceInfo};
use kulisse_core::printers;
use serde_json::Value;

use super::{client, namespace};
use crate::GlobalArgs;
use crate::builder;

mod generic;
mod node;
mod pod;
mod secret;
mod service;
mod workload;

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// What to describe: `TYPE [NAME...]`, `TYPE/NAME...` or `TYPE,TYPE...` (no name: every
    /// object of the kind in the namespace).
    #[arg(required = true)]
    pub args: Vec<String>,
    /// Label selector, e.g. `app=web`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: DescribeArgs) -> anyhow::Result<ExitCode> {
    let sel = builder::parse(&args.args)?;
    sel.check_selector(args.selector.as_deref(), false)?;
    let client = client(global)?;
    let ns = namespace(global, &client);
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let (found, errors) = builder::fetch(&client, &sel, &ns, global.all_namespaces, &params).await;
    let mut first = true;
    for f in &found {
        for obj in &f.objects {
            if !first {
                println!();
            }
            first = false;
            let events = events_of(&client, f.info, obj).await.unwrap_or_default();
            print!("{}", describe(f.info, obj, &events));
        }
    }
    if first && errors.is_empty() {
        match builder::scope(sel.requests[0].info, &ns, global.all_namespaces, false) {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        }
    }
    Ok(super::finish(&errors))
}

async fn events_of(client: &Client, info: &ResourceInfo, obj: &Value) -> anyhow::Result<Vec<Value>> {
    let events = objects::by_gvk("v1", "Event").ok_or_else(|| anyhow::anyhow!("Event kind missing"))?;
    let name = objects::name(obj).unwrap_or("");
    let mut selector = format!("involvedObject.name={name},involvedObject.kind={}", info.kind);
    let ns = objects::namespace(obj);
    if let Some(ns) = ns {
        selector.push_str(&format!(",involvedObject.namespace={ns}"));
    }
    if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let list = client
        .list(
            events,
            if info.namespaced { ns } else { None },
            &ListParams {
                field_selector: Some(selector),
                ..Default::default()
            },
        )
        .await?;
    let mut items = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    // kubectl's SortableEvents: oldest `lastTimestamp` first (an event without one, as the
    // newer events API writes them, first of all); equal times keep the list's order, which
    // is the order of the events' names, and so of their times to the nanosecond.
    items.sort_by(|a, b| s(a, "/lastTimestamp").cmp(s(b, "/lastTimestamp")));
    Ok(items)
}

/// The string at JSON pointer `p`, or `""`.
fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The text, or `<none>` when it is empty.
fn or_none(text: &str) -> String {
    if text.is_empty() { "<none>".into() } else { text.into() }
}

/// A map (labels, annotations) as `key=value` lines; `<none>` when empty.
fn map_lines(v: Option<&Value>) -> Vec<String> {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
                )
            })
            .collect(),
        _ => vec!["<none>".into()],
    }
}

/// `Label:` padded to kubectl's column, then the first line; further lines under it.
fn field(out: &mut String, label: &str, lines: &[String]) {
    let pad = 20usize.max(label.len() + 2);
    for (i, line) in lines.iter().enumerate() {
        let l = if i == 0 { format!("{label}:") } else { String::new() };
        let _ = writeln!(out, "{l:<pad$}{line}");
    }
}

/// The text of `kulisse describe` for one object.
pub fn describe(info: &ResourceInfo, obj: &Value, events: &[Value]) -> String {
    let mut out = String::new();
    metadata(&mut out, info, obj);
    describer_for(info.kind)(&mut out, obj);
    events_section(&mut out, events);
    out
}

/// What one describer does: write the sections of its kind, between the metadata and the
/// events.
type Describer = fn(&mut String, &Value);

/// The describer of a kind (kubectl's `DescriberFor`); for a kind without one, the generic
/// describer (kubectl's `GenericDescriberFor`).
fn describer_for(kind: &str) -> Describer {
    match kind {
        "Deployment" => workload::deployment,
        "ReplicaSet" => workload::replica_set,
        "Pod" => pod::describe,
        "Service" => service::describe,
        "Node" => node::describe,
        "Secret" => secret::describe,
        _ => generic::describe,
    }
}

/// The top of every page: name, namespace, labels, annotations (without kubectl's
/// last-applied-configuration) and creation time.
fn metadata(out: &mut String, info: &ResourceInfo, obj: &Value) {
    field(out, "Name", &[s(obj, "/metadata/name").into()]);
    if info.namespaced {
        field(out, "Namespace", &[s(obj, "/metadata/namespace").into()]);
    }
    field(out, "Labels", &map_lines(obj.pointer("/metadata/labels")));
    let annotations: Option<Value> = obj.pointer("/metadata/annotations").cloned().map(|mut a| {
        if let Some(m) = a.as_object_mut() {
            m.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        a
    });
    field(out, "Annotations", &map_lines(annotations.as_ref()));
    field(
        out,
        "CreationTimestamp",
        &[s(obj, "/metadata/creationTimestamp").into()],
    );
}

/// The bottom of every page: the events about the object (kubectl's `DescribeEvents`).
fn events_section(out: &mut String, events: &[Value]) {
    if events.is_empty() {
        field(out, "Events", &["<none>".into()]);
        return;
    }
    out.push_str("Events:\n");
    let now = chrono::Utc::now();
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec!["Type", "Reason", "Age", "From", "Message"]);
    for e in events {
        let last = [
            s(e, "/lastTimestamp"),
            s(e, "/eventTime"),
            s(e, "/metadata/creationTimestamp"),
        ]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or("");
        let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
        let age = printers::age(last, now);
        let age = if count > 1 { format!("{age} (x{count})") } else { age };
        t.add_row(vec![
            s(e, "/type").to_string(),
            s(e, "/reason").to_string(),
            age,
            s(e, "/source/component").to_string(),
            s(e, "/message").to_string(),
        ]);
    }
    for col in t.column_iter_mut() {
        col.set_padding((0, 2));
    }
    for line in t.to_string().lines() {
        let _ = writeln!(out, "  {}", line.trim_end());
    }
}

/// The containers of a pod (or a pod template), each with its image and ports.
fn containers(out: &mut String, list: Option<&Value>, indent: &str) {
    let _ = writeln!(out, "{indent}Containers:");
    for c in list.and_then(Value::as_array).into_iter().flatten() {
        let _ = writeln!(out, "{indent}  {}:", s(c, "/name"));
        field(out, &format!("{indent}    Image"), &[s(c, "/image").into()]);
        let ports: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.get("containerPort").unwrap_or(&Value::Null),
                    p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                )
            })
            .collect();
        field(
            out,
            &format!("{indent}    Port"),
            &[if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            }],
        );
    }
}

/// The `status.conditions` table (nothing when there are none).
fn conditions(out: &mut String, obj: &Value) {
    let list = obj.pointer("/status/conditions").and_then(Value::as_array);
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return;
    };
    out.push_str("Conditions:\n");
    let _ = writeln!(out, "  {:<28}{:<8}{}", "Type", "Status", "Reason");
    for c in list {
        let _ = writeln!(out, "  {:<28}{:<8}{}", s(c, "/type"), s(c, "/status"), s(c, "/reason"));
    }
}
