//! `kulisse get KIND [NAME...]` (mirrors `kubectl get`).
//!
//! The columns come from the API server: the CLI asks for a `Table` and prints it, as
//! kubectl does, so both show the same thing. `-o json|yaml` prints the stored objects
//! themselves (every field, including ones kulisse does not model), `-o name` prints
//! `kind.group/name`.

use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::ResourceInfo;
use serde_json::{Value, json};

use super::{client, namespace, object_ref};
use crate::builder::{self, Selection};
use crate::format::{self, Format};
use crate::{GlobalArgs, output};

#[derive(Args, Debug)]
pub struct GetArgs {
    /// What to show: `TYPE [NAME...]`, `TYPE/NAME...`, `TYPE,TYPE...` or `all`. Types:
    /// pods (po), deployments (deploy), replicasets (rs), services (svc), endpoints (ep),
    /// nodes (no), namespaces (ns), events (ev), configmaps (cm), leases; and `proxyrules`.
    pub args: Vec<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE, jsonpath-file=FILE,
    /// custom-columns=HEADER:PATH,..., custom-columns-file=FILE.
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
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
    /// Show each object's labels as the last column (LABELS).
    #[arg(long)]
    pub show_labels: bool,
    /// Name objects `kind/name` (on by itself when several kinds are shown).
    #[arg(long)]
    pub show_kind: bool,
    /// Show the object as it was at this store revision (one object: TYPE/NAME), while the
    /// store still holds it (`kulisse history TYPE/NAME` lists the revisions). kulisse only.
    #[arg(long, value_name = "N")]
    pub revision: Option<u64>,
}

/// kubectl's answer to a bare `get`.
const NO_TYPE: &str = "Required resource not specified.\nUse \"kulisse explain <resource>\" for a detailed description of that resource (e.g. kulisse explain pods).\nSee 'kulisse get -h' for help and examples";

pub async fn run(global: &GlobalArgs, args: GetArgs) -> anyhow::Result<ExitCode> {
    if args.args.is_empty() {
        eprintln!(
            "You must specify the type of resource to get. Known kinds: {}.\n",
            kulisse_core::objects::kind_names().join(", ")
        );
        anyhow::bail!(NO_TYPE);
    }
    if matches!(args.args[0].as_str(), "proxyrules" | "proxyrule") {
        let client = client(global)?;
        print!("{}", proxy_rules(&client, args.args.get(1).map(String::as_str)).await?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut sel = builder::parse(&args.args)?;
    let format = Format::parse(args.output.as_deref())?;
    sel.check_selector(args.selector.as_deref(), false)?;
    if args.watch && sel.requests.len() > 1 {
        anyhow::bail!("you may only specify a single resource type");
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
    let mut params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..Default::default()
    };
    if let Some(revision) = args.revision {
        past(&mut sel, &mut params, revision)?;
    }
    let req = Request {
        client: &client,
        sel: &sel,
        ns: &ns,
        global,
        args: &args,
        params: &params,
    };
    let errors = match &format {
        Format::Table { wide } => tables(&req, *wide).await?,
        other => objects(&req, other).await?,
    };
    Ok(super::finish(&errors))
}

/// `--revision N`: the one named object becomes a list of the objects with that name as
/// the store held them at revision N (`resourceVersion=N&resourceVersionMatch=Exact`).
fn past(sel: &mut Selection, params: &mut ListParams, revision: u64) -> anyhow::Result<()> {
    if !sel.single_object() {
        anyhow::bail!("--revision needs exactly one object: TYPE/NAME");
    }
    let name = sel.requests[0].names.remove(0);
    let by_name = format!("metadata.name={name}");
    params.field_selector = Some(match params.field_selector.take() {
        Some(f) => format!("{f},{by_name}"),
        None => by_name,
    });
    params.resource_version = Some(revision.to_string());
    params.resource_version_match = Some("Exact".into());
    Ok(())
}

/// What one `get` asks for, handed to the printers.
#[derive(Clone, Copy)]
struct Request<'a> {
    client: &'a Client,
    sel: &'a Selection,
    ns: &'a str,
    global: &'a GlobalArgs,
    args: &'a GetArgs,
    params: &'a ListParams,
}

/// The server's tables, one per kind, with a blank line between them (as kubectl prints
/// `get pods,svc` and `get all`). Returns the errors of names that were not found.
async fn tables(req: &Request<'_>, wide: bool) -> anyhow::Result<Vec<anyhow::Error>> {
    let Request {
        client,
        sel,
        ns,
        global,
        args,
        params,
    } = *req;
    let (mut shown, errors) = fetch_tables(req).await;
    let nonempty: Vec<&ResourceInfo> = shown.iter().filter(|t| !t.empty()).map(|t| t.info).collect();
    // kubectl names objects `kind/name` when several kinds were asked for (`pods,svc`,
    // `all`) or several kinds are printed (`pod/a deploy/b`).
    let show_kind = args.show_kind || sel.multiple_kinds || nonempty.len() > 1;
    let mut printed = 0;
    for t in shown.iter_mut().filter(|t| !t.empty()) {
        decorate(&mut t.table, t.info, show_kind, args.show_labels);
        if printed > 0 && !args.no_headers {
            println!();
        }
        let namespace_column = t.scope.is_none() && t.info.namespaced;
        println!(
            "{}",
            output::render_table(&t.table, wide, namespace_column, args.no_headers)
        );
        printed += 1;
    }
    if let (Some(revision), 0) = (args.revision, printed) {
        anyhow::bail!("no such object at revision {revision} (it did not exist then)");
    }
    if printed == 0 && errors.is_empty() {
        match builder::scope(sel.requests[0].info, ns, global.all_namespaces, sel.has_names()) {
            Some(ns) if sel.requests.iter().any(|r| r.info.namespaced) => {
                eprintln!("No resources found in {ns} namespace.")
            }
            _ => eprintln!("No resources found"),
        }
    }
    if args.watch
        && let Some(t) = shown.first()
    {
        let view = RowView {
            wide,
            namespace_column: t.scope.is_none() && t.info.namespaced,
            show_kind,
            show_labels: args.show_labels,
        };
        let names = &sel.requests[0].names;
        watch_rows(client, t.info, t.scope, names, params, &t.table, &view).await?;
    }
    Ok(errors)
}

/// One kind's table as the server printed it.
struct Shown<'a> {
    info: &'static ResourceInfo,
    scope: Option<&'a str>,
    table: Value,
}

impl Shown<'_> {
    fn empty(&self) -> bool {
        self.table["rows"].as_array().is_none_or(Vec::is_empty)
    }
}

/// Ask the server for a table per kind (one per name when names were given).
async fn fetch_tables<'a>(req: &Request<'a>) -> (Vec<Shown<'a>>, Vec<anyhow::Error>) {
    let mut shown = Vec::new();
    let mut errors = Vec::new();
    for r in &req.sel.requests {
        let scope = builder::scope(r.info, req.ns, req.global.all_namespaces, !r.names.is_empty());
        let mut table = json!({"rows": []});
        let names: Vec<Option<&str>> = if r.names.is_empty() {
            vec![None]
        } else {
            r.names.iter().map(|n| Some(n.as_str())).collect()
        };
        for name in names {
            match req.client.table(r.info, scope, name, req.params).await {
                Ok(t) => merge_rows(&mut table, t),
                Err(e) => errors.push(anyhow::Error::new(e)),
            }
        }
        shown.push(Shown {
            info: r.info,
            scope,
            table,
        });
    }
    (shown, errors)
}

/// Add the rows of `more` (a table of the same kind) to `table`, keeping its columns.
fn merge_rows(table: &mut Value, more: Value) {
    let rows = builder::items(&json!({"items": more.get("rows").cloned().unwrap_or(json!([]))}));
    if table.get("columnDefinitions").is_none() {
        *table = more;
        return;
    }
    if let Some(all) = table.get_mut("rows").and_then(Value::as_array_mut) {
        all.extend(rows);
    }
}

/// kubectl's own additions to the server's table: `kind/name` in the first column when
/// several kinds are shown, and a LABELS column for `--show-labels`.
fn decorate(table: &mut Value, info: &ResourceInfo, show_kind: bool, show_labels: bool) {
    if show_labels && let Some(defs) = table.get_mut("columnDefinitions").and_then(Value::as_array_mut) {
        defs.push(json!({"name": "Labels", "type": "string", "priority": 0}));
    }
    let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) else {
        return;
    };
    for row in rows {
        let labels = labels_text(row.get("object").unwrap_or(&Value::Null));
        let Some(cells) = row.get_mut("cells").and_then(Value::as_array_mut) else {
            continue;
        };
        if show_kind && let Some(first) = cells.first_mut() {
            *first = json!(object_ref(info, first.as_str().unwrap_or("")));
        }
        if show_labels {
            cells.push(json!(labels));
        }
    }
}

/// `app=web,tier=front` (sorted by key), or `<none>`.
pub fn labels_text(obj: &Value) -> String {
    let pairs: Vec<String> = kulisse_core::objects::labels(obj)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// `-o json|yaml|name|jsonpath|custom-columns`: the objects themselves.
async fn objects(req: &Request<'_>, format: &Format) -> anyhow::Result<Vec<anyhow::Error>> {
    let (sel, args) = (req.sel, req.args);
    let (found, errors) = builder::fetch(req.client, sel, req.ns, req.global.all_namespaces, req.params).await;
    let mut objects: Vec<(&'static ResourceInfo, Value)> = Vec::new();
    for f in found {
        objects.extend(f.objects.into_iter().map(|o| (f.info, o)));
    }
    if !args.show_managed_fields {
        for (_, o) in &mut objects {
            output::hide_managed_fields(o);
        }
    }
    let single = (sel.single_object() || args.revision.is_some()) && objects.len() == 1;
    if let (Some(revision), true) = (args.revision, objects.is_empty()) {
        anyhow::bail!("no such object at revision {revision} (it did not exist then)");
    }
    let plain: Vec<Value> = objects.iter().map(|(_, o)| o.clone()).collect();
    let doc = if single {
        plain[0].clone()
    } else {
        output::list(plain.clone())
    };
    if objects.is_empty() && errors.is_empty() && !single && matches!(format, Format::Name | Format::CustomColumns(_)) {
        eprintln!("No resources found");
    }
    if let Some(text) = output::document(format, &doc) {
        print!("{text}");
        return Ok(errors);
    }
    match format {
        Format::Name => {
            for (info, o) in &objects {
                println!(
                    "{}",
                    object_ref(info, o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or(""))
                );
            }
        }
        Format::CustomColumns(cols) if !objects.is_empty() => {
            print!("{}", format::custom_column_rows(cols, &plain, args.no_headers))
        }
        _ => {}
    }
    Ok(errors)
}

/// How watched rows are shown.
struct RowView {
    wide: bool,
    namespace_column: bool,
    show_kind: bool,
    show_labels: bool,
}

/// `get -w`: after the table, one row per change, as kubectl prints them.
async fn watch_rows(
    client: &Client,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    names: &[String],
    params: &ListParams,
    table: &Value,
    view: &RowView,
) -> anyhow::Result<()> {
    let rv = table
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut params = params.clone();
    if names.len() == 1 {
        params.field_selector = Some(format!("metadata.name={}", names[0]));
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
                let mut row = kulisse_core::printers::table(info, std::slice::from_ref(&ev.object), "");
                decorate(&mut row, info, view.show_kind, view.show_labels);
                println!("{}", output::render_table(&row, view.wide, view.namespace_column, true));
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
