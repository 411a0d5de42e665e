//! `kulisse scale deployment/web --replicas 3` (mirrors `kubectl scale`; also `TYPE NAME...`,
//! `-l` and `--all`).
//!
//! Writes only the `scale` subresource (`PATCH .../deployments/web/scale` with
//! `{"spec":{"replicas":3}}`): the Deployment controller notices the new desired count and
//! grows or shrinks the ReplicaSet, whose controller creates or deletes pods.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use http::Method;

use kulisse_core::client::ListParams;
use serde_json::Value;

use super::{client, kind_ref, namespace};
use crate::GlobalArgs;
use crate::builder;

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// `deployment/web`, `deployment web`, or a kind with `-l`/`--all`.
    #[arg(required = true)]
    pub target: Vec<String>,
    /// The new number of replicas.
    #[arg(long)]
    pub replicas: u32,
    /// Scale every object of the kind whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Scale every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(global: &GlobalArgs, args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let sel = builder::parse(&args.target)?;
    sel.check_selector(args.selector.as_deref(), args.all)?;
    if !sel.has_names() && args.selector.is_none() && !args.all {
        bail!("resource(s) were provided, but no name was specified");
    }
    if let Some(r) = sel
        .requests
        .iter()
        .find(|r| !matches!(r.info.kind, "Deployment" | "ReplicaSet"))
    {
        bail!(
            "{} cannot be scaled: only deployments and replicasets have a scale subresource",
            r.info.plural
        );
    }
    let client = client(global)?;
    let ns = namespace(global, &client);
    let params = ListParams {
        label_selector: args.selector.clone(),
        ..Default::default()
    };
    let (found, mut errors) = builder::fetch(&client, &sel, &ns, global.all_namespaces, &params).await;
    let patch = serde_json::json!({"spec": {"replicas": args.replicas}});
    for f in &found {
        for obj in &f.objects {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
            let obj_ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
            let path = format!(
                "{}?fieldManager=kulisse",
                kulisse_core::client::path(f.info, obj_ns, Some(name), Some("scale"))
            );
            match client
                .json(Method::PATCH, &path, Some("application/merge-patch+json"), Some(&patch))
                .await
            {
                Ok(_) => println!("{}/{name} scaled", kind_ref(f.info)),
                Err(e) => errors.push(e.into()),
            }
        }
    }
    Ok(super::finish(&errors))
}
