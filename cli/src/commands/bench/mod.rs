//! `kulisse bench`: how far kulisse scales on this machine, each figure beside its anchor.
//!
//! Kubernetes measures its scalability with *clusterloader2* (whole clusters, fake nodes from
//! kubemark or kwok) and *scheduler_perf* (the scheduler alone against an in-memory API
//! server). This command does the same to kulisse, each case in fresh processes it
//! starts itself on loopback, in a temporary directory it removes afterwards:
//!
//! 1. **Whole cluster** (`--cluster 50x2000,500x10000`): `kulisse up --nodes N --runtime mock`
//!    in one process, then one Deployment of R replicas. It reports the time until every node
//!    is `Ready`, until every replica is available, the pods per second, the peak resident
//!    memory of that process (the kernel's `VmHWM`) and the size of the store file.
//! 2. **Scheduler alone** (`--scheduler 5000x10000`, scheduler_perf's `SchedulingBasic`): an
//!    API server with N Node objects and P pending pods (cpu 100m, memory 500Mi), then
//!    `kulisse scheduler` started as its own process. A watch sees each bind: pods per second
//!    and the p50/p99 time from the scheduler's start (when every pod entered its queue) to
//!    the pod's bind.
//! 3. **Durable writes** (`--writes 2000 --clients 1,64`): ConfigMap creates through the API
//!    server, on the embedded store and on a real etcd this command starts for the comparison
//!    (`--etcd`, default `etcd` from the PATH): throughput and p50/p99 latency.
//!
//! 4. **Watch delivery** and 5. **pod startup** (`--watch 1000x200`, `--startup 100x1000`):
//!    the time from a create to the watchers that see it ([`latency`]).
//! 6. **Paced writes** and 7. **tracing overhead** (`--paced 1000x10`, `--tracing 4000`):
//!    write latency at a fixed rate beside etcd's, and the throughput that exporting every
//!    span costs ([`paced`]).
//! 8. **Growth over time** (`--soak 100x30`, off by default: it takes half an hour): the
//!    store file and the memory of a cluster under churn, after compaction ([`soak`]).
//!
//! `--plot DIR` draws the figures as SVG bar charts ([`plot`]), also from an earlier run's
//! `--out` file (`--from FILE`).
//!
//! Every line prints kulisse's figure next to its anchor: a figure from the same run where
//! one can run here (etcd), otherwise the published upstream figure. It is a benchmark, not a
//! test: nothing passes or fails on a timing; numbers on a shared machine are noisy, so compare
//! runs made in the same conditions. `--out FILE` also writes every figure as tab-separated
//! `case  size  figure  value` lines, for plots.
//!
//! Build it in release mode: `scripts/bench.sh` does (`cargo build --release`, then this).
//! The child processes are the same binary as this one (`/proc/self/exe`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects::{ResourceInfo, registry};
use serde_json::{Value, json};

mod latency;
mod paced;
mod plot;
mod soak;

/// Published anchors (upstream Kubernetes and its test tools).
const ANCHOR_CL2_PODS_PER_S: &str = "clusterloader2 gate: 100 pods/s";
const ANCHOR_TARGET_CLUSTER: &str = "issue target: 150,000 pods in <= 120 s (1,250 pods/s), RSS <= 2 GiB";
const ANCHOR_SCHEDULER: &str = "kube-scheduler SchedulingBasic 5000 nodes: >= 680 pods/s (CI threshold); target 5,000";
const ANCHOR_NODES: &str = "kwok: 1,000 nodes / 100,000 pods on a laptop";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Whole-cluster sizes, NODESxREPLICAS, comma-separated (`none` skips them).
    #[arg(long, default_value = "50x2000,500x10000", value_name = "NxR,...")]
    pub cluster: String,
    /// Scheduler workload, NODESxPODS (`none` skips it).
    #[arg(long, default_value = "5000x10000", value_name = "NxP")]
    pub scheduler: String,
    /// Durable creates per client count (`0` skips the write benchmark).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub writes: usize,
    /// Concurrent writers, comma-separated.
    #[arg(long, default_value = "1,64", value_delimiter = ',', value_name = "N,...")]
    pub clients: Vec<usize>,
    /// Watch delivery, WATCHERSxEVENTS: that many watches, that many creates at 100/s and
    /// again at 10/s (`none` skips it).
    #[arg(long, default_value = "1000x200", value_name = "WxE")]
    pub watch: String,
    /// Pod startup, NODESxPODS: a cluster of that many mock nodes, pods created at 100/s
    /// (`none` skips it).
    #[arg(long, default_value = "100x1000", value_name = "NxP")]
    pub startup: String,
    /// Paced writes, RATExSECONDS: creates at that rate for that long, on the embedded store
    /// and on etcd (`none` skips it).
    #[arg(long, default_value = "1000x10", value_name = "RxS")]
    pub paced: String,
    /// Traced creates from 64 clients, once without spans and once exporting every span
    /// (`0` skips the tracing overhead case).
    #[arg(long, default_value_t = 4000, value_name = "N")]
    pub tracing: usize,
    /// A soak, NODESxMINUTES: a cluster under churn for that long, its store file and memory
    /// sampled every minute (`none`, the default, skips it; `scripts/bench.sh` runs 100x30).
    #[arg(long, default_value = "none", value_name = "NxM")]
    pub soak: String,
    /// The etcd binary started for the comparison (skipped with a note if missing).
    #[arg(long, default_value = "etcd", value_name = "PATH")]
    pub etcd: PathBuf,
    /// Give up on one case after this many seconds (it is reported as unfinished).
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub timeout: u64,
    /// A quick run: 50x2000 cluster, 500x2000 scheduler, 500 writes, 100x100 watch,
    /// 10x200 startup, 200x5 paced, 1000 traced.
    #[arg(long)]
    pub quick: bool,
    /// The kulisse binary whose `up` and `scheduler` are measured (default: this one). Compare
    /// two builds in the same conditions by running the bench once with each.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Also write every figure as tab-separated lines to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw the figures as SVG bar charts into this directory (after the run, or from
    /// `--from`).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Measure nothing: draw the charts of an earlier run's `--out` file (with `--plot`).
    #[arg(long, value_name = "FILE", requires = "plot")]
    pub from: Option<PathBuf>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(dir)) = (&args.from, &args.plot) {
        let tsv = std::fs::read_to_string(from).with_context(|| format!("reading {}", from.display()))?;
        for file in plot::write(&tsv, dir)? {
            println!("wrote {file}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plan = Plan::of(&args)?;
    if args.clients.contains(&0) {
        bail!("--clients: every count must be at least 1");
    }
    raise_fd_limit();
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this program")?,
    };
    let _ = EXE.set(binary);
    let timeout = Duration::from_secs(args.timeout);
    let mut report = Report::default();
    println!(
        "kulisse bench on {} ({} CPUs), {}, measuring {}",
        hostname(),
        cpus(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        exe().display()
    );
    for (nodes, replicas) in plan.clusters {
        cluster_case(nodes, replicas, timeout, &mut report).await?;
    }
    for (nodes, pods) in plan.scheduler {
        scheduler_case(nodes, pods, timeout, &mut report).await?;
    }
    if plan.writes > 0 {
        writes_case(plan.writes, &args.clients, &args.etcd, timeout, &mut report).await?;
    }
    for (watchers, events) in plan.watch {
        for rate in latency::WATCH_RATES {
            latency::watch_case(watchers, events, rate, timeout, &mut report).await?;
        }
    }
    for (nodes, pods) in plan.startup {
        latency::startup_case(nodes, pods, timeout, &mut report).await?;
    }
    for (rate, seconds) in plan.paced {
        paced::paced_case(rate, seconds, &args.etcd, timeout, &mut report).await?;
    }
    if plan.traced > 0 {
        paced::tracing_case(plan.traced, timeout, &mut report).await?;
    }
    for (nodes, minutes) in plan.soak {
        soak::soak_case(nodes, minutes, &mut report).await?;
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &report.tsv).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(dir) = &args.plot {
        for file in plot::write(&report.tsv, dir)? {
            println!("wrote {file}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The cases to run, with their sizes: the arguments', or `--quick`'s.
struct Plan {
    clusters: Vec<(u32, u32)>,
    scheduler: Vec<(u32, u32)>,
    writes: usize,
    watch: Vec<(u32, u32)>,
    startup: Vec<(u32, u32)>,
    paced: Vec<(u32, u32)>,
    traced: usize,
    soak: Vec<(u32, u32)>,
}

impl Plan {
    fn of(args: &BenchArgs) -> anyhow::Result<Plan> {
        let pick = |quick: &str, given: &str| {
            if args.quick {
                quick.to_string()
            } else {
                given.to_string()
            }
        };
        Ok(Plan {
            clusters: parse_sizes(&pick("50x2000", &args.cluster)).context("--cluster")?,
            scheduler: parse_sizes(&pick("500x2000", &args.scheduler)).context("--scheduler")?,
            writes: if args.quick { 500 } else { args.writes },
            watch: parse_sizes(&pick("100x100", &args.watch)).context("--watch")?,
            startup: parse_sizes(&pick("10x200", &args.startup)).context("--startup")?,
            paced: parse_sizes(&pick("200x5", &args.paced)).context("--paced")?,
            traced: if args.quick { 1000 } else { args.tracing },
            soak: parse_sizes(&args.soak).context("--soak")?,
        })
    }
}

/// The binary the children run (`--binary`, else this one).
static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn exe() -> &'static Path {
    EXE.get().map(PathBuf::as_path).unwrap_or(Path::new("/proc/self/exe"))
}

/// `50x2000,500x10000` → `[(50, 2000), (500, 10000)]`; `none` → `[]`.
fn parse_sizes(text: &str) -> anyhow::Result<Vec<(u32, u32)>> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|s| {
            let (a, b) = s
                .trim()
                .split_once('x')
                .with_context(|| format!("{s:?} is not NxM (e.g. 50x2000)"))?;
            let a: u32 = a.parse().with_context(|| format!("{a:?} in {s:?} is not a number"))?;
            let b: u32 = b.parse().with_context(|| format!("{b:?} in {s:?} is not a number"))?;
            Ok((a, b))
        })
        .collect()
}

/// Figures printed as they come, and kept for `--out`.
#[derive(Default)]
struct Report {
    tsv: String,
}

impl Report {
    fn figure(&mut self, case: &str, size: &str, name: &str, value: f64, shown: &str, anchor: &str) {
        let _ = writeln!(self.tsv, "{case}\t{size}\t{name}\t{value}");
        if anchor.is_empty() {
            println!("  {name:<28} {shown}");
        } else {
            println!("  {name:<28} {shown:<22} | {anchor}");
        }
    }

    fn unfinished(&mut self, case: &str, size: &str, what: &str) {
        let _ = writeln!(self.tsv, "{case}\t{size}\tunfinished\t{what}");
        println!("  did not finish: {what}");
    }
}

// ----- processes -----------------------------------------------------------------------------

/// A child process of this benchmark (this same binary, or etcd), killed when dropped.
struct Proc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(program: &Path, args: &[String], log: PathBuf) -> anyhow::Result<Proc> {
        Proc::spawn_env(program, args, &[], log)
    }

    /// As [`Proc::spawn`], with `env` added to this process' environment.
    fn spawn_env(program: &Path, args: &[String], env: &[(&str, &str)], log: PathBuf) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Proc { child, log })
    }

    /// CPU time this process has used so far, user and system, in seconds.
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.child.id()?.to_string())
    }

    /// Peak resident memory so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// Resident memory now (`VmRSS`), in bytes.
    fn rss(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// A `kB` line of `/proc/PID/status`.
    fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then SIGKILL if it is still there after ten seconds.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// The last lines of its output, for an error message.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// A `kulisse up` in its own process and data dir, and a client for it.
struct Server {
    proc: Proc,
    client: Client,
    kubeconfig: PathBuf,
    data_dir: PathBuf,
}

impl Server {
    async fn start(dir: &Path, extra: &[&str]) -> anyhow::Result<Server> {
        Server::start_env(dir, extra, &[]).await
    }

    /// As [`Server::start`], with `env` added to the environment of `kulisse up`.
    async fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let data_dir = dir.join("data");
        let port = super::cluster_port()?;
        let mut args: Vec<String> = vec![
            "up".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Proc::spawn_env(exe(), &args, env, dir.join("up.log"))?;
        let kubeconfig = data_dir.join("kubeconfig");
        let start = Instant::now();
        let ns = registry::lookup("namespaces").context("the registry has no namespaces")?;
        loop {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("kulisse up did not answer within 120 s:\n{}", proc.tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The kubeconfig is written (in this fresh data dir) once the API server listens.
            let Ok(client) = Server::load_generator(&kubeconfig) else {
                continue;
            };
            if client.list(ns, None, &ListParams::default()).await.is_ok() {
                return Ok(Server {
                    proc,
                    client,
                    kubeconfig,
                    data_dir,
                });
            }
        }
    }

    /// A client of the bench, with a connection of its own. A load generator, like upstream's
    /// scheduler_perf: its thousands of creates are background writes (a component's
    /// User-Agent), not a trace each.
    fn load_generator(kubeconfig: &Path) -> anyhow::Result<Client> {
        Ok(Client::from_kubeconfig(kubeconfig)?.for_component("bench", ""))
    }

    /// An API server alone (no nodes, no controllers) on the etcd at `url`.
    async fn on_etcd(dir: &Path, url: &str) -> anyhow::Result<Server> {
        let args = [
            "--nodes",
            "0",
            "--components",
            "apiserver",
            "--store",
            "etcd",
            "--etcd-endpoints",
            url,
        ];
        Server::start(dir, &args).await
    }

    /// How many spans the server's trace store keeps (`GET /apis/kulisse.dev/v1/traces`, the
    /// sum of each trace's `span_count`); `None` if it cannot be read.
    async fn kept_spans(&self) -> Option<u64> {
        let path = kulisse_core::apiserver::traces::TRACES_API_PATH;
        let resp = self.client.request(http::Method::GET, path, &[], None).await.ok()?;
        let list: Value = serde_json::from_slice(&resp.body).ok()?;
        let items = list.get("items")?.as_array()?;
        Some(items.iter().filter_map(|t| t.get("spanCount")?.as_u64()).sum())
    }

    fn store_bytes(&self) -> u64 {
        std::fs::metadata(self.data_dir.join("store.redb"))
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

/// CPU time used by process `pid` (or `self`), user and system, in seconds: fields 14 and 15
/// of `/proc/PID/stat`, in clock ticks.
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// In-process nodes hold a few connections each; allow as many descriptors as the hard limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct; children inherit the raised soft limit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this machine".into())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn info(plural: &str) -> anyhow::Result<&'static ResourceInfo> {
    registry::lookup(plural).with_context(|| format!("the registry has no {plural}"))
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The `q`-quantile (0..=1) of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

// ----- 1. whole cluster ----------------------------------------------------------------------

async fn cluster_case(nodes: u32, replicas: u32, timeout: Duration, report: &mut Report) -> anyhow::Result<()> {
    let size = format!("{nodes}x{replicas}");
    println!();
    println!("whole cluster: kulisse up --nodes {nodes} --runtime mock, one Deployment of {replicas} replicas");
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let nodes_arg = nodes.to_string();
    let server = Server::start(dir.path(), &["--nodes", &nodes_arg, "--runtime", "mock"]).await?;
    let api_up = started.elapsed();
    report.figure(
        "cluster",
        &size,
        "API server answering",
        api_up.as_secs_f64(),
        &format!("{:.1} s", api_up.as_secs_f64()),
        "",
    );

    let ready = wait_nodes_ready(&server.client, nodes, started, timeout).await?;
    match ready {
        Some(t) => report.figure(
            "cluster",
            &size,
            "all nodes Ready",
            t.as_secs_f64(),
            &format!("{:.1} s", t.as_secs_f64()),
            ANCHOR_NODES,
        ),
        None => {
            report.unfinished(
                "cluster",
                &size,
                &format!("not every node Ready within {} s", timeout.as_secs()),
            );
            server.proc.stop().await;
            return Ok(());
        }
    }

    let deployments = info("deployments")?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
            }
        }
    });
    let created = Instant::now();
    server.client.create(deployments, Some("default"), &deployment).await?;
    let mut last_print = Instant::now();
    let done = loop {
        if created.elapsed() > timeout {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(d) = server.client.get(deployments, Some("default"), "bench").await else {
            continue;
        };
        let available = d
            .pointer("/status/availableReplicas")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if available >= u64::from(replicas) {
            break Some(created.elapsed());
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            last_print = Instant::now();
            println!(
                "  ... {available}/{replicas} available after {:.0} s (peak RSS so far {})",
                created.elapsed().as_secs_f64(),
                mib(server.proc.peak_rss().unwrap_or(0))
            );
        }
    };
    match done {
        Some(t) => {
            let secs = t.as_secs_f64();
            report.figure(
                "cluster",
                &size,
                "all replicas available",
                secs,
                &format!("{secs:.1} s"),
                ANCHOR_TARGET_CLUSTER,
            );
            let rate = f64::from(replicas) / secs;
            report.figure(
                "cluster",
                &size,
                "pods/s",
                rate,
                &format!("{rate:.0} pods/s"),
                ANCHOR_CL2_PODS_PER_S,
            );
        }
        None => report.unfinished(
            "cluster",
            &size,
            &format!("not every replica available within {} s", timeout.as_secs()),
        ),
    }
    let rss = server.proc.peak_rss().unwrap_or(0);
    report.figure(
        "cluster",
        &size,
        "peak RSS",
        rss as f64,
        &mib(rss),
        "issue target: <= 2 GiB at 5,000 nodes / 150,000 pods",
    );
    let store = server.store_bytes();
    report.figure("cluster", &size, "store file", store as f64, &mib(store), "");
    server.proc.stop().await;
    Ok(())
}

/// Poll the nodes until `want` of them are `Ready`; the time since `since`, or `None`.
async fn wait_nodes_ready(
    client: &Client,
    want: u32,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let nodes = info("nodes")?;
    let mut last_print = Instant::now();
    loop {
        if since.elapsed() > timeout {
            return Ok(None);
        }
        let ready = match client.list(nodes, None, &ListParams::default()).await {
            Ok(list) => count_ready(&list),
            Err(_) => 0,
        };
        if ready >= want as usize {
            return Ok(Some(since.elapsed()));
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            last_print = Instant::now();
            println!(
                "  ... {ready}/{want} nodes Ready after {:.0} s",
                since.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn count_ready(list: &Value) -> usize {
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    items
        .iter()
        .filter(|n| kulisse_core::objects::condition_is_true(n, "Ready"))
        .count()
}

// ----- 2. the scheduler alone ----------------------------------------------------------------

async fn scheduler_case(nodes: u32, pods: u32, timeout: Duration, report: &mut Report) -> anyhow::Result<()> {
    let size = format!("{nodes}x{pods}");
    println!();
    println!(
        "scheduler alone: {nodes} Node objects, {pods} pending pods (cpu 100m, memory 500Mi), then kulisse scheduler"
    );
    let dir = tempfile::tempdir()?;
    let server = Server::start(dir.path(), &["--nodes", "0", "--components", "apiserver"]).await?;
    let node_info = info("nodes")?;
    let pod_info = info("pods")?;
    let client = &server.client;
    futures::stream::iter(1..=nodes)
        .map(|i| async move { client.create(node_info, None, &fake_node(i)).await })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .context("creating the Node objects")?;
    futures::stream::iter(1..=pods)
        .map(|i| async move { client.create(pod_info, Some("default"), &pending_pod(i)).await })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .context("creating the pending pods")?;
    let list = client.list(pod_info, Some("default"), &ListParams::default()).await?;
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let mut watch = client
        .watch(pod_info, Some("default"), &ListParams::default(), Some(&rv))
        .await?;

    let sched_args = vec![
        "scheduler".to_string(),
        "--kubeconfig".into(),
        server.kubeconfig.display().to_string(),
    ];
    let started = Instant::now();
    let scheduler = Proc::spawn(exe(), &sched_args, dir.path().join("scheduler.log"))?;
    let mut bound: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut latencies = Vec::with_capacity(pods as usize);
    let deadline = tokio::time::Instant::now() + timeout;
    while bound.len() < pods as usize {
        let event = match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(e))) => e,
            Ok(Some(Err(e))) => bail!("the watch of pods failed: {e}"),
            Ok(None) => {
                // The watch ended (timeout on the server): watch again from the newest list.
                let list = client.list(pod_info, Some("default"), &ListParams::default()).await?;
                let rv = list
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                for p in list.get("items").and_then(Value::as_array).into_iter().flatten() {
                    if p.pointer("/spec/nodeName").is_some_and(|n| n.is_string())
                        && bound.insert(kulisse_core::objects::name(p).unwrap_or("").to_string())
                    {
                        latencies.push(started.elapsed());
                    }
                }
                watch = client
                    .watch(pod_info, Some("default"), &ListParams::default(), Some(rv))
                    .await?;
                continue;
            }
            Err(_) => break,
        };
        if event.object.pointer("/spec/nodeName").is_some_and(|n| n.is_string())
            && bound.insert(kulisse_core::objects::name(&event.object).unwrap_or("").to_string())
        {
            latencies.push(started.elapsed());
        }
    }
    let rss = scheduler.peak_rss().unwrap_or(0);
    if (bound.len() as u32) < pods {
        report.unfinished(
            "scheduler",
            &size,
            &format!(
                "{} of {pods} pods bound within {} s\n{}",
                bound.len(),
                timeout.as_secs(),
                scheduler.tail()
            ),
        );
    } else {
        latencies.sort();
        let first = latencies[0];
        let last = latencies[latencies.len() - 1];
        let since_start = f64::from(pods) / last.as_secs_f64();
        report.figure(
            "scheduler",
            &size,
            "pods/s (start to last bind)",
            since_start,
            &format!("{since_start:.0} pods/s"),
            ANCHOR_SCHEDULER,
        );
        let span = (last - first).as_secs_f64().max(1e-3);
        let binds = f64::from(pods - 1) / span;
        report.figure(
            "scheduler",
            &size,
            "pods/s (first to last bind)",
            binds,
            &format!("{binds:.0} pods/s"),
            "",
        );
        report.figure(
            "scheduler",
            &size,
            "first bind after",
            first.as_secs_f64(),
            &format!("{:.2} s", first.as_secs_f64()),
            "",
        );
        let (p50, p99) = (quantile_ms(&latencies, 0.5), quantile_ms(&latencies, 0.99));
        report.figure(
            "scheduler",
            &size,
            "queue -> bind p50",
            p50,
            &format!("{p50:.0} ms"),
            "all pods queue when the scheduler starts",
        );
        report.figure(
            "scheduler",
            &size,
            "queue -> bind p99",
            p99,
            &format!("{p99:.0} ms"),
            "",
        );
    }
    report.figure("scheduler", &size, "scheduler peak RSS", rss as f64, &mib(rss), "");
    scheduler.stop().await;
    server.proc.stop().await;
    Ok(())
}

/// A Node as a kubelet would register it: scheduler_perf's default node (4 CPUs, 32Gi, 110 pods), Ready.
fn fake_node(i: u32) -> Value {
    let resources = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("bench-node-{i}"), "labels": {"kubernetes.io/hostname": format!("bench-node-{i}")}},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}]
        }
    })
}

/// scheduler_perf's default pod: one container requesting cpu 100m and memory 500Mi.
fn pending_pod(i: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("bench-pod-{i}"), "namespace": "default"},
        "spec": {"containers": [{
            "name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}
        }]}
    })
}

// ----- 3. durable writes ---------------------------------------------------------------------

async fn writes_case(
    writes: usize,
    clients: &[usize],
    etcd: &Path,
    timeout: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    println!();
    println!("durable writes: {writes} ConfigMap creates through the API server per client count");
    let mut embedded = Vec::new();
    {
        let dir = tempfile::tempdir()?;
        let server = Server::start(dir.path(), &["--nodes", "0", "--components", "apiserver"]).await?;
        for &c in clients {
            embedded.push(create_load(&server.client, writes, c, "embedded", timeout).await?);
        }
        server.proc.stop().await;
    }
    let mut etcd_results = Vec::new();
    let dir = tempfile::tempdir()?;
    match start_etcd(etcd, dir.path()).await {
        Ok((etcd_proc, url)) => {
            let server = Server::on_etcd(dir.path(), &url).await?;
            for &c in clients {
                etcd_results.push(create_load(&server.client, writes, c, "etcd", timeout).await?);
            }
            server.proc.stop().await;
            etcd_proc.stop().await;
        }
        Err(e) => println!("  (no etcd comparison: {e:#})"),
    }
    report_writes(clients, &embedded, &etcd_results, report);
    Ok(())
}

/// Print the write figures per client count, each beside etcd's from the same run.
fn report_writes(clients: &[usize], embedded: &[Load], etcd: &[Load], report: &mut Report) {
    type Pick = fn(&Load) -> f64;
    let rows: [(&str, Pick, &str, usize); 3] = [
        ("creates/s (embedded)", |l| l.per_s, "/s", 0),
        ("p50 ms (embedded)", |l| l.p50, " ms", 1),
        ("p99 ms (embedded)", |l| l.p99, " ms", 1),
    ];
    for (i, &c) in clients.iter().enumerate() {
        let size = format!("{c}clients");
        let e = &embedded[i];
        let anchor = etcd.get(i);
        println!("  {c} client(s):");
        for (name, pick, unit, decimals) in rows {
            let vs = anchor
                .map(|a| format!("etcd in this run: {:.1}{unit}", pick(a)))
                .unwrap_or_else(|| "etcd: not run".into());
            let shown = format!("{:.*}{unit}", decimals, pick(e));
            report.figure("writes", &size, name, pick(e), &shown, &vs);
        }
        if let Some(a) = anchor {
            let ratio = e.per_s / a.per_s;
            report.figure(
                "writes",
                &size,
                "embedded / etcd",
                ratio,
                &format!("{ratio:.2}x"),
                "issue target at 64 clients: >= 1.0x",
            );
            let _ = writeln!(report.tsv, "writes\t{size}\tcreates/s (etcd)\t{}", a.per_s);
            let _ = writeln!(report.tsv, "writes\t{size}\tp99 ms (etcd)\t{}", a.p99);
        }
    }
}

struct Load {
    per_s: f64,
    p50: f64,
    p99: f64,
}

/// `writes` creates spread over `clients` concurrent writers; latency of each.
async fn create_load(
    client: &Client,
    writes: usize,
    clients: usize,
    tag: &str,
    timeout: Duration,
) -> anyhow::Result<Load> {
    let cm = info("configmaps")?;
    let started = Instant::now();
    let per_client = writes.div_ceil(clients);
    let work = (0..clients).map(|c| {
        let client = client.clone();
        async move {
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let obj = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("{tag}-{clients}-{c}-{i}"), "namespace": "default"},
                    "data": {"k": "v"}
                });
                let t = Instant::now();
                client.create(cm, Some("default"), &obj).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }
    });
    let all = tokio::time::timeout(timeout, futures::future::try_join_all(work))
        .await
        .context("the writes did not finish in time")??;
    let elapsed = started.elapsed().as_secs_f64();
    let mut lat: Vec<Duration> = all.into_iter().flatten().collect();
    lat.sort();
    Ok(Load {
        per_s: lat.len() as f64 / elapsed,
        p50: quantile_ms(&lat, 0.5),
        p99: quantile_ms(&lat, 0.99),
    })
}

/// Start etcd on free loopback ports in `dir`; its process and client URL.
async fn start_etcd(program: &Path, dir: &Path) -> anyhow::Result<(Proc, String)> {
    let (client_port, peer_port) = (super::cluster_port()?, super::cluster_port()?);
    let url = format!("http://127.0.0.1:{client_port}");
    let args: Vec<String> = [
        "--data-dir",
        &dir.join("etcd").display().to_string(),
        "--listen-client-urls",
        &url,
        "--advertise-client-urls",
        &url,
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer_port}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer_port}"),
        "--initial-cluster",
        &format!("default=http://127.0.0.1:{peer_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn(program, &args, dir.join("etcd.log"))?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if tokio::net::TcpStream::connect(("127.0.0.1", client_port)).await.is_ok() {
            return Ok((proc, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd did not listen within 30 s:\n{}", proc.tail())
}
