//! `kulisse version [--client] [-o json|yaml]` (mirrors `kubectl version`).
//!
//! Two versions matter when a client talks to a cluster: its own, and the server's, which
//! the server tells anyone who asks `GET /version` (`gitVersion`, `major`, `minor`,
//! `platform`). kubectl prints both so you can see a skew between them. kulisse's client
//! and server come from the same build, and both name the Kubernetes release whose API they
//! speak: `v1.33.0-kulisse.0.1.0`. kubectl also prints its bundled Kustomize's version;
//! kulisse has no Kustomize, so that line is left out.

use std::process::ExitCode;

use clap::Args;
use http::Method;
use kulisse_core::apiserver::discovery::version_info;
use serde_json::json;

use super::client;
use crate::{GlobalArgs, output};

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Only the client's version (no server needed).
    #[arg(long)]
    pub client: bool,
    /// Output format: json or yaml.
    #[arg(short = 'o', long = "output", value_parser = ["json", "yaml"])]
    pub output: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: VersionArgs) -> anyhow::Result<ExitCode> {
    let mut doc = json!({"clientVersion": version_info()});
    let mut server_error = None;
    if !args.client {
        let server = async {
            let client = client(global)?;
            anyhow::Ok(client.json(Method::GET, "/version", None, None).await?.0)
        };
        match server.await {
            Ok(v) => doc["serverVersion"] = v,
            Err(e) => server_error = Some(e),
        }
    }
    match args.output.as_deref() {
        Some("json") => println!("{}", output::json(&doc)),
        Some(_) => print!("{}", output::yaml(&doc)),
        None => {
            println!(
                "Client Version: {}",
                doc["clientVersion"]["gitVersion"].as_str().unwrap_or("")
            );
            if let Some(v) = doc.get("serverVersion") {
                println!("Server Version: {}", v["gitVersion"].as_str().unwrap_or(""));
            }
        }
    }
    match server_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
