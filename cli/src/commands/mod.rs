//! One file per command, each with the same shape: an `Args` struct (clap) and
//! `async fn run(global, args) -> anyhow::Result<ExitCode>`.

pub mod annotate;
pub mod apply;
pub mod bench;
pub mod cluster_info;
pub mod components;
pub mod cordon;
pub mod create;
pub mod delete;
pub mod demo;
pub mod describe;
pub mod drain;
pub mod election;
pub mod events;
pub mod exec;
pub mod explain;
pub mod follow;
pub mod get;
pub mod history;
pub mod hosts;
pub mod identities;
pub mod label;
pub mod logs;
pub mod masters;
pub mod patch;
pub mod port_forward;
pub mod processes;
pub mod ps;
pub mod rollout;
pub mod rollout_history;
pub mod rollout_pause;
pub mod rollout_undo;
pub mod scale;
pub mod serving;
pub mod step;
pub mod trace;
pub mod trace_jaeger;
pub mod up;
pub mod version;
pub mod wait;
pub mod why;

use anyhow::Context as _;
use kulisse_core::client::{Client, kubeconfig};
use kulisse_core::objects::ResourceInfo;

use crate::GlobalArgs;

/// A loopback port for a process kulisse starts and tells its port (etcd, an API server of
/// `--masters 3`, the bench's servers): below the kernel's ephemeral range, so it is still
/// free when the process binds it, even after a restart reuses it ([`kulisse_core::ports`]).
pub(crate) fn cluster_port() -> anyhow::Result<u16> {
    kulisse_core::ports::free(kulisse_core::ports::CLUSTER).context("finding a free port")
}

/// A client from `--kubeconfig`, `$KULISSE_KUBECONFIG` or `~/.kulisse/kubeconfig`.
pub fn client(global: &GlobalArgs) -> anyhow::Result<Client> {
    let path = global.kubeconfig.clone().unwrap_or_else(kubeconfig::default_path);
    let client = Client::from_kubeconfig(&path).with_context(|| format!("using kubeconfig {}", path.display()))?;
    Ok(client)
}

/// The namespace a command works in: `-n`, else the kubeconfig context's.
pub fn namespace(global: &GlobalArgs, client: &Client) -> String {
    global
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone())
}

/// `deployment.apps/web`, `pod/web-1`: how kubectl names an object in messages.
pub fn object_ref(info: &ResourceInfo, name: &str) -> String {
    format!("{}/{name}", kind_ref(info))
}

/// `deployment.apps`, `pod`: how kubectl names a kind in messages like `deployment.apps "web" deleted`.
pub fn kind_ref(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.singular.to_string()
    } else {
        format!("{}.{}", info.singular, info.group)
    }
}

/// `deployment/web` or `deployment web` → the resource and the name.
pub fn split_target(parts: &[String]) -> anyhow::Result<(&'static ResourceInfo, String)> {
    crate::builder::one(parts)
}

/// Print the errors of the objects that failed (after the output of those that worked, as
/// kubectl does) and choose the exit code: 1 if any failed.
pub fn finish(errors: &[anyhow::Error]) -> std::process::ExitCode {
    for e in errors {
        eprintln!("{}", crate::output::error_text(e));
    }
    if errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// `PATCH` one object as `field_manager` with a patch of `content_type` (merge, strategic
/// merge or JSON patch); with `dry_run` the server checks it and stores nothing.
#[allow(clippy::too_many_arguments)]
pub async fn patch_as(
    client: &Client,
    info: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    content_type: &str,
    field_manager: &str,
    patch: &serde_json::Value,
    dry_run: bool,
) -> Result<serde_json::Value, kulisse_core::client::ClientError> {
    let mut path = format!(
        "{}?fieldManager={field_manager}",
        kulisse_core::client::path(info, ns, Some(name), None)
    );
    if dry_run {
        path.push_str("&dryRun=All");
    }
    let (value, _) = client
        .json(http::Method::PATCH, &path, Some(content_type), Some(patch))
        .await?;
    Ok(value)
}
