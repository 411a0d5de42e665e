//! kubectl's `ServiceDescriber`: the selector, the type, the ClusterIP and, for each port,
//! its port, target port and node port.

use kulisse_core::printers;
use serde_json::Value;

use super::{field, or_none, s};

pub(super) fn describe(out: &mut String, obj: &Value) {
    field(
        out,
        "Selector",
        &[printers::selector_text(obj.pointer("/spec/selector"))],
    );
    field(out, "Type", &[s(obj, "/spec/type").into()]);
    field(out, "IP", &[or_none(s(obj, "/spec/clusterIP"))]);
    for p in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        port(out, p);
    }
}

/// One entry of `spec.ports`.
fn port(out: &mut String, p: &Value) {
    let name = p.get("name").and_then(Value::as_str).unwrap_or("<unset>");
    field(
        out,
        "Port",
        &[format!(
            "{name}  {}/{}",
            p.get("port").unwrap_or(&Value::Null),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
        )],
    );
    field(
        out,
        "TargetPort",
        &[format!(
            "{}/{}",
            p.get("targetPort")
                .map(|t| t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string()))
                .unwrap_or_default(),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
        )],
    );
    if let Some(np) = p.get("nodePort") {
        field(out, "NodePort", &[format!("{name}  {np}/TCP")]);
    }
}
