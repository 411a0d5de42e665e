//! kubectl's `PodDescriber`: where the pod runs, its status, IP and QoS class, its containers
//! and its conditions.

use kulisse_core::printers;
use serde_json::Value;

use super::{conditions, containers, field, or_none, s};

pub(super) fn describe(out: &mut String, obj: &Value) {
    field(out, "Node", &[or_none(s(obj, "/spec/nodeName"))]);
    field(out, "Status", &[printers::pod_status(obj)]);
    field(out, "IP", &[s(obj, "/status/podIP").into()]);
    field(out, "QoS Class", &[s(obj, "/status/qosClass").into()]);
    containers(out, obj.pointer("/spec/containers"), "");
    conditions(out, obj);
}
