//! `kulisse get KIND [NAME...]` (mirrors `kubectl get`).
//!
//! The columns come from the API server: the CLI asks for a `Table` and prints it, as
//! kubectl does, so both show the same thing. `-o json|yaml` prints the stored objects
//! themselves (every field, including ones kulisse does not model), `-o name` prints
//! `kind.group/name`.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use futures::StreamExt;
use kulisse_core::client::ListParams;
use serde_json::{Value, json};

use super::{client, namespace, object_ref, resource};
use crate::{GlobalArgs, output};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// The kind: pods (po), deployments (deploy), replicasets (rs), services (svc),
    /// endpoints (ep), nodes (no), namespaces (ns), events (ev), configmaps (cm), leases.
    pub kind: String,
    /// Names of objects to show (default: all).
    pub names: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
    /// Label selector, e.g. `app=web,tier!=db`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Field selector, e.g. `spec.nodeName=node-1`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Print rows without the header line.
    #[arg(long)]
    pub no_headers: bool,
    /// After listing, watch for changes and print each as a new row (or object).
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Keep metadata.managedFields in -o json|yaml (hidden by default, as in kubectl).
    #[arg(long)]
    pub show_managed_fields: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Wide,
    Yaml,
    Json,
    Name,
}

pub async fn run(global: &GlobalArgs, args: GetArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.kind.as_str(), "proxyrules" | "proxyrule") {
        let client = client(global)?;
        print!(
            "{}",
            proxy_rules(&client, args.names.first().map(String::as_str)).await?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let info = resource(&args.kind)?;
    let client = client(global)?;
    let ns_name = namespace(global, &client);
    let ns = if global.all_namespaces && args.names.is_empty() {
        None
    } else {
        Some(ns_name.as_str())
    };
    let params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..Default::default()
    };

    match args.output {
        None | Some(Format::Wide) => {
            let mut table: Option<Value> = None;
            if args.names.is_empty() {
                table = Some(client.table(info, ns, None, &params).await?);
            } else {
                for name in &args.names {
                    let t = client.table(info, ns, Some(name), &params).await?;
                    match &mut table {
                        None => table = Some(t),
                        Some(acc) => {
                            let rows = t.get("rows").and_then(Value::as_array).cloned().unwrap_or_default();
                            if let Some(all) = acc.get_mut("rows").and_then(Value::as_array_mut) {
                                all.extend(rows);
                            }
                        }
                    }
                }
            }
            let table = table.unwrap_or_else(|| json!({}));
            let empty = table.get("rows").and_then(Value::as_array).is_none_or(Vec::is_empty);
            let namespace_column = ns.is_none() && info.namespaced;
            let wide = args.output == Some(Format::Wide);
            if empty {
                match ns {
                    Some(ns) if info.namespaced => eprintln!("No resources found in {ns} namespace."),
                    _ => eprintln!("No resources found"),
                }
            } else {
                println!(
                    "{}",
                    output::render_table(&table, wide, namespace_column, args.no_headers)
                );
            }
            if args.watch {
                watch_rows(&client, info, ns, &args, &params, &table, wide, namespace_column).await?;
            }
        }
        Some(format) => {
            let objects: Vec<Value> = if args.names.is_empty() {
                let list = client.list(info, ns, &params).await?;
                list.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
            } else {
                let mut out = Vec::new();
                for name in &args.names {
                    out.push(client.get(info, ns, name).await?);
                }
                out
            };
            let objects: Vec<Value> = if args.show_managed_fields {
                objects
            } else {
                objects
                    .into_iter()
                    .map(|mut o| {
                        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove("managedFields");
                        }
                        o
                    })
                    .collect()
            };
            let single = args.names.len() == 1;
            let doc = if single {
                objects.into_iter().next().unwrap_or(Value::Null)
            } else {
                let items: Vec<Value> = objects
                    .into_iter()
                    .map(|mut o| {
                        // Items of a mixed List carry their own kind, as kubectl prints them.
                        if o.get("kind").is_none() {
                            o["kind"] = json!(info.kind);
                            o["apiVersion"] = json!(info.api_version());
                        }
                        o
                    })
                    .collect();
                json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
            };
            match format {
                Format::Json => println!("{}", output::json(&doc)),
                Format::Yaml => print!("{}", output::yaml(&doc)),
                Format::Name => {
                    let items = if single {
                        vec![doc]
                    } else {
                        doc.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
                    };
                    for o in items {
                        println!(
                            "{}",
                            object_ref(info, o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))
                        );
                    }
                }
                Format::Wide => unreachable!("handled above"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `get -w`: after the table, one row per change, as kubectl prints them.
#[allow(clippy::too_many_arguments)]
async fn watch_rows(
    client: &kulisse_core::client::Client,
    info: &'static kulisse_core::objects::ResourceInfo,
    ns: Option<&str>,
    args: &GetArgs,
    params: &ListParams,
    table: &Value,
    wide: bool,
    namespace_column: bool,
) -> anyhow::Result<()> {
    let rv = table
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut params = params.clone();
    if args.names.len() == 1 {
        params.field_selector = Some(format!("metadata.name={}", args.names[0]));
    }
    let mut events = client.watch(info, ns, &params, rv.as_deref()).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        match ev.kind.as_str() {
            "ERROR" => anyhow::bail!(
                "the watch ended: {}",
                ev.object.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            "BOOKMARK" => continue,
            _ => {
                let row = kulisse_core::printers::table(info, std::slice::from_ref(&ev.object), "");
                println!("{}", output::render_table(&row, wide, namespace_column, true));
            }
        }
    }
    Ok(())
}

/// `kulisse get proxyrules [NODE]`: kube-proxy's forwarding rules, as each node's proxy
/// publishes them (ConfigMaps `kube-system/kube-proxy-rules-<node>`). Real kube-proxy
/// writes iptables, IPVS or nftables rules instead; `iptables-save` would show them there.
pub async fn proxy_rules(client: &kulisse_core::client::Client, node: Option<&str>) -> anyhow::Result<String> {
    let info = kulisse_core::objects::by_gvk("v1", "ConfigMap").expect("built-in kind");
    let params = ListParams {
        label_selector: Some("k8s-app=kube-proxy".into()),
        ..Default::default()
    };
    let list = client.list(info, Some("kube-system"), &params).await?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(vec!["NODE", "SERVICE PORT", "FRONTEND", "BACKENDS"]);
    let mut rows = 0;
    for cm in list.get("items").and_then(Value::as_array).into_iter().flatten() {
        let cm_node = cm
            .pointer("/metadata/annotations/kulisse.dev~1node")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_some_and(|n| n != cm_node) {
            continue;
        }
        let mut data: Vec<(String, String)> = cm
            .get("data")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        data.sort();
        for (key, rule) in data {
            let (front, back) = rule.split_once(" -> ").unwrap_or((rule.as_str(), ""));
            table.add_row(vec![
                cm_node.to_string(),
                key,
                front.to_string(),
                if back.is_empty() {
                    "<none>".into()
                } else {
                    back.replace(',', ", ")
                },
            ]);
            rows += 1;
        }
    }
    if rows == 0 {
        return Ok("No proxy rules found (is a kube-proxy running? `kulisse up` starts one per node)\n".into());
    }
    for col in table.column_iter_mut() {
        col.set_padding((0, 3));
    }
    let text = table.to_string();
    Ok(text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n")
}
