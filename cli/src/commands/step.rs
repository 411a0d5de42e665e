//! `kulisse step` and `kulisse break`: drive step mode (kulisse only; kubectl has no such
//! command, and upstream Kubernetes no such mode).
//!
//! A cluster started with `kulisse up --step` holds every write a component is about to
//! make at the API server's gate ([`kulisse_core::apiserver::step`]) until you let it
//! through. These commands only talk to that gate (`/apis/kulisse.dev/v1/step`); the
//! pausing itself happens in the API server, so writes from any client, the real kubectl
//! included, wait the same way.
//!
//! - `kulisse step` shows what waits: the component, the object, the diff against what the
//!   store holds, and the trace so far (drawn as `kulisse trace` draws it).
//! - `kulisse step show N` shows the N-th waiting write (as `kulisse step` numbers them,
//!   oldest first) the same way. A diff shows only what changes; to see the **whole object**
//!   a write proposes, as `kubectl get -o yaml` prints a stored one, add `-o yaml` (or `-o
//!   json`, `-o jsonpath=...`): `kulisse step show N -o yaml` prints that one object,
//!   `kulisse step -o yaml` every waiting write's object as one `List`, oldest first, the
//!   shapes of `kubectl get pod NAME -o yaml` and `kubectl get pods -o yaml`. The object is
//!   the one the store will hold if the write is let through, with what the API server
//!   added (defaults, `uid`, the `kulisse.dev/traceparent` annotation); only its
//!   `resourceVersion` is still the revision it replaces (none for a create), since the
//!   store numbers a write when it makes it. `managedFields` are hidden, as kubectl hides them.
//! - `kulisse step next` lets exactly one write through (the oldest; it waits up to 20 s for
//!   one to arrive) and prints how it went once it is written.
//! - `kulisse step continue` lets everything through and runs; `kulisse step pause` stops
//!   again.
//! - `kulisse break COMPONENT [KIND/NAME-GLOB]` holds only matching writes while running;
//!   `--list` shows the breakpoints, `--clear` removes them all (and, while running, lets
//!   through the writes they held).

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use http::Method;
use kulisse_core::client::Client;
use serde_json::{Value, json};

use super::client;
use crate::format::Format;
use crate::{GlobalArgs, builder, output};

const STEP_PATH: &str = kulisse_core::apiserver::step::STEP_PATH;

/// How many diff lines `kulisse step` prints for one write.
const DIFF_LINES: usize = 40;

#[derive(Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  kulisse up --step            start a cluster that holds every write
  kulisse step                 what waits, its diff and its trace so far
  kulisse step show 2          the second waiting write in full
  kulisse step show 1 -o yaml  the whole object the oldest waiting write proposes
  kulisse step -o yaml         every waiting write's object, as one List
  kulisse step next            let exactly one write through
  kulisse step continue        let everything run
  kulisse step pause           hold every write again"
)]
pub struct StepArgs {
    #[command(subcommand)]
    pub action: Option<StepAction>,
    /// Print the objects the waiting writes propose, oldest first, as one List: json, yaml
    /// or jsonpath=TEMPLATE (as kubectl get -o prints objects).
    #[arg(short = 'o', long = "output")]
    pub output: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum StepAction {
    /// Show the N-th waiting write in full (numbered as `kulisse step` lists them), or with
    /// -o the whole object it proposes.
    Show {
        /// Which waiting write: 1 is the oldest.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        n: u32,
        /// Print the object the write proposes: json, yaml or jsonpath=TEMPLATE.
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
    },
    /// Let exactly one waiting write through (the oldest) and print how it went.
    Next,
    /// Let every waiting write through and run (breakpoints still hold).
    Continue,
    /// Hold every write again.
    Pause,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Components: apiserver, controller-manager, scheduler, kubelet, kube-proxy.

Examples:
  kulisse break scheduler              hold every bind (and the scheduler's other writes)
  kulisse break kubelet pod/web-*      hold the kubelets' writes of pods named web-*
  kulisse break --list
  kulisse break --clear"
)]
pub struct BreakArgs {
    /// The component whose writes to hold.
    #[arg(required_unless_present_any = ["list", "clear"])]
    pub component: Option<String>,
    /// Only writes of this object: KIND/NAME, where NAME may hold `*` (pod/web-*), or KIND.
    pub object: Option<String>,
    /// List the breakpoints.
    #[arg(long, conflicts_with_all = ["component", "clear"])]
    pub list: bool,
    /// Remove every breakpoint.
    #[arg(long, conflicts_with = "component")]
    pub clear: bool,
}

pub async fn step(global: &GlobalArgs, args: StepArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    match args.action {
        None => match args.output.as_deref() {
            None => overview(&client).await?,
            Some(o) => print_objects(&client, None, o).await?,
        },
        Some(StepAction::Show { n, output: None }) => show_one(&client, n as usize).await?,
        Some(StepAction::Show { n, output: Some(o) }) => print_objects(&client, Some(n as usize), &o).await?,
        Some(StepAction::Next) => {
            let answer = act(&client, json!({"action": "next"})).await?;
            println!(
                "let through: {}: {}",
                describe(&answer["released"]),
                answer["outcome"].as_str().unwrap_or("?")
            );
        }
        Some(StepAction::Continue) => {
            let answer = act(&client, json!({"action": "continue"})).await?;
            println!("running; let {} waiting writes through", answer["released"]);
        }
        Some(StepAction::Pause) => {
            act(&client, json!({"action": "pause"})).await?;
            println!("paused: every write now waits (kulisse step shows them)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn breakpoint(global: &GlobalArgs, args: BreakArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    if args.clear {
        let answer = act(&client, json!({"action": "clear"})).await?;
        match answer["released"].as_u64() {
            Some(n) if n > 0 => println!(
                "cleared {} breakpoints; let {n} waiting writes through",
                answer["cleared"]
            ),
            _ => println!("cleared {} breakpoints", answer["cleared"]),
        }
    } else if args.list {
        let (status, _) = client.json(Method::GET, STEP_PATH, None, None).await?;
        print!("{}", breakpoint_table(&status));
    } else {
        let component = args.component.unwrap_or_default();
        let object = match args.object.as_deref() {
            None => None,
            Some(o) => {
                let (kind, name) = o.split_once('/').unwrap_or((o, ""));
                let info = builder::resource(kind)?;
                Some(if name.is_empty() {
                    info.kind.to_string()
                } else {
                    format!("{}/{name}", info.kind)
                })
            }
        };
        let answer = act(
            &client,
            json!({"action": "break", "component": component, "object": object}),
        )
        .await?;
        println!("breakpoint set: {}", breakpoint_text(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

async fn act(client: &Client, body: Value) -> anyhow::Result<Value> {
    Ok(client
        .json(Method::POST, STEP_PATH, Some("application/json"), Some(&body))
        .await?
        .0)
}

/// The gate's state: `paused`, the breakpoints and the waiting writes, oldest first.
async fn gate_status(client: &Client) -> anyhow::Result<(Value, Vec<Value>)> {
    let (status, _) = client.json(Method::GET, STEP_PATH, None, None).await?;
    let waiting = status["waiting"].as_array().cloned().unwrap_or_default();
    Ok((status, waiting))
}

/// The `n`-th waiting write (1 is the oldest), or an error that says how many wait.
fn nth(waiting: &[Value], n: usize) -> anyhow::Result<&Value> {
    match waiting.get(n.wrapping_sub(1)) {
        Some(w) => Ok(w),
        None if waiting.is_empty() => bail!("nothing waits at the gate"),
        None => bail!(
            "there is no waiting write {n}: {} wait (kulisse step lists them)",
            waiting.len()
        ),
    }
}

/// `-o`: the object the `n`-th waiting write proposes, or (no `n`) every waiting write's,
/// as one `List`.
async fn print_objects(client: &Client, n: Option<usize>, flag: &str) -> anyhow::Result<()> {
    let format = Format::parse(Some(flag))?;
    let proposed = |w: &Value| {
        let mut o = w["proposed"].clone();
        output::hide_managed_fields(&mut o);
        o
    };
    let (_, waiting) = gate_status(client).await?;
    let doc = match n {
        Some(n) => proposed(nth(&waiting, n)?),
        None => output::list(waiting.iter().map(proposed).collect()),
    };
    match output::document(&format, &doc) {
        Some(text) => print!("{text}"),
        None => bail!("kulisse step prints whole objects: -o json, -o yaml or -o jsonpath=TEMPLATE"),
    }
    Ok(())
}

/// `kulisse step show N`: one waiting write in full.
async fn show_one(client: &Client, n: usize) -> anyhow::Result<()> {
    let (_, waiting) = gate_status(client).await?;
    detail(client, n, nth(&waiting, n)?).await;
    Ok(())
}

/// Print the gate's state, the oldest waiting write in full, and the others in a line each.
async fn overview(client: &Client) -> anyhow::Result<()> {
    let (status, waiting) = gate_status(client).await?;
    let mode = if status["paused"] == json!(true) {
        "paused"
    } else {
        "running"
    };
    let points: Vec<String> = status["breakpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(breakpoint_text)
        .collect();
    let points = if points.is_empty() {
        "none".to_string()
    } else {
        points.join(", ")
    };
    println!("{mode}; breakpoints: {points}");
    let Some(first) = waiting.first() else {
        println!("nothing waits");
        return Ok(());
    };
    println!("{} waiting, oldest first:", waiting.len());
    println!();
    detail(client, 1, first).await;
    for (i, w) in waiting.iter().enumerate().skip(1) {
        println!("{}. {}", i + 1, describe(w));
    }
    Ok(())
}

/// Waiting write `n` in full: who writes what, the diff against the store, the trace so far.
async fn detail(client: &Client, n: usize, w: &Value) {
    println!(
        "{n}. {} (waiting {:.0}s)",
        describe(w),
        w["waitingSeconds"].as_f64().unwrap_or(0.0)
    );
    let stored_rv = w
        .pointer("/stored/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map_or("nothing: a create".to_string(), |rv| format!("revision {rv}"));
    println!("   diff against the store (which holds {stored_rv}):");
    for line in diff(&w["stored"], &w["proposed"]) {
        println!("     {line}");
    }
    print_trace(client, w["traceId"].as_str().unwrap_or("")).await;
}

async fn print_trace(client: &Client, trace_id: &str) {
    if trace_id.is_empty() {
        println!("   (this write is not traced)");
        return;
    }
    match super::trace::fetch_spans(client, trace_id, false).await {
        Ok(spans) if !spans.is_empty() => {
            println!("   trace {trace_id} so far:");
            for line in kulisse_traces::render_waterfall(&spans, 100).lines() {
                println!("     {line}");
            }
        }
        _ => println!("   trace {trace_id}: no span of it has ended yet"),
    }
}

/// One waiting (or released) write in words: `scheduler: bind Pod default/web-1`.
fn describe(w: &Value) -> String {
    let s = |k: &str| w[k].as_str().unwrap_or("").to_string();
    let who = match s("instance").as_str() {
        "" => s("component"),
        i => format!("{} {i}", s("component")),
    };
    let ns = match s("namespace").as_str() {
        "" => String::new(),
        n => format!("{n}/"),
    };
    let sub = match s("subresource").as_str() {
        "" | "binding" => String::new(),
        sub => format!(" ({sub})"),
    };
    let node = match (
        s("verb").as_str(),
        w.pointer("/proposed/spec/nodeName").and_then(Value::as_str),
    ) {
        ("bind", Some(n)) => format!(" to {n}"),
        _ => String::new(),
    };
    format!("{who}: {} {} {ns}{}{sub}{node}", s("verb"), s("kind"), s("name"))
}

fn breakpoint_text(b: &Value) -> String {
    match b["object"].as_str().unwrap_or("") {
        "" => b["component"].as_str().unwrap_or("").to_string(),
        o => format!("{} {o}", b["component"].as_str().unwrap_or("")),
    }
}

fn breakpoint_table(status: &Value) -> String {
    let points = status["breakpoints"].as_array().cloned().unwrap_or_default();
    if points.is_empty() {
        return "No breakpoints.\n".to_string();
    }
    let mut rows = vec![vec!["COMPONENT".to_string(), "OBJECT".to_string()]];
    for b in &points {
        let object = b["object"].as_str().filter(|o| !o.is_empty()).unwrap_or("*");
        rows.push(vec![
            b["component"].as_str().unwrap_or("").to_string(),
            object.to_string(),
        ]);
    }
    crate::format::columns_text(&rows)
}

/// The leaves that differ between `old` and `new` (`null` for a create), one line each:
/// `+ path: value` added, `- path: value` removed, `~ path: old -> new` changed. The
/// bookkeeping fields (`managedFields`, `resourceVersion`) are left out.
pub fn diff(old: &Value, new: &Value) -> Vec<String> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten(old, "", &mut a);
    flatten(new, "", &mut b);
    let a: std::collections::BTreeMap<_, _> = a.into_iter().collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().collect();
    let mut out = Vec::new();
    for (path, value) in &b {
        match a.get(path) {
            None => out.push(format!("+ {path}: {value}")),
            Some(before) if before != value => out.push(format!("~ {path}: {before} -> {value}")),
            Some(_) => {}
        }
    }
    for (path, value) in &a {
        if !b.contains_key(path) {
            out.push(format!("- {path}: {value}"));
        }
    }
    if out.is_empty() {
        out.push("(no difference)".to_string());
    } else if out.len() > DIFF_LINES {
        let more = out.len() - DIFF_LINES;
        out.truncate(DIFF_LINES);
        out.push(format!("... and {more} more lines"));
    }
    out
}

fn flatten(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    if matches!(path, "metadata.managedFields" | "metadata.resourceVersion") {
        return;
    }
    match v {
        Value::Null if path.is_empty() => {}
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(child, &p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                flatten(child, &format!("{path}[{i}]"), out);
            }
        }
        leaf => out.push((path.to_string(), leaf.to_string())),
    }
}

/// Refuse `--step` where it cannot work (several API servers, each with its own gate).
pub fn check_up(step: bool, masters: u32) -> anyhow::Result<()> {
    if step && masters != 1 {
        bail!("--step needs one API server (--masters 1): each API server has its own gate");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_added_changed_and_removed_leaves() {
        let old = json!({"metadata": {"name": "p", "resourceVersion": "5"}, "spec": {"a": 1, "b": [1]}});
        let new = json!({"metadata": {"name": "p", "resourceVersion": "6"}, "spec": {"a": 2, "c": "x"}});
        assert_eq!(
            diff(&old, &new),
            vec!["~ spec.a: 1 -> 2", "+ spec.c: \"x\"", "- spec.b[0]: 1"]
        );
        assert_eq!(diff(&Value::Null, &json!({"a": 1})), vec!["+ a: 1"]);
        assert_eq!(diff(&old, &old), vec!["(no difference)"]);
    }
}
