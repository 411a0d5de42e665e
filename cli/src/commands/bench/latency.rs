//! The latency cases of `kulisse bench`: how long one change takes to reach those who wait
//! for it.
//!
//! 4. **Watch delivery** (`--watch 1000x200`): W watches of ConfigMaps open on one API
//!    server, then E ConfigMaps created at a steady 100 per second, and again at 10 per
//!    second ([`WATCH_RATES`]). For every (watch, event)
//!    pair: the time from sending the create to that watch receiving the `ADDED` event, p50
//!    and p99, beside the creates' own latency (sent → acknowledged). Anchor: the issue's
//!    target, p99 ≤ 5 ms with 1,000 watchers; upstream's watch cache fans an event out to
//!    every watcher from memory, and so does kulisse's.
//! 5. **Pod startup** (`--startup 100x1000`): `kulisse up --nodes N --runtime mock`, then P
//!    bare pods created at 100 per second; a watch sees each pod `Running`. The time from
//!    sending the create to that event, p50 and p99. Anchor: Kubernetes' pod startup SLO,
//!    p99 ≤ 5 s (without image pulls; the mock "pulls" in a few milliseconds), and the
//!    issue's target of 50 ms.
//!
//! Both measure in this process, with one clock: the load generator and the watchers are
//! the same program, as clusterloader2's measurements are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use kulisse_core::client::{Client, ListParams};
use serde_json::{Value, json};

use super::{Report, Server, info, quantile_ms};

/// The steady rate of both cases' creates (clusterloader2's default pod throughput).
const RATE_PER_S: u64 = 100;

/// Watches per client connection. A connection carries at most 1,000 streams at kulisse's
/// API server (`HTTP2_MAX_STREAMS_PER_CONNECTION`, as kube-apiserver); when one is full,
/// Go's HTTP/2 transport opens another connection, while hyper's waits for a stream to
/// end, and a watch ends only after its timeout. So the watchers get a client (a
/// connection) per this many, Go's default stream limit, and the creates have room.
const WATCHES_PER_CONNECTION: u32 = 250;

const ANCHOR_WATCH: &str = "issue target: p99 <= 5 ms with 1,000 watchers";
const ANCHOR_STARTUP: &str = "Kubernetes SLO: p99 <= 5 s; issue target: p99 <= 50 ms";

/// Sends `count` creates at `rate` per second, each made by `make(i)`; returns when each was
/// sent and how long each took to be acknowledged. An open loop, as clusterloader2's load:
/// a create is sent on its tick whether or not the earlier ones were answered, and ticks
/// missed while the generator itself was busy are sent at once (the average rate holds).
///
/// Each create runs as a task of its own, so it is sent, and its answer read, while the
/// loop waits for the next tick. (An earlier version kept the creates in a future set that
/// was polled only on ticks: a create's answer was noticed a tick late, which added up to
/// one tick, 10 ms at 100/s, to every latency this bench printed at low rates.)
pub(super) async fn steady_creates(
    client: &Client,
    plural: &str,
    count: usize,
    rate: u64,
    make: impl Fn(usize) -> Value,
) -> anyhow::Result<(Vec<Instant>, Vec<Duration>)> {
    let info = info(plural)?;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(count);
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let (client, obj) = (client.clone(), make(i));
        let at = Instant::now();
        sent.push(at);
        tasks.push(tokio::spawn(async move {
            client.create(info, Some("default"), &obj).await.map(|_| at.elapsed())
        }));
    }
    let mut acked = Vec::with_capacity(count);
    for task in tasks {
        acked.push(task.await.context("a create task")?.context("a create failed")?);
    }
    Ok((sent, acked))
}

/// Print p50 and p99 of `samples` (sorted here) as figures of `case`.
pub(super) fn percentiles(
    report: &mut Report,
    case: &str,
    size: &str,
    what: &str,
    samples: &mut [Duration],
    anchor: &str,
) {
    samples.sort();
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        let ms = quantile_ms(samples, q);
        report.figure(
            case,
            size,
            &format!("{what} {label} ms"),
            ms,
            &format!("{ms:.2} ms"),
            if label == "p99" { anchor } else { "" },
        );
    }
}

/// How the arrivals of one case are reported: how many came, and how long each took from
/// its create being sent.
struct Arrivals<'a> {
    case: &'a str,
    size: &'a str,
    counted: &'a str,
    measured: &'a str,
    anchor: &'a str,
}

impl Arrivals<'_> {
    /// `seen` holds (create index, arrival); `sent[i]` is when create `i` was sent.
    fn report(&self, report: &mut Report, seen: &[(usize, Instant)], expected: usize, sent: &[Instant]) {
        report.figure(
            self.case,
            self.size,
            self.counted,
            seen.len() as f64,
            &format!("{} of {expected}", seen.len()),
            "",
        );
        let mut took: Vec<Duration> = seen
            .iter()
            .map(|(i, at)| at.saturating_duration_since(sent[*i]))
            .collect();
        percentiles(report, self.case, self.size, self.measured, &mut took, self.anchor);
    }
}

// ----- 4. watch delivery ---------------------------------------------------------------------

/// The watch case's rates: clusterloader2's 100/s, where 1,000 watchers keep two CPUs busy
/// (a delivery costs each side about 10 µs), and a tenth of it, where they do not, so the
/// figure is the delivery itself rather than the queue in front of a saturated CPU.
pub(super) const WATCH_RATES: [u64; 2] = [RATE_PER_S, RATE_PER_S / 10];

pub(super) async fn watch_case(
    watchers: u32,
    events: u32,
    rate: u64,
    timeout: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let size = if rate == RATE_PER_S {
        format!("{watchers}x{events}")
    } else {
        format!("{watchers}x{events}@{rate}/s")
    };
    println!();
    println!("watch delivery: {watchers} watches of ConfigMaps, {events} creates at {rate}/s");
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &["--nodes", "0", "--components", "apiserver"]).await?;
    let cms = info("configmaps")?;
    let params = ListParams {
        label_selector: Some("bench=watch".into()),
        ..Default::default()
    };
    let list = server.client.list(cms, Some("default"), &params).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    // Each watcher writes down when it saw each event: (event index, when).
    let seen: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut client = server.client.clone();
    for w in 0..watchers {
        if w > 0 && w % WATCHES_PER_CONNECTION == 0 {
            client = Server::load_generator(&server.kubeconfig)?;
        }
        let stream = client
            .watch(cms, Some("default"), &params, Some(&rv))
            .await
            .context("opening a watch")?;
        tasks.push(tokio::spawn(note_arrivals(stream, events as usize, seen.clone())));
    }
    let cpu_before = (server.proc.cpu_seconds(), super::cpu_seconds_of("self"));
    let (sent, mut acked) = steady_creates(&server.client, "configmaps", events as usize, rate, |i| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": format!("watched-{i}"), "labels": {"bench": "watch"}},
               "data": {"i": i.to_string()}})
    })
    .await?;
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(timeout, all).await.is_err() {
        report.unfinished("watch", &size, "not every watch saw every event in time");
    }
    let cpu_after = (server.proc.cpu_seconds(), super::cpu_seconds_of("self"));
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let expected = watchers as usize * events as usize;
    let arrivals = Arrivals {
        case: "watch",
        size: &size,
        counted: "events delivered",
        measured: "create -> watch",
        anchor: ANCHOR_WATCH,
    };
    arrivals.report(report, &seen, expected, &sent);
    percentiles(report, "watch", &size, "create acknowledged", &mut acked, "");
    cpu_per_delivery(report, &size, seen.len(), cpu_before, cpu_after);
    server.proc.stop().await;
    Ok(())
}

/// One watcher of the watch case: note when each `watched-N` ConfigMap arrives, until
/// `events` have.
async fn note_arrivals(
    mut stream: kulisse_core::client::WatchEvents,
    events: usize,
    seen: Arc<Mutex<Vec<(usize, Instant)>>>,
) {
    let mut mine = Vec::with_capacity(events);
    while mine.len() < events {
        match stream.next().await {
            Some(Ok(e)) if e.kind == "ADDED" => {
                let at = Instant::now();
                let name = e.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
                if let Some(i) = name.strip_prefix("watched-").and_then(|n| n.parse().ok()) {
                    mine.push((i, at));
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    seen.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
}

/// What one delivery cost each side, from the processes' CPU time (seconds, before and after
/// the creates and the deliveries): the API server's (encode, encrypt, write) and the
/// watchers' (read, decrypt, parse), which run in this bench's own process.
fn cpu_per_delivery(
    report: &mut Report,
    size: &str,
    delivered: usize,
    before: (Option<f64>, Option<f64>),
    after: (Option<f64>, Option<f64>),
) {
    let sides = [
        ("server CPU/delivery", before.0.zip(after.0)),
        ("watchers CPU/delivery", before.1.zip(after.1)),
    ];
    for (what, cpu) in sides {
        if let (Some((before, after)), true) = (cpu, delivered > 0) {
            let us = (after - before) * 1e6 / delivered as f64;
            report.figure("watch", size, &format!("{what} us"), us, &format!("{us:.1} µs"), "");
        }
    }
}

// ----- 5. pod startup ------------------------------------------------------------------------

pub(super) async fn startup_case(nodes: u32, pods: u32, timeout: Duration, report: &mut Report) -> anyhow::Result<()> {
    let size = format!("{nodes}x{pods}");
    println!();
    println!("pod startup: kulisse up --nodes {nodes} --runtime mock, {pods} pods created at {RATE_PER_S}/s");
    let dir = tempfile::tempdir()?;
    let nodes_arg = nodes.to_string();
    let server = Server::start(dir.path(), &["--nodes", &nodes_arg, "--runtime", "mock"]).await?;
    let started = Instant::now();
    if super::wait_nodes_ready(&server.client, nodes, started, timeout)
        .await?
        .is_none()
    {
        report.unfinished("startup", &size, "the nodes did not become Ready");
        server.proc.stop().await;
        return Ok(());
    }
    let pod_info = info("pods")?;
    let params = ListParams {
        label_selector: Some("bench=startup".into()),
        ..Default::default()
    };
    let list = server.client.list(pod_info, Some("default"), &params).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let stream = server
        .client
        .watch(pod_info, Some("default"), &params, Some(&rv))
        .await?;
    let running: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let want = pods as usize;
    let watcher = tokio::spawn(note_running(stream, running.clone(), want));
    let (sent, _) = steady_creates(&server.client, "pods", want, RATE_PER_S, |i| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": format!("startup-{i}"), "labels": {"bench": "startup"}},
               "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
    })
    .await?;
    if tokio::time::timeout(timeout, watcher).await.is_err() {
        report.unfinished("startup", &size, "not every pod was seen Running in time");
    }
    let running: Vec<(usize, Instant)> = std::mem::take(&mut *running.lock().unwrap_or_else(|p| p.into_inner()))
        .into_iter()
        .collect();
    let arrivals = Arrivals {
        case: "startup",
        size: &size,
        counted: "pods seen Running",
        measured: "create -> Running",
        anchor: ANCHOR_STARTUP,
    };
    arrivals.report(report, &running, want, &sent);
    server.proc.stop().await;
    Ok(())
}

/// Write down when each `startup-N` pod was first seen `Running`, until `want` were.
async fn note_running(
    mut stream: kulisse_core::client::WatchEvents,
    running: Arc<Mutex<HashMap<usize, Instant>>>,
    want: usize,
) {
    while let Some(Ok(e)) = stream.next().await {
        let phase = e.object.pointer("/status/phase").and_then(Value::as_str);
        let name = e.object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        if phase == Some("Running")
            && let Some(i) = name.strip_prefix("startup-").and_then(|n| n.parse().ok())
        {
            let mut seen = running.lock().unwrap_or_else(|p| p.into_inner());
            seen.entry(i).or_insert_with(Instant::now);
            if seen.len() >= want {
                return;
            }
        }
    }
}
