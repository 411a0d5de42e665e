//! `kulisse logs POD|TYPE/NAME [-c CONTAINER] [-l SELECTOR] [-f] [--tail N] [--previous]`
//! (mirrors `kubectl logs`).
//!
//! The API server does not keep logs: it proxies the request to the kubelet of the pod's
//! node (`pods/{name}/log`), which asks the container runtime. With `-f` the answer is a
//! stream that stays open while the container writes.
//!
//! Which pod: `logs web-1` and `logs pod/web-1` name it; `logs deploy/web` (or `rs/...`,
//! `svc/...`) reads the workload's selector and picks one of its pods (running and ready
//! ones first, as kubectl's `GetFirstPod` does), saying `Found 3 pods, using pod/...` when it
//! had a choice; `logs -l app=web` prints the logs of every matching pod (the last 10 lines
//! of each unless `--tail` says otherwise, as in kubectl).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use http::Method;
use kulisse_core::client::{Client, ClientError, ListParams};
use kulisse_core::objects::{self, ResourceInfo};
use serde_json::{Value, json};

use super::{client, namespace};
use crate::GlobalArgs;
use crate::builder;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The pod's name, or `TYPE/NAME` (`pod/web-1`, `deploy/web`, `rs/web-abc`, `svc/web`).
    pub target: Option<String>,
    /// The container (same as -c).
    pub container_arg: Option<String>,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Read the logs of every pod whose labels match, e.g. `app=web`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Keep streaming new lines.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all; with -l the default is 10).
    #[arg(long, allow_hyphen_values = true)]
    pub tail: Option<i64>,
    /// The previous (crashed) instance of the container.
    #[arg(short = 'p', long)]
    pub previous: bool,
    /// Prefix each line with its timestamp.
    #[arg(long)]
    pub timestamps: bool,
    /// Prefix each line with where it comes from: `[pod/NAME/CONTAINER]`.
    #[arg(long)]
    pub prefix: bool,
    /// How many pods -l may follow at once.
    #[arg(long, default_value_t = 5)]
    pub max_log_requests: usize,
}

pub async fn run(global: &GlobalArgs, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = client(global)?;
    let ns = namespace(global, &client);
    let pods = match (&args.selector, &args.target) {
        (Some(_), Some(_)) => bail!("only one of a selector (-l) or a POD/TYPE/NAME may be given"),
        (None, None) => bail!("expected POD or TYPE/NAME: kulisse logs POD [-c CONTAINER], or -l SELECTOR"),
        (Some(selector), None) => pods_matching(&client, &ns, &json!(null), Some(selector)).await?,
        (None, Some(target)) => vec![pod_of(&client, &ns, target).await?],
    };
    if pods.is_empty() {
        eprintln!("No resources found in {ns} namespace.");
        return Ok(ExitCode::SUCCESS);
    }
    if args.follow && pods.len() > args.max_log_requests {
        bail!(
            "you are attempting to follow {} log streams, but maximum allowed concurrency is {}, use --max-log-requests to increase the limit",
            pods.len(),
            args.max_log_requests
        );
    }
    let tail = args.tail.or(args.selector.is_some().then_some(10));
    let container = args.container.clone().or(args.container_arg.clone());
    let mut streams = Vec::new();
    for pod in &pods {
        let c = container.clone().or_else(|| first_container(pod, false));
        let path = log_path(&args, &ns, objects::name(pod).unwrap_or(""), c.as_deref(), tail);
        let prefix = args
            .prefix
            .then(|| format!("[pod/{}/{}] ", objects::name(pod).unwrap_or(""), c.unwrap_or_default()));
        let stream = client.stream(Method::GET, &path).await?;
        streams.push(stream.map(move |chunk| (prefix.clone(), chunk)).boxed());
    }
    // One pod after another, or (with -f) all at once as lines arrive.
    let mut merged = if args.follow {
        futures::stream::select_all(streams).boxed()
    } else {
        futures::stream::iter(streams).flatten().boxed()
    };
    let mut out = std::io::stdout().lock();
    while let Some((prefix, chunk)) = merged.next().await {
        let chunk = chunk?;
        match prefix {
            None => out.write_all(&chunk)?,
            Some(p) => {
                for line in String::from_utf8_lossy(&chunk).split_inclusive('\n') {
                    write!(out, "{p}{line}")?;
                }
            }
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn log_path(args: &LogsArgs, ns: &str, pod: &str, container: Option<&str>, tail: Option<i64>) -> String {
    let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(c) = container {
        q.append_pair("container", c);
    }
    if args.follow {
        q.append_pair("follow", "true");
    }
    if let Some(t) = tail.filter(|t| *t >= 0) {
        q.append_pair("tailLines", &t.to_string());
    }
    if args.previous {
        q.append_pair("previous", "true");
    }
    if args.timestamps {
        q.append_pair("timestamps", "true");
    }
    format!(
        "{}?{}",
        kulisse_core::client::path(info, Some(ns), Some(pod), Some("log")),
        q.finish()
    )
}

/// The container to read when none was named, as kubectl chooses it: the pod's
/// `kubectl.kubernetes.io/default-container` annotation, else the first; kubectl says so
/// when there was a choice (unless `quiet`).
pub(crate) fn first_container(pod: &Value, quiet: bool) -> Option<String> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let chosen = objects::annotations(pod)
        .remove("kubectl.kubernetes.io/default-container")
        .or_else(|| names.first().map(|n| n.to_string()))?;
    if names.len() > 1 && !quiet {
        eprintln!("Defaulted container \"{chosen}\" out of: {}", names.join(", "));
    }
    Some(chosen)
}

/// The pod a target names: `web-1`, `pod/web-1`, or one pod of `deploy/web`'s selector.
pub(crate) async fn pod_of(client: &Client, ns: &str, target: &str) -> anyhow::Result<Value> {
    let pod_info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let (info, name): (&ResourceInfo, String) = if target.contains('/') {
        builder::one(&[target.to_string()])?
    } else {
        (pod_info, target.to_string())
    };
    let obj = match client.get(info, Some(ns), &name).await {
        Ok(obj) => obj,
        // kubectl's words for this one name the namespace.
        Err(ClientError::Api(e)) if e.code == 404 => {
            bail!("error from server (NotFound): {} in namespace \"{ns}\"", e.message)
        }
        Err(e) => return Err(e.into()),
    };
    if info.kind == "Pod" {
        return Ok(obj);
    }
    let selector = match (info.kind, obj.pointer("/spec/selector")) {
        ("Service", Some(map)) => json!({"matchLabels": map}),
        (_, Some(sel)) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => sel.clone(),
        _ => bail!(
            "cannot get the logs of {}: it selects no pods",
            super::object_ref(info, &name)
        ),
    };
    let mut pods = pods_matching(client, ns, &selector, None).await?;
    if pods.is_empty() {
        bail!("no pods found for {}", super::object_ref(info, &name));
    }
    pods.sort_by_key(logging_order);
    if pods.len() > 1 {
        eprintln!(
            "Found {} pods, using pod/{}",
            pods.len(),
            objects::name(&pods[0]).unwrap_or("")
        );
    }
    Ok(pods.remove(0))
}

/// Pods in `ns` matching a structured selector or a `-l` text selector.
async fn pods_matching(client: &Client, ns: &str, selector: &Value, text: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let params = ListParams {
        label_selector: text.map(str::to_string),
        ..Default::default()
    };
    let pods = builder::items(&client.list(info, Some(ns), &params).await?);
    if text.is_some() {
        return Ok(pods);
    }
    Ok(pods
        .into_iter()
        .filter(|p| objects::match_label_selector(selector, &objects::labels(p)))
        .collect())
}

/// kubectl's preference among a workload's pods: scheduled, running, ready, more restarts,
/// older.
fn logging_order(pod: &Value) -> (bool, u8, bool, i64, String) {
    let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let phase = match s("/status/phase").as_str() {
        "Running" => 0,
        "Unknown" => 1,
        "Pending" => 2,
        _ => 3,
    };
    let ready = kulisse_core::objects::condition_is_true(pod, "Ready");
    let restarts: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
        .unwrap_or(0);
    (
        s("/spec/nodeName").is_empty(),
        phase,
        !ready,
        -restarts,
        s("/metadata/creationTimestamp"),
    )
}
