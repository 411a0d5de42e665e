//! `kulisse port-forward POD|TYPE/NAME [LOCAL:]REMOTE... [--address ADDR]` (mirrors
//! `kubectl port-forward`).
//!
//! Listens on `ADDR:LOCAL` (default `127.0.0.1`) and carries each connection made there to
//! port `REMOTE` inside the pod, over one port-forward connection to the API server, which
//! passes it to the pod's kubelet ([`kulisse_core::portforward`] tells the road). `8080:80`
//! forwards local 8080 to the pod's 80; `80` uses 80 on both sides; `:80` (or `0:80`) picks
//! a free local port. `REMOTE` may also be a container port's name (`8080:http`).
//!
//! As kubectl does, it refuses a pod that is not Running, prints `Forwarding from ...` once
//! listening and `Handling connection for ...` for each connection, and ends with `error:
//! lost connection to pod` (exit 1) when forwarding fails or the connection drops. Ctrl-C
//! ends it normally.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use kulisse_core::portforward;
use serde_json::Value;
use tokio::net::TcpListener;

use super::{client, namespace};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct PortForwardArgs {
    /// The pod's name, or `TYPE/NAME` (`pod/web-1`, `deploy/web`, `rs/web-abc`, `svc/web`).
    pub target: String,
    /// `[LOCAL:]REMOTE` pairs: `8080:80`, `80`, `:80`, `8080:http`.
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// The local address to listen on (only loopback addresses are allowed).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
}

/// One `[LOCAL:]REMOTE` pair, the remote still as written.
fn parse_pair(spec: &str) -> anyhow::Result<(u16, String)> {
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (l, r),
        None => (spec, spec),
    };
    let local = if local.is_empty() {
        0
    } else {
        local
            .parse::<u16>()
            .with_context(|| format!("error parsing local port '{local}' in '{spec}': not a port number"))?
    };
    if remote.is_empty() {
        bail!("remote port in '{spec}' is empty");
    }
    Ok((local, remote.to_string()))
}

/// The pod's port `remote` names: a number, or a container port's name.
fn remote_port(pod: &Value, remote: &str) -> anyhow::Result<u16> {
    if let Ok(port) = remote.parse::<u16>() {
        if port == 0 {
            bail!("remote port must be > 0");
        }
        return Ok(port);
    }
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c.get("ports").and_then(Value::as_array).into_iter().flatten())
        .find(|p| p.get("name").and_then(Value::as_str) == Some(remote))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("Pod '{}' does not have a named port '{remote}'", name_of(pod)))
}

fn name_of(pod: &Value) -> &str {
    kulisse_core::objects::name(pod).unwrap_or("")
}

pub async fn run(global: &GlobalArgs, args: PortForwardArgs) -> anyhow::Result<ExitCode> {
    if !args.address.is_loopback() {
        bail!(
            "--address {}: kulisse forwards only on loopback addresses (127.0.0.0/8, ::1)",
            args.address
        );
    }
    let api = client(global)?;
    let ns = namespace(global, &api);
    let pod = super::logs::pod_of(&api, &ns, &args.target).await?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    if phase != "Running" {
        bail!("unable to forward port because pod is not running. Current status={phase}");
    }
    let mut pairs = Vec::new();
    for spec in &args.ports {
        let (local, remote) = parse_pair(spec)?;
        pairs.push((local, remote_port(&pod, &remote)?));
    }
    let pod_name = name_of(&pod).to_string();
    let conn = Arc::new(
        portforward::connect(&api, &ns, &pod_name)
            .await
            .with_context(|| format!("error upgrading connection to pod {pod_name}"))?,
    );
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::channel::<String>(4);
    for (local, remote) in pairs {
        let listener = TcpListener::bind((args.address, local))
            .await
            .with_context(|| format!("unable to listen on port {local}"))?;
        let bound = listener.local_addr()?;
        println!("Forwarding from {bound} -> {remote}");
        let (conn, lost_tx) = (conn.clone(), lost_tx.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                println!("Handling connection for {}", bound.port());
                let (conn, lost_tx) = (conn.clone(), lost_tx.clone());
                tokio::spawn(async move {
                    if let Err(e) = conn.forward(remote, socket).await {
                        let _ = lost_tx
                            .send(format!(
                                "an error occurred forwarding {} -> {remote}: {e}",
                                bound.port()
                            ))
                            .await;
                    }
                });
            }
        });
    }
    let closed = async {
        while !conn.is_closed() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
        Some(message) = lost_rx.recv() => {
            eprintln!("{message}");
            bail!("lost connection to pod")
        }
        _ = closed => bail!("lost connection to pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_pairs_read_as_kubectl_reads_them() {
        assert_eq!(parse_pair("8080:80").unwrap(), (8080, "80".into()));
        assert_eq!(parse_pair("80").unwrap(), (80, "80".into()));
        assert_eq!(parse_pair(":80").unwrap(), (0, "80".into()));
        assert_eq!(parse_pair("8080:http").unwrap(), (8080, "http".into()));
        assert!(parse_pair("x:80").is_err());
        assert!(parse_pair("8080:").is_err());
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [
            {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(remote_port(&pod, "http").unwrap(), 8080);
        assert_eq!(remote_port(&pod, "81").unwrap(), 81);
        let err = remote_port(&pod, "grpc").unwrap_err().to_string();
        assert_eq!(err, "Pod 'web' does not have a named port 'grpc'");
    }
}
