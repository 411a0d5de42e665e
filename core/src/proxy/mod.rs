//! Station ⑥ · chapter "kube-proxy: Services and traffic" (book/src/proxy.md) · spans `proxy.*`
//!
//! # kube-proxy (mirrors Kubernetes' `kube-proxy`)
//!
//! A Service's `clusterIP` belongs to no machine and no Pod: it is a *virtual* address.
//! What makes a connection to `127.1.0.10:80` reach a Pod is kube-proxy, which runs on
//! every node, watches **Services** and **EndpointSlices** through the API server, and keeps a
//! table of forwarding rules (see [`rules`]): for each Service port, "connections to this
//! frontend go to one of these ready Pod addresses".
//!
//! Real kube-proxy writes those rules into the kernel — iptables chains
//! (`KUBE-SERVICES` → `KUBE-SVC-…` → `KUBE-SEP-…` DNAT rules), IPVS virtual servers, or
//! nftables — and the kernel rewrites packets; kube-proxy itself never touches traffic.
//! kulisse keeps the same table in memory ([`RuleTable`]), where its userspace data path
//! reads it, and publishes it for humans in a ConfigMap:
//!
//! ```text
//! kubectl -n kube-system get configmap kube-proxy-rules-node-1 -o yaml   # or: kulisse get proxyrules
//! data:
//!   default.web.http: 127.1.0.10:80/TCP -> 127.64.1.5:8080,127.64.2.7:8080
//!   default.web.http.nodeport: 127.0.0.1:30080/TCP -> 127.64.1.5:8080,127.64.2.7:8080
//! ```
//!
//! Like upstream's change trackers, the sync loop is **incremental**: a change to one
//! Service or one of its EndpointSlices recomputes only that Service's rules (from all of
//! its slices, merged), compares them with the table, and applies (and publishes) just the
//! difference. Each sync is one `proxy.sync_rules` span that continues the trace of the
//! EndpointSlice (or Service) write that caused it (its `kulisse.dev/traceparent`
//! annotation): the last hop of an `apply`.
//!
//! With [`Options::data_path`] the proxy also moves the bytes: [`userspace`] listens on
//! every rule's frontend and relays connections to the endpoints, as kube-proxy's original
//! userspace mode did. All nodes of one machine share its loopback interface, so exactly
//! one kube-proxy per machine does this: node-1's in `kulisse up`, the one started with
//! `kulisse proxy --data-path` otherwise. The others keep (and publish) their tables only.
//!
//! Like upstream's since Kubernetes 1.19, kulisse's kube-proxy reads EndpointSlices, not the
//! older Endpoints objects (which the Endpoints controller still writes for old clients).
//! Differences from upstream: NodePorts listen on 127.0.0.1 only.

pub mod rules;
pub mod userspace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::Instrument;

use crate::client::informer::{Cache, Informer, InformerEvent, key_of};
use crate::client::workqueue::WorkQueue;
use crate::client::{Client, ClientError};
use crate::objects;
pub use rules::{Diff, Rule, RuleKind, RuleTable, rules_for};

/// Settings of one kube-proxy.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node this kube-proxy runs on (names its published ConfigMap).
    pub node_name: String,
    /// Also run the userspace data path ([`userspace::DataPath`]): listen on the rules'
    /// frontends and forward connections. Only one kube-proxy per machine may do this.
    pub data_path: bool,
}

/// The namespace of the published rules.
pub const RULES_NAMESPACE: &str = "kube-system";

/// The name of the ConfigMap a node's kube-proxy publishes its rules in.
pub fn rules_configmap_name(node: &str) -> String {
    format!("kube-proxy-rules-{node}")
}

/// How often the informers hand everything over again (kube-proxy's `--config-sync-period`).
const RESYNC: Duration = Duration::from_secs(15 * 60);

/// Why a Service is queued for a sync.
#[derive(Debug, Clone)]
struct Trigger {
    /// The trace of the write that caused it.
    traceparent: Option<String>,
    /// Only the periodic resync: no span when nothing changed.
    resync: bool,
}

type SyncQueue = Arc<WorkQueue<String, Trigger>>;

/// Queue the Service an event is about: a Service's own key, or the Service an
/// EndpointSlice names in its `kubernetes.io/service-name` label.
fn enqueue(queue: &SyncQueue, ev: &InformerEvent, service_key: fn(&Value) -> Option<String>) {
    let obj = ev.object();
    let resync = matches!(ev, InformerEvent::Resync(_));
    let Some(key) = service_key(obj) else { return };
    queue.add(
        key,
        Trigger {
            // A resync is background work, not a continuation of the object's last write.
            traceparent: if resync {
                None
            } else {
                crate::controllers::reconciler::traceparent_of(obj)
            },
            resync,
        },
    );
}

/// Run kube-proxy for `options.node_name` until `shutdown` turns true, keeping `rules`
/// current and published.
pub async fn run(client: Client, options: Options, mut shutdown: watch::Receiver<bool>, rules: RuleTable) {
    let client = client.for_component("kube-proxy", &options.node_name);
    let svc_info = objects::by_gvk("v1", "Service").expect("Service is a built-in kind");
    let slice_info = crate::controllers::endpointslice::slice_info();
    let data_path = options
        .data_path
        .then(|| userspace::DataPath::start(rules.clone(), options.node_name.clone(), shutdown.clone()));
    let queue: SyncQueue = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(30));
    let mut services = Informer::new(client.clone(), svc_info, None).with_resync(RESYNC);
    let mut endpoints = Informer::new(client.clone(), slice_info, None).with_resync(RESYNC);
    {
        let q = queue.clone();
        services.on_event(move |ev| enqueue(&q, ev, |svc| Some(key_of(svc))));
        let q = queue.clone();
        endpoints.on_event(move |ev| enqueue(&q, ev, crate::controllers::endpointslice::service_key_of));
    }
    let (svc_cache, ep_cache) = (services.cache(), endpoints.cache());
    let (mut svc_synced, mut ep_synced) = (services.synced(), endpoints.synced());
    tokio::spawn(services.run(shutdown.clone()));
    tokio::spawn(endpoints.run(shutdown.clone()));
    {
        let queue = queue.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|s| *s).await;
            queue.shut_down();
        });
    }
    // Sync nothing before both caches are filled: half a picture gives wrong rules.
    tokio::select! {
        _ = async {
            let _ = svc_synced.wait_for(|s| *s).await;
            let _ = ep_synced.wait_for(|s| *s).await;
        } => {}
        _ = shutdown.wait_for(|s| *s) => return,
    }

    let mut proxy = Proxy {
        publisher: Publisher {
            client,
            name: rules_configmap_name(&options.node_name),
            node: options.node_name,
            needs_full_write: true,
        },
        rules,
        data_path,
        services: svc_cache,
        endpoints: ep_cache,
    };
    let mut retry = Duration::from_millis(100);
    loop {
        let next = if proxy.publisher.needs_full_write {
            tokio::select! {
                n = queue.next() => n,
                _ = tokio::time::sleep(retry) => {
                    retry = proxy.publish_all_or_back_off(retry).await;
                    continue;
                }
            }
        } else {
            queue.next().await
        };
        let Some((key, trigger)) = next else { break };
        proxy.sync_service(&key, &trigger).await;
        queue.done(&key);
        if proxy.publisher.needs_full_write && queue.is_empty() {
            retry = proxy.publish_all_or_back_off(Duration::from_millis(100)).await;
        }
    }
}

struct Proxy {
    publisher: Publisher,
    rules: RuleTable,
    /// The userspace data path, when this proxy runs it.
    data_path: Option<userspace::DataPath>,
    services: Cache,
    /// The EndpointSlices of every Service.
    endpoints: Cache,
}

impl Proxy {
    /// Recompute one Service's rules and apply the difference (upstream `syncProxyRules`,
    /// restricted to the Services that changed).
    async fn sync_service(&mut self, key: &str, trigger: &Trigger) {
        let wanted = match self.services.get(key) {
            Some(svc) => {
                let slices = self.slices_of(key);
                rules_for(&svc, &slices.iter().map(|s| &**s).collect::<Vec<_>>())
            }
            None => Vec::new(),
        };
        let diff = self.rules.diff(key, &wanted);
        if diff.is_empty() && trigger.resync {
            return; // the periodic resync found nothing new: no trace noise
        }
        // Continue the trace of the write that caused this sync (untraced background work
        // otherwise, unless background tracing is switched on).
        let span = kulisse_traces::caused_span!(
            trigger.traceparent.as_deref(),
            "proxy.sync_rules",
            "kulisse.stage" = "proxy",
            "proxy.node" = %self.publisher.node,
            "proxy.service" = key,
            "proxy.rules.added" = diff.added.len(),
            "proxy.rules.removed" = diff.removed.len(),
            "proxy.rules.changed" = diff.changed.len(),
            "proxy.rules.total" = tracing::field::Empty,
            "proxy.diff" = %diff.describe(),
            "otel.status_code" = tracing::field::Empty,
            "otel.status_message" = tracing::field::Empty,
        );
        if let Some(dp) = &self.data_path
            && !diff.is_empty()
        {
            // The listeners this change opens or closes belong to this sync's trace.
            dp.note_cause(span.in_scope(kulisse_traces::propagation::traceparent_of_current));
        }
        let applied = self.rules.apply(key, wanted);
        span.record("proxy.rules.total", self.rules.len());
        if applied.is_empty() || self.publisher.needs_full_write {
            return;
        }
        if let Err(e) = self.publisher.publish_diff(&applied).instrument(span.clone()).await {
            span.record("otel.status_code", "ERROR");
            span.record(
                "otel.status_message",
                format!("could not publish the rules; writing them all again shortly: {e}").as_str(),
            );
            self.publisher.needs_full_write = true;
        }
    }

    /// The EndpointSlices of the Service `namespace/name`.
    fn slices_of(&self, key: &str) -> Vec<Arc<Value>> {
        let key = Some(key.to_string());
        self.endpoints
            .filter(|s| crate::controllers::endpointslice::service_key_of(s) == key)
    }

    /// Write the whole table; on failure try again after a doubling delay.
    async fn publish_all_or_back_off(&mut self, delay: Duration) -> Duration {
        match self.publisher.publish_all(&self.rules.snapshot()).await {
            Ok(()) => {
                self.publisher.needs_full_write = false;
                Duration::from_millis(100)
            }
            Err(e) => {
                tracing::warn!("kube-proxy could not publish its rules: {e}");
                (delay * 2).min(Duration::from_secs(10))
            }
        }
    }
}

/// Mirrors the rule table into the ConfigMap `kube-system/kube-proxy-rules-<node>`.
struct Publisher {
    client: Client,
    node: String,
    name: String,
    /// The ConfigMap may not match the table (start, or a failed write): write it whole.
    needs_full_write: bool,
}

fn configmap_info() -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", "ConfigMap").expect("ConfigMap is a built-in kind")
}

impl Publisher {
    /// Merge-patch just the changed keys (`null` deletes a key).
    async fn publish_diff(&mut self, diff: &Diff) -> Result<(), ClientError> {
        let mut data = serde_json::Map::new();
        for r in diff.added.iter().chain(&diff.changed) {
            data.insert(r.id(), json!(r.to_string()));
        }
        for r in &diff.removed {
            data.insert(r.id(), Value::Null);
        }
        let patch = json!({"data": data});
        match self
            .client
            .merge_patch(configmap_info(), Some(RULES_NAMESPACE), &self.name, None, &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.needs_full_write = true;
                Err(e)
            }
        }
    }

    /// Write the whole table, creating the ConfigMap if needed.
    async fn publish_all(&self, rules: &[Rule]) -> Result<(), ClientError> {
        let data: BTreeMap<String, String> = rules.iter().map(|r| (r.id(), r.to_string())).collect();
        let info = configmap_info();
        for _ in 0..5 {
            match self.client.get(info, Some(RULES_NAMESPACE), &self.name).await {
                Ok(mut cm) => {
                    cm["data"] = json!(data);
                    match self
                        .client
                        .replace(info, Some(RULES_NAMESPACE), &self.name, None, &cm)
                        .await
                    {
                        Err(e) if e.code() == Some(409) => continue,
                        other => return other.map(|_| ()),
                    }
                }
                Err(e) if e.code() == Some(404) => {
                    let cm = json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": self.name,
                            "namespace": RULES_NAMESPACE,
                            "labels": {"k8s-app": "kube-proxy"},
                            "annotations": {
                                "kulisse.dev/node": self.node,
                                "kulisse.dev/description": "kube-proxy's forwarding rules on this node, one per Service port: FRONTEND -> READY BACKENDS. Real kube-proxy writes these as iptables/IPVS/nftables rules instead.",
                            },
                        },
                        "data": data,
                    });
                    match self.client.create(info, Some(RULES_NAMESPACE), &cm).await {
                        Err(e) if e.code() == Some(409) => continue,
                        other => return other.map(|_| ()),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::Protocol(format!(
            "the ConfigMap {RULES_NAMESPACE}/{} kept changing while kube-proxy wrote it",
            self.name
        )))
    }
}
