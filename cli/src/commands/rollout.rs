//! `kulisse rollout status deployment/web` (mirrors `kubectl rollout status`).
//!
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
    let RolloutCommand::Status { target, timeout } = args.command;
    let (info, name) = split_target(&target)?;
    if info.kind != "Deployment" {
        bail!("rollout status supports deployments, not {}", info.plural);
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
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
