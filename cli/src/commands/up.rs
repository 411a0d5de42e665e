//! `kulisse up`: run the control plane in the foreground (what `kube-apiserver` plus its
//! etcd are in a real cluster).
//!
//! It opens the store (an embedded redb file in the data dir, or a real etcd), makes sure
//! the system namespaces exist, listens on loopback, and writes `<data-dir>/kubeconfig`
//! (mode 0600) with a random admin token for you and kubectl. Every component gets an
//! identity of its own instead ([`super::identities`]): a certificate and a kubeconfig
//! (`controller-manager.conf`, `scheduler.conf`, `kube-proxy.conf`, `kubelet-node-N.conf`),
//! and the in-process components log in with those, never with the token. Restarting on the
//! same data dir keeps the objects, the token, the certificates and the kubeconfigs. Ctrl-C
//! stops it cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use kulisse_backends::store::{embedded::EmbeddedStore, etcd::EtcdStore};
use kulisse_core::apiserver::{self, ApiServer};
use kulisse_core::client::Client;
use kulisse_core::client::kubeconfig::{self, Kubeconfig};
use kulisse_core::store::Store;
use std::time::Duration;

use super::components::{RuntimeKind, TraceStyleArg, parse_duration};
use super::election;
use kulisse_core::client::leaderelection::Timing;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many masters: 1 runs the whole control plane in this process (with the embedded
    /// store, or --store etcd); 3 (or 5, 7) runs as many etcd members, API servers behind
    /// HAProxy, controller managers and schedulers, each its own process (needs Debian's
    /// etcd and haproxy). `kulisse ps` lists them.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub masters: u32,
    /// Where the cluster keeps its state, token and kubeconfig.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on. Keep it on loopback: anyone who can reach it and
    /// holds the token controls the cluster. Ports below 1024 need root.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// More addresses the API server's certificate is valid for, comma-separated (kubeadm's
    /// `certSANs`; `--node-hosts` adds the hub's address to each API server's).
    #[arg(long, value_delimiter = ',', value_name = "IP,...")]
    pub tls_san: Vec<std::net::IpAddr>,
    /// The network namespace (a file, `/run/netns/NAME`) this API server reaches kubelets
    /// from, when they run on node hosts (kulisse only; `--node-hosts` passes it).
    #[arg(long, value_name = "PATH")]
    pub kubelet_network: Option<PathBuf>,
    /// Which store keeps the cluster's objects.
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// etcd endpoints, comma-separated (with --store etcd).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URL,..."
    )]
    pub etcd_endpoints: Vec<String>,
    /// How many worker nodes (kubelet + kube-proxy each) to run in this process, named
    /// node-1, node-2, ... `--nodes 0` runs none (start `kulisse kubelet` separately).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub nodes: u32,
    /// How many more nodes to run on hosts of their own (with --masters 3): each in a network
    /// namespace joined to a hub by a virtual cable, numbered after the --nodes ones.
    /// `kulisse partition node-N` cuts a host off, `kulisse heal node-N` plugs it back. Needs
    /// root; mock runtime only.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub node_hosts: u32,
    /// The container runtime of the in-process nodes.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Mock)]
    pub runtime: RuntimeKind,
    /// Podman's API socket (with --runtime podman). Default: /run/podman/podman.sock as
    /// root, else $XDG_RUNTIME_DIR/podman/podman.sock.
    #[arg(long, value_name = "PATH")]
    pub podman_socket: Option<PathBuf>,
    /// Let the podman runtime pull images from registries outside this machine (default:
    /// only registries on loopback; offline, use `scripts/build-busybox-image.sh`).
    #[arg(long)]
    pub allow_remote_pulls: bool,
    /// Which control-plane components run in this process. Leave one out to run it as its own
    /// process (`kulisse controller-manager`, `kulisse scheduler`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "apiserver,controller-manager,scheduler"
    )]
    pub components: Vec<Component>,
    /// Teaching profile: nodes renew their Lease every second, a silent node is NotReady
    /// after 4 s and its pods are evicted 2 s later (upstream: 10 s, 50 s, 300 s).
    #[arg(long)]
    pub fast_failover: bool,
    /// Step mode: start with every component's writes held at the API server until
    /// `kulisse step next` (or `continue`) lets them through (kulisse only).
    #[arg(long)]
    pub step: bool,
    /// First CrashLoopBackOff delay of the in-process kubelets (doubles up to 5 minutes).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub crashloop_backoff: Duration,
    /// How asynchronous stages join a trace: `tree` (one trace per apply) or `links` (one
    /// trace per stage, linked to its cause, as upstream Kubernetes proposes).
    #[arg(long, value_enum, default_value_t = TraceStyleArg::Tree)]
    pub trace_style: TraceStyleArg,
    /// Where Service ClusterIPs come from; must lie inside 127.0.0.0/8. Give each cluster on
    /// one machine its own range: only one can listen on an address.
    #[arg(long, value_parser = kulisse_core::apiserver::allocator::ServiceCidr::parse, default_value = "127.1.0.0/16", value_name = "CIDR")]
    pub service_cidr: kulisse_core::apiserver::allocator::ServiceCidr,
    #[command(flatten)]
    pub size: super::components::NodeSizeArgs,
    #[command(flatten)]
    pub serving: super::serving::ServingArgs,
    #[command(flatten)]
    pub retention: super::serving::RetentionArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Component {
    Apiserver,
    ControllerManager,
    Scheduler,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One redb file in the data dir (no other process needed).
    Embedded,
    /// A real etcd, as in a production cluster.
    Etcd,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    if args.node_hosts > 0 {
        bail!(
            "--node-hosts needs --masters 3: a node host reaches the control plane through HAProxy's address in the hosts' network"
        );
    }
    let _tracing = kulisse_traces::init_with(
        kulisse_traces::InitOptions::new("kulisse-apiserver")
            .route_by_stage(true)
            .trace_style(args.trace_style.into()),
    )?;
    let data_dir = args.data_dir.clone().unwrap_or_else(kubeconfig::default_data_dir);
    let started = std::time::Instant::now();
    let cluster = start(&args, &data_dir).await?;
    // In step mode the nodes' registrations wait for `kulisse step`: no progress to report.
    let progress =
        (args.nodes > 0 && !args.step).then(|| tokio::spawn(report_nodes(cluster.client.clone(), args.nodes, started)));

    println!("kulisse control plane is up");
    println!(
        "  API server:  {}  (store: {})",
        cluster.url,
        match args.store {
            StoreKind::Embedded => format!("embedded, {}", data_dir.join("store.redb").display()),
            StoreKind::Etcd => format!("etcd, {}", args.etcd_endpoints.join(",")),
        }
    );
    println!("  kubeconfig:  {}", cluster.kubeconfig.display());
    let running: Vec<&str> = args
        .components
        .iter()
        .filter(|c| **c != Component::Apiserver)
        .map(|c| match c {
            Component::ControllerManager => "controller-manager",
            Component::Scheduler => "scheduler",
            Component::Apiserver => "apiserver",
        })
        .collect();
    println!(
        "  components:  apiserver{}{}",
        if running.is_empty() { "" } else { ", " },
        running.join(", ")
    );
    let runtime = match args.runtime {
        RuntimeKind::Mock => "mock",
        RuntimeKind::Podman => "podman",
    };
    let fast = if args.fast_failover { ", fast failover" } else { "" };
    println!("  nodes:       {} ({runtime} runtime{fast})", args.nodes);
    if args.step {
        println!("  step mode:   paused; every write waits (kulisse step, kulisse step next)");
    }
    println!();
    println!("In another terminal:");
    println!("  export KULISSE_KUBECONFIG={}", cluster.kubeconfig.display());
    println!("  kulisse apply -f examples/web.yaml --follow");
    println!("  kulisse get pods -o wide");
    println!("  kulisse trace last");
    println!("The real kubectl works too:");
    println!("  KUBECONFIG={} kubectl get pods", cluster.kubeconfig.display());
    println!();
    println!("Press Ctrl-C to stop.");
    crate::signals::shutdown_signal().await;
    if let Some(p) = progress {
        p.abort();
    }
    cluster.stop().await;
    println!("kulisse control plane stopped");
    Ok(ExitCode::SUCCESS)
}

/// How the nodes come up, on stderr (the banner on stdout stays what it is): how many have
/// registered their Node and how many are `Ready`, at most every two seconds while that
/// changes, then one line when all `want` are Ready. With `--nodes 5000` registering takes
/// a while, and this is what it waits for (kubeadm and kind print their waits the same way).
/// It is a Node informer, like any client's: one list, then a watch, no polling.
async fn report_nodes(client: Client, want: u32, started: std::time::Instant) {
    use kulisse_core::client::informer::Informer;
    let Some(nodes) = kulisse_core::objects::by_gvk("v1", "Node") else {
        return;
    };
    let informer = Informer::new(client, nodes, None);
    let cache = informer.cache();
    let (_keep, shutdown) = tokio::sync::watch::channel(false);
    let progress = async {
        let mut last = None;
        let mut printed: Option<std::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let registered = cache.len();
            let ready = cache
                .filter(|n| kulisse_core::objects::condition_is_true(n, "Ready"))
                .len();
            let secs = started.elapsed().as_secs_f64();
            if ready >= want as usize {
                eprintln!("[nodes] all {want} nodes Ready ({secs:.1}s)");
                return;
            }
            let due = printed.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
            if due && last != Some((registered, ready)) {
                eprintln!("[nodes] {registered}/{want} registered, {ready} Ready ({secs:.1}s)");
                (last, printed) = (Some((registered, ready)), Some(std::time::Instant::now()));
            }
        }
    };
    tokio::select! {
        _ = informer.run(shutdown) => {}
        _ = progress => {}
    }
}

/// A control plane (and nodes) running inside this process.
pub struct RunningCluster {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub kubeconfig: std::path::PathBuf,
    /// A client for the API server.
    pub client: Client,
    stop_tx: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningCluster {
    /// Stop every component, then the API server.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.serving).await;
    }
}

/// Every in-process node holds a few file descriptors (its connections, counted at both ends): make room
/// for them, and say so plainly when the limit stays too low (nodes past it would fail to
/// connect with "Too many open files").
fn make_room_for_nodes(nodes: u32) {
    use kulisse_core::apiserver::limits::{FDS_PER_IN_PROCESS_NODE, make_room_for_open_files};
    let wanted = u64::from(nodes) * FDS_PER_IN_PROCESS_NODE + 1024;
    if let Some(soft) = make_room_for_open_files(wanted)
        && soft < wanted
    {
        eprintln!(
            "note: {nodes} in-process nodes need about {wanted} open files ({FDS_PER_IN_PROCESS_NODE} per node: \
             its kubelet's and kube-proxy's connections, counted at both ends), but this process may open {soft}: \
             nodes past about {} will fail to connect (\"Too many open files\"). Raise the limit \
             (`ulimit -n`; raising the hard limit needs root) or start fewer nodes.",
            soft.saturating_sub(1024) / FDS_PER_IN_PROCESS_NODE
        );
    }
}

/// Open the store, start the API server on `args.listen`, write the kubeconfig, and start
/// the chosen control-plane components and `args.nodes` nodes, all in this process. They
/// talk to each other only through the API server, over loopback HTTP, exactly as separate
/// processes would.
pub async fn start(args: &UpArgs, data_dir: &Path) -> anyhow::Result<RunningCluster> {
    create_private_dir(data_dir)?;
    let store = open_store(args, data_dir).await?;
    let token = load_or_create_token(data_dir)?;
    // The cluster CA and the API server's certificate (kubectl sends its token only over TLS).
    let certs = apiserver::certs::ensure(data_dir, args.listen.ip(), &args.tls_san)
        .context("creating the cluster certificates")?;
    let tls = apiserver::certs::server_config(&certs).context("loading the API server certificate")?;
    let kubelet_client = apiserver::certs::kubelet_client_config(data_dir, &certs.ca_pem)
        .context("issuing the API server's client certificate for kubelets")?;
    // The service-account key (kubeadm's pki/sa.key): signs and checks ServiceAccount tokens.
    let service_accounts = apiserver::serviceaccount::ServiceAccountTokens::load_or_create(data_dir)
        .context("loading the service-account key")?;
    make_room_for_nodes(args.nodes);
    let server = ApiServer::new(
        store,
        apiserver::Config {
            token: token.clone(),
            tls: Some(tls),
            service_cidr: args.service_cidr,
            bookmark_interval: apiserver::watch::DEFAULT_BOOKMARK_INTERVAL,
            limits: args.serving.limits(),
            audit_log: args.serving.audit_log(data_dir)?,
            retention: args.retention.retention(),
            kubelet_client: Some(kubelet_client),
            kubelet_network: args.kubelet_network.clone(),
            service_accounts: Some(Arc::new(service_accounts)),
        },
    );
    server.step.set_paused(args.step);
    server
        .bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!("creating the system namespaces failed: {e}"))?;

    let listener = bind(args.listen).await?;
    let url = format!("https://{}", listener.local_addr()?);
    let kubeconfig_path = data_dir.join("kubeconfig");
    Kubeconfig::for_cluster(&url, &token, Some(&certs.ca_pem))
        .write(&kubeconfig_path)
        .with_context(|| format!("writing {}", kubeconfig_path.display()))?;
    let issued = super::identities::issue_all(data_dir, &url, &certs.ca_pem, args.nodes)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_rx = stop_rx.clone();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = server_rx.wait_for(|s| *s).await;
    }));
    let client = Client::with_ca(&url, &token, Some(certs.ca_pem.as_bytes()))?;
    let me = super::processes::Process {
        name: "kulisse-up".into(),
        role: "control-plane".into(),
        address: url.clone(),
        pid: std::process::id(),
        identity: None,
        command: std::env::args().collect(),
        log: None,
    };
    super::processes::write(data_dir, &[me])?;
    let wiring = Wiring {
        args,
        data_dir,
        url: &url,
        ca_pem: &certs.ca_pem,
        issued: &issued,
        stop_rx: &stop_rx,
    };
    let mut tasks = start_elected_components(wiring)?;
    tasks.extend(start_nodes(wiring).await?);
    Ok(RunningCluster {
        url,
        kubeconfig: kubeconfig_path,
        client,
        stop_tx,
        tasks,
        serving,
    })
}

/// What the components of `kulisse up` are started with.
#[derive(Clone, Copy)]
struct Wiring<'a> {
    args: &'a UpArgs,
    data_dir: &'a Path,
    url: &'a str,
    ca_pem: &'a str,
    issued: &'a super::identities::Issued,
    stop_rx: &'a tokio::sync::watch::Receiver<bool>,
}

/// Start `args.nodes` nodes, each logged in as itself (its kube-proxy as `system:kube-proxy`).
async fn start_nodes(w: Wiring<'_>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let mut proxy_client = None;
    for (i, kubelet) in (1..=w.args.nodes).zip(&w.issued.kubelets) {
        let kubelet_client = super::identities::client_as(w.url, w.ca_pem, kubelet)?;
        if (i - 1) % PROXIES_PER_CONNECTION == 0 {
            proxy_client = Some(super::identities::client_as(w.url, w.ca_pem, &w.issued.proxy)?);
        }
        let proxy = proxy_client.clone().context("a kube-proxy client")?;
        let tls = kulisse_core::kubelet::server::ServingTls {
            identity: kubelet.clone(),
            ca_pem: w.ca_pem.as_bytes().to_vec(),
        };
        tasks.extend(start_node(w.args, w.data_dir, i, (kubelet_client, proxy), tls, w.stop_rx).await?);
    }
    Ok(tasks)
}

/// In-process kube-proxies that share one HTTP/2 connection to the API server. A real
/// kube-proxy holds its own; here they all log in as the same user (`system:kube-proxy`), and
/// sharing spares the process two file descriptors per node, which is what lets 5,000 nodes
/// fit under a limit of 20,000 open files. Each still runs its own watches (two streams),
/// well under the server's 1,000 streams per connection.
const PROXIES_PER_CONNECTION: u32 = 100;

/// The controller manager and the scheduler `args.components` asks for, each leader-elected
/// (so a `kulisse scheduler` started beside this process stands by instead of acting too),
/// each logged in as itself.
fn start_elected_components(wiring: Wiring<'_>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let Wiring {
        args,
        data_dir,
        url,
        ca_pem,
        issued,
        stop_rx,
    } = wiring;
    let timing = Timing::for_profile(args.fast_failover);
    let mut tasks = Vec::new();
    if args.components.contains(&Component::ControllerManager) {
        let opts = super::components::controller_options(args.fast_failover);
        let identity = election::in_process_identity("controller-manager", data_dir, &args.listen);
        let client = super::identities::client_as(url, ca_pem, &issued.controller_manager)?;
        let (c, rx) = (client, stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let lead = |stop| kulisse_core::controllers::run(c.clone(), opts.clone(), stop);
            let (lease, span) = (
                kulisse_core::controllers::LEASE_NAME,
                kulisse_core::controllers::leader_election_span,
            );
            election::run_in_process(&c, lease, span, identity, timing, rx, lead).await;
        }));
    }
    if args.components.contains(&Component::Scheduler) {
        let identity = election::in_process_identity("scheduler", data_dir, &args.listen);
        let client = super::identities::client_as(url, ca_pem, &issued.scheduler)?;
        let (c, rx) = (client, stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let lead = |stop| super::components::run_scheduler(c.clone(), stop);
            let (lease, span) = (
                kulisse_core::scheduler::LEASE_NAME,
                kulisse_core::scheduler::leader_election_span,
            );
            election::run_in_process(&c, lease, span, identity, timing, rx, lead).await;
        }));
    }
    Ok(tasks)
}

/// The store `args.store` names: the redb file in the data dir, or etcd.
async fn open_store(args: &UpArgs, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match args.store {
        StoreKind::Embedded => {
            let path = data_dir.join("store.redb");
            EmbeddedStore::open(&path).with_context(|| format!("opening the embedded store {}", path.display()))?
        }
        StoreKind::Etcd => EtcdStore::connect(&args.etcd_endpoints)
            .await
            .context("connecting to etcd")?,
    };
    Ok(store)
}

/// Node `i` (`node-i`): its kubelet and its kube-proxy (`clients`, each logged in as
/// itself), running until `stop_rx` flips. `tls`: the kubelet API's certificate.
async fn start_node(
    args: &UpArgs,
    data_dir: &Path,
    i: u32,
    (kubelet_client, proxy_client): (Client, Client),
    tls: kulisse_core::kubelet::server::ServingTls,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut spawned = Vec::new();
    let node = format!("node-{i}");
    // Each node's kubelet keeps its pods' volumes under the data dir.
    let root_dir = data_dir.join("kubelet").join(&node);
    let kubelet = match args.runtime {
        RuntimeKind::Mock => super::components::mock_kubelet(
            kubelet_client,
            &node,
            tls,
            args.fast_failover,
            args.crashloop_backoff,
            &args.size,
            Some(&root_dir),
        )?,
        RuntimeKind::Podman => {
            super::components::podman_kubelet(
                kubelet_client,
                &node,
                tls,
                args.fast_failover,
                args.crashloop_backoff,
                args.podman_socket.as_deref(),
                args.allow_remote_pulls,
                &args.size,
                Some(&root_dir),
            )
            .await?
        }
    };
    let rx = stop_rx.clone();
    let name = node.clone();
    spawned.push(tokio::spawn(async move {
        if let Err(e) = kubelet.run(rx).await {
            eprintln!("error: the kubelet of {name} stopped: {e:#}");
        }
    }));
    let (c, rx) = (proxy_client, stop_rx.clone());
    spawned.push(tokio::spawn(async move {
        let opts = kulisse_core::proxy::Options {
            node_name: node.clone(),
            // Every node's proxy keeps its rule table, but all nodes share this
            // machine's loopback: only the first one listens on the Services' addresses.
            data_path: i == 1,
        };
        kulisse_core::proxy::run(c, opts, rx, kulisse_core::proxy::RuleTable::default()).await;
    }));
    Ok(spawned)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {addr}, which is not a loopback address: anyone who can reach it and has the token controls this cluster"
        );
    }
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 => bail!(
            "cannot listen on {addr}: ports below 1024 need root. Pick a higher port, e.g. --listen 127.0.0.1:6443"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the address is in use (is another `kulisse up` running?). Pick another with --listen"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    Ok(())
}

/// The cluster's bearer token: kept in `<data-dir>/token` (mode 0600) so a restart keeps it.
pub fn load_or_create_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    kubeconfig::write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}
