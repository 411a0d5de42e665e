//! `kulisse demo`: the whole road of one `apply`, in one command, in seconds.
//!
//! It starts a throwaway cluster inside this process (embedded store in a temporary
//! directory, API server on a free loopback port, controller manager, scheduler, three
//! nodes with the mock runtime and their kube-proxies), applies the bundled example app
//! (a Deployment and a Service), narrates every step as the spans arrive, and then shows
//! the pods, kube-proxy's rules and the trace as a waterfall. Everything is removed again
//! at the end. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the same trace also goes to Jaeger.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use kulisse_core::objects;

use super::components::{RuntimeKind, TraceStyleArg};
use super::follow::{SpanSource, follow};
use super::up::{Component, StoreKind, UpArgs};
use crate::GlobalArgs;

/// The example app the demo applies (the same file as `examples/web.yaml`).
pub const EXAMPLE: &str = include_str!("../../../examples/web.yaml");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// How asynchronous stages join the trace: `tree` (one trace) or `links`.
    #[arg(long, value_enum, default_value_t = TraceStyleArg::Tree)]
    pub trace_style: TraceStyleArg,
    /// Width of the trace drawing.
    #[arg(long, default_value_t = 110)]
    pub width: usize,
}

pub async fn run(_global: &GlobalArgs, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tracing = kulisse_traces::init_with(
        kulisse_traces::InitOptions::new("kulisse-cli")
            .route_by_stage(true)
            .trace_style(args.trace_style.into()),
    )?;
    let dir = tempfile::Builder::new().prefix("kulisse-demo-").tempdir()?;
    let up = UpArgs {
        masters: 1,
        data_dir: Some(dir.path().to_path_buf()),
        listen: "127.0.0.1:0".parse()?,
        store: StoreKind::Embedded,
        etcd_endpoints: Vec::new(),
        nodes: 3,
        node_hosts: 0,
        tls_san: Vec::new(),
        kubelet_network: None,
        runtime: RuntimeKind::Mock,
        podman_socket: None,
        allow_remote_pulls: false,
        components: vec![Component::Apiserver, Component::ControllerManager, Component::Scheduler],
        fast_failover: true,
        step: false,
        crashloop_backoff: Duration::from_secs(10),
        trace_style: args.trace_style,
        service_cidr: kulisse_core::apiserver::allocator::DEFAULT_SERVICE_CIDR,
        size: Default::default(),
        serving: Default::default(),
        retention: Default::default(),
    };
    println!("== 1. A throwaway cluster, all in this process ==");
    let cluster = super::up::start(&up, dir.path()).await?;
    println!(
        "API server {} · embedded store in {} · 3 nodes (mock runtime)",
        cluster.url,
        dir.path().display()
    );
    let outcome = story(&cluster, &args).await;
    println!();
    println!("== Cleaning up ==");
    cluster.stop().await;
    let path: PathBuf = dir.path().to_path_buf();
    dir.close()?;
    println!("stopped the cluster and removed {}", path.display());
    if tracing.exporting() {
        println!("the trace was also sent to your OTLP endpoint (Jaeger: pick the service kulisse-cli)");
    }
    tracing.shutdown()?;
    outcome?;
    println!();
    println!("Where to go next:");
    println!("  kulisse up                                   a cluster that stays (Ctrl-C stops it)");
    println!("  kulisse apply -f examples/web.yaml --follow  the same story against it");
    println!("  kulisse trace last                           the waterfall of the last apply");
    println!("  book/                                        the walkthrough, chapter by chapter (mdbook serve book)");
    println!("  README.md                                    running Jaeger to see the trace in a browser");
    Ok(ExitCode::SUCCESS)
}

async fn story(cluster: &super::up::RunningCluster, args: &DemoArgs) -> anyhow::Result<()> {
    let client = &cluster.client;
    // Wait for the nodes, as a learner would before applying anything.
    let nodes = objects::by_gvk("v1", "Node").expect("built-in kind");
    for _ in 0..100 {
        let list = client.list(nodes, None, &Default::default()).await?;
        if list
            .get("items")
            .and_then(serde_json::Value::as_array)
            .map_or(0, Vec::len)
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!();
    println!("== 2. kulisse apply -f examples/web.yaml ==");
    let manifests =
        objects::parse_manifests("examples/web.yaml", EXAMPLE.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let global = GlobalArgs {
        kubeconfig: None,
        namespace: None,
        all_namespaces: false,
    };
    let mut prepared = Vec::new();
    for m in &manifests {
        prepared.push(super::apply::prepare(&global, client, m)?);
    }
    let result =
        super::apply::apply_objects(client, &manifests, &prepared, "examples/web.yaml", "kulisse", false).await?;
    let trace_id = result
        .trace_id
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the apply has no trace id: tracing is off"))?;

    println!();
    println!("== 3. Behind the scenes, step by step (the spans as they arrive) ==");
    follow(
        client,
        SpanSource::Local,
        &trace_id,
        &result.applied,
        Duration::from_secs(60),
    )
    .await?;

    println!();
    println!("== 4. kulisse get pods -o wide ==");
    let pods = objects::by_gvk("v1", "Pod").expect("built-in kind");
    let table = client.table(pods, Some("default"), None, &Default::default()).await?;
    println!("{}", crate::output::render_table(&table, true, false, false));

    println!();
    println!("== 5. kulisse get proxyrules (kube-proxy's forwarding table) ==");
    print!("{}", super::get::proxy_rules(client, None).await?);

    println!();
    println!("== 6. kulisse trace {trace_id} ==");
    // Let the last status writes end before drawing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = kulisse_traces::span_store::global().spans_of_linked(&trace_id);
    print!(
        "{}",
        kulisse_traces::render_waterfall(&summary_spans(&spans), args.width)
    );
    println!(
        "({} spans in all; `kulisse trace` shows every one, `--export` writes them for Jaeger)",
        spans.len()
    );
    Ok(())
}

/// The waterfall of a whole apply has hundreds of spans; the demo draws the milestones:
/// the CLI, the API server's compare and write, controller actions, scheduling decisions,
/// kubelet syncs, runtime steps and proxy syncs (spans whose parents are left out hang
/// under their nearest shown ancestor).
fn summary_spans(spans: &[kulisse_traces::StoredSpan]) -> Vec<kulisse_traces::StoredSpan> {
    use std::collections::HashMap;
    let keep = |s: &kulisse_traces::StoredSpan| {
        matches!(
            s.name.as_str(),
            "cli.apply"
                | "cli.request"
                | "apiserver.compare"
                | "scheduler.schedule_pod"
                | "kubelet.sync_pod"
                | "proxy.sync_rules"
        ) || (s.name.starts_with("controller.")
            && s.name != "controller.reconcile"
            && s.name != "controller.update_status")
            || (s.name.starts_with("runtime.") && s.name != "runtime.pull_image")
            || (s.name == "store.txn" && !s.attr("store.key").unwrap_or("").contains("/events/"))
    };
    let by_id: HashMap<&str, &kulisse_traces::StoredSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    spans
        .iter()
        .filter(|s| keep(s))
        .map(|s| {
            let mut s = s.clone();
            // Re-parent to the nearest kept ancestor.
            let mut parent = s.parent_span_id.clone();
            while let Some(p) = parent.as_deref().and_then(|p| by_id.get(p)) {
                if keep(p) {
                    break;
                }
                parent = p.parent_span_id.clone();
            }
            s.parent_span_id = parent.filter(|p| by_id.get(p.as_str()).is_some_and(|p| keep(p)));
            s
        })
        .collect()
}
