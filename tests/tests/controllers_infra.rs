//! The Endpoints controller, the garbage collector and the node lifecycle controller against
//! a real (in-process) API server.
//!
//! The controller manager runs as `kulisse up` runs it (`controllers::run`), over HTTP.
//! There is no kubelet: the tests write what a kubelet would — pod IPs and Ready
//! conditions through `pods/{name}/status`, node status, the node's Lease — and then check
//! what a user would see: Endpoints, deleted or surviving objects, taints, Events.
//!
//! The ReplicaSets in the garbage collector tests have `replicas: 0` and a selector that
//! matches none of the test's pods, and the pods name them as a *non-controller* owner, so
//! the ReplicaSet controller has nothing to do with them: only the garbage collector acts.

use std::time::Duration;

use kulisse_core::client::{Client, ListParams};
use kulisse_core::controllers::{self, Options};
use kulisse_core::objects;
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::{Value, json};

fn info(api_version: &str, kind: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk(api_version, kind).expect("built-in kind")
}

fn pods() -> &'static objects::ResourceInfo {
    info("v1", "Pod")
}

fn replicasets() -> &'static objects::ResourceInfo {
    info("apps/v1", "ReplicaSet")
}

/// Start an API server and the whole controller manager, with short node timeouts.
async fn start() -> ApiServerFixture {
    let fx = ApiServerFixture::start().await;
    let options = Options {
        node_monitor_grace_period: Duration::from_secs(1),
        pod_eviction_timeout: Duration::from_secs(1),
        ..Options::fast()
    };
    tokio::spawn(controllers::run(fx.client.clone(), options, fx.shutdown_rx()));
    fx
}

fn pod(name: &str, labels: Value, container_ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox", "ports": container_ports}]},
    })
}

/// Write a pod's status as its kubelet would: Running, an IP, and the Ready condition.
async fn set_pod_status(client: &Client, name: &str, ip: Option<&str>, ready: bool) {
    let mut p = client.get(pods(), Some("default"), name).await.expect("get pod");
    let r = if ready { "True" } else { "False" };
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": r, "lastTransitionTime": "2025-01-01T00:00:00Z"},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": "2025-01-01T00:00:00Z"},
        ],
    });
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    p["status"] = status;
    client
        .replace(pods(), Some("default"), name, Some("status"), &p)
        .await
        .expect("write pod status");
}

async fn get_opt(client: &Client, info: &'static objects::ResourceInfo, ns: Option<&str>, name: &str) -> Option<Value> {
    match client.get(info, ns, name).await {
        Ok(v) => Some(v),
        Err(e) if e.code() == Some(404) => None,
        Err(e) => panic!("GET {name}: {e}"),
    }
}

/// `(ready ips, not-ready ips, ports)` of an Endpoints object (all subsets).
fn endpoint_view(ep: &Value) -> (Vec<String>, Vec<String>, Vec<Value>) {
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    let mut ports = Vec::new();
    for s in ep.get("subsets").and_then(Value::as_array).cloned().unwrap_or_default() {
        for (list, out) in [("addresses", &mut ready), ("notReadyAddresses", &mut not_ready)] {
            for a in s.get(list).and_then(Value::as_array).cloned().unwrap_or_default() {
                out.push(a["ip"].as_str().unwrap_or("").to_string());
            }
        }
        ports.extend(s.get("ports").and_then(Value::as_array).cloned().unwrap_or_default());
    }
    (ready, not_ready, ports)
}

async fn events_with_reason(client: &Client, reason: &str) -> Vec<Value> {
    let list = client
        .list(info("v1", "Event"), None, &ListParams::default())
        .await
        .expect("list events");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_pod_readiness_and_resolve_named_target_ports() {
    let fx = start().await;
    let c = &fx.client;
    let svc_info = info("v1", "Service");
    let ep_info = info("v1", "Endpoints");

    // A Service without selector: its hand-written Endpoints must be left alone.
    c.create(
        svc_info,
        Some("default"),
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
                "spec": {"ports": [{"port": 5432}]}}),
    )
    .await
    .expect("create selector-less service");
    let manual = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
                        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": 5432, "protocol": "TCP"}]}]});
    c.create(ep_info, Some("default"), &manual)
        .await
        .expect("create manual endpoints");

    c.create(
        svc_info,
        Some("default"),
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
                "spec": {"selector": {"app": "web"},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}),
    )
    .await
    .expect("create service");
    let http = json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
    for name in ["web-1", "web-2", "web-3"] {
        c.create(pods(), Some("default"), &pod(name, json!({"app": "web"}), http.clone()))
            .await
            .expect("create pod");
    }
    c.create(
        pods(),
        Some("default"),
        &pod("other", json!({"app": "other"}), http.clone()),
    )
    .await
    .expect("create pod");
    set_pod_status(c, "web-1", Some("127.64.0.11"), true).await;
    set_pod_status(c, "web-2", Some("127.64.0.12"), false).await;
    set_pod_status(c, "web-3", None, true).await; // no IP yet: not an endpoint
    set_pod_status(c, "other", Some("127.64.0.99"), true).await;

    let ep = eventually(10, "Endpoints web with one ready and one not-ready address", || async {
        let ep = get_opt(c, ep_info, Some("default"), "web").await?;
        let (ready, not_ready, _) = endpoint_view(&ep);
        (ready == ["127.64.0.11"] && not_ready == ["127.64.0.12"]).then_some(ep)
    })
    .await;
    let (_, _, ports) = endpoint_view(&ep);
    assert_eq!(
        ports,
        vec![json!({"name": "http", "port": 8080, "protocol": "TCP"})],
        "the named targetPort resolves to the container port"
    );
    let addr = &ep["subsets"][0]["addresses"][0];
    let web1 = c.get(pods(), Some("default"), "web-1").await.expect("get web-1");
    assert_eq!(addr["targetRef"]["kind"], "Pod");
    assert_eq!(addr["targetRef"]["name"], "web-1");
    assert_eq!(addr["targetRef"]["namespace"], "default");
    assert_eq!(addr["targetRef"]["uid"], web1["metadata"]["uid"]);
    assert_eq!(
        ep["metadata"]["labels"]["tier"], "front",
        "the Service's labels are copied"
    );
    assert!(
        ep["metadata"].get("ownerReferences").is_none(),
        "Endpoints are not owned by their Service"
    );

    // web-1 stops being ready; web-3 gets an IP: both change the Endpoints.
    set_pod_status(c, "web-1", Some("127.64.0.11"), false).await;
    set_pod_status(c, "web-3", Some("127.64.0.13"), true).await;
    eventually(10, "web-1 moved to notReadyAddresses, web-3 ready", || async {
        let ep = get_opt(c, ep_info, Some("default"), "web").await?;
        let (ready, not_ready, _) = endpoint_view(&ep);
        (ready == ["127.64.0.13"] && not_ready == ["127.64.0.11", "127.64.0.12"]).then_some(())
    })
    .await;

    // A deleted pod leaves the Endpoints.
    c.delete(pods(), Some("default"), "web-2", None)
        .await
        .expect("delete web-2");
    eventually(10, "web-2 removed from the Endpoints", || async {
        let ep = get_opt(c, ep_info, Some("default"), "web").await?;
        let (ready, not_ready, _) = endpoint_view(&ep);
        (ready == ["127.64.0.13"] && not_ready == ["127.64.0.11"]).then_some(())
    })
    .await;

    // Endpoints deleted by someone come back.
    c.delete(ep_info, Some("default"), "web", None)
        .await
        .expect("delete endpoints");
    eventually(10, "the Endpoints written again", || async {
        let ep = get_opt(c, ep_info, Some("default"), "web").await?;
        (endpoint_view(&ep).0 == ["127.64.0.13"]).then_some(())
    })
    .await;

    // Deleting the Service deletes its Endpoints.
    c.delete(svc_info, Some("default"), "web", None)
        .await
        .expect("delete service");
    eventually(10, "the Endpoints of the deleted Service gone", || async {
        get_opt(c, ep_info, Some("default"), "web")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    let still = c
        .get(ep_info, Some("default"), "external")
        .await
        .expect("manual endpoints still there");
    assert_eq!(
        still["subsets"], manual["subsets"],
        "hand-written Endpoints are left alone"
    );
}

/// A ReplicaSet the ReplicaSet controller leaves alone, and `n` pods naming it as owner.
async fn owner_with_pods(c: &Client, name: &str, n: usize) -> (Value, Vec<String>) {
    let rs = c
        .create(
            replicasets(),
            Some("default"),
            &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
                    "spec": {"replicas": 0, "selector": {"matchLabels": {"app": format!("{name}-none")}},
                             "template": {"metadata": {"labels": {"app": format!("{name}-none")}},
                                          "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}),
        )
        .await
        .expect("create replicaset");
    let mut names = Vec::new();
    for i in 0..n {
        let pname = format!("{name}-{i}");
        let mut p = pod(&pname, json!({"app": name}), json!([]));
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
            "uid": rs["metadata"]["uid"], "controller": false, "blockOwnerDeletion": true,
        }]);
        c.create(pods(), Some("default"), &p)
            .await
            .expect("create dependent pod");
        names.push(pname);
    }
    (rs, names)
}

async fn all_gone(c: &Client, names: &[String]) -> bool {
    for n in names {
        if get_opt(c, pods(), Some("default"), n).await.is_some() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_deletes_dependents_of_a_deleted_owner_in_the_background() {
    let fx = start().await;
    let c = &fx.client;
    let (_, names) = owner_with_pods(c, "bg", 3).await;
    c.create(
        pods(),
        Some("default"),
        &pod("bystander", json!({"app": "bg"}), json!([])),
    )
    .await
    .expect("create unowned pod");

    c.delete(replicasets(), Some("default"), "bg", None)
        .await
        .expect("delete owner");
    eventually(15, "the owner's pods deleted by the garbage collector", || async {
        all_gone(c, &names).await.then_some(())
    })
    .await;
    assert!(
        get_opt(c, pods(), Some("default"), "bystander").await.is_some(),
        "a pod without owner is not collected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_deletes_dependents_first_in_foreground_deletion() {
    let fx = start().await;
    let c = &fx.client;
    let (_, names) = owner_with_pods(c, "fg", 2).await;

    let marked = c
        .delete(replicasets(), Some("default"), "fg", Some("Foreground"))
        .await
        .expect("delete owner in the foreground");
    assert!(marked["metadata"]["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["foregroundDeletion"]));

    eventually(15, "the owner gone after its dependents", || async {
        get_opt(c, replicasets(), Some("default"), "fg")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        all_gone(c, &names).await,
        "the owner only goes once its blocking dependents are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collector_orphans_dependents() {
    let fx = start().await;
    let c = &fx.client;
    let (rs, names) = owner_with_pods(c, "orph", 2).await;
    let uid = rs["metadata"]["uid"].clone();

    let marked = c
        .delete(replicasets(), Some("default"), "orph", Some("Orphan"))
        .await
        .expect("delete owner, orphaning");
    assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]));
    eventually(15, "the owner gone, orphaning its pods", || async {
        get_opt(c, replicasets(), Some("default"), "orph")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    for n in &names {
        let p = get_opt(c, pods(), Some("default"), n)
            .await
            .unwrap_or_else(|| panic!("orphaned pod {n} must survive"));
        let refs = p["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        assert!(
            refs.iter().all(|r| r["uid"] != uid),
            "pod {n} still names its deleted owner: {refs:?}"
        );
    }
}

/// Now as a Lease's `MicroTime` (RFC 3339 with microseconds).
fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn renew_lease(c: &Client, node: &str) {
    let lease_info = info("coordination.k8s.io/v1", "Lease");
    let patch = json!({"spec": {"renewTime": micro_now()}});
    c.merge_patch(lease_info, Some("kube-node-lease"), node, None, &patch)
        .await
        .expect("renew lease");
}

fn has_taint(node: &Value, key: &str, effect: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == key && t["effect"] == effect))
}

fn ready_condition(node: &Value) -> Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_becomes_unknown_tainted_and_its_pods_are_evicted() {
    let fx = start().await;
    let c = &fx.client;
    let node_info = info("v1", "Node");
    let lease_info = info("coordination.k8s.io/v1", "Lease");
    let node = "node-quiet";

    c.create(
        node_info,
        None,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                           "message": "kubelet is posting ready status",
                                           "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                                           "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}),
    )
    .await
    .expect("create node");
    c.create(
        lease_info,
        Some("kube-node-lease"),
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": micro_now()}}),
    )
    .await
    .expect("create lease");
    let mut evictee = pod("evictee", json!({"app": "quiet"}), json!([]));
    evictee["spec"]["nodeName"] = json!(node);
    c.create(pods(), Some("default"), &evictee).await.expect("create pod");
    let mut tolerant = pod("tolerant", json!({"app": "quiet"}), json!([]));
    tolerant["spec"]["nodeName"] = json!(node);
    tolerant["spec"]["tolerations"] =
        json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]);
    c.create(pods(), Some("default"), &tolerant).await.expect("create pod");
    set_pod_status(c, "evictee", Some("127.64.1.1"), true).await;
    set_pod_status(c, "tolerant", Some("127.64.1.2"), true).await;

    // Nobody renews the lease from here on.
    let n = eventually(15, "the node marked Ready=Unknown and tainted unreachable", || async {
        let n = c.get(node_info, None, node).await.ok()?;
        (ready_condition(&n)["status"] == "Unknown"
            && has_taint(&n, "node.kubernetes.io/unreachable", "NoExecute")
            && has_taint(&n, "node.kubernetes.io/unreachable", "NoSchedule"))
        .then_some(n)
    })
    .await;
    let ready = ready_condition(&n);
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert_eq!(
        ready["lastHeartbeatTime"], "2025-01-01T00:00:00Z",
        "the heartbeat is the kubelet's, left as it was"
    );

    eventually(15, "the pod without toleration evicted", || async {
        get_opt(c, pods(), Some("default"), "evictee")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let evictions = events_with_reason(c, "TaintManagerEviction").await;
    assert!(
        evictions
            .iter()
            .any(|e| e["message"] == "Marking for deletion Pod default/evictee"
                && e["involvedObject"]["name"] == "evictee"),
        "{evictions:?}"
    );
    let not_ready = events_with_reason(c, "NodeNotReady").await;
    assert!(
        not_ready.iter().any(|e| e["involvedObject"]["kind"] == "Node"
            && e["message"] == format!("Node {node} status is now: NodeNotReady")),
        "{not_ready:?}"
    );
    assert!(
        not_ready.iter().any(|e| e["involvedObject"]["name"] == "tolerant"),
        "{not_ready:?}"
    );
    let t = get_opt(c, pods(), Some("default"), "tolerant")
        .await
        .expect("a pod tolerating the taint forever stays");
    assert_eq!(
        t["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"].clone()),
        Some(json!("False")),
        "pods on an unreachable node are marked not ready"
    );

    // The kubelet comes back: it renews the lease (and would post Ready=True itself).
    let renewer = {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                renew_lease(&c, "node-quiet").await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually(
        15,
        "the unreachable taints removed once the lease is renewed",
        || async {
            let n = c.get(node_info, None, node).await.ok()?;
            (!has_taint(&n, "node.kubernetes.io/unreachable", "NoExecute")
                && !has_taint(&n, "node.kubernetes.io/unreachable", "NoSchedule"))
            .then_some(())
        },
    )
    .await;
    renewer.abort();
}

async fn count_with_label(c: &Client, info: &'static objects::ResourceInfo, selector: &str) -> usize {
    let params = ListParams {
        label_selector: Some(selector.to_string()),
        ..ListParams::default()
    };
    let list = c.list(info, Some("default"), &params).await.expect("list");
    list["items"].as_array().map_or(0, Vec::len)
}

/// A Deployment made by the real Deployment and ReplicaSet controllers, deleted with
/// `policy`: the garbage collector cascades through both levels (Deployment → ReplicaSet →
/// Pods).
async fn deployment_cascade(policy: Option<&str>, name: &str) {
    let fx = start().await;
    let c = &fx.client;
    let deployments = info("apps/v1", "Deployment");
    c.create(
        deployments,
        Some("default"),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}),
    )
    .await
    .expect("create deployment");
    let selector = format!("app={name}");
    eventually(15, "the Deployment's ReplicaSet and two pods", || async {
        (count_with_label(c, replicasets(), &selector).await == 1 && count_with_label(c, pods(), &selector).await == 2)
            .then_some(())
    })
    .await;

    c.delete(deployments, Some("default"), name, policy)
        .await
        .expect("delete deployment");
    eventually(15, "the Deployment gone", || async {
        get_opt(c, deployments, Some("default"), name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    if policy == Some("Foreground") {
        // Foreground: the owner only goes after everything below it.
        assert_eq!(count_with_label(c, replicasets(), &selector).await, 0);
        assert_eq!(count_with_label(c, pods(), &selector).await, 0);
    }
    eventually(15, "its ReplicaSet and pods collected", || async {
        (count_with_label(c, replicasets(), &selector).await == 0 && count_with_label(c, pods(), &selector).await == 0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_cascades_in_the_background() {
    deployment_cascade(None, "cascade-bg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_in_the_foreground_removes_it_last() {
    deployment_cascade(Some("Foreground"), "cascade-fg").await;
}
