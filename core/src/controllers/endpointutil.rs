//! # What the Endpoints and EndpointSlice controllers share (mirrors `pkg/controller/util/endpoint`)
//!
//! Both controllers answer the same question, "which Pods are behind this Service right
//! now, and on which ports?", and only write the answer down differently: one Endpoints
//! object per Service (the original API, kept for old clients) or a set of EndpointSlices
//! (what kube-proxy reads). The answering is here, once:
//!
//! - [`ServiceIndex`] keeps the Services' selectors and the Pod names per namespace, fed by
//!   the informers, and queues a Service when one of its Pods changed in a way that matters.
//! - [`should_pod_be_in_endpoints`], [`is_pod_ready`] and [`should_set_hostname`] decide
//!   whether and how a Pod is listed (client-go's `podutil` and upstream's `endpointutil`).
//! - [`endpoint_ports`] resolves each Service port's `targetPort` on one Pod ([`find_port`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::SharedInformers;
use super::reconciler::{Queue, enqueue_own, enqueue_related};
pub use super::replicaset::is_pod_ready;
use crate::client::informer::{Cache, InformerEvent};
use crate::objects;

/// What the informers tell us, arranged for quick lookups.
#[derive(Default)]
struct Index {
    /// namespace → service name → selector (only Services that have a selector).
    selectors: HashMap<String, HashMap<String, BTreeMap<String, String>>>,
    /// namespace → names of the Pods in it.
    pods: HashMap<String, HashSet<String>>,
}

impl Index {
    /// The keys of the Services in `ns` whose selector matches `labels`.
    fn services_for(&self, ns: &str, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.selectors
            .get(ns)
            .map(|svcs| {
                svcs.iter()
                    .filter(|(_, sel)| selector_matches(sel, labels))
                    .map(|(name, _)| format!("{ns}/{name}"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn service_changed(&mut self, ev: &InformerEvent) {
        let svc = ev.object();
        let ns = objects::namespace(svc).unwrap_or("").to_string();
        let name = objects::name(svc).unwrap_or("").to_string();
        let selectors = self.selectors.entry(ns.clone()).or_default();
        match (ev, service_selector(svc)) {
            (InformerEvent::Deleted(_), _) | (_, None) => {
                selectors.remove(&name);
            }
            (_, Some(sel)) => {
                selectors.insert(name, sel);
            }
        }
        if selectors.is_empty() {
            self.selectors.remove(&ns);
        }
    }

    /// Record a Pod event; returns the keys of the Services it concerns.
    fn pod_changed(&mut self, ev: &InformerEvent) -> BTreeSet<String> {
        let pod = ev.object();
        let ns = objects::namespace(pod).unwrap_or("").to_string();
        let name = objects::name(pod).unwrap_or("").to_string();
        let mut keys = BTreeSet::new();
        match ev {
            InformerEvent::Added(_) => {
                self.pods.entry(ns.clone()).or_default().insert(name);
                keys.extend(self.services_for(&ns, &objects::labels(pod)));
            }
            InformerEvent::Deleted(_) => {
                if let Some(set) = self.pods.get_mut(&ns) {
                    set.remove(&name);
                    if set.is_empty() {
                        self.pods.remove(&ns);
                    }
                }
                keys.extend(self.services_for(&ns, &objects::labels(pod)));
            }
            InformerEvent::Modified { old, new } => {
                self.pods.entry(ns.clone()).or_default().insert(name);
                if pod_fingerprint(old) != pod_fingerprint(new) {
                    keys.extend(self.services_for(&ns, &objects::labels(old)));
                    keys.extend(self.services_for(&ns, &objects::labels(new)));
                }
            }
            // The Services' own resync covers their Pods.
            InformerEvent::Resync(_) => {}
        }
        keys
    }
}

/// Which Services select which Pods, kept current by the informers. Cheap to clone.
#[derive(Clone, Default)]
pub struct ServiceIndex {
    inner: Arc<Mutex<Index>>,
}

impl ServiceIndex {
    /// Index Services and Pods, and queue on `queue` every Service whose own object changed
    /// or one of whose Pods changed in a way that matters to its endpoints.
    pub fn watch(informers: &mut SharedInformers, queue: &Queue) -> ServiceIndex {
        let index = ServiceIndex::default();
        {
            let (queue, index) = (queue.clone(), index.clone());
            informers.services.on_event(move |ev| {
                index.lock().service_changed(ev);
                enqueue_own(&queue, ev);
            });
        }
        {
            let (queue, index) = (queue.clone(), index.clone());
            informers.pods.on_event(move |ev| {
                let keys = index.lock().pod_changed(ev);
                for key in keys {
                    enqueue_related(&queue, key, "Pod", ev.object());
                }
            });
        }
        index
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the Service `ns/name` has a selector (so its endpoints are the controllers').
    pub fn has_selector(&self, ns: &str, name: &str) -> bool {
        self.lock().selectors.get(ns).is_some_and(|s| s.contains_key(name))
    }

    /// The cached Pods of `ns` that `selector` matches.
    pub fn pods_matching(&self, pods: &Cache, ns: &str, selector: &BTreeMap<String, String>) -> Vec<Arc<Value>> {
        let names: Vec<String> = self
            .lock()
            .pods
            .get(ns)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        names
            .into_iter()
            .filter_map(|n| pods.get(&format!("{ns}/{n}")))
            .filter(|p| selector_matches(selector, &objects::labels(p)))
            .collect()
    }
}

/// A Service selector (a plain map) matches when every entry is among the labels.
pub fn selector_matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `spec.selector` of a Service; `None` when missing or empty (a Service without selector,
/// whose endpoints are managed by hand).
pub fn service_selector(svc: &Value) -> Option<BTreeMap<String, String>> {
    let sel: BTreeMap<String, String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)?
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect();
    (!sel.is_empty()).then_some(sel)
}

/// `namespace/name` → (`namespace`, `name`).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Whether a Service is headless (`clusterIP: None`).
pub fn is_headless(svc: &Value) -> bool {
    svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None")
}

/// What about a Pod matters to its Services' endpoints: when none of it changed, a Pod
/// update (a new container restart count, say) does not queue any Service.
fn pod_fingerprint(pod: &Value) -> Value {
    json!([
        pod.pointer("/metadata/labels"),
        pod.pointer("/metadata/uid"),
        pod.pointer("/metadata/deletionTimestamp"),
        pod.pointer("/spec/nodeName"),
        pod.pointer("/spec/hostname"),
        pod.pointer("/spec/subdomain"),
        pod.pointer("/spec/containers"),
        pod.pointer("/status/podIP"),
        pod.pointer("/status/phase"),
        is_pod_ready(pod),
    ])
}

/// The Pod's IP, if it has one yet.
pub fn pod_ip(pod: &Value) -> Option<&str> {
    pod.pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Whether a Pod belongs among a Service's endpoints at all (upstream's
/// `ShouldPodBeInEndpoints`): it has an IP, has not finished (phase `Succeeded` or
/// `Failed`), and, unless `include_terminating`, is not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    pod_ip(pod).is_some()
        && phase != "Succeeded"
        && phase != "Failed"
        && (include_terminating || objects::deletion_timestamp(pod).is_none())
}

/// Whether the endpoint gets the Pod's `hostname` (DNS names of a headless Service's Pods):
/// the Pod names the Service as its `subdomain`, in the same namespace.
pub fn should_set_hostname(pod: &Value, svc: &Value) -> bool {
    let hostname = pod.pointer("/spec/hostname").and_then(Value::as_str).unwrap_or("");
    let subdomain = pod.pointer("/spec/subdomain").and_then(Value::as_str).unwrap_or("");
    !hostname.is_empty()
        && subdomain == objects::name(svc).unwrap_or("")
        && objects::namespace(pod) == objects::namespace(svc)
}

/// One endpoint port: what a Service port resolves to on one Pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpPort {
    pub name: String,
    pub port: i64,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

impl EpPort {
    /// The port as Endpoints and EndpointSlices write it (`name` left out when empty).
    pub fn to_json(&self) -> Value {
        let mut p = json!({"port": self.port, "protocol": self.protocol});
        if !self.name.is_empty() {
            p["name"] = json!(self.name);
        }
        if let Some(a) = &self.app_protocol {
            p["appProtocol"] = json!(a);
        }
        p
    }
}

/// Resolve a Service port's `targetPort` on `pod` (client-go's `podutil.FindPort`): a
/// number (or nothing: the Service `port`) as it is; a name by the Pod's container ports.
pub fn find_port(pod: &Value, svc_port: &Value) -> Result<i64, String> {
    let protocol = svc_port.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
    match svc_port.get("targetPort") {
        Some(Value::String(name)) if !name.is_empty() => {
            let containers = ["containers", "initContainers"].into_iter().flat_map(|field| {
                pod.pointer(&format!("/spec/{field}"))
                    .and_then(Value::as_array)
                    .map(|v| v.as_slice())
                    .unwrap_or(&[])
            });
            for c in containers {
                for p in c
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                {
                    let p_proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    if p.get("name").and_then(Value::as_str) == Some(name.as_str())
                        && p_proto == protocol
                        && let Some(n) = p.get("containerPort").and_then(Value::as_i64)
                    {
                        return Ok(n);
                    }
                }
            }
            Err(format!(
                "the Pod has no container port named {name:?} with protocol {protocol} (targetPort of the Service port)"
            ))
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n > 0) => Ok(n.as_i64().unwrap_or(0)),
        _ => svc_port
            .get("port")
            .and_then(Value::as_i64)
            .ok_or_else(|| "the Service port has no port number".to_string()),
    }
}

/// The Service's ports as `pod` offers them; the second value counts the Service ports
/// whose `targetPort` the Pod cannot resolve (they are left out).
pub fn endpoint_ports(svc: &Value, pod: &Value) -> (BTreeSet<EpPort>, usize) {
    let mut ports = BTreeSet::new();
    let mut unresolved = 0;
    for sp in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        match find_port(pod, sp) {
            Ok(port) => {
                ports.insert(EpPort {
                    name: sp.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    port,
                    protocol: sp.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
                    app_protocol: sp.get("appProtocol").and_then(Value::as_str).map(str::to_string),
                });
            }
            Err(e) => {
                unresolved += 1;
                tracing::debug!(pod = objects::name(pod).unwrap_or(""), "endpoints: {e}");
            }
        }
    }
    (ports, unresolved)
}

/// The `targetRef` of an endpoint: the Pod behind it.
pub fn pod_reference(pod: &Value) -> Value {
    json!({
        "kind": "Pod",
        "namespace": objects::namespace(pod).unwrap_or(""),
        "name": objects::name(pod).unwrap_or(""),
        "uid": objects::uid(pod).unwrap_or(""),
    })
}

/// The node a Pod runs on, if it is bound.
pub fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}
