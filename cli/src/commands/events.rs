//! `kulisse events [--for TYPE/NAME] [--types Warning] [-A]` (mirrors `kubectl events`).
//!
//! Events are the cluster's diary: the scheduler writes `Scheduled` or `FailedScheduling`,
//! the kubelet `Pulled`, `Started`, `BackOff`, the controllers `ScalingReplicaSet` and
//! `SuccessfulCreate`. `kubectl events` lists them oldest first (the newest is next to the
//! prompt), one line each: when it last happened (`5s (x3 over 2m)` when repeated), its
//! type, reason, the object it is about and the message. `--for` narrows to one object (a
//! field selector on `involvedObject`), `--types` to Normal or Warning.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use kulisse_core::client::ListParams;
use kulisse_core::objects;
use kulisse_core::printers::age;
use serde_json::Value;

use super::{client, namespace};
use crate::{GlobalArgs, builder, format};

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only the events about this object, e.g. `pod/web-1` or `deployment/web`.
    #[arg(long = "for", value_name = "TYPE/NAME")]
    pub for_object: Option<String>,
    /// Only these types: Normal, Warning (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Print rows without the header line.
    #[arg(long)]
    pub no_headers: bool,
}

pub async fn run(global: &GlobalArgs, args: EventsArgs) -> anyhow::Result<ExitCode> {
    for t in &args.types {
        if !t.eq_ignore_ascii_case("Normal") && !t.eq_ignore_ascii_case("Warning") {
            bail!("valid --types are Normal or Warning");
        }
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
    let mut params = ListParams::default();
    if let Some(target) = &args.for_object {
        let (info, name) = builder::one(std::slice::from_ref(target))?;
        params.field_selector = Some(format!("involvedObject.kind={},involvedObject.name={name}", info.kind));
    }
    let info = objects::by_gvk("v1", "Event").expect("Event is a built-in kind");
    let scope = (!global.all_namespaces).then_some(ns.as_str());
    let mut events: Vec<Value> = builder::items(&client.list(info, scope, &params).await?)
        .into_iter()
        .filter(|e| {
            let t = e.get("type").and_then(Value::as_str).unwrap_or("");
            args.types.is_empty() || args.types.iter().any(|w| w.eq_ignore_ascii_case(t))
        })
        .collect();
    if events.is_empty() {
        match scope {
            Some(ns) => eprintln!("No events found in {ns} namespace."),
            None => eprintln!("No events found."),
        }
        return Ok(ExitCode::SUCCESS);
    }
    events.sort_by_key(|e| last_time(e).to_string());
    print!(
        "{}",
        format::columns_text(&rows(&events, scope.is_none(), args.no_headers))
    );
    Ok(ExitCode::SUCCESS)
}

fn rows(events: &[Value], all_namespaces: bool, no_headers: bool) -> Vec<Vec<String>> {
    let s = |e: &Value, p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let mut rows = Vec::new();
    if !no_headers {
        let mut header: Vec<String> = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
            .map(String::from)
            .to_vec();
        if all_namespaces {
            header.insert(0, "NAMESPACE".into());
        }
        rows.push(header);
    }
    for e in events {
        let mut row = vec![
            interval(e),
            s(e, "/type"),
            s(e, "/reason"),
            format!("{}/{}", s(e, "/involvedObject/kind"), s(e, "/involvedObject/name")),
            s(e, "/message").trim_end().to_string(),
        ];
        if all_namespaces {
            row.insert(0, s(e, "/metadata/namespace"));
        }
        rows.push(row);
    }
    rows
}

/// When an event last happened: `series.lastObservedTime`, `lastTimestamp`, `eventTime`.
fn last_time(e: &Value) -> &str {
    [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| e.pointer(p).and_then(Value::as_str))
    .find(|t| !t.is_empty())
    .unwrap_or("")
}

/// `12s`, or `12s (x3 over 2m)` for an event that happened several times.
fn interval(e: &Value) -> String {
    let now = chrono::Utc::now();
    let first = ["/eventTime", "/firstTimestamp", "/metadata/creationTimestamp"]
        .iter()
        .filter_map(|p| e.pointer(p).and_then(Value::as_str))
        .find(|t| !t.is_empty())
        .unwrap_or("");
    let count = e
        .pointer("/series/count")
        .or_else(|| e.get("count"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if count > 1 {
        format!("{} (x{count} over {})", age(last_time(e), now), age(first, now))
    } else {
        age(first, now)
    }
}
