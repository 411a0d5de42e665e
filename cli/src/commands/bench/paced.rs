//! The API server's own costs in `kulisse bench`: write latency at a fixed rate, and what
//! tracing costs.
//!
//! 6. **Paced writes** (`--paced 1000x10`): ConfigMap creates sent at a steady R per second
//!    for S seconds (an open loop: each on its tick, answered or not), first to `kulisse up`
//!    on its embedded store, then to one on a real etcd started in the same run. The achieved
//!    rate and the p50/p99 latency of the acknowledged, durable creates. Anchor: the issue's
//!    target, p99 ≤ 10 ms at 1,000 writes/s (Kubernetes' SLO for mutating calls is p99 ≤ 1 s).
//! 7. **Tracing overhead** (`--tracing 4000`): N traced creates from 64 clients (a user's
//!    writes: each starts a trace at the API server), three times: with no OpenTelemetry spans
//!    at all (`KULISSE_TRACES_FILTER=off`); with every span made and kept in the API server's
//!    own trace store, as `kulisse trace` needs, but not exported (`OTEL_TRACES_EXPORTER=none`);
//!    and with every span also exported over OTLP (`http/protobuf`) to a receiver in this
//!    process, which counts the spans it gets. The throughput lost against the first run is
//!    the figure, beside the API server's CPU per create in each run. Anchor: the issue's
//!    target, ≤ 5 %.
//!
//! The receiver answers every export with `200` and an empty `ExportTraceServiceResponse`
//! (an empty protobuf message is zero bytes): it stands for Jaeger without Jaeger's own work,
//! so the figure is what kulisse pays, not what a collector pays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kulisse_core::client::Client;
use serde_json::json;

use super::latency::{percentiles, steady_creates};
use super::{Report, Server, create_load, start_etcd};

const ANCHOR_PACED: &str = "issue target: p99 <= 10 ms at 1,000 writes/s";
const ANCHOR_TRACING: &str = "issue target: <= 5 % lost with 100 % sampling and OTLP export";

/// Paced creates against the embedded store, then against etcd.
pub(super) async fn paced_case(
    rate: u32,
    seconds: u32,
    etcd: &std::path::Path,
    timeout: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!();
    println!("paced writes: ConfigMap creates at {rate}/s for {seconds} s, each acknowledged once durable");
    let size = format!("{rate}/s");
    let count = (rate * seconds) as usize;
    {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path(), &["--nodes", "0", "--components", "apiserver"]).await?;
        paced_run(&server.client, count, rate, "embedded", &size, timeout, report).await?;
        server.proc.stop().await;
    }
    let dir = tempfile::tempdir()?;
    match start_etcd(etcd, dir.path()).await {
        Ok((etcd_proc, url)) => {
            let server = Server::on_etcd(dir.path(), &url).await?;
            paced_run(&server.client, count, rate, "etcd", &size, timeout, report).await?;
            server.proc.stop().await;
            etcd_proc.stop().await;
        }
        Err(e) => println!("  (no etcd comparison: {e:#})"),
    }
    Ok(())
}

async fn paced_run(
    client: &Client,
    count: usize,
    rate: u32,
    store: &str,
    size: &str,
    timeout: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let make = |i: usize| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": format!("paced-{i}"), "namespace": "default"},
               "data": {"k": "v"}})
    };
    let run = steady_creates(client, "configmaps", count, u64::from(rate), make);
    let (_, mut acked) = tokio::time::timeout(timeout, run)
        .await
        .context("the paced writes did not finish in time")??;
    let achieved = acked.len() as f64 / started.elapsed().as_secs_f64();
    report.figure(
        "paced",
        size,
        &format!("achieved/s ({store})"),
        achieved,
        &format!("{achieved:.0}/s"),
        "",
    );
    let anchor = if store == "embedded" { ANCHOR_PACED } else { "" };
    percentiles(report, "paced", size, &format!("create ({store})"), &mut acked, anchor);
    Ok(())
}

/// The same traced write load without spans and with every span exported.
pub(super) async fn tracing_case(writes: usize, timeout: Duration, report: &mut Report) -> anyhow::Result<()> {
    const CLIENTS: usize = 64;
    println!();
    println!("tracing overhead: {writes} traced ConfigMap creates from {CLIENTS} clients, spans off vs exported");
    let receiver = Receiver::start().await?;
    let endpoint = format!("http://{}", receiver.addr);
    let runs: [(&str, Vec<(&str, &str)>); 3] = [
        ("off", vec![("KULISSE_TRACES_FILTER", "off")]),
        ("kept", vec![("OTEL_TRACES_EXPORTER", "none")]),
        (
            "exported",
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        ),
    ];
    let mut per_s = Vec::new();
    for (name, env) in &runs {
        let dir = tempfile::tempdir()?;
        let server = Server::start_env(dir.path(), &["--nodes", "0", "--components", "apiserver"], env).await?;
        // A user's client, not a component's: each create starts a trace at the API server.
        let client = Client::from_kubeconfig(&server.kubeconfig)?;
        let cpu_before = server.proc.cpu_seconds();
        let load = create_load(&client, writes, CLIENTS, name, timeout).await?;
        let cpu = cpu_before.zip(server.proc.cpu_seconds()).map(|(b, a)| a - b);
        server.proc.stop().await;
        report.figure(
            "tracing",
            &format!("{CLIENTS}clients"),
            &format!("creates/s (spans {name})"),
            load.per_s,
            &format!("{:.0}/s", load.per_s),
            "",
        );
        if let Some(cpu) = cpu {
            // What one create costs the API server's CPUs: the throughput figure also
            // carries the 64 clients, which share this machine.
            let us = cpu / writes as f64 * 1e6;
            report.figure(
                "tracing",
                &format!("{CLIENTS}clients"),
                &format!("API server CPU us/create (spans {name})"),
                us,
                &format!("{us:.0} us"),
                "",
            );
        }
        per_s.push(load.per_s);
    }
    let spans = receiver.spans.load(Ordering::Relaxed);
    report.figure(
        "tracing",
        &format!("{CLIENTS}clients"),
        "spans received",
        spans as f64,
        &format!("{spans} (in {} exports)", receiver.exports.load(Ordering::Relaxed)),
        "",
    );
    let lost = |with: f64| (1.0 - with / per_s[0]) * 100.0;
    report.figure(
        "tracing",
        &format!("{CLIENTS}clients"),
        "lost % (spans kept only)",
        lost(per_s[1]),
        &format!("{:.1} %", lost(per_s[1])),
        "",
    );
    report.figure(
        "tracing",
        &format!("{CLIENTS}clients"),
        "throughput lost %",
        lost(per_s[2]),
        &format!("{:.1} %", lost(per_s[2])),
        ANCHOR_TRACING,
    );
    Ok(())
}

/// An OTLP/HTTP receiver on loopback that counts what it gets and keeps nothing.
struct Receiver {
    addr: std::net::SocketAddr,
    spans: Arc<AtomicU64>,
    exports: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (spans, exports) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, e) = (spans.clone(), exports.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, e) = (s.clone(), e.clone());
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (s, e) = (s.clone(), e.clone());
                    async move {
                        use http_body_util::BodyExt as _;
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let decoded = kulisse_traces::otlp_proto::decode_otlp_protobuf(&body);
                        s.fetch_add(decoded.map_or(0, |d| d.spans.len() as u64), Ordering::Relaxed);
                        e.fetch_add(1, Ordering::Relaxed);
                        let answer = http::Response::builder()
                            .header("content-type", "application/x-protobuf")
                            .body(http_body_util::Full::new(bytes::Bytes::new()));
                        Ok::<_, http::Error>(answer?)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            addr,
            spans,
            exports,
            task,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
