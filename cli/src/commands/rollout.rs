//! `kulisse rollout status|history|undo|restart|pause|resume deployment/web` (mirrors
//! `kubectl rollout`). `status` lives here; the others each have their own file
//! (`rollout_history.rs`, `rollout_undo.rs`, `rollout_pause.rs`).
//!
//! `rollout status`
//! Watches the Deployment until its controller reports the rollout done: the controller
//! has seen the newest spec (`status.observedGeneration >= metadata.generation`), every
//! replica runs the new template (`updatedReplicas == replicas`), no old replica is left
//! (`status.replicas == updatedReplicas`) and all are available. It prints kubectl's
//! progress lines while it waits.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use futures::StreamExt;
use kulisse_core::client::ListParams;
use serde_json::Value;

use super::{client, namespace, split_target};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCommand {
    /// Wait until a Deployment's rollout has finished.
    Status {
        /// `deployment/web`, or `deployment web`.
        #[arg(required = true, num_args = 1..=2)]
        target: Vec<String>,
        /// Give up after this many seconds (0: wait forever).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
    },
    /// List a Deployment's revisions (its ReplicaSets), or show one.
    History(super::rollout_history::HistoryArgs),
    /// Roll a Deployment back to an earlier revision's pod template.
    Undo(super::rollout_undo::UndoArgs),
    /// Replace every pod of a Deployment through a rolling update.
    Restart(ToggleArgs),
    /// Stop rolling out changes of a Deployment's pod template.
    Pause(ToggleArgs),
    /// Roll out again what changed while the Deployment was paused.
    Resume(ToggleArgs),
}

/// The target of `restart`, `pause` and `resume`.
#[derive(Args, Debug)]
pub struct ToggleArgs {
    /// `deployment/web`, or `deployment web`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
}

/// The Deployment a rollout subcommand works on, or kubectl's error for other kinds (after
/// reading the object, as kubectl does, so a missing one is reported as not found).
async fn deployment_target(
    client: &kulisse_core::client::Client,
    ns: &str,
    target: &[String],
    verb: &str,
) -> anyhow::Result<String> {
    let (info, name) = split_target(target)?;
    if info.kind != "Deployment" {
        client.get(info, info.namespaced.then_some(ns), &name).await?;
        match verb {
            "history" => bail!("no history viewer has been implemented for \"{}\"", info.kind),
            "undo" => bail!("no rollbacker has been implemented for \"{}\"", info.kind),
            "status" => bail!("no status viewer has been implemented for {}", info.kind),
            _ => bail!("{} \"{name}\" {verb} is not supported", info.group_resource()),
        }
    }
    Ok(name)
}

/// `history`, `undo`, `restart`, `pause`, `resume`.
async fn run_other(global: &GlobalArgs, command: RolloutCommand) -> anyhow::Result<ExitCode> {
    use super::rollout_pause::Toggle;
    let (target, verb) = match &command {
        RolloutCommand::History(a) => (&a.target, "history"),
        RolloutCommand::Undo(a) => (&a.target, "undo"),
        RolloutCommand::Restart(a) => (&a.target, "restarting"),
        RolloutCommand::Pause(a) => (&a.target, "pausing"),
        RolloutCommand::Resume(a) => (&a.target, "resuming"),
        RolloutCommand::Status { .. } => bail!("rollout status is handled by run"),
    };
    let client = client(global)?;
    let ns = namespace(global, &client);
    let name = deployment_target(&client, &ns, target, verb).await?;
    match &command {
        RolloutCommand::History(a) => super::rollout_history::run(&client, &ns, &name, a).await?,
        RolloutCommand::Undo(a) => super::rollout_undo::run(&client, &ns, &name, a).await?,
        RolloutCommand::Restart(_) => super::rollout_pause::run(&client, &ns, &name, Toggle::Restart).await?,
        RolloutCommand::Pause(_) => super::rollout_pause::run(&client, &ns, &name, Toggle::Pause).await?,
        RolloutCommand::Resume(_) => super::rollout_pause::run(&client, &ns, &name, Toggle::Resume).await?,
        RolloutCommand::Status { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a rollout stands, in kubectl's words; `None` while it is not done.
pub fn rollout_message(d: &Value) -> (bool, String) {
    let name = d.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let i = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let generation = i("/metadata/generation");
    let observed = i("/status/observedGeneration");
    let wanted = i("/spec/replicas");
    let updated = i("/status/updatedReplicas");
    let total = i("/status/replicas");
    let available = i("/status/availableReplicas");
    if observed < generation {
        return (false, "Waiting for deployment spec update to be observed...".into());
    }
    if updated < wanted {
        return (
            false,
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {wanted} new replicas have been updated..."
            ),
        );
    }
    if total > updated {
        return (
            false,
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
                total - updated
            ),
        );
    }
    if available < updated {
        return (
            false,
            format!(
                "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
            ),
        );
    }
    (true, format!("deployment \"{name}\" successfully rolled out"))
}

pub async fn run(global: &GlobalArgs, args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let RolloutCommand::Status { target, timeout } = args.command else {
        return run_other(global, args.command).await;
    };
    let client = client(global)?;
    let ns = namespace(global, &client);
    let name = deployment_target(&client, &ns, &target, "status").await?;
    let info = kulisse_core::objects::by_gvk("apps/v1", "Deployment").expect("Deployment is built in");
    let wait = async {
        let mut last = String::new();
        loop {
            let params = ListParams {
                field_selector: Some(format!("metadata.name={name}")),
                ..Default::default()
            };
            let mut events = client.watch(info, Some(&ns), &params, None).await?;
            let mut seen_any = false;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                seen_any = true;
                if ev.kind == "DELETED" {
                    bail!("deployment \"{name}\" was deleted while waiting for its rollout");
                }
                let (done, msg) = rollout_message(&ev.object);
                if msg != last {
                    println!("{msg}");
                    last = msg;
                }
                if done {
                    return anyhow::Ok(());
                }
            }
            if !seen_any {
                // The watch ended without showing the object: does it exist?
                client.get(info, Some(&ns), &name).await?;
            }
        }
    };
    if timeout == 0 {
        wait.await?;
    } else {
        match tokio::time::timeout(Duration::from_secs(timeout), wait).await {
            Ok(r) => r?,
            Err(_) => bail!("timed out waiting for the condition"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
