//! Station ⑤ · chapter "The kubelet and the container runtime" (book/src/kubelet.md) · spans `kubelet.*`, `runtime.*`
//!
//! # The kubelet (mirrors Kubernetes' node agent, `kubelet`)
//!
//! Every node runs a kubelet. It is the only component that turns Pod objects into running
//! containers, and it does so as a client of the API server like everyone else:
//!
//! 1. **Registration and heartbeats** ([`node`]): at start it creates (or updates) its
//!    `Node` object with the node's capacity, addresses and conditions, then renews a
//!    `Lease` in `kube-node-lease` every 10 s. The node lifecycle controller watches those
//!    leases: a node whose lease stops moving is marked `NotReady` and its pods evicted.
//! 2. **Watching its pods**: an informer on `pods?fieldSelector=spec.nodeName=<node>`, so a
//!    kubelet sees only the pods the scheduler bound to it.
//! 3. **Pod workers** ([`pod_worker`]): one small task per pod. Each sync compares what the
//!    pod asks for with what the container runtime reports, and closes the gap through the
//!    CRI ([`crate::runtime::ContainerRuntime`]): set up the pod's volumes on the node
//!    (`volumes.rs`, with the ConfigMaps and Secrets of `sources.rs`), make each container's
//!    environment (`env.rs`), pull images (with a login from the pod's `imagePullSecrets`,
//!    `pull_secrets.rs`), run the pod sandbox, create
//!    and start containers, restart crashed ones with the `CrashLoopBackOff` delay (10 s,
//!    doubling to 5 min), kill containers whose liveness probe fails ([`probes`]). Then it
//!    writes what it sees back as the pod's `status` (phase, conditions, container
//!    statuses, pod IP), only when something changed. The worker keeps one record per
//!    container (`container.rs`); `status.rs` builds the status from those records as a pure
//!    function.
//! 4. **Graceful termination**: a deleted pod first gets a `deletionTimestamp`; the
//!    kubelet stops its containers within the grace period, removes the sandbox, and then
//!    deletes the Pod object for good (`gracePeriodSeconds: 0`).
//! 5. **Its own HTTPS server** ([`server`]): `GET /containerLogs/...`, which the API server
//!    proxies `kubectl logs` to; only the API server's client certificate may read there.
//!
//! Where upstream's kubelet has a PLEG (pod lifecycle event generator) that relists the
//! runtime every second, each kulisse pod worker looks at its own containers every
//! [`KubeletOptions::relist_period`].

mod atomic_writer;
mod container;
mod downward;
mod env;
pub mod lifecycle;
pub mod machine;
pub mod node;
pub mod pod_worker;
mod portforward;
pub mod probes;
mod pull_secrets;
mod reply;
pub mod server;
mod sources;
mod status;
mod streaming;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::client::informer::{Cache, Informer, InformerEvent};
use crate::client::{Client, ListParams};
use crate::events::EventRecorder;
use crate::objects;
use crate::runtime::{ContainerRuntime, Ipv4Cidr, LABEL_POD_UID};

/// The version the kubelet reports in `Node.status.nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0-kulisse";

/// Settings of one kubelet. Defaults are Kubernetes'; [`KubeletOptions::fast`] shortens
/// every interval for tests and demos.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// The Node's name (also its hostname label).
    pub node_name: String,
    /// The node's `InternalIP`, an address of the machine (or node host) it runs on; loopback
    /// by default. The kubelet's server listens on it.
    pub node_ip: String,
    /// The node's pod CIDR (`127.64.N.0/24`); `None` derives it from the node name
    /// ([`crate::runtime::pod_cidr_for_node`]).
    pub pod_cidr: Option<String>,
    /// `status.capacity.cpu` (and allocatable), e.g. `4`.
    pub cpu: String,
    /// `status.capacity.memory`, e.g. `8Gi`.
    pub memory: String,
    /// `status.capacity.pods`, 110 by default as in Kubernetes.
    pub max_pods: u32,
    /// Extra labels on the Node.
    pub labels: BTreeMap<String, String>,
    /// Taints to register the Node with (`{"key": .., "value": .., "effect": ..}`).
    pub taints: Vec<Value>,
    /// How often the Lease is renewed (`nodeLeaseDurationSeconds / 4`, 10 s).
    pub lease_renew_interval: Duration,
    /// `spec.leaseDurationSeconds` of the Lease (40).
    pub lease_duration_seconds: u32,
    /// How often the Node's status (Ready condition, heartbeat) is computed (10 s).
    pub node_status_update_interval: Duration,
    /// How often the Node's status is written even when nothing in it but the heartbeat
    /// times changed (upstream's `nodeStatusReportFrequency`, 5 min): the Lease is the
    /// heartbeat; a change is written at once.
    pub node_status_report_interval: Duration,
    /// How often each pod worker looks at its containers (the PLEG relist period, 1 s).
    pub relist_period: Duration,
    /// How often runtime leftovers of pods that are gone are cleaned up (2 s).
    pub housekeeping_interval: Duration,
    /// First restart delay of a crashing container and first image pull back-off (10 s).
    pub backoff_base: Duration,
    /// Longest restart delay (5 min).
    pub backoff_max: Duration,
    /// A container that ran this long before exiting starts again with the base delay (10 min).
    pub backoff_reset_after: Duration,
    /// The port of the kubelet's HTTP server on `node_ip` (0: any free port).
    pub server_port: u16,
    /// The kubelet API's certificate and the CA its callers must be signed by
    /// ([`server`]). `None`: plain HTTP that refuses every log request (only `/healthz`
    /// answers).
    pub tls: Option<server::ServingTls>,
    /// Where the kubelet keeps its pods' volumes (upstream's `--root-dir`,
    /// `/var/lib/kubelet`). `None`: a directory of its own under the system's temp dir,
    /// removed when the kubelet stops.
    pub root_dir: Option<std::path::PathBuf>,
}

impl KubeletOptions {
    /// Kubernetes' defaults for a node named `node_name`.
    pub fn new(node_name: &str) -> Self {
        KubeletOptions {
            node_name: node_name.to_string(),
            node_ip: "127.0.0.1".into(),
            pod_cidr: None,
            cpu: "4".into(),
            memory: "8Gi".into(),
            max_pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
            node_status_update_interval: Duration::from_secs(10),
            node_status_report_interval: Duration::from_secs(300),
            relist_period: Duration::from_secs(1),
            housekeeping_interval: Duration::from_secs(2),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset_after: Duration::from_secs(600),
            server_port: 0,
            tls: None,
            root_dir: None,
        }
    }

    /// Short intervals: heartbeats every 200 ms, relists every 50 ms, back-off from 100 ms
    /// to 1.6 s. For tests and the teaching profile.
    pub fn fast(node_name: &str) -> Self {
        KubeletOptions {
            lease_renew_interval: Duration::from_millis(200),
            node_status_update_interval: Duration::from_millis(500),
            node_status_report_interval: Duration::from_secs(1),
            relist_period: Duration::from_millis(50),
            housekeeping_interval: Duration::from_millis(200),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1600),
            backoff_reset_after: Duration::from_secs(10),
            ..KubeletOptions::new(node_name)
        }
    }
}

/// What every part of the kubelet shares.
pub(crate) struct Shared {
    pub client: Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    pub options: KubeletOptions,
    pub recorder: EventRecorder,
    /// The informer's cache of this node's pods.
    pub pods: Cache,
    /// The ConfigMaps and Secrets the pods use.
    pub sources: sources::ConfigSources,
    /// Where the pods' volumes live.
    pub volume_dirs: volumes::VolumeDirs,
}

/// A node agent. See the module doc.
pub struct Kubelet {
    client: Client,
    runtime: Arc<dyn ContainerRuntime>,
    options: KubeletOptions,
}

/// A message from the informer to the dispatcher.
enum Dispatch {
    Event(InformerEvent),
    WorkerDone(String),
}

impl Kubelet {
    pub fn new(client: Client, runtime: Arc<dyn ContainerRuntime>, options: KubeletOptions) -> Self {
        Kubelet {
            client: client.for_component("kubelet", &options.node_name),
            runtime,
            options,
        }
    }

    /// The node's `InternalIP` (upstream's `--node-ip`), where its server listens: a loopback
    /// address, or the address of the node host it runs on.
    pub fn with_node_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.options.node_ip = ip.to_string();
        self
    }

    /// Register the node, then run heartbeats, the pod workers and the server until
    /// `shutdown` turns true. Containers keep running when the kubelet stops (as with a
    /// real kubelet restart); a kubelet started again adopts them.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let options = self.options;
        let (node_ip, pod_cidr) = prepare_network(&options, self.runtime.as_ref()).await?;
        let tls = server::tls_config(options.tls.as_ref())?;

        let listener = tokio::net::TcpListener::bind((node_ip, options.server_port))
            .await
            .with_context(|| format!("the kubelet could not listen on {node_ip}:{}", options.server_port))?;
        let port = listener.local_addr()?.port();

        let pods_info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
        let mut informer = Informer::new(self.client.clone(), pods_info, None).with_params(ListParams {
            field_selector: Some(format!("spec.nodeName={}", options.node_name)),
            ..ListParams::default()
        });
        let (tx, rx) = mpsc::unbounded_channel::<Dispatch>();
        {
            let tx = tx.clone();
            informer.on_event(move |ev| {
                let _ = tx.send(Dispatch::Event(ev.clone()));
            });
        }
        // Orphans can only be told apart once the informer has listed this node's pods: before
        // that every sandbox would look orphaned (upstream waits for its sources the same way).
        let synced = informer.synced();
        let (volume_dirs, own_root) = volume_dirs(&options);
        let shared = Arc::new(Shared {
            recorder: EventRecorder::new(self.client.clone(), "kubelet", Some(&options.node_name)),
            sources: sources::ConfigSources::new(self.client.clone(), shutdown.clone()),
            volume_dirs,
            client: self.client,
            runtime: self.runtime,
            pods: informer.cache(),
            options: options.clone(),
        });

        // Register first: nothing may be scheduled here before the Node exists anyway.
        let Some(node_state) = register_node(&shared, port, &pod_cidr, &mut shutdown).await else {
            return Ok(());
        };
        let tasks = vec![
            tokio::spawn(node::heartbeat_loop(
                shared.clone(),
                node_state,
                port,
                pod_cidr.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(server::serve(listener, shared.clone(), tls, shutdown.clone())),
            tokio::spawn(informer.run(shutdown.clone())),
        ];

        sync_loop(&shared, (tx, rx), synced, shutdown).await;
        for t in tasks {
            t.abort();
        }
        if own_root {
            shared.volume_dirs.remove_all();
        }
        Ok(())
    }
}

/// The volume directories: under `root_dir`, or under a temp dir of this kubelet's own
/// (then `true`: remove it at the end).
fn volume_dirs(options: &KubeletOptions) -> (volumes::VolumeDirs, bool) {
    let (root, own) = match &options.root_dir {
        Some(r) => (r.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "kulisse-kubelet-{}-{}-{:08x}",
                options.node_name,
                std::process::id(),
                rand::random::<u32>()
            )),
            true,
        ),
    };
    (volumes::VolumeDirs::new(&root, own), own)
}

/// Check the node IP and the pod CIDR, and hand the CIDR to the runtime.
async fn prepare_network(
    options: &KubeletOptions,
    runtime: &dyn ContainerRuntime,
) -> anyhow::Result<(std::net::IpAddr, String)> {
    let node_ip: std::net::IpAddr = options
        .node_ip
        .parse()
        .with_context(|| format!("the node IP {:?} is not an IP address", options.node_ip))?;
    anyhow::ensure!(
        !node_ip.is_unspecified(),
        "the node IP {node_ip} is not an address of this machine: the kubelet listens on it and the Node reports it"
    );
    let pod_cidr = options
        .pod_cidr
        .clone()
        .unwrap_or_else(|| crate::runtime::pod_cidr_for_node(&options.node_name));
    Ipv4Cidr::parse_loopback(&pod_cidr).map_err(anyhow::Error::msg)?;
    runtime
        .update_runtime_config(&pod_cidr)
        .await
        .context("the container runtime refused the pod CIDR")?;
    Ok((node_ip, pod_cidr))
}

/// Register the Node, retrying until it works; `None` when `shutdown` came first.
async fn register_node(
    shared: &Shared,
    port: u16,
    pod_cidr: &str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<node::NodeState> {
    loop {
        match node::register(shared, port, pod_cidr).await {
            Ok(state) => return Some(state),
            Err(e) => {
                let name = &shared.options.node_name;
                tracing::warn!(node = %name, "registering the node failed: {e}; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// The dispatcher (upstream's `syncLoop`): route informer events to pod workers, forget
/// finished workers, and do the housekeeping, until `shutdown`; then stop every worker.
async fn sync_loop(
    shared: &Arc<Shared>,
    (tx, mut rx): (mpsc::UnboundedSender<Dispatch>, mpsc::UnboundedReceiver<Dispatch>),
    synced: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut workers: HashMap<String, pod_worker::Handle> = HashMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut housekeeping = tokio::time::interval(shared.options.housekeeping_interval);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    Dispatch::WorkerDone(uid) => {
                        if workers.get(&uid).is_some_and(pod_worker::Handle::is_finished) {
                            workers.remove(&uid);
                        }
                        finished.insert(uid);
                        if finished.len() > 100_000 {
                            finished.clear();
                        }
                    }
                    Dispatch::Event(ev) => dispatch(shared, &tx, &mut workers, &mut finished, ev, &shutdown),
                }
            }
            _ = housekeeping.tick() => {
                retry_unfinished_deletions(shared, &tx, &mut workers, &mut finished, &shutdown);
                if *synced.borrow() {
                    cleanup_orphans(shared, &workers).await;
                }
            }
        }
    }
    for w in workers.into_values() {
        w.abort();
    }
}

/// Route an informer event to the pod's worker, starting one for a new pod.
fn dispatch(
    shared: &Arc<Shared>,
    tx: &mpsc::UnboundedSender<Dispatch>,
    workers: &mut HashMap<String, pod_worker::Handle>,
    finished: &mut HashSet<String>,
    ev: InformerEvent,
    shutdown: &watch::Receiver<bool>,
) {
    let obj = ev.object().clone();
    let Some(uid) = objects::uid(&obj).map(str::to_string) else {
        return;
    };
    match ev {
        InformerEvent::Deleted(_) => {
            finished.remove(&uid);
            if let Some(w) = workers.get(&uid) {
                w.send(pod_worker::Update::Gone(obj));
            }
        }
        InformerEvent::Added(_) | InformerEvent::Modified { .. } | InformerEvent::Resync(_) => {
            if finished.contains(&uid) {
                return; // terminated and deleted by this kubelet; the DELETED event follows
            }
            match workers.get(&uid) {
                Some(w) if !w.is_finished() => w.send(pod_worker::Update::Pod(obj)),
                _ => {
                    let done = tx.clone();
                    let uid2 = uid.clone();
                    let handle = pod_worker::spawn(shared.clone(), obj, shutdown.clone(), move || {
                        let _ = done.send(Dispatch::WorkerDone(uid2));
                    });
                    workers.insert(uid, handle);
                }
            }
        }
    }
}

/// A pod whose worker finished its termination but that is still in the cache with a
/// `deletionTimestamp` (the final delete failed, e.g. the API server was unreachable): start
/// a worker again so it retries. Terminating twice is harmless.
fn retry_unfinished_deletions(
    shared: &Arc<Shared>,
    tx: &mpsc::UnboundedSender<Dispatch>,
    workers: &mut HashMap<String, pod_worker::Handle>,
    finished: &mut HashSet<String>,
    shutdown: &watch::Receiver<bool>,
) {
    if finished.is_empty() {
        return;
    }
    for pod in shared.pods.list() {
        let Some(uid) = objects::uid(&pod) else { continue };
        if objects::deletion_timestamp(&pod).is_some() && finished.remove(uid) {
            dispatch(
                shared,
                tx,
                workers,
                finished,
                InformerEvent::Resync(pod.clone()),
                shutdown,
            );
        }
    }
}

/// Stop and remove sandboxes of pods this kubelet no longer has (deleted while the
/// kubelet was down, or force-deleted): upstream's `HandlePodCleanups`.
async fn cleanup_orphans(shared: &Arc<Shared>, workers: &HashMap<String, pod_worker::Handle>) {
    let Ok(sandboxes) = shared.runtime.list_pod_sandboxes(&BTreeMap::new()).await else {
        return;
    };
    let known: HashSet<String> = shared
        .pods
        .list()
        .iter()
        .filter_map(|p| objects::uid(p).map(str::to_string))
        .collect();
    for sb in sandboxes {
        let uid = sb.labels.get(LABEL_POD_UID).cloned().unwrap_or_else(|| sb.uid.clone());
        if known.contains(&uid) || workers.get(&uid).is_some_and(|w| !w.is_finished()) {
            continue;
        }
        tracing::debug!(sandbox = %sb.id, pod = %sb.name, "removing the sandbox of a pod that is gone");
        let mut filter = BTreeMap::new();
        filter.insert(LABEL_POD_UID.to_string(), uid);
        if let Ok(containers) = shared.runtime.list_containers(&filter).await {
            for c in containers {
                let _ = shared.runtime.stop_container(&c.id, Duration::from_secs(2)).await;
            }
        }
        let _ = shared.runtime.stop_pod_sandbox(&sb.id).await;
        let _ = shared.runtime.remove_pod_sandbox(&sb.id).await;
    }
    // Volume directories of pods that are gone (upstream's `cleanupOrphanedPodDirs`).
    for uid in shared.volume_dirs.pod_uids() {
        if !known.contains(&uid) && !workers.get(&uid).is_some_and(|w| !w.is_finished()) {
            shared.volume_dirs.remove_pod(&uid);
        }
    }
}

/// A duration the way Go prints it (`10s`, `1m20s`, `5m0s`, `100ms`): the kubelet's
/// `back-off 10s restarting failed container` messages use this form.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs_f = d.as_secs_f64();
    let h = d.as_secs() / 3600;
    let m = (d.as_secs() % 3600) / 60;
    let s = secs_f - (h * 3600 + m * 60) as f64;
    let s_text = if (s - s.round()).abs() < 1e-9 {
        format!("{}s", s.round() as u64)
    } else {
        let t = format!("{s:.3}");
        format!("{}s", t.trim_end_matches('0').trim_end_matches('.'))
    };
    if h > 0 {
        format!("{h}h{m}m{s_text}")
    } else if m > 0 {
        format!("{m}m{s_text}")
    } else {
        s_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(100)), "100ms");
        assert_eq!(go_duration(Duration::from_millis(1600)), "1.6s");
        assert_eq!(go_duration(Duration::from_secs(3700)), "1h1m40s");
    }
}
