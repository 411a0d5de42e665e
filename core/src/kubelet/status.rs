//! # Pod status (mirrors the kubelet's `generateAPIPodStatus` and `getPhase`)
//!
//! What `kubectl get pods` shows is written by the kubelet: the pod's **phase**, its
//! **conditions**, its IPs, and one **container status** per container (`running`,
//! `waiting` with a reason such as `ContainerCreating` or `CrashLoopBackOff`, or
//! `terminated` with an exit code; plus `lastState`, `restartCount`, `ready`).
//!
//! [`build`] is a pure function of the pod, the worker's [container records](super::container)
//! and a few [`PodFacts`] (the time, the sandbox's IP, ...): no I/O, so it is unit-tested
//! below. It goes in upstream's steps:
//!
//! 1. **container statuses** (`convertToAPIContainerStatuses`): each record becomes
//!    `state` + `lastState`, in `initContainerStatuses` for init containers; one that has
//!    not run yet waits with `PodInitializing` in a pod with init containers (else
//!    `ContainerCreating`);
//! 2. **phase** (`getPhase`), a summary of the containers: any container still waiting for
//!    its first run → `Pending`; any running → `Running`; all exited → `Succeeded` if all
//!    exited 0 and nothing will restart them, `Failed` if one failed and
//!    `restartPolicy: Never`, else `Running` (they are being restarted); an init container
//!    that failed under `restartPolicy: Never` fails the pod;
//! 3. **conditions** (`GeneratePodReadyCondition` and its siblings; `Initialized` is false
//!    with the init containers that have not succeeded), each keeping its
//!    `lastTransitionTime` while its status stays the same ([`crate::objects::pod`]);
//! 4. IPs and `startTime`.

use serde_json::{Map, Value, json};

use super::container::{ContainerRec, Instance};
use crate::objects::pod::{condition_in, restart_policy, transition_time};
use crate::runtime::{ContainerState, ContainerStatus};

/// What the status depends on besides the pod and its container records.
#[derive(Debug, Clone, Copy)]
pub(super) struct PodFacts<'a> {
    /// Now, in RFC 3339: the time of new transitions.
    pub now: &'a str,
    /// The freshest status known (the worker's last write, or the pod's own). Fields the
    /// kubelet does not own (e.g. `qosClass`, `nominatedNodeName`) are kept from it.
    pub base: Option<&'a Value>,
    /// `Succeeded` or `Failed` once the pod has reached its end.
    pub terminal: Option<&'static str>,
    /// The pod sandbox's IP, when there is a sandbox.
    pub sandbox_ip: Option<&'a str>,
    /// The node's IP.
    pub host_ip: &'a str,
    /// When the worker first saw the pod: `startTime` when the status has none.
    pub start_time: Option<&'a str>,
    /// The runtime's name: the scheme of container IDs in a pod status (`mock://<id>`).
    pub runtime: &'a str,
    /// How many of the container records are init containers (they come first).
    pub init_count: usize,
    /// The pod was initialized once (every init container succeeded, or an app container
    /// started): it stays so, as upstream's `HasAnyRegularContainerStarted`.
    pub initialized: bool,
}

impl PodFacts<'_> {
    fn container_id(&self, id: &str) -> String {
        format!("{}://{id}", self.runtime)
    }
}

/// The status the kubelet would write for `pod` now. `containers` holds the init
/// containers' records first (`facts.init_count` of them), then the app containers'.
pub(super) fn build(pod: &Value, containers: &[ContainerRec], facts: &PodFacts) -> Value {
    let existing = facts.base.cloned().unwrap_or_else(|| json!({}));
    let mut status: Map<String, Value> = existing.as_object().cloned().unwrap_or_default();
    let split = facts.init_count.min(containers.len());
    let (init_recs, app_recs) = containers.split_at(split);
    let has_init = !init_recs.is_empty();
    let init_statuses = container_statuses(pod, "initContainers", init_recs, facts, has_init);
    let statuses = container_statuses(pod, "containers", app_recs, facts, has_init);
    let tallies: Vec<Tally> = statuses.iter().map(|s| s.tally).collect();
    let init_failed = init_statuses.iter().any(|s| s.tally == Tally::Stopped);
    let policy = restart_policy(pod);
    let phase = facts.terminal.unwrap_or_else(|| {
        if init_failed && policy == "Never" && !facts.initialized {
            "Failed"
        } else {
            phase(&tallies, policy)
        }
    });
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = statuses.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let incomplete: Vec<&str> = init_statuses
        .iter()
        .filter(|s| s.tally != Tally::Succeeded)
        .map(|s| s.name.as_str())
        .collect();
    let init = Init {
        has_init,
        initialized: facts.initialized || statuses.iter().any(|s| s.tally != Tally::Waiting),
        incomplete: &incomplete,
    };
    let old = existing.get("conditions").cloned().unwrap_or(Value::Null);
    let conditions = conditions(&old, facts, &unready, app_recs.len(), terminal, &init);

    status.insert("phase".into(), json!(phase));
    status.insert("conditions".into(), Value::Array(conditions));
    set_ips(&mut status, facts, terminal);
    let start_time = existing
        .get("startTime")
        .cloned()
        .or_else(|| facts.start_time.map(|t| json!(t)))
        .unwrap_or_else(|| json!(facts.now));
    status.insert("startTime".into(), start_time);
    if has_init {
        let init_statuses = init_statuses.into_iter().map(|s| s.status).collect();
        status.insert("initContainerStatuses".into(), Value::Array(init_statuses));
    }
    let statuses = statuses.into_iter().map(|s| s.status).collect();
    status.insert("containerStatuses".into(), Value::Array(statuses));
    Value::Object(status)
}

// ---------------------------------------------------------------------------------------
// Container statuses (convertToAPIContainerStatuses)
// ---------------------------------------------------------------------------------------

/// How a container counts for the phase (`getPhase`'s tallies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    Running,
    /// Terminated with exit code 0.
    Succeeded,
    /// Terminated otherwise, or waiting to be restarted after a run.
    Stopped,
    /// Waiting for its first run.
    Waiting,
}

/// One container's entry of `containerStatuses`, with what the pod-level parts need.
struct Converted {
    name: String,
    ready: bool,
    tally: Tally,
    status: Value,
}

/// The statuses of the records of one list of the spec (`containers`, `initContainers`).
/// A container that has not run yet waits with `PodInitializing` in a pod with init
/// containers, with `ContainerCreating` otherwise (as upstream's default waiting state).
fn container_statuses(
    pod: &Value,
    list: &str,
    containers: &[ContainerRec],
    facts: &PodFacts,
    has_init: bool,
) -> Vec<Converted> {
    let default_reason = if has_init {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let images: Vec<String> = pod
        .get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or("").to_string())
        .collect();
    containers
        .iter()
        .enumerate()
        .map(|(i, rec)| convert(rec, images.get(i).cloned().unwrap_or_default(), facts, default_reason))
        .collect()
}

fn convert(rec: &ContainerRec, image: String, facts: &PodFacts, default_reason: &str) -> Converted {
    let (state, last_state, exit_code) = container_state(rec, facts, default_reason);
    let tally = if state.get("running").is_some() {
        Tally::Running
    } else if state.get("terminated").is_some() {
        if exit_code == Some(0) {
            Tally::Succeeded
        } else {
            Tally::Stopped
        }
    } else if last_state.is_some() {
        // Waiting to be restarted after a run: stopped, not succeeded (as upstream).
        Tally::Stopped
    } else {
        Tally::Waiting
    };
    let ready = rec.ready();
    let mut status = json!({
        "name": rec.name,
        "image": image,
        "imageID": rec.image_ref.clone().unwrap_or_default(),
        "ready": ready,
        "started": rec.started(),
        "restartCount": rec.restart_count,
        "state": state,
        "lastState": last_state.unwrap_or_else(|| json!({})),
    });
    if let Some(inst) = &rec.current {
        status["containerID"] = json!(facts.container_id(&inst.id));
    }
    Converted {
        name: rec.name.clone(),
        ready,
        tally,
        status,
    }
}

/// `state`, `lastState`, and the exit code of a terminated `state` (1 when unknown).
fn container_state(rec: &ContainerRec, facts: &PodFacts, default_reason: &str) -> (Value, Option<Value>, Option<i32>) {
    let current = rec.current.as_ref().filter(|c| c.status.is_some());
    let previous = || rec.previous.as_ref().and_then(|p| terminated(p, facts));
    let waiting = |reason: &str, message: &str| json!({"waiting": {"reason": reason, "message": message}});
    match (current.and_then(|c| c.status.as_ref()), &rec.waiting) {
        (Some(s), _) if s.state == ContainerState::Running => {
            let started = s
                .started_at
                .map(crate::objects::time::time)
                .unwrap_or_else(|| facts.now.to_string());
            (json!({"running": {"startedAt": started}}), previous(), None)
        }
        // Exited, and waiting to be restarted: the exit is the last state.
        (Some(s), Some((reason, message))) if s.state == ContainerState::Exited => {
            let last = current.and_then(|c| terminated(c, facts));
            (waiting(reason, message), last, None)
        }
        (Some(s), None) if s.state == ContainerState::Exited => {
            let t = current.and_then(|c| terminated(c, facts)).unwrap_or_else(|| json!({}));
            (t, previous(), s.exit_code.or(Some(1)))
        }
        (_, Some((reason, message))) => (waiting(reason, message), previous(), None),
        (_, None) => (json!({"waiting": {"reason": default_reason}}), previous(), None),
    }
}

/// `{"terminated": ...}` of an exited instance.
fn terminated(inst: &Instance, facts: &PodFacts) -> Option<Value> {
    let s: &ContainerStatus = inst.status.as_ref()?;
    if s.state != ContainerState::Exited {
        return None;
    }
    let code = s.exit_code.unwrap_or(0);
    let mut t = json!({
        "exitCode": code,
        "reason": s.reason.clone().unwrap_or_else(|| if code == 0 { "Completed".into() } else { "Error".into() }),
        "containerID": facts.container_id(&inst.id),
    });
    if let Some(at) = s.started_at {
        t["startedAt"] = json!(crate::objects::time::time(at));
    }
    if let Some(at) = s.finished_at {
        t["finishedAt"] = json!(crate::objects::time::time(at));
    }
    if let Some(m) = &s.message {
        t["message"] = json!(m);
    }
    Some(json!({"terminated": t}))
}

// ---------------------------------------------------------------------------------------
// Phase (getPhase)
// ---------------------------------------------------------------------------------------

/// The phase of a pod that has not reached its end, from its containers' tallies.
fn phase(tallies: &[Tally], policy: &str) -> &'static str {
    let count = |t: Tally| tallies.iter().filter(|x| **x == t).count();
    let (running, waiting, succeeded) = (count(Tally::Running), count(Tally::Waiting), count(Tally::Succeeded));
    let stopped = count(Tally::Stopped) + succeeded;
    let total = tallies.len();
    if total == 0 || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == total {
        match policy {
            "Never" if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            "OnFailure" if stopped == succeeded => "Succeeded",
            _ => "Running",
        }
    } else {
        "Pending"
    }
}

// ---------------------------------------------------------------------------------------
// Conditions (GeneratePodReadyCondition and its siblings)
// ---------------------------------------------------------------------------------------

/// One pod condition, keeping the `lastTransitionTime` of the `old` one of its type while
/// its status stays the same.
fn pod_condition(old: &Value, now: &str, ty: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> Value {
    let status = if ok { "True" } else { "False" };
    let transition = transition_time(condition_in(old, ty), status, now);
    let mut c = json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": transition});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// What the `Initialized` condition depends on.
struct Init<'a> {
    has_init: bool,
    /// An app container has run (or the worker saw the pod initialized before).
    initialized: bool,
    /// Init containers that have not exited 0.
    incomplete: &'a [&'a str],
}

/// `Initialized` (upstream's `GeneratePodInitializedCondition`): true once an app
/// container started; else true (`PodCompleted`) when every init container exited 0; else
/// false, naming the init containers that have not.
fn initialized_condition(old: &Value, now: &str, init: &Init, terminal: bool) -> Value {
    if !init.has_init {
        return pod_condition(old, now, "Initialized", true, terminal.then_some("PodCompleted"), None);
    }
    if init.initialized {
        return pod_condition(old, now, "Initialized", true, None, None);
    }
    if init.incomplete.is_empty() {
        return pod_condition(old, now, "Initialized", true, Some("PodCompleted"), None);
    }
    let message = format!("containers with incomplete status: [{}]", init.incomplete.join(" "));
    pod_condition(
        old,
        now,
        "Initialized",
        false,
        Some("ContainersNotInitialized"),
        Some(message),
    )
}

/// The kubelet's conditions, in the order it writes them; `PodScheduled` is the
/// scheduler's and kept as it is.
fn conditions(
    old: &Value,
    facts: &PodFacts,
    unready: &[&str],
    total: usize,
    terminal: bool,
    init: &Init,
) -> Vec<Value> {
    let now = facts.now;
    let all_ready = unready.is_empty() && total > 0 && !terminal;
    let (ready_reason, ready_message) = if all_ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        )
    };
    let scheduled = condition_in(old, "PodScheduled")
        .cloned()
        .unwrap_or_else(|| pod_condition(old, now, "PodScheduled", true, None, None));
    let sandbox_ready = facts.sandbox_ip.is_some() && !terminal;
    vec![
        pod_condition(old, now, "PodReadyToStartContainers", sandbox_ready, None, None),
        initialized_condition(old, now, init, terminal),
        pod_condition(old, now, "Ready", all_ready, ready_reason, ready_message.clone()),
        pod_condition(old, now, "ContainersReady", all_ready, ready_reason, ready_message),
        scheduled,
    ]
}

/// `hostIP(s)`, and `podIP(s)` while there is a sandbox (kept once the pod has ended).
fn set_ips(status: &mut Map<String, Value>, facts: &PodFacts, terminal: bool) {
    status.insert("hostIP".into(), json!(facts.host_ip));
    status.insert("hostIPs".into(), json!([{"ip": facts.host_ip}]));
    match facts.sandbox_ip {
        Some(ip) => {
            status.insert("podIP".into(), json!(ip));
            status.insert("podIPs".into(), json!([{"ip": ip}]));
        }
        None if !terminal => {
            status.remove("podIP");
            status.remove("podIPs");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use tokio::time::Instant;

    use super::*;
    use crate::kubelet::probes::{self, ProbeState};
    use crate::runtime::{ProbeKind, ProbeResult};

    const NOW: &str = "2026-01-02T03:04:05Z";

    fn facts<'a>(base: Option<&'a Value>) -> PodFacts<'a> {
        PodFacts {
            now: NOW,
            base,
            terminal: None,
            sandbox_ip: Some("10.1.0.7"),
            host_ip: "127.0.0.1",
            start_time: Some("2026-01-02T03:00:00Z"),
            runtime: "fake",
            init_count: 0,
            initialized: false,
        }
    }

    fn pod(policy: &str, names: &[&str]) -> Value {
        let containers: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "image": format!("img/{n}:1")}))
            .collect();
        json!({"spec": {"restartPolicy": policy, "containers": containers}})
    }

    fn instance(id: &str, state: ContainerState, exit_code: Option<i32>) -> Instance {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_000_000);
        Instance {
            id: id.into(),
            status: Some(ContainerStatus {
                id: id.into(),
                name: "c".into(),
                attempt: 0,
                state,
                image: "img".into(),
                image_ref: "sha256:abc".into(),
                created_at: started,
                started_at: Some(started),
                finished_at: (state == ContainerState::Exited).then(|| started + Duration::from_secs(5)),
                exit_code,
                reason: None,
                message: None,
                labels: BTreeMap::new(),
            }),
        }
    }

    fn running(name: &str) -> ContainerRec {
        let mut rec = ContainerRec::new(name);
        rec.current = Some(instance(&format!("{name}-1"), ContainerState::Running, None));
        rec
    }

    fn exited(name: &str, code: i32) -> ContainerRec {
        let mut rec = ContainerRec::new(name);
        rec.current = Some(instance(&format!("{name}-1"), ContainerState::Exited, Some(code)));
        rec
    }

    fn phase_of(policy: &str, recs: &[ContainerRec]) -> String {
        let names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
        let status = build(&pod(policy, &names), recs, &facts(None));
        status["phase"].as_str().unwrap_or("").to_string()
    }

    fn condition<'a>(status: &'a Value, ty: &str) -> &'a Value {
        condition_in(&status["conditions"], ty).expect("the condition is there")
    }

    #[test]
    fn pending_until_every_container_has_run() {
        let status = build(&pod("Always", &["web"]), &[ContainerRec::new("web")], &facts(None));
        assert_eq!(status["phase"], "Pending");
        let cs = &status["containerStatuses"][0];
        assert_eq!(cs["state"]["waiting"]["reason"], "ContainerCreating");
        assert_eq!(cs["image"], "img/web:1");
        assert_eq!(cs["ready"], false);
        assert_eq!(phase_of("Always", &[running("a"), ContainerRec::new("b")]), "Pending");
        assert_eq!(phase_of("Always", &[]), "Pending");
    }

    #[test]
    fn running_while_a_container_runs() {
        let status = build(&pod("Always", &["web"]), &[running("web")], &facts(None));
        assert_eq!(status["phase"], "Running");
        let cs = &status["containerStatuses"][0];
        assert!(cs["state"]["running"]["startedAt"].is_string());
        assert_eq!(cs["containerID"], "fake://web-1");
        assert_eq!(
            (cs["ready"].as_bool(), cs["started"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(status["podIP"], "10.1.0.7");
        assert_eq!(status["hostIP"], "127.0.0.1");
        assert_eq!(status["startTime"], "2026-01-02T03:00:00Z");
        assert_eq!(condition(&status, "Ready")["status"], "True");
        // One container exited, one still runs: Running whatever the policy says.
        assert_eq!(phase_of("Never", &[running("a"), exited("b", 1)]), "Running");
    }

    #[test]
    fn succeeded_when_all_exited_zero_and_none_restarts() {
        assert_eq!(phase_of("Never", &[exited("a", 0), exited("b", 0)]), "Succeeded");
        assert_eq!(phase_of("OnFailure", &[exited("a", 0)]), "Succeeded");
        // `Always` restarts even a clean exit: the pod stays Running meanwhile.
        assert_eq!(phase_of("Always", &[exited("a", 0)]), "Running");
        let status = build(&pod("Never", &["a"]), &[exited("a", 0)], &facts(None));
        let t = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (t["exitCode"].as_i64(), t["reason"].as_str()),
            (Some(0), Some("Completed"))
        );
    }

    #[test]
    fn failed_when_one_failed_and_nothing_restarts() {
        assert_eq!(phase_of("Never", &[exited("a", 0), exited("b", 2)]), "Failed");
        assert_eq!(phase_of("OnFailure", &[exited("a", 2)]), "Running");
        let status = build(&pod("Never", &["a"]), &[exited("a", 2)], &facts(None));
        assert_eq!(status["containerStatuses"][0]["state"]["terminated"]["reason"], "Error");
        // Once ended, the pod is not Ready, for a reason that says so.
        let ready = condition(&status, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("PodCompleted"))
        );
    }

    #[test]
    fn a_terminal_pod_keeps_its_phase_and_ip() {
        let base = json!({"phase": "Running", "podIP": "10.1.0.7", "qosClass": "BestEffort"});
        let f = PodFacts {
            terminal: Some("Failed"),
            sandbox_ip: None,
            ..facts(Some(&base))
        };
        let status = build(&pod("Always", &["a"]), &[running("a")], &f);
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["podIP"], "10.1.0.7");
        assert_eq!(status["qosClass"], "BestEffort", "fields the kubelet does not own stay");
        assert_eq!(condition(&status, "PodReadyToStartContainers")["status"], "False");
        // Without a sandbox, a pod that has not ended loses its IP.
        let f = PodFacts {
            sandbox_ip: None,
            ..facts(Some(&base))
        };
        let status = build(&pod("Always", &["a"]), &[running("a")], &f);
        assert!(status.get("podIP").is_none() && status.get("podIPs").is_none());
    }

    #[test]
    fn restart_count_and_last_state_come_from_the_previous_instance() {
        let mut rec = running("web");
        rec.restart_count = 3;
        rec.previous = Some(instance("web-0", ContainerState::Exited, Some(137)));
        let status = build(&pod("Always", &["web"]), &[rec], &facts(None));
        let cs = &status["containerStatuses"][0];
        assert_eq!(cs["restartCount"], 3);
        let last = &cs["lastState"]["terminated"];
        assert_eq!(
            (last["exitCode"].as_i64(), last["containerID"].as_str()),
            (Some(137), Some("fake://web-0"))
        );
        assert!(cs["state"]["running"].is_object());
    }

    #[test]
    fn waiting_reasons_are_reported() {
        // Crashed and backing off: waiting, with the crash as the last state.
        let mut crashed = exited("web", 1);
        crashed.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s restarting".into()));
        let status = build(&pod("Always", &["web"]), &[crashed], &facts(None));
        let cs = &status["containerStatuses"][0];
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["state"]["waiting"]["message"], "back-off 10s restarting");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(status["phase"], "Running", "being restarted");
        // Never ran: the image cannot be pulled.
        let mut pulling = ContainerRec::new("web");
        pulling.waiting = Some(("ErrImagePull".into(), "not found".into()));
        let status = build(&pod("Always", &["web"]), &[pulling], &facts(None));
        assert_eq!(
            status["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ErrImagePull"
        );
        assert_eq!(status["containerStatuses"][0]["lastState"], json!({}));
        assert_eq!(status["phase"], "Pending");
    }

    fn with_probe(mut rec: ContainerRec, kind: ProbeKind, key: &str, result: Option<ProbeResult>) -> ContainerRec {
        let spec = json!({"name": rec.name, key: {"exec": {"command": ["true"]}}});
        let config = probes::parse(&spec, kind).expect("the probe is configured");
        let mut p = ProbeState::new(config, kind, Instant::now());
        if let Some(r) = result {
            p.record(&r, Instant::now());
        }
        rec.probes.push(p);
        rec
    }

    #[test]
    fn readiness_follows_the_probes() {
        let unready = with_probe(running("web"), ProbeKind::Readiness, "readinessProbe", None);
        let status = build(&pod("Always", &["web", "db"]), &[unready, running("db")], &facts(None));
        assert_eq!(status["containerStatuses"][0]["ready"], false);
        assert_eq!(status["containerStatuses"][1]["ready"], true);
        for ty in ["Ready", "ContainersReady"] {
            let c = condition(&status, ty);
            assert_eq!(
                (c["status"].as_str(), c["reason"].as_str()),
                (Some("False"), Some("ContainersNotReady"))
            );
            assert_eq!(c["message"], "containers with unready status: [web]");
        }
        let ready = with_probe(
            running("web"),
            ProbeKind::Readiness,
            "readinessProbe",
            Some(ProbeResult::Success),
        );
        let status = build(&pod("Always", &["web"]), &[ready], &facts(None));
        assert_eq!(status["containerStatuses"][0]["ready"], true);
        assert_eq!(condition(&status, "Ready")["status"], "True");
        // A startup probe that has not succeeded yet: neither started nor ready.
        let starting = with_probe(running("web"), ProbeKind::Startup, "startupProbe", None);
        let status = build(&pod("Always", &["web"]), &[starting], &facts(None));
        let cs = &status["containerStatuses"][0];
        assert_eq!(
            (cs["started"].as_bool(), cs["ready"].as_bool()),
            (Some(false), Some(false))
        );
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let first = build(&pod("Always", &["web"]), &[running("web")], &facts(None));
        assert_eq!(condition(&first, "Ready")["lastTransitionTime"], NOW);
        let later = PodFacts {
            now: "2026-01-02T04:00:00Z",
            ..facts(Some(&first))
        };
        let same = build(&pod("Always", &["web"]), &[running("web")], &later);
        assert_eq!(condition(&same, "Ready")["lastTransitionTime"], NOW);
        assert_eq!(same["conditions"], first["conditions"]);
        let flipped = build(&pod("Always", &["web"]), &[exited("web", 1)], &later);
        assert_eq!(
            condition(&flipped, "Ready")["lastTransitionTime"],
            "2026-01-02T04:00:00Z"
        );
        assert_eq!(condition(&flipped, "Initialized")["lastTransitionTime"], NOW);
    }

    #[test]
    fn the_schedulers_condition_is_kept() {
        let base = json!({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "T0"}]});
        let status = build(&pod("Always", &["web"]), &[running("web")], &facts(Some(&base)));
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        assert_eq!(condition(&status, "PodScheduled")["lastTransitionTime"], "T0");
    }
}
