//! `kulisse delete -f FILE` / `kulisse delete KIND NAME...` (mirrors `kubectl delete`).
//!
//! Sends `DELETE` for each object and prints `deployment.apps "web" deleted`. Like kubectl,
//! once all are sent it waits until they are really gone: an object with finalizers only gets a
//! `deletionTimestamp` at first and disappears when its finalizers are done. The wait is a
//! watch on just that object (`fieldSelector=metadata.name=web`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use kulisse_core::client::{Client, ClientError, ListParams};
use kulisse_core::objects::ResourceInfo;
use serde_json::Value;

use super::{client, namespace};
use crate::{GlobalArgs, output};

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// What to delete: `TYPE NAME...`, `TYPE/NAME...`, or `TYPE` with `-l`/`--all` (or use -f).
    pub target: Vec<String>,
    /// Delete the objects of the kind(s) whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Delete every object of the kind(s) in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Delete the objects described in these files or directories.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// What happens to dependents: background (default), foreground or orphan.
    #[arg(long, value_enum, default_value_t = Cascade::Background)]
    pub cascade: Cascade,
    /// Treat "not found" as success.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the objects are gone (default true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cascade {
    Background,
    Foreground,
    Orphan,
}

pub async fn run(global: &GlobalArgs, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let ns = namespace(global, &client);
    let targets = if args.files.is_empty() {
        targets_of_args(&client, global, &args, &ns).await?
    } else {
        if !args.target.is_empty() {
            bail!("use either -f FILE or KIND NAME, not both");
        }
        targets_of_files(&client, global, &args, &ns)?
    };
    let propagation = match args.cascade {
        Cascade::Background => "Background",
        Cascade::Foreground => "Foreground",
        Cascade::Orphan => "Orphan",
    };
    let mut failed = 0;
    // As kubectl: delete everything first, then wait. Waiting in between would let a
    // deleted namespace take the objects still to be deleted with it.
    let mut terminating = Vec::new();
    for (info, ns, name) in targets {
        match client.delete(info, ns.as_deref(), &name, Some(propagation)).await {
            Ok(obj) => {
                println!("{} \"{name}\" deleted", super::kind_ref(info));
                if args.wait && obj.pointer("/metadata/deletionTimestamp").is_some() {
                    terminating.push((info, ns, name, obj));
                }
            }
            Err(ClientError::Api(e)) if e.code == 404 && args.ignore_not_found => {}
            Err(e) => {
                failed += 1;
                eprintln!("{}", output::error_text(&anyhow::Error::new(e)));
            }
        }
    }
    for (info, ns, name, obj) in terminating {
        wait_gone(&client, info, ns.as_deref(), &name, &obj).await?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

type Target = (&'static ResourceInfo, Option<String>, String);

/// `delete -f FILE`: the objects the manifests describe.
fn targets_of_files(client: &Client, global: &GlobalArgs, args: &DeleteArgs, ns: &str) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for m in super::apply::read_all(&args.files)? {
        let (info, obj_ns, name) = client.target_of(&m.object)?;
        let obj_ns = if info.namespaced {
            Some(global.namespace.clone().or(obj_ns).unwrap_or_else(|| ns.to_string()))
        } else {
            None
        };
        targets.push((info, obj_ns, name));
    }
    Ok(targets)
}

/// `delete pods a b`, `delete pod/a deploy/web`, `delete pods -l app=web`, `delete pods --all`
/// (through the resource builder; a selector lists the objects first, as kubectl does).
async fn targets_of_args(
    client: &Client,
    global: &GlobalArgs,
    args: &DeleteArgs,
    ns: &str,
) -> anyhow::Result<Vec<Target>> {
    if args.target.is_empty() {
        bail!("you must specify what to delete: TYPE NAME..., TYPE/NAME..., TYPE -l SELECTOR, TYPE --all, or -f FILE");
    }
    let sel = crate::builder::parse(&args.target)?;
    sel.check_selector(args.selector.as_deref(), args.all)?;
    if !sel.has_names() && args.selector.is_none() && !args.all {
        bail!("resource(s) were provided, but no name was specified");
    }
    let mut targets = Vec::new();
    if sel.has_names() {
        for r in &sel.requests {
            for name in &r.names {
                targets.push((r.info, r.info.namespaced.then(|| ns.to_string()), name.clone()));
            }
        }
        return Ok(targets);
    }
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let (found, errors) = crate::builder::fetch(client, &sel, ns, global.all_namespaces, &params).await;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    for f in found {
        for o in f.objects {
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let obj_ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            targets.push((f.info, obj_ns, name));
        }
    }
    if targets.is_empty() {
        eprintln!("No resources found");
    }
    Ok(targets)
}

async fn wait_gone(
    client: &Client,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    obj: &Value,
) -> anyhow::Result<()> {
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let params = ListParams {
        field_selector: Some(format!("metadata.name={name}")),
        ..Default::default()
    };
    let mut events = client.watch(info, ns, &params, rv.as_deref()).await?;
    let wait = async {
        while let Some(ev) = events.next().await {
            if ev?.kind == "DELETED" {
                return anyhow::Ok(());
            }
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(r) => r,
        Err(_) => bail!(
            "timed out after 60s waiting for {} \"{name}\" to be gone: its finalizers are still set",
            info.group_resource()
        ),
    }
}
