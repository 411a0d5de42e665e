//! # Pod workers (mirrors the kubelet's `podWorkers` and `SyncPod`)
//!
//! The kubelet gives every pod its own worker: a small task that owns everything the node
//! knows about that pod (its sandbox, its containers, restart back-offs, probe results) and
//! is the only one to act on it. Updates from the API server (the pod changed, it is being
//! deleted, it is gone) arrive on the worker's channel; between updates the worker looks at
//! its containers every relist period, as the PLEG would tell it about changes. A relist
//! that finds the same pod and the same containers as the last quiet sync, with no probe
//! or back-off due, ends there ([`Seen`]): like upstream's PLEG, which wakes a pod's worker
//! only when its containers changed, a node with thousands of running pods does almost no
//! work between events.
//!
//! One **sync** goes like upstream's `SyncPod`:
//!
//! 1. *observe*: ask the runtime for the status of each container;
//! 2. *probe*: run the startup/liveness/readiness probes that are due;
//! 3. *plan*: compare with the spec: the sandbox is missing → run it; a container never
//!    ran → pull its image (per `imagePullPolicy`), create and start it; a container
//!    exited → restart it if `restartPolicy` says so, but only after the
//!    `CrashLoopBackOff` delay (10 s, then 20 s, 40 s, ... up to 5 min; reset once a
//!    container ran for 10 min); a liveness probe failed → kill it. **Init containers**
//!    come first (upstream's `computeInitContainerActions`): until each has exited 0, in
//!    spec order, only the first one that has not is started, waited for, or restarted
//!    after a failure (`restartPolicy: Never` fails the pod instead); the app containers
//!    wait (`PodInitializing`). Once initialized, a pod stays so. kulisse does not run
//!    sidecars (`restartPolicy: Always` on an init container is refused at validation);
//! 4. *act and report*: do the plan through the CRI, then write the pod's `status` if it
//!    differs from what the API server has.
//!
//! A sync with nothing to do and nothing to report leaves no trace; one that acts runs in
//! a `kubelet.sync_pod` span that joins the trace of whoever last wrote the pod (its
//! `kulisse.dev/traceparent` annotation), with one `runtime.*` span per CRI call.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, Span, field::Empty, info_span};

use super::container::{Backoff, ContainerRec, Instance};
use super::downward;
use super::env;
use super::lifecycle::{self, Hook};
use super::probes::{self, ProbeState};
use super::status::{self, PodFacts};
use super::volumes::{self, PodVolumes};
use super::{KubeletOptions, Shared};
use crate::events::EventType;
use crate::objects;
use crate::runtime::{
    ANNOTATION_RUN_TO_COMPLETION, ContainerConfig, ContainerState, ContainerStatus, EnvVar, LABEL_CONTAINER_NAME,
    LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, Mount, PodSandboxConfig, PortMapping, ProbeKind, ProbeResult,
    Resources, RuntimeError, Sandbox, SandboxState,
};

/// What the dispatcher tells a worker.
#[derive(Clone)]
pub(crate) enum Update {
    /// The pod as the API server has it now.
    Pod(Arc<Value>),
    /// The pod was deleted from the API server (its last known state).
    Gone(Arc<Value>),
}

/// The dispatcher's handle on a worker.
pub(crate) struct Handle {
    tx: watch::Sender<Update>,
    task: JoinHandle<()>,
}

impl Handle {
    pub fn send(&self, update: Update) {
        let _ = self.tx.send(update);
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished() || self.tx.is_closed()
    }

    pub fn abort(self) {
        self.task.abort();
    }
}

/// Start a worker for `pod`; `on_done` runs when the worker has finished with the pod.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    pod: Arc<Value>,
    shutdown: watch::Receiver<bool>,
    on_done: impl FnOnce() + Send + 'static,
) -> Handle {
    let (tx, rx) = watch::channel(Update::Pod(pod.clone()));
    let task = tokio::spawn(async move {
        let mut worker = Worker::new(shared, &pod);
        worker.run(rx, shutdown).await;
        on_done();
    });
    Handle { tx, task }
}

/// One step a sync decided to take.
#[derive(Debug)]
enum Step {
    /// Set up (or update) these volumes.
    MountVolumes(Vec<volumes::Work>),
    /// A volume cannot be set up: report it (once per message).
    MountFailed {
        volume: String,
        message: String,
    },
    RunSandbox,
    Start {
        index: usize,
        restart: bool,
    },
    Kill {
        index: usize,
        message: String,
        grace: Option<i64>,
    },
    WaitCrash {
        index: usize,
        delay: Duration,
    },
    WaitPull {
        index: usize,
    },
}

pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `{kind, apiVersion, metadata}` of the pod, for events.
    involved: Value,
    pub sandbox: Option<Sandbox>,
    sandbox_attempt: u32,
    /// One record per container of the spec: the init containers first (`init_count` of
    /// them, in spec order), then the app containers.
    pub containers: Vec<ContainerRec>,
    pub init_count: usize,
    /// Every init container succeeded once (or an app container ran): the app containers
    /// may run, and the init containers do not run again (upstream reruns them only in a
    /// new sandbox).
    pub initialized: bool,
    /// The pod's volumes that are set up on the node.
    volumes: PodVolumes,
    pub start_time: Option<String>,
    /// Set once the pod reached `Succeeded` or `Failed`: it never runs again.
    pub terminal: Option<&'static str>,
    /// The last status this worker wrote, and the resourceVersion the write produced.
    last_written: Option<(u64, Value)>,
    /// What the last sync saw, when it had nothing to do and nothing to report.
    quiet: Option<Seen>,
}

/// What a sync with nothing to do and nothing to report saw: the pod it was handed and its
/// containers' instances. A relist that sees the same again has nothing new: upstream's
/// PLEG compares each relist with the one before and wakes a pod's worker only for a pod
/// whose containers changed. Skipping such a relist spares rebuilding the pod's status,
/// which with thousands of pods per process is most of what a node does between events.
struct Seen {
    pod: Arc<Value>,
    instances: Vec<[Option<Instance>; 2]>,
}

impl Seen {
    fn of(pod: &Arc<Value>, containers: &[ContainerRec]) -> Seen {
        Seen {
            pod: pod.clone(),
            instances: containers
                .iter()
                .map(|rec| [rec.current.clone(), rec.previous.clone()])
                .collect(),
        }
    }

    /// The same pod (the same update, not only equal content) and the same instances.
    fn again(&self, pod: &Arc<Value>, containers: &[ContainerRec]) -> bool {
        Arc::ptr_eq(&self.pod, pod)
            && self.instances.len() == containers.len()
            && self
                .instances
                .iter()
                .zip(containers)
                .all(|([current, previous], rec)| *current == rec.current && *previous == rec.previous)
    }
}

/// The volume sources whose contents never change while the pod runs. A pod with any other
/// (a configMap, a secret, the downward API, ...) is synced on every relist, so that a changed
/// source reaches its files.
const STILL_VOLUME_SOURCES: [&str; 2] = ["emptyDir", "hostPath"];

/// Whether a relist of this pod may be skipped when its containers did not change: nothing
/// waits on a clock (a probe, a back-off, a kill) and its volumes never change.
fn may_rest(pod: &Value, containers: &[ContainerRec], now: Instant) -> bool {
    let timers_idle = containers.iter().all(|rec| {
        rec.kill.is_none()
            && rec.crash.until.is_none()
            && rec.pull.until.is_none()
            && rec.probes.iter().all(|p| p.next_due > now)
    });
    let still_volumes = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_none_or(|vols| vols.iter().all(|v| STILL_VOLUME_SOURCES.contains(&volumes::kind_of(v))));
    timers_idle && still_volumes
}

/// `Instant` of a wall-clock time in the past (for times the runtime reports).
fn instant_of(t: SystemTime) -> Instant {
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn record_error(span: &Span, e: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", e.to_string().as_str());
}

macro_rules! runtime_span {
    ($name:literal, $w:expr) => {
        info_span!(
            $name,
            "kulisse.stage" = "runtime",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %$w.namespace,
            "k8s.name" = %$w.name,
            "runtime.name" = %$w.shared.runtime.name(),
            "runtime.image" = Empty,
            "runtime.image_pull_secret" = Empty,
            "runtime.container_name" = Empty,
            "runtime.container_id" = Empty,
            "runtime.sandbox_id" = Empty,
            "runtime.pod_ip" = Empty,
            "runtime.mounts" = Empty,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        )
    };
}

/// Millicores of a CPU quantity (`100m`, `0.5`, `2`), as [`objects::quantity`] reads it
/// (rounded up, as Kubernetes' `MilliValue()`); `None` when absent, invalid or negative.
fn cpu_millis(v: Option<&Value>) -> Option<u64> {
    let millis = objects::quantity::cpu_millis(v?).ok()?;
    u64::try_from(millis).ok()
}

/// Bytes of a memory quantity (`128Mi`, `1Gi`, `500M`, `1000`), rounded up as Kubernetes'
/// `Value()`; `None` when absent, invalid or negative.
fn memory_bytes(v: Option<&Value>) -> Option<u64> {
    let bytes = objects::quantity::whole_units(v?).ok()?;
    u64::try_from(bytes).ok()
}

fn spec_containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn spec_init_containers(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The init containers, then the app containers: the order of the worker's records.
fn all_containers(pod: &Value) -> Vec<Value> {
    let mut all = spec_init_containers(pod);
    all.extend(spec_containers(pod));
    all
}

/// An init container is done once its current instance exited 0.
fn init_succeeded(rec: &ContainerRec) -> bool {
    rec.current
        .as_ref()
        .and_then(|i| i.status.as_ref())
        .is_some_and(|s| s.state == ContainerState::Exited && s.exit_code == Some(0))
}

fn container_ports(c: &Value) -> Vec<PortMapping> {
    c.get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let container_port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
            Some(PortMapping {
                protocol: p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
                container_port,
                host_port: p
                    .get("hostPort")
                    .and_then(Value::as_u64)
                    .and_then(|h| u16::try_from(h).ok())
                    .filter(|h| *h > 0),
                host_ip: "127.0.0.1".into(),
            })
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl Worker {
    fn new(shared: Arc<Shared>, pod: &Value) -> Self {
        let name = objects::name(pod).unwrap_or("").to_string();
        let namespace = objects::namespace(pod).unwrap_or("default").to_string();
        let uid = objects::uid(pod).unwrap_or("").to_string();
        Worker {
            involved: json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
            }),
            shared,
            uid,
            namespace,
            name,
            sandbox: None,
            sandbox_attempt: 0,
            containers: Vec::new(),
            init_count: 0,
            initialized: false,
            volumes: PodVolumes::default(),
            start_time: Some(
                pod.pointer("/status/startTime")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(crate::objects::time::now),
            ),
            terminal: None,
            last_written: None,
            quiet: None,
        }
    }

    /// The freshest status we know: what we wrote last, unless the pod we were handed is
    /// newer than that write.
    pub fn base_status<'a>(&'a self, pod: &'a Value) -> Option<&'a Value> {
        let pod_rv = objects::resource_version(pod)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        match &self.last_written {
            Some((rv, written)) if pod_rv <= *rv => Some(written),
            _ => pod.get("status"),
        }
    }

    /// The status to write for `pod` now ([`status::build`] with what this worker knows).
    fn status(&self, pod: &Value) -> Value {
        let now = objects::time::now();
        let facts = PodFacts {
            now: &now,
            base: self.base_status(pod),
            terminal: self.terminal,
            sandbox_ip: self.sandbox.as_ref().map(|s| s.ip.as_str()),
            host_ip: &self.shared.options.node_ip,
            start_time: self.start_time.as_deref(),
            runtime: self.shared.runtime.name(),
            init_count: self.init_count,
            initialized: self.initialized,
        };
        status::build(pod, &self.containers, &facts)
    }

    /// `web_default(uid)`: how kubelet messages name a pod.
    fn pod_ref(&self) -> String {
        format!("{}_{}({})", self.name, self.namespace, self.uid)
    }

    async fn event(&self, kind: EventType, reason: &str, message: &str) {
        self.shared.recorder.record(&self.involved, kind, reason, message).await;
    }

    async fn run(&mut self, mut rx: watch::Receiver<Update>, mut shutdown: watch::Receiver<bool>) {
        self.adopt().await;
        loop {
            let update = rx.borrow_and_update().clone();
            let pod = match update {
                Update::Gone(last) => {
                    self.cleanup(&last).await;
                    return;
                }
                Update::Pod(p) => p,
            };
            if objects::deletion_timestamp(&pod).is_some() {
                self.terminate(&pod).await;
                return;
            }
            let wake = self.sync(&pod).await;
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Pick up the sandbox and containers a previous kubelet left in the runtime.
    async fn adopt(&mut self) {
        let mut filter = BTreeMap::new();
        filter.insert(LABEL_POD_UID.to_string(), self.uid.clone());
        let Ok(sandboxes) = self.shared.runtime.list_pod_sandboxes(&filter).await else {
            return;
        };
        let Some(sb) = sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready)
            .max_by_key(|s| s.attempt)
        else {
            return;
        };
        self.sandbox = Some(Sandbox {
            id: sb.id.clone(),
            ip: sb.ip.clone(),
        });
        self.sandbox_attempt = sb.attempt + 1;
        let Ok(mut containers) = self.shared.runtime.list_containers(&filter).await else {
            return;
        };
        containers.retain(|c| c.sandbox_id == sb.id);
        containers.sort_by_key(|c| std::cmp::Reverse(c.attempt));
        for c in containers {
            let idx = match self.containers.iter().position(|r| r.name == c.name) {
                Some(i) => i,
                None => {
                    self.containers.push(ContainerRec::new(&c.name));
                    self.containers.len() - 1
                }
            };
            let rec = &mut self.containers[idx];
            let inst = Instance {
                id: c.id.clone(),
                status: None,
            };
            if rec.current.is_none() {
                rec.restart_count = c.attempt;
                rec.current = Some(inst);
            } else if rec.previous.is_none() {
                rec.previous = Some(inst);
            }
        }
        tracing::debug!(pod = %self.pod_ref(), "adopted sandbox {} from the runtime", sb.id);
    }

    /// Make sure there is a record for each container of the spec, in spec order.
    fn ensure_records(&mut self, spec: &[Value]) {
        let mut ordered = Vec::with_capacity(spec.len());
        for c in spec {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            match self.containers.iter().position(|r| r.name == name) {
                Some(i) => ordered.push(self.containers.swap_remove(i)),
                None => ordered.push(ContainerRec::new(name)),
            }
        }
        // Records without a spec entry (cannot happen for valid pods) are dropped.
        self.containers = ordered;
    }

    /// Ask the runtime about every container instance.
    async fn observe(&mut self) {
        for rec in &mut self.containers {
            for inst in [rec.current.as_mut(), rec.previous.as_mut()].into_iter().flatten() {
                // A terminated instance does not change any more.
                if inst.state() == Some(ContainerState::Exited) {
                    continue;
                }
                match self.shared.runtime.container_status(&inst.id).await {
                    Ok(s) => inst.status = Some(s),
                    Err(RuntimeError::NotFound(_)) => inst.status = None,
                    Err(e) => tracing::debug!("container status of {}: {e}", inst.id),
                }
            }
            if rec.current.as_ref().is_some_and(|i| i.status.is_none()) {
                rec.current = None; // gone from the runtime
            }
        }
    }

    /// Run the probes that are due on running containers.
    async fn run_probes(&mut self, pod: &Value, spec: &[Value]) -> bool {
        let now = Instant::now();
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
        let mut changed = false;
        let mut events = Vec::new();
        for (i, rec) in self.containers.iter_mut().enumerate() {
            let Some(inst) = rec.current.as_ref() else { continue };
            if inst.state() != Some(ContainerState::Running) || rec.kill.is_some() {
                continue;
            }
            if rec.probes.is_empty() {
                // First look at this instance (e.g. adopted): set its probes up.
                let started = inst
                    .status
                    .as_ref()
                    .and_then(|s| s.started_at)
                    .map(instant_of)
                    .unwrap_or(now);
                rec.probes = probe_states(&spec[i], started);
            }
            let id = inst.id.clone();
            let startup_done = rec.probes.iter().filter(|p| p.kind == ProbeKind::Startup).all(|p| p.ok);
            for p in rec.probes.iter_mut() {
                if p.next_due > now {
                    continue;
                }
                let skip = match p.kind {
                    ProbeKind::Startup => p.ok,
                    _ => !startup_done,
                };
                if skip {
                    p.next_due = now + p.config.as_ref().map(|c| c.period).unwrap_or(Duration::from_secs(10));
                    continue;
                }
                let result = probes::run(self.shared.runtime.as_ref(), &id, &pod_ip, &p.config).await;
                changed |= p.record(&result, Instant::now());
                if let ProbeResult::Failure(output) = &result {
                    events.push(format!("{} probe failed: {output}", p.kind.as_str()));
                    if matches!(p.kind, ProbeKind::Liveness | ProbeKind::Startup) && p.tripped() {
                        let grace = p
                            .config
                            .as_ref()
                            .ok()
                            .and_then(|c| c.termination_grace_seconds)
                            .or_else(|| {
                                pod.pointer("/spec/terminationGracePeriodSeconds")
                                    .and_then(Value::as_i64)
                            });
                        rec.kill = Some((
                            format!(
                                "Container {} failed {} probe, will be restarted",
                                rec.name,
                                p.kind.as_str().to_ascii_lowercase()
                            ),
                            grace,
                        ));
                        changed = true;
                        break;
                    }
                }
            }
        }
        for message in events {
            self.event(EventType::Warning, "Unhealthy", &message).await;
        }
        changed
    }

    /// What the downward API may tell about this pod now.
    fn downward_facts(&self) -> downward::PodFacts<'_> {
        let opts = &self.shared.options;
        downward::PodFacts {
            node_name: &opts.node_name,
            host_ip: &opts.node_ip,
            pod_ip: self.sandbox.as_ref().map(|s| s.ip.as_str()).unwrap_or(""),
            node_cpu: &opts.cpu,
            node_memory: &opts.memory,
        }
    }

    /// The volume work this sync has to do (upstream's volume manager, which the pod worker
    /// waits for in `WaitForAttachAndMount`).
    fn volume_plan(&self, pod: &Value) -> volumes::Plan {
        let facts = self.downward_facts();
        let ctx = volumes::Context {
            pod,
            uid: &self.uid,
            namespace: &self.namespace,
            dirs: &self.shared.volume_dirs,
            sources: &self.shared.sources,
            facts: &facts,
        };
        self.volumes.plan(&ctx)
    }

    /// Decide what to do, without doing it (upstream's `computePodActions`).
    fn plan(&mut self, pod: &Value, spec: &[Value], vplan: volumes::Plan) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.terminal.is_some() {
            return steps;
        }
        // Containers start only once every volume is there.
        let volumes_ready = vplan.error.is_none() && !vplan.waiting;
        match vplan.error {
            Some((volume, message)) if self.volumes.reported_error.as_ref() != Some(&message) => {
                steps.push(Step::MountFailed { volume, message });
            }
            _ => {}
        }
        if !vplan.work.is_empty() {
            steps.push(Step::MountVolumes(vplan.work));
        }
        if self.sandbox.is_none() {
            steps.push(Step::RunSandbox);
        }
        let now = Instant::now();
        let policy = objects::pod::restart_policy(pod);
        let opts = &self.shared.options;
        // Initialized: every init container succeeded, or an app container ran already
        // (e.g. one adopted from an earlier kubelet, whose init containers may be gone).
        let (inits, apps) = self.containers.split_at(self.init_count);
        if !self.initialized
            && (inits.iter().all(init_succeeded) || apps.iter().any(|r| r.current.is_some() || r.previous.is_some()))
        {
            self.initialized = true;
        }
        if self.initialized {
            for (index, rec) in self.containers.iter_mut().enumerate().skip(self.init_count) {
                let image = spec[index].get("image").and_then(Value::as_str).unwrap_or("");
                steps.extend(plan_container(index, rec, image, policy, opts, now));
            }
        } else {
            steps.extend(plan_init(
                &mut self.containers[..self.init_count],
                spec,
                policy,
                opts,
                now,
            ));
        }
        if !volumes_ready && !self.volumes.ready(pod) {
            steps.retain(|s| !matches!(s, Step::Start { .. } | Step::RunSandbox));
        }
        // A wait that is already reported needs no action.
        steps.retain(|s| !already_reported(s, &self.containers));
        steps
    }

    fn sandbox_config(&self, pod: &Value) -> PodSandboxConfig {
        let mut labels: BTreeMap<String, String> = objects::labels(pod);
        labels.insert(LABEL_POD_NAME.into(), self.name.clone());
        labels.insert(LABEL_POD_NAMESPACE.into(), self.namespace.clone());
        labels.insert(LABEL_POD_UID.into(), self.uid.clone());
        PodSandboxConfig {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            uid: self.uid.clone(),
            attempt: self.sandbox_attempt,
            hostname: pod
                .pointer("/spec/hostname")
                .and_then(Value::as_str)
                .unwrap_or(&self.name)
                .to_string(),
            labels,
            annotations: objects::annotations(pod),
            port_mappings: spec_containers(pod).iter().flat_map(container_ports).collect(),
        }
    }

    /// The CRI's `ContainerConfig` for container `c`, with its environment and mounts.
    fn container_config(&self, c: &Value, attempt: u32, env: Vec<EnvVar>, mounts: Vec<Mount>) -> ContainerConfig {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_POD_NAME.to_string(), self.name.clone());
        labels.insert(LABEL_POD_NAMESPACE.to_string(), self.namespace.clone());
        labels.insert(LABEL_POD_UID.to_string(), self.uid.clone());
        labels.insert(LABEL_CONTAINER_NAME.to_string(), name.clone());
        let mut annotations = BTreeMap::new();
        annotations.insert("io.kubernetes.container.restartCount".to_string(), attempt.to_string());
        // `$(VAR)` in command and args expands to the container's variables.
        let vars: HashMap<String, String> = env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        let expanded =
            |v: Option<&Value>| -> Vec<String> { strings(v).iter().map(|s| env::expand(s, &vars)).collect() };
        ContainerConfig {
            name,
            attempt,
            image: c.get("image").and_then(Value::as_str).unwrap_or("").to_string(),
            command: expanded(c.get("command")),
            args: expanded(c.get("args")),
            env,
            working_dir: c.get("workingDir").and_then(Value::as_str).map(str::to_string),
            ports: container_ports(c),
            resources: Resources {
                cpu_request_millis: cpu_millis(c.pointer("/resources/requests/cpu")),
                cpu_limit_millis: cpu_millis(c.pointer("/resources/limits/cpu")),
                memory_request_bytes: memory_bytes(c.pointer("/resources/requests/memory")),
                memory_limit_bytes: memory_bytes(c.pointer("/resources/limits/memory")),
            },
            mounts,
            labels,
            annotations,
            stdin: c.get("stdin").and_then(Value::as_bool).unwrap_or(false),
            stdin_once: c.get("stdinOnce").and_then(Value::as_bool).unwrap_or(false),
            tty: c.get("tty").and_then(Value::as_bool).unwrap_or(false),
        }
    }

    /// The environment and mounts of container `c` (upstream's `GenerateRunContainerOptions`);
    /// `None` when they cannot be made yet (the container then waits, and says why).
    async fn container_inputs(&mut self, index: usize, pod: &Value, c: &Value) -> Option<(Vec<EnvVar>, Vec<Mount>)> {
        let made = {
            let facts = self.downward_facts();
            env::make(pod, c, &self.namespace, &self.shared.sources, &facts)
        };
        let environment = match made {
            Ok(e) => e,
            Err(env::EnvError::NotYet) => return None,
            Err(env::EnvError::Config(message)) => {
                self.creation_failed(index, "CreateContainerConfigError", &message)
                    .await;
                return None;
            }
        };
        match self.volumes.mounts(c) {
            Ok(mounts) => Some((environment, mounts)),
            Err(message) => {
                self.creation_failed(index, "CreateContainerError", &message).await;
                None
            }
        }
    }

    /// One sync. Returns when to look again.
    async fn sync(&mut self, pod: &Arc<Value>) -> Instant {
        self.observe().await;
        if self
            .quiet
            .as_ref()
            .is_some_and(|seen| seen.again(pod, &self.containers))
            && may_rest(pod, &self.containers, Instant::now())
        {
            return self.next_wake();
        }
        let spec = all_containers(pod);
        self.init_count = spec_init_containers(pod).len();
        self.ensure_records(&spec);
        let probes_changed = self.run_probes(pod, &spec).await;
        let vplan = self.volume_plan(pod);
        let steps = self.plan(pod, &spec, vplan);
        let status_now = self.status(pod);
        if let Some(p @ ("Succeeded" | "Failed")) = status_now.get("phase").and_then(Value::as_str) {
            self.terminal = Some(if p == "Succeeded" { "Succeeded" } else { "Failed" });
        }
        let changed = self.base_status(pod) != Some(&status_now);
        let quiet = steps.is_empty() && !changed && !probes_changed;
        self.quiet = quiet.then(|| Seen::of(pod, &self.containers));
        if !quiet {
            // A child of the pod's last writer (or a linked root, in the links style);
            // untraced when the pod belongs to no trace.
            let span = self.sync_span(pod);
            let summary: Vec<String> = steps.iter().map(|s| describe_step(s, &self.containers)).collect();
            let outcome = if summary.is_empty() {
                "reported a status change".to_string()
            } else {
                summary.join(", ")
            };
            span.record("kulisse.outcome", outcome.as_str());
            let phase_after = async {
                let again = self.execute(pod, &spec, steps).await;
                let status = self.status(pod);
                let phase = status.get("phase").and_then(Value::as_str).unwrap_or("").to_string();
                self.write_status(pod, status).await;
                (phase, again)
            }
            .instrument(span.clone())
            .await;
            span.record("kubelet.phase.after", phase_after.0.as_str());
            if phase_after.1 {
                return Instant::now() + Duration::from_millis(1);
            }
        }
        self.next_wake()
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + self.shared.options.relist_period;
        for rec in &self.containers {
            for p in &rec.probes {
                if rec.current.as_ref().and_then(Instance::state) == Some(ContainerState::Running) {
                    wake = wake.min(p.next_due);
                }
            }
            for until in [rec.crash.until, rec.pull.until].into_iter().flatten() {
                if until > now {
                    wake = wake.min(until);
                }
            }
        }
        wake.max(now + Duration::from_millis(1))
    }

    /// Do the plan. Returns true when another sync should follow at once (after a kill).
    async fn execute(&mut self, pod: &Value, spec: &[Value], steps: Vec<Step>) -> bool {
        let mut again = false;
        let sandbox_cfg = self.sandbox_config(pod);
        for step in steps {
            match step {
                Step::MountVolumes(work) => {
                    if !self.mount_volumes(&work).await {
                        return false; // reported; no container starts without its volumes
                    }
                }
                Step::MountFailed { volume, message } => {
                    self.mount_failed(&volume, &message).await;
                }
                Step::RunSandbox => {
                    if !self.run_sandbox(&sandbox_cfg).await {
                        return false; // nothing can start without a sandbox
                    }
                }
                Step::Start { index, restart } => {
                    if self.sandbox.is_some() {
                        self.start_container(index, pod, &sandbox_cfg, restart).await;
                    }
                }
                Step::Kill { index, message, grace } => {
                    self.event(EventType::Normal, "Killing", &message).await;
                    let grace = grace
                        .or_else(|| {
                            pod.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                        })
                        .unwrap_or(30);
                    let rec = &mut self.containers[index];
                    rec.kill = None;
                    rec.killed_by_probe = true;
                    if let Some(inst) = rec.current.clone() {
                        let grace = self.pre_stop(pod, &[(index, inst.id.clone())], grace).await;
                        self.stop_container(index, &inst.id, grace).await;
                    }
                    again = true;
                }
                Step::WaitCrash { index, delay } => {
                    let name = self.containers[index].name.clone();
                    let pod_ref = self.pod_ref();
                    self.containers[index].waiting = Some((
                        "CrashLoopBackOff".into(),
                        format!(
                            "back-off {} restarting failed container={name} pod={pod_ref}",
                            super::go_duration(delay)
                        ),
                    ));
                    self.event(
                        EventType::Warning,
                        "BackOff",
                        &format!("Back-off restarting failed container {name} in pod {pod_ref}"),
                    )
                    .await;
                }
                Step::WaitPull { index } => {
                    let image = spec[index]
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let rec = &mut self.containers[index];
                    rec.waiting = Some((
                        "ImagePullBackOff".into(),
                        format!("Back-off pulling image \"{image}\": ErrImagePull: {}", rec.pull_error),
                    ));
                    self.event(
                        EventType::Normal,
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                    )
                    .await;
                }
            }
        }
        again
    }

    /// Set up or update volumes in a `kubelet.mount_volumes` span.
    async fn mount_volumes(&mut self, work: &[volumes::Work]) -> bool {
        let span = info_span!(
            "kubelet.mount_volumes",
            "kulisse.stage" = "kubelet",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %self.namespace,
            "k8s.name" = %self.name,
            "kubelet.volumes" = %volumes::describe(work),
            "kubelet.volume_dir" = %self.shared.volume_dirs.disk.join(&self.uid).display(),
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        );
        let result = span.in_scope(|| self.volumes.apply(&self.shared.volume_dirs, &self.uid, work));
        match result {
            Ok(()) => {
                self.volumes.reported_error = None;
                true
            }
            Err((volume, message)) => {
                record_error(&span, &message);
                self.mount_failed(&volume, &message).await;
                false
            }
        }
    }

    /// A `FailedMount` event in upstream's words, once per message.
    async fn mount_failed(&mut self, volume: &str, message: &str) {
        let text = format!("MountVolume.SetUp failed for volume \"{volume}\" : {message}");
        self.volumes.reported_error = Some(message.to_string());
        self.event(EventType::Warning, "FailedMount", &text).await;
    }

    async fn run_sandbox(&mut self, cfg: &PodSandboxConfig) -> bool {
        let span = runtime_span!("runtime.run_pod_sandbox", self);
        let result = self.shared.runtime.run_pod_sandbox(cfg).instrument(span.clone()).await;
        match result {
            Ok(sb) => {
                span.record("runtime.sandbox_id", sb.id.as_str());
                span.record("runtime.pod_ip", sb.ip.as_str());
                self.sandbox = Some(sb);
                self.sandbox_attempt += 1;
                true
            }
            Err(e) => {
                record_error(&span, &e);
                self.event(
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    &format!("Failed to create pod sandbox: {e}"),
                )
                .await;
                false
            }
        }
    }

    /// Make sure the image is there, honouring `imagePullPolicy`. Returns false (with the
    /// container's waiting reason set) when it is not.
    async fn ensure_image(&mut self, index: usize, pod: &Value, c: &Value, cfg: &PodSandboxConfig) -> bool {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
        let policy = c
            .get("imagePullPolicy")
            .and_then(Value::as_str)
            .unwrap_or_else(|| crate::objects::defaults::default_pull_policy(&image))
            .to_string();
        if policy != "Always"
            && let Some(present) = self.image_without_pull(index, &image, &policy).await
        {
            return present;
        }
        self.pull_image(index, pod, &image, cfg).await
    }

    /// `IfNotPresent` / `Never`: `Some(true)` when the image is on the node, `Some(false)`
    /// when it is not and must not be pulled, `None` when it must be pulled.
    async fn image_without_pull(&mut self, index: usize, image: &str, policy: &str) -> Option<bool> {
        let present = self.shared.runtime.image_status(image).await.ok().flatten();
        match (present, policy) {
            (Some(reference), _) => {
                self.containers[index].image_ref = Some(reference);
                self.event(
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                )
                .await;
                Some(true)
            }
            (None, "Never") => {
                let message = format!("Container image \"{image}\" is not present with pull policy of Never");
                self.containers[index].waiting = Some(("ErrImageNeverPull".into(), message.clone()));
                self.event(EventType::Warning, "ErrImageNeverPull", &message).await;
                Some(false)
            }
            _ => None,
        }
    }

    /// The login for `image` from the pod's `imagePullSecrets` ([`super::pull_secrets`]),
    /// and the secret it came from. A secret that cannot be read is skipped, as upstream
    /// does; the first read of each waits (briefly) for the kubelet's Secret cache.
    async fn pull_credentials(&self, pod: &Value, image: &str) -> Option<(crate::runtime::AuthConfig, String)> {
        use super::sources::Lookup;
        let names: Vec<&str> = pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .collect();
        let mut secrets = Vec::new();
        for name in names {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match self.shared.sources.secret(&self.namespace, name) {
                    Lookup::Found(secret) => secrets.push((*secret).clone()),
                    Lookup::NotYet if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    Lookup::NotYet | Lookup::Missing => tracing::info!(
                        "unable to retrieve pull secret {}/{name}, the image pull may not succeed",
                        self.namespace
                    ),
                }
                break;
            }
        }
        super::pull_secrets::credentials_for(image, &secrets)
    }

    /// Pull the image; on failure start (or double) the pull back-off.
    async fn pull_image(&mut self, index: usize, pod: &Value, image: &str, cfg: &PodSandboxConfig) -> bool {
        self.event(EventType::Normal, "Pulling", &format!("Pulling image \"{image}\""))
            .await;
        let span = runtime_span!("runtime.pull_image", self);
        span.record("runtime.image", image);
        span.record("runtime.container_name", self.containers[index].name.as_str());
        let login = self.pull_credentials(pod, image).await;
        if let Some((_, secret)) = &login {
            span.record("runtime.image_pull_secret", secret.as_str());
        }
        let started = Instant::now();
        let result = self
            .shared
            .runtime
            .pull_image(image, login.as_ref().map(|(auth, _)| auth), cfg)
            .instrument(span.clone())
            .await;
        match result {
            Ok(reference) => {
                let took = super::go_duration(started.elapsed());
                let rec = &mut self.containers[index];
                rec.image_ref = Some(reference);
                rec.pull = Backoff::default();
                self.event(
                    EventType::Normal,
                    "Pulled",
                    &format!("Successfully pulled image \"{image}\" in {took} ({took} including waiting)"),
                )
                .await;
                true
            }
            Err(e) => {
                record_error(&span, &e);
                self.pull_failed(index, image, &e).await;
                false
            }
        }
    }

    /// The pull failed: `ErrImagePull`, and the pull back-off starts (or doubles).
    async fn pull_failed(&mut self, index: usize, image: &str, e: &RuntimeError) {
        let reason = match e {
            RuntimeError::ImagePullFailed { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let opts = &self.shared.options;
        let rec = &mut self.containers[index];
        let delay = match rec.pull.delay {
            None => opts.backoff_base,
            Some(d) => (d * 2).min(opts.backoff_max),
        };
        rec.pull.delay = Some(delay);
        rec.pull.until = Some(Instant::now() + delay);
        rec.pull_error = reason.clone();
        rec.waiting = Some(("ErrImagePull".into(), reason.clone()));
        self.event(
            EventType::Warning,
            "Failed",
            &format!("Failed to pull image \"{image}\": {reason}"),
        )
        .await;
        self.event(EventType::Warning, "Failed", "Error: ErrImagePull").await;
    }

    /// Upstream's `startContainer`: pull the image, create the container, start it.
    async fn start_container(&mut self, index: usize, pod: &Value, cfg: &PodSandboxConfig, restart: bool) {
        let Some(sandbox) = self.sandbox.clone() else { return };
        let c = &all_containers(pod)[index];
        let Some((env, mounts)) = self.container_inputs(index, pod, c).await else {
            return;
        };
        self.prepare_start(index, restart).await;
        if !self.ensure_image(index, pod, c, cfg).await {
            return;
        }
        let attempt = self.containers[index].restart_count;
        let mut config = self.container_config(c, attempt, env, mounts);
        if index < self.init_count && c.get("restartPolicy").and_then(Value::as_str) != Some("Always") {
            config
                .annotations
                .insert(ANNOTATION_RUN_TO_COMPLETION.to_string(), "true".to_string());
        }
        let name = config.name.clone();
        let Some(id) = self.create_container(index, &config, cfg, &sandbox).await else {
            return;
        };
        self.event(EventType::Normal, "Created", &format!("Created container: {name}"))
            .await;

        let span = runtime_span!("runtime.start_container", self);
        span.record("runtime.container_name", name.as_str());
        span.record("runtime.container_id", id.as_str());
        span.record("runtime.sandbox_id", sandbox.id.as_str());
        span.record("runtime.pod_ip", sandbox.ip.as_str());
        let started = self.shared.runtime.start_container(&id).instrument(span.clone()).await;
        let status = self.shared.runtime.container_status(&id).await.ok();
        let rec = &mut self.containers[index];
        rec.current = Some(Instance { id: id.clone(), status });
        rec.waiting = None;
        match started {
            Ok(()) => {
                rec.probes = probe_states(c, Instant::now());
                self.event(EventType::Normal, "Started", &format!("Started container {name}"))
                    .await;
                self.post_start(index, pod, c, &id, &sandbox.ip).instrument(span).await;
            }
            Err(e) => {
                record_error(&span, &e);
                self.event(
                    EventType::Warning,
                    "Failed",
                    &format!("Error: failed to start container \"{name}\": {e}"),
                )
                .await;
            }
        }
    }

    /// The container's postStart hook, if it has one; when it fails, the container is killed
    /// (and restarted per the pod's restartPolicy), as upstream's kubelet does.
    async fn post_start(&mut self, index: usize, pod: &Value, c: &Value, id: &str, pod_ip: &str) {
        let Some(handler) = lifecycle::handler(c, Hook::PostStart) else {
            return;
        };
        let name = self.containers[index].name.clone();
        let grace = Self::grace_of(pod);
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0).max(1));
        let ran = lifecycle::run(
            &*self.shared.runtime,
            id,
            pod_ip,
            (&self.pod_ref(), &name),
            &handler,
            limit,
        )
        .await;
        tracing::info!(hook = "postStart", container = %name, ok = ran.is_ok(), "lifecycle hook");
        if let Err(msg) = ran {
            self.event(EventType::Warning, Hook::PostStart.failed_reason(), &msg)
                .await;
            // Upstream's killContainer is given the message "FailedPostStartHook".
            self.event(EventType::Normal, "Killing", Hook::PostStart.failed_reason())
                .await;
            self.stop_container(index, id, grace).await;
        }
    }

    /// The preStop hooks of the running containers `running` (index, id) that have one, all
    /// at once, within `grace` seconds; returns the grace left for the stop itself (at least
    /// 2 s, as upstream keeps).
    async fn pre_stop(&self, pod: &Value, running: &[(usize, String)], grace: i64) -> i64 {
        let specs = all_containers(pod);
        let pod_ip = self.sandbox.as_ref().map(|s| s.ip.clone()).unwrap_or_default();
        let pod_ref = self.pod_ref();
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let started = Instant::now();
        let hooks = running.iter().filter_map(|(i, id)| {
            let spec = specs.get(*i)?;
            let handler = lifecycle::handler(spec, Hook::PreStop)?;
            let name = self.containers[*i].name.clone();
            let (runtime, pod_ip, pod_ref, id) =
                (self.shared.runtime.clone(), pod_ip.clone(), pod_ref.clone(), id.clone());
            Some(async move {
                let ran = lifecycle::run(&*runtime, &id, &pod_ip, (&pod_ref, &name), &handler, limit).await;
                tracing::info!(hook = "preStop", container = %name, ok = ran.is_ok(), "lifecycle hook");
                ran.err()
            })
        });
        let failures: Vec<String> = futures::future::join_all(hooks).await.into_iter().flatten().collect();
        for msg in failures {
            self.event(EventType::Warning, Hook::PreStop.failed_reason(), &msg)
                .await;
        }
        let spent = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        grace.saturating_sub(spent).max(2.min(grace))
    }

    /// Before a (re)start: a restart makes the current instance the previous one (removing
    /// the one before), counts the restart and doubles a waited-out back-off; every start
    /// forgets the old instance's probes and kill requests.
    async fn prepare_start(&mut self, index: usize, restart: bool) {
        let backoff_max = self.shared.options.backoff_max;
        let rec = &mut self.containers[index];
        if restart {
            let old_previous = rec.previous.take();
            rec.previous = rec.current.take();
            rec.restart_count += 1;
            if rec.crash_waited {
                rec.crash.delay = rec.crash.delay.map(|d| (d * 2).min(backoff_max));
                rec.crash_waited = false;
            }
            rec.crash.until = None;
            if let Some(old) = old_previous {
                let _ = self.shared.runtime.remove_container(&old.id).await;
            }
        }
        let rec = &mut self.containers[index];
        rec.exit_handled = false;
        rec.kill = None;
        rec.killed_by_probe = false;
        rec.probes.clear();
    }

    /// `CreateContainer` through the CRI; on failure `CreateContainerError` and a back-off.
    async fn create_container(
        &mut self,
        index: usize,
        config: &ContainerConfig,
        cfg: &PodSandboxConfig,
        sandbox: &Sandbox,
    ) -> Option<String> {
        let span = runtime_span!("runtime.create_container", self);
        span.record("runtime.image", config.image.as_str());
        span.record("runtime.container_name", config.name.as_str());
        span.record("runtime.sandbox_id", sandbox.id.as_str());
        if !config.mounts.is_empty() {
            let mounts: Vec<String> = config
                .mounts
                .iter()
                .map(|m| {
                    let mode = if m.readonly { "ro" } else { "rw" };
                    format!("{}:{} ({mode})", m.volume, m.container_path)
                })
                .collect();
            span.record("runtime.mounts", mounts.join(", ").as_str());
        }
        let created = self
            .shared
            .runtime
            .create_container(&sandbox.id, config, cfg)
            .instrument(span.clone())
            .await;
        match created {
            Ok(id) => {
                span.record("runtime.container_id", id.as_str());
                Some(id)
            }
            Err(e) => {
                record_error(&span, &e);
                self.creation_failed(index, "CreateContainerError", &e.to_string())
                    .await;
                None
            }
        }
    }

    /// The container could not be created: it waits with `reason` (`CreateContainerError`,
    /// `CreateContainerConfigError`) and is tried again after the back-off delay.
    async fn creation_failed(&mut self, index: usize, reason: &str, message: &str) {
        let backoff_base = self.shared.options.backoff_base;
        let rec = &mut self.containers[index];
        rec.waiting = Some((reason.to_string(), message.to_string()));
        let delay = rec.crash.delay.unwrap_or(backoff_base);
        rec.crash.delay = Some(delay);
        rec.crash.until = Some(Instant::now() + delay);
        self.event(EventType::Warning, "Failed", &format!("Error: {message}"))
            .await;
    }

    async fn stop_container(&mut self, index: usize, id: &str, grace: i64) {
        let span = runtime_span!("runtime.stop_container", self);
        span.record("runtime.container_name", self.containers[index].name.as_str());
        span.record("runtime.container_id", id);
        let timeout = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let result = self
            .shared
            .runtime
            .stop_container(id, timeout)
            .instrument(span.clone())
            .await;
        if let Err(e) = result {
            record_error(&span, &e);
        }
        if let Ok(st) = self.shared.runtime.container_status(id).await
            && let Some(inst) = self.containers[index].current.as_mut()
            && inst.id == id
        {
            inst.status = Some(st);
        }
    }

    /// Stop every running container (in parallel, each with `grace`) and remove the sandbox.
    async fn kill_pod(&mut self, pod: &Value, grace: i64, announce: bool) {
        self.observe().await;
        let running: Vec<(usize, String)> = self
            .containers
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let inst = r.current.as_ref()?;
                matches!(inst.state(), Some(ContainerState::Running | ContainerState::Created))
                    .then(|| (i, inst.id.clone()))
            })
            .collect();
        if announce {
            for (i, _) in &running {
                let msg = format!("Stopping container {}", self.containers[*i].name);
                self.event(EventType::Normal, "Killing", &msg).await;
            }
        }
        let grace = self.pre_stop(pod, &running, grace).await;
        let timeout = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        let stops = running.iter().map(|(i, id)| {
            let span = runtime_span!("runtime.stop_container", self);
            span.record("runtime.container_name", self.containers[*i].name.as_str());
            span.record("runtime.container_id", id.as_str());
            let runtime = self.shared.runtime.clone();
            let id = id.clone();
            async move {
                if let Err(e) = runtime.stop_container(&id, timeout).await {
                    record_error(&Span::current(), &e);
                }
            }
            .instrument(span)
        });
        futures::future::join_all(stops).await;
        self.observe().await;
    }

    async fn remove_sandbox(&mut self) {
        let Some(sb) = self.sandbox.take() else { return };
        let span = runtime_span!("runtime.remove_pod_sandbox", self);
        span.record("runtime.sandbox_id", sb.id.as_str());
        span.record("runtime.pod_ip", sb.ip.as_str());
        let runtime = self.shared.runtime.clone();
        let result = async {
            runtime.stop_pod_sandbox(&sb.id).await?;
            runtime.remove_pod_sandbox(&sb.id).await
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = result {
            record_error(&span, &e);
        }
    }

    /// Also remove sandboxes of this pod the worker does not know (left by an earlier kubelet).
    async fn remove_leftovers(&self) {
        let mut filter = BTreeMap::new();
        filter.insert(LABEL_POD_UID.to_string(), self.uid.clone());
        if let Ok(sandboxes) = self.shared.runtime.list_pod_sandboxes(&filter).await {
            for sb in sandboxes {
                let _ = self.shared.runtime.stop_pod_sandbox(&sb.id).await;
                let _ = self.shared.runtime.remove_pod_sandbox(&sb.id).await;
            }
        }
    }

    fn grace_of(pod: &Value) -> i64 {
        pod.pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    }

    /// The `kubelet.sync_pod` span of one sync of `pod`, continuing the pod's trace.
    fn sync_span(&self, pod: &Value) -> tracing::Span {
        let phase_before = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        let traceparent = crate::controllers::reconciler::traceparent_of(pod);
        kulisse_traces::caused_span!(
            traceparent.as_deref(),
            "kubelet.sync_pod",
            "kulisse.stage" = "kubelet",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %self.namespace,
            "k8s.name" = %self.name,
            "k8s.pod.uid" = %self.uid,
            "kubelet.pod" = %format!("{}/{}", self.namespace, self.name),
            "kubelet.node" = %self.shared.options.node_name,
            "kubelet.phase.before" = %phase_before,
            "kubelet.phase.after" = Empty,
            "kulisse.outcome" = Empty,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        )
    }

    /// Graceful termination of a pod with a `deletionTimestamp`.
    async fn terminate(&mut self, pod: &Arc<Value>) {
        let span = self.sync_span(pod);
        span.record("kulisse.outcome", "terminate");
        let grace = Self::grace_of(pod);
        async {
            self.init_count = spec_init_containers(pod).len();
            self.ensure_records(&all_containers(pod));
            self.kill_pod(pod, grace, true).await;
            // Every container is terminated now: the pod has reached its end.
            let all_ok = self.containers.iter().all(|r| {
                r.current
                    .as_ref()
                    .and_then(|i| i.status.as_ref())
                    .is_none_or(|s| s.exit_code == Some(0))
            });
            self.terminal = Some(if all_ok { "Succeeded" } else { "Failed" });
            let status = self.status(pod);
            Span::current().record(
                "kubelet.phase.after",
                status.get("phase").and_then(Value::as_str).unwrap_or(""),
            );
            self.write_status(pod, status).await;
            self.remove_sandbox().await;
            self.remove_leftovers().await;
            self.shared.volume_dirs.remove_pod(&self.uid);
            let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
            let options = json!({
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid},
            });
            match self
                .shared
                .client
                .delete_with_options(info, Some(&self.namespace), &self.name, &options)
                .await
            {
                Ok(_) => {}
                Err(e) if matches!(e.code(), Some(404 | 409)) => {}
                Err(e) => {
                    record_error(&Span::current(), &e);
                    tracing::warn!(pod = %self.pod_ref(), "deleting the terminated pod failed: {e}");
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// The pod vanished from the API server: stop and remove what is left in the runtime.
    async fn cleanup(&mut self, last: &Arc<Value>) {
        if self.sandbox.is_none() && self.containers.iter().all(|r| r.current.is_none()) {
            self.remove_leftovers().await;
            self.shared.volume_dirs.remove_pod(&self.uid);
            return;
        }
        let phase_before = last.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        let span = info_span!(
            "kubelet.sync_pod",
            "kulisse.stage" = "kubelet",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %self.namespace,
            "k8s.name" = %self.name,
            "k8s.pod.uid" = %self.uid,
            "kubelet.pod" = %format!("{}/{}", self.namespace, self.name),
            "kubelet.node" = %self.shared.options.node_name,
            "kubelet.phase.before" = phase_before,
            "kubelet.phase.after" = "Deleted",
            "kulisse.outcome" = "clean up a deleted pod",
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        );
        let grace = Self::grace_of(last);
        async {
            self.kill_pod(last, grace, true).await;
            self.remove_sandbox().await;
            self.remove_leftovers().await;
            self.shared.volume_dirs.remove_pod(&self.uid);
        }
        .instrument(span)
        .await;
    }

    /// `PUT .../pods/{name}/status`, only when something changed; re-read on a conflict.
    async fn write_status(&mut self, pod: &Value, status: Value) {
        if self.base_status(pod) == Some(&status) {
            return;
        }
        let phase = status.get("phase").and_then(Value::as_str).unwrap_or("");
        let span = info_span!(
            "kubelet.status_update",
            "kulisse.stage" = "kubelet",
            "k8s.kind" = "Pod",
            "k8s.namespace" = %self.namespace,
            "k8s.name" = %self.name,
            "k8s.pod.phase" = phase,
            "kubelet.attempts" = Empty,
            "otel.status_code" = Empty,
            "otel.status_description" = Empty,
        );
        let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
        let result = async {
            let mut obj = pod.clone();
            for attempt in 1..=4u32 {
                obj["status"] = status.clone();
                Span::current().record("kubelet.attempts", attempt);
                match self
                    .shared
                    .client
                    .replace(info, Some(&self.namespace), &self.name, Some("status"), &obj)
                    .await
                {
                    Ok(written) => {
                        return Ok(objects::resource_version(&written).and_then(|v| v.parse::<u64>().ok()));
                    }
                    Err(e) if e.code() == Some(404) => return Ok(None),
                    Err(e) if e.code() == Some(409) && attempt < 4 => {
                        match self.shared.client.get(info, Some(&self.namespace), &self.name).await {
                            Ok(fresh) if objects::uid(&fresh) == Some(self.uid.as_str()) => obj = fresh,
                            Ok(_) => return Ok(None), // a new pod with the same name
                            Err(e) if e.code() == Some(404) => return Ok(None),
                            Err(e) => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        }
        .instrument(span.clone())
        .await;
        match result {
            Ok(Some(rv)) => self.last_written = Some((rv, status)),
            Ok(None) => {}
            Err(e) => {
                record_error(&span, &e);
                tracing::debug!(pod = %self.pod_ref(), "status update failed: {e}");
            }
        }
    }
}

/// Upstream's `computeInitContainerActions`: the first init container that has not
/// succeeded is started, waited for, or restarted after a failure (on the pod's
/// `restartPolicy`, where `Always` means `OnFailure`: an init container that exited 0 is
/// done). With `Never`, a failed init container fails the pod (see the status).
fn plan_init(
    inits: &mut [ContainerRec],
    spec: &[Value],
    policy: &str,
    opts: &KubeletOptions,
    now: Instant,
) -> Option<Step> {
    let policy = if policy == "Never" { "Never" } else { "OnFailure" };
    let index = inits.iter().position(|r| !init_succeeded(r))?;
    let image = spec[index].get("image").and_then(Value::as_str).unwrap_or("");
    plan_container(index, &mut inits[index], image, policy, opts, now)
}

/// The step for one container: start it, kill it, restart it, or wait out a back-off.
fn plan_container(
    index: usize,
    rec: &mut ContainerRec,
    image: &str,
    policy: &str,
    opts: &KubeletOptions,
    now: Instant,
) -> Option<Step> {
    let Some(st) = rec.current.as_ref().and_then(|i| i.status.clone()) else {
        // Never ran (or gone from the runtime).
        let creation_failed = rec.waiting.as_ref().is_some_and(|w| w.0.starts_with("CreateContainer"));
        return Some(if rec.pull.active(now) {
            Step::WaitPull { index }
        } else if rec.crash.active(now) && creation_failed {
            return None; // keeps showing why; tried again when the delay is over
        } else if rec.crash.active(now) {
            Step::WaitCrash {
                index,
                delay: rec.crash.delay.unwrap_or(opts.backoff_base),
            }
        } else {
            Step::Start { index, restart: false }
        });
    };
    match st.state {
        ContainerState::Running | ContainerState::Created => plan_running(index, rec, image, &st),
        _ => plan_exited(index, rec, &st, policy, opts, now),
    }
}

/// A running container is killed when a probe asked so, or when its image changed.
fn plan_running(index: usize, rec: &mut ContainerRec, image: &str, st: &ContainerStatus) -> Option<Step> {
    if let Some((message, grace)) = rec.kill.clone() {
        Some(Step::Kill { index, message, grace })
    } else if !image.is_empty() && st.image != image {
        rec.killed_by_probe = true;
        Some(Step::Kill {
            index,
            message: format!("Container {} definition changed, will be restarted", rec.name),
            grace: None,
        })
    } else {
        None
    }
}

/// An exited container is restarted if `restartPolicy` says so, once its back-off is over.
fn plan_exited(
    index: usize,
    rec: &mut ContainerRec,
    st: &ContainerStatus,
    policy: &str,
    opts: &KubeletOptions,
    now: Instant,
) -> Option<Step> {
    let should_restart = match policy {
        "Never" => false,
        "OnFailure" => st.exit_code != Some(0) || rec.killed_by_probe,
        _ => true,
    };
    if !should_restart {
        return None;
    }
    if !rec.exit_handled {
        rec.exit_handled = true;
        count_exit(rec, st, opts, now);
    }
    Some(if rec.crash.active(now) {
        Step::WaitCrash {
            index,
            delay: rec.crash.delay.unwrap_or(opts.backoff_base),
        }
    } else {
        Step::Start { index, restart: true }
    })
}

/// Count one exit for the `CrashLoopBackOff` delay: the first crash restarts at once and
/// starts the delay; later ones wait it out from when the container finished. A container
/// that ran long enough starts over.
fn count_exit(rec: &mut ContainerRec, st: &ContainerStatus, opts: &KubeletOptions, now: Instant) {
    let ran = match (st.started_at, st.finished_at) {
        (Some(s), Some(f)) => f.duration_since(s).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if ran >= opts.backoff_reset_after {
        rec.crash.delay = None;
    }
    match rec.crash.delay {
        None => {
            rec.crash.delay = Some(opts.backoff_base);
            rec.crash.until = None;
            rec.crash_waited = false;
        }
        Some(d) => {
            let finished = st.finished_at.map(instant_of).unwrap_or(now);
            rec.crash.until = Some(finished + d);
            rec.crash_waited = true;
        }
    }
}

/// A back-off wait whose reason the container already shows.
fn already_reported(step: &Step, containers: &[ContainerRec]) -> bool {
    let reason = |index: &usize| containers[*index].waiting.as_ref().map(|w| w.0.as_str());
    match step {
        Step::WaitCrash { index, .. } => reason(index) == Some("CrashLoopBackOff"),
        Step::WaitPull { index } => reason(index) == Some("ImagePullBackOff"),
        _ => false,
    }
}

fn probe_states(c: &Value, started: Instant) -> Vec<ProbeState> {
    [ProbeKind::Startup, ProbeKind::Liveness, ProbeKind::Readiness]
        .into_iter()
        .filter_map(|kind| probes::parse(c, kind).map(|cfg| ProbeState::new(cfg, kind, started)))
        .collect()
}

fn describe_step(s: &Step, containers: &[ContainerRec]) -> String {
    let name = |i: &usize| containers.get(*i).map(|c| c.name.as_str()).unwrap_or("?");
    match s {
        Step::MountVolumes(work) => format!("mount volumes {}", volumes::describe(work)),
        Step::MountFailed { volume, .. } => format!("wait for volume {volume}"),
        Step::RunSandbox => "run the pod sandbox".into(),
        Step::Start { index, restart: false } => format!("start container {}", name(index)),
        Step::Start { index, restart: true } => format!("restart container {}", name(index)),
        Step::Kill { index, .. } => format!("kill container {}", name(index)),
        Step::WaitCrash { index, delay } => {
            format!(
                "back off {} before restarting {}",
                super::go_duration(*delay),
                name(index)
            )
        }
        Step::WaitPull { index } => format!("back off pulling the image of {}", name(index)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis(Some(&json!("100m"))), Some(100));
        assert_eq!(cpu_millis(Some(&json!("0.5"))), Some(500));
        assert_eq!(cpu_millis(Some(&json!(2))), Some(2000));
        assert_eq!(memory_bytes(Some(&json!("128Mi"))), Some(128 * 1024 * 1024));
        assert_eq!(memory_bytes(Some(&json!("1G"))), Some(1_000_000_000));
        assert_eq!(memory_bytes(Some(&json!("oops"))), None);
        assert_eq!(memory_bytes(Some(&json!("-1Gi"))), None);
        assert_eq!(cpu_millis(None), None);
    }

    #[test]
    fn a_relist_rests_only_when_nothing_changed_and_nothing_is_due() {
        let pod = Arc::new(json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}));
        let mut rec = ContainerRec::new("app");
        rec.current = Some(Instance {
            id: "c1".into(),
            status: None,
        });
        let mut containers = vec![rec];
        let seen = Seen::of(&pod, &containers);
        let now = Instant::now();
        assert!(seen.again(&pod, &containers) && may_rest(&pod, &containers, now));
        // The same content handed over again is a new update: the worker syncs.
        assert!(!seen.again(&Arc::new((*pod).clone()), &containers));
        // A container that changed in the runtime is news.
        containers[0].current = Some(Instance {
            id: "c2".into(),
            status: None,
        });
        assert!(!seen.again(&pod, &containers));
        // A back-off waits on a clock.
        containers[0].crash.until = Some(now);
        assert!(!may_rest(&pod, &containers, now));
        // A configMap may change under a running pod: its files must follow.
        let with_config = json!({"spec": {"volumes": [{"name": "conf", "configMap": {"name": "c"}}]}});
        assert!(!may_rest(&with_config, &[ContainerRec::new("app")], now));
    }
}
