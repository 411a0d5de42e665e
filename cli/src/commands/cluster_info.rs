//! `kulisse cluster-info` (mirrors `kubectl cluster-info`).
//!
//! Where is the cluster? kubectl answers with the API server's address from the kubeconfig
//! (the *control plane*) and one line per cluster add-on: the Services in `kube-system`
//! labelled `kubernetes.io/cluster-service=true` (CoreDNS, a metrics server, ...), each
//! reached through the API server's service proxy. kulisse runs no add-ons, so usually
//! only the first line appears; a Service you label that way shows up as in kubectl.
//! kubectl's last line points to `kubectl cluster-info dump`; kulisse has no `dump`, and
//! points to its events and traces instead.

use std::process::ExitCode;

use clap::Args;
use http::Method;
use kulisse_core::client::ListParams;
use kulisse_core::objects;
use serde_json::Value;

use super::client;
use crate::{GlobalArgs, builder};

#[derive(Args, Debug)]
pub struct ClusterInfoArgs {}

pub async fn run(global: &GlobalArgs, _args: ClusterInfoArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    // Ask the server first: a control plane that does not answer is not "running".
    client.json(Method::GET, "/version", None, None).await?;
    let server = client.server().trim_end_matches('/').to_string();
    println!("Kubernetes control plane is running at {server}");
    let info = objects::by_gvk("v1", "Service").expect("Service is a built-in kind");
    let params = ListParams {
        label_selector: Some("kubernetes.io/cluster-service=true".into()),
        ..Default::default()
    };
    for svc in builder::items(&client.list(info, Some("kube-system"), &params).await?) {
        let name = svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let shown = svc
            .pointer("/metadata/labels/kubernetes.io~1name")
            .and_then(Value::as_str)
            .unwrap_or(name);
        let port = svc
            .pointer("/spec/ports/0/name")
            .and_then(Value::as_str)
            .map(|p| format!("{name}:{p}"))
            .unwrap_or_else(|| name.to_string());
        println!("{shown} is running at {server}/api/v1/namespaces/kube-system/services/{port}/proxy");
    }
    println!();
    println!("To further debug and diagnose cluster problems, use 'kulisse get events -A' and 'kulisse trace last'.");
    Ok(ExitCode::SUCCESS)
}
