//! `kulisse logs POD [-c CONTAINER] [-f] [--tail N] [--previous]` (mirrors `kubectl logs`).
//!
//! The API server does not keep logs: it proxies the request to the kubelet of the pod's
//! node (`pods/{name}/log`), which asks the container runtime. With `-f` the answer is a
//! stream that stays open while the container writes.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use http::Method;

use super::{client, namespace};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The pod's name (or `pod/NAME`).
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<i64>,
    /// The previous (crashed) instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let ns = namespace(global, &client);
    let pod = args
        .pod
        .strip_prefix("pod/")
        .or_else(|| args.pod.strip_prefix("pods/"))
        .unwrap_or(&args.pod);
    let info = kulisse_core::objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(c) = &args.container {
        q.append_pair("container", c);
    }
    if args.follow {
        q.append_pair("follow", "true");
    }
    if let Some(t) = args.tail.filter(|t| *t >= 0) {
        q.append_pair("tailLines", &t.to_string());
    }
    if args.previous {
        q.append_pair("previous", "true");
    }
    if args.timestamps {
        q.append_pair("timestamps", "true");
    }
    let path = format!(
        "{}?{}",
        kulisse_core::client::path(info, Some(&ns), Some(pod), Some("log")),
        q.finish()
    );
    let mut stream = client.stream(Method::GET, &path).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
