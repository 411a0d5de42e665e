//! # The downward API (mirrors `pkg/fieldpath` and `pkg/api/v1/resource` as the kubelet
//! uses them)
//!
//! A container can learn about its own pod without asking the API server: its name,
//! namespace, uid, labels and annotations, the node it runs on, its IP, and its own CPU and
//! memory requests and limits. The pod spec names them with a **field path**
//! (`fieldRef: {fieldPath: metadata.name}`) or a **resource field**
//! (`resourceFieldRef: {resource: limits.memory, divisor: 1Mi}`); the kubelet resolves them
//! into environment variables (`env[].valueFrom`) or files (`downwardAPI` volumes).
//!
//! Labels and annotations as a whole become one `key="value"` line per entry, sorted, as
//! upstream's `FormatMap` writes them. A resource is divided by `divisor` (default `1`) and
//! rounded up; a limit that is not set is the node's allocatable amount.

use serde_json::Value;

use crate::objects;

/// What the kubelet knows about the pod that the pod object may not say yet.
pub(crate) struct PodFacts<'a> {
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    /// The node's allocatable CPU and memory (for limits that are not set).
    pub node_cpu: &'a str,
    pub node_memory: &'a str,
}

/// `k="v"` lines, sorted by key (upstream's `fieldpath.FormatMap`).
fn format_map(map: Option<&Value>) -> String {
    let mut lines: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            format!("{k}={}", serde_json::to_string(v).unwrap_or_default())
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// `metadata.labels['key']` → `("labels", "key")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("metadata.")?;
    let (field, key) = rest.split_once("['")?;
    Some((field, key.strip_suffix("']")?))
}

/// The value of `fieldPath` for `pod` (upstream's `podFieldSelectorRuntimeValue` and
/// `ExtractFieldPathAsString`).
pub(crate) fn field_value(pod: &Value, field_path: &str, facts: &PodFacts) -> Result<String, String> {
    let meta = |k: &str| {
        pod.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if let Some((field @ ("labels" | "annotations"), key)) = subscript(field_path) {
        return Ok(pod
            .pointer(&format!("/metadata/{field}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string());
    }
    Ok(match field_path {
        "metadata.name" => meta("name"),
        "metadata.namespace" => objects::namespace(pod).unwrap_or("default").to_string(),
        "metadata.uid" => meta("uid"),
        "metadata.labels" => format_map(pod.pointer("/metadata/labels")),
        "metadata.annotations" => format_map(pod.pointer("/metadata/annotations")),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        other => return Err(format!("unsupported fieldPath: {other}")),
    })
}

/// The value of a `resourceFieldRef` for the container `container` of `pod`.
pub(crate) fn resource_value(pod: &Value, container: &str, rf: &Value, facts: &PodFacts) -> Result<String, String> {
    let resource = rf.get("resource").and_then(Value::as_str).unwrap_or("");
    let c = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| {
            pod.pointer(&format!("/spec/{k}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .find(|c| c.get("name").and_then(Value::as_str) == Some(container))
        .ok_or_else(|| format!("container {container:?} not found in the pod"))?;
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource: {resource}"))?;
    let limit = c.pointer(&format!("/resources/limits/{name}")).cloned();
    let set = match kind {
        "limits" => limit.clone(),
        "requests" => c
            .pointer(&format!("/resources/requests/{name}"))
            .cloned()
            .or(limit.clone()),
        _ => None,
    };
    // A limit that is not set is the node's allocatable amount; a request, zero.
    let amount = |node: &str| match (kind, set.clone()) {
        (_, Some(v)) => v,
        ("limits", None) => Value::from(node),
        _ => Value::from("0"),
    };
    let divisor = rf.get("divisor");
    match name {
        "cpu" => divide(&amount(facts.node_cpu), divisor, objects::quantity::cpu_millis, 1000),
        "memory" => divide(&amount(facts.node_memory), divisor, objects::quantity::whole_units, 1),
        "ephemeral-storage" => divide(&amount("0"), divisor, objects::quantity::whole_units, 1),
        _ => Err(format!("unsupported container resource: {resource}")),
    }
}

/// `amount / divisor`, rounded up, both read with `unit` (`divisor` defaults to `default`).
fn divide<E: std::fmt::Display>(
    amount: &Value,
    divisor: Option<&Value>,
    unit: fn(&Value) -> Result<i64, E>,
    default: i64,
) -> Result<String, String> {
    let n = unit(amount).map_err(|e| e.to_string())?;
    let div = divisor
        .map(|d| unit(d).map_err(|e| e.to_string()))
        .transpose()?
        .unwrap_or(default)
        .max(1);
    Ok(((n + div - 1) / div).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts() -> PodFacts<'static> {
        PodFacts {
            node_name: "node-1",
            host_ip: "127.0.0.1",
            pod_ip: "127.64.1.2",
            node_cpu: "4",
            node_memory: "8Gi",
        }
    }

    #[test]
    fn fields_and_maps() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1",
            "labels": {"b": "2", "a": "x\"y"}, "annotations": {"note": "hi"}}});
        let f = facts();
        assert_eq!(field_value(&pod, "metadata.name", &f).unwrap(), "p");
        assert_eq!(
            field_value(&pod, "metadata.labels", &f).unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert_eq!(field_value(&pod, "metadata.labels['b']", &f).unwrap(), "2");
        assert_eq!(field_value(&pod, "metadata.annotations['nope']", &f).unwrap(), "");
        assert_eq!(field_value(&pod, "status.podIP", &f).unwrap(), "127.64.1.2");
        assert_eq!(field_value(&pod, "spec.nodeName", &f).unwrap(), "node-1");
        assert!(field_value(&pod, "spec.bogus", &f).is_err());
    }

    #[test]
    fn resources_are_divided_and_rounded_up() {
        let pod = json!({"spec": {"containers": [{"name": "c",
            "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}, "requests": {"cpu": "100m"}}}]}});
        let f = facts();
        let r = |v: Value| resource_value(&pod, "c", &v, &f).unwrap();
        assert_eq!(r(json!({"resource": "limits.memory", "divisor": "1Mi"})), "64");
        assert_eq!(r(json!({"resource": "limits.memory"})), (64 * 1024 * 1024).to_string());
        assert_eq!(r(json!({"resource": "limits.cpu"})), "1");
        assert_eq!(r(json!({"resource": "limits.cpu", "divisor": "1m"})), "250");
        assert_eq!(r(json!({"resource": "requests.cpu", "divisor": "1m"})), "100");
        let bare = json!({"spec": {"containers": [{"name": "c"}]}});
        let v = resource_value(&bare, "c", &json!({"resource": "limits.cpu"}), &f).unwrap();
        assert_eq!(v, "4", "an unset limit is the node's allocatable");
        assert!(resource_value(&bare, "x", &json!({"resource": "limits.cpu"}), &f).is_err());
    }
}
