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

use super::{client, namespace, resource};
use crate::{GlobalArgs, output};

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// KIND and NAME(s), e.g. `deployment web` (or use -f).
    pub target: Vec<String>,
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
    let mut targets: Vec<(&'static ResourceInfo, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.target.is_empty() {
            bail!("use either -f FILE or KIND NAME, not both");
        }
        for m in super::apply::read_all(&args.files)? {
            let (info, obj_ns, name) = client.target_of(&m.object)?;
            let obj_ns = if info.namespaced {
                Some(global.namespace.clone().or(obj_ns).unwrap_or_else(|| ns.clone()))
            } else {
                None
            };
            targets.push((info, obj_ns, name));
        }
    } else {
        if args.target.is_empty() {
            bail!("you must specify what to delete: KIND NAME..., KIND/NAME..., or -f FILE");
        }
        if args.target.iter().all(|t| t.contains('/')) {
            // kubectl's other form: `kulisse delete pod/web-1 deployment/web`
            for t in &args.target {
                let (info, name) = super::split_target(std::slice::from_ref(t))?;
                targets.push((info, info.namespaced.then(|| ns.clone()), name));
            }
        } else {
            let (kind, names) = args.target.split_first().expect("not empty");
            if names.is_empty() {
                bail!("resource(s) were provided, but no name was specified: kulisse delete {kind} NAME");
            }
            let info = resource(kind)?;
            for name in names {
                targets.push((info, info.namespaced.then(|| ns.clone()), name.clone()));
            }
        }
    }
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
