//! # Container records (mirrors the kubelet's `kubecontainer.Status` and the pod worker's
//! per-container bookkeeping)
//!
//! A pod worker keeps one **record** per container of the pod spec: the instance running
//! now (`current`) and the one before it (`previous`, whose exit becomes `lastState`), how
//! often it was restarted, why it is waiting (`ContainerCreating`, `CrashLoopBackOff`,
//! `ErrImagePull`, ...), its back-offs and its probes. The worker ([`super::pod_worker`])
//! changes the records as it acts; the status builder ([`super::status`]) only reads them to
//! write the pod's `containerStatuses`. Both depend on this module, and not on each other.

use std::time::Duration;

use tokio::time::Instant;

use super::probes::ProbeState;
use crate::runtime::{ContainerState, ContainerStatus, ProbeKind};

/// A restart or pull back-off.
#[derive(Debug, Default, Clone)]
pub(super) struct Backoff {
    /// The current delay; `None` before the first failure.
    pub delay: Option<Duration>,
    /// No new attempt before this.
    pub until: Option<Instant>,
}

impl Backoff {
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

/// One container instance in the runtime.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Instance {
    pub id: String,
    pub status: Option<ContainerStatus>,
}

impl Instance {
    pub fn state(&self) -> Option<ContainerState> {
        self.status.as_ref().map(|s| s.state)
    }
}

/// What the worker knows about one container of the pod spec.
#[derive(Debug)]
pub(super) struct ContainerRec {
    pub name: String,
    pub current: Option<Instance>,
    pub previous: Option<Instance>,
    pub restart_count: u32,
    /// Why it is waiting (reason, message), when it has no running instance.
    pub waiting: Option<(String, String)>,
    pub image_ref: Option<String>,
    pub crash: Backoff,
    /// The crash back-off's delay must double at the next restart (we waited it out).
    pub crash_waited: bool,
    pub pull: Backoff,
    pub pull_error: String,
    pub probes: Vec<ProbeState>,
    /// The current instance's exit was counted for the back-off.
    pub exit_handled: bool,
    /// A probe asked to kill the current instance: (Killing message, grace seconds).
    pub kill: Option<(String, Option<i64>)>,
    /// The current instance was killed by a probe: restart it even after exit code 0.
    pub killed_by_probe: bool,
}

impl ContainerRec {
    pub fn new(name: &str) -> Self {
        ContainerRec {
            name: name.to_string(),
            current: None,
            previous: None,
            restart_count: 0,
            waiting: None,
            image_ref: None,
            crash: Backoff::default(),
            crash_waited: false,
            pull: Backoff::default(),
            pull_error: String::new(),
            probes: Vec::new(),
            exit_handled: false,
            kill: None,
            killed_by_probe: false,
        }
    }

    /// Started: running, and its startup probe (if any) succeeded.
    pub fn started(&self) -> bool {
        self.current.as_ref().and_then(Instance::state) == Some(ContainerState::Running)
            && self
                .probes
                .iter()
                .filter(|p| p.kind == ProbeKind::Startup)
                .all(|p| p.ok)
    }

    /// Ready: started, and its readiness probe (if any) succeeds.
    pub fn ready(&self) -> bool {
        self.started()
            && self
                .probes
                .iter()
                .filter(|p| p.kind == ProbeKind::Readiness)
                .all(|p| p.ok)
    }
}
