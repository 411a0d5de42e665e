//! End-to-end flows of the control loops on the mock runtime, driven through the real
//! `kulisse` binary exactly as a learner would: `kulisse up --nodes 3`, then `apply`,
//! `get`, `describe`, `scale`, `rollout status`, `delete`.

use std::time::{Duration, Instant};

use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::{is_ready, items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

const SHOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/shop.yaml");

fn running_ready_pods(c: &Cluster, ns: &str, selector: &str) -> Vec<Value> {
    items(&json(c, &["get", "pods", "-n", ns, "-l", selector]))
        .into_iter()
        .filter(|p| {
            s(p, "/status/phase") == "Running" && is_ready(p) && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect()
}

/// Wait until `n` nodes are registered and `Ready`; returns them.
fn wait_nodes_ready(c: &Cluster, n: usize) -> Vec<Value> {
    wait_for(60, "nodes Ready", || {
        let nodes = items(&json(c, &["get", "nodes"]));
        (nodes.len() == n
            && nodes.iter().all(|n| {
                n.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
            }))
        .then_some(nodes)
    })
}

fn up(extra: &[&str]) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--fast-failover", "--crashloop-backoff", "1s"];
    args.extend_from_slice(extra);
    (Cluster::start_in(dir.path(), &args), dir)
}

#[test]
fn a_multi_document_app_runs_spread_over_three_nodes() {
    let (c, _dir) = up(&["--nodes", "3"]);
    // As a user would: wait for the nodes before placing work on them.
    wait_nodes_ready(&c, 3);
    let out = c.ok(&["apply", "-f", SHOP]);
    assert!(
        out.contains("namespace/shop created") && out.contains("service/frontend created"),
        "{out}"
    );
    let frontend = wait_for(60, "3 frontend pods Running and Ready", || {
        let p = running_ready_pods(&c, "shop", "app=frontend");
        (p.len() == 3).then_some(p)
    });
    wait_for(60, "2 backend pods Running and Ready", || {
        (running_ready_pods(&c, "shop", "app=backend").len() == 2).then_some(())
    });

    // Spread: the scheduler's scores put three equal pods on three equal nodes.
    let mut nodes: Vec<&str> = frontend.iter().map(|p| s(p, "/spec/nodeName")).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        3,
        "frontend pods should be spread over the 3 nodes: {nodes:?}"
    );
    for p in &frontend {
        let ip: std::net::Ipv4Addr = s(p, "/status/podIP").parse().expect("pod IP");
        assert!(ip.is_loopback(), "mock pod IPs stay inside 127.0.0.0/8: {ip}");
    }

    // Endpoints list exactly the ready pods, with the named targetPort resolved.
    wait_for(30, "frontend endpoints", || {
        let ep = json(&c, &["get", "endpoints", "frontend", "-n", "shop"]);
        let addrs: Vec<String> = ep
            .pointer("/subsets/0/addresses")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|a| s(a, "/ip").to_string()).collect())
            .unwrap_or_default();
        let port = ep.pointer("/subsets/0/ports/0/port").and_then(Value::as_i64);
        let mut want: Vec<String> = frontend.iter().map(|p| s(p, "/status/podIP").to_string()).collect();
        want.sort();
        let mut got = addrs.clone();
        got.sort();
        (got == want && port == Some(8080)).then_some(())
    });

    // Services got loopback ClusterIPs and the NodePort a node port.
    let svc = json(&c, &["get", "svc", "frontend", "-n", "shop"]);
    let range_prefix = c.service_cidr.trim_end_matches("0.0/16");
    assert!(
        s(&svc, "/spec/clusterIP").starts_with(range_prefix),
        "the ClusterIP comes from {}: {svc}",
        c.service_cidr
    );
    let node_port = svc
        .pointer("/spec/ports/0/nodePort")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    assert!((30000..=32767).contains(&node_port), "{svc}");

    // The table views a learner looks at.
    let wide = c.ok(&["get", "pods", "-n", "shop", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        &header[..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"],
        "{wide}"
    );
    assert!(wide.contains("Running") && wide.contains("1/1"), "{wide}");
    // The Deployment's READY column follows the pods one hop later: the ReplicaSet controller
    // counts the ready pods into its status, then the Deployment controller copies that count.
    // Under load that can trail the pods by a moment (run 36 of 50 once saw `2/3` here).
    wait_for(30, "frontend deployment 3/3", || {
        let deploy = c.ok(&["get", "deploy", "-n", "shop"]);
        deploy
            .lines()
            .any(|l| l.starts_with("frontend") && l.contains("3/3"))
            .then_some(())
    });

    // kube-proxy's rule table has the service and the node port.
    let rules = wait_for(30, "proxy rules", || {
        let r = c.ok(&["get", "proxyrules"]);
        (r.contains(s(&svc, "/spec/clusterIP")) && r.contains(&node_port.to_string())).then_some(r)
    });
    assert!(rules.contains(":8080"), "{rules}");
}

#[test]
fn a_pod_that_fits_nowhere_stays_pending_with_an_event() {
    let (c, dir) = up(&["--nodes", "3"]);
    // As a user would: wait for the nodes, so the scheduler's verdict covers all three.
    wait_nodes_ready(&c, 3);
    let big = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: huge\nspec:\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n    resources:\n      requests:\n        cpu: \"64\"\n";
    let f = dir.path().join("huge.yaml");
    std::fs::write(&f, big).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let d = wait_for(30, "FailedScheduling event in describe", || {
        let d = c.ok(&["describe", "pod", "huge"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(d.contains("0/3 nodes are available: 3 Insufficient cpu."), "{d}");
    let pod = json(&c, &["get", "pod", "huge"]);
    assert_eq!(s(&pod, "/status/phase"), "Pending");
    assert_eq!(s(&pod, "/spec/nodeName"), "");
}

#[test]
fn scale_rolling_update_delete_and_a_bare_pod() {
    let (c, dir) = up(&["--nodes", "3"]);
    c.ok(&["apply", "-f", SHOP]);
    wait_for(60, "3 frontend pods", || {
        (running_ready_pods(&c, "shop", "app=frontend").len() == 3).then_some(())
    });

    assert_eq!(
        c.ok(&["scale", "deployment/frontend", "--replicas", "5", "-n", "shop"])
            .trim(),
        "deployment.apps/frontend scaled"
    );
    wait_for(60, "5 frontend pods", || {
        (running_ready_pods(&c, "shop", "app=frontend").len() == 5).then_some(())
    });
    c.ok(&["scale", "deployment", "frontend", "--replicas", "2", "-n", "shop"]);
    wait_for(60, "2 frontend pods", || {
        (items(&json(&c, &["get", "pods", "-n", "shop", "-l", "app=frontend"])).len() == 2).then_some(())
    });

    // Rolling update to a new image, with maxUnavailable 0: never fewer than 2 ready pods.
    let changed = std::fs::read_to_string(SHOP).unwrap().replace(
        "          command: [\"httpd\", \"-f\", \"-p\", \"8080\"]",
        "          command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-v\"]",
    );
    let changed = changed.replacen(
        "  replicas: 3\n",
        "  replicas: 2\n  strategy:\n    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}\n",
        1,
    );
    let f = dir.path().join("shop-v2.yaml");
    std::fs::write(&f, changed).unwrap();
    assert!(
        c.ok(&["apply", "-f", f.to_str().unwrap()])
            .contains("deployment.apps/frontend configured")
    );
    let watcher = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut min_ready = usize::MAX;
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                min_ready = min_ready.min(running_ready_pods(&c, "shop", "app=frontend").len());
                let d = json(&c, &["get", "deploy", "frontend", "-n", "shop"]);
                if rollout_done(&d) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            min_ready
        });
        let out = c.ok(&[
            "rollout",
            "status",
            "deployment/frontend",
            "-n",
            "shop",
            "--timeout",
            "90",
        ]);
        assert!(
            out.trim_end()
                .ends_with("deployment \"frontend\" successfully rolled out"),
            "{out}"
        );
        sampler.join().unwrap()
    });
    assert!(
        watcher >= 2,
        "maxUnavailable 0 was not respected: only {watcher} ready pods at one point"
    );
    let rs = items(&json(&c, &["get", "rs", "-n", "shop", "-l", "app=frontend"]));
    assert_eq!(rs.len(), 2, "old and new ReplicaSet");
    assert!(
        rs.iter()
            .any(|r| r.pointer("/spec/replicas").and_then(Value::as_i64) == Some(0)),
        "old ReplicaSet scaled to 0"
    );

    // Deleting the Deployment removes its ReplicaSets and pods.
    c.ok(&["delete", "deployment", "frontend", "-n", "shop"]);
    wait_for(60, "ReplicaSets and pods of frontend gone", || {
        let rs = items(&json(&c, &["get", "rs", "-n", "shop", "-l", "app=frontend"]));
        let pods = items(&json(&c, &["get", "pods", "-n", "shop", "-l", "app=frontend"]));
        (rs.is_empty() && pods.is_empty()).then_some(())
    });

    // A bare pod runs too.
    let bare = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n  containers:\n  - name: c\n    image: localhost/busybox:latest\n";
    let f = dir.path().join("solo.yaml");
    std::fs::write(&f, bare).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    wait_for(30, "bare pod Running", || {
        (s(&json(&c, &["get", "pod", "solo"]), "/status/phase") == "Running").then_some(())
    });
    let logs = c.ok(&["logs", "solo"]);
    assert!(!logs.is_empty(), "the mock runtime writes some log lines");
}

fn rollout_done(d: &Value) -> bool {
    let i = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(-1);
    i("/status/observedGeneration") >= i("/metadata/generation")
        && i("/status/updatedReplicas") == i("/spec/replicas")
        && i("/status/replicas") == i("/spec/replicas")
        && i("/status/availableReplicas") == i("/spec/replicas")
}

#[test]
fn crashloop_backoff_and_readiness() {
    let (c, dir) = up(&["--nodes", "2"]);
    let manifest = r#"apiVersion: v1
kind: Pod
metadata:
  name: crasher
  annotations:
    mock.kulisse.dev/exit-after.c: 200ms
    mock.kulisse.dev/exit-code.c: "1"
spec:
  containers:
  - name: c
    image: localhost/busybox:latest
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: flaky
spec:
  replicas: 2
  selector:
    matchLabels: {app: flaky}
  template:
    metadata:
      labels: {app: flaky}
    spec:
      containers:
      - name: c
        image: localhost/busybox:latest
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: flaky
spec:
  selector: {app: flaky}
  ports: [{port: 8080}]
"#;
    let f = dir.path().join("crash.yaml");
    std::fs::write(&f, manifest).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);

    // CrashLoopBackOff with growing delays between restarts.
    let pod = wait_for(90, "restartCount >= 3 and CrashLoopBackOff", || {
        let p = json(&c, &["get", "pod", "crasher"]);
        let restarts = p
            .pointer("/status/containerStatuses/0/restartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let table = c.ok(&["get", "pod", "crasher"]);
        (restarts >= 3 && table.contains("CrashLoopBackOff")).then_some(p)
    });
    assert_eq!(
        pod.pointer("/status/containerStatuses/0/lastState/terminated/exitCode")
            .and_then(Value::as_i64),
        Some(1),
        "{pod}"
    );
    let backoffs: Vec<String> = items(&json(
        &c,
        &["get", "events", "--field-selector", "involvedObject.name=crasher"],
    ))
    .iter()
    .filter(|e| s(e, "/reason") == "BackOff")
    .map(|e| s(e, "/message").to_string())
    .collect();
    assert!(!backoffs.is_empty(), "BackOff events are recorded");

    // Readiness: a pod whose probe starts failing after a while leaves the endpoints; the
    // healthy one stays.
    let readiness = r#"apiVersion: v1
kind: Pod
metadata:
  name: tiring
  labels: {app: flaky}
  annotations:
    mock.kulisse.dev/readiness.c: fail-after=4s
spec:
  containers:
  - name: c
    image: localhost/busybox:latest
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
"#;
    let f = dir.path().join("tiring.yaml");
    std::fs::write(&f, readiness).unwrap();
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let ip = wait_for(30, "the tiring pod is ready and in the endpoints", || {
        let p = json(&c, &["get", "pod", "tiring"]);
        let ip = s(&p, "/status/podIP").to_string();
        (is_ready(&p) && ready_addresses(&c, "flaky").contains(&ip)).then_some(ip)
    });
    wait_for(60, "the unready pod leaves the endpoints, the others stay", || {
        let ready = ready_addresses(&c, "flaky");
        (ready.len() == 2 && !ready.contains(&ip)).then_some(())
    });
    let p = json(&c, &["get", "pod", "tiring"]);
    assert!(!is_ready(&p), "{p}");
    assert_eq!(s(&p, "/status/phase"), "Running", "an unready pod keeps running");
}

fn ready_addresses(c: &Cluster, svc: &str) -> Vec<String> {
    let ep = json(c, &["get", "endpoints", svc]);
    ep.pointer("/subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s.get("addresses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| s(&a, "/ip").to_string())
        .collect()
}

/// Components as separate processes: `kulisse up --nodes 0 --components apiserver`, then the
/// controller manager, the scheduler, two kubelets and a proxy each as their own `kulisse`
/// process. When one kubelet stops, its node turns NotReady and its pods come back on the
/// other node (teaching profile).
#[test]
fn separate_processes_and_node_failover() {
    let (c, _dir) = up(&["--nodes", "0", "--components", "apiserver"]);
    let kc = c.kubeconfig();
    let kc = kc.to_str().unwrap();
    let spawn = |args: &[&str]| {
        std::process::Command::new(kulisse_tests::cluster::kulisse_bin())
            .args(args)
            .args(["--kubeconfig", kc])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn component")
    };
    let mut procs = vec![
        spawn(&["controller-manager", "--fast-failover"]),
        spawn(&["scheduler"]),
        spawn(&["kubelet", "--node-name", "worker-a", "--runtime", "mock"]),
        spawn(&["proxy", "--node-name", "worker-a"]),
    ];
    let mut worker_b = spawn(&["kubelet", "--node-name", "worker-b", "--runtime", "mock"]);
    let _guard = KillOnDrop(&mut procs);

    c.ok(&["apply", "-f", SHOP]);
    let pods = wait_for(60, "3 frontend pods ready on separate kubelets", || {
        let p = running_ready_pods(&c, "shop", "app=frontend");
        (p.len() == 3).then_some(p)
    });
    let on_b = pods.iter().filter(|p| s(p, "/spec/nodeName") == "worker-b").count();
    assert!(on_b > 0, "some pods run on worker-b");
    wait_for(30, "proxy rules from the separate proxy", || {
        c.ok(&["get", "proxyrules"]).contains("frontend").then_some(())
    });

    // worker-b goes away (kill -9: no goodbye).
    let _ = worker_b.kill();
    let _ = worker_b.wait();
    wait_for(60, "worker-b NotReady", || {
        let n = json(&c, &["get", "node", "worker-b"]);
        n.pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") != "True"))
            .then_some(())
    });
    let table = c.ok(&["get", "nodes"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("worker-b") && l.contains("NotReady")),
        "{table}"
    );
    wait_for(90, "all frontend pods back, on worker-a", || {
        let p = running_ready_pods(&c, "shop", "app=frontend");
        (p.len() == 3 && p.iter().all(|p| s(p, "/spec/nodeName") == "worker-a")).then_some(())
    });
}

struct KillOnDrop<'a>(&'a mut Vec<std::process::Child>);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        for p in self.0.iter_mut() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

#[test]
fn mock_nodes_take_their_size_from_flags() {
    let (c, _dir) = up(&[
        "--nodes",
        "2",
        "--node-cpu",
        "2",
        "--node-memory",
        "4Gi",
        "--node-pods",
        "10",
    ]);
    wait_nodes_ready(&c, 2);
    let Some(k) = Kubectl::for_cluster(&c) else { return };
    let nodes: Value = serde_json::from_str(&k.ok(&["get", "nodes", "-o", "json"])).expect("kubectl's JSON");
    let nodes = items(&nodes);
    assert_eq!(nodes.len(), 2);
    for n in &nodes {
        for field in ["capacity", "allocatable"] {
            let r = &n["status"][field];
            assert_eq!(
                (s(r, "/cpu"), s(r, "/memory"), s(r, "/pods")),
                ("2", "4Gi", "10"),
                "{field}: {n}"
            );
        }
    }

    // a pod asking for more than a node has stays Pending, and says why
    let big = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"}, "spec": {"containers": [
        {"name": "app", "image": "localhost/busybox:latest",
         "resources": {"requests": {"cpu": "3", "memory": "5Gi"}}}]}}"#;
    let out = k.run_stdin(&["apply", "-f", "-"], Some(big.as_bytes()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let condition = wait_for(60, "big to be reported unschedulable", || {
        let pod: Value = serde_json::from_str(&k.ok(&["get", "pod", "big", "-o", "json"])).ok()?;
        let cs = pod.pointer("/status/conditions")?.as_array()?.clone();
        cs.into_iter()
            .find(|c| s(c, "/type") == "PodScheduled" && s(c, "/status") == "False")
    });
    assert_eq!(s(&condition, "/reason"), "Unschedulable");
    assert_eq!(
        s(&condition, "/message"),
        "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory."
    );
    let pod: Value = serde_json::from_str(&k.ok(&["get", "pod", "big", "-o", "json"])).unwrap();
    assert_eq!(s(&pod, "/status/phase"), "Pending");
    assert_eq!(s(&pod, "/spec/nodeName"), "");
}

#[test]
fn node_size_flags_refuse_bad_quantities() {
    for (flag, value, says) in [
        ("--node-cpu", "lots", "quantity \"lots\" is not valid"),
        ("--node-memory", "0", "the memory of a node must be greater than zero"),
        ("--node-cpu", "-1", "the CPU of a node must be greater than zero"),
        ("--node-pods", "0", "0 is not in 1..=10000"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(kulisse_tests::cluster::kulisse_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .arg(format!("{flag}={value}"))
            .output()
            .expect("run kulisse");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "a usage error: {err}");
        assert!(err.contains(says), "{flag}={value}: {err}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing was created in the data dir"
        );
    }
}
