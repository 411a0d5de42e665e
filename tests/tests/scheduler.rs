//! The scheduler against a real (in-process) API server: Nodes and Pods are created through
//! the client, the scheduler places the pods with `pods/binding`, and the results are read
//! back as a user would (`spec.nodeName`, the `PodScheduled` condition, Events).

use std::collections::BTreeMap;

use kulisse_core::client::{Client, ListParams};
use kulisse_core::objects;
use kulisse_core::scheduler::{self, Options};
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::{Value, json};

fn kind(k: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", k).unwrap()
}

/// A Node as a kubelet registers it: allocatable resources and a Ready condition.
fn node(name: &str, cpu: &str, ready: &str, labels: Value, taints: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}],
        }
    })
}

fn ready_node(name: &str, cpu: &str) -> Value {
    node(name, cpu, "True", json!({}), json!([]))
}

/// A pod with one container requesting `cpu`, plus `extra` merged into its spec.
fn pod(name: &str, cpu: &str, extra: Value) -> Value {
    let mut spec = json!({"containers": [{
        "name": "app", "image": "busybox",
        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
    }]});
    if let Some(extra) = extra.as_object() {
        for (k, v) in extra {
            spec[k] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

async fn create_nodes(client: &Client, nodes: &[Value]) {
    for n in nodes {
        client.create(kind("Node"), None, n).await.expect("create node");
    }
}

async fn create_pod(client: &Client, p: &Value) {
    client
        .create(kind("Pod"), Some("default"), p)
        .await
        .expect("create pod");
}

async fn get_pod(client: &Client, name: &str) -> Value {
    client.get(kind("Pod"), Some("default"), name).await.expect("get pod")
}

async fn node_of(client: &Client, name: &str) -> Option<String> {
    get_pod(client, name)
        .await
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn start_scheduler(fx: &ApiServerFixture) {
    tokio::spawn(scheduler::run(fx.client.clone(), Options::default(), fx.shutdown_rx()));
}

/// The `PodScheduled` condition of a pod.
async fn scheduled_condition(client: &Client, name: &str) -> Option<Value> {
    get_pod(client, name)
        .await
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned())
}

/// Events about pod `name` with `reason`.
async fn events(client: &Client, name: &str, reason: &str) -> Vec<Value> {
    let list = client
        .list(kind("Event"), Some("default"), &ListParams::default())
        .await
        .expect("list events");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .collect()
}

/// Wait until `name` is bound; returns its node.
async fn wait_bound(client: &Client, name: &str) -> String {
    eventually(20, &format!("pod {name} to be bound to a node"), || async {
        node_of(client, name).await
    })
    .await
}

/// Wait until `name` is reported unschedulable with exactly `message`.
async fn wait_unschedulable(client: &Client, name: &str, message: &str) {
    let condition = eventually(
        20,
        &format!("pod {name} to get PodScheduled=False with message {message:?}"),
        || async {
            scheduled_condition(client, name)
                .await
                .filter(|c| c["status"] == "False" && c["message"] == message)
        },
    )
    .await;
    assert_eq!(condition["reason"], "Unschedulable", "{condition}");
    assert_eq!(node_of(client, name).await, None, "an unschedulable pod is not bound");
    let event = eventually(20, &format!("a FailedScheduling event for {name}"), || async {
        events(client, name, "FailedScheduling")
            .await
            .into_iter()
            .find(|e| e["message"] == message)
    })
    .await;
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["source"]["component"], "default-scheduler", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_spread_evenly_over_equal_nodes() {
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    create_nodes(
        c,
        &[
            ready_node("node-1", "2"),
            ready_node("node-2", "2"),
            ready_node("node-3", "2"),
        ],
    )
    .await;
    start_scheduler(&fx);
    for i in 0..6 {
        create_pod(c, &pod(&format!("web-{i}"), "100m", json!({}))).await;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        let n = wait_bound(c, &format!("web-{i}")).await;
        *per_node.entry(n).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("node-1".into(), 2), ("node-2".into(), 2), ("node-3".into(), 2)]),
        "equal nodes fill evenly"
    );

    // the API server set PodScheduled=True, and the scheduler said so in an Event
    let condition = scheduled_condition(c, "web-0").await.expect("PodScheduled condition");
    assert_eq!(condition["status"], "True", "{condition}");
    let node = node_of(c, "web-0").await.unwrap();
    let scheduled = eventually(20, "a Scheduled event for web-0", || async {
        events(c, "web-0", "Scheduled").await.into_iter().next()
    })
    .await;
    assert_eq!(scheduled["type"], "Normal");
    assert_eq!(scheduled["source"]["component"], "default-scheduler");
    assert_eq!(
        scheduled["message"],
        format!("Successfully assigned default/web-0 to {node}")
    );
}

/// A pod with `labels`.
fn labelled_pod(name: &str, labels: Value, extra: Value) -> Value {
    let mut p = pod(name, "100m", extra);
    p["metadata"]["labels"] = labels;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_topology_spread_spreads_a_services_pods_and_enforces_hard_constraints() {
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    let zone = |z: &str, host: &str| json!({"topology.kubernetes.io/zone": z, "kubernetes.io/hostname": host});
    // `big` has far more CPU: by resources alone every pod would go there
    create_nodes(
        c,
        &[
            node("big", "64", "True", zone("a", "big"), json!([])),
            node("small-a", "2", "True", zone("a", "small-a"), json!([])),
            node("small-b", "2", "True", zone("b", "small-b"), json!([])),
        ],
    )
    .await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    c.create(kind("Service"), Some("default"), &svc)
        .await
        .expect("create service");
    start_scheduler(&fx);

    // The Service's pods get the system default constraints (hostname maxSkew 3, zone
    // maxSkew 5, ScheduleAnyway): the spread score outweighs the CPU difference.
    for i in 0..3 {
        create_pod(c, &labelled_pod(&format!("web-{i}"), json!({"app": "web"}), json!({}))).await;
    }
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(wait_bound(c, &format!("web-{i}")).await);
    }
    nodes.sort();
    assert_eq!(nodes, ["big", "small-a", "small-b"], "one pod of the Service per node");
    // A pod of no Service or ReplicaSet is not spread: it goes to the emptiest node.
    create_pod(c, &labelled_pod("loner", json!({"app": "loner"}), json!({}))).await;
    assert_eq!(wait_bound(c, "loner").await, "big");

    // DoNotSchedule over zones, maxSkew 1: zone a (2 nodes) and zone b take turns.
    let zonal = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "zonal"}}}]});
    let mut zones = Vec::new();
    for i in 0..4 {
        let name = format!("zonal-{i}");
        create_pod(c, &labelled_pod(&name, json!({"app": "zonal"}), zonal.clone())).await;
        let n = wait_bound(c, &name).await;
        zones.push(if n == "small-b" { "b" } else { "a" });
    }
    zones.sort();
    assert_eq!(
        zones,
        ["a", "a", "b", "b"],
        "never two more in one zone than in the other"
    );

    // A constraint on a label no node has leaves no feasible node, with upstream's reason.
    let rack = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "rack",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "racked"}}}]});
    create_pod(c, &labelled_pod("racked", json!({"app": "racked"}), rack)).await;
    wait_unschedulable(
        c,
        "racked",
        "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints (missing required label).",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_fits_nowhere_waits_until_a_big_enough_node_joins() {
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    create_nodes(
        c,
        &[
            ready_node("node-1", "1"),
            ready_node("node-2", "1"),
            ready_node("node-3", "1"),
        ],
    )
    .await;
    start_scheduler(&fx);
    create_pod(c, &pod("big", "2", json!({}))).await;
    wait_unschedulable(c, "big", "0/3 nodes are available: 3 Insufficient cpu.").await;

    create_nodes(c, &[ready_node("node-big", "4")]).await;
    assert_eq!(wait_bound(c, "big").await, "node-big");
    let condition = scheduled_condition(c, "big").await.unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_taints_and_readiness_filter_nodes() {
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    create_nodes(
        c,
        &[
            node("ssd", "4", "True", json!({"disk": "ssd"}), json!([])),
            node(
                "gpu",
                "4",
                "True",
                json!({"accelerator": "gpu"}),
                json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
            ),
            node(
                "down",
                "4",
                "False",
                json!({"disk": "ssd", "accelerator": "gpu"}),
                json!([]),
            ),
        ],
    )
    .await;
    start_scheduler(&fx);

    // plain pods go only where there is neither an untolerated taint nor NotReady
    for i in 0..3 {
        create_pod(c, &pod(&format!("plain-{i}"), "100m", json!({}))).await;
    }
    // a nodeSelector picks the labelled node (the NotReady one has the label too)
    create_pod(c, &pod("wants-ssd", "100m", json!({"nodeSelector": {"disk": "ssd"}}))).await;
    // a toleration opens the tainted node; the selector makes it the only choice
    let tolerations = json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    create_pod(
        c,
        &pod(
            "gpu-job",
            "100m",
            json!({"nodeSelector": {"accelerator": "gpu"}, "tolerations": tolerations}),
        ),
    )
    .await;
    // required node affinity: In on a label
    create_pod(
        c,
        &pod(
            "affine",
            "100m",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}]}]
            }}}}),
        ),
    )
    .await;
    // the same selector without the toleration fits nowhere
    create_pod(
        c,
        &pod(
            "gpu-no-toleration",
            "100m",
            json!({"nodeSelector": {"accelerator": "gpu"}}),
        ),
    )
    .await;
    // and a selector no node has
    create_pod(c, &pod("wants-nvme", "100m", json!({"nodeSelector": {"disk": "nvme"}}))).await;

    for i in 0..3 {
        assert_eq!(wait_bound(c, &format!("plain-{i}")).await, "ssd");
    }
    assert_eq!(wait_bound(c, "wants-ssd").await, "ssd");
    assert_eq!(wait_bound(c, "gpu-job").await, "gpu");
    assert_eq!(wait_bound(c, "affine").await, "ssd");
    wait_unschedulable(
        c,
        "gpu-no-toleration",
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.",
    )
    .await;
    wait_unschedulable(
        c,
        "wants-nvme",
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {dedicated: gpu}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.",
    )
    .await;

    // the NotReady node got nothing
    let pods = c
        .list(kind("Pod"), Some("default"), &ListParams::default())
        .await
        .unwrap();
    let on_down: Vec<&Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["nodeName"] == "down")
        .collect();
    assert!(on_down.is_empty(), "pods on the NotReady node: {on_down:?}");

    // once the node turns Ready, the parked pod that only it can take goes there
    let mut down = c.get(kind("Node"), None, "down").await.unwrap();
    down["status"]["conditions"] = json!([{"type": "Ready", "status": "True", "reason": "KubeletReady"}]);
    c.replace(kind("Node"), None, "down", Some("status"), &down)
        .await
        .unwrap();
    assert_eq!(wait_bound(c, "gpu-no-toleration").await, "down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_are_not_handed_out_twice() {
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    create_nodes(c, &[ready_node("node-1", "2"), ready_node("node-2", "2")]).await;
    start_scheduler(&fx);
    let with_port = |name: &str| {
        let mut p = pod(name, "100m", json!({}));
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]);
        p
    };
    create_pod(c, &with_port("http-a")).await;
    let a = wait_bound(c, "http-a").await;
    create_pod(c, &with_port("http-b")).await;
    let b = wait_bound(c, "http-b").await;
    assert_ne!(a, b, "two pods with hostPort 8080 cannot share a node");
    create_pod(c, &with_port("http-c")).await;
    wait_unschedulable(
        c,
        "http-c",
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports.",
    )
    .await;

    // deleting a pod frees its port: the waiting pod takes its place
    c.delete_with_options(
        kind("Pod"),
        Some("default"),
        "http-a",
        &json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}),
    )
    .await
    .unwrap();
    assert_eq!(wait_bound(c, "http-c").await, a);
}

/// A tiny `tracing` subscriber that remembers spans (name, parent, fields) and events, to
/// check what a learner will see in a trace. Installed per thread: the test below runs on a
/// current-thread runtime, so every task it spawns reports here.
mod collect {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Debug, Clone, Default)]
    pub struct SpanRec {
        pub id: u64,
        pub name: String,
        pub parent: Option<u64>,
        pub fields: BTreeMap<String, String>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct EventRec {
        pub parent: Option<u64>,
        pub fields: BTreeMap<String, String>,
    }

    #[derive(Default)]
    pub struct Recorded {
        pub spans: Vec<SpanRec>,
        pub events: Vec<EventRec>,
        stack: Vec<u64>,
    }

    #[derive(Clone, Default)]
    pub struct Collector {
        pub recorded: Arc<Mutex<Recorded>>,
        next: Arc<AtomicU64>,
    }

    struct Fields<'a>(&'a mut BTreeMap<String, String>);
    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_string(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }
    }

    impl Collector {
        fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
            self.recorded.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    impl Subscriber for Collector {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            let mut rec = self.lock();
            let parent = if attrs.is_root() {
                None
            } else if let Some(p) = attrs.parent() {
                Some(p.into_u64())
            } else {
                rec.stack.last().copied()
            };
            let mut span = SpanRec {
                id,
                name: attrs.metadata().name().to_string(),
                parent,
                fields: BTreeMap::new(),
            };
            attrs.record(&mut Fields(&mut span.fields));
            rec.spans.push(span);
            Id::from_u64(id)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut rec = self.lock();
            if let Some(s) = rec.spans.iter_mut().find(|s| s.id == span.into_u64()) {
                values.record(&mut Fields(&mut s.fields));
            }
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut rec = self.lock();
            let parent = if event.is_root() {
                None
            } else if let Some(p) = event.parent() {
                Some(p.into_u64())
            } else {
                rec.stack.last().copied()
            };
            let mut e = EventRec {
                parent,
                fields: BTreeMap::new(),
            };
            event.record(&mut Fields(&mut e.fields));
            rec.events.push(e);
        }
        fn enter(&self, span: &Id) {
            self.lock().stack.push(span.into_u64());
        }
        fn exit(&self, span: &Id) {
            let mut rec = self.lock();
            if let Some(pos) = rec.stack.iter().rposition(|s| *s == span.into_u64()) {
                rec.stack.remove(pos);
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_trace_shows_why_a_node_was_chosen() {
    let collector = collect::Collector::default();
    let _guard = tracing::subscriber::set_default(collector.clone());
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    create_nodes(
        c,
        &[
            ready_node("small", "500m"),
            ready_node("busy", "4"),
            ready_node("idle", "4"),
        ],
    )
    .await;
    // `busy` already runs a pod that asks for 3 CPUs
    let mut hog = pod("hog", "3", json!({}));
    hog["spec"]["nodeName"] = json!("busy");
    create_pod(c, &hog).await;
    start_scheduler(&fx);
    create_pod(c, &pod("web", "1", json!({}))).await;
    assert_eq!(wait_bound(c, "web").await, "idle", "the least allocated node wins");
    eventually(20, "the Scheduled event", || async {
        events(c, "web", "Scheduled").await.into_iter().next()
    })
    .await;

    let rec = collector.recorded.lock().unwrap();
    let schedule = rec
        .spans
        .iter()
        .find(|s| s.name == "scheduler.schedule_pod" && s.fields.get("k8s.name").map(String::as_str) == Some("web"))
        .expect("a scheduler.schedule_pod span for web");
    let field = |s: &collect::SpanRec, k: &str| s.fields.get(k).cloned().unwrap_or_default();
    assert_eq!(field(schedule, "kulisse.stage"), "scheduler");
    assert_eq!(field(schedule, "scheduler.node"), "idle");
    assert_eq!(field(schedule, "scheduler.result"), "scheduled");
    assert_eq!(field(schedule, "scheduler.nodes.total"), "3");
    assert_eq!(field(schedule, "scheduler.nodes.evaluated"), "3");
    assert_eq!(field(schedule, "scheduler.nodes.feasible"), "2");

    let child = |name: &str| {
        rec.spans
            .iter()
            .find(|s| s.name == name && s.parent == Some(schedule.id))
            .unwrap_or_else(|| panic!("a {name} span under scheduler.schedule_pod"))
    };
    let filter = child("scheduler.filter");
    let score = child("scheduler.score");
    let bind = child("scheduler.bind");
    assert_eq!(field(bind, "scheduler.node"), "idle");
    assert_eq!(field(score, "scheduler.node"), "idle");

    let messages = |span: &collect::SpanRec| -> Vec<String> {
        rec.events
            .iter()
            .filter(|e| e.parent == Some(span.id))
            .filter_map(|e| e.fields.get("message").cloned())
            .collect()
    };
    let filtered = messages(filter);
    assert!(
        filtered
            .iter()
            .any(|m| m == "small: Insufficient cpu (NodeResourcesFit)"),
        "filter events: {filtered:?}"
    );
    let scored = messages(score);
    // idle: 3/4 cpu and (8Gi-64Mi)/8Gi memory free → (75 + 99) / 2 = 87; cpu 25 % vs
    // memory 0.8 % used → (1 - 0.242/2) * 100 = 87. busy: no cpu left → (0 + 98) / 2 = 49.
    // No PreferNoSchedule taints: TaintToleration 100 everywhere (weight 3); nothing
    // preferred, nothing to spread (the pod has no Service or ReplicaSet).
    assert!(
        scored.iter().any(|m| m
            == "idle: NodeResourcesFit=87 NodeResourcesBalancedAllocation=87 TaintToleration=100 \
                NodeAffinity=0 PodTopologySpread=0 total=474"),
        "score events: {scored:?}"
    );
    assert!(
        scored.iter().any(|m| m.starts_with("busy: NodeResourcesFit=49 ")),
        "score events: {scored:?}"
    );

    // The same, one `scheduler.plugin` span per plugin verdict (what `kulisse explain` reads).
    let plugins_under = |parent: &collect::SpanRec| -> Vec<(String, String, String, String)> {
        rec.spans
            .iter()
            .filter(|s| s.name == "scheduler.plugin" && s.parent == Some(parent.id))
            .map(|s| {
                let verdict = match s.fields.get("scheduler.plugin.verdict") {
                    Some(v) => v.clone(),
                    None => field(s, "scheduler.plugin.points"),
                };
                (
                    field(s, "scheduler.plugin.node"),
                    field(s, "scheduler.plugin.name"),
                    verdict,
                    field(s, "scheduler.plugin.reason"),
                )
            })
            .collect()
    };
    let verdicts = plugins_under(filter);
    let on = |node: &str, v: &[(String, String, String, String)]| -> Vec<String> {
        v.iter()
            .filter(|(n, ..)| n == node)
            .map(|(_, p, v, r)| format!("{p} {v} {r}").trim_end().to_string())
            .collect()
    };
    // the plugins run in upstream's order and stop at the first veto; no hard spread
    // constraint, so PodTopologySpread does not filter
    assert_eq!(
        on("small", &verdicts),
        [
            "NodeUnschedulable Success",
            "NodeName Success",
            "TaintToleration Success",
            "NodeAffinity Success",
            "NodePorts Success",
            "NodeResourcesFit Unschedulable Insufficient cpu"
        ],
        "{verdicts:?}"
    );
    assert_eq!(on("idle", &verdicts).len(), 6, "{verdicts:?}");
    assert!(on("idle", &verdicts).iter().all(|v| v.ends_with("Success")));
    let points = plugins_under(score);
    let idle: Vec<String> = on("idle", &points)
        .iter()
        .map(|v| v.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        idle,
        [
            "TaintToleration 100",
            "NodeAffinity 0",
            "NodeResourcesFit 87",
            "PodTopologySpread 0",
            "NodeResourcesBalancedAllocation 87"
        ]
    );
    assert_eq!(on("small", &points), Vec::<String>::new(), "small was not feasible");
}
