//! # Pod status (mirrors the kubelet's `generateAPIPodStatus` and `getPhase`)
//!
//! What `kubectl get pods` shows is written by the kubelet: the pod's **phase**, its
//! **conditions**, its IPs, and one **container status** per container (`running`,
//! `waiting` with a reason such as `ContainerCreating` or `CrashLoopBackOff`, or
//! `terminated` with an exit code; plus `lastState`, `restartCount`, `ready`).
//!
//! The phase is a summary of the containers, computed as upstream's `getPhase` does:
//! any container still waiting for its first run → `Pending`; any running → `Running`;
//! all exited → `Succeeded` if all exited 0 and nothing will restart them, `Failed` if
//! one failed and `restartPolicy: Never`, else `Running` (they are being restarted).

use serde_json::{Map, Value, json};

use super::pod_worker::{Instance, Worker};
use crate::runtime::{ContainerState, ContainerStatus};

fn terminated(inst: &Instance, container_id: String) -> Option<Value> {
    let s: &ContainerStatus = inst.status.as_ref()?;
    if s.state != ContainerState::Exited {
        return None;
    }
    let code = s.exit_code.unwrap_or(0);
    let mut t = json!({
        "exitCode": code,
        "reason": s.reason.clone().unwrap_or_else(|| if code == 0 { "Completed".into() } else { "Error".into() }),
        "containerID": container_id,
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

/// The status the kubelet would write for `pod` now. Fields it does not own (e.g.
/// `qosClass`, `nominatedNodeName`) are kept from the pod's current status.
pub(super) fn build(w: &Worker, pod: &Value) -> Value {
    let now = crate::objects::time::now();
    let existing = w.base_status(pod).cloned().unwrap_or_else(|| json!({}));
    let mut status: Map<String, Value> = existing.as_object().cloned().unwrap_or_default();
    let policy = pod
        .pointer("/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    let images: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| c.get("image").and_then(Value::as_str).unwrap_or("").to_string())
        .collect();

    let (mut running, mut waiting, mut stopped, mut succeeded) = (0usize, 0usize, 0usize, 0usize);
    let mut statuses = Vec::new();
    let mut unready = Vec::new();
    for (i, rec) in w.containers.iter().enumerate() {
        let image = images.get(i).cloned().unwrap_or_default();
        let current = rec.current.as_ref().filter(|c| c.status.is_some());
        let state_of_current = current.and_then(Instance::state);
        let (state, last_state, counted_exit) = match (state_of_current, &rec.waiting) {
            (Some(ContainerState::Running), _) => {
                let started = current
                    .and_then(|c| c.status.as_ref())
                    .and_then(|s| s.started_at)
                    .map(crate::objects::time::time)
                    .unwrap_or_else(|| now.clone());
                let last = rec
                    .previous
                    .as_ref()
                    .and_then(|p| terminated(p, w.shared.container_id_uri(&p.id)));
                (json!({"running": {"startedAt": started}}), last, None)
            }
            (Some(ContainerState::Exited), Some((reason, message))) => {
                let inst = current.expect("an exited instance exists");
                let last = terminated(inst, w.shared.container_id_uri(&inst.id));
                let code = inst.status.as_ref().and_then(|s| s.exit_code);
                (
                    json!({"waiting": {"reason": reason, "message": message}}),
                    last,
                    code.or(Some(1)),
                )
            }
            (Some(ContainerState::Exited), None) => {
                let inst = current.expect("an exited instance exists");
                let t = terminated(inst, w.shared.container_id_uri(&inst.id)).unwrap_or_else(|| json!({}));
                let last = rec
                    .previous
                    .as_ref()
                    .and_then(|p| terminated(p, w.shared.container_id_uri(&p.id)));
                let code = inst.status.as_ref().and_then(|s| s.exit_code);
                (t, last, code.or(Some(1)))
            }
            (_, Some((reason, message))) => {
                let last = rec
                    .previous
                    .as_ref()
                    .and_then(|p| terminated(p, w.shared.container_id_uri(&p.id)));
                let code = rec
                    .previous
                    .as_ref()
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.exit_code);
                let counted = last.as_ref().map(|_| code.unwrap_or(1));
                (
                    json!({"waiting": {"reason": reason, "message": message}}),
                    last,
                    counted,
                )
            }
            (_, None) => {
                let last = rec
                    .previous
                    .as_ref()
                    .and_then(|p| terminated(p, w.shared.container_id_uri(&p.id)));
                (
                    json!({"waiting": {"reason": "ContainerCreating"}}),
                    None::<Value>.or(last),
                    None,
                )
            }
        };
        // Count for the phase, as getPhase does.
        if state.get("running").is_some() {
            running += 1;
        } else if state.get("terminated").is_some() {
            stopped += 1;
            if counted_exit == Some(0) {
                succeeded += 1;
            }
        } else if last_state.is_some() {
            // Waiting to be restarted after a run: stopped, not succeeded (as upstream).
            stopped += 1;
        } else {
            waiting += 1;
        }
        let ready = rec.ready();
        if !ready {
            unready.push(rec.name.clone());
        }
        let mut cs = json!({
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
            cs["containerID"] = json!(w.shared.container_id_uri(&inst.id));
        }
        statuses.push(cs);
    }

    let total = w.containers.len();
    let phase = if let Some(p) = w.terminal {
        p
    } else if total == 0 || waiting > 0 {
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
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");

    let old_conditions: Vec<Value> = existing
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |ty: &str, ok: bool, reason: Option<&str>, message: Option<String>| -> Value {
        let status_text = if ok { "True" } else { "False" };
        let transition = old_conditions
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
            .filter(|c| c.get("status").and_then(Value::as_str) == Some(status_text))
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        let mut c = json!({"type": ty, "status": status_text, "lastProbeTime": null, "lastTransitionTime": transition});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
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
    let scheduled = old_conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"))
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled", true, None, None));
    let sandbox_ready = w.sandbox.is_some() && !terminal;
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, None),
        condition("Initialized", true, terminal.then_some("PodCompleted"), None),
        condition("Ready", all_ready, ready_reason, ready_message.clone()),
        condition("ContainersReady", all_ready, ready_reason, ready_message),
        scheduled,
    ];

    status.insert("phase".into(), json!(phase));
    status.insert("conditions".into(), Value::Array(conditions));
    let host_ip = &w.shared.options.node_ip;
    status.insert("hostIP".into(), json!(host_ip));
    status.insert("hostIPs".into(), json!([{"ip": host_ip}]));
    match &w.sandbox {
        Some(sb) => {
            status.insert("podIP".into(), json!(sb.ip));
            status.insert("podIPs".into(), json!([{"ip": sb.ip}]));
        }
        None if !terminal => {
            status.remove("podIP");
            status.remove("podIPs");
        }
        None => {}
    }
    let start_time = existing
        .get("startTime")
        .cloned()
        .or_else(|| w.start_time.clone().map(Value::String))
        .unwrap_or_else(|| json!(now));
    status.insert("startTime".into(), start_time);
    status.insert("containerStatuses".into(), Value::Array(statuses));
    Value::Object(status)
}
