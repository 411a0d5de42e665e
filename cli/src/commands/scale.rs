//! `kulisse scale deployment/web --replicas 3` (mirrors `kubectl scale`).
//!
//! Writes only the `scale` subresource (`PATCH .../deployments/web/scale` with
//! `{"spec":{"replicas":3}}`): the Deployment controller notices the new desired count and
//! grows or shrinks the ReplicaSet, whose controller creates or deletes pods.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use http::Method;

use super::{client, kind_ref, namespace, split_target};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// `deployment/web`, or `deployment web`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: u32,
}

pub async fn run(global: &GlobalArgs, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let (info, name) = split_target(&args.target)?;
    if !matches!(info.kind, "Deployment" | "ReplicaSet") {
        bail!(
            "{} cannot be scaled: only deployments and replicasets have a scale subresource",
            info.plural
        );
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
    let path = format!(
        "{}?fieldManager=kulisse",
        kulisse_core::client::path(info, Some(&ns), Some(&name), Some("scale"))
    );
    let patch = serde_json::json!({"spec": {"replicas": args.replicas}});
    client
        .json(Method::PATCH, &path, Some("application/merge-patch+json"), Some(&patch))
        .await?;
    println!("{}/{name} scaled", kind_ref(info));
    Ok(ExitCode::SUCCESS)
}
