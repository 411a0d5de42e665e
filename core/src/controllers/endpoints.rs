//! # The Endpoints controller (mirrors kube-controller-manager's `pkg/controller/endpoint`)
//!
//! A Service is a stable name and address for a changing set of Pods. The Service itself
//! only holds a **selector** (`app: web`); *which* Pods are behind it right now is written
//! down by this controller in an **Endpoints** object of the same name:
//!
//! ```yaml
//! kind: Endpoints
//! metadata: {name: web, namespace: default}
//! subsets:
//! - addresses:                      # ready Pods: traffic goes here
//!   - ip: 127.64.1.5
//!     nodeName: node-1
//!     targetRef: {kind: Pod, namespace: default, name: web-7f9c-abcde, uid: ...}
//!   notReadyAddresses: [...]        # running but not (yet) Ready: no traffic
//!   ports:
//!   - {name: http, port: 8080, protocol: TCP}
//! ```
//!
//! For every Service with a selector the controller lists the Pods in the Service's
//! namespace that match it and have an IP (`status.podIP`), puts Ready ones into
//! `addresses` and the others into `notReadyAddresses`, and resolves each Service port's
//! `targetPort`: a number is used as it is, a *name* (`targetPort: http`) is looked up among
//! the Pod's `containerPort`s, so different Pods may even listen on different numbers.
//! Addresses that offer the same ports are grouped into one subset, and everything is
//! sorted, so the same Pods always give the same object and an unchanged set of Pods causes
//! no write at all. kube-proxy (see [`crate::proxy`]) watches Endpoints and turns the ready
//! addresses into forwarding rules.
//!
//! Services *without* a selector are left alone: their Endpoints are written by hand (that is
//! how a Service can point at something outside the cluster). When a Service is deleted, its
//! Endpoints are deleted too.
//!
//! To know which Services to look at when a Pod changes, the controller keeps a small index
//! of the Services' selectors per namespace, and of the Pod names per namespace, both fed by
//! the informers: a Pod event only checks the Services of the Pod's own namespace.
//! (Kubernetes ≥ 1.21 also writes **EndpointSlices**, a sharded form of the same data; kulisse
//! only writes Endpoints.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use super::endpointutil::{
    EpPort, ServiceIndex, endpoint_ports, is_headless, is_pod_ready, node_name, pod_ip, pod_reference,
    service_selector, should_pod_be_in_endpoints, should_set_hostname, split_key,
};
use super::reconciler::{
    Action, Queue, ReconcileError, ReconcileReason, Reconciler, TRACEPARENT_ANNOTATION, annotate_traceparent,
    enqueue_related, namespace_terminating, new_queue,
};
use super::{Ctx, SharedInformers};
use crate::client::informer::{InformerEvent, key_of};
use crate::objects::{self, ResourceInfo};

/// The label Kubernetes puts on the Endpoints of a headless Service (`clusterIP: None`).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The Endpoints controller. See the module documentation.
pub struct EndpointsController {
    ctx: Arc<Ctx>,
    index: ServiceIndex,
}

fn endpoints_info() -> &'static ResourceInfo {
    objects::by_gvk("v1", "Endpoints").expect("Endpoints is a built-in kind")
}

/// Set up the controller: index Services and Pods, queue Services whose Pods changed.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<EndpointsController>, Queue) {
    let queue = new_queue();
    let index = ServiceIndex::watch(informers, &queue);
    {
        let (queue, index) = (queue.clone(), index.clone());
        informers.endpoints.on_event(move |ev| {
            // Somebody deleted Endpoints we manage: write them again.
            if let InformerEvent::Deleted(ep) = ev
                && index.has_selector(objects::namespace(ep).unwrap_or(""), objects::name(ep).unwrap_or(""))
            {
                enqueue_related(&queue, key_of(ep), "Endpoints", ep);
            }
        });
    }
    (Arc::new(EndpointsController { ctx, index }), queue)
}

/// One address with the sort key Kubernetes uses (IP, then the Pod's uid).
#[derive(Debug, Clone)]
struct Address {
    ip: String,
    uid: String,
    json: Value,
}

/// The result of computing a Service's endpoints.
struct Desired {
    subsets: Vec<Value>,
    ready: usize,
    not_ready: usize,
    /// Pods skipped because a named targetPort could not be resolved (for the span).
    unresolved: usize,
}

/// Compute the subsets for `svc` from `pods` (which already match its selector), as the
/// upstream controller does: one (address, port) pair per Pod and Service port, then
/// grouped by port set ("repacked") and sorted.
fn desired_subsets(svc: &Value, pods: &[Arc<Value>]) -> Desired {
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let dns_only = is_headless(svc)
        && svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);

    // address (ip, uid) → (ready?, address json, ports offered)
    let mut per_address = PerAddress::new();
    let mut unresolved = 0;
    for pod in pods {
        let (true, Some(ip)) = (should_pod_be_in_endpoints(pod, publish_not_ready), pod_ip(pod)) else {
            continue;
        };
        let ready = publish_not_ready || is_pod_ready(pod);
        let uid = objects::uid(pod).unwrap_or("").to_string();
        let mut addr = json!({"ip": ip, "targetRef": pod_reference(pod)});
        if let Some(node) = node_name(pod) {
            addr["nodeName"] = json!(node);
        }
        if should_set_hostname(pod, svc) {
            addr["hostname"] = pod["spec"]["hostname"].clone();
        }
        let (ports, missing) = endpoint_ports(svc, pod);
        unresolved += missing;
        // A Pod none of whose ports resolve gets no address, except for a headless
        // Service without ports (DNS-only), which lists addresses without ports.
        if ports.is_empty() && !dns_only {
            continue;
        }
        per_address.insert((ip.to_string(), uid), (ready, addr, ports));
    }

    let (subsets, ready, not_ready) = repack(per_address);
    Desired {
        subsets,
        ready,
        not_ready,
        unresolved,
    }
}

/// Addresses (ip, uid) → (ready?, address, ports).
type PerAddress = BTreeMap<(String, String), (bool, Value, BTreeSet<EpPort>)>;

/// Repack: addresses that offer the same set of ports share a subset, sorted. Returns the
/// subsets and the numbers of ready and not-ready addresses.
fn repack(per_address: PerAddress) -> (Vec<Value>, usize, usize) {
    let mut groups: BTreeMap<Vec<EpPort>, (Vec<Address>, Vec<Address>)> = BTreeMap::new();
    let (mut ready_n, mut not_ready_n) = (0, 0);
    for ((ip, uid), (ready, json, ports)) in per_address {
        let group = groups.entry(ports.into_iter().collect()).or_default();
        let a = Address { ip, uid, json };
        if ready {
            ready_n += 1;
            group.0.push(a);
        } else {
            not_ready_n += 1;
            group.1.push(a);
        }
    }
    let sort = |v: &mut Vec<Address>| v.sort_by(|a, b| (&a.ip, &a.uid).cmp(&(&b.ip, &b.uid)));
    let subsets = groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            sort(&mut ready);
            sort(&mut not_ready);
            let mut s = serde_json::Map::new();
            if !ready.is_empty() {
                s.insert(
                    "addresses".into(),
                    Value::Array(ready.into_iter().map(|a| a.json).collect()),
                );
            }
            if !not_ready.is_empty() {
                s.insert(
                    "notReadyAddresses".into(),
                    Value::Array(not_ready.into_iter().map(|a| a.json).collect()),
                );
            }
            if !ports.is_empty() {
                s.insert(
                    "ports".into(),
                    Value::Array(ports.iter().map(EpPort::to_json).collect()),
                );
            }
            Value::Object(s)
        })
        .collect();
    (subsets, ready_n, not_ready_n)
}

/// The labels the Endpoints should carry: the Service's, plus the headless marker.
fn desired_labels(svc: &Value) -> BTreeMap<String, String> {
    let mut labels = objects::labels(svc);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

fn current_subsets(ep: &Value) -> &[Value] {
    ep.get("subsets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

impl EndpointsController {
    /// Create or update the Endpoints `ns/name` with `subsets` and `labels`, stamped with
    /// the current trace.
    async fn write_endpoints(
        &self,
        ns: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        subsets: &[Value],
        current: Option<&Value>,
    ) -> Result<(), crate::client::ClientError> {
        let traceparent = kulisse_traces::propagation::traceparent_of_current();
        let info = endpoints_info();
        match current {
            None => {
                let mut ep = json!({
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "subsets": subsets,
                });
                if let Some(tp) = traceparent {
                    ep["metadata"]["annotations"] = json!({TRACEPARENT_ANNOTATION: tp});
                }
                tracing::Span::current().record("endpoints.action", "create");
                self.ctx.client.create(info, Some(ns), &ep).await.map(|_| ())
            }
            Some(cur) => {
                let mut ep = cur.clone();
                ep["subsets"] = Value::Array(subsets.to_vec());
                if let Some(m) = objects::meta_mut(&mut ep) {
                    m.insert("labels".into(), json!(labels));
                    if let Some(tp) = traceparent {
                        annotate_traceparent(m, &tp);
                    }
                }
                tracing::Span::current().record("endpoints.action", "update");
                self.ctx
                    .client
                    .replace(info, Some(ns), name, None, &ep)
                    .await
                    .map(|_| ())
            }
        }
    }

    async fn delete_endpoints(&self, ns: &str, name: &str) -> Result<Action, ReconcileError> {
        if self.ctx.caches.endpoints.get(&format!("{ns}/{name}")).is_none() {
            return Ok(Action::await_change());
        }
        let span = info_span!(
            "controller.sync_endpoints",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Endpoints",
            "k8s.namespace" = ns,
            "k8s.name" = name,
            "endpoints.action" = "delete (the Service is gone)",
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        let result = self
            .ctx
            .client
            .delete(endpoints_info(), Some(ns), name, None)
            .instrument(span.clone())
            .await;
        match result {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if e.code() == Some(404) => Ok(Action::await_change()),
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", e.to_string().as_str());
                Err(ReconcileError(format!(
                    "could not delete the Endpoints {ns}/{name} of a deleted Service: {e}"
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let Some(svc) = self.ctx.caches.services.get(key) else {
            return self.delete_endpoints(ns, name).await;
        };
        if objects::deletion_timestamp(&svc).is_some() {
            return Ok(Action::await_change());
        }
        let Some(selector) = service_selector(&svc) else {
            return Ok(Action::await_change()); // endpoints managed by hand
        };
        let pods = self.index.pods_matching(&self.ctx.caches.pods, ns, &selector);
        let desired = desired_subsets(&svc, &pods);
        let labels = desired_labels(&svc);
        let current = self.ctx.caches.endpoints.get(key);

        let span = info_span!(
            "controller.sync_endpoints",
            "kulisse.stage" = "controller",
            "k8s.kind" = "Service",
            "k8s.namespace" = ns,
            "k8s.name" = name,
            "endpoints.pods.selected" = pods.len(),
            "endpoints.addresses.ready" = desired.ready,
            "endpoints.addresses.not_ready" = desired.not_ready,
            "endpoints.ports.unresolved" = desired.unresolved,
            "endpoints.action" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        let unchanged = current
            .as_ref()
            .is_some_and(|cur| current_subsets(cur) == desired.subsets.as_slice() && objects::labels(cur) == labels);
        if unchanged {
            span.record("endpoints.action", "unchanged");
            return Ok(Action::await_change());
        }
        let write = self
            .write_endpoints(ns, name, &labels, &desired.subsets, current.as_deref())
            .instrument(span.clone())
            .await;
        match write {
            Ok(()) => Ok(Action::await_change()),
            Err(e) if namespace_terminating(&e) => Ok(Action::await_change()),
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", e.to_string().as_str());
                // 409: our cache was behind (someone else wrote first); retry with back-off.
                Err(ReconcileError(format!(
                    "could not write the Endpoints {ns}/{name} for the Service's {} ready and {} not-ready Pods: {e}",
                    desired.ready, desired.not_ready
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
    }

    fn service(target_port: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": target_port}]},
        })
    }

    #[test]
    fn named_target_port_resolves_per_pod_and_sorts_addresses() {
        let pods = vec![
            pod("b", "127.64.0.9", true, "http", 8080),
            pod("a", "127.64.0.2", true, "http", 8080),
            pod("c", "127.64.0.3", false, "http", 8080),
            pod("d", "127.64.0.4", true, "http", 9090),
            pod("e", "127.64.0.5", true, "other", 1),
        ];
        let d = desired_subsets(&service(json!("http")), &pods);
        assert_eq!((d.ready, d.not_ready, d.unresolved), (3, 1, 1));
        assert_eq!(d.subsets.len(), 2);
        let first = &d.subsets[0];
        assert_eq!(first["ports"][0]["port"], 8080);
        let ips: Vec<&str> = first["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, vec!["127.64.0.2", "127.64.0.9"]);
        assert_eq!(first["notReadyAddresses"][0]["ip"], "127.64.0.3");
        assert_eq!(first["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(first["addresses"][0]["nodeName"], "node-1");
        assert_eq!(d.subsets[1]["ports"][0]["port"], 9090);
    }

    #[test]
    fn numeric_and_missing_target_ports() {
        let pods = vec![pod("a", "127.64.0.2", true, "http", 8080)];
        let d = desired_subsets(&service(json!(7000)), &pods);
        assert_eq!(d.subsets[0]["ports"][0]["port"], 7000);
        let d = desired_subsets(&service(Value::Null), &pods);
        assert_eq!(d.subsets[0]["ports"][0]["port"], 80);
    }

    #[test]
    fn pods_without_ip_or_terminating_are_left_out() {
        let mut p = (*pod("a", "", true, "http", 8080)).clone();
        let d = desired_subsets(&service(json!(80)), &[Arc::new(p.clone())]);
        assert!(d.subsets.is_empty());
        p["status"]["podIP"] = json!("127.64.0.2");
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let d = desired_subsets(&service(json!(80)), &[Arc::new(p)]);
        assert!(d.subsets.is_empty());
    }
}
