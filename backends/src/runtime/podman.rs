//! # The podman runtime: real containers behind kulisse's CRI
//!
//! In a real cluster the kubelet talks to containerd or CRI-O over the CRI, and they run
//! containers with an OCI runtime (runc, crun). [`PodmanRuntime`] plays that part with
//! [podman](https://podman.io), through podman's REST API (`podman system service`) and the
//! `podman-api` crate. It maps the CRI's steps one to one:
//!
//! | CRI (kubelet)          | podman                                                        |
//! |------------------------|---------------------------------------------------------------|
//! | `PullImage`            | `POST /libpod/images/pull`                                    |
//! | `ImageStatus`          | `GET /libpod/images/{name}/json`                              |
//! | `RunPodSandbox`        | `podman pod create` + `podman pod start`: the pod's *infra* container (podman's `catatonit -P`) holds the network namespace, exactly the job of Kubernetes' `pause` container |
//! | `CreateContainer`      | `podman create --pod <sandbox>`: joins the infra container's namespaces; each volume the kubelet prepared is a bind mount (`--mount type=bind,src=<kubelet dir>,dst=<mountPath>[,ro]`) |
//! | `StartContainer`       | `podman start`                                                |
//! | `StopContainer`        | `podman stop -t <grace>`: SIGTERM, then SIGKILL               |
//! | `ContainerStatus`      | `podman inspect`                                              |
//! | `ListPodSandbox` / `ListContainers` | `podman pod ps` / `podman ps -a` with label filters |
//! | `ExecSync`             | `podman exec` (for `exec` probes)                             |
//! | `Exec`                 | `POST /libpod/containers/{id}/exec` + `/libpod/exec/{id}/start` (an upgraded stream: stdin in, multiplexed stdout/stderr out), `/resize` for `-t`, then the exit code from `/libpod/exec/{id}/json` |
//! | `Attach`               | `POST /libpod/containers/{id}/attach` (the main process' stdin, if created with `stdin: true`, and its output) |
//! | `StopPodSandbox` / `RemovePodSandbox` | `podman pod stop` / `podman pod rm -f`         |
//! | `PortForward`          | `setns` into the infra container's network namespace (`/proc/<pid>/ns/net`) and dial `localhost:port` there, as containerd does; needs root |
//!
//! ## Pod IPs on loopback
//!
//! Podman puts pods on its bridge network (`10.88.0.0/16`). kulisse never sends traffic
//! there. Instead every pod gets its **own loopback address** out of the node's pod CIDR
//! (`127.64.N.0/24` for node N, see [`kulisse_core::runtime::pod_cidr_for_node`]), and each
//! declared `containerPort` is *published* on that address: a pod with port 8080 is created
//! like `podman pod create -p 127.64.1.2:8080:8080`. Linux routes all of `127.0.0.0/8` to
//! `lo`, so `podIP:containerPort` answers from the host just as a real pod IP answers inside
//! a cluster network, and Services/Endpoints (`ip:port` pairs) work unchanged. (Publishing
//! happens on the pod, because in podman the infra container owns the ports.) A `hostPort`
//! is also published on `127.0.0.1:hostPort`. Only *declared* ports are reachable: a
//! process listening on an undeclared port is not published.
//!
//! The address is stored as the pod's `kulisse.dev/pod-ip` label, so it survives kubelet
//! restarts, and a new pod never takes an address another podman pod (of any kulisse
//! cluster on this machine) already holds.
//!
//! ## Many nodes, one podman
//!
//! Every simulated node's kubelet shares the machine's podman. Everything this runtime
//! creates carries the labels `kulisse.dev/node=<node>` and `kulisse.dev/cluster=<id>`
//! ([`cluster_id_from_ca`]), and every list call filters on them: a kubelet sees and
//! cleans up only its own pods, so a restarted kubelet (even after `kill -9`) finds exactly
//! its pods again and adopts or removes them. The Kubernetes labels
//! (`io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.pod.uid`,
//! `io.kubernetes.container.name`) are there too, so `podman ps --filter label=...` speaks
//! Kubernetes.
//!
//! ## Images
//!
//! The kubelet decides *whether* to pull (`imagePullPolicy`); this runtime pulls when asked.
//! kulisse never sends traffic off the machine, so pulls are only allowed from registries on
//! loopback (`localhost/...`, `127.0.0.1:5000/...`) unless
//! [`PodmanOptions::allow_remote_registries`] is set. Offline, put images into podman
//! yourself (`scripts/build-busybox-image.sh` builds `localhost/busybox:latest`) and use
//! `imagePullPolicy: IfNotPresent`.
//!
//! ## OOM kills
//!
//! A container over its memory limit (`resources.limits.memory`, podman's `--memory`, the
//! cgroup's limit) is killed by the kernel, and the kubelet reports
//! `terminated.reason: OOMKilled`. Podman says so in `State.OOMKilled`, but podman 4 (checked
//! with 4.3.1 and conmon 2.1.6) misses it: conmon writes its `oom` marker file into its
//! working directory, which is the podman service's, while podman looks for it in the
//! container's bundle directory (containers/conmon#504; podman 5 passes `--persist-dir`).
//! So when podman reports an exit without an OOM kill, this runtime asks the kernel, as
//! cAdvisor's OOM watcher does for the real kubelet: the kernel log (`/dev/kmsg`, readable
//! by root) has an `oom-kill:...,task_memcg=/.../libpod-<container id>,...` line for every
//! process the OOM killer took out of a memory cgroup ([`kernel_log_oom_kill`]).
//!
//! ## Podman versions
//!
//! All podman API calls live in this module. The typed models of `podman-api` 0.11 were
//! written for podman 4; podman 5 changed some response shapes. A response that does not
//! decode becomes a [`RuntimeError::Backend`] naming the podman version (asked once, at
//! [`PodmanRuntime::connect`]), never a panic; `container_status` falls back to the (more
//! stable) container list when `inspect` does not decode.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::StreamExt;
use kulisse_core::runtime::{
    AuthConfig, ContainerConfig, ContainerInfo, ContainerRuntime, ContainerState, ContainerStatus, Ipv4Cidr,
    LABEL_CONTAINER_NAME, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, LogOptions, LogStream, PodSandboxConfig,
    RuntimeError, Sandbox, SandboxInfo, SandboxState, StreamIo,
};
use podman_api::Podman;
use podman_api::conn::TtyChunk;
use podman_api::models;
use podman_api::opts;

/// Label on everything this runtime creates: the node whose kubelet owns it.
pub const LABEL_NODE: &str = "kulisse.dev/node";
/// Label on everything this runtime creates: which kulisse cluster it belongs to.
pub const LABEL_CLUSTER: &str = "kulisse.dev/cluster";
/// Label on sandboxes (podman pods): the pod's loopback IP.
pub const LABEL_POD_IP: &str = "kulisse.dev/pod-ip";
/// Label on sandboxes and containers: the CRI `attempt` (sandbox number, restart count).
pub const LABEL_ATTEMPT: &str = "kulisse.dev/attempt";
/// Label on containers: the image exactly as the pod spec names it.
pub const LABEL_IMAGE: &str = "kulisse.dev/image";

/// The rootful podman socket (`systemctl start podman.socket`).
pub const ROOTFUL_SOCKET: &str = "/run/podman/podman.sock";

/// Where podman's API socket usually is: `/run/podman/podman.sock` for root, else
/// `$XDG_RUNTIME_DIR/podman/podman.sock` (rootless podman).
pub fn default_socket() -> PathBuf {
    // Are we root? (/proc/self belongs to the effective user.)
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !is_root && let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("podman/podman.sock");
    }
    PathBuf::from(ROOTFUL_SOCKET)
}

/// A short, stable id for a cluster, derived from its CA certificate (`ca.crt`, PEM): it
/// stays the same across restarts on the same data dir, differs between clusters, and is
/// public (every kubeconfig carries it), so no credential is needed to compute it. A
/// fingerprint of the certificate's text, whitespace ignored.
pub fn cluster_id_from_ca(ca_pem: &str) -> String {
    // FNV-1a, 64 bits: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ca_pem.bytes().filter(|b| !b.is_ascii_whitespace()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Settings of a [`PodmanRuntime`].
#[derive(Debug, Clone)]
pub struct PodmanOptions {
    /// Podman's API socket (`podman system service unix://...`).
    pub socket: PathBuf,
    /// The node whose kubelet uses this runtime (the `kulisse.dev/node` label).
    pub node_name: String,
    /// The cluster (the `kulisse.dev/cluster` label), see [`cluster_id_from_ca`].
    pub cluster_id: String,
    /// Allow pulls from registries that are not on loopback. Off: kulisse only ever talks
    /// to this machine.
    pub allow_remote_registries: bool,
}

impl PodmanOptions {
    pub fn new(socket: impl Into<PathBuf>, node_name: &str, cluster_id: &str) -> Self {
        PodmanOptions {
            socket: socket.into(),
            node_name: node_name.to_string(),
            cluster_id: cluster_id.to_string(),
            allow_remote_registries: false,
        }
    }
}

struct Alloc {
    cidr: Ipv4Cidr,
    /// Where the next search for a free address starts (spreads addresses out, so a
    /// just-freed address is not reused at once).
    cursor: u32,
}

/// The podman-backed runtime. Cheap to clone.
#[derive(Clone)]
pub struct PodmanRuntime {
    podman: Podman,
    options: Arc<PodmanOptions>,
    /// Podman's version, from `GET /version` at connect.
    version: Arc<String>,
    alloc: Arc<Mutex<Alloc>>,
    /// Serializes sandbox creation (address choice + create + start) within this runtime.
    sandbox_lock: Arc<tokio::sync::Mutex<()>>,
    /// Containers whose start failed: (message, when). Podman leaves them `created` with no
    /// error recorded; the CRI reports them as terminated (`StartError`, exit code 128).
    start_failures: Arc<Mutex<HashMap<String, (String, SystemTime)>>>,
    /// Exited containers podman did not report as OOM-killed: whether the kernel log says
    /// the OOM killer struck in their memory cgroup (asked once per container).
    oom_kills: Arc<Mutex<HashMap<String, bool>>>,
}

/// `(status code, message)` of a podman error answer.
fn fault(e: &podman_api::Error) -> Option<(u16, &str)> {
    match e {
        podman_api::Error::Fault { code, message } => Some((code.as_u16(), message.as_str())),
        podman_api::Error::Error(podman_api::conn::Error::Fault { code, message }) => {
            Some((code.as_u16(), message.as_str()))
        }
        _ => None,
    }
}

fn is_decode_error(e: &podman_api::Error) -> bool {
    matches!(
        e,
        podman_api::Error::SerdeJsonError(_) | podman_api::Error::Error(podman_api::conn::Error::SerdeJsonError(_))
    )
}

/// Go's zero time (`0001-01-01T00:00:00Z`) means "never".
fn real_time(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<SystemTime> {
    t.filter(|t| t.timestamp() > 0).map(SystemTime::from)
}

fn unix_time(secs: Option<i64>) -> Option<SystemTime> {
    secs.filter(|s| *s > 0)
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64))
}

fn labels_of(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn matches(labels: &BTreeMap<String, String>, filter: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn attempt_of(labels: &BTreeMap<String, String>) -> u32 {
    labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0)
}

/// Podman's container states → the CRI's.
fn state_of(status: &str) -> ContainerState {
    match status.to_ascii_lowercase().as_str() {
        "created" | "configured" | "initialized" => ContainerState::Created,
        "running" | "paused" | "stopping" => ContainerState::Running,
        "exited" | "stopped" | "dead" | "removing" => ContainerState::Exited,
        _ => ContainerState::Unknown,
    }
}

/// A podman object name from Kubernetes names (`k8s_web_default_<uid>_0`): podman allows
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn podman_name(parts: &[&str]) -> String {
    let mut name: String = parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'k');
    }
    name
}

/// The container's cgroup limits as podman takes them (`None`: no limits): a memory limit,
/// and CPU as CFS quota per 100 ms period (limit) and shares (request), as the kubelet
/// sets them.
fn linux_resources(config: &ContainerConfig) -> Option<models::LinuxResources> {
    let r = &config.resources;
    let mut resources = serde_json::Map::new();
    if let Some(limit) = r.memory_limit_bytes {
        resources.insert(
            "memory".into(),
            serde_json::json!({ "limit": i64::try_from(limit).unwrap_or(i64::MAX) }),
        );
    }
    let mut cpu = serde_json::Map::new();
    if let Some(millis) = r.cpu_limit_millis.filter(|m| *m > 0) {
        // 1000m = one CPU = 100 ms of CPU time every 100 ms period.
        cpu.insert("period".into(), 100_000u64.into());
        cpu.insert("quota".into(), (millis.min(1_000_000) as i64 * 100).max(1000).into());
    }
    if let Some(millis) = r.cpu_request_millis.or(r.cpu_limit_millis) {
        // What the kubelet sets: cpu.shares = millicores * 1024 / 1000, at least 2.
        cpu.insert("shares".into(), (millis.saturating_mul(1024) / 1000).max(2).into());
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), serde_json::Value::Object(cpu));
    }
    if resources.is_empty() {
        return None;
    }
    serde_json::from_value::<models::LinuxResources>(serde_json::Value::Object(resources)).ok()
}

/// Whether the kernel log (`/dev/kmsg`, root only where `kernel.dmesg_restrict` is set) records
/// an OOM kill in the memory cgroup of container `id` (its full id): the kernel's one-line
/// summary of each kill, `oom-kill:constraint=CONSTRAINT_MEMCG,...,task_memcg=<cgroup>,...`
/// (Linux 4.19 and later), whose cgroup podman names `libpod-<id>` (`.scope` with systemd).
/// False when the log cannot be read.
fn kernel_log_oom_kill(id: &str) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if id.len() < 12 {
        return false;
    }
    // Non-blocking: read the records there are, from the oldest kept, and stop.
    let Ok(mut kmsg) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return false;
    };
    // One record per read; records are at most a few KiB.
    let mut record = vec![0u8; 16 * 1024];
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => return false,
            Ok(n) => {
                if oom_kill_record_names(&String::from_utf8_lossy(&record[..n]), id) {
                    return true;
                }
            }
            // EPIPE: records were overwritten while reading; go on with the next ones.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false, // EAGAIN: the end of the log
        }
    }
}

/// Whether a `/dev/kmsg` record (`prio,seq,usec,flags;message`) is the kernel's summary of an
/// OOM kill in the cgroup of container `id`.
fn oom_kill_record_names(record: &str, id: &str) -> bool {
    let message = record.split_once(';').map_or(record, |(_, m)| m);
    let Some(fields) = message.lines().next().and_then(|l| l.strip_prefix("oom-kill:")) else {
        return false;
    };
    fields
        .split(',')
        .filter_map(|f| f.strip_prefix("task_memcg="))
        .any(|cgroup| cgroup.split('/').any(|part| part.contains(id)))
}

/// The kubelet's mounts as podman bind mounts (`podman create --mount
/// type=bind,src=...,dst=...,ro`): the source is a directory or file the kubelet prepared.
fn bind_mounts(config: &ContainerConfig) -> Vec<models::ContainerMount> {
    config
        .mounts
        .iter()
        .map(|m| models::ContainerMount {
            destination: Some(m.container_path.clone()),
            source: Some(m.host_path.clone()),
            _type: Some("bind".into()),
            options: Some(vec!["rbind".into(), if m.readonly { "ro" } else { "rw" }.into()]),
            uid_mappings: None,
            gid_mappings: None,
        })
        .collect()
}

/// Copy one attached podman stream (an exec session's or a container's): `stdin` in, stdout
/// and stderr out (stderr into stdout when only that was asked for), `resizes` alongside;
/// returns when the output ends.
async fn pump(
    mux: podman_api::conn::Multiplexer,
    stdin: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    stdout: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    stderr: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    resizes: impl std::future::Future<Output = ()>,
) {
    let (mut output, mut input) = mux.split();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            use futures::AsyncWriteExt;
            while let Some(chunk) = stdin.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = input.close().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let drain = async {
        while let Some(Ok(chunk)) = output.next().await {
            let (to, bytes) = match chunk {
                TtyChunk::StdOut(b) => (stdout.as_ref(), b),
                TtyChunk::StdErr(b) => (stderr.as_ref().or(stdout.as_ref()), b),
                TtyChunk::StdIn(_) => continue,
            };
            if let Some(to) = to {
                let _ = to.send(bytes).await;
            }
        }
    };
    tokio::pin!(feed, resizes);
    tokio::select! {
        _ = drain => {}
        _ = futures::future::join(&mut feed, &mut resizes) => {}
    }
}

/// Connect to `localhost:port` inside the network namespace of process `pid` (IPv4, then
/// IPv6, as containerd does), from sockets made in that namespace ([`kulisse_core::netns`]).
async fn dial_in_netns(pid: i64, port: u16) -> Result<tokio::net::TcpStream, String> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let timeout = Duration::from_secs(5);
    let v4 = std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    match kulisse_core::netns::connect_in(&path, v4, timeout).await {
        Ok(stream) => Ok(stream),
        Err(e4) => kulisse_core::netns::connect_in(&path, v6, timeout).await.map_err(|e6| {
            format!("failed to connect to localhost:{port} inside the pod's network namespace, IPv4: {e4} IPv6: {e6}")
        }),
    }
}

/// `podman create`'s options for the container `config` describes, named `name`, in pod
/// `sandbox_id`.
fn create_opts(
    name: &str,
    sandbox_id: &str,
    config: &ContainerConfig,
    labels: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> opts::ContainerCreateOpts {
    let mut b = opts::ContainerCreateOpts::builder()
        .name(name)
        .image(&config.image)
        .pod(sandbox_id)
        .labels(labels.clone())
        .annotations(config.annotations.clone())
        .env(env.clone())
        // The grace period comes with each stop; this only bounds `podman pod rm -f`.
        .stop_timeout(10);
    // Kubernetes: `command` replaces the image's ENTRYPOINT, `args` its CMD; a pod that sets
    // only `command` runs it without the image's CMD.
    match (config.command.is_empty(), config.args.is_empty()) {
        (false, false) => b = b.entrypoint(&config.command).command(&config.args),
        (false, true) => b = b.entrypoint(&config.command).command(Vec::<String>::new()),
        (true, false) => b = b.command(&config.args),
        (true, true) => {}
    }
    if let Some(dir) = config.working_dir.as_deref().filter(|d| !d.is_empty()) {
        b = b.work_dir(dir).create_working_dir(true);
    }
    if let Some(res) = linux_resources(config) {
        b = b.resource_limits(res);
    }
    if !config.mounts.is_empty() {
        b = b.mounts(bind_mounts(config));
    }
    // `stdin`/`tty` in the pod spec: what `kubectl attach -i` (and `-t`) attaches to.
    // (`stdinOnce` is the kubelet's to honour; podman keeps stdin open.)
    if config.stdin {
        b = b.stdin(true);
    }
    if config.tty {
        b = b.terminal(true);
    }
    b.build()
}

/// `podman pull`'s options for `image` from `registry` (always pull: the kubelet decided).
fn pull_opts(image: &str, registry: Option<&str>, auth: Option<&AuthConfig>) -> opts::PullOpts {
    let mut pull_opts = opts::PullOpts::builder()
        .reference(image)
        .policy(opts::PullPolicy::Always)
        .quiet(true);
    // A registry on this machine may well speak plain HTTP (`registry:2` on 127.0.0.1:5000):
    // podman then tries HTTPS without verifying, and falls back to HTTP.
    if registry.is_some_and(is_loopback_registry) {
        pull_opts = pull_opts.tls_verify(false);
    }
    // The pod's imagePullSecrets: podman sends them as `X-Registry-Auth`.
    if let Some(auth) = auth {
        pull_opts.auth(
            podman_api::opts::RegistryAuth::builder()
                .username(&auth.username)
                .password(&auth.password)
                .server_address(&auth.server)
                .build(),
        );
    }
    pull_opts.build()
}

/// The registry part of an image reference, if it names one (`localhost`,
/// `127.0.0.1:5000`, `quay.io`); `None` means the default registry (docker.io).
fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(registry)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `localhost/busybox:latest` → `localhost/busybox` (the repository, without tag or digest).
fn repository_of(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => no_digest,
    }
}

/// Is `port` free to bind on `ip` (for this protocol)?
fn can_bind(ip: Ipv4Addr, port: u16, protocol: &str) -> bool {
    if protocol.eq_ignore_ascii_case("udp") {
        std::net::UdpSocket::bind((ip, port)).is_ok()
    } else {
        std::net::TcpListener::bind((ip, port)).is_ok()
    }
}

/// Split a byte stream into whole lines (the last, unterminated one at the end).
fn take_lines(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let last_nl = buf.iter().rposition(|b| *b == b'\n')?;
    let rest = buf.split_off(last_nl + 1);
    Some(std::mem::replace(buf, rest))
}

/// A podman-api error as a [`RuntimeError`]: 404 → `NotFound`; an answer that does not
/// decode → `Backend` naming podman's version; anything else → `Backend` with podman's words.
fn runtime_error(version: &str, socket: &Path, doing: &str, e: podman_api::Error) -> RuntimeError {
    if let Some((code, message)) = fault(&e) {
        if code == 404 {
            return RuntimeError::NotFound(format!("{doing}: {message}"));
        }
        return RuntimeError::Backend(format!("podman {version}: {doing} failed: {message} (HTTP {code})"));
    }
    if is_decode_error(&e) {
        return RuntimeError::Backend(format!(
            "podman {version} answered {doing} in a shape the podman-api 0.11 client cannot decode ({e}); \
             kulisse's podman runtime was written for podman 4 (checked with 4.3.1)"
        ));
    }
    RuntimeError::Backend(format!("podman {version} at {}: {doing} failed: {e}", socket.display()))
}

impl PodmanRuntime {
    /// An exec session's exit code. podman records it a moment after the output ends, so
    /// wait (up to 2 s) while the session still reads as running.
    async fn exec_exit_code(&self, exec: &podman_api::api::Exec) -> Result<i32, RuntimeError> {
        let mut info = serde_json::Value::Null;
        for _ in 0..40 {
            info = exec
                .inspect()
                .await
                .map_err(|e| self.error("inspecting the exec session", e))?;
            if info.get("Running").and_then(serde_json::Value::as_bool) != Some(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(info
            .get("ExitCode")
            .and_then(serde_json::Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1))
    }

    /// Connect to podman at `options.socket` and ask its version (`GET /version`).
    pub async fn connect(options: PodmanOptions) -> Result<PodmanRuntime, RuntimeError> {
        let socket = options.socket.clone();
        if !socket.exists() {
            return Err(RuntimeError::Backend(format!(
                "podman's API socket {} does not exist; start the podman service with \
                 `podman system service --time=0 unix://{}` (or `systemctl start podman.socket`), \
                 and run scripts/setup-podman.sh once to install and configure podman",
                socket.display(),
                socket.display()
            )));
        }
        let podman = Podman::unix(&socket);
        let version = match podman.version().await {
            Ok(v) => v.version.unwrap_or_else(|| "unknown".into()),
            Err(e) if is_decode_error(&e) => {
                return Err(RuntimeError::Backend(format!(
                    "podman at {} answered GET /version in a shape the podman-api 0.11 client cannot \
                     decode ({e}); kulisse's podman runtime was written for podman 4 (checked with 4.3.1)",
                    socket.display()
                )));
            }
            Err(e) => {
                return Err(RuntimeError::Backend(format!(
                    "cannot talk to podman at {}: {e}; is `podman system service` running there, and may \
                     this user open the socket?",
                    socket.display()
                )));
            }
        };
        let cidr = Ipv4Cidr::parse_loopback(&kulisse_core::runtime::pod_cidr_for_node(&options.node_name))
            .map_err(RuntimeError::Backend)?;
        Ok(PodmanRuntime {
            podman,
            options: Arc::new(options),
            version: Arc::new(version),
            alloc: Arc::new(Mutex::new(Alloc { cidr, cursor: 0 })),
            sandbox_lock: Arc::new(tokio::sync::Mutex::new(())),
            start_failures: Arc::new(Mutex::new(HashMap::new())),
            oom_kills: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Podman's version, as `GET /version` reported it at connect.
    pub fn podman_version(&self) -> &str {
        &self.version
    }

    pub fn options(&self) -> &PodmanOptions {
        &self.options
    }

    /// Turn a podman-api error into a [`RuntimeError`] that says what we were doing.
    fn error(&self, doing: &str, e: podman_api::Error) -> RuntimeError {
        runtime_error(&self.version, &self.options.socket, doing, e)
    }

    fn start_failure(&self, id: &str) -> Option<(String, SystemTime)> {
        let failures = self.start_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(id).cloned()
    }

    fn forget_start_failure(&self, id: &str) {
        let mut failures = self.start_failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(id);
        let mut oom_kills = self.oom_kills.lock().unwrap_or_else(|p| p.into_inner());
        oom_kills.remove(id);
    }

    /// Whether the OOM killer struck in the memory cgroup of exited container `id` (its full
    /// id), by the kernel log; remembered, since an exited container's past does not change.
    async fn oom_killed_by_kernel_log(&self, id: &str) -> bool {
        let known = self
            .oom_kills
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        if let Some(known) = known {
            return known;
        }
        let full_id = id.to_string();
        let killed = tokio::task::spawn_blocking(move || kernel_log_oom_kill(&full_id))
            .await
            .unwrap_or(false);
        let mut oom_kills = self.oom_kills.lock().unwrap_or_else(|p| p.into_inner());
        oom_kills.insert(id.to_string(), killed);
        killed
    }

    /// The labels that mark this runtime's objects.
    fn own_labels(&self) -> [(String, String); 2] {
        [
            (LABEL_NODE.to_string(), self.options.node_name.clone()),
            (LABEL_CLUSTER.to_string(), self.options.cluster_id.clone()),
        ]
    }

    /// Label filters for a list call: ours plus the caller's.
    fn label_filter(&self, filter: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = filter.clone();
        all.extend(self.own_labels());
        all
    }

    /// Pod IPs held by any kulisse pod in this podman (all nodes, all clusters).
    async fn used_pod_ips(&self) -> Result<HashSet<Ipv4Addr>, RuntimeError> {
        let pods = self
            .podman
            .pods()
            .list(
                &opts::PodListOpts::builder()
                    .filter([opts::PodListFilter::LabelKey(LABEL_POD_IP.into())])
                    .build(),
            )
            .await
            .map_err(|e| self.error("listing pods (to find free pod IPs)", e))?;
        Ok(pods
            .into_iter()
            .filter_map(|p| p.labels?.get(LABEL_POD_IP)?.parse().ok())
            .collect())
    }

    /// A free address of the node's pod CIDR whose ports can all be bound.
    fn pick_ip(
        &self,
        used: &HashSet<Ipv4Addr>,
        tried: &HashSet<Ipv4Addr>,
        ports: &[(u16, String)],
    ) -> Result<Ipv4Addr, RuntimeError> {
        let mut alloc = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        // .0 is the network, .1 the "gateway", the last address the broadcast.
        let usable = alloc.cidr.size().saturating_sub(3).max(1);
        for i in 0..usable {
            let offset = 2 + (alloc.cursor + i) % usable;
            let Some(ip) = alloc.cidr.nth(offset) else { continue };
            if used.contains(&ip) || tried.contains(&ip) {
                continue;
            }
            if ports.iter().all(|(p, proto)| can_bind(ip, *p, proto)) {
                alloc.cursor = (offset - 2 + 1) % usable;
                return Ok(ip);
            }
        }
        Err(RuntimeError::Backend(format!(
            "no free pod IP left in the node's pod CIDR {} ({} addresses are held by podman pods)",
            alloc.cidr,
            used.len()
        )))
    }

    async fn remove_pod_quietly(&self, id: &str) {
        let pod = self.podman.pods().get(id);
        let _ = pod.kill().await;
        let _ = pod.stop_with_timeout(1).await;
        let _ = pod.remove().await;
    }

    /// `ContainerStatus` from `podman inspect`.
    async fn inspect_status(&self, id: &str) -> Result<ContainerStatus, podman_api::Error> {
        let data = self.podman.containers().get(id).inspect().await?;
        let state = data.state.as_ref();
        let config = data.config.as_ref();
        let labels = labels_of(config.and_then(|c| c.labels.clone()));
        let status_text = state.and_then(|s| s.status.clone()).unwrap_or_default();
        let error = state.and_then(|s| s.error.clone()).filter(|e| !e.is_empty());
        let mut st = state_of(&status_text);
        let mut exit_code = state.and_then(|s| s.exit_code);
        let mut reason = None;
        let mut message = error;
        let mut finished_at = if st == ContainerState::Exited {
            real_time(state.and_then(|s| s.finished_at))
        } else {
            None
        };
        // A start that failed (no such executable, ...) leaves the container "created": for
        // the kubelet it has terminated, as containerd reports it (StartError, 128).
        if st == ContainerState::Created
            && let Some((why, when)) = self
                .start_failure(id)
                .or_else(|| message.clone().map(|m| (m, SystemTime::now())))
        {
            st = ContainerState::Exited;
            exit_code = Some(128);
            reason = Some("StartError".to_string());
            message = Some(why);
            finished_at = Some(when);
        }
        if st == ContainerState::Exited && reason.is_none() {
            // Podman 4 misses OOM kills (see the module's docs): then the kernel log tells.
            let oom_killed = state.and_then(|s| s.oom_killed) == Some(true)
                || (exit_code != Some(0)
                    && match data.id.as_deref() {
                        Some(full_id) => self.oom_killed_by_kernel_log(full_id).await,
                        None => false,
                    });
            reason = Some(if oom_killed {
                "OOMKilled".to_string()
            } else if exit_code == Some(0) {
                "Completed".to_string()
            } else {
                "Error".to_string()
            });
        }
        let started_at = real_time(state.and_then(|s| s.started_at));
        // Podman stamps StartedAt after runc returns, so a process that ends at once can
        // "finish" a few microseconds before it "started".
        if let (Some(s), Some(f)) = (started_at, finished_at)
            && f < s
        {
            finished_at = Some(s);
        }
        let image_name = data.image_name.clone().unwrap_or_default();
        let image = labels.get(LABEL_IMAGE).cloned().unwrap_or_else(|| image_name.clone());
        let image_ref = match (data.image_digest.as_deref(), data.image.as_deref()) {
            (Some(d), _) if !d.is_empty() && !image_name.is_empty() => {
                format!("{}@{d}", repository_of(&image_name))
            }
            (_, Some(id)) if !id.is_empty() => format!("sha256:{id}"),
            _ => String::new(),
        };
        Ok(ContainerStatus {
            id: data.id.unwrap_or_else(|| id.to_string()),
            name: labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default(),
            attempt: attempt_of(&labels),
            state: st,
            image,
            image_ref,
            created_at: real_time(data.created).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at,
            finished_at,
            exit_code: if st == ContainerState::Exited { exit_code } else { None },
            reason,
            message,
            labels,
        })
    }

    /// `podman ps -a --filter ...`: the containers, running or not, that `filter` selects.
    async fn list_containers(
        &self,
        filter: opts::ContainerListFilter,
        doing: &str,
    ) -> Result<Vec<models::ListContainer>, RuntimeError> {
        self.podman
            .containers()
            .list(&opts::ContainerListOpts::builder().all(true).filter([filter]).build())
            .await
            .map_err(|e| self.error(doing, e))
    }

    /// `ContainerStatus` from `podman ps -a` (fallback when `inspect` does not decode).
    async fn listed_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let list = self
            .list_containers(
                opts::ContainerListFilter::Id(id.into()),
                &format!("listing container {id}"),
            )
            .await?;
        let c = list
            .into_iter()
            .find(|c| c.id.as_deref().is_some_and(|cid| cid.starts_with(id)))
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?}")))?;
        let labels = labels_of(c.labels);
        let state = state_of(c.state.as_deref().unwrap_or(""));
        let exit_code = (state == ContainerState::Exited).then_some(c.exit_code.unwrap_or(0));
        Ok(ContainerStatus {
            id: c.id.unwrap_or_else(|| id.to_string()),
            name: labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default(),
            attempt: attempt_of(&labels),
            state,
            image: labels.get(LABEL_IMAGE).cloned().or(c.image.clone()).unwrap_or_default(),
            image_ref: c.image_id.map(|i| format!("sha256:{i}")).unwrap_or_default(),
            created_at: real_time(c.created).unwrap_or(SystemTime::UNIX_EPOCH),
            started_at: unix_time(c.started_at),
            finished_at: if state == ContainerState::Exited {
                unix_time(c.exited_at)
            } else {
                None
            },
            exit_code,
            reason: exit_code.map(|c| if c == 0 { "Completed" } else { "Error" }.to_string()),
            message: None,
            labels,
        })
    }

    async fn create_pod(
        &self,
        config: &PodSandboxConfig,
        ip: Ipv4Addr,
        name: &str,
    ) -> Result<String, podman_api::Error> {
        let mut labels: BTreeMap<String, String> = config.labels.clone();
        labels.insert(LABEL_POD_NAME.into(), config.name.clone());
        labels.insert(LABEL_POD_NAMESPACE.into(), config.namespace.clone());
        labels.insert(LABEL_POD_UID.into(), config.uid.clone());
        labels.insert(LABEL_ATTEMPT.into(), config.attempt.to_string());
        labels.insert(LABEL_POD_IP.into(), ip.to_string());
        labels.extend(self.own_labels());
        let mut seen = HashSet::new();
        let mut mappings = Vec::new();
        for p in &config.port_mappings {
            let protocol = p.protocol.to_ascii_lowercase();
            if seen.insert((protocol.clone(), p.container_port, None)) {
                mappings.push(models::PortMapping {
                    container_port: Some(p.container_port),
                    host_ip: Some(ip.to_string()),
                    host_port: Some(p.container_port),
                    protocol: Some(protocol.clone()),
                    range: None,
                });
            }
            if let Some(h) = p.host_port
                && seen.insert((protocol.clone(), p.container_port, Some(h)))
            {
                // hostPort: on the node's address, which is always loopback in kulisse.
                mappings.push(models::PortMapping {
                    container_port: Some(p.container_port),
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(h),
                    protocol: Some(protocol),
                    range: None,
                });
            }
        }
        let hostname: String = config.hostname.chars().take(63).collect();
        let mut builder = opts::PodCreateOpts::builder().name(name).labels(labels);
        if !hostname.is_empty() {
            builder = builder.hostname(hostname.trim_end_matches(['-', '.']));
        }
        if !mappings.is_empty() {
            builder = builder.portmappings(mappings);
        }
        let pod = self.podman.pods().create(&builder.build()).await?;
        Ok(pod.id().to_string())
    }
}

#[async_trait]
impl ContainerRuntime for PodmanRuntime {
    fn name(&self) -> &str {
        "podman"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(self.version.to_string())
    }

    async fn status(&self) -> Result<(), RuntimeError> {
        self.podman
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.error("GET /_ping", e))
    }

    async fn update_runtime_config(&self, pod_cidr: &str) -> Result<(), RuntimeError> {
        let cidr = Ipv4Cidr::parse_loopback(pod_cidr).map_err(RuntimeError::Backend)?;
        let mut alloc = self.alloc.lock().unwrap_or_else(|p| p.into_inner());
        if alloc.cidr != cidr {
            alloc.cidr = cidr;
            alloc.cursor = 0;
        }
        Ok(())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let _ = sandbox;
        if image.trim().is_empty() {
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: "the image name is empty".into(),
            });
        }
        let registry = registry_of(image);
        if !self.options.allow_remote_registries && !registry.is_some_and(is_loopback_registry) {
            let present = self.image_status(image).await.ok().flatten().is_some();
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: format!(
                    "kulisse's podman runtime only pulls from registries on this machine (localhost/..., \
                     127.0.0.1:PORT/...) unless started with --allow-remote-pulls, and {} is not one. {}",
                    registry.unwrap_or("docker.io (the default registry)"),
                    if present {
                        "The image is already present in podman: set imagePullPolicy: IfNotPresent to use it."
                    } else {
                        "Put the image into podman yourself (podman load, podman import, \
                         scripts/build-busybox-image.sh) and set imagePullPolicy: IfNotPresent."
                    }
                ),
            });
        }
        let images = self.podman.images();
        let pull_opts = pull_opts(image, registry, auth);
        let mut stream = images.pull(&pull_opts);
        let mut failure: Option<String> = None;
        while let Some(report) = stream.next().await {
            match report {
                Ok(r) => {
                    if let Some(err) = r.error.filter(|e| !e.is_empty()) {
                        failure = Some(err);
                    }
                }
                Err(e) => {
                    failure = Some(match fault(&e) {
                        Some((_, message)) => message.to_string(),
                        None => self.error(&format!("pulling {image}"), e).to_string(),
                    });
                    break;
                }
            }
        }
        drop(stream);
        if let Some(reason) = failure {
            let present = self.image_status(image).await.ok().flatten().is_some();
            let hint = if present && registry.is_some_and(is_loopback_registry) {
                " (the image is present in podman: with imagePullPolicy: IfNotPresent the kubelet uses it without pulling)"
            } else {
                ""
            };
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: format!("{}{hint}", reason.trim()),
            });
        }
        self.image_status(image)
            .await?
            .ok_or_else(|| RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: "podman reported the pull as done, but the image is not there".into(),
            })
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.podman.images().get(image).inspect().await {
            Ok(data) => {
                let digest = data.digest.filter(|d| !d.is_empty());
                let repo = data
                    .repo_tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map(|t| repository_of(t).to_string());
                Ok(Some(match (repo, digest, data.id) {
                    (Some(repo), Some(digest), _) => format!("{repo}@{digest}"),
                    (_, _, Some(id)) => format!("sha256:{id}"),
                    _ => image.to_string(),
                }))
            }
            Err(e) if fault(&e).is_some_and(|(code, _)| code == 404) => Ok(None),
            Err(e) => Err(self.error(&format!("inspecting image {image}"), e)),
        }
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox, RuntimeError> {
        let _serial = self.sandbox_lock.lock().await;
        let ports: Vec<(u16, String)> = config
            .port_mappings
            .iter()
            .map(|p| (p.container_port, p.protocol.clone()))
            .collect();
        let attempt = config.attempt.to_string();
        let base_name = podman_name(&["k8s", "POD", &config.name, &config.namespace, &config.uid, &attempt]);
        let mut tried = HashSet::new();
        let mut last_error = String::new();
        for round in 0..5 {
            let used = self.used_pod_ips().await?;
            let ip = self.pick_ip(&used, &tried, &ports)?;
            tried.insert(ip);
            let mut name = base_name.clone();
            let id = match self.create_pod(config, ip, &name).await {
                Ok(id) => id,
                Err(e) if fault(&e).is_some_and(|(c, m)| c == 409 || m.contains("already")) => {
                    // A leftover with this name (its kubelet did not adopt it): keep it for
                    // the cleanup and take another name.
                    name = format!("{base_name}_{round}{:x}", std::process::id() ^ rand::random::<u32>());
                    self.create_pod(config, ip, &name)
                        .await
                        .map_err(|e| self.error(&format!("creating pod {name}"), e))?
                }
                Err(e) => return Err(self.error(&format!("creating pod {name}"), e)),
            };
            match self.podman.pods().get(&id).start().await {
                Ok(_) => {
                    tracing::debug!(pod = %name, id = %id, ip = %ip, "podman pod started");
                    return Ok(Sandbox { id, ip: ip.to_string() });
                }
                Err(e) => {
                    let err = self.error(&format!("starting pod {name}"), e);
                    self.remove_pod_quietly(&id).await;
                    last_error = err.to_string();
                    if last_error.contains("address already in use") {
                        continue; // someone took the address meanwhile: try the next one
                    }
                    return Err(err);
                }
            }
        }
        Err(RuntimeError::Backend(format!(
            "could not find a pod IP whose ports are free after 5 tries: {last_error}"
        )))
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        // Containers were stopped gracefully by the kubelet; anything left is killed.
        // (`t=0` means "each container's own stop timeout" to podman, hence SIGKILL first.)
        let pod = self.podman.pods().get(id);
        let _ = pod.kill().await;
        match pod.stop_with_timeout(1).await {
            Ok(_) => Ok(()),
            Err(e) if fault(&e).is_some_and(|(c, _)| c == 404 || c == 304) => Ok(()),
            Err(e) => Err(self.error(&format!("stopping pod {id}"), e)),
        }
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        match self.podman.pods().get(id).remove().await {
            Ok(_) => Ok(()),
            Err(e) if fault(&e).is_some_and(|(c, _)| c == 404) => Ok(()),
            Err(e) => Err(self.error(&format!("removing pod {id}"), e)),
        }
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let attempt = config.attempt.to_string();
        let base_name = podman_name(&[
            "k8s",
            &config.name,
            &sandbox.name,
            &sandbox.namespace,
            &sandbox.uid,
            &attempt,
        ]);
        let mut labels: BTreeMap<String, String> = config.labels.clone();
        labels.insert(LABEL_CONTAINER_NAME.into(), config.name.clone());
        labels.insert(LABEL_POD_NAME.into(), sandbox.name.clone());
        labels.insert(LABEL_POD_NAMESPACE.into(), sandbox.namespace.clone());
        labels.insert(LABEL_POD_UID.into(), sandbox.uid.clone());
        labels.insert(LABEL_ATTEMPT.into(), attempt);
        labels.insert(LABEL_IMAGE.into(), config.image.clone());
        labels.extend(self.own_labels());
        let env: BTreeMap<String, String> = config.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();

        let build = |name: &str| create_opts(name, sandbox_id, config, &labels, &env);
        let containers = self.podman.containers();
        let created = match containers.create(&build(&base_name)).await {
            Ok(c) => c,
            Err(e) if fault(&e).is_some_and(|(c, m)| c == 409 || m.contains("already in use")) => {
                let name = format!("{base_name}_{:x}", rand::random::<u32>());
                containers
                    .create(&build(&name))
                    .await
                    .map_err(|e| self.error(&format!("creating container {name}"), e))?
            }
            Err(e) => {
                return Err(match self.error(&format!("creating container {base_name}"), e) {
                    // "no such pod" / "image not known" are 404s: not a missing container.
                    RuntimeError::NotFound(m) => RuntimeError::Backend(format!("podman {}: {m}", self.version)),
                    other => other,
                });
            }
        };
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self.podman.containers().get(id).start(None).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.error(&format!("starting container {id}"), e);
                if !matches!(err, RuntimeError::NotFound(_)) {
                    let mut failures = self.start_failures.lock().unwrap_or_else(|p| p.into_inner());
                    failures.insert(id.to_string(), (err.to_string(), SystemTime::now()));
                }
                Err(err)
            }
        }
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        // What a CRI runtime does: SIGTERM, wait up to the grace period, then SIGKILL. (Done
        // step by step because podman 4.3's libpod stop endpoint reads its timeout from a
        // `timeout` parameter that podman-api 0.11 spells `Timeout`, so it would always wait
        // the container's own 10 s.)
        let running =
            |st: &Result<ContainerStatus, RuntimeError>| matches!(st, Ok(s) if s.state == ContainerState::Running);
        let first = self.container_status(id).await;
        match &first {
            Err(RuntimeError::NotFound(_)) => return Ok(()), // already gone
            Err(e) => return Err(e.clone()),
            Ok(_) if !running(&first) => return Ok(()), // stopping twice is fine
            Ok(_) => {}
        }
        let container = self.podman.containers().get(id);
        if !timeout.is_zero() {
            if let Err(e) = container.send_signal("SIGTERM").await {
                let err = self.error(&format!("sending SIGTERM to container {id}"), e);
                if !running(&self.container_status(id).await) {
                    return Ok(());
                }
                tracing::debug!("{err}; killing it instead");
            } else {
                let deadline = tokio::time::Instant::now() + timeout;
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if !running(&self.container_status(id).await) {
                        return Ok(());
                    }
                }
            }
        }
        // The grace period is over (or was zero): SIGKILL.
        if let Err(e) = container.kill().await {
            let err = self.error(&format!("killing container {id}"), e);
            if running(&self.container_status(id).await) {
                return Err(err);
            }
            return Ok(());
        }
        for _ in 0..100 {
            if !running(&self.container_status(id).await) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RuntimeError::Backend(format!(
            "podman {}: container {id} still runs 5 s after SIGKILL",
            self.version
        )))
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let delete = opts::ContainerDeleteOpts::builder().force(true).volumes(true).build();
        self.forget_start_failure(id);
        match self.podman.containers().get(id).delete(&delete).await {
            Ok(()) => Ok(()),
            Err(e) if fault(&e).is_some_and(|(c, _)| c == 404) => Ok(()),
            Err(e) => Err(self.error(&format!("removing container {id}"), e)),
        }
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        match self.inspect_status(id).await {
            Ok(s) => Ok(s),
            Err(e) if is_decode_error(&e) => {
                tracing::debug!(
                    "podman {}: container inspect did not decode ({e}); using the container list",
                    self.version
                );
                self.listed_status(id).await
            }
            Err(e) => {
                let err = self.error(&format!("inspecting container {id}"), e);
                if matches!(err, RuntimeError::NotFound(_)) {
                    self.forget_start_failure(id);
                }
                Err(err)
            }
        }
    }

    async fn list_pod_sandboxes(&self, filter: &BTreeMap<String, String>) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let all = self.label_filter(filter);
        let pods = self
            .podman
            .pods()
            .list(
                &opts::PodListOpts::builder()
                    .filter(
                        all.iter()
                            .map(|(k, v)| opts::PodListFilter::LabelKeyVal(k.clone(), v.clone())),
                    )
                    .build(),
            )
            .await
            .map_err(|e| self.error("listing pods", e))?;
        Ok(pods
            .into_iter()
            .filter_map(|p| {
                let labels = labels_of(p.labels);
                if !matches(&labels, &all) {
                    return None;
                }
                let state = match p.status.as_deref().unwrap_or("") {
                    "Running" | "Degraded" => SandboxState::Ready,
                    _ => SandboxState::NotReady,
                };
                Some(SandboxInfo {
                    id: p.id?,
                    name: labels.get(LABEL_POD_NAME).cloned().unwrap_or_default(),
                    namespace: labels.get(LABEL_POD_NAMESPACE).cloned().unwrap_or_default(),
                    uid: labels.get(LABEL_POD_UID).cloned().unwrap_or_default(),
                    attempt: attempt_of(&labels),
                    state,
                    ip: labels.get(LABEL_POD_IP).cloned().unwrap_or_default(),
                    created_at: real_time(p.created).unwrap_or(SystemTime::UNIX_EPOCH),
                    labels,
                })
            })
            .collect())
    }

    async fn list_containers(&self, filter: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let all = self.label_filter(filter);
        let list = self
            .podman
            .containers()
            .list(
                &opts::ContainerListOpts::builder()
                    .all(true)
                    .filter(
                        all.iter()
                            .map(|(k, v)| opts::ContainerListFilter::LabelKeyVal(k.clone(), v.clone())),
                    )
                    .build(),
            )
            .await
            .map_err(|e| self.error("listing containers", e))?;
        Ok(list
            .into_iter()
            .filter(|c| c.is_infra != Some(true))
            .filter_map(|c| {
                let labels = labels_of(c.labels);
                if !matches(&labels, &all) {
                    return None;
                }
                let id = c.id?;
                Some(ContainerInfo {
                    id: id.clone(),
                    sandbox_id: c.pod.unwrap_or_default(),
                    name: labels.get(LABEL_CONTAINER_NAME).cloned().unwrap_or_default(),
                    attempt: attempt_of(&labels),
                    image: labels.get(LABEL_IMAGE).cloned().or(c.image).unwrap_or_default(),
                    state: match state_of(c.state.as_deref().unwrap_or("")) {
                        ContainerState::Created if self.start_failure(&id).is_some() => ContainerState::Exited,
                        other => other,
                    },
                    created_at: real_time(c.created).unwrap_or(SystemTime::UNIX_EPOCH),
                    labels,
                })
            })
            .collect())
    }

    async fn container_logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, RuntimeError> {
        // Fail early (NotFound) rather than with an empty stream.
        match self.podman.containers().get(id).exists().await {
            Ok(true) => {}
            Ok(false) => {
                return Err(RuntimeError::NotFound(format!(
                    "{}container {id:?}",
                    if options.previous { "previous " } else { "" }
                )));
            }
            Err(e) => return Err(self.error(&format!("looking up container {id}"), e)),
        }
        let mut builder = opts::ContainerLogsOpts::builder()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps);
        if let Some(n) = options.tail_lines {
            builder = builder.tail(n.to_string());
        }
        let log_opts = builder.build();
        let podman = self.podman.clone();
        let id = id.to_string();
        let runtime = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, RuntimeError>>(16);
        tokio::spawn(async move {
            let container = podman.containers().get(&id);
            let mut stream = container.logs(&log_opts);
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let next = tokio::select! {
                    n = stream.next() => n,
                    _ = tx.closed() => return, // the reader went away
                };
                match next {
                    Some(Ok(TtyChunk::StdOut(bytes) | TtyChunk::StdErr(bytes))) => {
                        buf.extend_from_slice(&bytes);
                        if let Some(lines) = take_lines(&mut buf)
                            && tx.send(Ok(lines)).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Ok(TtyChunk::StdIn(_))) => {}
                    Some(Err(e)) => {
                        if !buf.is_empty() {
                            let _ = tx.send(Ok(std::mem::take(&mut buf))).await;
                        }
                        let _ = tx
                            .send(Err(runtime.error(&format!("reading the logs of container {id}"), e)))
                            .await;
                        return;
                    }
                    None => break,
                }
            }
            if !buf.is_empty() {
                if buf.last() != Some(&b'\n') {
                    buf.push(b'\n');
                }
                let _ = tx.send(Ok(buf)).await;
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn exec(&self, id: &str, command: &[String], io: StreamIo) -> Result<i32, RuntimeError> {
        let StreamIo {
            stdin,
            stdout,
            stderr,
            mut resize,
            tty,
        } = io;
        // A terminal starts with the client's size: kubectl sends it first thing, and a
        // command that asks for the size before podman's later resize lands would fail
        // (busybox's `stty size` does). A client that sends none is not waited for long.
        let mut start = opts::ExecStartOpts::builder().tty(tty);
        if let Some(resize) = resize.as_mut().filter(|_| tty)
            && let Ok(Some(size)) = tokio::time::timeout(Duration::from_secs(1), resize.recv()).await
        {
            start = start.height(usize::from(size.height)).width(usize::from(size.width));
        }
        let exec = self
            .podman
            .containers()
            .get(id)
            .create_exec(
                &opts::ExecCreateOpts::builder()
                    .command(command)
                    .attach_stdin(stdin.is_some())
                    .attach_stdout(stdout.is_some())
                    .attach_stderr(stderr.is_some())
                    .tty(tty)
                    .build(),
            )
            .await
            .map_err(|e| self.error(&format!("creating an exec session in container {id}"), e))?;
        let mux = exec
            .start(&start.build())
            .await
            .map_err(|e| self.error(&format!("running {:?} in container {id}", command.join(" ")), e))?;
        if let Some(mux) = mux {
            let resizes = async {
                if let Some(mut resize) = resize {
                    while let Some(size) = resize.recv().await {
                        let _ = exec.resize(usize::from(size.width), usize::from(size.height)).await;
                    }
                }
                std::future::pending::<()>().await;
            };
            pump(mux, stdin, stdout, stderr, resizes).await;
        }
        self.exec_exit_code(&exec).await
    }

    /// The CRI's `Attach`: podman's attach to the container's main process (stdin only
    /// if the container was made with `stdin: true`); the exit code if it ended meanwhile.
    async fn attach(&self, id: &str, io: StreamIo) -> Result<Option<i32>, RuntimeError> {
        let StreamIo {
            stdin,
            stdout,
            stderr,
            resize,
            tty: _,
        } = io;
        let container = self.podman.containers().get(id);
        let mux = container
            .attach(
                &opts::ContainerAttachOpts::builder()
                    .stdin(stdin.is_some())
                    .stdout(stdout.is_some())
                    .stderr(stderr.is_some())
                    .build(),
            )
            .await
            .map_err(|e| self.error(&format!("attaching to container {id}"), e))?;
        let resizes = async {
            if let Some(mut resize) = resize {
                while let Some(size) = resize.recv().await {
                    let _ = container
                        .resize(usize::from(size.width), usize::from(size.height))
                        .await;
                }
            }
            std::future::pending::<()>().await;
        };
        pump(mux, stdin, stdout, stderr, resizes).await;
        let status = self.container_status(id).await?;
        Ok(status.exit_code.filter(|_| status.state == ContainerState::Exited))
    }

    /// The CRI's `PortForward`, as containerd and CRI-O do it: find the pid of the pod's
    /// infra container, enter its network namespace on a thread of its own, dial
    /// `localhost:port` there, and hand the connected socket back (a socket stays in the
    /// namespace it was made in). Needs root (`CAP_SYS_ADMIN` for `setns`).
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<Box<dyn kulisse_core::runtime::PortStream>, RuntimeError> {
        let list = self
            .list_containers(
                opts::ContainerListFilter::Pod(sandbox_id.to_string()),
                "finding the pod's infra container",
            )
            .await?;
        let pid = list
            .iter()
            .find(|c| c.is_infra == Some(true))
            .and_then(|c| c.pid)
            .filter(|pid| *pid > 0)
            .ok_or_else(|| RuntimeError::Backend(format!("pod sandbox {sandbox_id} has no running infra container")))?;
        let stream = dial_in_netns(pid, port).await.map_err(RuntimeError::Backend)?;
        Ok(Box::new(stream))
    }

    async fn exec_sync(&self, id: &str, command: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Backend("exec: the command is empty".into()));
        }
        let container = self.podman.containers().get(id);
        let exec = container
            .create_exec(
                &opts::ExecCreateOpts::builder()
                    .command(command)
                    .attach_stdout(true)
                    .attach_stderr(true)
                    .build(),
            )
            .await
            .map_err(|e| self.error(&format!("creating an exec session in container {id}"), e))?;
        let run = async {
            let start_opts = opts::ExecStartOpts::builder().build();
            let mut output = Vec::new();
            if let Some(mut mux) = exec
                .start(&start_opts)
                .await
                .map_err(|e| self.error(&format!("running {:?} in container {id}", command.join(" ")), e))?
            {
                while let Some(chunk) = mux.next().await {
                    match chunk {
                        Ok(TtyChunk::StdOut(b) | TtyChunk::StdErr(b)) => {
                            if output.len() < 1 << 20 {
                                output.extend_from_slice(&b);
                            }
                        }
                        Ok(TtyChunk::StdIn(_)) => {}
                        Err(e) => {
                            return Err(self.error(&format!("reading the output of {:?}", command.join(" ")), e.into()));
                        }
                    }
                }
            }
            Ok((self.exec_exit_code(&exec).await?, output))
        };
        match tokio::time::timeout(timeout.max(Duration::from_secs(1)), run).await {
            Ok(r) => r,
            Err(_) => Err(RuntimeError::Backend(format!(
                "command {:?} in container {id} timed out after {}s",
                command.join(" "),
                timeout.as_secs().max(1)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_registries_and_ids() {
        assert_eq!(
            podman_name(&["k8s", "POD", "web", "default", "u-1", "0"]),
            "k8s_POD_web_default_u-1_0"
        );
        assert_eq!(podman_name(&["_x", "a b"]), "k_x_a-b");
        assert_eq!(registry_of("localhost/busybox:latest"), Some("localhost"));
        assert_eq!(registry_of("busybox"), None);
        assert_eq!(registry_of("library/busybox"), None);
        assert_eq!(registry_of("quay.io/x/y"), Some("quay.io"));
        assert!(is_loopback_registry("localhost"));
        assert!(is_loopback_registry("localhost:5000"));
        assert!(is_loopback_registry("127.0.0.1:5000"));
        assert!(is_loopback_registry("[::1]:5000"));
        assert!(!is_loopback_registry("quay.io"));
        assert!(!is_loopback_registry("10.88.0.1:5000"));
        assert_eq!(repository_of("localhost/busybox:latest"), "localhost/busybox");
        assert_eq!(repository_of("localhost:5000/busybox"), "localhost:5000/busybox");
        assert_eq!(repository_of("x/y@sha256:abc"), "x/y");
        assert_eq!(cluster_id_from_ca("a\n"), cluster_id_from_ca("a"));
        assert_ne!(cluster_id_from_ca("a"), cluster_id_from_ca("b"));
        assert_eq!(cluster_id_from_ca("a").len(), 16);
    }

    #[test]
    fn undecodable_answers_are_clear_errors_naming_the_version() {
        // What podman 5 does to the typed models (StopSignal became a string).
        let decode = serde_json::from_str::<u64>("\"SIGTERM\"").unwrap_err();
        let err = runtime_error(
            "5.2.0",
            Path::new("/run/podman/podman.sock"),
            "inspecting container abc",
            podman_api::Error::SerdeJsonError(decode),
        );
        match err {
            RuntimeError::Backend(m) => {
                assert!(m.contains("podman 5.2.0") && m.contains("cannot decode"), "{m}");
                assert!(m.contains("inspecting container abc"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn states_and_lines() {
        assert_eq!(state_of("running"), ContainerState::Running);
        assert_eq!(state_of("exited"), ContainerState::Exited);
        assert_eq!(state_of("configured"), ContainerState::Created);
        assert_eq!(state_of("weird"), ContainerState::Unknown);
        let mut buf = b"one\ntwo\nthr".to_vec();
        assert_eq!(take_lines(&mut buf), Some(b"one\ntwo\n".to_vec()));
        assert_eq!(buf, b"thr");
        assert_eq!(take_lines(&mut buf), None);
    }

    #[test]
    fn oom_kills_in_the_kernel_log() {
        let id = "65186d6bba08312ff53c92c79cbf8ceb94970d77d06e7ba52b020ce20f29f020";
        // As Linux 6.x writes it to /dev/kmsg for a container of a podman pod (cgroupfs).
        let record = format!(
            "4,4711,61689272980,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=libpod-{id},\
             mems_allowed=0,oom_memcg=/libpod_parent/16ad30a6/libpod-{id},task_memcg=/libpod_parent/16ad30a6/libpod-{id},\
             task=tail,pid=11615,uid=0\n"
        );
        assert!(oom_kill_record_names(&record, id));
        assert!(!oom_kill_record_names(&record, &id.replace('6', "7")));
        // systemd's cgroup names
        let systemd =
            format!("6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,task_memcg=/machine.slice/libpod-{id}.scope,task=x");
        assert!(oom_kill_record_names(&systemd, id));
        // Other lines that name the container are no OOM kill of it.
        let other = format!("6,3,4,-;Memory cgroup stats for /libpod_parent/libpod-{id}:");
        assert!(!oom_kill_record_names(&other, id));
    }
}
