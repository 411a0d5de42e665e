//! The cluster's components, each runnable on its own (as in Kubernetes, where every one is
//! its own binary), and all together inside `kulisse up`:
//!
//! - `kulisse controller-manager` (kube-controller-manager)
//! - `kulisse scheduler` (kube-scheduler)
//! - `kulisse kubelet --node-name NAME --runtime mock|podman` (the kubelet of one worker node)
//! - `kulisse proxy --node-name NAME [--data-path]` (kube-proxy of one node; `--data-path`
//!   on one proxy per machine makes it forward Service traffic)
//!
//! Each is only a client of the API server, found through its own kubeconfig (its own
//! identity, [`super::identities`]): they never talk to each other or to the store. Given
//! the admin's kubeconfig, each takes its own from beside it. Ctrl-C (or SIGTERM) stops them.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kulisse_backends::runtime::mock::{MockOptions, MockRuntime};
use kulisse_core::client::Client;
use kulisse_core::client::leaderelection::Timing;
use kulisse_core::runtime::ContainerRuntime;

use super::identities::{Who, own_client};
use crate::GlobalArgs;
use crate::signals::shutdown_on_signal;
use kulisse_core::kubelet::server::ServingTls;

#[derive(Args, Debug, Clone)]
pub struct ControllerManagerArgs {
    /// Teaching profile: a silent node is NotReady after 4 s and its pods are evicted 2 s
    /// later (upstream defaults: 50 s since v1.32, and 300 s); the leader election's lease
    /// lasts 2 s, renewed every 0.5 s, and a leader that has not renewed for 1.5 s stops
    /// (upstream: 15 s, 2 s, 10 s).
    #[arg(long)]
    pub fast_failover: bool,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
    /// At most this many endpoints in one EndpointSlice (kube-controller-manager's flag).
    #[arg(long, default_value_t = kulisse_core::controllers::endpointslice::MAX_ENDPOINTS_PER_SLICE as u64,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_endpoints_per_slice: u64,
}

#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// Teaching profile: the leader election's lease lasts 2 s, renewed every 0.5 s, and a
    /// leader that has not renewed for 1.5 s stops (upstream: 15 s, 2 s, 10 s).
    #[arg(long)]
    pub fast_failover: bool,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// kube-scheduler's and kube-controller-manager's leader election flags.
#[derive(Args, Debug, Clone)]
pub struct LeaderElectionArgs {
    /// Elect a leader among the copies of this component through a Lease in kube-system
    /// before acting, as upstream does by default. `--leader-elect=false` acts at once
    /// (only safe when no other copy runs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub leader_elect: bool,
    /// How long a standby waits after the lease last changed before taking over (whole
    /// seconds; default 15s, 2s with --fast-failover).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_lease_duration: Option<Duration>,
    /// How long the leader may go without renewing before it stops acting (default 10s,
    /// 1.5s with --fast-failover).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_renew_deadline: Option<Duration>,
    /// How often candidates try to acquire and the leader renews (default 2s, 0.5s with
    /// --fast-failover).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_retry_period: Option<Duration>,
}

impl LeaderElectionArgs {
    /// The election's durations (`None`: no election), checked as client-go checks them.
    pub fn timing(&self, fast: bool) -> anyhow::Result<Option<Timing>> {
        if !self.leader_elect {
            return Ok(None);
        }
        let profile = Timing::for_profile(fast);
        let timing = Timing {
            lease_duration: self.leader_elect_lease_duration.unwrap_or(profile.lease_duration),
            renew_deadline: self.leader_elect_renew_deadline.unwrap_or(profile.renew_deadline),
            retry_period: self.leader_elect_retry_period.unwrap_or(profile.retry_period),
        };
        timing
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid leader election settings: {e}"))?;
        Ok(Some(timing))
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Simulated containers: every CRI step, no real processes.
    Mock,
    /// Real containers in podman (through its API socket, see --podman-socket): each pod is a
    /// podman pod with its own loopback pod IP.
    Podman,
}

/// The size of simulated (mock) nodes: what their kubelets report as `capacity` and
/// `allocatable`. Podman nodes report the machine they run on instead.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeSizeArgs {
    /// CPUs of each mock node, as a quantity (`4`, `2500m`). Default: 4.
    #[arg(long, value_name = "QUANTITY", value_parser = parse_node_cpu)]
    pub node_cpu: Option<String>,
    /// Memory of each mock node, as a quantity (`8Gi`, `512Mi`). Default: 8Gi.
    #[arg(long, value_name = "QUANTITY", value_parser = parse_node_memory)]
    pub node_memory: Option<String>,
    /// How many pods each node accepts (`status.capacity.pods`). Default: 110.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub node_pods: Option<u32>,
}

/// A positive quantity (`what` names it in the error).
fn positive_quantity(text: &str, what: &str, amount: fn(&serde_json::Value) -> Option<i64>) -> Result<String, String> {
    let v = serde_json::Value::from(text);
    kulisse_core::objects::quantity::parse_value(&v).map_err(|e| e.to_string())?;
    match amount(&v) {
        Some(n) if n > 0 => Ok(text.to_string()),
        Some(_) => Err(format!("{what} must be greater than zero, not {text:?}")),
        None => Err(format!("{what} {text:?} is too large")),
    }
}

fn parse_node_cpu(text: &str) -> Result<String, String> {
    positive_quantity(text, "the CPU of a node", |v| {
        kulisse_core::objects::quantity::cpu_millis(v).ok()
    })
}

fn parse_node_memory(text: &str) -> Result<String, String> {
    positive_quantity(text, "the memory of a node", |v| {
        kulisse_core::objects::quantity::whole_units(v).ok()
    })
}

impl NodeSizeArgs {
    /// Apply to a kubelet's options. Podman nodes take CPU and memory from the machine
    /// (`--node-cpu`/`--node-memory` are refused there: they would lie about real hardware).
    pub fn apply(&self, opts: &mut kulisse_core::kubelet::KubeletOptions, runtime: RuntimeKind) -> anyhow::Result<()> {
        if let Some(pods) = self.node_pods {
            opts.max_pods = pods;
        }
        match runtime {
            RuntimeKind::Mock => {
                if let Some(cpu) = &self.node_cpu {
                    opts.cpu = cpu.clone();
                }
                if let Some(memory) = &self.node_memory {
                    opts.memory = memory.clone();
                }
            }
            RuntimeKind::Podman => {
                anyhow::ensure!(
                    self.node_cpu.is_none() && self.node_memory.is_none(),
                    "--node-cpu and --node-memory size mock nodes only; podman nodes report the CPUs and memory of this machine"
                );
                let (cpu, memory) = kulisse_core::kubelet::machine::host_capacity()
                    .map_err(|e| anyhow::anyhow!("reading the size of this machine: {e}"))?;
                opts.cpu = cpu;
                opts.memory = memory;
            }
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
pub struct KubeletArgs {
    /// The node this kubelet registers and runs pods for.
    #[arg(long)]
    pub node_name: String,
    /// The container runtime behind the CRI.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Mock)]
    pub runtime: RuntimeKind,
    /// Teaching profile: renew the node Lease every second (upstream: every 10 s).
    #[arg(long)]
    pub fast_failover: bool,
    /// First CrashLoopBackOff delay (doubles up to 5 minutes; upstream: 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub crashloop_backoff: Duration,
    /// Podman's API socket (with --runtime podman). Default: /run/podman/podman.sock as
    /// root, else $XDG_RUNTIME_DIR/podman/podman.sock.
    #[arg(long, value_name = "PATH")]
    pub podman_socket: Option<std::path::PathBuf>,
    /// Let the podman runtime pull images from registries outside this machine (default:
    /// only registries on loopback; offline, use `scripts/build-busybox-image.sh`).
    #[arg(long)]
    pub allow_remote_pulls: bool,
    #[command(flatten)]
    pub size: NodeSizeArgs,
    /// The node's address (its InternalIP), where the kubelet's server listens: loopback, or
    /// the address of the node host it runs on (`kulisse up --node-hosts` passes it).
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub node_ip: std::net::IpAddr,
    /// Where the kubelet keeps its pods' volumes (upstream's --root-dir). Default: a
    /// directory of its own under the temp dir, removed when it stops.
    #[arg(long, value_name = "DIR")]
    pub root_dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// The node whose rules this proxy keeps.
    #[arg(long)]
    pub node_name: String,
    /// Also forward Service traffic (kube-proxy's userspace mode): listen on every
    /// ClusterIP:port and 127.0.0.1:nodePort and relay connections to ready endpoints.
    /// All nodes on one machine share its loopback, so give this to one proxy per machine.
    #[arg(long)]
    pub data_path: bool,
}

/// How asynchronous stages join a trace.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TraceStyleArg {
    /// One trace for the whole apply: each stage is a child of the write that caused it.
    Tree,
    /// One trace per stage, with a span link to its cause.
    Links,
}

impl From<TraceStyleArg> for kulisse_traces::TraceStyle {
    fn from(s: TraceStyleArg) -> Self {
        match s {
            TraceStyleArg::Tree => kulisse_traces::TraceStyle::Tree,
            TraceStyleArg::Links => kulisse_traces::TraceStyle::Links,
        }
    }
}

/// Tracing for a component running as its own process: its spans go to the control plane
/// (and to an OTLP endpoint, if one is configured).
fn component_tracing(service: &str, client: &Client) -> anyhow::Result<kulisse_traces::TracingGuard> {
    let client = client.clone();
    kulisse_traces::init_with(kulisse_traces::InitOptions::new(service).control_plane_sender(
        kulisse_traces::control_plane_sender(move |body| {
            let client = client.clone();
            async move { client.post_otlp(body).await.map_err(|e| e.to_string()) }
        }),
    ))
}

/// `10s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

pub fn controller_options(fast: bool) -> kulisse_core::controllers::Options {
    if fast {
        kulisse_core::controllers::Options::fast()
    } else {
        kulisse_core::controllers::Options::default()
    }
}

pub async fn controller_manager(global: &GlobalArgs, args: ControllerManagerArgs) -> anyhow::Result<ExitCode> {
    let timing = args.leader_election.timing(args.fast_failover)?;
    let (client, _) = own_client(global.kubeconfig.as_deref(), &Who::ControllerManager)?;
    let _tracing = component_tracing("kulisse-controller-manager", &client)?;
    eprintln!(
        "controller manager running against {} (Ctrl-C stops it)",
        client.server()
    );
    let options = kulisse_core::controllers::Options {
        max_endpoints_per_slice: args.max_endpoints_per_slice as usize,
        ..controller_options(args.fast_failover)
    };
    let c = client.clone();
    Ok(super::election::run_process(
        &client,
        kulisse_core::controllers::LEASE_NAME,
        kulisse_core::controllers::leader_election_span,
        timing,
        shutdown_on_signal(),
        |stop| kulisse_core::controllers::run(c, options, stop),
    )
    .await)
}

pub async fn scheduler(global: &GlobalArgs, args: SchedulerArgs) -> anyhow::Result<ExitCode> {
    let timing = args.leader_election.timing(args.fast_failover)?;
    let (client, _) = own_client(global.kubeconfig.as_deref(), &Who::Scheduler)?;
    let _tracing = component_tracing("kulisse-scheduler", &client)?;
    eprintln!("scheduler running against {} (Ctrl-C stops it)", client.server());
    let c = client.clone();
    Ok(super::election::run_process(
        &client,
        kulisse_core::scheduler::LEASE_NAME,
        kulisse_core::scheduler::leader_election_span,
        timing,
        shutdown_on_signal(),
        |stop| run_scheduler(c, stop),
    )
    .await)
}

/// The scheduler until `stop`, its error printed (a standby of it can take over).
pub async fn run_scheduler(client: Client, stop: tokio::sync::watch::Receiver<bool>) {
    if let Err(e) = kulisse_core::scheduler::run(client, kulisse_core::scheduler::Options::default(), stop).await {
        eprintln!("error: the scheduler stopped: {e:#}");
    }
}

/// Build a kubelet for `node` with the mock runtime.
pub fn mock_kubelet(
    client: Client,
    node: &str,
    tls: ServingTls,
    fast: bool,
    crashloop: Duration,
    size: &NodeSizeArgs,
    root_dir: Option<&std::path::Path>,
) -> anyhow::Result<kulisse_core::kubelet::Kubelet> {
    // Each node's mock runtime gets its own seed, so container ids differ across nodes.
    let seed = super::election::stable_hash(node);
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(MockRuntime::new(MockOptions {
        seed,
        ..MockOptions::default()
    }));
    let mut opts = kulisse_core::kubelet::KubeletOptions::new(node);
    opts.tls = Some(tls);
    opts.backoff_base = crashloop;
    if fast {
        opts.lease_renew_interval = Duration::from_secs(1);
        opts.node_status_update_interval = Duration::from_secs(1);
        opts.node_status_report_interval = Duration::from_secs(2);
    }
    size.apply(&mut opts, RuntimeKind::Mock)?;
    opts.root_dir = root_dir.map(std::path::Path::to_path_buf);
    Ok(kulisse_core::kubelet::Kubelet::new(client, runtime, opts))
}

/// Build a kubelet for `node` with the podman runtime on `socket` (`None`: podman's default
/// socket). Everything it creates in podman is labelled with the node and with a cluster id
/// derived from the cluster's CA certificate, so several nodes (and clusters) can share one
/// podman.
pub async fn podman_kubelet(
    client: Client,
    node: &str,
    tls: ServingTls,
    fast: bool,
    crashloop: Duration,
    socket: Option<&std::path::Path>,
    allow_remote_pulls: bool,
    size: &NodeSizeArgs,
    root_dir: Option<&std::path::Path>,
) -> anyhow::Result<kulisse_core::kubelet::Kubelet> {
    use kulisse_backends::runtime::podman::{PodmanOptions, PodmanRuntime, cluster_id_from_ca, default_socket};
    let socket = socket.map(std::path::Path::to_path_buf).unwrap_or_else(default_socket);
    let cluster_id = cluster_id_from_ca(&String::from_utf8_lossy(&tls.ca_pem));
    let mut podman = PodmanOptions::new(socket, node, &cluster_id);
    podman.allow_remote_registries = allow_remote_pulls;
    let runtime = PodmanRuntime::connect(podman)
        .await
        .map_err(|e| anyhow::anyhow!("the podman runtime of {node}: {e}"))?;
    let runtime: Arc<dyn ContainerRuntime> = Arc::new(runtime);
    let mut opts = kulisse_core::kubelet::KubeletOptions::new(node);
    opts.tls = Some(tls);
    opts.backoff_base = crashloop;
    if fast {
        opts.lease_renew_interval = Duration::from_secs(1);
        opts.node_status_update_interval = Duration::from_secs(1);
        opts.node_status_report_interval = Duration::from_secs(2);
    }
    size.apply(&mut opts, RuntimeKind::Podman)?;
    opts.root_dir = root_dir.map(std::path::Path::to_path_buf);
    Ok(kulisse_core::kubelet::Kubelet::new(client, runtime, opts))
}

pub async fn kubelet(global: &GlobalArgs, args: KubeletArgs) -> anyhow::Result<ExitCode> {
    let who = Who::Kubelet(args.node_name.clone());
    let (client, kubeconfig) = own_client(global.kubeconfig.as_deref(), &who)?;
    let _tracing = component_tracing("kulisse-kubelet", &client)?;
    let tls = serving_tls(&kubeconfig)?;
    eprintln!(
        "kubelet {} running against {} (Ctrl-C stops it)",
        args.node_name,
        client.server()
    );
    let kubelet = match args.runtime {
        RuntimeKind::Mock => mock_kubelet(
            client,
            &args.node_name,
            tls,
            args.fast_failover,
            args.crashloop_backoff,
            &args.size,
            args.root_dir.as_deref(),
        )?,
        RuntimeKind::Podman => {
            podman_kubelet(
                client,
                &args.node_name,
                tls,
                args.fast_failover,
                args.crashloop_backoff,
                args.podman_socket.as_deref(),
                args.allow_remote_pulls,
                &args.size,
                args.root_dir.as_deref(),
            )
            .await?
        }
    };
    kubelet.with_node_ip(args.node_ip).run(shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The kubelet API's certificate: the kubelet's own, from its kubeconfig (issued valid for
/// serving too), and the cluster CA its callers must be signed by.
fn serving_tls(kubeconfig: &std::path::Path) -> anyhow::Result<ServingTls> {
    let conn = kulisse_core::client::kubeconfig::Kubeconfig::load(kubeconfig)
        .and_then(|k| k.connection())
        .map_err(anyhow::Error::msg)?;
    match (conn.identity, conn.ca_pem) {
        (Some(identity), Some(ca_pem)) => Ok(ServingTls { identity, ca_pem }),
        _ => anyhow::bail!(
            "{} has no client certificate and cluster CA for the kubelet to serve its API with",
            kubeconfig.display()
        ),
    }
}

pub async fn proxy(global: &GlobalArgs, args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let (client, _) = own_client(global.kubeconfig.as_deref(), &Who::Proxy)?;
    let _tracing = component_tracing("kulisse-proxy", &client)?;
    eprintln!(
        "kube-proxy for {} running against {} (Ctrl-C stops it)",
        args.node_name,
        client.server()
    );
    let opts = kulisse_core::proxy::Options {
        node_name: args.node_name,
        data_path: args.data_path,
    };
    kulisse_core::proxy::run(
        client,
        opts,
        shutdown_on_signal(),
        kulisse_core::proxy::RuleTable::default(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}
