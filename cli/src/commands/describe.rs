//! `kulisse describe KIND NAME` (mirrors `kubectl describe`).
//!
//! A human-readable page about one object: its metadata, the fields that matter for its
//! kind, and at the bottom the **events** the cluster's components recorded about it
//! (found with `fieldSelector=involvedObject.name=...,involvedObject.namespace=...`, as
//! kubectl does). Events are where the scheduler says why a pod stays Pending, or the
//! kubelet why a container keeps restarting.

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
    Ok(list.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

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
    field(&mut out, "Name", &[s(obj, "/metadata/name").into()]);
    if info.namespaced {
        field(&mut out, "Namespace", &[s(obj, "/metadata/namespace").into()]);
    }
    field(&mut out, "Labels", &map_lines(obj.pointer("/metadata/labels")));
    let annotations: Option<Value> = obj.pointer("/metadata/annotations").cloned().map(|mut a| {
        if let Some(m) = a.as_object_mut() {
            m.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        a
    });
    field(&mut out, "Annotations", &map_lines(annotations.as_ref()));
    field(
        &mut out,
        "CreationTimestamp",
        &[s(obj, "/metadata/creationTimestamp").into()],
    );
    match info.kind {
        "Deployment" | "ReplicaSet" => {
            field(
                &mut out,
                "Selector",
                &[printers::selector_text(obj.pointer("/spec/selector/matchLabels"))],
            );
            let i = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            if info.kind == "Deployment" {
                let desired = i("/spec/replicas");
                let total = i("/status/replicas");
                let available = i("/status/availableReplicas");
                field(
                    &mut out,
                    "Replicas",
                    &[format!(
                        "{desired} desired | {} updated | {total} total | {available} available | {} unavailable",
                        i("/status/updatedReplicas"),
                        i("/status/unavailableReplicas")
                    )],
                );
                field(&mut out, "StrategyType", &[s(obj, "/spec/strategy/type").into()]);
                if s(obj, "/spec/strategy/type") == "RollingUpdate" {
                    let ru = |k: &str| {
                        obj.pointer(&format!("/spec/strategy/rollingUpdate/{k}"))
                            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                            .unwrap_or_default()
                    };
                    field(
                        &mut out,
                        "RollingUpdateStrategy",
                        &[format!(
                            "{} max unavailable, {} max surge",
                            ru("maxUnavailable"),
                            ru("maxSurge")
                        )],
                    );
                }
            } else {
                field(
                    &mut out,
                    "Replicas",
                    &[format!(
                        "{} current / {} desired",
                        i("/status/replicas"),
                        i("/spec/replicas")
                    )],
                );
            }
            out.push_str("Pod Template:\n");
            field(
                &mut out,
                "  Labels",
                &map_lines(obj.pointer("/spec/template/metadata/labels")),
            );
            containers(&mut out, obj.pointer("/spec/template/spec/containers"), "  ");
        }
        "Pod" => {
            field(
                &mut out,
                "Node",
                &[if s(obj, "/spec/nodeName").is_empty() {
                    "<none>".into()
                } else {
                    s(obj, "/spec/nodeName").into()
                }],
            );
            field(&mut out, "Status", &[printers::pod_status(obj)]);
            field(&mut out, "IP", &[s(obj, "/status/podIP").into()]);
            field(&mut out, "QoS Class", &[s(obj, "/status/qosClass").into()]);
            containers(&mut out, obj.pointer("/spec/containers"), "");
            conditions(&mut out, obj);
        }
        "Service" => {
            field(
                &mut out,
                "Selector",
                &[printers::selector_text(obj.pointer("/spec/selector"))],
            );
            field(&mut out, "Type", &[s(obj, "/spec/type").into()]);
            field(
                &mut out,
                "IP",
                &[if s(obj, "/spec/clusterIP").is_empty() {
                    "<none>".into()
                } else {
                    s(obj, "/spec/clusterIP").into()
                }],
            );
            for p in obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("<unset>");
                field(
                    &mut out,
                    "Port",
                    &[format!(
                        "{name}  {}/{}",
                        p.get("port").unwrap_or(&Value::Null),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    )],
                );
                field(
                    &mut out,
                    "TargetPort",
                    &[format!(
                        "{}/{}",
                        p.get("targetPort")
                            .map(|t| t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string()))
                            .unwrap_or_default(),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    )],
                );
                if let Some(np) = p.get("nodePort") {
                    field(&mut out, "NodePort", &[format!("{name}  {np}/TCP")]);
                }
            }
        }
        "Node" => {
            conditions(&mut out, obj);
            let addrs: Vec<String> = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|a| format!("{}: {}", s(a, "/type"), s(a, "/address")))
                .collect();
            field(&mut out, "Addresses", if addrs.is_empty() { &[] } else { &addrs });
        }
        "Secret" => secret_data(&mut out, obj),
        _ => {
            for key in ["spec", "data"] {
                if let Some(v) = obj.get(key) {
                    let _ = writeln!(out, "{}:", capitalise(key));
                    for line in crate::output::yaml(v).lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
        }
    }
    if events.is_empty() {
        field(&mut out, "Events", &["<none>".into()]);
    } else {
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
    out
}

/// kubectl's `describe secret`: the type, then each key's size, never its value.
fn secret_data(out: &mut String, obj: &Value) {
    let _ = writeln!(out, "\nType:  {}\n\nData\n====", s(obj, "/type"));
    for (key, size) in kulisse_core::objects::secret::data_sizes(obj) {
        let _ = writeln!(out, "{key}:  {size} bytes");
    }
}

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

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
