//! # Lifecycle hooks (mirrors the kubelet's `lifecycle.HandlerRunner`, `pkg/kubelet/lifecycle`)
//!
//! A container may ask the kubelet to run something at two moments of its life
//! (`spec.containers[].lifecycle`):
//!
//! - **postStart**, right after the runtime has started the container. It runs beside the
//!   container's own process, with no ordering between the two. If it fails, the kubelet
//!   kills the container (event `FailedPostStartHook`) and the pod's `restartPolicy` decides
//!   what comes next: with `Always`, a restart with the usual back-off.
//! - **preStop**, before the kubelet stops a container that is still running: the pod is
//!   being deleted, or a liveness probe failed. The hook runs first, then the runtime sends
//!   the stop signal; the hook's time counts against `terminationGracePeriodSeconds` (the
//!   stop keeps at least 2 s, as upstream's does). A failed hook is reported
//!   (`FailedPreStopHook`) and the stop goes on.
//!
//! A handler is an `exec` (success: exit code 0), an `httpGet` (success: status 200–399)
//! or a `sleep` of some seconds. They run through the same code as the probes
//! ([`super::probes::check`]): `exec` through the runtime, HTTP only towards loopback.
//! A `tcpSocket` handler is accepted by the API (it is deprecated) and fails when it runs,
//! as upstream's kubelet does.
//!
//! Where kulisse differs: upstream keeps the container's state `Waiting` until its
//! postStart hook has finished; kulisse reports it running as soon as the runtime says so
//! and runs the hook right after, within the same pass of the pod worker. And upstream
//! waits for an exec postStart hook as long as it runs; kulisse gives it the pod's
//! termination grace period (30 s by default), so a hook that hangs cannot stall the pod's
//! worker for good, and counts one that runs longer as failed.

use std::time::Duration;

use serde_json::Value;

use crate::runtime::{ContainerRuntime, ProbeAction, ProbeResult};

/// Which hook: `postStart` or `preStop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    PostStart,
    PreStop,
}

impl Hook {
    /// The field under `lifecycle`.
    pub fn field(self) -> &'static str {
        match self {
            Hook::PostStart => "postStart",
            Hook::PreStop => "preStop",
        }
    }

    /// The event reason of a failure.
    pub fn failed_reason(self) -> &'static str {
        match self {
            Hook::PostStart => "FailedPostStartHook",
            Hook::PreStop => "FailedPreStopHook",
        }
    }
}

/// What one handler does.
#[derive(Clone, Debug, PartialEq)]
pub enum Handler {
    /// `exec`, `httpGet` (and `tcpSocket`, which fails when run) as for probes.
    Check(ProbeAction),
    /// `sleep: {seconds: N}`.
    Sleep(Duration),
    /// A handler the kubelet cannot run, with why.
    Invalid(String),
}

/// The container's `hook` handler, if it has one.
pub fn handler(container: &Value, hook: Hook) -> Option<Handler> {
    let h = container.pointer(&format!("/lifecycle/{}", hook.field()))?;
    if !h.is_object() {
        return None;
    }
    if let Some(s) = h.get("sleep") {
        let secs = s.get("seconds").and_then(Value::as_u64).unwrap_or(0);
        return Some(Handler::Sleep(Duration::from_secs(secs)));
    }
    Some(match super::probes::action_of(container, h, hook.field()) {
        Ok(action) => Handler::Check(action),
        Err(e) => Handler::Invalid(e),
    })
}

/// Run `handler` for the container `name` (runtime id `container_id`) of the pod `pod_ref`
/// (`namespace/name`) whose IP is `pod_ip`, for at most `limit`. `Err` is the event message
/// of a failure, in the words of upstream's kubelet.
pub async fn run(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    pod_ip: &str,
    (pod_ref, name): (&str, &str),
    handler: &Handler,
    limit: Duration,
) -> Result<(), String> {
    let action = match handler {
        Handler::Sleep(d) => {
            tokio::time::sleep((*d).min(limit)).await;
            return Ok(());
        }
        Handler::Invalid(why) => {
            return Err(format!(
                "invalid lifecycle hook for Container {name:?} in Pod {pod_ref:?}: {why}"
            ));
        }
        Handler::Check(action) => action,
    };
    let what = match action {
        // Go's %v of a []string, as upstream's message prints the command.
        ProbeAction::Exec { command } => format!("Exec lifecycle hook ([{}])", command.join(" ")),
        ProbeAction::Http { path, .. } => format!("HTTP lifecycle hook ({path})"),
        ProbeAction::Tcp { port, .. } => {
            return Err(format!(
                "TCPSocket lifecycle hook (port {port}) for Container {name:?} in Pod {pod_ref:?} failed - error: tcpSocket is deprecated and not supported as a lifecycle handler"
            ));
        }
        ProbeAction::Grpc { .. } => {
            return Err(format!(
                "invalid lifecycle hook for Container {name:?} in Pod {pod_ref:?}: grpc is not a lifecycle handler"
            ));
        }
    };
    match super::probes::check(runtime, container_id, pod_ip, action, limit).await {
        ProbeResult::Success => Ok(()),
        ProbeResult::Failure(e) => Err(format!(
            "{what} for Container {name:?} in Pod {pod_ref:?} failed - error: {e}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn handlers_are_read_from_the_container() {
        let c = json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}], "lifecycle": {
            "postStart": {"exec": {"command": ["sh", "-c", "echo hi"]}},
            "preStop": {"httpGet": {"path": "/drain", "port": "http"}},
        }});
        assert_eq!(
            handler(&c, Hook::PostStart),
            Some(Handler::Check(ProbeAction::Exec {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()]
            }))
        );
        match handler(&c, Hook::PreStop) {
            Some(Handler::Check(ProbeAction::Http { port, path, .. })) => {
                assert_eq!((port, path.as_str()), (8080, "/drain"))
            }
            other => panic!("{other:?}"),
        }
        let sleepy = json!({"name": "s", "lifecycle": {"preStop": {"sleep": {"seconds": 3}}}});
        assert_eq!(
            handler(&sleepy, Hook::PreStop),
            Some(Handler::Sleep(Duration::from_secs(3)))
        );
        assert_eq!(handler(&sleepy, Hook::PostStart), None);
        let empty = json!({"name": "e", "lifecycle": {"postStart": {}}});
        assert!(matches!(handler(&empty, Hook::PostStart), Some(Handler::Invalid(_))));
    }
}
