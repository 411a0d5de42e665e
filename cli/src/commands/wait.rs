//! `kulisse wait --for=... TARGETS` (mirrors `kubectl wait`).
//!
//! Waits, without polling, until each object meets a condition:
//! - `--for=condition=Available` (or `=Ready`, `=Ready=false`): an entry of
//!   `status.conditions` with that `type` has that `status` (default `True`, compared
//!   case-insensitively), and the controller has seen the latest spec
//!   (`status.observedGeneration` is not behind `metadata.generation`);
//! - `--for=delete`: the object is gone;
//! - `--for=jsonpath='{.status.phase}'=Running`: the field has that value (without `=VALUE`:
//!   the field exists). kulisse's wait understands simple paths (`.a.b`, `.a[0].b`), not
//!   filters.
//!
//! For each object it reads the current state once, then *watches* the object (a watch
//! with `fieldSelector=metadata.name=NAME` from the resourceVersion it read), so it wakes up
//! on the change that matters instead of asking again and again. Targets are `TYPE/NAME`,
//! `TYPE NAME...`, or `TYPE -l SELECTOR` / `TYPE --all` (the matching objects at the
//! start). All objects share one `--timeout` (default 30s, `0`: check once, negative: a
//! week); running out prints kubectl's `timed out waiting for the condition on pods/x` and
//! exits 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::ResourceInfo;
use serde_json::Value;
use tokio::time::Instant;

use super::{client, kind_ref, namespace};
use crate::GlobalArgs;
use crate::builder::resource;

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// `TYPE/NAME ...`, `TYPE NAME ...`, or `TYPE` with `-l`/`--all`.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// `delete`, `condition=NAME[=VALUE]` or `jsonpath={PATH}[=VALUE]`.
    #[arg(long = "for", default_value = "")]
    pub condition: String,
    /// Wait for the objects of TYPE matching this label selector.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Wait for all objects of TYPE in the namespace.
    #[arg(long)]
    pub all: bool,
    /// How long to wait (`30s`, `2m`, `1h`; `0`: check once; negative: a week).
    #[arg(long, default_value = "30s", allow_hyphen_values = true)]
    pub timeout: String,
}

/// What to wait for.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Delete,
    Status { kind: String, value: String },
    JsonPath { path: Vec<Step>, value: Option<String> },
}

/// One step of a simple JSONPath: a field or a list index.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// Parse `--for` as kubectl does (`conditionFuncFor`).
pub fn parse_condition(text: &str) -> anyhow::Result<Condition> {
    if text.eq_ignore_ascii_case("delete") {
        return Ok(Condition::Delete);
    }
    if let Some(rest) = text.strip_prefix("condition=") {
        let (kind, value) = rest.split_once('=').unwrap_or((rest, "true"));
        return Ok(Condition::Status {
            kind: kind.to_string(),
            value: value.to_string(),
        });
    }
    if let Some(rest) = text.strip_prefix("jsonpath=") {
        let (expr, value) = match rest.split_once("}=") {
            Some((e, v)) => (format!("{e}}}"), Some(v.trim_matches(['\'', '"']).to_string())),
            None => (rest.to_string(), None),
        };
        if value.as_deref() == Some("") {
            bail!(
                "jsonpath wait has to have a value after equal sign, like --for=jsonpath='{{.status.readyReplicas}}'=3"
            );
        }
        return Ok(Condition::JsonPath {
            path: parse_path(&expr)?,
            value,
        });
    }
    bail!("unrecognized condition: {text:?}")
}

/// `{.status.conditions[0].type}` (braces optional) → steps.
fn parse_path(expr: &str) -> anyhow::Result<Vec<Step>> {
    let inner = expr.trim().trim_start_matches('{').trim_end_matches('}').trim();
    if inner.is_empty() {
        bail!("jsonpath expression cannot be empty");
    }
    let mut steps = Vec::new();
    for part in inner.trim_start_matches('.').split('.') {
        let (field, indexes) = part.split_once('[').map_or((part, ""), |(f, r)| (f, r));
        if !field.is_empty() {
            steps.push(Step::Field(field.to_string()));
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            match idx.trim_end_matches(']').parse() {
                Ok(n) => steps.push(Step::Index(n)),
                Err(_) => bail!("kulisse's wait supports simple paths like {{.status.phase}}, not {expr:?}"),
            }
        }
    }
    Ok(steps)
}

/// Is the condition met by this state of the object (`checkCondition`)?
pub fn met(condition: &Condition, obj: &Value) -> anyhow::Result<bool> {
    match condition {
        Condition::Delete => Ok(false),
        Condition::Status { kind, value } => {
            let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
            let conditions = obj.pointer("/status/conditions").and_then(Value::as_array);
            let Some(c) = conditions.into_iter().flatten().find(|c| {
                c.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.eq_ignore_ascii_case(kind))
            }) else {
                return Ok(false);
            };
            let observed = c
                .get("observedGeneration")
                .or_else(|| obj.pointer("/status/observedGeneration"))
                .and_then(Value::as_i64);
            if let (Some(g), Some(o)) = (generation, observed)
                && o < g
            {
                return Ok(false);
            }
            Ok(c.get("status")
                .and_then(Value::as_str)
                .is_some_and(|s| s.eq_ignore_ascii_case(value)))
        }
        Condition::JsonPath { path, value } => {
            let mut at = obj;
            for step in path {
                let next = match step {
                    Step::Field(f) => at.get(f),
                    Step::Index(i) => at.get(*i),
                };
                let Some(n) = next else {
                    return Ok(false);
                };
                at = n;
            }
            let Some(want) = value else {
                return Ok(true);
            };
            let text = match at {
                Value::Object(_) | Value::Array(_) => {
                    bail!("jsonpath leads to a nested object or list which is not supported")
                }
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Ok(text.trim() == want.trim())
        }
    }
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `0`); negative means a week, as in kubectl.
pub fn parse_timeout(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('-') {
        parse_timeout(rest)?;
        return Ok(Duration::from_secs(168 * 3600));
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let unit_len = rest[num_len..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid duration {text:?}"))?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => bail!(
                "invalid argument {text:?} for \"--timeout\" flag: time: unknown unit {unit:?} in duration {text:?}"
            ),
        };
        total += n * scale;
        rest = &rest[num_len + unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// The objects to wait for, as (resource, name).
async fn targets(
    client: &Client,
    ns: &str,
    args: &WaitArgs,
    deleting: bool,
) -> anyhow::Result<Vec<(&'static ResourceInfo, String)>> {
    let first = &args.targets[0];
    if first.contains('/') {
        let mut out = Vec::new();
        for t in &args.targets {
            match t.split_once('/') {
                Some((kind, name)) if !name.is_empty() => out.push((resource(kind)?, name.to_string())),
                _ => bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'kulisse wait resource/<resource_name>' instead of 'kulisse wait resource resource/<resource_name>'"
                ),
            }
        }
        return Ok(out);
    }
    let info = resource(first)?;
    let names = &args.targets[1..];
    if !names.is_empty() {
        return Ok(names.iter().map(|n| (info, n.clone())).collect());
    }
    if args.selector.is_none() && !args.all {
        bail!("resource(s) were provided, but no name was specified");
    }
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let list = client.list(info, info.namespaced.then_some(ns), &params).await?;
    let out: Vec<_> = list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .map(|n| (info, n.to_string()))
        .collect();
    if out.is_empty() && !deleting {
        bail!("no matching resources found");
    }
    Ok(out)
}

/// Wait for one object until `deadline`; `Ok(false)` on timeout.
async fn wait_one(
    client: &Client,
    info: &'static ResourceInfo,
    ns: Option<&str>,
    name: &str,
    condition: &Condition,
    deadline: Instant,
) -> anyhow::Result<bool> {
    let deleting = *condition == Condition::Delete;
    loop {
        let current = match client.get(info, ns, name).await {
            Ok(obj) => obj,
            Err(e) if e.code() == Some(404) && deleting => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        if met(condition, &current)? {
            return Ok(true);
        }
        let uid = current.pointer("/metadata/uid").cloned();
        let rv = current.pointer("/metadata/resourceVersion").and_then(Value::as_str);
        let params = ListParams {
            field_selector: Some(format!("metadata.name={name}")),
            ..Default::default()
        };
        let watch = async {
            let mut events = client.watch(info, ns, &params, rv).await?;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                let replaced = ev.object.pointer("/metadata/uid").cloned() != uid;
                match ev.kind.as_str() {
                    "DELETED" if deleting => return anyhow::Ok(true),
                    "ADDED" | "MODIFIED" if deleting && replaced => return Ok(true),
                    "ADDED" | "MODIFIED" if met(condition, &ev.object)? => return Ok(true),
                    _ => {}
                }
            }
            Ok(false)
        };
        match tokio::time::timeout_at(deadline, watch).await {
            Err(_) => return Ok(false),
            Ok(Ok(true)) => return Ok(true),
            // The watch ended (or its resourceVersion expired): read again and go on.
            Ok(_) => {}
        }
    }
}

pub async fn run(global: &GlobalArgs, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let condition = parse_condition(&args.condition)?;
    let timeout = parse_timeout(&args.timeout)?;
    let client = client(global)?;
    let ns = namespace(global, &client);
    let deleting = condition == Condition::Delete;
    let deadline = Instant::now() + timeout;
    for (info, name) in targets(&client, &ns, &args, deleting).await? {
        let ns = info.namespaced.then_some(ns.as_str());
        // Like kubectl, an object already gone when the wait starts is skipped silently.
        if deleting
            && let Err(e) = client.get(info, ns, &name).await
            && e.code() == Some(404)
        {
            continue;
        }
        if timeout.is_zero() {
            let done = match client.get(info, ns, &name).await {
                Err(e) if e.code() == Some(404) && deleting => true,
                Err(e) => return Err(e.into()),
                Ok(obj) => met(&condition, &obj)?,
            };
            if !done {
                bail!("condition not met for {}/{name}", info.plural);
            }
        } else if !wait_one(&client, info, ns, &name, &condition, deadline).await? {
            bail!("timed out waiting for the condition on {}/{name}", info.plural);
        }
        // kubectl 1.32 says "condition met" for `--for=delete` too.
        println!("{}/{name} condition met", kind_ref(info));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_as_kubectl_reads_them() {
        assert_eq!(parse_condition("delete").unwrap(), Condition::Delete);
        assert_eq!(
            parse_condition("condition=Ready=false").unwrap(),
            Condition::Status {
                kind: "Ready".into(),
                value: "false".into()
            }
        );
        assert_eq!(
            parse_condition("jsonpath={.status.phase}=Running").unwrap(),
            Condition::JsonPath {
                path: vec![Step::Field("status".into()), Step::Field("phase".into())],
                value: Some("Running".into())
            }
        );
        assert_eq!(
            parse_condition("ready").unwrap_err().to_string(),
            "unrecognized condition: \"ready\""
        );
    }

    #[test]
    fn a_condition_counts_only_once_the_controller_saw_the_spec() {
        let available = json!({"metadata": {"generation": 2},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Available", "status": "True"}]}});
        let c = parse_condition("condition=available").unwrap();
        assert!(met(&c, &available).unwrap());
        let mut stale = available.clone();
        stale["metadata"]["generation"] = json!(3);
        assert!(!met(&c, &stale).unwrap());
        assert!(!met(&parse_condition("condition=Available=False").unwrap(), &available).unwrap());
        let pod = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": true}]}});
        assert!(met(&parse_condition("jsonpath={.status.phase}=Running").unwrap(), &pod).unwrap());
        assert!(
            met(
                &parse_condition("jsonpath={.status.containerStatuses[0].ready}=true").unwrap(),
                &pod
            )
            .unwrap()
        );
        assert!(met(&parse_condition("jsonpath={.status.phase}").unwrap(), &pod).unwrap());
        assert!(!met(&parse_condition("jsonpath={.status.podIP}").unwrap(), &pod).unwrap());
    }

    #[test]
    fn timeouts_are_go_durations() {
        assert_eq!(parse_timeout("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timeout("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_timeout("-1s").unwrap(), Duration::from_secs(168 * 3600));
        assert!(parse_timeout("10x").is_err());
    }
}
