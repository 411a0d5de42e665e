//! kubectl's `DeploymentDescriber` and `ReplicaSetDescriber`: the selector, the replica
//! counts (and, for a Deployment, its strategy), then the pod template.

use kulisse_core::printers;
use serde_json::Value;

use super::{containers, field, map_lines, s};

fn int(obj: &Value, p: &str) -> i64 {
    obj.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn selector(out: &mut String, obj: &Value) {
    field(
        out,
        "Selector",
        &[printers::selector_text(obj.pointer("/spec/selector/matchLabels"))],
    );
}

fn pod_template(out: &mut String, obj: &Value) {
    out.push_str("Pod Template:\n");
    field(
        out,
        "  Labels",
        &map_lines(obj.pointer("/spec/template/metadata/labels")),
    );
    containers(out, obj.pointer("/spec/template/spec/containers"), "  ");
}

pub(super) fn deployment(out: &mut String, obj: &Value) {
    selector(out, obj);
    let i = |p: &str| int(obj, p);
    let desired = i("/spec/replicas");
    let total = i("/status/replicas");
    let available = i("/status/availableReplicas");
    field(
        out,
        "Replicas",
        &[format!(
            "{desired} desired | {} updated | {total} total | {available} available | {} unavailable",
            i("/status/updatedReplicas"),
            i("/status/unavailableReplicas")
        )],
    );
    field(out, "StrategyType", &[s(obj, "/spec/strategy/type").into()]);
    if s(obj, "/spec/strategy/type") == "RollingUpdate" {
        let ru = |k: &str| {
            obj.pointer(&format!("/spec/strategy/rollingUpdate/{k}"))
                .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .unwrap_or_default()
        };
        field(
            out,
            "RollingUpdateStrategy",
            &[format!(
                "{} max unavailable, {} max surge",
                ru("maxUnavailable"),
                ru("maxSurge")
            )],
        );
    }
    pod_template(out, obj);
}

pub(super) fn replica_set(out: &mut String, obj: &Value) {
    selector(out, obj);
    field(
        out,
        "Replicas",
        &[format!(
            "{} current / {} desired",
            int(obj, "/status/replicas"),
            int(obj, "/spec/replicas")
        )],
    );
    pod_template(out, obj);
}
