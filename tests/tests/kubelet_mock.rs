//! The kubelet on the mock runtime, against a real in-process API server: node
//! registration and lease, pods from Pending to Running with a loopback pod IP,
//! CrashLoopBackOff with growing delays, probes, image pull failures, graceful deletion and
//! the log endpoint.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kulisse_backends::runtime::mock::{MockOptions, MockRuntime};
use kulisse_core::client::{Client, ListParams};
use kulisse_core::kubelet::{Kubelet, KubeletOptions};
use kulisse_core::objects;
use kulisse_core::runtime::{ContainerRuntime, LABEL_POD_UID};
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::{Value, json};

fn kind(api_version: &str, k: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk(api_version, k).expect("built-in kind")
}

struct Node {
    fx: ApiServerFixture,
    runtime: MockRuntime,
    name: String,
}

/// An API server, a mock runtime and a kubelet with fast intervals for node `name`.
async fn start(name: &str) -> Node {
    start_with(KubeletOptions::fast(name)).await
}

/// An API server, a mock runtime and a kubelet with `options`.
async fn start_with(mut options: KubeletOptions) -> Node {
    let name = options.node_name.clone();
    let name = name.as_str();
    let fx = ApiServerFixture::start().await;
    let runtime = MockRuntime::new(MockOptions::default());
    options.tls = Some(fx.kubelet_tls(name));
    let kubelet = Kubelet::new(fx.client.clone(), Arc::new(runtime.clone()), options);
    let shutdown = fx.shutdown_rx();
    tokio::spawn(async move {
        if let Err(e) = kubelet.run(shutdown).await {
            panic!("the kubelet failed: {e:#}");
        }
    });
    let client = fx.client.clone();
    let node_name = name.to_string();
    eventually(20, "the node to register", || {
        let client = client.clone();
        let node_name = node_name.clone();
        async move { client.get(kind("v1", "Node"), None, &node_name).await.ok() }
    })
    .await;
    Node {
        fx,
        runtime,
        name: name.to_string(),
    }
}

impl Node {
    fn client(&self) -> &Client {
        &self.fx.client
    }

    async fn create_pod(&self, name: &str, annotations: Value, containers: Value, restart_policy: &str) -> Value {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations, "labels": {"app": name}},
            "spec": {"nodeName": self.name, "restartPolicy": restart_policy, "containers": containers},
        });
        self.client()
            .create(kind("v1", "Pod"), Some("default"), &pod)
            .await
            .expect("create pod")
    }

    /// Wait until `check` accepts the pod.
    async fn pod_until(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let check = &check;
        eventually(30, what, || async move {
            let pod = self.client().get(kind("v1", "Pod"), Some("default"), name).await.ok()?;
            check(&pod).then_some(pod)
        })
        .await
    }

    /// The events about pod `name` (reason, message, count).
    async fn events(&self, name: &str) -> Vec<(String, String, i64, String)> {
        let list = self
            .client()
            .list(kind("v1", "Event"), Some("default"), &ListParams::default())
            .await
            .expect("list events");
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(name))
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                    e["count"].as_i64().unwrap_or(0),
                    e.pointer("/source/component")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }
}

fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a str> {
    pod.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)?
        .get("status")?
        .as_str()
}

fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod.pointer("/status/containerStatuses")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn httpd() -> Value {
    json!([{"name": "httpd", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}])
}

/// GET `url` (a kubelet URL on loopback) with an optional bearer token.
/// GET `url` from a kubelet over HTTPS (its certificate checked against the fixture's CA),
/// presenting `identity`'s client certificate and/or `token`.
async fn get_text(
    fx: &ApiServerFixture,
    url: &str,
    identity: Option<&kulisse_core::client::tls::Identity>,
    token: Option<&str>,
) -> (u16, String) {
    let ca_pem = fx.kubelet_tls("node-7").ca_pem;
    let split = url
        .match_indices('/')
        .nth(2)
        .map(|(i, _)| i)
        .expect("a URL with a path");
    let (server, path) = url.split_at(split);
    let client = Client::with_identity(server, token.unwrap_or(""), Some(&ca_pem), identity).expect("client");
    let resp = client
        .request(http::Method::GET, path, &[], None)
        .await
        .expect("kubelet answers");
    let (status, body) = (resp.status.as_u16(), resp.body);
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_ready_and_renews_its_lease() {
    let node = start("node-3").await;
    let n = eventually(20, "node Ready=True with a heartbeat", || async {
        let n = node.client().get(kind("v1", "Node"), None, "node-3").await.ok()?;
        (condition(&n, "Ready") == Some("True")).then_some(n)
    })
    .await;
    assert_eq!(
        n.pointer("/metadata/labels/kubernetes.io~1hostname"),
        Some(&json!("node-3"))
    );
    assert_eq!(
        n.pointer("/status/nodeInfo/kubeletVersion"),
        Some(&json!("v1.33.0-kulisse"))
    );
    assert_eq!(
        n.pointer("/status/nodeInfo/containerRuntimeVersion"),
        Some(&json!("mock://0.1.0"))
    );
    assert_eq!(n.pointer("/status/capacity/pods"), Some(&json!("110")));
    assert_eq!(n.pointer("/status/allocatable/cpu"), Some(&json!("4")));
    assert_eq!(n.pointer("/spec/podCIDR"), Some(&json!("127.64.3.0/24")));
    let addresses = n.pointer("/status/addresses").and_then(Value::as_array).unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "InternalIP" && a["address"] == "127.0.0.1")
    );
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "Hostname" && a["address"] == "node-3")
    );
    for ty in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&n, ty), Some("False"), "{ty} in {n}");
    }
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap();
    assert!(port > 0);
    let (code, body) = get_text(&node.fx, &format!("https://127.0.0.1:{port}/healthz"), None, None).await;
    assert_eq!((code, body.trim()), (200, "ok"));

    let lease_info = kind("coordination.k8s.io/v1", "Lease");
    let first = eventually(20, "the node lease", || async {
        node.client()
            .get(lease_info, Some("kube-node-lease"), "node-3")
            .await
            .ok()
    })
    .await;
    assert_eq!(first.pointer("/spec/holderIdentity"), Some(&json!("node-3")));
    assert_eq!(first.pointer("/spec/leaseDurationSeconds"), Some(&json!(40)));
    let renew = first
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    // MicroTime: 2025-01-02T03:04:05.123456Z
    let fraction = renew.split('.').nth(1).unwrap_or("");
    assert!(
        fraction.len() == 7 && fraction.ends_with('Z'),
        "renewTime {renew} is not a MicroTime"
    );
    assert_eq!(
        first.pointer("/metadata/ownerReferences/0/kind"),
        Some(&json!("Node")),
        "the lease is owned by its node: {first}"
    );
    eventually(20, "the lease to be renewed", || async {
        let l = node
            .client()
            .get(lease_info, Some("kube-node-lease"), "node-3")
            .await
            .ok()?;
        let now = l.pointer("/spec/renewTime")?.as_str()?.to_string();
        (now > renew).then_some(())
    })
    .await;
    let hb = |n: &Value| {
        n.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["lastHeartbeatTime"].as_str())
            .map(str::to_string)
    };
    let first_hb = hb(&n).unwrap();
    eventually(20, "a newer node heartbeat", || async {
        let n = node.client().get(kind("v1", "Node"), None, "node-3").await.ok()?;
        (hb(&n)? > first_hb).then_some(())
    })
    .await;
}

/// The Node's status is computed every update interval but written only when it changed or
/// the report interval has passed (upstream's `nodeStatusReportFrequency`): the Lease is the
/// heartbeat, and a Node write would reach every watcher of Nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_node_status_is_not_written_again_until_the_report_interval() {
    let mut options = KubeletOptions::fast("node-4");
    options.node_status_update_interval = Duration::from_millis(100);
    options.node_status_report_interval = Duration::from_secs(3600);
    let node = start_with(options).await;
    let node_info = kind("v1", "Node");
    let rv = |n: &Value| {
        n.pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // Registering reported the status (`start_with` waited for the Node).
    let written = node.client().get(node_info, None, "node-4").await.unwrap();
    let lease_info = kind("coordination.k8s.io/v1", "Lease");
    let lease_rv = |l: Value| rv(&l);
    // The Lease follows the Node's registration: wait for it.
    let first_lease = lease_rv(
        eventually(20, "the node lease", || async {
            node.client()
                .get(lease_info, Some("kube-node-lease"), "node-4")
                .await
                .ok()
        })
        .await,
    );
    // Twenty update intervals later the lease was renewed, and the Node not written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = node.client().get(node_info, None, "node-4").await.unwrap();
    assert_eq!(
        rv(&later),
        rv(&written),
        "the Node was written again with nothing new: {later}"
    );
    let lease_now = lease_rv(
        node.client()
            .get(lease_info, Some("kube-node-lease"), "node-4")
            .await
            .unwrap(),
    );
    assert_ne!(lease_now, first_lease, "the Lease is the heartbeat: it was renewed");
    // A change is written at once: the kubelet puts back its Ready condition when someone
    // else (here the test, as the node lifecycle controller would) marks it Unknown.
    let mut conditions = later.pointer("/status/conditions").cloned().unwrap();
    for c in conditions.as_array_mut().unwrap() {
        if c["type"] == "Ready" {
            c["status"] = json!("Unknown");
        }
    }
    node.client()
        .merge_patch(
            node_info,
            None,
            "node-4",
            Some("status"),
            &json!({"status": {"conditions": conditions}}),
        )
        .await
        .unwrap();
    eventually(20, "the kubelet to report Ready again", || async {
        let n = node.client().get(node_info, None, "node-4").await.ok()?;
        (condition(&n, "Ready") == Some("True")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_a_loopback_ip_and_its_logs_are_served() {
    let node = start("node-7").await;
    node.create_pod("web", json!({}), httpd(), "Always").await;
    let pod = node
        .pod_until("web", "pod web Running and Ready", |p| {
            p.pointer("/status/phase") == Some(&json!("Running")) && condition(p, "Ready") == Some("True")
        })
        .await;
    let ip: std::net::Ipv4Addr = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap()
        .parse()
        .unwrap();
    assert!(ip.is_loopback(), "pod IP {ip} is inside 127.0.0.0/8");
    assert_eq!(
        &ip.octets()[..3],
        &[127, 64, 7],
        "pod IP {ip} comes from node-7's range 127.64.7.0/24"
    );
    assert_eq!(pod.pointer("/status/podIPs/0/ip"), pod.pointer("/status/podIP"));
    assert_eq!(pod.pointer("/status/hostIP"), Some(&json!("127.0.0.1")));
    assert!(pod.pointer("/status/startTime").is_some());
    for ty in ["Initialized", "ContainersReady", "PodReadyToStartContainers"] {
        assert_eq!(condition(&pod, ty), Some("True"), "{ty}: {pod}");
    }
    let cs = container_status(&pod, "httpd").unwrap();
    assert!(cs["containerID"].as_str().unwrap().starts_with("mock://"), "{cs}");
    assert!(
        cs["imageID"]
            .as_str()
            .unwrap()
            .starts_with("docker.io/library/nginx@sha256:"),
        "{cs}"
    );
    assert_eq!((cs["ready"].clone(), cs["started"].clone()), (json!(true), json!(true)));
    assert_eq!(cs["restartCount"], 0);
    assert!(cs.pointer("/state/running/startedAt").is_some(), "{cs}");

    // A settled pod is left alone: the status is written only when it changes. The signal
    // that the kubelet looked again: each relist asks the runtime for the container's
    // status; once it asked 21 more times, 20 whole syncs ran after `pod` was read.
    let container_id = cs["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("mock://")
        .to_string();
    let seen = node.runtime.status_reads(&container_id);
    eventually(30, "the kubelet to relist the settled pod 20 more times", || async {
        (node.runtime.status_reads(&container_id) > seen + 20).then_some(())
    })
    .await;
    let later = node
        .client()
        .get(kind("v1", "Pod"), Some("default"), "web")
        .await
        .unwrap();
    assert_eq!(
        later.pointer("/metadata/resourceVersion"),
        pod.pointer("/metadata/resourceVersion"),
        "no status write without a change: {later}"
    );

    let events = node.events("web").await;
    for reason in ["Pulling", "Pulled", "Created", "Started"] {
        assert!(
            events.iter().any(|(r, _, _, c)| r == reason && c == "kubelet"),
            "a {reason} event from the kubelet: {events:?}"
        );
    }
    assert!(
        events.iter().any(|(_, m, _, _)| m == "Pulling image \"nginx:1.27\""),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(_, m, _, _)| m == "Started container httpd"),
        "{events:?}"
    );

    // The kubelet's log endpoint.
    let n = node.client().get(kind("v1", "Node"), None, "node-7").await.unwrap();
    let port = n
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap();
    let base = format!("https://127.0.0.1:{port}/containerLogs/default/web/httpd");
    let fx = &node.fx;
    let apiserver = fx.identity(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
    );
    let me = Some(&apiserver);
    let (code, body) = get_text(fx, &base, me, None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[mock] httpd starting on port 8080"), "{body}");
    let (code, body) = get_text(fx, &format!("{base}?tailLines=1"), me, None).await;
    assert_eq!((code, body.lines().count()), (200, 1), "{body}");
    let (code, body) = get_text(fx, &format!("{base}?timestamps=true"), me, None).await;
    assert!(
        code == 200 && body.lines().all(|l| l.starts_with("20") && l.contains("Z [mock]")),
        "{body}"
    );
    // Only the API server's client certificate reads logs; no bearer token is read at all.
    let (code, _) = get_text(fx, &base, None, None).await;
    assert_eq!(code, 401, "the log endpoint demands a client certificate");
    let (code, _) = get_text(fx, &base, None, Some(&fx.token)).await;
    assert_eq!(code, 401, "the admin token is no credential here");
    let admin = fx.identity("admin", "kubernetes-admin", Some("system:masters"));
    let (code, body) = get_text(fx, &base, Some(&admin), None).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=kubernetes-admin, verb=get, resource=nodes, subresource=proxy)"
    );
    let (code, body) = get_text(fx, &format!("{base}?previous=true"), me, None).await;
    assert_eq!(code, 400, "no previous container yet: {body}");
    let (code, _) = get_text(
        fx,
        &format!("https://127.0.0.1:{port}/containerLogs/default/missing/httpd"),
        me,
        None,
    )
    .await;
    assert_eq!(code, 404);

    // `kubectl logs` goes through the API server, which proxies to this endpoint.
    let resp = node
        .client()
        .request(
            http::Method::GET,
            "/api/v1/namespaces/default/pods/web/log?container=httpd",
            &[],
            None,
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&resp.body);
    assert_eq!(resp.status.as_u16(), 200, "{text}");
    assert!(text.contains("[mock] httpd starting on port 8080"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_backs_off_longer_each_time() {
    let node = start("node-1").await;
    node.create_pod(
        "crash",
        json!({"mock.kulisse.dev/exit-after.app": "150ms", "mock.kulisse.dev/exit-code.app": "1"}),
        json!([{"name": "app", "image": "busybox:1.36"}]),
        "Always",
    )
    .await;
    // Record every CrashLoopBackOff delay the pod status shows, in order.
    let mut delays: Vec<String> = Vec::new();
    let mut last_pod = Value::Null;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(40);
    while tokio::time::Instant::now() < deadline {
        if let Ok(pod) = node.client().get(kind("v1", "Pod"), Some("default"), "crash").await {
            if let Some(cs) = container_status(&pod, "app")
                && cs.pointer("/state/waiting/reason") == Some(&json!("CrashLoopBackOff"))
            {
                let msg = cs
                    .pointer("/state/waiting/message")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
                assert!(
                    msg.starts_with("back-off ")
                        && msg.ends_with(&format!("restarting failed container=app pod=crash_default({uid})")),
                    "{msg}"
                );
                let delay = msg.split_whitespace().nth(1).unwrap_or("").to_string();
                if delays.last() != Some(&delay) {
                    delays.push(delay);
                }
            }
            let restarts = container_status(&pod, "app")
                .and_then(|c| c["restartCount"].as_u64())
                .unwrap_or(0);
            last_pod = pod;
            if restarts >= 4 && delays.len() >= 2 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let cs = container_status(&last_pod, "app").cloned().unwrap_or(Value::Null);
    assert!(
        cs["restartCount"].as_u64().unwrap_or(0) >= 4,
        "restartCount grows: {cs}"
    );
    assert!(delays.len() >= 2, "at least two back-off delays seen: {delays:?}");
    let parse = |d: &str| -> f64 {
        if let Some(ms) = d.strip_suffix("ms") {
            ms.parse::<f64>().unwrap() / 1000.0
        } else {
            d.trim_end_matches('s').parse::<f64>().unwrap()
        }
    };
    let secs: Vec<f64> = delays.iter().map(|d| parse(d)).collect();
    assert!(secs.windows(2).all(|w| w[0] < w[1]), "the delays grow: {delays:?}");
    assert_eq!(
        last_pod.pointer("/status/phase"),
        Some(&json!("Running")),
        "restartPolicy Always keeps it Running"
    );
    assert_eq!(cs.pointer("/lastState/terminated/exitCode"), Some(&json!(1)), "{cs}");
    assert_eq!(
        cs.pointer("/lastState/terminated/reason"),
        Some(&json!("Error")),
        "{cs}"
    );

    let events = node.events("crash").await;
    let backoff = events
        .iter()
        .find(|(r, _, _, _)| r == "BackOff")
        .unwrap_or_else(|| panic!("a BackOff event: {events:?}"));
    assert!(
        backoff
            .1
            .starts_with("Back-off restarting failed container app in pod crash_default("),
        "{backoff:?}"
    );
    assert!(
        backoff.2 >= 2,
        "the BackOff event repeats (count {}): {backoff:?}",
        backoff.2
    );
    let started = events
        .iter()
        .filter(|(r, _, _, _)| r == "Started")
        .map(|e| e.2)
        .sum::<i64>();
    assert!(started >= 3, "Started recorded for each restart: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_that_exits_zero_with_on_failure_makes_the_pod_succeed() {
    let node = start("node-2").await;
    node.create_pod(
        "job",
        json!({"mock.kulisse.dev/exit-after.task": "100ms"}),
        json!([{"name": "task", "image": "busybox:1.36"}]),
        "OnFailure",
    )
    .await;
    let pod = node
        .pod_until("job", "pod job Succeeded", |p| {
            p.pointer("/status/phase") == Some(&json!("Succeeded"))
        })
        .await;
    let cs = container_status(&pod, "task").unwrap();
    assert_eq!(cs.pointer("/state/terminated/exitCode"), Some(&json!(0)), "{cs}");
    assert_eq!(
        cs.pointer("/state/terminated/reason"),
        Some(&json!("Completed")),
        "{cs}"
    );
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(condition(&pod, "Ready"), Some("False"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_readiness_probe_keeps_the_pod_unready() {
    let node = start("node-4").await;
    let containers = json!([{
        "name": "httpd", "image": "nginx:1.27", "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
    }]);
    node.create_pod(
        "unready",
        json!({"mock.kulisse.dev/readiness.httpd": "fail"}),
        containers,
        "Always",
    )
    .await;
    eventually(30, "an Unhealthy readiness event", || async {
        let events = node.events("unready").await;
        events
            .iter()
            .any(|(r, m, _, _)| r == "Unhealthy" && m.starts_with("Readiness probe failed: HTTP probe failed"))
            .then_some(())
    })
    .await;
    let pod = node
        .client()
        .get(kind("v1", "Pod"), Some("default"), "unready")
        .await
        .unwrap();
    assert_eq!(pod.pointer("/status/phase"), Some(&json!("Running")));
    assert_eq!(condition(&pod, "Ready"), Some("False"), "{pod}");
    assert_eq!(condition(&pod, "ContainersReady"), Some("False"));
    let cs = container_status(&pod, "httpd").unwrap();
    assert_eq!(
        (cs["ready"].clone(), cs["started"].clone()),
        (json!(false), json!(true)),
        "{cs}"
    );
    assert!(cs.pointer("/state/running").is_some());
    assert_eq!(cs["restartCount"], 0, "readiness failures never restart a container");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_kills_and_restarts_the_container() {
    let node = start("node-5").await;
    let containers = json!([{
        "name": "app", "image": "busybox:1.36",
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1},
    }]);
    node.create_pod(
        "sick",
        json!({"mock.kulisse.dev/liveness.app": "fail"}),
        containers,
        "Always",
    )
    .await;
    node.pod_until("sick", "the container restarted", |p| {
        container_status(p, "app")
            .and_then(|c| c["restartCount"].as_u64())
            .unwrap_or(0)
            >= 1
    })
    .await;
    let events = node.events("sick").await;
    assert!(
        events
            .iter()
            .any(|(r, m, _, _)| r == "Unhealthy" && m.starts_with("Liveness probe failed")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m, _, _)| r == "Killing" && m == "Container app failed liveness probe, will be restarted"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_cannot_be_pulled_shows_err_image_pull_then_image_pull_backoff() {
    let node = start("node-6").await;
    node.create_pod(
        "nopull",
        json!({}),
        json!([{"name": "app", "image": "example.com/nonexistent:1.0"}]),
        "Always",
    )
    .await;
    let pod = node
        .pod_until("nopull", "ImagePullBackOff", |p| {
            container_status(p, "app").and_then(|c| c.pointer("/state/waiting/reason"))
                == Some(&json!("ImagePullBackOff"))
        })
        .await;
    let cs = container_status(&pod, "app").unwrap();
    let msg = cs.pointer("/state/waiting/message").and_then(Value::as_str).unwrap();
    assert!(
        msg.starts_with("Back-off pulling image \"example.com/nonexistent:1.0\"") && msg.contains("not found"),
        "{msg}"
    );
    assert_eq!(pod.pointer("/status/phase"), Some(&json!("Pending")));
    let events = node.events("nopull").await;
    assert!(
        events
            .iter()
            .any(|(r, m, _, _)| r == "Failed" && m == "Error: ErrImagePull"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(r, m, _, _)| r == "Failed"
            && m.starts_with("Failed to pull image \"example.com/nonexistent:1.0\": ")
            && m.contains("not found")),
        "{events:?}"
    );
    // The status shows ErrImagePull again at the next failed attempt.
    node.pod_until("nopull", "ErrImagePull", |p| {
        container_status(p, "app").and_then(|c| c.pointer("/state/waiting/reason")) == Some(&json!("ErrImagePull"))
    })
    .await;

    // imagePullPolicy: Never with a missing image.
    node.create_pod(
        "never",
        json!({}),
        json!([{"name": "app", "image": "busybox:9.9", "imagePullPolicy": "Never"}]),
        "Always",
    )
    .await;
    let pod = node
        .pod_until("never", "ErrImageNeverPull", |p| {
            container_status(p, "app").and_then(|c| c.pointer("/state/waiting/reason"))
                == Some(&json!("ErrImageNeverPull"))
        })
        .await;
    let cs = container_status(&pod, "app").unwrap();
    assert_eq!(
        cs.pointer("/state/waiting/message"),
        Some(&json!(
            "Container image \"busybox:9.9\" is not present with pull policy of Never"
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_stopped_removed_and_gone_for_good() {
    let node = start("node-8").await;
    let created = node.create_pod("doomed", json!({}), httpd(), "Always").await;
    let uid = created
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    node.pod_until("doomed", "pod doomed Running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let mut filter = BTreeMap::new();
    filter.insert(LABEL_POD_UID.to_string(), uid.clone());
    assert_eq!(node.runtime.list_pod_sandboxes(&filter).await.unwrap().len(), 1);

    let answer = node
        .client()
        .delete(kind("v1", "Pod"), Some("default"), "doomed", None)
        .await
        .expect("delete pod");
    let graceful = answer.pointer("/metadata/deletionTimestamp").is_some();
    eprintln!(
        "DELETE answered {}",
        if graceful {
            "with a deletionTimestamp (graceful deletion: the kubelet finishes it)"
        } else {
            "with the object removed at once (no graceful deletion in the API server)"
        }
    );
    eventually(30, "the pod to be gone from the API server", || async {
        match node.client().get(kind("v1", "Pod"), Some("default"), "doomed").await {
            Err(e) if e.code() == Some(404) => Some(()),
            _ => None,
        }
    })
    .await;
    eventually(
        30,
        "the sandbox and containers to be removed from the runtime",
        || async {
            let sandboxes = node.runtime.list_pod_sandboxes(&filter).await.ok()?;
            let containers = node.runtime.list_containers(&filter).await.ok()?;
            (sandboxes.is_empty() && containers.is_empty()).then_some(())
        },
    )
    .await;
    let events = node.events("doomed").await;
    assert!(
        events
            .iter()
            .any(|(r, m, _, _)| r == "Killing" && m == "Stopping container httpd"),
        "{events:?}"
    );
    // Gone for good: it does not come back. The signal that the kubelet went on working
    // after the pod was gone: its housekeeping (which removes what has no pod, and would
    // notice a pod that came back) lists every sandbox, here every 200 ms; wait for 5 more
    // rounds of it.
    let rounds = node.runtime.full_sandbox_lists();
    eventually(30, "5 more housekeeping rounds of the kubelet", || async {
        (node.runtime.full_sandbox_lists() >= rounds + 5).then_some(())
    })
    .await;
    let err = node
        .client()
        .get(kind("v1", "Pod"), Some("default"), "doomed")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404));
    assert_eq!(node.runtime.counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_syncs_continue_the_pods_trace_with_one_span_per_runtime_call() {
    kulisse_tests::local_traces::install("kubelet-mock-test");
    let node = start("node-9").await;
    // The API server records the trace of the create on the pod (`kulisse.dev/traceparent`);
    // the kubelet's work on the pod must continue that trace.
    // Created inside a span, as `kulisse apply` does: only writes that belong to a trace
    // carry one on.
    let created = tracing::Instrument::instrument(
        node.create_pod("traced", json!({}), httpd(), "Always"),
        tracing::info_span!("cli.apply", "kulisse.stage" = "cli"),
    )
    .await;
    let tp = created
        .pointer("/metadata/annotations/kulisse.dev~1traceparent")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the API server stamps the traceparent: {created}"))
        .to_string();
    let mut parts = tp.split('-');
    let (trace_id, parent) = (parts.nth(1).unwrap().to_string(), parts.next().unwrap().to_string());
    let (trace_id, parent) = (trace_id.as_str(), parent.as_str());
    node.pod_until("traced", "pod traced Running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    let wanted = [
        "kubelet.sync_pod",
        "runtime.run_pod_sandbox",
        "runtime.pull_image",
        "runtime.create_container",
        "runtime.start_container",
        "kubelet.status_update",
    ];
    let spans = eventually(20, "the kubelet's spans in the pod's trace", || async {
        let spans = kulisse_traces::span_store::global().spans_of(trace_id);
        wanted
            .iter()
            .all(|w| spans.iter().any(|s| s.name == *w))
            .then_some(spans)
    })
    .await;
    let sync = spans
        .iter()
        .find(|s| s.name == "kubelet.sync_pod" && s.parent_span_id.as_deref() == Some(parent))
        .unwrap_or_else(|| panic!("a sync_pod span whose parent is the annotation's span: {spans:#?}"));
    assert_eq!(sync.stage.as_deref(), Some("kubelet"));
    assert_eq!(sync.attributes.get("kubelet.node").map(String::as_str), Some("node-9"));
    assert_eq!(
        sync.attributes.get("kubelet.pod").map(String::as_str),
        Some("default/traced")
    );
    for s in spans.iter().filter(|s| s.name.starts_with("runtime.")) {
        assert_eq!(s.stage.as_deref(), Some("runtime"), "{s:?}");
        assert!(
            kulisse_traces::catalogue::span_info(&s.name).is_some(),
            "{} is catalogued",
            s.name
        );
    }
    let start = spans.iter().find(|s| s.name == "runtime.start_container").unwrap();
    assert!(
        start
            .attributes
            .get("runtime.container_id")
            .is_some_and(|id| id.len() == 64),
        "{start:?}"
    );
    let ip = start.attributes.get("runtime.pod_ip").cloned().unwrap_or_default();
    assert!(ip.starts_with("127.64.9."), "{start:?}");
    // A failed pull is an error span.
    let created = tracing::Instrument::instrument(
        node.create_pod(
            "traced-fail",
            json!({}),
            json!([{"name": "app", "image": "nonexistent/app:1"}]),
            "Always",
        ),
        tracing::info_span!("cli.apply", "kulisse.stage" = "cli"),
    )
    .await;
    let failing = created
        .pointer("/metadata/annotations/kulisse.dev~1traceparent")
        .and_then(Value::as_str)
        .and_then(|tp| tp.split('-').nth(1))
        .unwrap()
        .to_string();
    let failing = failing.as_str();
    let pull = eventually(20, "an error runtime.pull_image span", || async {
        kulisse_traces::span_store::global()
            .spans_of(failing)
            .into_iter()
            .find(|s| s.name == "runtime.pull_image" && s.is_error())
    })
    .await;
    assert!(pull.status_message.contains("not found"), "{pull:?}");
    assert_eq!(
        pull.attributes.get("runtime.image").map(String::as_str),
        Some("nonexistent/app:1")
    );
}

/// The mounts the mock runtime recorded for container `name` of pod `pod`.
fn mounts_of(node: &Node, pod: &Value, name: &str) -> Vec<kulisse_core::runtime::Mount> {
    let id = container_status(pod, name)
        .and_then(|c| c["containerID"].as_str())
        .unwrap_or_else(|| panic!("container {name} has an id: {pod}"))
        .trim_start_matches("mock://")
        .to_string();
    node.runtime.mounts(&id).expect("the mock knows the container")
}

fn mount<'a>(mounts: &'a [kulisse_core::runtime::Mount], path: &str) -> &'a kulisse_core::runtime::Mount {
    mounts
        .iter()
        .find(|m| m.container_path == path)
        .unwrap_or_else(|| panic!("a mount at {path}: {mounts:#?}"))
}

fn volumes_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "vols", "namespace": "default", "labels": {"app": "vols", "tier": "web"}},
        "spec": {
            "nodeName": "node-11",
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "conf", "configMap": {"name": "app", "items": [{"key": "a.conf", "path": "app.conf"}]}},
                {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "mem", "resourceFieldRef": {"containerName": "app", "resource": "limits.memory", "divisor": "1Mi"}}]}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "app"}},
                    {"secret": {"name": "db", "items": [{"key": "password", "path": "db/password"}]}}]}}
            ],
            "containers": [
                {"name": "app", "image": "nginx:1.27", "resources": {"limits": {"memory": "64Mi"}},
                 "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "ram", "mountPath": "/ram"},
                    {"name": "conf", "mountPath": "/etc/app"},
                    {"name": "conf", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
                    {"name": "creds", "mountPath": "/secrets"},
                    {"name": "info", "mountPath": "/info"},
                    {"name": "all", "mountPath": "/all"}]},
                {"name": "sidecar", "image": "nginx:1.27",
                 "volumeMounts": [{"name": "data", "mountPath": "/shared", "readOnly": true}]}
            ]
        }
    })
}

fn read(path: &str, file: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(path).join(file)).unwrap_or_else(|e| panic!("{path}/{file}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_prepared_mounted_updated_and_removed() {
    use std::os::unix::fs::PermissionsExt;
    kulisse_tests::local_traces::install("kubelet-mock-test");
    let node = start("node-11").await;
    let c = node.client();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": "s3cret"}});
    c.create(kind("v1", "Secret"), Some("default"), &secret).await.unwrap();
    let created = tracing::Instrument::instrument(
        c.create(kind("v1", "Pod"), Some("default"), &volumes_pod()),
        tracing::info_span!("cli.apply", "kulisse.stage" = "cli"),
    )
    .await
    .unwrap();

    // No ConfigMap "app" yet: the pod waits, and says why in upstream's words.
    let events = eventually(20, "a FailedMount event", || async {
        let events = node.events("vols").await;
        events.iter().any(|e| e.0 == "FailedMount").then_some(events)
    })
    .await;
    let failed = events.iter().find(|e| e.0 == "FailedMount").unwrap();
    assert_eq!(
        failed.1,
        "MountVolume.SetUp failed for volume \"conf\" : configmap \"app\" not found"
    );
    let pod = node
        .pod_until("vols", "containers waiting in ContainerCreating", |p| {
            container_status(p, "app").is_some()
        })
        .await;
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert_eq!(
        container_status(&pod, "app").unwrap()["state"]["waiting"]["reason"],
        "ContainerCreating"
    );

    // The ConfigMap appears: the pod starts, with every volume mounted.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
        "data": {"a.conf": "colour=blue\n"}});
    c.create(kind("v1", "ConfigMap"), Some("default"), &cm).await.unwrap();
    let pod = node
        .pod_until("vols", "pod vols Running", |p| p["status"]["phase"] == "Running")
        .await;
    let app = mounts_of(&node, &pod, "app");
    let sidecar = mounts_of(&node, &pod, "sidecar");
    let data = mount(&app, "/data");
    assert!(!data.readonly && data.volume == "data");
    assert_eq!(
        data.host_path,
        mount(&sidecar, "/shared").host_path,
        "one emptyDir, shared"
    );
    assert!(mount(&sidecar, "/shared").readonly);
    assert!(mount(&app, "/ram").host_path.starts_with("/dev/shm/") || !std::path::Path::new("/dev/shm").is_dir());
    let conf = mount(&app, "/etc/app");
    assert!(conf.readonly, "configMap volumes are read-only");
    assert_eq!(read(&conf.host_path, "app.conf"), "colour=blue\n");
    assert_eq!(
        std::fs::read_to_string(&mount(&app, "/etc/app.conf").host_path).unwrap(),
        "colour=blue\n"
    );
    let creds = &mount(&app, "/secrets").host_path;
    assert_eq!(read(creds, "password"), "s3cret");
    let mode = std::fs::metadata(std::path::Path::new(creds).join("password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400, "defaultMode");
    let info = &mount(&app, "/info").host_path;
    assert_eq!(read(info, "labels"), "app=\"vols\"\ntier=\"web\"");
    assert_eq!(read(info, "mem"), "64");
    let all = &mount(&app, "/all").host_path;
    assert_eq!(
        (read(all, "a.conf"), read(all, "db/password")),
        ("colour=blue\n".into(), "s3cret".into())
    );

    // An update of the ConfigMap reaches the mounted directory (the ..data swap).
    let mut cm = c.get(kind("v1", "ConfigMap"), Some("default"), "app").await.unwrap();
    cm["data"]["a.conf"] = json!("colour=green\n");
    c.replace(kind("v1", "ConfigMap"), Some("default"), "app", None, &cm)
        .await
        .unwrap();
    let conf_dir = conf.host_path.clone();
    eventually(20, "the new ConfigMap content in the volume", || {
        let conf_dir = conf_dir.clone();
        async move { (read(&conf_dir, "app.conf") == "colour=green\n").then_some(()) }
    })
    .await;

    // The work is in the pod's trace.
    let trace_id = created
        .pointer("/metadata/annotations/kulisse.dev~1traceparent")
        .and_then(Value::as_str)
        .and_then(|tp| tp.split('-').nth(1))
        .unwrap()
        .to_string();
    // Volumes are set up as their sources allow (the emptyDirs at once, `conf` once its
    // ConfigMap exists), and again when a source changes. (The last span ends just after the
    // files are written: wait for it.)
    let spans = eventually(20, "kubelet.mount_volumes spans for data and twice for conf", || {
        let trace_id = trace_id.clone();
        async move {
            let spans = kulisse_traces::span_store::global().spans_of(&trace_id);
            let listed: Vec<String> = spans
                .iter()
                .filter(|s| s.name == "kubelet.mount_volumes")
                .filter_map(|s| s.attributes.get("kubelet.volumes").cloned())
                .collect();
            (listed.iter().any(|l| l.contains("data (emptyDir)"))
                && listed.iter().filter(|l| l.contains("conf (configMap)")).count() >= 2)
                .then_some(spans)
        }
    })
    .await;
    let create = spans
        .iter()
        .find(|s| s.name == "runtime.create_container" && s.attributes.contains_key("runtime.mounts"))
        .unwrap_or_else(|| panic!("a create_container span with runtime.mounts: {spans:#?}"));
    assert!(create.attributes["runtime.mounts"].contains("data:/"), "{create:?}");

    // Deleting the pod removes its volumes from the node.
    c.delete(kind("v1", "Pod"), Some("default"), "vols", None)
        .await
        .unwrap();
    let data_dir = data.host_path.clone();
    eventually(30, "the pod's volume directories removed", || {
        let (d, s) = (data_dir.clone(), creds.clone());
        async move { (!std::path::Path::new(&d).exists() && !std::path::Path::new(&s).exists()).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_config_maps_secrets_and_the_downward_api_waits_for_a_missing_key() {
    let node = start("node-12").await;
    let c = node.client();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": "s3cret", "user": "admin"}});
    c.create(kind("v1", "Secret"), Some("default"), &secret).await.unwrap();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
        "data": {"mode": "fast"}});
    c.create(kind("v1", "ConfigMap"), Some("default"), &cm).await.unwrap();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "envy", "namespace": "default", "labels": {"tier": "web"}},
        "spec": {"nodeName": "node-12", "containers": [{
            "name": "app", "image": "nginx:1.27",
            "resources": {"limits": {"memory": "32Mi"}},
            "command": ["echo", "$(GREETING)"],
            "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "APP_"}, {"secretRef": {"name": "db"}}],
            "env": [
                {"name": "COLOUR", "valueFrom": {"configMapKeyRef": {"name": "app", "key": "colour"}}},
                {"name": "user", "value": "overridden"},
                {"name": "GREETING", "value": "hello $(user) in $(POD_NAME)"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "TIER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}},
                {"name": "MEM_MB", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "MAYBE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": true}}}
            ]}]}
    });
    c.create(kind("v1", "Pod"), Some("default"), &pod).await.unwrap();

    // The key `colour` is missing: CreateContainerConfigError, in upstream's words.
    let waiting = node
        .pod_until("envy", "CreateContainerConfigError", |p| {
            container_status(p, "app").is_some_and(|c| c["state"]["waiting"]["reason"] == "CreateContainerConfigError")
        })
        .await;
    let cs = container_status(&waiting, "app").unwrap();
    assert_eq!(
        cs["state"]["waiting"]["message"],
        "couldn't find key colour in ConfigMap default/app"
    );
    assert_eq!(waiting["status"]["phase"], "Pending");
    let events = node.events("envy").await;
    assert!(
        events
            .iter()
            .any(|e| e.0 == "Failed" && e.1 == "Error: couldn't find key colour in ConfigMap default/app"),
        "{events:?}"
    );

    // The key appears: the container starts with the whole environment.
    let mut cm = c.get(kind("v1", "ConfigMap"), Some("default"), "app").await.unwrap();
    cm["data"]["colour"] = json!("blue");
    c.replace(kind("v1", "ConfigMap"), Some("default"), "app", None, &cm)
        .await
        .unwrap();
    let running = node
        .pod_until("envy", "envy Running", |p| p["status"]["phase"] == "Running")
        .await;
    let id = container_status(&running, "app").unwrap()["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("mock://")
        .to_string();
    let env: BTreeMap<String, String> = node
        .runtime
        .env(&id)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("APP_mode"), Some("fast"));
    assert_eq!(get("APP_colour"), Some("blue"));
    assert_eq!(get("password"), Some("s3cret"));
    assert_eq!(get("user"), Some("overridden"), "env wins over envFrom");
    assert_eq!(get("COLOUR"), Some("blue"));
    assert_eq!(
        get("GREETING"),
        Some("hello overridden in $(POD_NAME)"),
        "only earlier variables expand"
    );
    assert_eq!(get("POD_NAME"), Some("envy"));
    assert_eq!(get("POD_IP"), running["status"]["podIP"].as_str());
    assert_eq!(get("TIER"), Some("web"));
    assert_eq!(get("MEM_MB"), Some("32"));
    assert_eq!(get("MAYBE"), None, "an optional missing secret sets nothing");
}

impl Node {
    async fn create_pod_with_inits(&self, name: &str, annotations: Value, inits: Value, policy: &str) -> Value {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"nodeName": self.name, "restartPolicy": policy, "initContainers": inits,
                     "containers": [{"name": "app", "image": "busybox:1.36"}]},
        });
        self.client()
            .create(kind("v1", "Pod"), Some("default"), &pod)
            .await
            .expect("create pod")
    }

    /// Watch the pod's STATUS column (as `kubectl get pods` prints it) until `until`
    /// accepts the pod; returns the distinct columns seen, in order, and the last pod.
    async fn statuses_until(&self, name: &str, until: impl Fn(&Value) -> bool) -> (Vec<String>, Value) {
        let mut seen: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(pod) = self.client().get(kind("v1", "Pod"), Some("default"), name).await {
                let column = kulisse_core::printers::pod_status(&pod);
                if pod.get("status").is_some() && seen.last() != Some(&column) {
                    seen.push(column);
                }
                if until(&pod) {
                    return (seen, pod);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("pod {name} did not reach the expected state; STATUS went {seen:?}");
    }
}

fn init_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod.pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("an initContainerStatus for {name}: {pod}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order_before_the_app_containers() {
    let node = start("node-init").await;
    node.create_pod_with_inits(
        "web",
        json!({"mock.kulisse.dev/exit-after.fetch": "300ms", "mock.kulisse.dev/exit-after.render": "300ms"}),
        json!([{"name": "fetch", "image": "busybox:1.36"}, {"name": "render", "image": "busybox:1.36"}]),
        "Always",
    )
    .await;
    let (seen, pod) = node
        .statuses_until("web", |p| p.pointer("/status/phase") == Some(&json!("Running")))
        .await;
    assert!(seen.contains(&"Init:0/2".to_string()), "{seen:?}");
    assert!(seen.contains(&"Init:1/2".to_string()), "{seen:?}");
    let pos = |s: &str| seen.iter().position(|x| x == s);
    assert!(pos("Init:0/2") < pos("Init:1/2"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("Running"), "{seen:?}");
    // In order: each one starts after the one before finished.
    let time = |c: &Value, p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
    let (fetch, render) = (init_status(&pod, "fetch"), init_status(&pod, "render"));
    assert_eq!(
        fetch.pointer("/state/terminated/reason"),
        Some(&json!("Completed")),
        "{fetch}"
    );
    assert!(time(render, "/state/terminated/startedAt") >= time(fetch, "/state/terminated/finishedAt"));
    let app = container_status(&pod, "app").unwrap();
    assert!(time(app, "/state/running/startedAt") >= time(render, "/state/terminated/finishedAt"));
    assert_eq!(condition(&pod, "Initialized"), Some("True"));
    assert_eq!(fetch["restartCount"], 0);
}

/// Init containers with no mock annotation complete by themselves, in order (as their
/// commands would), and the app starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannotated_init_containers_complete_by_themselves() {
    let node = start("node-init-plain").await;
    node.create_pod_with_inits(
        "plain",
        json!({}),
        json!([{"name": "setup", "image": "busybox:1.36"},
               {"name": "migrate", "image": "busybox:1.36"}]),
        "Always",
    )
    .await;
    let (seen, pod) = node
        .statuses_until("plain", |p| p.pointer("/status/phase") == Some(&json!("Running")))
        .await;
    assert!(seen.contains(&"Init:0/2".to_string()), "{seen:?}");
    let setup = init_status(&pod, "setup");
    assert_eq!(setup.pointer("/state/terminated/exitCode"), Some(&json!(0)), "{setup}");
    let migrate = init_status(&pod, "migrate");
    assert_eq!(
        migrate.pointer("/state/terminated/exitCode"),
        Some(&json!(0)),
        "{migrate}"
    );
    assert!(
        container_status(&pod, "app")
            .unwrap()
            .pointer("/state/running")
            .is_some()
    );
    assert_eq!(condition(&pod, "Initialized"), Some("True"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_init_container_fails_the_pod_with_never_and_backs_off_otherwise() {
    let node = start("node-init-fail").await;
    let failing = json!({"mock.kulisse.dev/exit-after.setup": "100ms", "mock.kulisse.dev/exit-code.setup": "3"});
    let inits = json!([{"name": "setup", "image": "busybox:1.36"}, {"name": "later", "image": "busybox:1.36"}]);
    node.create_pod_with_inits("once", failing.clone(), inits.clone(), "Never")
        .await;
    node.create_pod_with_inits("again", failing, inits, "Always").await;
    let (seen, pod) = node
        .statuses_until("once", |p| p.pointer("/status/phase") == Some(&json!("Failed")))
        .await;
    assert_eq!(seen.last().map(String::as_str), Some("Init:Error"), "{seen:?}");
    let init = pod.pointer("/status/conditions").and_then(Value::as_array).unwrap();
    let initialized = init.iter().find(|c| c["type"] == "Initialized").unwrap();
    assert_eq!(initialized["status"], "False");
    assert_eq!(initialized["reason"], "ContainersNotInitialized");
    assert_eq!(
        initialized["message"],
        "containers with incomplete status: [setup later]"
    );
    assert_eq!(
        container_status(&pod, "app").and_then(|c| c.pointer("/state/waiting/reason")),
        Some(&json!("PodInitializing"))
    );
    assert_eq!(
        init_status(&pod, "setup").pointer("/state/terminated/exitCode"),
        Some(&json!(3))
    );

    let (seen, pod) = node
        .statuses_until("again", |p| {
            p.pointer("/status/initContainerStatuses/0/restartCount")
                .and_then(Value::as_u64)
                >= Some(2)
                && kulisse_core::printers::pod_status(p) == "Init:CrashLoopBackOff"
        })
        .await;
    assert!(seen.contains(&"Init:Error".to_string()) || seen.contains(&"Init:CrashLoopBackOff".to_string()));
    assert_eq!(pod.pointer("/status/phase"), Some(&json!("Pending")));
    let setup = init_status(&pod, "setup");
    assert_eq!(
        setup.pointer("/lastState/terminated/exitCode"),
        Some(&json!(3)),
        "{setup}"
    );
    // The app container never ran, nor did the second init container.
    assert_eq!(
        init_status(&pod, "later").pointer("/state/waiting/reason"),
        Some(&json!("PodInitializing"))
    );
    assert!(container_status(&pod, "app").unwrap().get("containerID").is_none());
}

/// Lifecycle hooks: a postStart that succeeds leaves the container alone; one that fails
/// is an event `FailedPostStartHook` in upstream's words, the container is killed and the
/// restart policy restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_start_hook_kills_the_container_and_it_restarts() {
    let node = start("node-13").await;
    let hooked = |cmd: &str| {
        json!([{"name": "app", "image": "busybox:1.36",
            "lifecycle": {"postStart": {"exec": {"command": [cmd]}}}}])
    };
    node.create_pod("good-hook", json!({}), hooked("true"), "Always").await;
    node.create_pod("bad-hook", json!({}), hooked("false"), "Always").await;
    node.pod_until("bad-hook", "the container restarted after its hook failed", |p| {
        container_status(p, "app")
            .and_then(|c| c["restartCount"].as_u64())
            .unwrap_or(0)
            >= 1
    })
    .await;
    let events = node.events("bad-hook").await;
    assert!(
        events.iter().any(|(r, m, _, _)| r == "FailedPostStartHook"
            && m.starts_with("Exec lifecycle hook ([false]) for Container \"app\" in Pod \"bad-hook_default(")
            && m.contains("failed - error: ")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(r, m, _, _)| r == "Killing" && m == "FailedPostStartHook"),
        "{events:?}"
    );
    let good = node
        .pod_until("good-hook", "pod good-hook Running", |p| {
            p.pointer("/status/phase") == Some(&json!("Running"))
        })
        .await;
    assert_eq!(container_status(&good, "app").unwrap()["restartCount"], 0, "{good}");
    let events = node.events("good-hook").await;
    assert!(!events.iter().any(|(r, _, _, _)| r.starts_with("Failed")), "{events:?}");
}

/// A preStop hook runs before the container is stopped when its pod is deleted; one that
/// fails is reported (`FailedPreStopHook`) and the pod goes anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_stop_hook_runs_before_the_stop_and_a_failure_is_reported() {
    let node = start("node-14").await;
    let containers = json!([{"name": "app", "image": "busybox:1.36",
        "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "exit 3"]}}}}]);
    node.create_pod("draining", json!({}), containers, "Always").await;
    node.pod_until("draining", "pod draining Running", |p| {
        p.pointer("/status/phase") == Some(&json!("Running"))
    })
    .await;
    node.client()
        .delete(kind("v1", "Pod"), Some("default"), "draining", None)
        .await
        .expect("delete pod");
    eventually(30, "the pod to be gone from the API server", || async {
        match node.client().get(kind("v1", "Pod"), Some("default"), "draining").await {
            Err(e) if e.code() == Some(404) => Some(()),
            _ => None,
        }
    })
    .await;
    let events = node.events("draining").await;
    assert!(
        events.iter().any(|(r, m, _, _)| r == "FailedPreStopHook"
            && m.starts_with("Exec lifecycle hook ([sh -c exit 3]) for Container \"app\" in Pod \"draining_default(")),
        "{events:?}"
    );
}
