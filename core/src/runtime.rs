//! # The container runtime interface (mirrors the Kubernetes CRI)
//!
//! The kubelet never starts a process itself. It asks a **container runtime** (containerd,
//! CRI-O, ...) through the **Container Runtime Interface**, a gRPC API with two services:
//!
//! - the **ImageService**: `PullImage`, `ImageStatus`, ...
//! - the **RuntimeService**: `RunPodSandbox`, `CreateContainer`, `StartContainer`,
//!   `StopContainer`, `ContainerStatus`, `ListContainers`, ...
//!
//! A pod becomes a **sandbox** first: the shared environment (network namespace, IP
//! address, hostname) its containers join. Then each container is *created* (its
//! configuration is written down) and *started* (its process runs). Stopping is the
//! reverse: stop the containers (SIGTERM, then SIGKILL after the grace period), stop the
//! sandbox, remove everything.
//!
//! [`ContainerRuntime`] is kulisse's CRI: one async trait with the same steps, so every
//! backend (the in-memory mock, later podman) looks the same to the kubelet, and a trace
//! shows the same `runtime.*` spans whatever runs the containers. Like the CRI, it is
//! deliberately dumb: it knows nothing about restart policies, probes or Pod objects. All
//! of that lives in the kubelet.
//!
//! Two optional capabilities have defaults, as in krustlet's provider trait:
//! [`ContainerRuntime::exec_sync`] (running a command inside a container, for `exec`
//! probes) and [`ContainerRuntime::probe`] (a runtime that *simulates* containers can also
//! simulate their health checks; a real one returns `None` and the kubelet probes for real).
//!
//! The kubelet labels every sandbox and container with [`LABEL_POD_NAME`],
//! [`LABEL_POD_NAMESPACE`], [`LABEL_POD_UID`] and [`LABEL_CONTAINER_NAME`] (the labels the
//! real kubelet uses), so it can find them again with [`ContainerRuntime::list_containers`].
//!
//! Network rule: kulisse only ever uses loopback. Pod IPs come from a per-node range inside
//! `127.0.0.0/8` ([`pod_cidr_for_node`]) and published host ports are only ever bound to
//! `127.0.0.1` ([`PortMapping::host_ip`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::Stream;

/// Label on sandboxes and containers: the pod's name.
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
/// Label on sandboxes and containers: the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Label on sandboxes and containers: the pod's uid (tells a re-created pod apart).
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
/// Label on containers: the container's name in the pod spec.
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The container annotation by which the kulisse kubelet marks an init container that is
/// meant to run to completion (not a sidecar with `restartPolicy: Always`). The CRI has no
/// such field (a real runtime simply runs the command, which exits); the mock runtime, which
/// runs nothing, reads it to let the container complete.
pub const ANNOTATION_RUN_TO_COMPLETION: &str = "kulisse.dev/run-to-completion";

/// What can go wrong in a runtime call. Messages are shown to users in pod statuses and
/// events, so they say what was expected and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be pulled (no such image, registry unreachable, ...).
    #[error("failed to pull image \"{image}\": {reason}")]
    ImagePullFailed { image: String, reason: String },
    /// No sandbox, container or image with that id.
    #[error("{0} not found in the container runtime")]
    NotFound(String),
    /// This runtime cannot do that (e.g. `exec` in a runtime without processes).
    #[error("the container runtime does not support {0}")]
    Unsupported(String),
    /// Anything else the backend reports.
    #[error("container runtime error: {0}")]
    Backend(String),
}

/// A port of the pod, as the CRI's `PortMapping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port the container listens on.
    pub container_port: u16,
    /// The host port to publish it on, if the pod asks for one (`hostPort`).
    pub host_port: Option<u16>,
    /// Where the host port is bound: always `127.0.0.1` in kulisse (never publish elsewhere).
    pub host_ip: String,
}

/// Everything a runtime needs to create a pod sandbox (the CRI's `PodSandboxConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// How many sandboxes this pod had before (0 for the first).
    pub attempt: u32,
    pub hostname: String,
    /// Labels of the sandbox: the pod's labels plus the `io.kubernetes.pod.*` labels.
    pub labels: BTreeMap<String, String>,
    /// The pod's annotations (the mock runtime reads its failure injection from them).
    pub annotations: BTreeMap<String, String>,
    pub port_mappings: Vec<PortMapping>,
}

/// Credentials for an image's registry (the CRI's `AuthConfig`), found by the kubelet in
/// one of the pod's `imagePullSecrets`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The registry the credentials are for, as the secret names it (`127.0.0.1:5000`).
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AuthConfig {
    /// Never prints the password (spans and logs show this struct).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// An environment variable of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A volume mounted into a container (the CRI's `Mount`): a path on the node that the
/// kubelet prepared, bind-mounted at `container_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where the container sees it (`volumeMounts[].mountPath`).
    pub container_path: String,
    /// The directory or file on the node (under the kubelet's root dir, or a `hostPath`).
    pub host_path: String,
    /// Mounted read-only (`readOnly: true`, and always for configMap, secret, downwardAPI and
    /// projected volumes).
    pub readonly: bool,
    /// The pod's volume it comes from. Not in the CRI; kulisse passes it so the mock runtime
    /// and traces can name the volume.
    pub volume: String,
}

/// CPU and memory of a container, in the units the kernel's cgroups use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu` in millicores.
    pub cpu_request_millis: Option<u64>,
    /// `limits.cpu` in millicores.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.memory` in bytes.
    pub memory_request_bytes: Option<u64>,
    /// `limits.memory` in bytes.
    pub memory_limit_bytes: Option<u64>,
}

/// Everything a runtime needs to create a container (the CRI's `ContainerConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The container's name in the pod spec.
    pub name: String,
    /// How many times this container was started before (its restart count).
    pub attempt: u32,
    pub image: String,
    /// Overrides the image's entrypoint (`command` in the pod spec).
    pub command: Vec<String>,
    /// Overrides the image's cmd (`args` in the pod spec).
    pub args: Vec<String>,
    pub env: Vec<EnvVar>,
    pub working_dir: Option<String>,
    pub ports: Vec<PortMapping>,
    pub resources: Resources,
    /// The pod's volumes this container mounts.
    pub mounts: Vec<Mount>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Keep the main process' stdin open for `kubectl attach -i` (`stdin` in the pod spec).
    pub stdin: bool,
    /// Close that stdin after the first attach ends (`stdinOnce`).
    pub stdin_once: bool,
    /// Give the main process a terminal (`tty`).
    pub tty: bool,
}

/// The answer to `RunPodSandbox`: its id and the pod's IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub ip: String,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started yet.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (see `exit_code`).
    Exited,
    /// The runtime does not know.
    Unknown,
}

/// The answer to `ContainerStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    /// The container's name in the pod spec.
    pub name: String,
    pub attempt: u32,
    pub state: ContainerState,
    pub image: String,
    /// The resolved image (`imageID` in the pod status).
    pub image_ref: String,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: Option<i32>,
    /// Why it ended, in the runtime's words (`Completed`, `Error`, `OOMKilled`).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Whether a sandbox is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// One entry of `ListPodSandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: SystemTime,
}

/// One entry of `ListContainers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub state: ContainerState,
    pub labels: BTreeMap<String, String>,
    pub created_at: SystemTime,
}

/// Options of a log read (the query of `kubectl logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Keep streaming new lines until the container ends.
    pub follow: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// The kubelet resolved `previous=true` to the previous container's id already; kept
    /// here so a runtime can mention it in messages.
    pub previous: bool,
}

/// A stream of log bytes (whole lines).
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, RuntimeError>> + Send>>;

/// A terminal's size, as the `resize` channel of `kubectl exec -t` sends it
/// (`{"Width":80,"Height":24}`, upstream's `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The streams of an exec or attach session (the CRI's `ExecRequest` / `AttachRequest`
/// streams, as channels). A stream the client did not ask for is `None`. Closing `stdin`'s
/// sender is end-of-file; a runtime drops `stdout`/`stderr` when the process ends.
#[derive(Debug, Default)]
pub struct StreamIo {
    pub stdin: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    pub stdout: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Always `None` with a TTY: a terminal has one output stream.
    pub stderr: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    /// Terminal size changes (only with `tty`).
    pub resize: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
    /// Run the command on a pseudo-terminal.
    pub tty: bool,
}

/// Anything that reads and writes bytes: a port-forward connection into a pod.
pub trait PortStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> PortStream for T {}

/// Which probe a [`ProbeSpec`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness` or `Readiness`, as in the kubelet's event messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// `httpGet`: success is a status code from 200 to 399.
    Http {
        scheme: String,
        host: Option<String>,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// `tcpSocket`: success is an accepted connection.
    Tcp { host: Option<String>, port: u16 },
    /// `exec`: success is exit code 0.
    Exec { command: Vec<String> },
    /// `grpc`: the gRPC health checking protocol.
    Grpc { port: u16, service: Option<String> },
}

/// One probe of a container, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// The container's name in the pod spec.
    pub container_name: String,
    pub action: ProbeAction,
    pub timeout: Duration,
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// Failed, with the output a user sees in the `Unhealthy` event.
    Failure(String),
}

/// kulisse's CRI. See the module doc.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync {
    /// The runtime's name, used in container ids (`mock://abc123`).
    fn name(&self) -> &str;

    /// The runtime's version (`containerRuntimeVersion: mock://0.1.0` on the Node).
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Tell the runtime the node's pod CIDR (the CRI's `UpdateRuntimeConfig`); pod IPs
    /// come from this range.
    async fn update_runtime_config(&self, pod_cidr: &str) -> Result<(), RuntimeError> {
        let _ = pod_cidr;
        Ok(())
    }

    /// Is the runtime up and answering (the CRI's `Status`, its `RuntimeReady` condition)?
    /// The kubelet asks on every node status heartbeat; an error makes the node `NotReady`.
    /// The default: always up (a runtime inside the kubelet's own process).
    async fn status(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Pull an image, logging in to its registry with `auth` if given (the CRI's
    /// `PullImageRequest.auth`, from the pod's `imagePullSecrets`); returns the image
    /// reference (`imageID`).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError>;

    /// The image reference if the image is present on the node, `None` if not.
    async fn image_status(&self, image: &str) -> Result<Option<String>, RuntimeError>;

    /// Create and start a pod sandbox; returns its id and the pod IP.
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox, RuntimeError>;

    /// Stop a sandbox (and any container still running in it). Stopping twice is fine.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;

    /// Remove a sandbox and all its containers. Removing a missing sandbox is fine.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError>;

    /// Create a container in a sandbox; returns the container id.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError>;

    /// Start a created container.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// Stop a container: SIGTERM, then SIGKILL after `timeout`. Stopping twice is fine.
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;

    /// Remove a stopped container. Removing a missing container is fine.
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError>;

    /// The status of one container.
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError>;

    /// Sandboxes whose labels include all of `filter`.
    async fn list_pod_sandboxes(&self, filter: &BTreeMap<String, String>) -> Result<Vec<SandboxInfo>, RuntimeError>;

    /// Containers whose labels include all of `filter`.
    async fn list_containers(&self, filter: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError>;

    /// A container's output.
    async fn container_logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, RuntimeError>;

    /// Run a command in a container and wait for it (the CRI's `ExecSync`): exit code and
    /// output. Optional.
    async fn exec_sync(&self, id: &str, command: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), RuntimeError> {
        let _ = (id, command, timeout);
        Err(RuntimeError::Unsupported(format!("exec ({})", self.name())))
    }

    /// Run a command in a running container with its streams attached (the CRI's `Exec`,
    /// behind `kubectl exec`); returns its exit code once it ends. Optional.
    async fn exec(&self, id: &str, command: &[String], io: StreamIo) -> Result<i32, RuntimeError> {
        let _ = (id, command, io);
        Err(RuntimeError::Unsupported(format!("exec ({})", self.name())))
    }

    /// Attach to the main process of a running container (the CRI's `Attach`, behind
    /// `kubectl attach`); returns its exit code if it ended while attached. Optional.
    async fn attach(&self, id: &str, io: StreamIo) -> Result<Option<i32>, RuntimeError> {
        let _ = (id, io);
        Err(RuntimeError::Unsupported(format!("attach ({})", self.name())))
    }

    /// A connection to `port` of the sandbox's network (the CRI's `PortForward`, behind
    /// `kubectl port-forward`): as if dialled from inside the pod to `localhost:port`. Optional.
    async fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<Box<dyn PortStream>, RuntimeError> {
        let _ = (sandbox_id, port);
        Err(RuntimeError::Unsupported(format!("port-forward ({})", self.name())))
    }

    /// A simulated probe. `None` (the default) means "probe for real": the kubelet then
    /// connects to the pod IP itself (HTTP, TCP) or uses [`ContainerRuntime::exec_sync`].
    async fn probe(&self, container_id: &str, probe: &ProbeSpec) -> Option<ProbeResult> {
        let _ = (container_id, probe);
        None
    }
}

/// An IPv4 range `a.b.c.d/n`, for pod CIDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parse `127.64.3.0/24`. Only ranges inside `127.0.0.0/8` are accepted (kulisse never
    /// hands out addresses that leave the machine), with room for at least two pods.
    pub fn parse_loopback(text: &str) -> Result<Ipv4Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("pod CIDR {text:?} is not of the form a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr
            .trim()
            .parse()
            .map_err(|_| format!("pod CIDR {text:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .trim()
            .parse()
            .map_err(|_| format!("pod CIDR {text:?}: the prefix length {prefix:?} is not a number"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("pod CIDR {text:?}: the prefix length must be between 8 and 30"));
        }
        if addr.octets()[0] != 127 {
            return Err(format!(
                "pod CIDR {text:?} is outside 127.0.0.0/8; kulisse only hands out loopback pod IPs"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// How many addresses the range holds.
    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// The address at `offset` from the network address.
    pub fn nth(&self, offset: u32) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + offset))
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// How many distinct per-node pod ranges [`pod_cidr_for_index`] hands out.
pub const MAX_NODE_POD_RANGES: u32 = 16384;

/// The pod CIDR of node number `index`: `127.(64 + index / 256).(index % 256).0/24`, i.e.
/// a `/24` out of `127.64.0.0/10`. That is 16384 distinct ranges of 253 usable pod IPs
/// (`.2` to `.254`), far above the 110 pods a node runs by default. Indexes wrap around.
pub fn pod_cidr_for_index(index: u32) -> String {
    let i = index % MAX_NODE_POD_RANGES;
    format!("127.{}.{}.0/24", 64 + i / 256, i % 256)
}

/// The default pod CIDR of a node, derived from its name: a name ending in a number
/// (`node-7`, `worker12`) gets [`pod_cidr_for_index`] of that number, so nodes numbered
/// 0..16383 get distinct ranges; any other name gets a range chosen by a hash of the name
/// (set `KubeletOptions::pod_cidr` explicitly to rule out collisions).
pub fn pod_cidr_for_node(node_name: &str) -> String {
    let digits: String = node_name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let index = match digits.parse::<u64>() {
        Ok(n) if !digits.is_empty() => (n % u64::from(MAX_NODE_POD_RANGES)) as u32,
        _ => {
            // FNV-1a: stable across runs and platforms, unlike std's hasher.
            let mut h: u32 = 0x811c_9dc5;
            for b in node_name.bytes() {
                h ^= u32::from(b);
                h = h.wrapping_mul(0x0100_0193);
            }
            h % MAX_NODE_POD_RANGES
        }
    };
    pod_cidr_for_index(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_are_distinct_and_loopback() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_NODE_POD_RANGES {
            let cidr = pod_cidr_for_index(i);
            assert!(Ipv4Cidr::parse_loopback(&cidr).is_ok(), "{cidr}");
            assert!(seen.insert(cidr));
        }
        assert_eq!(pod_cidr_for_node("node-0"), "127.64.0.0/24");
        assert_eq!(pod_cidr_for_node("node-257"), "127.65.1.0/24");
        assert!(Ipv4Cidr::parse_loopback(&pod_cidr_for_node("control-plane")).is_ok());
    }

    #[test]
    fn cidr_parsing_refuses_non_loopback_and_garbage() {
        assert!(Ipv4Cidr::parse_loopback("10.0.0.0/24").is_err());
        assert!(Ipv4Cidr::parse_loopback("127.0.0.0").is_err());
        assert!(Ipv4Cidr::parse_loopback("127.0.0.0/31").is_err());
        assert!(Ipv4Cidr::parse_loopback("127.x.0.0/24").is_err());
        let c = Ipv4Cidr::parse_loopback("127.64.3.9/24").unwrap();
        assert_eq!(c.to_string(), "127.64.3.0/24");
        assert_eq!(c.nth(2), Some(Ipv4Addr::new(127, 64, 3, 2)));
        assert_eq!(c.nth(256), None);
    }
}
