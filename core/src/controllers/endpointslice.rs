//! # The EndpointSlice controller (mirrors kube-controller-manager's `pkg/controller/endpointslice`)
//!
//! One Endpoints object per Service does not scale: a Service with 5 000 Pods has one huge
//! object, and every Pod that becomes ready rewrites all of it and sends all of it to every
//! node's kube-proxy. Kubernetes therefore writes the same information a second time, cut
//! into **EndpointSlices** (`discovery.k8s.io/v1`) of at most 100 endpoints each
//! (`--max-endpoints-per-slice`), and kube-proxy reads those:
//!
//! ```yaml
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata:
//!   name: web-x7k2q                   # generateName: web-
//!   labels:
//!     kubernetes.io/service-name: web # which Service the slice belongs to
//!     endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
//!   ownerReferences: [{kind: Service, name: web, controller: true, ...}]
//! addressType: IPv4
//! ports: [{name: http, port: 8080, protocol: TCP}]
//! endpoints:
//! - addresses: [127.64.1.5]
//!   conditions: {ready: true, serving: true, terminating: false}
//!   nodeName: node-1
//!   targetRef: {kind: Pod, name: web-7f9c-abcde, ...}
//! ```
//!
//! Unlike Endpoints, slices also list Pods that are **terminating**, with `ready: false`,
//! `terminating: true` and `serving` saying whether they still pass their readiness probe:
//! kube-proxy may keep sending to them while nothing else is left, so connections are not
//! dropped during a rollout. Pods whose `targetPort` resolves to different numbers go into
//! different slices (all endpoints of one slice share its `ports`).
//!
//! Each reconcile compares what should be listed with the Service's current slices and
//! changes as little as it can: endpoints stay in the slice they are in, new ones fill the
//! slices that change anyway and then any room left, and only then new slices are created;
//! emptied slices are deleted. A Service without any endpoint keeps one empty slice (the
//! "placeholder"). Slices carry an ownerReference to their Service, so the garbage
//! collector deletes them with it. Services without a selector are left alone: their slices
//! are written by hand.
//!
//! The controller reads its own writes back through the informer; until the cache shows
//! them, it waits instead of acting on an old picture (upstream's `EndpointSliceTracker`).
//!
//! Where kulisse differs: one address type (IPv4, as every kulisse address is); no topology
//! hints and no `endpoints.kubernetes.io/last-change-trigger-time` annotation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use super::endpoints::HEADLESS_LABEL;
use super::endpointutil::{
    EpPort, ServiceIndex, endpoint_ports, is_headless, is_pod_ready, node_name, pod_ip, pod_reference,
    service_selector, should_pod_be_in_endpoints, should_set_hostname, split_key,
};
use super::reconciler::{
    Action, Queue, ReconcileError, ReconcileReason, Reconciler, annotate_traceparent, enqueue_related,
    namespace_terminating, new_queue, traceparent_of,
};
use super::{Ctx, SharedInformers};
use crate::client::ClientError;
use crate::client::informer::{InformerEvent, key_of};
use crate::objects::{self, ResourceInfo};

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// How long to wait for the cache to show our own writes before trusting it anyway.
const CACHE_PATIENCE: Duration = Duration::from_secs(5);
/// The node label with the zone an endpoint is in.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The EndpointSlice resource.
pub fn slice_info() -> &'static ResourceInfo {
    objects::by_gvk("discovery.k8s.io/v1", "EndpointSlice").expect("EndpointSlice is a built-in kind")
}

/// The key (`namespace/service`) of the Service a slice belongs to, if it has one.
pub fn service_key_of(slice: &Value) -> Option<String> {
    let labels = objects::labels(slice);
    let svc = labels.get(SERVICE_NAME_LABEL).filter(|s| !s.is_empty())?;
    Some(format!("{}/{svc}", objects::namespace(slice).unwrap_or("")))
}

fn managed_by_us(slice: &Value) -> bool {
    objects::labels(slice).get(MANAGED_BY_LABEL).map(String::as_str) == Some(CONTROLLER_NAME)
}

/// The EndpointSlice controller. See the module documentation.
pub struct EndpointSliceController {
    ctx: Arc<Ctx>,
    index: ServiceIndex,
    written: Arc<Mutex<Written>>,
    stamped: Arc<Mutex<Stamped>>,
}

/// Service key → the traces this controller wrote its slices in lately (recorded before
/// each write, so the echo of a write is known even if it overtakes the answer; the API
/// server stamps its own span of the same trace on the slice).
type Stamped = HashMap<String, VecDeque<String>>;

/// The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> String {
    traceparent.split('-').nth(1).unwrap_or("").to_string()
}

/// How many recent traces per Service are remembered.
const STAMPED_KEPT: usize = 8;

/// Service key → slice name → the resourceVersion we wrote (`None`: we deleted it), and when.
type Written = HashMap<String, HashMap<String, (Option<u64>, Instant)>>;

/// Whether a slice event is the echo of this controller's own write (upstream's tracker:
/// such an event needs no sync, and queueing on it would attribute later changes to it).
fn own_write(written: &Mutex<Written>, stamped: &Mutex<Stamped>, key: &str, ev: &InformerEvent) -> bool {
    let slice = ev.object();
    if !matches!(ev, InformerEvent::Deleted(_))
        && let Some(tp) = traceparent_of(slice)
        && stamped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|s| s.contains(&trace_id(&tp)))
    {
        return true;
    }
    let written = written.lock().unwrap_or_else(|p| p.into_inner());
    let Some((rv, _)) = written.get(key).and_then(|w| w.get(objects::name(slice).unwrap_or(""))) else {
        return false;
    };
    match ev {
        InformerEvent::Deleted(_) => rv.is_none(),
        _ => rv.is_some() && *rv == revision_of(slice),
    }
}

/// Set up the controller: index Services and Pods, queue Services whose Pods or slices changed.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<EndpointSliceController>, Queue) {
    let queue = new_queue();
    let index = ServiceIndex::watch(informers, &queue);
    let written = Arc::new(Mutex::new(Written::new()));
    let stamped = Arc::new(Mutex::new(Stamped::new()));
    {
        let (queue, written, stamped) = (queue.clone(), written.clone(), stamped.clone());
        informers.endpointslices.on_event(move |ev| {
            let slice = ev.object();
            if matches!(ev, InformerEvent::Resync(_)) || !managed_by_us(slice) {
                return;
            }
            if let Some(key) = service_key_of(slice)
                && !own_write(&written, &stamped, &key, ev)
            {
                enqueue_related(&queue, key, "EndpointSlice", slice);
            }
        });
    }
    let controller = EndpointSliceController {
        ctx,
        index,
        written,
        stamped,
    };
    (Arc::new(controller), queue)
}

/// A stable identity for an endpoint: its first address and its Pod.
fn endpoint_id(ep: &Value) -> String {
    let addr = ep.pointer("/addresses/0").and_then(Value::as_str).unwrap_or("");
    let uid = ep.pointer("/targetRef/uid").and_then(Value::as_str).unwrap_or("");
    format!("{addr}/{uid}")
}

/// The endpoints that should be listed, grouped by the ports they offer; id → endpoint.
type Desired = BTreeMap<Vec<EpPort>, BTreeMap<String, Value>>;

/// Upstream's `podToEndpoint`: the Pod's address, its conditions, where it runs.
fn pod_endpoint(pod: &Value, svc: &Value, zone: Option<&str>) -> Option<Value> {
    let ip = pod_ip(pod)?;
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let serving = is_pod_ready(pod);
    let terminating = objects::deletion_timestamp(pod).is_some();
    // A terminating Pod is never "ready", unless the Service publishes unready Pods.
    let ready = publish_not_ready || (serving && !terminating);
    let mut ep = json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "targetRef": pod_reference(pod),
    });
    if let Some(node) = node_name(pod) {
        ep["nodeName"] = json!(node);
    }
    if let Some(zone) = zone {
        ep["zone"] = json!(zone);
    }
    if should_set_hostname(pod, svc) {
        ep["hostname"] = pod["spec"]["hostname"].clone();
    }
    Some(ep)
}

/// What the Service's slices should hold, from the Pods its selector matches.
fn desired_endpoints(svc: &Value, pods: &[Arc<Value>], zone_of: impl Fn(&str) -> Option<String>) -> Desired {
    let mut desired = Desired::new();
    for pod in pods.iter().filter(|p| should_pod_be_in_endpoints(p, true)) {
        let zone = node_name(pod).and_then(&zone_of);
        let Some(ep) = pod_endpoint(pod, svc, zone.as_deref()) else {
            continue;
        };
        let (ports, _) = endpoint_ports(svc, pod);
        desired
            .entry(ports.into_iter().collect())
            .or_default()
            .insert(endpoint_id(&ep), ep);
    }
    desired
}

/// A slice's ports, read back as the set they stand for.
fn slice_ports(slice: &Value) -> Vec<EpPort> {
    let mut ports: Vec<EpPort> = slice
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| EpPort {
            name: p.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            port: p.get("port").and_then(Value::as_i64).unwrap_or(0),
            protocol: p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
            app_protocol: p.get("appProtocol").and_then(Value::as_str).map(str::to_string),
        })
        .collect();
    ports.sort();
    ports
}

/// The ports as a slice writes them: the name always present (`""` when unnamed), as the
/// API server's defaulting stores it.
fn ports_json(ports: &[EpPort]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut v = p.to_json();
                v["name"] = json!(p.name);
                v
            })
            .collect(),
    )
}

/// One slice the Service should have after this reconcile.
#[derive(Debug, Clone)]
pub struct SliceWant {
    /// The slice it is (`None`: a new one).
    pub existing: Option<Arc<Value>>,
    pub ports: Vec<EpPort>,
    /// Sorted by endpoint id.
    pub endpoints: Vec<Value>,
}

/// The slices to keep or create, and the names of those to delete.
#[derive(Debug, Default)]
pub struct Plan {
    pub slices: Vec<SliceWant>,
    pub delete: Vec<String>,
}

fn sorted(mut eps: Vec<Value>) -> Vec<Value> {
    eps.sort_by_key(endpoint_id);
    eps
}

/// Keep every existing slice's endpoints that are still wanted (in their new form), drop
/// the rest; return the kept slices and what is still to be placed.
fn keep_existing(existing: Vec<Arc<Value>>, want: &mut BTreeMap<String, Value>) -> Vec<(SliceWant, bool)> {
    let mut kept = Vec::new();
    for slice in existing {
        let before: Vec<Value> = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let now: Vec<Value> = before.iter().filter_map(|ep| want.remove(&endpoint_id(ep))).collect();
        let changed = now != before;
        let want_slice = SliceWant {
            ports: slice_ports(&slice),
            existing: Some(slice),
            endpoints: now,
        };
        kept.push((want_slice, changed));
    }
    kept
}

/// Upstream's `reconcileByPortMapping`, simplified: endpoints stay where they are; new ones
/// go first into slices that change anyway, then into any slice with room, then into new
/// slices of at most `max`.
fn plan_ports(ports: &[EpPort], existing: Vec<Arc<Value>>, mut want: BTreeMap<String, Value>, max: usize) -> Plan {
    let mut kept = keep_existing(existing, &mut want);
    let mut rest: Vec<Value> = want.into_values().collect();
    kept.sort_by_key(|(_, changed)| !*changed); // changing slices first (stable: by name)
    for (slice, changed) in kept.iter_mut() {
        while slice.endpoints.len() < max
            && let Some(ep) = rest.pop()
        {
            slice.endpoints.push(ep);
            *changed = true;
        }
    }
    let mut plan = Plan::default();
    for (mut slice, _) in kept {
        if slice.endpoints.is_empty() {
            plan.delete.push(
                objects::name(slice.existing.as_deref().unwrap_or(&Value::Null))
                    .unwrap_or("")
                    .to_string(),
            );
        } else {
            slice.endpoints = sorted(slice.endpoints);
            plan.slices.push(slice);
        }
    }
    let mut rest = sorted(rest);
    while !rest.is_empty() {
        let chunk: Vec<Value> = rest.drain(..rest.len().min(max.max(1))).collect();
        plan.slices.push(SliceWant {
            existing: None,
            ports: ports.to_vec(),
            endpoints: chunk,
        });
    }
    plan
}

/// Which slices a Service should have: per set of ports, [`plan_ports`]; slices whose ports
/// nobody offers any more are deleted; without any endpoint one empty placeholder stays.
pub fn plan(desired: Desired, existing: Vec<Arc<Value>>, max: usize) -> Plan {
    let mut by_ports: BTreeMap<Vec<EpPort>, Vec<Arc<Value>>> = BTreeMap::new();
    let mut existing = existing;
    existing.sort_by(|a, b| objects::name(a).cmp(&objects::name(b)));
    for slice in existing {
        by_ports.entry(slice_ports(&slice)).or_default().push(slice);
    }
    let mut plan = Plan::default();
    for (ports, want) in desired {
        let sub = plan_ports(&ports, by_ports.remove(&ports).unwrap_or_default(), want, max);
        plan.slices.extend(sub.slices);
        plan.delete.extend(sub.delete);
    }
    let mut unused: Vec<Arc<Value>> = by_ports.into_values().flatten().collect();
    if plan.slices.is_empty() {
        // The placeholder: reuse an empty slice if there is one, else create one.
        let reuse = unused
            .iter()
            .position(|s| slice_ports(s).is_empty())
            .map(|i| unused.remove(i));
        plan.delete
            .retain(|n| Some(n.as_str()) != reuse.as_deref().and_then(objects::name));
        plan.slices.push(SliceWant {
            existing: reuse,
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    plan.delete
        .extend(unused.iter().filter_map(|s| objects::name(s)).map(str::to_string));
    plan.delete.sort();
    plan.delete.dedup();
    plan
}

/// The labels of a Service's slices: the Service's own, plus upstream's reserved ones.
fn slice_labels(svc: &Value) -> BTreeMap<String, String> {
    let mut labels = objects::labels(svc);
    labels.remove(HEADLESS_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), objects::name(svc).unwrap_or("").into());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn owner_reference(svc: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "name": objects::name(svc).unwrap_or(""), "uid": objects::uid(svc).unwrap_or(""),
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// The slice object to write for `want` (a new one, or the existing one updated); `None`
/// when the existing one already is exactly that.
fn slice_object(svc: &Value, want: &SliceWant, traceparent: Option<&str>) -> Option<Value> {
    let labels = json!(slice_labels(svc));
    let owners = json!([owner_reference(svc)]);
    let mut slice = match &want.existing {
        Some(cur) => {
            let same = cur.get("endpoints").cloned().unwrap_or(json!([])) == json!(want.endpoints)
                && slice_ports(cur) == want.ports
                && cur.pointer("/metadata/labels") == Some(&labels)
                && cur.pointer("/metadata/ownerReferences") == Some(&owners);
            if same {
                return None;
            }
            (**cur).clone()
        }
        None => json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "generateName": format!("{}-", objects::name(svc).unwrap_or("")),
                "namespace": objects::namespace(svc).unwrap_or(""),
            },
            "addressType": "IPv4",
        }),
    };
    slice["endpoints"] = json!(want.endpoints);
    slice["ports"] = ports_json(&want.ports);
    let meta = objects::meta_mut(&mut slice)?;
    meta.insert("labels".into(), labels);
    meta.insert("ownerReferences".into(), owners);
    if let Some(tp) = traceparent {
        annotate_traceparent(meta, tp);
    }
    Some(slice)
}

/// What one sync wrote, for the span.
#[derive(Default)]
struct Wrote {
    created: usize,
    updated: usize,
    deleted: usize,
    /// Slice name → the resourceVersion written (`None`: deleted).
    versions: HashMap<String, Option<u64>>,
}

fn revision_of(obj: &Value) -> Option<u64> {
    objects::resource_version(obj).and_then(|rv| rv.parse().ok())
}

impl EndpointSliceController {
    /// Whether the cache shows every slice write of earlier syncs of `key` (else the next
    /// sync would act on an old picture and, say, create a slice twice).
    fn cache_current(&self, key: &str) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(slices) = written.get_mut(key) else {
            return true;
        };
        let ns = split_key(key).0;
        let cache = &self.ctx.caches.endpointslices;
        slices.retain(|name, (rv, when)| {
            if when.elapsed() > CACHE_PATIENCE {
                return false; // changed again by someone else since: the cache has moved on
            }
            let cached = cache.get(&format!("{ns}/{name}"));
            match (rv, cached) {
                (None, None) => false,
                (Some(want), Some(c)) => revision_of(&c).is_none_or(|have| have < *want),
                _ => true,
            }
        });
        let current = slices.is_empty();
        if current {
            written.remove(key);
        }
        current
    }

    fn remember(&self, key: &str, versions: HashMap<String, Option<u64>>) {
        if versions.is_empty() {
            return;
        }
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slices = written.entry(key.to_string()).or_default();
        slices.extend(versions.into_iter().map(|(name, rv)| (name, (rv, now))));
    }

    /// The Service's current slices, as this controller manages them.
    fn current_slices(&self, ns: &str, name: &str) -> Vec<Arc<Value>> {
        self.ctx.caches.endpointslices.filter(|s| {
            objects::namespace(s) == Some(ns)
                && managed_by_us(s)
                && objects::labels(s).get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
        })
    }

    fn zone_of(&self, node: &str) -> Option<String> {
        let node = self.ctx.caches.nodes.get(node)?;
        objects::labels(&node).get(ZONE_LABEL).cloned()
    }

    /// Carry out the plan: creates, updates, deletes. Stops at the first error.
    async fn write(&self, svc: &Value, plan: &Plan, out: &mut Wrote) -> Result<(), ClientError> {
        let (ns, info, client) = (objects::namespace(svc).unwrap_or(""), slice_info(), &self.ctx.client);
        let traceparent = kulisse_traces::propagation::traceparent_of_current();
        if let Some(tp) = &traceparent {
            let mut stamped = self.stamped.lock().unwrap_or_else(|p| p.into_inner());
            let recent = stamped.entry(key_of(svc)).or_default();
            if !recent.contains(&trace_id(tp)) {
                recent.push_back(trace_id(tp));
                if recent.len() > STAMPED_KEPT {
                    recent.pop_front();
                }
            }
        }
        for want in &plan.slices {
            let Some(obj) = slice_object(svc, want, traceparent.as_deref()) else {
                continue;
            };
            let stored = match &want.existing {
                None => client.create(info, Some(ns), &obj).await?,
                Some(cur) => {
                    client
                        .replace(info, Some(ns), objects::name(cur).unwrap_or(""), None, &obj)
                        .await?
                }
            };
            if want.existing.is_none() {
                out.created += 1;
            } else {
                out.updated += 1;
            }
            let name = objects::name(&stored).unwrap_or("").to_string();
            out.versions.insert(name, revision_of(&stored));
        }
        for name in &plan.delete {
            // Known before the request: its echo may overtake the answer.
            self.remember(&key_of(svc), HashMap::from([(name.clone(), None)]));
            match client.delete(info, Some(ns), name, None).await {
                Ok(_) => {}
                Err(e) if e.code() == Some(404) => {}
                Err(e) => return Err(e),
            }
            out.deleted += 1;
            out.versions.insert(name.clone(), None);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Reconciler for EndpointSliceController {
    fn name(&self) -> &'static str {
        "endpointslice"
    }

    async fn reconcile(&self, key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let Some(svc) = self.ctx.caches.services.get(key) else {
            // The garbage collector deletes its slices; forget what we wrote for it.
            self.written.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            self.stamped.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            return Ok(Action::await_change());
        };
        let Some(selector) = service_selector(&svc).filter(|_| objects::deletion_timestamp(&svc).is_none()) else {
            return Ok(Action::await_change()); // slices written by hand, or the Service is going
        };
        if !self.cache_current(key) {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let pods = self.index.pods_matching(&self.ctx.caches.pods, ns, &selector);
        let desired = desired_endpoints(&svc, &pods, |node| self.zone_of(node));
        let wanted: usize = desired.values().map(BTreeMap::len).sum();
        let plan = plan(
            desired,
            self.current_slices(ns, name),
            self.ctx.options.max_endpoints_per_slice,
        );
        let span = info_span!(
            "controller.sync_endpointslices",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Service",
            "k8s.namespace" = ns,
            "k8s.name" = name,
            "endpointslices.endpoints" = wanted,
            "endpointslices.slices" = plan.slices.len(),
            "endpointslices.created" = tracing::field::Empty,
            "endpointslices.updated" = tracing::field::Empty,
            "endpointslices.deleted" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        let mut out = Wrote::default();
        let result = self.write(&svc, &plan, &mut out).instrument(span.clone()).await;
        span.record("endpointslices.created", out.created);
        span.record("endpointslices.updated", out.updated);
        span.record("endpointslices.deleted", out.deleted);
        self.remember(key, std::mem::take(&mut out.versions));
        match result {
            Ok(()) => Ok(Action::await_change()),
            Err(e) if namespace_terminating(&e) => Ok(Action::await_change()),
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", e.to_string().as_str());
                Err(ReconcileError(format!(
                    "could not write the EndpointSlices of the Service {key} ({wanted} endpoints): {e}"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(i: usize, ready: bool) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": format!("web-{i}"), "namespace": "default", "uid": format!("uid-{i:04}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": format!("127.64.{}.{}", i / 200, i % 200 + 1), "phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
    }

    fn service() -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
        })
    }

    fn desired(pods: &[Arc<Value>]) -> Desired {
        desired_endpoints(&service(), pods, |_| None)
    }

    /// Store the plan's slices as the API server would, named `web-0`, `web-1`, ...
    fn stored(plan: &Plan) -> Vec<Arc<Value>> {
        plan.slices
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut s = slice_object(&service(), w, None).expect("a new slice");
                s["metadata"]["name"] = json!(format!("web-{i}"));
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn two_hundred_fifty_endpoints_make_three_slices() {
        let pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
        let p = plan(desired(&pods), Vec::new(), MAX_ENDPOINTS_PER_SLICE);
        let sizes: Vec<usize> = p.slices.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert!(p.delete.is_empty());
        let s = slice_object(&service(), &p.slices[0], None).unwrap();
        assert_eq!(s["metadata"]["generateName"], "web-");
        assert_eq!(s["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        assert_eq!(s["metadata"]["labels"][MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(s["metadata"]["labels"]["tier"], "front");
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(s["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(s["ports"], json!([{"name": "http", "port": 8080, "protocol": "TCP"}]));
    }

    #[test]
    fn changes_stay_in_the_slices_they_touch() {
        let pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
        let existing = stored(&plan(desired(&pods), Vec::new(), MAX_ENDPOINTS_PER_SLICE));
        // Unchanged: nothing to write.
        let same = plan(desired(&pods), existing.clone(), MAX_ENDPOINTS_PER_SLICE);
        assert!(same.slices.iter().all(|w| slice_object(&service(), w, None).is_none()));
        // Ten pods of one slice go, five come: the new ones fill the slice that lost pods.
        let gone: Vec<Value> = existing[1]["endpoints"].as_array().unwrap()[..10]
            .iter()
            .map(|e| e["targetRef"]["name"].clone())
            .collect();
        let mut fewer: Vec<_> = pods
            .iter()
            .filter(|p| !gone.contains(&p["metadata"]["name"]))
            .cloned()
            .collect();
        fewer.extend((1000..1005).map(|i| pod(i, true)));
        let p = plan(desired(&fewer), existing, MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(p.slices.len(), 3, "no new slice");
        let writes = p
            .slices
            .iter()
            .filter(|w| slice_object(&service(), w, None).is_some())
            .count();
        assert_eq!(writes, 1, "only the slice that lost pods is written");
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let mut terminating = (*pod(2, true)).clone();
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let d = desired(&[pod(0, true), pod(1, false), Arc::new(terminating)]);
        let eps: Vec<&Value> = d.values().flat_map(|m| m.values()).collect();
        let cond = |name: &str| eps.iter().find(|e| e["targetRef"]["name"] == name).unwrap()["conditions"].clone();
        assert_eq!(
            cond("web-0"),
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(
            cond("web-1"),
            json!({"ready": false, "serving": false, "terminating": false})
        );
        assert_eq!(
            cond("web-2"),
            json!({"ready": false, "serving": true, "terminating": true})
        );
        assert_eq!(eps[0]["nodeName"], "node-1");
    }

    #[test]
    fn no_endpoints_leave_one_placeholder() {
        let p = plan(Desired::new(), Vec::new(), MAX_ENDPOINTS_PER_SLICE);
        assert_eq!(p.slices.len(), 1);
        assert!(p.slices[0].endpoints.is_empty());
        let existing = stored(&plan(desired(&[pod(0, true), pod(1, true)]), Vec::new(), 1));
        assert_eq!(existing.len(), 2);
        let p = plan(Desired::new(), existing, 1);
        assert_eq!(p.slices.len(), 1, "{p:?}");
        assert_eq!(p.delete.len(), 2, "the old slices go, a new placeholder comes: {p:?}");
        assert!(p.slices[0].existing.is_none());
    }
}
