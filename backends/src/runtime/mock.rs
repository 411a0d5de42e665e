//! # The mock runtime: containers that exist only in memory
//!
//! Kubernetes' own test suites use fake runtimes (`FakeRuntimeService` in the CRI tests,
//! "hollow nodes" in kubemark) to run a kubelet without real containers. [`MockRuntime`]
//! does the same for kulisse: every CRI call succeeds after a short, seeded, jittered
//! delay, and containers "run" until something stops them. Nothing is spawned per
//! container: a container is a small struct, and a container that is meant to exit does so
//! *lazily* (its state is worked out from its start time whenever someone looks). That is
//! what makes thousands of simulated nodes in one process cheap.
//!
//! ## Pod IPs
//!
//! The kubelet passes the node's pod CIDR through `update_runtime_config` (by default
//! `127.(64 + N / 256).(N % 256).0/24` for node number `N`, see
//! [`kulisse_core::runtime::pod_cidr_for_node`]). Sandboxes get `.2`, `.3`, ... of that
//! range; addresses are reused after a sandbox is removed. Everything stays inside
//! `127.0.0.0/8`, so a stray connection to a pod IP stays on loopback. Without a CIDR the
//! runtime uses `127.64.0.0/24`.
//!
//! ## Failure injection (pod annotations)
//!
//! | annotation | effect |
//! |------------|--------|
//! | `mock.kulisse.dev/pull: fail` | every image pull of the pod fails |
//! | an image whose name contains `nonexistent` | its pull fails like a registry's "not found" |
//! | `mock.kulisse.dev/start.<container>: fail` | starting the container fails ("executable file not found") |
//! | `mock.kulisse.dev/exit-after.<container>: 2s` | the container exits 2 s after each start (`500ms`, `2s`, `1m`) |
//! | `mock.kulisse.dev/exit-code.<container>: "1"` | ... with this exit code (default `0`) |
//! | (none: an init container) | it exits 0 after 300 ms of running, as an init container's command would; `exit-after` / `exit-code` override |
//! | `mock.kulisse.dev/readiness.<container>: fail` | its readiness probe fails |
//! | `mock.kulisse.dev/readiness.<container>: fail-after=5s` | ... once the container has run 5 s (the same form works for liveness and startup) |
//! | `mock.kulisse.dev/liveness.<container>: fail` | its liveness probe fails |
//! | `mock.kulisse.dev/startup.<container>: fail` | its startup probe fails |
//!
//! Probes are simulated ([`ContainerRuntime::probe`] returns a result), so the kubelet
//! never connects to a mock pod's IP.
//!
//! ## Volumes
//!
//! The kubelet prepares each volume on the node (files under its root dir) and passes the
//! mounts in the container config. The mock mounts nothing, but refuses a mount whose source
//! does not exist (as a bind mount would fail) and records them: [`MockRuntime::mounts`]
//! (and each container's environment: [`MockRuntime::env`]).
//!
//! ## exec
//!
//! `kubectl exec` into a mock container runs a tiny shell ([`mock_shell`]): `cat` reads the
//! kubelet's volume files through the recorded mounts, `env` prints the recorded
//! environment, `ls`, `echo`, `true`, `false`, `exit N` and `sh -c '...'` work, anything
//! else exits 127 (`sh: X: not found`).
//!
//! ## port-forward
//!
//! A running container "listens" on each port it declares (`containerPort`): a
//! port-forwarded connection there gets one HTTP answer naming the container and pod
//! (`mock container httpd of pod web-1 answers on port 8080`). Any other port is refused,
//! as a port nobody listens on would be.
//!
//! ## Logs
//!
//! Each start writes a few lines, e.g. `[mock] httpd starting on port 8080`; an exit and a
//! stop write one more. `follow` streams new lines until the container ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use kulisse_core::runtime::{
    ANNOTATION_RUN_TO_COMPLETION, AuthConfig, ContainerConfig, ContainerInfo, ContainerRuntime, ContainerState,
    ContainerStatus, EnvVar, Ipv4Cidr, LogOptions, LogStream, Mount, PodSandboxConfig, ProbeAction, ProbeResult,
    ProbeSpec, RuntimeError, Sandbox, SandboxInfo, SandboxState, StreamIo,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::Notify;

/// The annotation prefix of the mock's failure injection.
pub const ANNOTATION_PREFIX: &str = "mock.kulisse.dev/";

/// How long an init container "runs" before it exits 0, unless annotated otherwise. The
/// kubelet marks init containers with [`ANNOTATION_RUN_TO_COMPLETION`]; sidecars
/// (`restartPolicy: Always`) run on like any container.
const INIT_RUN_TIME: Duration = Duration::from_millis(300);

/// The mock's settings. Latencies are jittered by ±`jitter` (a fraction) with a generator
/// seeded by `seed`, so two runs with the same seed and the same calls see the same ids.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub seed: u64,
    pub version: String,
    pub pull_latency: Duration,
    pub sandbox_latency: Duration,
    pub create_latency: Duration,
    pub start_latency: Duration,
    pub stop_latency: Duration,
    /// 0.5 means each delay is between 50 % and 150 % of its base.
    pub jitter: f64,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            seed: 1,
            version: "0.1.0".into(),
            pull_latency: Duration::from_millis(5),
            sandbox_latency: Duration::from_millis(2),
            create_latency: Duration::from_millis(1),
            start_latency: Duration::from_millis(2),
            stop_latency: Duration::from_millis(2),
            jitter: 0.5,
        }
    }
}

struct MockSandbox {
    info: SandboxInfo,
    annotations: BTreeMap<String, String>,
    ip_offset: u32,
}

struct MockContainer {
    id: String,
    sandbox_id: String,
    name: String,
    attempt: u32,
    image: String,
    image_ref: String,
    labels: BTreeMap<String, String>,
    state: ContainerState,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    started_instant: Option<Instant>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    reason: Option<String>,
    message: Option<String>,
    /// `exit-after` / `exit-code` read from the pod's annotations at creation.
    exit_plan: Option<(Duration, i32)>,
    start_fails: bool,
    ports: Vec<u16>,
    /// The volumes mounted into it, as the kubelet asked.
    mounts: Vec<Mount>,
    /// Its environment, as the kubelet made it.
    env: Vec<EnvVar>,
    logs: Vec<(SystemTime, String)>,
}

impl MockContainer {
    /// Work out a planned exit that is due: containers exit lazily, when someone looks.
    fn refresh(&mut self, now: Instant) -> bool {
        if self.state != ContainerState::Running {
            return false;
        }
        let (Some((after, code)), Some(started), Some(started_wall)) =
            (self.exit_plan, self.started_instant, self.started_at)
        else {
            return false;
        };
        if now < started + after {
            return false;
        }
        let finished = started_wall + after;
        self.state = ContainerState::Exited;
        self.finished_at = Some(finished);
        self.exit_code = Some(code);
        self.reason = Some(if code == 0 { "Completed" } else { "Error" }.into());
        self.logs
            .push((finished, format!("[mock] {} exiting with code {code}", self.name)));
        true
    }

    /// When the planned exit happens, if it is still ahead.
    fn exit_due(&self) -> Option<Instant> {
        match (self.state, self.exit_plan, self.started_instant) {
            (ContainerState::Running, Some((after, _)), Some(started)) => Some(started + after),
            _ => None,
        }
    }

    fn stop(&mut self, why: &str) {
        if self.state == ContainerState::Running {
            let now = SystemTime::now();
            self.logs.push((
                now,
                format!("[mock] {} received SIGTERM ({why}), shutting down", self.name),
            ));
            self.state = ContainerState::Exited;
            self.finished_at = Some(now);
            self.exit_code = Some(0);
            self.reason = Some("Completed".into());
        } else if self.state == ContainerState::Created {
            self.state = ContainerState::Exited;
            self.finished_at = Some(SystemTime::now());
            self.exit_code = Some(0);
            self.reason = Some("Completed".into());
        }
    }

    fn status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            name: self.name.clone(),
            attempt: self.attempt,
            state: self.state,
            image: self.image.clone(),
            image_ref: self.image_ref.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.labels.clone(),
        }
    }
}

struct State {
    cidr: Ipv4Cidr,
    used_ips: HashSet<u32>,
    next_offset: u32,
    images: HashMap<String, String>,
    sandboxes: HashMap<String, MockSandbox>,
    containers: HashMap<String, MockContainer>,
    rng: StdRng,
    /// Calls counted for tests ([`MockRuntime::status_reads`], [`MockRuntime::full_sandbox_lists`]).
    status_reads: HashMap<String, u64>,
    /// Counted only without a filter: a count per filter kept one entry per pod (its uid is
    /// the filter of its worker's lists) for ever.
    full_sandbox_lists: u64,
}

impl State {
    fn new_id(&mut self) -> String {
        let mut id = String::with_capacity(64);
        for _ in 0..4 {
            id.push_str(&format!("{:016x}", self.rng.next_u64()));
        }
        id
    }

    fn allocate_ip(&mut self) -> Result<u32, RuntimeError> {
        // .0 is the network, .1 the "gateway", the last address the broadcast.
        let usable = self.cidr.size().saturating_sub(3);
        for i in 0..usable {
            let offset = 2 + (self.next_offset + i) % usable;
            if !self.used_ips.contains(&offset) {
                self.used_ips.insert(offset);
                self.next_offset = (offset - 2 + 1) % usable.max(1);
                return Ok(offset);
            }
        }
        Err(RuntimeError::Backend(format!(
            "no free pod IP left in the node's pod CIDR {} ({} sandboxes use them all)",
            self.cidr,
            self.used_ips.len()
        )))
    }
}

struct Inner {
    options: MockOptions,
    state: Mutex<State>,
    /// Woken whenever a log line is written, for `follow` readers.
    changed: Notify,
}

/// The in-memory runtime. Cheap to clone (the state is shared).
#[derive(Clone)]
pub struct MockRuntime {
    inner: Arc<Inner>,
}

impl Default for MockRuntime {
    fn default() -> Self {
        MockRuntime::new(MockOptions::default())
    }
}

impl MockRuntime {
    /// The mounts and environment of running container `id`, which an exec answers from.
    fn exec_inputs(&self, id: &str) -> Result<(Vec<Mount>, Vec<EnvVar>), RuntimeError> {
        let mut s = self.state();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?}")))?;
        c.refresh(Instant::now());
        if c.state != ContainerState::Running {
            return Err(RuntimeError::Backend(format!(
                "container {:?} is not running; cannot exec in it",
                c.name
            )));
        }
        Ok((c.mounts.clone(), c.env.clone()))
    }

    pub fn new(options: MockOptions) -> Self {
        let cidr = Ipv4Cidr::parse_loopback("127.64.0.0/24").expect("the default pod CIDR is valid");
        let rng = StdRng::seed_from_u64(options.seed);
        MockRuntime {
            inner: Arc::new(Inner {
                options,
                state: Mutex::new(State {
                    cidr,
                    used_ips: HashSet::new(),
                    next_offset: 0,
                    images: HashMap::new(),
                    sandboxes: HashMap::new(),
                    containers: HashMap::new(),
                    rng,
                    status_reads: HashMap::new(),
                    full_sandbox_lists: 0,
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sandboxes and containers exist (for tests and benchmarks).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.sandboxes.len(), s.containers.len())
    }

    /// How often the status of container `id` was asked for, until it is removed. The
    /// kubelet asks once on each relist of a pod whose container has not exited, so a test
    /// sees the kubelet look again (a positive signal, where waiting a while would only hope
    /// it did).
    pub fn status_reads(&self, id: &str) -> u64 {
        self.state().status_reads.get(id).copied().unwrap_or(0)
    }

    /// The mounts a container was created with (`None`: no such container). The mock does
    /// not mount anything; it records what a real runtime would bind-mount, so tests can check
    /// the kubelet's volume work.
    pub fn mounts(&self, container_id: &str) -> Option<Vec<Mount>> {
        self.state().containers.get(container_id).map(|c| c.mounts.clone())
    }

    /// The environment a container was created with (`None`: no such container).
    pub fn env(&self, container_id: &str) -> Option<Vec<EnvVar>> {
        self.state().containers.get(container_id).map(|c| c.env.clone())
    }

    /// How often all sandboxes were listed, without a filter (the kubelet's housekeeping does
    /// on every round).
    pub fn full_sandbox_lists(&self) -> u64 {
        self.state().full_sandbox_lists
    }

    async fn delay(&self, base: Duration) {
        if base.is_zero() {
            return;
        }
        let factor = {
            let j = self.inner.options.jitter.clamp(0.0, 1.0);
            let mut s = self.state();
            if j > 0.0 {
                s.rng.random_range((1.0 - j)..=(1.0 + j))
            } else {
                1.0
            }
        };
        tokio::time::sleep(base.mul_f64(factor)).await;
    }
}

/// `nginx:1.27` → `docker.io/library/nginx:1.27`, as a registry client normalises names.
fn normalize_image(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    if !image.contains('/') {
        format!("docker.io/library/{image}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        image.to_string()
    } else {
        format!("docker.io/{image}")
    }
}

/// A stable, made-up digest: `docker.io/library/nginx@sha256:<64 hex digits>`.
fn image_ref_of(image: &str) -> String {
    let normalized = normalize_image(image);
    let repo = match normalized.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => normalized.clone(),
    };
    let repo = repo.split('@').next().unwrap_or(&repo).to_string();
    let mut digest = String::with_capacity(64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0u8..4 {
        for b in normalized.bytes().chain([round]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        digest.push_str(&format!("{h:016x}"));
    }
    format!("{repo}@sha256:{digest}")
}

/// `500ms`, `2s`, `1m`, `1.5s` → a duration.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && (0.0..1e9).contains(&v)).then(|| Duration::from_secs_f64(v * unit))
}

fn annotation<'a>(annotations: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    annotations
        .get(&format!("{ANNOTATION_PREFIX}{key}"))
        .map(String::as_str)
}

/// A bind mount needs its source: the kubelet must have prepared every volume.
fn check_mounts(config: &ContainerConfig) -> Result<(), RuntimeError> {
    match config
        .mounts
        .iter()
        .find(|m| std::fs::symlink_metadata(&m.host_path).is_err())
    {
        Some(m) => Err(RuntimeError::Backend(format!(
            "mock: cannot mount volume {:?} at {}: the source {} does not exist",
            m.volume, m.container_path, m.host_path
        ))),
        None => Ok(()),
    }
}

fn matches(labels: &BTreeMap<String, String>, filter: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[async_trait]
impl ContainerRuntime for MockRuntime {
    fn name(&self) -> &str {
        "mock"
    }

    async fn version(&self) -> Result<String, RuntimeError> {
        Ok(self.inner.options.version.clone())
    }

    async fn update_runtime_config(&self, pod_cidr: &str) -> Result<(), RuntimeError> {
        let cidr = Ipv4Cidr::parse_loopback(pod_cidr).map_err(RuntimeError::Backend)?;
        let mut s = self.state();
        if s.cidr != cidr {
            if !s.sandboxes.is_empty() {
                return Err(RuntimeError::Backend(format!(
                    "cannot change the pod CIDR from {} to {cidr} while {} sandboxes exist",
                    s.cidr,
                    s.sandboxes.len()
                )));
            }
            s.cidr = cidr;
            s.used_ips.clear();
            s.next_offset = 0;
        }
        Ok(())
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        // No registry to log in to: the mock ignores them (the kubelet's pull span names the
        // secret they came from).
        let _ = auth;
        self.delay(self.inner.options.pull_latency).await;
        let normalized = normalize_image(image);
        if image.trim().is_empty() {
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: "rpc error: code = InvalidArgument desc = image name is empty".into(),
            });
        }
        if image.contains("nonexistent") {
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image \"{normalized}\": \
                     failed to resolve reference \"{normalized}\": {normalized}: not found"
                ),
            });
        }
        if annotation(&sandbox.annotations, "pull") == Some("fail") {
            return Err(RuntimeError::ImagePullFailed {
                image: image.to_string(),
                reason: format!(
                    "rpc error: code = Unknown desc = failed to pull and unpack image \"{normalized}\": \
                     failed to do request: Head \"https://registry.mock.invalid/v2/\": dial tcp: lookup \
                     registry.mock.invalid: no such host (injected by {ANNOTATION_PREFIX}pull)"
                ),
            });
        }
        let reference = image_ref_of(image);
        self.state().images.insert(image.to_string(), reference.clone());
        Ok(reference)
    }

    async fn image_status(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        Ok(self.state().images.get(image).cloned())
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<Sandbox, RuntimeError> {
        self.delay(self.inner.options.sandbox_latency).await;
        for pm in &config.port_mappings {
            if pm.host_port.is_some() && pm.host_ip != "127.0.0.1" {
                return Err(RuntimeError::Backend(format!(
                    "refusing to publish port {} on {:?}: kulisse only binds host ports to 127.0.0.1",
                    pm.container_port, pm.host_ip
                )));
            }
        }
        let mut s = self.state();
        let offset = s.allocate_ip()?;
        let ip = s
            .cidr
            .nth(offset)
            .map(|a| a.to_string())
            .ok_or_else(|| RuntimeError::Backend("pod IP out of range".into()))?;
        let id = s.new_id();
        let info = SandboxInfo {
            id: id.clone(),
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            uid: config.uid.clone(),
            attempt: config.attempt,
            state: SandboxState::Ready,
            ip: ip.clone(),
            labels: config.labels.clone(),
            created_at: SystemTime::now(),
        };
        s.sandboxes.insert(
            id.clone(),
            MockSandbox {
                info,
                annotations: config.annotations.clone(),
                ip_offset: offset,
            },
        );
        Ok(Sandbox { id, ip })
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.delay(self.inner.options.stop_latency).await;
        let mut s = self.state();
        let now = Instant::now();
        let Some(sb) = s.sandboxes.get_mut(id) else {
            return Ok(());
        };
        sb.info.state = SandboxState::NotReady;
        for c in s.containers.values_mut().filter(|c| c.sandbox_id == id) {
            c.refresh(now);
            c.stop("pod sandbox stopped");
        }
        drop(s);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state();
        if let Some(sb) = s.sandboxes.remove(id) {
            s.used_ips.remove(&sb.ip_offset);
        }
        s.containers.retain(|_, c| c.sandbox_id != id);
        drop(s);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        self.delay(self.inner.options.create_latency).await;
        let mut s = self.state();
        let Some(sb) = s.sandboxes.get(sandbox_id) else {
            return Err(RuntimeError::NotFound(format!("pod sandbox {sandbox_id:?}")));
        };
        if sb.info.state != SandboxState::Ready {
            return Err(RuntimeError::Backend(format!(
                "pod sandbox {sandbox_id:?} is not ready; cannot create container {:?} in it",
                config.name
            )));
        }
        let annotations = &sandbox.annotations;
        let name = &config.name;
        let exit_plan = match annotation(annotations, &format!("exit-after.{name}")) {
            Some(text) => {
                let after = parse_duration(text).ok_or_else(|| {
                    RuntimeError::Backend(format!(
                        "annotation {ANNOTATION_PREFIX}exit-after.{name}: {text:?} is not a duration like 500ms, 2s or 1m"
                    ))
                })?;
                let code = match annotation(annotations, &format!("exit-code.{name}")) {
                    Some(c) => c.trim().parse::<i32>().map_err(|_| {
                        RuntimeError::Backend(format!(
                            "annotation {ANNOTATION_PREFIX}exit-code.{name}: {c:?} is not an integer exit code"
                        ))
                    })?,
                    None => 0,
                };
                Some((after, code))
            }
            // An init container completes by itself: it "runs" briefly, then exits 0.
            None if config.annotations.contains_key(ANNOTATION_RUN_TO_COMPLETION) => Some((INIT_RUN_TIME, 0)),
            None => None,
        };
        let start_fails = annotation(annotations, &format!("start.{name}")) == Some("fail");
        check_mounts(config)?;
        let image_ref = s
            .images
            .get(&config.image)
            .cloned()
            .unwrap_or_else(|| image_ref_of(&config.image));
        let id = s.new_id();
        s.containers.insert(
            id.clone(),
            MockContainer {
                id: id.clone(),
                sandbox_id: sandbox_id.to_string(),
                name: name.clone(),
                attempt: config.attempt,
                image: config.image.clone(),
                image_ref,
                labels: config.labels.clone(),
                state: ContainerState::Created,
                created_at: SystemTime::now(),
                started_at: None,
                started_instant: None,
                finished_at: None,
                exit_code: None,
                reason: None,
                message: None,
                exit_plan,
                start_fails,
                ports: config.ports.iter().map(|p| p.container_port).collect(),
                mounts: config.mounts.clone(),
                env: config.env.clone(),
                logs: Vec::new(),
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.delay(self.inner.options.start_latency).await;
        let mut s = self.state();
        let Some(c) = s.containers.get_mut(id) else {
            return Err(RuntimeError::NotFound(format!("container {id:?}")));
        };
        if c.state != ContainerState::Created {
            return Err(RuntimeError::Backend(format!(
                "container {:?} ({id}) is not in the created state; it cannot be started again",
                c.name
            )));
        }
        let now = SystemTime::now();
        if c.start_fails {
            let msg = format!(
                "failed to create task for container: OCI runtime create failed: exec: \"{}\": executable \
                 file not found in $PATH (injected by {ANNOTATION_PREFIX}start.{})",
                c.name, c.name
            );
            c.state = ContainerState::Exited;
            c.finished_at = Some(now);
            c.exit_code = Some(128);
            c.reason = Some("StartError".into());
            c.message = Some(msg.clone());
            return Err(RuntimeError::Backend(msg));
        }
        c.state = ContainerState::Running;
        c.started_at = Some(now);
        c.started_instant = Some(Instant::now());
        let name = c.name.clone();
        let line = match c.ports.first() {
            Some(p) => format!("[mock] {name} starting on port {p}"),
            None => format!("[mock] {name} starting"),
        };
        c.logs.push((now, line));
        c.logs
            .push((now, format!("[mock] image {} (attempt {})", c.image, c.attempt)));
        c.logs.push((now, format!("[mock] {name} ready")));
        drop(s);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let _ = timeout; // a simulated process always honours SIGTERM at once
        self.delay(self.inner.options.stop_latency).await;
        let mut s = self.state();
        let Some(c) = s.containers.get_mut(id) else {
            return Ok(());
        };
        c.refresh(Instant::now());
        c.stop("stop requested");
        drop(s);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state();
        if let Some(c) = s.containers.get_mut(id) {
            c.refresh(Instant::now());
            if c.state == ContainerState::Running {
                return Err(RuntimeError::Backend(format!(
                    "container {:?} ({id}) is running; stop it before removing it",
                    c.name
                )));
            }
        }
        s.containers.remove(id);
        s.status_reads.remove(id);
        drop(s);
        self.inner.changed.notify_waiters();
        Ok(())
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let mut s = self.state();
        *s.status_reads.entry(id.to_string()).or_default() += 1;
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?}")))?;
        let exited = c.refresh(Instant::now());
        let status = c.status();
        drop(s);
        if exited {
            self.inner.changed.notify_waiters();
        }
        Ok(status)
    }

    async fn list_pod_sandboxes(&self, filter: &BTreeMap<String, String>) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let mut s = self.state();
        if filter.is_empty() {
            s.full_sandbox_lists += 1;
        }
        Ok(s.sandboxes
            .values()
            .filter(|sb| matches(&sb.info.labels, filter))
            .map(|sb| sb.info.clone())
            .collect())
    }

    async fn list_containers(&self, filter: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let now = Instant::now();
        let mut s = self.state();
        Ok(s.containers
            .values_mut()
            .filter(|c| matches(&c.labels, filter))
            .map(|c| {
                c.refresh(now);
                ContainerInfo {
                    id: c.id.clone(),
                    sandbox_id: c.sandbox_id.clone(),
                    name: c.name.clone(),
                    attempt: c.attempt,
                    image: c.image.clone(),
                    state: c.state,
                    labels: c.labels.clone(),
                    created_at: c.created_at,
                }
            })
            .collect())
    }

    async fn container_logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, RuntimeError> {
        let start = {
            let s = self.state();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(format!("container {id:?}")))?;
            match options.tail_lines {
                Some(n) => c.logs.len().saturating_sub(n),
                None => 0,
            }
        };
        let inner = self.inner.clone();
        let id = id.to_string();
        let follow = options.follow;
        let timestamps = options.timestamps;
        let stream = futures::stream::unfold(
            (inner, id, start, false),
            move |(inner, id, mut pos, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let notified = inner.changed.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    let wait = {
                        let mut s = inner.state.lock().unwrap_or_else(|p| p.into_inner());
                        let Some(c) = s.containers.get_mut(&id) else {
                            return None; // removed: the stream ends
                        };
                        c.refresh(Instant::now());
                        if pos < c.logs.len() {
                            let mut out = Vec::new();
                            for (t, line) in &c.logs[pos..] {
                                if timestamps {
                                    out.extend_from_slice(kulisse_core::objects::time::log_timestamp(*t).as_bytes());
                                    out.push(b' ');
                                }
                                out.extend_from_slice(line.as_bytes());
                                out.push(b'\n');
                            }
                            pos = c.logs.len();
                            return Some((Ok(out), (inner.clone(), id, pos, false)));
                        }
                        if !follow || c.state == ContainerState::Exited {
                            return None;
                        }
                        c.exit_due()
                    };
                    match wait {
                        Some(at) => {
                            tokio::select! {
                                _ = &mut notified => {}
                                _ = tokio::time::sleep_until(at.into()) => {}
                            }
                        }
                        None => notified.await,
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn exec(&self, id: &str, command: &[String], io: StreamIo) -> Result<i32, RuntimeError> {
        let (mounts, env) = self.exec_inputs(id)?;
        let StreamIo {
            mut stdin,
            stdout,
            stderr,
            ..
        } = io;
        let mut input = Vec::new();
        if let Some(rx) = stdin.as_mut() {
            while let Some(chunk) = rx.recv().await {
                input.extend(chunk);
            }
        }
        let (code, out, err) = mock_shell(command, &mounts, &env, &input);
        if let Some(tx) = stdout.as_ref() {
            let _ = tx.send(out).await;
        }
        match (stderr.as_ref(), stdout.as_ref()) {
            (Some(tx), _) | (None, Some(tx)) if !err.is_empty() => {
                let _ = tx.send(err).await;
            }
            _ => {}
        }
        Ok(code)
    }

    /// The same tiny shell as [`exec`](Self::exec) (lifecycle hooks use this), its stdout
    /// and stderr together as the CRI's `ExecSync` answers them.
    async fn exec_sync(&self, id: &str, command: &[String], timeout: Duration) -> Result<(i32, Vec<u8>), RuntimeError> {
        let _ = timeout;
        let (mounts, env) = self.exec_inputs(id)?;
        let (code, mut out, err) = mock_shell(command, &mounts, &env, &[]);
        out.extend(err);
        Ok((code, out))
    }

    /// A simulated server: a running container that declares `port` answers one HTTP
    /// request on it, naming itself; any other port refuses, as an empty port would.
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<Box<dyn kulisse_core::runtime::PortStream>, RuntimeError> {
        let server = {
            let mut s = self.state();
            let now = Instant::now();
            let pod = s
                .sandboxes
                .get(sandbox_id)
                .map(|sb| sb.info.name.clone())
                .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {sandbox_id}")))?;
            s.containers
                .values_mut()
                .filter(|c| c.sandbox_id == sandbox_id && c.ports.contains(&port))
                .find_map(|c| {
                    c.refresh(now);
                    (c.state == ContainerState::Running).then(|| (c.name.clone(), pod.clone()))
                })
        };
        let Some((container, pod)) = server else {
            return Err(RuntimeError::Backend(format!(
                "failed to connect to localhost:{port} inside the pod's network namespace: connection refused \
                 (the mock runtime answers only the declared ports of running containers)"
            )));
        };
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            if request.is_empty() {
                return;
            }
            let body = format!("mock container {container} of pod {pod} answers on port {port}\n");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = far.write_all(answer.as_bytes()).await;
            let _ = far.shutdown().await;
        });
        Ok(Box::new(near))
    }

    async fn probe(&self, container_id: &str, probe: &ProbeSpec) -> Option<ProbeResult> {
        let mut s = self.state();
        let Some(c) = s.containers.get_mut(container_id) else {
            return Some(ProbeResult::Failure(format!("container {container_id} not found")));
        };
        c.refresh(Instant::now());
        if c.state != ContainerState::Running {
            return Some(ProbeResult::Failure(format!("container {:?} is not running", c.name)));
        }
        let sandbox_id = c.sandbox_id.clone();
        let started = c.started_instant;
        let Some(sb) = s.sandboxes.get(&sandbox_id) else {
            return Some(ProbeResult::Failure("the pod sandbox is gone".into()));
        };
        let key = format!("{}.{}", probe.kind.as_str().to_ascii_lowercase(), probe.container_name);
        let failing = match annotation(&sb.annotations, &key) {
            Some("fail") => true,
            // `fail-after=2s`: healthy at first, failing once the container ran that long.
            Some(v) => v
                .strip_prefix("fail-after=")
                .and_then(parse_duration)
                .zip(started)
                .is_some_and(|(after, started)| started.elapsed() >= after),
            None => false,
        };
        if !failing {
            return Some(ProbeResult::Success);
        }
        let ip = &sb.info.ip;
        let output = match &probe.action {
            ProbeAction::Http { port, path, .. } => {
                format!(
                    "HTTP probe failed with statuscode: 503 (GET http://{ip}:{port}{path}, injected by {ANNOTATION_PREFIX}{key})"
                )
            }
            ProbeAction::Tcp { port, .. } => {
                format!("dial tcp {ip}:{port}: connect: connection refused (injected by {ANNOTATION_PREFIX}{key})")
            }
            ProbeAction::Exec { command } => {
                format!(
                    "command {:?} exited with 1 (injected by {ANNOTATION_PREFIX}{key})",
                    command.join(" ")
                )
            }
            ProbeAction::Grpc { port, .. } => {
                format!(
                    "service unhealthy (responded with \"NOT_SERVING\") on port {port} (injected by {ANNOTATION_PREFIX}{key})"
                )
            }
        };
        Some(ProbeResult::Failure(output))
    }
}

/// Where a path inside a mock container lives on the node: under the mount whose
/// `mountPath` holds it (the mock has no image file system, only the kubelet's volumes).
fn node_path(mounts: &[Mount], path: &str) -> Option<std::path::PathBuf> {
    mounts
        .iter()
        .filter_map(|m| {
            let rest = path.strip_prefix(m.container_path.trim_end_matches('/'))?;
            (rest.is_empty() || rest.starts_with('/'))
                .then(|| std::path::Path::new(&m.host_path).join(rest.trim_start_matches('/')))
        })
        .next()
}

/// The mock's tiny shell: `cat`, `ls`, `env`, `echo`, `true`, `false`, `exit N` and
/// `sh -c '...'` (words split on spaces), answered from the recorded mounts and env.
/// Anything else is exit 127, as a shell says it. Returns (exit code, stdout, stderr).
fn mock_shell(argv: &[String], mounts: &[Mount], env: &[EnvVar], stdin: &[u8]) -> (i32, Vec<u8>, Vec<u8>) {
    let args: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let name = argv.first().map(String::as_str).unwrap_or("");
    let program = name.rsplit('/').next().unwrap_or(name);
    match program {
        "sh" if args.first() == Some(&"-c") => {
            // `a; b; exit 3`: each `;`-separated command in turn, until an `exit`.
            let (mut code, mut out, mut err) = (0, Vec::new(), Vec::new());
            for part in args.get(1).unwrap_or(&"").split(';') {
                let words: Vec<String> = part.split_whitespace().map(str::to_string).collect();
                if words.is_empty() {
                    continue;
                }
                let (c, o, e) = mock_shell(&words, mounts, env, stdin);
                code = c;
                out.extend(o);
                err.extend(e);
                if words[0] == "exit" {
                    break;
                }
            }
            (code, out, err)
        }
        "exit" => (args.first().and_then(|c| c.parse().ok()).unwrap_or(0), vec![], vec![]),
        "true" => (0, vec![], vec![]),
        "false" => (1, vec![], vec![]),
        "echo" => (0, format!("{}\n", args.join(" ")).into_bytes(), vec![]),
        "env" => (
            0,
            env.iter()
                .map(|e| format!("{}={}\n", e.name, e.value))
                .collect::<String>()
                .into_bytes(),
            vec![],
        ),
        "cat" if args.is_empty() => (0, stdin.to_vec(), vec![]),
        "cat" => {
            let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), 0);
            for file in args {
                match node_path(mounts, file).and_then(|p| std::fs::read(p).ok()) {
                    Some(bytes) => out.extend(bytes),
                    None => {
                        err.extend(format!("cat: can't open '{file}': No such file or directory\n").into_bytes());
                        code = 1;
                    }
                }
            }
            (code, out, err)
        }
        "ls" => {
            let dir = args.first().copied().unwrap_or("/");
            match node_path(mounts, dir).and_then(|p| std::fs::read_dir(p).ok()) {
                Some(entries) => {
                    let mut names: Vec<String> = entries
                        .filter_map(|e| e.ok()?.file_name().into_string().ok())
                        .filter(|n| !n.starts_with('.'))
                        .collect();
                    names.sort();
                    (
                        0,
                        names.iter().map(|n| format!("{n}\n")).collect::<String>().into_bytes(),
                        vec![],
                    )
                }
                None => (
                    1,
                    vec![],
                    format!("ls: {dir}: No such file or directory\n").into_bytes(),
                ),
            }
        }
        _ => (127, vec![], format!("sh: {name}: not found\n").into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use kulisse_core::runtime::{LABEL_POD_UID, ProbeKind};

    fn sandbox_config(annotations: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            name: "web".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            hostname: "web".into(),
            labels: [(LABEL_POD_UID.to_string(), "uid-1".to_string())].into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn fast() -> MockRuntime {
        MockRuntime::new(MockOptions {
            pull_latency: Duration::ZERO,
            sandbox_latency: Duration::ZERO,
            create_latency: Duration::ZERO,
            start_latency: Duration::ZERO,
            stop_latency: Duration::ZERO,
            ..MockOptions::default()
        })
    }

    #[tokio::test]
    async fn lifecycle_ips_and_logs() {
        let rt = fast();
        rt.update_runtime_config("127.64.7.0/24").await.unwrap();
        let cfg = sandbox_config(&[]);
        let image_ref = rt.pull_image("nginx:1.27", None, &cfg).await.unwrap();
        assert!(image_ref.starts_with("docker.io/library/nginx@sha256:"), "{image_ref}");
        assert_eq!(rt.image_status("nginx:1.27").await.unwrap(), Some(image_ref));
        let sb = rt.run_pod_sandbox(&cfg).await.unwrap();
        assert_eq!(sb.ip, "127.64.7.2");
        let sb2 = rt.run_pod_sandbox(&cfg).await.unwrap();
        assert_eq!(sb2.ip, "127.64.7.3");
        let cc = ContainerConfig {
            name: "httpd".into(),
            image: "nginx:1.27".into(),
            ports: vec![kulisse_core::runtime::PortMapping {
                protocol: "TCP".into(),
                container_port: 8080,
                host_port: None,
                host_ip: "127.0.0.1".into(),
            }],
            labels: cfg.labels.clone(),
            ..Default::default()
        };
        let id = rt.create_container(&sb.id, &cc, &cfg).await.unwrap();
        assert_eq!(rt.container_status(&id).await.unwrap().state, ContainerState::Created);
        rt.start_container(&id).await.unwrap();
        assert_eq!(rt.container_status(&id).await.unwrap().state, ContainerState::Running);
        let logs: Vec<u8> = rt
            .container_logs(&id, &LogOptions::default())
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .concat()
            .await;
        let text = String::from_utf8(logs).unwrap();
        assert!(text.contains("[mock] httpd starting on port 8080"), "{text}");
        let listed = rt.list_containers(&cfg.labels).await.unwrap();
        assert_eq!(listed.len(), 1);
        rt.stop_container(&id, Duration::from_secs(1)).await.unwrap();
        let st = rt.container_status(&id).await.unwrap();
        assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(0)));
        rt.remove_pod_sandbox(&sb.id).await.unwrap();
        assert!(rt.container_status(&id).await.is_err());
        // the freed address is handed out again once the range wraps
        assert_eq!(rt.counts(), (1, 0));
    }

    #[tokio::test]
    async fn injected_failures() {
        let rt = fast();
        let plain = sandbox_config(&[]);
        let err = rt.pull_image("example/nonexistent:1", None, &plain).await.unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        let failing = sandbox_config(&[("mock.kulisse.dev/pull", "fail")]);
        assert!(matches!(
            rt.pull_image("nginx", None, &failing).await,
            Err(RuntimeError::ImagePullFailed { .. })
        ));

        let crashing = sandbox_config(&[
            ("mock.kulisse.dev/exit-after.app", "10ms"),
            ("mock.kulisse.dev/exit-code.app", "3"),
            ("mock.kulisse.dev/readiness.app", "fail"),
        ]);
        let sb = rt.run_pod_sandbox(&crashing).await.unwrap();
        let cc = ContainerConfig {
            name: "app".into(),
            image: "busybox".into(),
            ..Default::default()
        };
        let id = rt.create_container(&sb.id, &cc, &crashing).await.unwrap();
        rt.start_container(&id).await.unwrap();
        let spec = ProbeSpec {
            kind: ProbeKind::Readiness,
            container_name: "app".into(),
            action: ProbeAction::Tcp { host: None, port: 80 },
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(rt.probe(&id, &spec).await, Some(ProbeResult::Failure(_))));
        let live = ProbeSpec {
            kind: ProbeKind::Liveness,
            ..spec.clone()
        };
        assert_eq!(rt.probe(&id, &live).await, Some(ProbeResult::Success));
        // follow ends when the container exits
        let logs: Vec<u8> = rt
            .container_logs(
                &id,
                &LogOptions {
                    follow: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .map(|c| c.unwrap())
            .concat()
            .await;
        assert!(String::from_utf8_lossy(&logs).contains("exiting with code 3"));
        let st = rt.container_status(&id).await.unwrap();
        assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(3)));
        assert_eq!(st.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn durations_and_images() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(normalize_image("localhost/busybox:latest"), "localhost/busybox:latest");
        assert_eq!(normalize_image("bitnami/nginx"), "docker.io/bitnami/nginx");
        assert_eq!(image_ref_of("nginx:1.27"), image_ref_of("nginx:1.27"));
    }
}
