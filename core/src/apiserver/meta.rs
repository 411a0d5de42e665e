//! # Server-owned metadata (mirrors the API server's `rest.BeforeCreate` / `BeforeUpdate`)
//!
//! Some fields of every object are not yours to set: the API server owns them.
//!
//! - `metadata.uid`: a fresh UUID at creation. A deleted-and-recreated object with the same
//!   name is a *different* object, and its uid tells them apart (ownerReferences use it).
//! - `metadata.creationTimestamp`: when the server accepted the create.
//! - `metadata.generation`: starts at 1 and goes up by one each time the *desired state*
//!   (`spec`, or anything that is not metadata or status) changes. Controllers report the
//!   generation they have acted on in `status.observedGeneration`.
//! - `metadata.resourceVersion`: the store revision; set by [`super::storage`] on read.
//!
//! Which kinds track a generation and which have a status subresource is the resource
//! registry's to say ([`ResourceInfo::tracks_generation`], [`Subresource::Status`]).
//!
//! The **status subresource** splits who may write what: a user's update of a Deployment
//! cannot change its `status` (the controller owns it), and an update of `/status` can
//! change nothing but `status`.

use serde_json::{Map, Value, json};

use crate::objects::{self, ResourceInfo, Subresource};

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Now, in the RFC 3339 form Kubernetes uses (`2026-11-26T21:15:38Z`).
pub fn now_rfc3339() -> String {
    crate::objects::time::now()
}

/// Fill in the server-owned fields of an object about to be created.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value, namespace: Option<&str>) {
    let meta = meta_mut(obj);
    meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    match namespace {
        Some(ns) if info.namespaced => {
            meta.insert("namespace".into(), Value::String(ns.to_string()));
        }
        _ => {
            meta.remove("namespace");
        }
    }
    if info.tracks_generation {
        meta.insert("generation".into(), json!(1));
    }
    if info.kind == "Namespace" {
        require_namespace_finalizer(obj);
    }
    // A new object's status is the server's to start, not the client's to claim.
    if info.has(Subresource::Status) {
        let initial = initial_status(info, obj);
        match initial {
            Some(status) => obj["status"] = status,
            None => {
                if let Some(map) = obj.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
}

/// Every new namespace carries the finalizer `kubernetes` in `spec.finalizers` (upstream's
/// namespace strategy adds it on create): the namespace controller removes it through
/// `/finalize` once it has deleted everything inside, and only then the namespace goes.
fn require_namespace_finalizer(ns: &mut Value) {
    if !ns.is_object() {
        return;
    }
    if !ns.get("spec").is_some_and(Value::is_object) {
        ns["spec"] = json!({});
    }
    let finalizers = &mut ns["spec"]["finalizers"];
    if !finalizers.is_array() {
        *finalizers = json!([]);
    }
    if let Some(list) = finalizers.as_array_mut()
        && !list.iter().any(|f| f.as_str() == Some(objects::NAMESPACE_FINALIZER))
    {
        list.push(json!(objects::NAMESPACE_FINALIZER));
    }
}

fn initial_status(info: &ResourceInfo, obj: &Value) -> Option<Value> {
    match info.kind {
        "Pod" => Some(json!({"phase": "Pending", "qosClass": qos_class(obj)})),
        "Namespace" => Some(json!({"phase": "Active"})),
        "Service" => Some(json!({"loadBalancer": {}})),
        // Nodes report their own status (the kubelet registers them with it).
        "Node" => obj.get("status").cloned(),
        _ => Some(json!({})),
    }
}

/// A pod's Quality of Service class, as the API server computes it: `Guaranteed` when every
/// container's CPU and memory limits equal its requests, `BestEffort` when no container
/// sets any, `Burstable` otherwise. The kubelet uses it to pick whom to evict first.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    let Some(containers) = containers else {
        return "BestEffort";
    };
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        if requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Carry the server-owned fields from the stored object `old` onto the replacement `new`,
/// and bump `generation` when the desired state changed.
///
/// `subresource == Some("status")`: only `status` may change; everything else is taken
/// from `old`. Otherwise, for kinds with a status subresource, `status` is taken from `old`.
/// A namespace's `spec.finalizers` change only through `/finalize`, which changes nothing else.
pub fn prepare_update(info: &ResourceInfo, old: &Value, new: &mut Value, subresource: Option<&str>) {
    if info.kind == "Namespace" && new.is_object() {
        let keep_finalizers = if subresource == Some("finalize") { &*new } else { old };
        let finalizers = keep_finalizers.pointer("/spec/finalizers").cloned();
        if subresource == Some("finalize") {
            *new = old.clone();
        }
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        match (finalizers, new["spec"].as_object_mut()) {
            (Some(f), Some(spec)) => {
                spec.insert("finalizers".into(), f);
            }
            (None, Some(spec)) => {
                spec.remove("finalizers");
            }
            _ => {}
        }
        if subresource == Some("finalize") {
            return;
        }
    }
    if subresource == Some("status") {
        let status = new.get("status").cloned();
        let mut merged = old.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        // Metadata changes through /status are limited to what a status writer owns.
        *new = merged;
        return;
    }
    if info.has(Subresource::Status) && info.kind != "Node" {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = meta_mut(new);
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if info.tracks_generation {
        let old_gen = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
        let generation = if desired_state_changed(old, new) {
            old_gen + 1
        } else {
            old_gen
        };
        meta_mut(new).insert("generation".into(), json!(generation));
    }
}

/// Did anything other than `metadata` and `status` change?
pub fn desired_state_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.remove("metadata");
        m.remove("status");
        m
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_finalizers_change_only_through_finalize() {
        let info = objects::by_gvk("v1", "Namespace").unwrap();
        let mut ns = json!({"metadata": {"name": "shop"}, "spec": {"finalizers": ["example.com/x"]}});
        prepare_create(info, &mut ns, None);
        assert_eq!(ns["spec"]["finalizers"], json!(["example.com/x", "kubernetes"]));
        let mut put = ns.clone();
        put["spec"]["finalizers"] = json!([]);
        put["metadata"]["labels"] = json!({"team": "a"});
        let mut plain = put.clone();
        prepare_update(info, &ns, &mut plain, None);
        assert_eq!(
            plain["spec"]["finalizers"], ns["spec"]["finalizers"],
            "a plain update keeps them"
        );
        assert_eq!(plain["metadata"]["labels"]["team"], "a");
        let mut finalize = put;
        prepare_update(info, &ns, &mut finalize, Some("finalize"));
        assert_eq!(finalize["spec"]["finalizers"], json!([]));
        assert!(
            finalize["metadata"].get("labels").is_none(),
            "finalize changes nothing else"
        );
    }

    #[test]
    fn qos_classes() {
        let none = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert_eq!(qos_class(&none), "BestEffort");
        let equal =
            json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&equal), "Guaranteed");
        let partial = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&partial), "Burstable");
    }

    #[test]
    fn generation_moves_only_with_desired_state() {
        let old = json!({"metadata": {"generation": 3, "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        let relabelled = json!({"metadata": {"labels": {"a": "c"}}, "spec": {"replicas": 1}});
        let scaled = json!({"metadata": {}, "spec": {"replicas": 2}});
        assert!(!desired_state_changed(&old, &relabelled));
        assert!(desired_state_changed(&old, &scaled));
    }
}

/// The annotation in which the API server records the trace context of the write.
pub const TRACEPARENT_ANNOTATION: &str = kulisse_traces::propagation::TRACEPARENT_ANNOTATION;

/// Record the current span's W3C traceparent on the object (annotation
/// `kulisse.dev/traceparent`). Whoever reacts to this write — a controller, the scheduler,
/// a kubelet — continues the trace from here. Without a current trace nothing changes.
pub fn stamp_traceparent(obj: &mut Value) {
    let Some(tp) = kulisse_traces::propagation::traceparent_of_current() else {
        return;
    };
    let meta = meta_mut(obj);
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta.insert("annotations".into(), json!({}));
    }
    if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        a.insert(TRACEPARENT_ANNOTATION.into(), Value::String(tp));
    }
}

/// A copy without the bookkeeping that changes on every write (resourceVersion,
/// managedFields times, the traceparent annotation): what "did anything change?" compares.
pub fn without_bookkeeping(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        if let Some(Value::Array(entries)) = m.get_mut("managedFields") {
            for e in entries {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        let empty = match m.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(a) => {
                a.remove(TRACEPARENT_ANNOTATION);
                a.is_empty()
            }
            None => false,
        };
        if empty {
            m.remove("annotations");
        }
    }
    v
}
