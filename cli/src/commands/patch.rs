//! `kulisse patch KIND NAME --type merge|json -p PATCH` (mirrors `kubectl patch`).
//!
//! Sends a change instead of a whole object: a JSON merge patch (RFC 7386: a partial object,
//! `null` deletes) or a JSON patch (RFC 6902: a list of operations). The API server applies
//! it to the stored object, validates the result and writes it only if something changed.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

use super::{client, kind_ref, namespace, split_target};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// `pod/web-1`, or `pod web-1`.
    #[arg(required = true, num_args = 1..=2)]
    pub target: Vec<String>,
    /// The patch, as JSON (or YAML).
    #[arg(short = 'p', long = "patch")]
    pub patch: String,
    /// The patch language.
    #[arg(long = "type", value_enum, default_value_t = PatchType::Merge)]
    pub kind: PatchType,
    /// Patch the status subresource instead of the object.
    #[arg(long)]
    pub subresource: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum PatchType {
    /// JSON merge patch (RFC 7386).
    Merge,
    /// JSON patch (RFC 6902).
    Json,
}

pub async fn run(global: &GlobalArgs, args: PatchArgs) -> anyhow::Result<ExitCode> {
    let (info, name) = split_target(&args.target)?;
    let patch: Value = match serde_json::from_str(&args.patch) {
        Ok(v) => v,
        Err(_) => match serde_saphyr::from_str(&args.patch) {
            Ok(v) => v,
            Err(e) => bail!("the patch is neither JSON nor YAML: {e}"),
        },
    };
    let client = client(global)?;
    let ns = namespace(global, &client);
    let content_type = match args.kind {
        PatchType::Merge => "application/merge-patch+json",
        PatchType::Json => "application/json-patch+json",
    };
    let path = kulisse_core::client::path(info, Some(&ns), Some(&name), args.subresource.as_deref());
    let before = client.get(info, Some(&ns), &name).await?;
    let (after, _) = client
        .json(Method::PATCH, &path, Some(content_type), Some(&patch))
        .await?;
    let same = before.pointer("/metadata/resourceVersion") == after.pointer("/metadata/resourceVersion");
    println!(
        "{}/{name} {}",
        kind_ref(info),
        if same { "patched (no change)" } else { "patched" }
    );
    Ok(ExitCode::SUCCESS)
}
