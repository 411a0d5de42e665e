//! `kulisse cordon NODE` and `kulisse uncordon NODE` (mirror kubectl's).
//!
//! Cordoning sets the Node's `spec.unschedulable: true`. Nothing running on the node
//! changes; the scheduler's `NodeUnschedulable` filter simply stops choosing it for new pods
//! (`kubectl get nodes` shows `Ready,SchedulingDisabled`). Uncordoning removes the field.
//! Like kubectl, a node already in the wanted state is reported, not patched.

use std::process::ExitCode;

use clap::Args;
use kulisse_core::client::Client;
use kulisse_core::objects;
use serde_json::{Value, json};

use super::{client, patch_as};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct CordonArgs {
    /// The node.
    pub node: String,
}

/// Set `spec.unschedulable` of `node` to `cordon`; prints kubectl's line.
pub async fn set_unschedulable(client: &Client, node: &str, cordon: bool) -> anyhow::Result<()> {
    let info = objects::by_gvk("v1", "Node").expect("Node is built in");
    let current = client.get(info, None, node).await?;
    let is = current.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
    let done = if cordon { "cordoned" } else { "uncordoned" };
    if is == cordon {
        println!("node/{node} already {done}");
        return Ok(());
    }
    let patch = if cordon {
        json!({"spec": {"unschedulable": true}})
    } else {
        json!({"spec": {"unschedulable": null}})
    };
    let smp = "application/strategic-merge-patch+json";
    patch_as(client, info, None, node, smp, "kubectl-cordon", &patch, false).await?;
    println!("node/{node} {done}");
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: CordonArgs, cordon: bool) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    set_unschedulable(&client, &args.node, cordon).await?;
    Ok(ExitCode::SUCCESS)
}
