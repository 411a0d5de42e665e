//! `kulisse up --masters 3` (issue 14, "Several masters"): three etcd members, three API
//! servers behind HAProxy, three controller managers and three schedulers (leader-elected),
//! each its own process, plus the nodes. Failures, each with its figure printed:
//!
//! - `kulisse kill --leader scheduler`: a standby leads and binds a new pod;
//! - API servers killed while `kubectl get pods -w` runs through HAProxy: kubectl keeps
//!   working, the components' informers resume (a new pod is scheduled and runs), and a
//!   watch resumed from its last resourceVersion sees every acknowledged write once, in
//!   order;
//! - one etcd member stopped: writes go on; two stopped: a write fails with a clear error
//!   instead of hanging; the members started again: writes go on.
//!
//! Needs Debian's `etcd` and `haproxy` (a loud skip without them, a failure under `CI=true`).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kulisse_tests::cluster::Cluster;
use kulisse_tests::etcd::find_binary;
use kulisse_tests::flows::{create_pod, items, json, s, wait_for};
use serde_json::Value;

/// One three-master cluster at a time: four of them (twelve etcd members and API servers,
/// two dozen components) starting at once on a 2-core CI machine took longer than a minute
/// to come up, and every test here measures how fast something recovers.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A cluster of three masters and two nodes, or `None` (skipped) without etcd or haproxy.
/// Bound in this order, the cluster is dropped (stopped) first, then its directory, then the
/// guard that keeps the other tests of this file waiting.
fn three_masters() -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir, Cluster)> {
    three_masters_with(&["--nodes", "2"], 2)
}

/// As [`three_masters`], with `nodes` (the --nodes and --node-hosts flags) giving `ready`
/// nodes.
fn three_masters_with(
    nodes: &[&str],
    ready: usize,
) -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir, Cluster)> {
    for (binary, package) in [("etcd", "etcd-server"), ("haproxy", "haproxy")] {
        if find_binary(binary, &[&format!("/usr/bin/{binary}"), &format!("/usr/sbin/{binary}")]).is_none() {
            return kulisse_tests::require::missing(&format!(
                "{binary} is not installed (apt-get install {package}, or scripts/install-deps.sh): kulisse up --masters 3 needs it"
            ));
        }
    }
    // A test that failed while it held the lock poisons it; the next one may still run.
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<&str> = ["--masters", "3", "--fast-failover"]
        .iter()
        .chain(nodes)
        .copied()
        .collect();
    let c = Cluster::start_in(dir.path(), &args);
    wait_for(60, &format!("{ready} nodes Ready"), || {
        let count = items(&json(&c, &["get", "nodes"]))
            .iter()
            .filter(|n| is_ready(n))
            .count();
        (count == ready).then_some(())
    });
    Some((guard, dir, c))
}

fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// `kulisse ps` as rows of columns.
fn ps(c: &Cluster) -> Vec<Vec<String>> {
    c.ok(&["ps"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The name of the process of `role` that leads now.
fn leader(c: &Cluster, role: &str) -> Option<String> {
    ps(c)
        .into_iter()
        .find(|r| r.get(1).map(String::as_str) == Some(role) && r.last().map(String::as_str) == Some("leader"))
        .map(|r| r[0].clone())
}

fn running_on_a_node(c: &Cluster, pod: &str) -> Option<String> {
    let p = json(c, &["get", "pod", pod]);
    (s(&p, "/status/phase") == "Running" && !s(&p, "/spec/nodeName").is_empty())
        .then(|| s(&p, "/spec/nodeName").to_string())
}

#[test]
fn ps_lists_every_process_and_who_leads() {
    let Some((_one, _dir, c)) = three_masters() else { return };
    // The nodes are Ready before the schedulers need have elected a leader (under load on CI
    // the first lease came later): wait until each elected role has one.
    wait_for(
        60,
        "a leader for etcd, the controller managers and the schedulers",
        || {
            ["etcd", "controller-manager", "scheduler"]
                .iter()
                .all(|role| leader(&c, role).is_some())
                .then_some(())
        },
    );
    let rows = ps(&c);
    let count = |role: &str| rows.iter().filter(|r| r[1] == role).count();
    assert_eq!(count("etcd"), 3, "{rows:?}");
    assert_eq!(count("apiserver"), 3);
    assert_eq!(count("load-balancer"), 1);
    assert_eq!((count("controller-manager"), count("scheduler")), (3, 3));
    assert_eq!((count("kubelet"), count("proxy")), (2, 2));
    assert!(rows.iter().all(|r| r[4] == "Running"), "{rows:?}");
    for role in ["etcd", "controller-manager", "scheduler"] {
        let leaders = rows
            .iter()
            .filter(|r| r[1] == role && r.last().unwrap() == "leader")
            .count();
        assert_eq!(leaders, 1, "one {role} leads: {rows:?}");
    }
    // Every kubeconfig names HAProxy, the one address of the control plane.
    let haproxy = rows.iter().find(|r| r[1] == "load-balancer").unwrap();
    assert_eq!(haproxy[2], c.server);
}

#[test]
fn killing_the_leading_scheduler_hands_over_to_a_standby() {
    let Some((_one, _dir, c)) = three_masters() else { return };
    create_pod(&c, "before");
    wait_for(60, "a pod runs", || running_on_a_node(&c, "before"));
    let old = leader(&c, "scheduler").expect("a scheduler leads");
    let out = c.ok(&["kill", "--leader", "scheduler"]);
    assert!(
        out.contains(&format!("{old} (pid")) && out.contains("the leader) killed"),
        "{out}"
    );
    let killed = Instant::now();
    create_pod(&c, "after");
    wait_for(60, "the new pod is bound", || {
        let p = json(&c, &["get", "pod", "after"]);
        (!s(&p, "/spec/nodeName").is_empty()).then_some(())
    });
    println!(
        "figure: under --masters 3, a standby scheduler bound a new pod {:.2} s after `kulisse kill --leader scheduler`",
        killed.elapsed().as_secs_f64()
    );
    let new = wait_for(30, "ps shows the new leader", || leader(&c, "scheduler"));
    assert_ne!(new, old);
    let row = ps(&c).into_iter().find(|r| r[0] == old).unwrap();
    assert_eq!(row[4], "Exited", "{row:?}");
}

/// kubectl through HAProxy while two of the three API servers die, one after the other.
#[test]
fn api_servers_die_under_a_watch_and_kubectl_keeps_working() {
    let Some((_one, _dir, c)) = three_masters() else { return };
    let Some(kubectl) = kulisse_tests::kubectl::Kubectl::for_cluster(&c) else {
        return;
    };
    let mut watch = kubectl.spawn(&["get", "pods", "-w", "--output-watch-events"]);
    create_pod(&c, "first");
    wait_for(60, "the first pod runs", || running_on_a_node(&c, "first"));
    let ledger = Ledger::start(&c);
    let started = Instant::now();
    for name in ["apiserver-1", "apiserver-2"] {
        ledger.write_some(10);
        c.ok(&["kill", name]);
        for _ in 0..5 {
            kubectl.ok(&["get", "pods", "first"]);
        }
    }
    println!(
        "figure: 10 kubectl requests through HAProxy, with 2 of 3 API servers killed in between, took {:.2} s; none failed",
        started.elapsed().as_secs_f64()
    );
    // apiserver-1 back, apiserver-3 killed: the ledger's watch has now lost whichever API
    // server it was on at least once.
    let _back = restart(&c, "apiserver-1");
    wait_for(60, "kubectl through HAProxy with apiserver-1 back", || {
        kubectl.run(&["get", "pods", "first"]).status.success().then_some(())
    });
    ledger.write_some(10);
    c.ok(&["kill", "apiserver-3"]);
    // Until HAProxy's health check has seen the restarted apiserver-1 come up (and
    // apiserver-3 go), a request may find no server: wait for the balancer, as a client
    // retries.
    let killed = Instant::now();
    wait_for(60, "kubectl through HAProxy with only apiserver-1 left", || {
        kubectl.run(&["get", "pods", "first"]).status.success().then_some(())
    });
    println!(
        "figure: with apiserver-1 restarted and apiserver-3 killed, kubectl through HAProxy answered again after {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    ledger.write_some(10);
    ledger.check(30);
    // The informers of the scheduler, the controller manager and the kubelets resumed their
    // watches through the last API server: a new pod is scheduled and started.
    create_pod(&c, "second");
    let node = wait_for(60, "the second pod runs", || running_on_a_node(&c, "second"));
    assert!(node.starts_with("node-"), "{node}");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// An informer's watch through HAProxy, checked against a ledger of acknowledged writes:
/// ConfigMaps created one by one, each answered with its resourceVersion. The watch resumes
/// from the last resourceVersion it saw whenever its connection breaks (an API server
/// killed under it), as client-go's reflector does.
struct Ledger {
    written: Mutex<Vec<(String, u64)>>,
    seen: Arc<Mutex<Vec<(String, u64)>>>,
    resumes: Arc<AtomicUsize>,
    client: kulisse_core::client::Client,
    runtime: tokio::runtime::Runtime,
}

impl Ledger {
    fn start(c: &Cluster) -> Ledger {
        use futures::StreamExt;
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = kulisse_core::client::Client::from_kubeconfig(&c.kubeconfig()).unwrap();
        let info = kulisse_core::objects::by_gvk("v1", "ConfigMap").unwrap();
        let params = kulisse_core::client::ListParams {
            label_selector: Some("ledger=yes".into()),
            ..Default::default()
        };
        // Start from the store's current revision: only the ledger's writes follow.
        let list = runtime.block_on(client.list(info, Some("default"), &params)).unwrap();
        let mut rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap()
            .to_string();
        let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let resumes: Arc<AtomicUsize> = Arc::default();
        let (seen2, resumes2, watcher) = (seen.clone(), resumes.clone(), client.clone());
        runtime.spawn(async move {
            loop {
                if let Ok(mut events) = watcher.watch(info, Some("default"), &params, Some(&rv)).await {
                    while let Some(Ok(event)) = events.next().await {
                        let version = s(&event.object, "/metadata/resourceVersion").to_string();
                        if event.kind == "ADDED" {
                            let name = s(&event.object, "/metadata/name").to_string();
                            seen2.lock().unwrap().push((name, version.parse().unwrap_or(0)));
                        }
                        if !version.is_empty() {
                            rv = version;
                        }
                    }
                }
                resumes2.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Ledger {
            written: Mutex::default(),
            seen,
            resumes,
            client,
            runtime,
        }
    }

    /// Create `n` more ConfigMaps, each acknowledged before the next.
    fn write_some(&self, n: usize) {
        let info = kulisse_core::objects::by_gvk("v1", "ConfigMap").unwrap();
        let mut written = self.written.lock().unwrap();
        for _ in 0..n {
            let name = format!("ledger-{}", written.len());
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"ledger": "yes"}}});
            // A connection that breaks before the answer (HAProxy has not yet noticed that
            // the API server it picked is gone) leaves the write unknown: try again, and an
            // AlreadyExists means the first try was written.
            let deadline = Instant::now() + Duration::from_secs(60);
            let created = loop {
                match self.runtime.block_on(self.client.create(info, Some("default"), &obj)) {
                    Ok(created) => break created,
                    Err(kulisse_core::client::ClientError::Api(e)) if e.code == 409 => {
                        break self
                            .runtime
                            .block_on(self.client.get(info, Some("default"), &name))
                            .unwrap();
                    }
                    Err(e @ kulisse_core::client::ClientError::Api(_)) => panic!("create {name}: {e}"),
                    Err(e) if Instant::now() > deadline => panic!("create {name}: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            };
            written.push((name, s(&created, "/metadata/resourceVersion").parse().unwrap()));
        }
    }

    /// Every acknowledged write seen exactly once, in order, within `secs`.
    fn check(&self, secs: u64) {
        let written = self.written.lock().unwrap().clone();
        let seen = wait_for(secs, "the watch to see every acknowledged write", || {
            let seen = self.seen.lock().unwrap().clone();
            (seen.len() >= written.len()).then_some(seen)
        });
        let resumes = self.resumes.load(Ordering::SeqCst);
        println!(
            "figure: a watch through HAProxy saw {} of {} acknowledged writes, each once and in order, resuming {resumes} times",
            seen.len(),
            written.len()
        );
        assert_eq!(seen, written, "the watch missed, repeated or reordered writes");
        assert!(resumes >= 1, "the watch's connection never broke: nothing was tested");
    }
}

/// A process this test started; killed when dropped, also when the test fails.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a killed process again from its command line in `kulisse ps`'s table.
fn restart(c: &Cluster, name: &str) -> Restarted {
    let table: Vec<Value> = serde_json::from_slice(&std::fs::read(c.data_dir.join("processes.json")).unwrap()).unwrap();
    let p = table.iter().find(|p| p["name"] == name).expect("in the table");
    let argv: Vec<&str> = p["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start again");
    Restarted(child)
}

#[test]
fn etcd_keeps_writing_with_one_member_down_and_refuses_clearly_with_two() {
    let Some((_one, _dir, c)) = three_masters() else { return };
    let followers: Vec<String> = ps(&c)
        .into_iter()
        .filter(|r| r[1] == "etcd" && r.last().unwrap() != "leader")
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(followers.len(), 2, "two followers");
    c.ok(&["kill", &followers[0]]);
    c.ok(&["create", "configmap", "one-down", "--from-literal=k=v"]);

    c.ok(&["kill", &followers[1]]);
    let started = Instant::now();
    let out = c.kulisse(&["create", "configmap", "two-down", "--from-literal=k=v"]);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "no majority, no write");
    assert!(err.contains("etcd"), "the error names etcd: {err}");
    println!(
        "figure: with 2 of 3 etcd members down a write failed after {:.2} s: {}",
        took.as_secs_f64(),
        err.trim()
    );
    assert!(took < Duration::from_secs(60), "a clear error, not a hang");

    let _back: Vec<Restarted> = followers.iter().map(|f| restart(&c, f)).collect();
    let started = Instant::now();
    wait_for(90, "writes go on once the members are back", || {
        c.kulisse(&["create", "configmap", "back", "--from-literal=k=v"])
            .status
            .success()
            .then_some(())
    });
    println!(
        "figure: writes went on {:.2} s after the two etcd members were started again",
        started.elapsed().as_secs_f64()
    );
    let names: Vec<String> = items(&json(&c, &["get", "configmaps"]))
        .iter()
        .map(|m| s(m, "/metadata/name").to_string())
        .collect();
    assert!(
        names.contains(&"one-down".to_string()) && names.contains(&"back".to_string()),
        "{names:?}"
    );
    // The timed-out write may still be committed once a majority is back (the old leader
    // had it in its log): as with any timeout, its outcome is unknown to the client.
    println!(
        "figure: the write that timed out was {} after the members came back",
        if names.contains(&"two-down".to_string()) {
            "committed"
        } else {
            "not committed"
        }
    );
}

/// The names of the pods of `app` on `node`, and how many of its pods run in all.
fn pods_of(c: &Cluster, app: &str, node: &str) -> (Vec<String>, usize) {
    let pods = items(&json(c, &["get", "pods", "-l", &format!("app={app}")]));
    let running: Vec<&Value> = pods.iter().filter(|p| s(p, "/status/phase") == "Running").collect();
    let on_node = running
        .iter()
        .filter(|p| s(p, "/spec/nodeName") == node)
        .map(|p| s(p, "/metadata/name").to_string())
        .collect();
    (on_node, running.len())
}

/// A node on a host of its own (`--node-hosts`), cut off and plugged in again: it turns
/// NotReady, its pods are evicted and replaced on the other nodes; healed, it is Ready again
/// and its kubelet stops the pods it was running when it was cut off (`Killing` events).
/// `kubectl logs` of a pod there goes from the API servers to the kubelet over the hosts'
/// network. A clean stop removes the namespaces. Needs root (network namespaces).
#[test]
fn a_partitioned_node_host_loses_its_pods_and_heals() {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process' effective user.
    if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
        return kulisse_tests::require::missing::<()>("root: --node-hosts creates network namespaces").unwrap_or(());
    }
    let Some((_one, _dir, mut c)) = three_masters_with(&["--nodes", "1", "--node-hosts", "2"], 3) else {
        return;
    };
    let node2 = json(&c, &["get", "node", "node-2"]);
    let address = node2["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(address, "10.213.0.2", "{node2}");
    let kubelet = ps(&c)
        .into_iter()
        .find(|r| r[0] == "kubelet-node-2")
        .expect("kubelet-node-2 in ps");
    assert_eq!(kubelet[2], "10.213.0.2", "{kubelet:?}");

    c.ok(&["create", "deployment", "web", "--image=nginx", "--replicas=6"]);
    let stranded = wait_for(60, "6 pods run, some on node-2", || {
        let (on_host, running) = pods_of(&c, "web", "node-2");
        (running == 6 && !on_host.is_empty()).then_some(on_host)
    });
    let logs = c.ok(&["logs", &stranded[0]]);
    assert!(logs.contains("nginx"), "logs from the kubelet on node-2: {logs}");

    let hub = {
        let record: Value =
            serde_json::from_slice(&std::fs::read(c.data_dir.join("node-hosts.json")).unwrap()).unwrap();
        s(&record, "/hub").to_string()
    };
    let out = c.ok(&["partition", "node-2"]);
    assert!(out.contains(&format!("ip -n {hub} link set node-2 down")), "{out}");
    let cut = Instant::now();
    wait_for(60, "node-2 NotReady", || {
        (!is_ready(&json(&c, &["get", "node", "node-2"]))).then_some(())
    });
    let not_ready = cut.elapsed();
    wait_for(60, "node-2's pods evicted and 6 running elsewhere", || {
        let (on_host, running) = pods_of(&c, "web", "node-2");
        (on_host.is_empty() && running == 6).then_some(())
    });
    let replaced = cut.elapsed();
    println!(
        "figure: node host cut off (--fast-failover): node-2 NotReady after {:.1} s; its {} pods evicted and replaced, 6 running on the other nodes, after {:.1} s",
        not_ready.as_secs_f64(),
        stranded.len(),
        replaced.as_secs_f64()
    );

    c.ok(&["heal", "node-2"]);
    let healed = Instant::now();
    wait_for(60, "node-2 Ready again", || {
        is_ready(&json(&c, &["get", "node", "node-2"])).then_some(())
    });
    let ready_again = healed.elapsed();
    wait_for(60, "node-2's kubelet stops the pods it had when cut off", || {
        let events = items(&json(&c, &["get", "events"]));
        stranded
            .iter()
            .all(|pod| {
                events.iter().any(|e| {
                    s(e, "/reason") == "Killing"
                        && s(e, "/involvedObject/name") == pod
                        && s(e, "/source/host") == "node-2"
                })
            })
            .then_some(())
    });
    println!(
        "figure: node host plugged in again: node-2 Ready after {:.1} s, its stale pods stopped after {:.1} s",
        ready_again.as_secs_f64(),
        healed.elapsed().as_secs_f64()
    );
    assert_eq!(pods_of(&c, "web", "node-2").1, 6, "still 6 pods of web");

    c.stop();
    let left =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned();
    assert!(!left.contains(&hub), "a clean stop removes the namespaces: {left}");
}

/// Node hosts asked for where they cannot be: a clear error, and nothing started or made.
#[test]
fn node_hosts_refuse_clearly_where_they_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(kulisse_tests::cluster::kulisse_bin())
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "kulisse {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["up", "--node-hosts", "1", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("--node-hosts needs --masters 3"), "{err}");
    assert!(!dir.path().join("kubeconfig").exists(), "nothing was started");
    let err = run(&[
        "up",
        "--masters",
        "3",
        "--node-hosts",
        "1",
        "--runtime",
        "podman",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(err.contains("--node-hosts runs mock nodes only"), "{err}");
    let err = run(&["partition", "node-2"]);
    assert!(
        err.contains("node-hosts.json") && err.contains("--node-hosts"),
        "a cluster without node hosts: {err}"
    );
}
