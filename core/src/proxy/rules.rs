//! # The rule table (what kube-proxy programs into the kernel)
//!
//! For every port of every Service, kube-proxy keeps one forwarding rule:
//!
//! ```text
//! 127.1.0.10:80/TCP    -> 127.64.1.5:8080,127.64.2.7:8080     (the ClusterIP)
//! 127.0.0.1:30080/TCP  -> 127.64.1.5:8080,127.64.2.7:8080     (the NodePort, for type NodePort)
//! ```
//!
//! The left side ("frontend") comes from the Service: its `clusterIP` and `port`, or the
//! node's address and the allocated `nodePort`. The right side ("backends") comes from the
//! Service's EndpointSlices (labelled `kubernetes.io/service-name: <service>`), merged: every
//! endpoint of a slice whose ports include the Service port's name, at the port the slice
//! gives for it (the resolved `targetPort`). As upstream's kube-proxy does, only endpoints
//! that are `ready` get traffic; when none is ready, endpoints that are still `serving`
//! while `terminating` do, so connections survive the end of a rollout. A rule without
//! backends rejects connections (real kube-proxy installs a REJECT rule, so clients fail
//! fast instead of timing out).
//!
//! [`RuleTable`] is the single source of these rules inside a kulisse node: kube-proxy's
//! sync loop writes it, and anything that forwards traffic reads it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::watch;

/// Which address a rule listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    /// The Service's virtual `clusterIP:port`.
    ClusterIp,
    /// The node's `127.0.0.1:nodePort` (Services of type NodePort or LoadBalancer).
    NodePort,
}

/// One forwarding rule: frontend → backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The Service, as `namespace/name`.
    pub service: String,
    /// The Service port's name (`""` for the single unnamed port of a Service).
    pub port_name: String,
    /// The Service port's `port` (the frontend port of the ClusterIP rule).
    pub service_port: u16,
    pub kind: RuleKind,
    /// Where clients connect.
    pub frontend: SocketAddr,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The ready Pods' addresses, sorted.
    pub endpoints: Vec<SocketAddr>,
}

impl Rule {
    /// A stable name for the rule, usable as a ConfigMap key: `default.web.http`
    /// (ClusterIP) or `default.web.http.nodeport`. An unnamed port is named by its number
    /// (`default.web.80`).
    pub fn id(&self) -> String {
        let (ns, name) = self.service.split_once('/').unwrap_or(("", &self.service));
        let port = if self.port_name.is_empty() {
            self.service_port.to_string()
        } else {
            self.port_name.clone()
        };
        match self.kind {
            RuleKind::ClusterIp => format!("{ns}.{name}.{port}"),
            RuleKind::NodePort => format!("{ns}.{name}.{port}.nodeport"),
        }
    }

    /// `127.1.0.10:80/TCP`
    pub fn frontend_text(&self) -> String {
        format!("{}/{}", self.frontend, self.protocol)
    }

    /// `127.64.1.5:8080,127.64.2.7:8080`, or `<none>`.
    pub fn endpoints_text(&self) -> String {
        if self.endpoints.is_empty() {
            "<none>".to_string()
        } else {
            self.endpoints
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

impl fmt::Display for Rule {
    /// `127.1.0.10:80/TCP -> 127.64.1.5:8080,127.64.2.7:8080`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.frontend_text(), self.endpoints_text())
    }
}

/// What one sync changed for one Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Rules that did not exist before.
    pub added: Vec<Rule>,
    /// Rules that are gone (their last version).
    pub removed: Vec<Rule>,
    /// Rules whose frontend or backends changed (their new version).
    pub changed: Vec<Rule>,
}

impl Diff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// `+ 127.1.0.10:80/TCP -> a,b; ~ ...; - ...`, for spans and logs.
    pub fn describe(&self) -> String {
        let lines = self
            .added
            .iter()
            .map(|r| format!("+ {r}"))
            .chain(self.changed.iter().map(|r| format!("~ {r}")))
            .chain(self.removed.iter().map(|r| format!("- {}", r.frontend_text())));
        lines.collect::<Vec<_>>().join("; ")
    }

    /// Compare one Service's rules before and after.
    pub fn between(old: &[Rule], new: &[Rule]) -> Diff {
        let old_by_id: HashMap<String, &Rule> = old.iter().map(|r| (r.id(), r)).collect();
        let new_by_id: HashMap<String, &Rule> = new.iter().map(|r| (r.id(), r)).collect();
        let mut diff = Diff::default();
        for r in new {
            match old_by_id.get(&r.id()) {
                None => diff.added.push(r.clone()),
                Some(o) if *o != r => diff.changed.push(r.clone()),
                Some(_) => {}
            }
        }
        for r in old {
            if !new_by_id.contains_key(&r.id()) {
                diff.removed.push(r.clone());
            }
        }
        diff
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn port_of(v: &Value, key: &str) -> Option<u16> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// An endpoint condition; a missing one counts as `default` (upstream reads an unknown
/// `ready` or `serving` as true, an unknown `terminating` as false).
fn condition(ep: &Value, name: &str, default: bool) -> bool {
    ep.pointer(&format!("/conditions/{name}"))
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

/// The backends of the Service port named `port_name` with `protocol`, from all of the
/// Service's slices: the ready endpoints, or, when there are none, the serving terminating
/// ones (upstream's `CategorizeEndpoints`).
fn backends(slices: &[&Value], port_name: &str, protocol: &str) -> Vec<SocketAddr> {
    let (mut ready, mut fallback) = (Vec::new(), Vec::new());
    for slice in slices {
        if str_of(slice, "addressType").is_some_and(|t| t != "IPv4" && t != "IPv6") {
            continue; // FQDN endpoints are not for kube-proxy
        }
        let ports = slice
            .get("ports")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let Some(port) = ports
            .iter()
            .find(|p| {
                str_of(p, "name").unwrap_or("") == port_name && str_of(p, "protocol").unwrap_or("TCP") == protocol
            })
            .and_then(|p| port_of(p, "port"))
        else {
            continue;
        };
        for ep in slice.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
            let Some(ip) = ep
                .pointer("/addresses/0")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            if condition(ep, "ready", true) {
                ready.push(addr);
            } else if condition(ep, "serving", true) && condition(ep, "terminating", false) {
                fallback.push(addr);
            }
        }
    }
    let mut out = if ready.is_empty() { fallback } else { ready };
    out.sort();
    out.dedup(); // an endpoint may sit in two slices for a moment while they change
    out
}

/// The rules for one Service and its EndpointSlices (none yet: rules without backends).
pub fn rules_for(service: &Value, slices: &[&Value]) -> Vec<Rule> {
    let ns = service
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = service.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    let key = format!("{ns}/{name}");
    let spec = service.get("spec").unwrap_or(&Value::Null);
    let svc_type = str_of(spec, "type").unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Vec::new(); // a DNS alias: nothing to forward
    }
    let cluster_ip = str_of(spec, "clusterIP").and_then(|s| s.parse::<IpAddr>().ok());
    let mut rules = Vec::new();
    for p in spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(port) = port_of(p, "port") else { continue };
        let port_name = str_of(p, "name").unwrap_or("").to_string();
        let protocol = str_of(p, "protocol").unwrap_or("TCP").to_string();
        let eps = backends(slices, &port_name, &protocol);
        let rule = |kind, frontend| Rule {
            service: key.clone(),
            port_name: port_name.clone(),
            service_port: port,
            kind,
            frontend,
            protocol: protocol.clone(),
            endpoints: eps.clone(),
        };
        if let Some(ip) = cluster_ip {
            rules.push(rule(RuleKind::ClusterIp, SocketAddr::new(ip, port)));
        }
        if matches!(svc_type, "NodePort" | "LoadBalancer")
            && let Some(node_port) = port_of(p, "nodePort")
        {
            rules.push(rule(
                RuleKind::NodePort,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), node_port),
            ));
        }
    }
    rules
}

#[derive(Default)]
struct Inner {
    /// service key → its rules.
    by_service: BTreeMap<String, Vec<Rule>>,
    /// (frontend, protocol) → service key, for lookups by the data path.
    by_frontend: HashMap<(SocketAddr, String), String>,
}

/// kube-proxy's rule table: a cheap-to-clone shared handle. kube-proxy's sync loop writes
/// it; the data path reads it ([`RuleTable::lookup`]) and can wait for changes
/// ([`RuleTable::subscribe`]).
#[derive(Clone)]
pub struct RuleTable {
    inner: Arc<RwLock<Inner>>,
    generation: Arc<watch::Sender<u64>>,
}

impl Default for RuleTable {
    fn default() -> Self {
        RuleTable::new()
    }
}

impl RuleTable {
    /// An empty table.
    pub fn new() -> Self {
        RuleTable {
            inner: Arc::default(),
            generation: Arc::new(watch::channel(0).0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Every rule, sorted by Service, port and kind.
    pub fn snapshot(&self) -> Vec<Rule> {
        let inner = self.read();
        let mut all: Vec<Rule> = inner.by_service.values().flatten().cloned().collect();
        all.sort_by(|a, b| (&a.service, &a.port_name, a.kind).cmp(&(&b.service, &b.port_name, b.kind)));
        all
    }

    /// The rules of one Service (`namespace/name`).
    pub fn rules_of(&self, service: &str) -> Vec<Rule> {
        self.read().by_service.get(service).cloned().unwrap_or_default()
    }

    /// The rule listening on `frontend` for `protocol`, if any.
    pub fn lookup(&self, frontend: SocketAddr, protocol: &str) -> Option<Rule> {
        let inner = self.read();
        let svc = inner.by_frontend.get(&(frontend, protocol.to_string()))?;
        inner
            .by_service
            .get(svc)?
            .iter()
            .find(|r| r.frontend == frontend && r.protocol == protocol)
            .cloned()
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.read().by_service.values().map(Vec::len).sum()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What replacing `service`'s rules with `rules` would change.
    pub fn diff(&self, service: &str, rules: &[Rule]) -> Diff {
        let inner = self.read();
        Diff::between(inner.by_service.get(service).map(Vec::as_slice).unwrap_or(&[]), rules)
    }

    /// Replace one Service's rules (an empty list removes the Service) and return what
    /// changed. Other Services' rules are untouched: syncs are incremental.
    pub fn apply(&self, service: &str, rules: Vec<Rule>) -> Diff {
        let diff = {
            let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
            let old = inner.by_service.remove(service).unwrap_or_default();
            let diff = Diff::between(&old, &rules);
            for r in &old {
                let k = (r.frontend, r.protocol.clone());
                if inner.by_frontend.get(&k).is_some_and(|s| s == service) {
                    inner.by_frontend.remove(&k);
                }
            }
            for r in &rules {
                inner
                    .by_frontend
                    .insert((r.frontend, r.protocol.clone()), service.to_string());
            }
            if !rules.is_empty() {
                inner.by_service.insert(service.to_string(), rules);
            }
            diff
        };
        if !diff.is_empty() {
            self.generation.send_modify(|g| *g += 1);
        }
        diff
    }

    /// A receiver whose value (a generation number) changes after every change of the table.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ty: &str) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"type": ty, "clusterIP": "127.1.0.10",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]}})
    }

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn eps(ips: &[&str]) -> Value {
        let mut endpoints: Vec<Value> = ips.iter().map(|ip| endpoint(ip, true, true, false)).collect();
        endpoints.push(endpoint("127.64.9.9", false, false, false));
        json!({"addressType": "IPv4", "endpoints": endpoints,
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
    }

    #[test]
    fn cluster_ip_and_node_port_rules_use_ready_addresses() {
        let rules = rules_for(&svc("NodePort"), &[&eps(&["127.64.2.7"]), &eps(&["127.64.1.5"])]);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].to_string(),
            "127.1.0.10:80/TCP -> 127.64.1.5:8080,127.64.2.7:8080"
        );
        assert_eq!(rules[0].id(), "default.web.http");
        assert_eq!(
            rules[1].to_string(),
            "127.0.0.1:30080/TCP -> 127.64.1.5:8080,127.64.2.7:8080"
        );
        assert_eq!(rules[1].id(), "default.web.http.nodeport");
        let only_cluster = rules_for(&svc("ClusterIP"), &[]);
        assert_eq!(only_cluster.len(), 1);
        assert_eq!(only_cluster[0].to_string(), "127.1.0.10:80/TCP -> <none>");
    }

    #[test]
    fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
        let slice = |eps: Vec<Value>| json!({"addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]});
        let draining = slice(vec![
            endpoint("127.64.1.1", false, true, true),
            endpoint("127.64.1.2", false, false, true),
        ]);
        let rules = rules_for(&svc("ClusterIP"), &[&draining]);
        assert_eq!(rules[0].endpoints_text(), "127.64.1.1:8080");
        let fresh = slice(vec![endpoint("127.64.2.1", true, true, false)]);
        let rules = rules_for(&svc("ClusterIP"), &[&draining, &fresh]);
        assert_eq!(rules[0].endpoints_text(), "127.64.2.1:8080");
    }

    #[test]
    fn table_applies_incremental_diffs() {
        let t = RuleTable::new();
        let mut gen_rx = t.subscribe();
        let d = t.apply("default/web", rules_for(&svc("ClusterIP"), &[&eps(&["127.64.1.5"])]));
        assert_eq!((d.added.len(), d.changed.len(), d.removed.len()), (1, 0, 0));
        assert!(gen_rx.has_changed().unwrap());
        gen_rx.borrow_and_update();
        let same = t.apply("default/web", rules_for(&svc("ClusterIP"), &[&eps(&["127.64.1.5"])]));
        assert!(same.is_empty());
        assert!(!gen_rx.has_changed().unwrap());
        let d = t.apply(
            "default/web",
            rules_for(&svc("ClusterIP"), &[&eps(&["127.64.1.5", "127.64.1.6"])]),
        );
        assert_eq!(d.changed.len(), 1);
        let found = t.lookup("127.1.0.10:80".parse().unwrap(), "TCP").expect("rule");
        assert_eq!(found.endpoints.len(), 2);
        let d = t.apply("default/web", vec![]);
        assert_eq!(d.removed.len(), 1);
        assert!(t.is_empty());
        assert!(t.lookup("127.1.0.10:80".parse().unwrap(), "TCP").is_none());
    }
}
