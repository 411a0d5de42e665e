//! The podman runtime against a real podman (`podman system service` on a private socket):
//!
//! - runtime level: CRI calls straight to [`PodmanRuntime`]: two pods each publish port 8080
//!   on their own loopback pod IP, HTTP answers there; exec, logs, statuses, exit codes,
//!   node isolation, and nothing left behind after stop/remove;
//! - end to end: the real `kulisse up --runtime podman` with a Deployment, a Service,
//!   probes, logs, crash loops, deletion, `kill -9` and restart, and the trace; an image
//!   that cannot be pulled (the pull back-off grows) and a container killed for going over
//!   its memory limit (`OOMKilled`).
//!
//! Requests only ever go to 127.0.0.0/8. Without podman the tests skip (fail with CI=true).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kulisse_backends::runtime::podman::{LABEL_CLUSTER, LABEL_NODE, PodmanOptions, PodmanRuntime};
use kulisse_core::runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, EnvVar, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
    LogOptions, PodSandboxConfig, PortMapping, Resources, RuntimeError, SandboxState,
};
use kulisse_tests::podman::{BUSYBOX_IMAGE, CleanupLabel, PodmanService, http_get, list_labelled};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    )
}

fn sandbox_config(name: &str, uid: &str) -> PodSandboxConfig {
    let labels: BTreeMap<String, String> = [
        (LABEL_POD_NAME.to_string(), name.to_string()),
        (LABEL_POD_NAMESPACE.to_string(), "default".to_string()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
        ("app".to_string(), "web".to_string()),
    ]
    .into();
    PodSandboxConfig {
        name: name.into(),
        namespace: "default".into(),
        uid: uid.into(),
        attempt: 0,
        hostname: name.into(),
        labels,
        annotations: BTreeMap::new(),
        port_mappings: vec![PortMapping {
            protocol: "TCP".into(),
            container_port: 8080,
            host_port: None,
            host_ip: "127.0.0.1".into(),
        }],
    }
}

fn container_config(sb: &PodSandboxConfig, name: &str, command: &[&str]) -> ContainerConfig {
    let mut labels = sb.labels.clone();
    labels.insert("io.kubernetes.container.name".into(), name.into());
    ContainerConfig {
        name: name.into(),
        attempt: 0,
        image: BUSYBOX_IMAGE.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        labels,
        ..Default::default()
    }
}

async fn wait_state(rt: &PodmanRuntime, id: &str, want: ContainerState) -> kulisse_core::runtime::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = rt.container_status(id).await.expect("container status");
        if st.state == want || Instant::now() > deadline {
            assert_eq!(st.state, want, "container {id}: {st:?}");
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET until it answers (the server may need a moment after its container started).
fn get_until_ok(addr: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(addr, "/") {
            Ok(r) => return r,
            Err(e) if Instant::now() > deadline => panic!("GET http://{addr}/ never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

async fn logs_text(rt: &PodmanRuntime, id: &str, options: &LogOptions) -> String {
    let stream = rt.container_logs(id, options).await.expect("logs");
    let chunks: Vec<Vec<u8>> = stream.map(|c| c.expect("log chunk")).collect().await;
    String::from_utf8_lossy(&chunks.concat()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_runs_pods_on_their_own_loopback_ips() {
    let Some(svc) = PodmanService::start() else { return };
    let cluster = unique("rt");
    let _cleanup = CleanupLabel::new(LABEL_CLUSTER, &cluster);
    let node = "node-3900";
    let rt = PodmanRuntime::connect(PodmanOptions::new(&svc.socket, node, &cluster))
        .await
        .expect("connect to podman");
    let version = rt.version().await.unwrap();
    assert!(version.starts_with(|c: char| c.is_ascii_digit()), "{version}");
    rt.update_runtime_config(&kulisse_core::runtime::pod_cidr_for_node(node))
        .await
        .unwrap();

    // Images: present locally; remote registries are refused; a missing local image fails.
    let image_ref = rt
        .image_status(BUSYBOX_IMAGE)
        .await
        .unwrap()
        .expect("busybox image present");
    assert!(!image_ref.is_empty());
    assert_eq!(
        rt.image_status("localhost/kulisse-no-such-image:1").await.unwrap(),
        None
    );
    let plain = sandbox_config("web-a", "uid-a");
    match rt.pull_image("docker.io/library/busybox:1.36", None, &plain).await {
        Err(RuntimeError::ImagePullFailed { reason, .. }) => {
            assert!(
                reason.contains("only pulls from registries on this machine"),
                "{reason}"
            )
        }
        other => panic!("a remote pull must be refused, got {other:?}"),
    }
    // A registry on loopback that does not exist: podman's own message comes back.
    match rt.pull_image("localhost/kulisse-no-such-image:1", None, &plain).await {
        Err(RuntimeError::ImagePullFailed { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("pulling from a registry that is not there must fail, got {other:?}"),
    }

    // Two pods, both with a server on port 8080, each on its own pod IP.
    let mut ips = Vec::new();
    let mut sandboxes = Vec::new();
    // web-b also asks for a hostPort: published on the node's address, 127.0.0.1.
    let host_port = kulisse_tests::free_port();
    for (name, uid) in [("web-a", "uid-a"), ("web-b", "uid-b")] {
        let mut cfg = sandbox_config(name, uid);
        if name == "web-b" {
            cfg.port_mappings[0].host_port = Some(host_port);
        }
        let sb = rt.run_pod_sandbox(&cfg).await.expect("run pod sandbox");
        assert!(
            sb.ip.starts_with("127.79."),
            "pod IP {} is not in node-3900's range",
            sb.ip
        );
        let mut cc = container_config(&cfg, "httpd", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
        cc.resources = Resources {
            cpu_request_millis: Some(100),
            cpu_limit_millis: Some(500),
            memory_request_bytes: None,
            memory_limit_bytes: Some(64 * 1024 * 1024),
        };
        let id = rt.create_container(&sb.id, &cc, &cfg).await.expect("create httpd");
        assert_eq!(rt.container_status(&id).await.unwrap().state, ContainerState::Created);
        rt.start_container(&id).await.expect("start httpd");
        let st = wait_state(&rt, &id, ContainerState::Running).await;
        assert_eq!(st.name, "httpd");
        assert_eq!(st.image, BUSYBOX_IMAGE);
        assert!(st.started_at.is_some());
        ips.push(sb.ip.clone());
        sandboxes.push((cfg, sb, id));
    }
    assert_ne!(ips[0], ips[1], "each pod gets its own IP");
    for ip in &ips {
        let (code, body) = get_until_ok(&format!("{ip}:8080"));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hello from busybox httpd"), "{body}");
    }
    let (code, _) = get_until_ok(&format!("127.0.0.1:{host_port}"));
    assert_eq!(code, 200, "the hostPort answers on 127.0.0.1");

    let (cfg_a, sb_a, httpd_a) = &sandboxes[0];
    // exec (what exec probes use): environment and working dir of a container.
    let mut cc = container_config(cfg_a, "talker", &["sh", "-c"]);
    // stdout and stderr are two pipes: the sleep keeps the order of the lines certain.
    cc.args =
        vec!["echo to stderr >&2; sleep 1; echo hello from busybox; echo \"FOO=$FOO in $(pwd)\"; sleep 3600".into()];
    cc.env = vec![EnvVar {
        name: "FOO".into(),
        value: "bar".into(),
    }];
    cc.working_dir = Some("/tmp/work".into());
    let talker = rt.create_container(&sb_a.id, &cc, cfg_a).await.unwrap();
    rt.start_container(&talker).await.unwrap();
    wait_state(&rt, &talker, ContainerState::Running).await;
    let (code, out) = rt
        .exec_sync(
            &talker,
            &["sh".into(), "-c".into(), "echo $FOO; pwd".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, String::from_utf8_lossy(&out).into_owned()),
        (0, "bar\n/tmp/work\n".into())
    );
    let (code, _) = rt
        .exec_sync(
            &talker,
            &["sh".into(), "-c".into(), "exit 3".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(code, 3);

    // Logs: stdout and stderr, tail, timestamps.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = String::new();
    while Instant::now() < deadline && !all.contains("FOO=bar in /tmp/work") {
        all = logs_text(&rt, &talker, &LogOptions::default()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all.contains("hello from busybox\n"), "{all}");
    assert!(all.contains("to stderr\n"), "{all}");
    assert!(all.contains("FOO=bar in /tmp/work\n"), "{all}");
    let tail = logs_text(
        &rt,
        &talker,
        &LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("20") && tail.contains("FOO=bar"), "{tail}");

    // A container that fails: exit code, reason, times.
    let cc = container_config(cfg_a, "crasher", &["sh", "-c", "echo bye; exit 3"]);
    let crasher = rt.create_container(&sb_a.id, &cc, cfg_a).await.unwrap();
    rt.start_container(&crasher).await.unwrap();
    let st = wait_state(&rt, &crasher, ContainerState::Exited).await;
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(st.finished_at.is_some() && st.finished_at >= st.started_at, "{st:?}");
    // follow ends when the container has ended
    let followed = logs_text(
        &rt,
        &crasher,
        &LogOptions {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(followed, "bye\n");

    // A command that does not exist: a start error, reported as a terminated container.
    let cc = container_config(cfg_a, "broken", &["/no/such/program"]);
    let broken = rt.create_container(&sb_a.id, &cc, cfg_a).await.unwrap();
    let started = rt.start_container(&broken).await;
    assert!(started.is_err(), "starting a missing program must fail");
    let st = rt.container_status(&broken).await.unwrap();
    assert_eq!(st.state, ContainerState::Exited, "{st:?}");
    assert_ne!(st.exit_code, Some(0));

    // Lists: by labels, only this node's.
    let uid_filter: BTreeMap<String, String> = [(LABEL_POD_UID.to_string(), "uid-a".to_string())].into();
    let sbs = rt.list_pod_sandboxes(&uid_filter).await.unwrap();
    assert_eq!(sbs.len(), 1, "{sbs:?}");
    assert_eq!(
        (sbs[0].id.as_str(), sbs[0].ip.as_str(), sbs[0].state),
        (sb_a.id.as_str(), ips[0].as_str(), SandboxState::Ready)
    );
    assert_eq!(sbs[0].labels.get(LABEL_NODE).map(String::as_str), Some(node));
    assert_eq!(sbs[0].name, "web-a");
    let cs = rt.list_containers(&uid_filter).await.unwrap();
    let mut names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["broken", "crasher", "httpd", "talker"]);
    assert!(cs.iter().all(|c| c.sandbox_id == sb_a.id));
    assert_eq!(rt.list_pod_sandboxes(&BTreeMap::new()).await.unwrap().len(), 2);
    let other_node = PodmanRuntime::connect(PodmanOptions::new(&svc.socket, "node-3901", &cluster))
        .await
        .unwrap();
    assert!(
        other_node
            .list_pod_sandboxes(&BTreeMap::new())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(other_node.list_containers(&BTreeMap::new()).await.unwrap().is_empty());

    // Stop honours the timeout: httpd ignores SIGTERM as PID 1, so it is killed after 1 s.
    rt.stop_container(httpd_a, Duration::from_secs(1)).await.unwrap();
    let st = rt.container_status(httpd_a).await.unwrap();
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(137), "SIGKILLed after the grace period: {st:?}");
    rt.stop_container(httpd_a, Duration::from_secs(1))
        .await
        .expect("stopping twice is fine");
    rt.remove_container(&crasher).await.unwrap();
    assert!(matches!(
        rt.container_status(&crasher).await,
        Err(RuntimeError::NotFound(_))
    ));
    rt.remove_container(&crasher).await.expect("removing twice is fine");

    // Tear everything down: nothing with this cluster's label is left.
    for (_, sb, _) in &sandboxes {
        rt.stop_pod_sandbox(&sb.id).await.unwrap();
        rt.remove_pod_sandbox(&sb.id).await.unwrap();
        rt.remove_pod_sandbox(&sb.id).await.expect("removing twice is fine");
    }
    assert!(rt.list_pod_sandboxes(&BTreeMap::new()).await.unwrap().is_empty());
    assert!(matches!(
        rt.container_status(&talker).await,
        Err(RuntimeError::NotFound(_))
    ));
    let (pods, containers) = list_labelled(&[(LABEL_CLUSTER, &cluster)]);
    assert!(
        pods.is_empty() && containers.is_empty(),
        "leaked: {pods:?} {containers:?}"
    );
}

// ---------------------------------------------------------------------------------------
// End to end: the real `kulisse up --runtime podman`.
// ---------------------------------------------------------------------------------------

use kulisse_backends::runtime::podman::cluster_id_from_ca;
use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::{is_ready, items, json, s, wait_for};
use serde_json::Value;

fn running_ready(c: &Cluster, selector: &str) -> Vec<Value> {
    items(&json(c, &["get", "pods", "-l", selector]))
        .into_iter()
        .filter(|p| {
            s(p, "/status/phase") == "Running" && is_ready(p) && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect()
}

/// `(ready, not ready)` addresses of a Service's Endpoints.
fn endpoint_addresses(c: &Cluster, svc: &str) -> (Vec<String>, Vec<String>) {
    let ep = json(c, &["get", "endpoints", svc]);
    let collect = |key: &str| -> Vec<String> {
        ep.pointer("/subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|s| s.get(key).and_then(Value::as_array).cloned().unwrap_or_default())
            .map(|a| s(&a, "/ip").to_string())
            .collect()
    };
    (collect("addresses"), collect("notReadyAddresses"))
}

/// A cluster on podman; dropping it kills `kulisse up` first, then removes whatever it left
/// in podman (fields drop in declaration order).
struct PodmanCluster {
    c: Cluster,
    _cleanup: CleanupLabel,
    cluster_id: String,
}

fn podman_up(svc: &PodmanService, dir: &std::path::Path) -> PodmanCluster {
    let c = podman_up_again(svc, dir);
    let cluster_id = cluster_id_from_ca(&std::fs::read_to_string(c.data_dir.join("ca.crt")).expect("the cluster CA"));
    PodmanCluster {
        c,
        _cleanup: CleanupLabel::new(LABEL_CLUSTER, &cluster_id),
        cluster_id,
    }
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: localhost/busybox:latest
        imagePullPolicy: IfNotPresent
        # Each replica answers with its own host name, so a test can tell them apart.
        command: ["sh", "-c", "mkdir -p /srv && echo \"hello from busybox httpd on $HOSTNAME\" > /srv/index.html && exec httpd -f -p 8080 -h /srv"]
        ports: [{containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: talker
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: talk
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello from busybox; sleep 3600"]
"#;

/// The ids of this cluster's podman pods.
fn podman_pods(cluster_id: &str) -> Vec<String> {
    list_labelled(&[(LABEL_CLUSTER, cluster_id)]).0
}

#[test]
fn podman_cluster_serves_logs_traces_survives_kill9_and_cleans_up() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, WEB).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    // Both replicas Running and Ready in podman, each answering on its own pod IP.
    let pods = wait_for(60, "2 web pods Running and Ready", || {
        let p = running_ready(&pc.c, "app=web");
        (p.len() == 2).then_some(p)
    });
    let mut ips: Vec<String> = pods.iter().map(|p| s(p, "/status/podIP").to_string()).collect();
    ips.sort();
    assert_ne!(ips[0], ips[1], "{ips:?}");
    for ip in &ips {
        assert!(
            ip.starts_with("127.64."),
            "pod IPs come from the nodes' loopback ranges: {ip}"
        );
        let (code, body) = http_get(&format!("{ip}:8080"), "/").expect("GET podIP:8080");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hello from busybox httpd"), "{body}");
    }
    for p in &pods {
        let id = s(p, "/status/containerStatuses/0/containerID");
        assert!(id.starts_with("podman://"), "{id}");
        assert_eq!(s(p, "/status/hostIP"), "127.0.0.1");
    }
    let (ready, _) = wait_for(30, "both web pods in the Service's endpoints", || {
        let (mut ready, not) = endpoint_addresses(&pc.c, "web");
        ready.sort();
        (ready == ips).then_some((ready, not))
    });
    assert_eq!(ready.len(), 2);

    // Through the Service: kube-proxy's userspace data path listens on ClusterIP:port and on
    // 127.0.0.1:nodePort and spreads connections over both replicas.
    let service = json(&pc.c, &["get", "svc", "web"]);
    let cluster_ip = s(&service, "/spec/clusterIP").to_string();
    let node_port = service
        .pointer("/spec/ports/0/nodePort")
        .and_then(Value::as_i64)
        .expect("a node port");
    for front in [format!("{cluster_ip}:8080"), format!("127.0.0.1:{node_port}")] {
        let answers = wait_for(30, &format!("both replicas answering through {front}"), || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                if let Ok((200, body)) = http_get(&front, "/") {
                    seen.insert(body.trim().to_string());
                }
            }
            (seen.len() == 2).then_some(seen)
        });
        assert!(
            answers.iter().all(|b| b.starts_with("hello from busybox httpd on ")),
            "{answers:?}"
        );
    }

    let node = json(&pc.c, &["get", "node", "node-1"]);
    assert!(
        s(&node, "/status/nodeInfo/containerRuntimeVersion").starts_with("podman://"),
        "{node}"
    );

    // Logs of a real process, through `kulisse logs`.
    wait_for(60, "kulisse logs talker shows the container's output", || {
        let out = pc.c.kulisse(&["logs", "talker"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("hello from busybox")
            .then_some(())
    });

    // The apply's trace shows the runtime spans with podman's real ids.
    let (podman_pod_ids, podman_ctr_ids) = list_labelled(&[(LABEL_CLUSTER, &pc.cluster_id)]);
    let export = dir.path().join("trace.json");
    let trace_ids = wait_for(30, "runtime spans with podman ids in the last trace", || {
        pc.c.ok(&["trace", "last", "--export", export.to_str().unwrap()]);
        let data: Value = serde_json::from_str(&std::fs::read_to_string(&export).ok()?).ok()?;
        let spans: Vec<&Value> = data
            .pointer("/resourceSpans")?
            .as_array()?
            .iter()
            .flat_map(|r| r.get("scopeSpans").and_then(Value::as_array).into_iter().flatten())
            .flat_map(|s| s.get("spans").and_then(Value::as_array).into_iter().flatten())
            .collect();
        let attr = |span: &Value, key: &str| -> Option<String> {
            span.get("attributes")?
                .as_array()?
                .iter()
                .find(|kv| kv.get("key").and_then(Value::as_str) == Some(key))?
                .pointer("/value/stringValue")?
                .as_str()
                .map(str::to_string)
        };
        let sandbox = spans
            .iter()
            .filter(|sp| s(sp, "/name") == "runtime.run_pod_sandbox")
            .find_map(|sp| attr(sp, "runtime.sandbox_id"))?;
        let container = spans
            .iter()
            .filter(|sp| s(sp, "/name") == "runtime.start_container")
            .find_map(|sp| attr(sp, "runtime.container_id"))?;
        Some((sandbox, container))
    });
    assert!(
        podman_pod_ids.contains(&trace_ids.0),
        "the trace's sandbox id {} is a podman pod of this cluster: {podman_pod_ids:?}",
        trace_ids.0
    );
    assert!(
        podman_ctr_ids.contains(&trace_ids.1),
        "the trace's container id {} is a podman container of this cluster",
        trace_ids.1
    );

    // kill -9 of `kulisse up`: the containers keep running; a new `kulisse up` on the same
    // data dir adopts them (same pod IPs, one podman pod per Pod, nothing leaked).
    let before = podman_pods(&pc.cluster_id);
    assert_eq!(before.len(), 3, "2 web pods + talker: {before:?}");
    let PodmanCluster {
        mut c,
        _cleanup,
        cluster_id,
    } = pc;
    c.kill9();
    drop(c);
    let pc = PodmanCluster {
        c: podman_up_again(&svc, dir.path()),
        _cleanup,
        cluster_id,
    };
    let after = wait_for(60, "the web pods Running and Ready again after the restart", || {
        let p = running_ready(&pc.c, "app=web");
        (p.len() == 2).then_some(p)
    });
    let mut ips_after: Vec<String> = after.iter().map(|p| s(p, "/status/podIP").to_string()).collect();
    ips_after.sort();
    assert_eq!(ips_after, ips, "the restarted kubelets adopted the running pods");
    for ip in &ips_after {
        let (code, _) = http_get(&format!("{ip}:8080"), "/").expect("GET podIP:8080 after the restart");
        assert_eq!(code, 200);
    }
    // The set of podman pods stays exactly the same through the restarted kubelets'
    // housekeeping. The signal that housekeeping has run: a sandbox planted for a pod that
    // does not exist, on the node of a web pod, is removed by it; the web pods' sandboxes
    // went through that same round.
    let orphan_uid = unique("orphan");
    plant_orphan_sandbox(&svc, &pc.cluster_id, s(&after[0], "/spec/nodeName"), &orphan_uid);
    wait_for(
        60,
        "the restarted kubelet's housekeeping to remove the orphan sandbox",
        || {
            list_labelled(&[(LABEL_POD_UID, &orphan_uid)])
                .0
                .is_empty()
                .then_some(())
        },
    );
    let mut now = podman_pods(&pc.cluster_id);
    let mut before = before;
    now.sort();
    before.sort();
    assert_eq!(now, before, "no podman pod was leaked or replaced by the restart");

    // Deleting the Deployment (and the pod) leaves nothing with this cluster's labels.
    pc.c.ok(&["delete", "deployment", "web"]);
    pc.c.ok(&["delete", "pod", "talker"]);
    wait_for(60, "no pods left in the API", || {
        items(&json(&pc.c, &["get", "pods"])).is_empty().then_some(())
    });
    wait_for(
        30,
        "no podman pods or containers left with this cluster's label",
        || {
            let (pods, containers) = list_labelled(&[(LABEL_CLUSTER, &pc.cluster_id)]);
            (pods.is_empty() && containers.is_empty()).then_some(())
        },
    );
}

/// Creates a podman pod sandbox for a pod that does not exist, labelled as node `node` of
/// cluster `cluster_id` labels its sandboxes: an orphan for that kubelet's housekeeping.
fn plant_orphan_sandbox(svc: &PodmanService, cluster_id: &str, node: &str, uid: &str) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let runtime = PodmanRuntime::connect(PodmanOptions::new(&svc.socket, node, cluster_id))
            .await
            .expect("connect to podman");
        runtime
            .update_runtime_config(&kulisse_core::runtime::pod_cidr_for_node(node))
            .await
            .expect("the node's pod CIDR");
        let mut config = sandbox_config("orphan", uid);
        config.port_mappings.clear();
        runtime.run_pod_sandbox(&config).await.expect("plant an orphan sandbox");
    });
}

/// `kulisse up` with two podman nodes on `dir` (a new cluster, or the same one again).
fn podman_up_again(svc: &PodmanService, dir: &std::path::Path) -> Cluster {
    let socket = svc.socket_str();
    Cluster::start_in(
        dir,
        &[
            "--nodes",
            "2",
            "--runtime",
            "podman",
            "--podman-socket",
            &socket,
            "--fast-failover",
            "--crashloop-backoff",
            "1s",
        ],
    )
}

const CRASH_AND_UNREADY: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo crashing now; exit 1"]
---
apiVersion: v1
kind: Pod
metadata:
  name: picky
  labels: {app: picky}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 9999}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: picky
spec:
  selector: {app: picky}
  ports: [{port: 8080}]
"#;

#[test]
fn podman_cluster_crash_loops_and_keeps_unready_pods_out_of_endpoints() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    let manifest = dir.path().join("crash.yaml");
    std::fs::write(&manifest, CRASH_AND_UNREADY).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    // A container that exits 1 is restarted with a growing back-off.
    let pod = wait_for(60, "crasher: restartCount >= 3 and CrashLoopBackOff", || {
        let p = json(&pc.c, &["get", "pod", "crasher"]);
        let restarts = p
            .pointer("/status/containerStatuses/0/restartCount")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let table = pc.c.ok(&["get", "pod", "crasher"]);
        (restarts >= 3 && table.contains("CrashLoopBackOff")).then_some(p)
    });
    assert_eq!(
        pod.pointer("/status/containerStatuses/0/lastState/terminated/exitCode")
            .and_then(Value::as_i64),
        Some(1),
        "{pod}"
    );
    let backoffs: Vec<String> = items(&json(
        &pc.c,
        &["get", "events", "--field-selector", "involvedObject.name=crasher"],
    ))
    .iter()
    .filter(|e| s(e, "/reason") == "BackOff")
    .map(|e| s(e, "/message").to_string())
    .collect();
    assert!(!backoffs.is_empty(), "BackOff events are recorded");
    let logs = pc.c.ok(&["logs", "crasher", "--previous"]);
    assert!(logs.contains("crashing now"), "{logs}");
    // Each restart is a new podman container of the same pod; the kubelet keeps the current
    // and the previous one and removes older ones.
    let (_, containers) = list_labelled(&[(LABEL_CLUSTER, &pc.cluster_id), ("io.kubernetes.container.name", "c")]);
    assert!(
        (1..=3).contains(&containers.len()),
        "old instances are removed: {containers:?}"
    );

    // A readiness probe on a port nothing listens on: Running, never Ready, not in the
    // Service's ready endpoints, though the server itself answers on its pod IP.
    let ip = wait_for(30, "picky Running with a pod IP", || {
        let p = json(&pc.c, &["get", "pod", "picky"]);
        (s(&p, "/status/phase") == "Running" && !s(&p, "/status/podIP").is_empty())
            .then(|| s(&p, "/status/podIP").to_string())
    });
    let (code, _) = get_until_ok(&format!("{ip}:8080"));
    assert_eq!(code, 200);
    wait_for(30, "picky listed as not ready in the endpoints", || {
        let (_, not_ready) = endpoint_addresses(&pc.c, "picky");
        not_ready.contains(&ip).then_some(())
    });
    // The signal that the kubelet went on probing: every failed probe bumps the count of
    // picky's `Unhealthy` events; after three more failures, it is still not ready.
    let failures = || -> i64 {
        items(&json(
            &pc.c,
            &["get", "events", "--field-selector", "involvedObject.name=picky"],
        ))
        .iter()
        .filter(|e| s(e, "/reason") == "Unhealthy")
        .map(|e| e.pointer("/count").and_then(Value::as_i64).unwrap_or(1))
        .sum()
    };
    let seen = failures();
    wait_for(60, "three more failed readiness probes of picky", || {
        (failures() >= seen + 3).then_some(())
    });
    let p = json(&pc.c, &["get", "pod", "picky"]);
    assert!(!is_ready(&p), "{p}");
    let (ready, _) = endpoint_addresses(&pc.c, "picky");
    assert!(
        !ready.contains(&ip),
        "an unready pod is never a ready endpoint: {ready:?}"
    );
    let events = pc.c.ok(&["describe", "pod", "picky"]);
    assert!(events.contains("Readiness probe failed"), "{events}");
}

/// The `Ready` condition of a node, once its status is `want`.
fn node_ready_when(c: &Cluster, node: &str, want: &str) -> Value {
    wait_for(60, &format!("{node}: Ready={want}"), || {
        let n = json(c, &["get", "node", node]);
        let cs = n.pointer("/status/conditions")?.as_array()?.clone();
        cs.into_iter()
            .find(|c| s(c, "/type") == "Ready" && s(c, "/status") == want)
    })
}

#[test]
fn a_podman_node_reports_the_machine_and_is_not_ready_while_podman_is_down() {
    let Some(mut svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    node_ready_when(&pc.c, "node-1", "True");

    // The node's size is this machine's, as cAdvisor would read it.
    let (cpu, memory) = kulisse_core::kubelet::machine::host_capacity().expect("this machine's size");
    let node = json(&pc.c, &["get", "node", "node-1"]);
    for field in ["capacity", "allocatable"] {
        let r = &node["status"][field];
        assert_eq!(
            (s(r, "/cpu"), s(r, "/memory")),
            (cpu.as_str(), memory.as_str()),
            "{field}: {node}"
        );
    }

    // podman's service stops: the kubelet's runtime check fails, the node turns NotReady
    svc.stop();
    let down = node_ready_when(&pc.c, "node-1", "False");
    assert_eq!(s(&down, "/reason"), "KubeletNotReady", "{down}");
    assert!(
        s(&down, "/message").starts_with("container runtime is down: podman "),
        "{down}"
    );
    // ... and back when podman answers again
    svc.restart();
    let up = node_ready_when(&pc.c, "node-1", "True");
    assert_eq!(s(&up, "/reason"), "KubeletReady", "{up}");
    assert_eq!(s(&up, "/message"), "kubelet is posting ready status", "{up}");
}

const VOLUMES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: site
data:
  index.html: "version one"
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {}
  - name: site
    configMap:
      name: site
  # Runs to completion before the others start: what it writes is there for them.
  initContainers:
  - name: prepare
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared by the init container on $HOSTNAME > /out/init.html"]
    volumeMounts: [{name: shared, mountPath: /out}]
  containers:
  # Serves the ConfigMap's files, mounted read-only by the kubelet.
  - name: site
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    ports: [{containerPort: 8080}]
    volumeMounts: [{name: site, mountPath: /www}]
  # Writes into the emptyDir ...
  - name: writer
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo written by the writer > /out/index.html; touch /conf/x 2>/dev/null || echo read-only > /out/ro.txt; sleep 3600"]
    volumeMounts:
    - {name: shared, mountPath: /out}
    - {name: site, mountPath: /conf}
  # ... which this one serves.
  - name: reader
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["httpd", "-f", "-p", "8081", "-h", "/in"]
    ports: [{containerPort: 8081}]
    volumeMounts: [{name: shared, mountPath: /in, readOnly: true}]
"#;

/// GET `path` on `addr` until the body satisfies `want`.
fn get_until(addr: &str, path: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    wait_for(60, what, || match http_get(addr, path) {
        Ok((200, body)) if want(&body) => Some(body),
        _ => None,
    })
}

#[test]
fn podman_pods_share_an_empty_dir_and_see_config_map_updates() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    let manifest = dir.path().join("vols.yaml");
    std::fs::write(&manifest, VOLUMES).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let ip = wait_for(90, "vols Running with a pod IP", || {
        let p = json(&pc.c, &["get", "pod", "vols"]);
        (s(&p, "/status/phase") == "Running" && !s(&p, "/status/podIP").is_empty())
            .then(|| s(&p, "/status/podIP").to_string())
    });
    // The ConfigMap's key is a file in the container.
    get_until(
        &format!("{ip}:8080"),
        "/index.html",
        "the ConfigMap's file served",
        |b| b.contains("version one"),
    );
    // What one container writes into the emptyDir, the other serves; the ConfigMap volume
    // is read-only for the container.
    let addr = format!("{ip}:8081");
    get_until(&addr, "/index.html", "the emptyDir file served by the reader", |b| {
        b.contains("written by the writer")
    });
    get_until(
        &addr,
        "/ro.txt",
        "the writer could not write into the ConfigMap volume",
        |b| b.contains("read-only"),
    );
    // The init container ran first, and the main container serves what it wrote.
    get_until(&addr, "/init.html", "the init container's file served", |b| {
        b.contains("prepared by the init container on vols")
    });
    let pod = json(&pc.c, &["get", "pod", "vols"]);
    assert_eq!(
        s(&pod, "/status/initContainerStatuses/0/state/terminated/reason"),
        "Completed",
        "{pod:#}"
    );
    // An update of the ConfigMap reaches the running container's file.
    std::fs::write(&manifest, VOLUMES.replace("version one", "version two")).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    get_until(
        &format!("{ip}:8080"),
        "/index.html",
        "the updated ConfigMap served",
        |b| b.contains("version two"),
    );
    // The files live under the kubelet's root dir in the data dir, until the pod is gone.
    let uid = s(&json(&pc.c, &["get", "pod", "vols"]), "/metadata/uid").to_string();
    let node = s(&json(&pc.c, &["get", "pod", "vols"]), "/spec/nodeName").to_string();
    let pod_dir = dir.path().join("kubelet").join(&node).join("pods").join(&uid);
    assert!(
        pod_dir
            .join("volumes/kubernetes.io~empty-dir/shared/index.html")
            .is_file(),
        "{}",
        pod_dir.display()
    );
    pc.c.ok(&["delete", "pod", "vols"]);
    wait_for(60, "the pod's volume directory removed", || {
        (!pod_dir.exists()).then_some(())
    });
}

const ENV_FROM_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: s3cret
---
apiVersion: v1
kind: Pod
metadata:
  name: envy
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo \"$PASSWORD $COLOUR $POD_NAME\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: COLOUR
      valueFrom: {configMapKeyRef: {name: paint, key: colour}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
"#;

#[test]
fn podman_env_from_a_secret_waits_for_a_missing_config_map() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    let manifest = dir.path().join("envy.yaml");
    std::fs::write(&manifest, ENV_FROM_SECRET).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    // No ConfigMap "paint": the container cannot be configured, and says so.
    wait_for(60, "envy in CreateContainerConfigError", || {
        let p = json(&pc.c, &["get", "pod", "envy"]);
        (s(&p, "/status/containerStatuses/0/state/waiting/reason") == "CreateContainerConfigError"
            && s(&p, "/status/containerStatuses/0/state/waiting/message") == "configmap \"paint\" not found")
            .then_some(())
    });
    let table = pc.c.ok(&["get", "pod", "envy"]);
    assert!(table.contains("CreateContainerConfigError"), "{table}");
    pc.c.ok(&["create", "configmap", "paint", "--from-literal=colour=blue"]);
    let ip = wait_for(90, "envy Running with a pod IP", || {
        let p = json(&pc.c, &["get", "pod", "envy"]);
        (s(&p, "/status/phase") == "Running" && !s(&p, "/status/podIP").is_empty())
            .then(|| s(&p, "/status/podIP").to_string())
    });
    get_until(&format!("{ip}:8080"), "/index.html", "the environment served", |b| {
        b.contains("s3cret blue envy")
    });
}

// ---------------------------------------------------------------------------------------
// The kubelet's whole job: images it cannot pull, containers over their memory limit.
// ---------------------------------------------------------------------------------------

/// An image on a registry on this machine that refuses every connection: nothing listens on
/// port 9 of 127.0.0.1 (the old "discard" port), so each pull fails at once, on loopback.
const UNPULLABLE_IMAGE: &str = "127.0.0.1:9/kulisse-test/nothing:v1";

fn unpullable_pod() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: puller
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {UNPULLABLE_IMAGE}
    imagePullPolicy: Always
    command: ["sh", "-c", "sleep 3600"]
"#
    )
}

/// `kulisse up --runtime podman` (its default nodes) with the kubelets' back-off base at 1 s;
/// dropping it kills `kulisse up` before it removes the cluster's podman pods (the fields'
/// drop order).
fn one_node_with_fast_back_off(svc: &PodmanService, dir: &std::path::Path) -> PodmanCluster {
    let (c, cleanup) = kulisse_tests::podman::podman_cluster(svc, dir, &["--crashloop-backoff", "1s"]);
    PodmanCluster {
        cluster_id: cleanup.value.clone(),
        c,
        _cleanup: cleanup,
    }
}

/// `GET path` on the cluster's API server with its token, parsed.
fn api_get(c: &Cluster, path: &str) -> Value {
    let auth = format!("Bearer {}", c.token());
    let (code, body) = c.http("GET", path, &[("Authorization", auth.as_str())], b"");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The summed `count` of the Events of `events` with this reason whose message starts so.
fn event_count(events: &[Value], reason: &str, message_start: &str) -> i64 {
    events
        .iter()
        .filter(|e| s(e, "/reason") == reason && s(e, "/message").starts_with(message_start))
        .map(|e| e.pointer("/count").and_then(Value::as_i64).unwrap_or(1))
        .sum()
}

/// Kills a process this test started (a `kubectl get -w`) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `(reason, message)` pairs, as a watch collects them.
type ReasonLog = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// Every waiting reason (and its message) that a `kubectl get pod NAME -w -o json` shows for
/// the pod's first container, in order, consecutive repeats folded.
fn watch_waiting_reasons(kubectl: &kulisse_tests::kubectl::Kubectl, pod: &str) -> (KillOnDrop, ReasonLog) {
    let mut child = kubectl.spawn(&["get", "pod", pod, "-w", "-o", "json"]);
    let stdout = child.stdout.take().expect("kubectl's stdout");
    let seen = ReasonLog::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for p in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
            let Ok(p) = p else { break };
            let reason = s(&p, "/status/containerStatuses/0/state/waiting/reason").to_string();
            let message = s(&p, "/status/containerStatuses/0/state/waiting/message").to_string();
            let mut log = log.lock().unwrap();
            if !reason.is_empty() && log.last().map(|(r, _)| r) != Some(&reason) {
                log.push((reason, message));
            }
        }
    });
    (KillOnDrop(child), seen)
}

/// Upstream's image pull back-off, with `--crashloop-backoff 1s` (the kubelet's back-off
/// base, for restarts and pulls alike; upstream: 10 s doubling to 300 s): a pull that fails
/// shows `ErrImagePull`, then `ImagePullBackOff` while the kubelet waits 1 s, 2 s, 4 s, 8 s
/// before the next attempts. The test watches the kubelet's Events (a `Pulling` event when an
/// attempt starts, `Failed` when it ends; each repeat bumps the event's `count`), polling the
/// API server every 10 ms or so, and measures each wait from the end of one attempt to the
/// start of the next; `kubectl get pod -w` shows the container's waiting reasons in order.
/// Podman is only ever asked to pull from 127.0.0.1:9, where nothing listens.
#[test]
fn podman_image_pull_back_off_grows() {
    let Some(svc) = PodmanService::start() else { return };
    // Nothing may answer on the "registry": the pulls must fail on loopback, at once.
    let registry: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(UNPULLABLE_IMAGE.starts_with("127.0.0.1:9/"));
    assert!(
        std::net::TcpStream::connect_timeout(&registry, Duration::from_secs(1)).is_err(),
        "something listens on {registry}: this test needs a port that refuses connections"
    );
    let dir = tempfile::tempdir().unwrap();
    let pc = one_node_with_fast_back_off(&svc, dir.path());
    let c = &pc.c;
    let Some(kubectl) = kulisse_tests::kubectl::Kubectl::for_cluster(c) else {
        return;
    };
    let manifest = dir.path().join("puller.yaml");
    std::fs::write(&manifest, unpullable_pod()).unwrap();
    kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let (_watch, reasons) = watch_waiting_reasons(&kubectl, "puller");

    // When each attempt starts (`Pulling` count goes up) and ends (`Failed to pull` count
    // goes up): each moment is known to lie between the previous poll (when the event was not
    // there yet) and this one's answer.
    const WAITS: usize = 4;
    let events_path = "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=puller";
    let mut starts: Vec<(Instant, Instant)> = Vec::new();
    let mut ends: Vec<(Instant, Instant)> = Vec::new();
    let began = Instant::now();
    let mut previous_poll = began;
    let deadline = began + Duration::from_secs(180);
    while starts.len() < WAITS + 1 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {} pull attempts; saw {} starts, {} failures, reasons {:?}",
            WAITS + 1,
            starts.len(),
            ends.len(),
            reasons.lock().unwrap()
        );
        let poll = Instant::now();
        let events = items(&api_get(c, events_path));
        let answered = Instant::now();
        let pulling = event_count(&events, "Pulling", &format!("Pulling image \"{UNPULLABLE_IMAGE}\""));
        let failed = event_count(&events, "Failed", "Failed to pull image");
        for (seen, count) in [(&mut starts, pulling), (&mut ends, failed)] {
            while (seen.len() as i64) < count {
                seen.push((previous_poll, answered));
            }
        }
        previous_poll = poll;
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
    // Each wait, from the end of attempt k to the start of attempt k+1: at least `low`, at
    // most `high`.
    let waits: Vec<(Duration, Duration)> = (0..WAITS)
        .map(|k| {
            let (start_after, start_by) = starts[k + 1];
            let (end_after, end_by) = ends[k];
            (
                start_after.saturating_duration_since(end_by),
                start_by.duration_since(end_after),
            )
        })
        .collect();
    let middle = |(low, high): (Duration, Duration)| (low + high) / 2;
    println!(
        "pull attempts started at (from the first): {:?}",
        starts
            .iter()
            .map(|t| secs(middle((
                t.0.duration_since(starts[0].0),
                t.1.duration_since(starts[0].0)
            ))))
            .collect::<Vec<_>>()
    );
    println!(
        "each failed pull took (podman's own retries included): {:?}",
        starts
            .iter()
            .zip(&ends)
            .map(|(s, e)| secs(middle((e.0.saturating_duration_since(s.1), e.1.duration_since(s.0)))))
            .collect::<Vec<_>>()
    );
    println!(
        "back-off waits between a failed pull and the next attempt: {:?} (each within {:?})",
        waits.iter().map(|w| secs(middle(*w))).collect::<Vec<_>>(),
        waits
            .iter()
            .map(|(low, high)| format!("{}..{}", secs(*low), secs(*high)))
            .collect::<Vec<_>>()
    );

    // The back-off doubles: the k-th wait lasts 2^k s (the kubelet never pulls earlier; the
    // slack covers the `Failed` event being recorded a moment after the back-off started),
    // and each wait is surely longer than the one before.
    for (k, (_, high)) in waits.iter().enumerate() {
        let nominal = Duration::from_secs(1 << k);
        assert!(
            *high + Duration::from_millis(400) >= nominal,
            "wait {k} lasted at most {} but the back-off then is {}: {waits:?}",
            secs(*high),
            secs(nominal)
        );
    }
    for pair in waits.windows(2) {
        assert!(pair[1].0 > pair[0].1, "the back-off must grow: {waits:?}");
    }

    // What the pod said, as kubectl watched it: after each failed attempt ErrImagePull
    // (podman's own error), then ImagePullBackOff while the kubelet waits.
    let pull_reasons = wait_for(30, "kubectl -w showing the 4th ImagePullBackOff", || {
        let log = reasons.lock().unwrap().clone();
        let pull: Vec<(String, String)> = log
            .into_iter()
            .filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
            .collect();
        (pull.iter().filter(|(r, _)| r == "ImagePullBackOff").count() >= WAITS).then_some(pull)
    });
    let order: Vec<&str> = pull_reasons.iter().map(|(r, _)| r.as_str()).collect();
    println!("waiting reasons kubectl -w showed, in order: {order:?}");
    for (k, reason) in order.iter().enumerate() {
        let want = if k % 2 == 0 { "ErrImagePull" } else { "ImagePullBackOff" };
        assert_eq!(
            *reason, want,
            "ErrImagePull, then ImagePullBackOff, each time: {order:?}"
        );
    }
    let (_, err_message) = &pull_reasons[0];
    let (_, backoff_message) = &pull_reasons[1];
    println!("  ErrImagePull: {err_message}\n  ImagePullBackOff: {backoff_message}");
    assert!(err_message.contains("127.0.0.1:9"), "{err_message}");
    assert_eq!(
        backoff_message,
        &format!("Back-off pulling image \"{UNPULLABLE_IMAGE}\": ErrImagePull: {err_message}")
    );
    let events = items(&api_get(c, events_path));
    let err_image_pull = event_count(&events, "Failed", "Error: ErrImagePull");
    let backoffs = event_count(&events, "BackOff", "Back-off pulling image");
    println!("events: Failed \"Error: ErrImagePull\" x{err_image_pull}, BackOff x{backoffs}");
    assert!(
        err_image_pull >= WAITS as i64,
        "each failed attempt records ErrImagePull: {err_image_pull}"
    );
    assert!(
        backoffs >= WAITS as i64,
        "each wait records a BackOff event: {backoffs}"
    );
    let table = kubectl.ok(&["get", "pod", "puller"]);
    assert!(
        table.contains("ImagePullBackOff") || table.contains("ErrImagePull"),
        "{table}"
    );
}

/// Whether this host can limit a container's memory: the cgroup memory controller is there
/// (cgroup v2: listed in `cgroup.controllers`; v1: its own hierarchy).
fn memory_cgroup_available() -> bool {
    match std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
        Ok(controllers) => controllers.split_whitespace().any(|c| c == "memory"),
        Err(_) => std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists(),
    }
}

const MEMORY_HOG: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hog
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    # `tail` keeps the last "line" in memory, and /dev/zero has no newline: it grows until
    # the kernel kills it.
    command: ["sh", "-c", "echo eating memory; tail /dev/zero"]
    resources:
      limits: {memory: 32Mi}
"#;

/// A container over its memory limit is killed by the kernel, and the kubelet says so:
/// `lastState.terminated.reason: OOMKilled`, exit code 137, as `kubectl get pod -o json` shows.
#[test]
fn podman_oom_killed() {
    let Some(svc) = PodmanService::start() else { return };
    if !memory_cgroup_available() {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPING podman_oom_killed: this host has no cgroup memory controller (neither\n\
             !!! `memory` in /sys/fs/cgroup/cgroup.controllers nor /sys/fs/cgroup/memory), so no\n\
             !!! container memory limit can be enforced and nothing is ever OOM-killed.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pc = one_node_with_fast_back_off(&svc, dir.path());
    let c = &pc.c;
    let Some(kubectl) = kulisse_tests::kubectl::Kubectl::for_cluster(c) else {
        return;
    };
    let manifest = dir.path().join("hog.yaml");
    std::fs::write(&manifest, MEMORY_HOG).unwrap();
    kubectl.ok(&["apply", "-f", manifest.to_str().unwrap()]);

    let pod = wait_for(120, "hog: a terminated last state", || {
        let out = kubectl.ok(&["get", "pod", "hog", "-o", "json"]);
        let p: Value = serde_json::from_str(&out).ok()?;
        let last = p.pointer("/status/containerStatuses/0/lastState/terminated")?;
        (!s(last, "/reason").is_empty()).then_some(p)
    });
    let terminated = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    println!("hog's lastState.terminated: {terminated}");
    assert_eq!(s(terminated, "/reason"), "OOMKilled", "{pod}");
    assert_eq!(
        terminated.pointer("/exitCode").and_then(Value::as_i64),
        Some(137),
        "{pod}"
    );

    // The limit is the containers' cgroup limit in podman: 32 MiB (every instance of the
    // container has it; the kubelet removes the older ones).
    let (_, instances) = list_labelled(&[
        (LABEL_CLUSTER, pc.cluster_id.as_str()),
        ("io.kubernetes.container.name", "hog"),
    ]);
    let limits: Vec<String> = instances
        .iter()
        .filter_map(|id| {
            let out = std::process::Command::new("podman")
                .args(["inspect", "--format", "{{.HostConfig.Memory}}", id])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .collect();
    println!("podman's memory limits of the hog containers: {limits:?} bytes");
    assert!(!limits.is_empty(), "no hog container to inspect: {instances:?}");
    assert!(
        limits.iter().all(|l| *l == (32 * 1024 * 1024).to_string()),
        "{limits:?}"
    );

    // restartPolicy Always: it is started again, killed again, and says so again.
    let pod = wait_for(120, "hog restarted at least twice", || {
        let p: Value = serde_json::from_str(&kubectl.ok(&["get", "pod", "hog", "-o", "json"])).ok()?;
        let restarts = p.pointer("/status/containerStatuses/0/restartCount")?.as_i64()?;
        (restarts >= 2).then_some(p)
    });
    assert_eq!(
        s(&pod, "/status/containerStatuses/0/lastState/terminated/reason"),
        "OOMKilled",
        "{pod}"
    );
    let logs = kubectl.ok(&["logs", "hog", "--previous"]);
    assert!(logs.contains("eating memory"), "{logs}");
}

/// A server that needs warning before it stops: a preStop `httpGet` hook calls its `/drain`
/// (a busybox httpd CGI script that writes a file into a hostPath volume).
const DRAINER: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: drainer}
spec:
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    hostPath: {path: HOST_DIR, type: Directory}
  containers:
  - name: web
    image: localhost/busybox:latest
    imagePullPolicy: IfNotPresent
    ports: [{containerPort: 8080}]
    volumeMounts: [{name: shared, mountPath: /shared}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
    lifecycle:
      preStop:
        httpGet: {path: /cgi-bin/drain, port: 8080}
    command:
    - sh
    - -c
    - |
      mkdir -p /www/cgi-bin
      printf '#!/bin/sh\necho "drained by $REQUEST_METHOD $REQUEST_URI" > /shared/drained\nprintf "Content-Type: text/plain\\r\\n\\r\\nok\\n"\n' > /www/cgi-bin/drain
      chmod +x /www/cgi-bin/drain
      exec httpd -f -p 8080 -h /www
"#;

#[test]
fn podman_pre_stop_http_hook_runs_before_the_stop() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pc = podman_up(&svc, dir.path());
    let host = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("drainer.yaml");
    std::fs::write(&manifest, DRAINER.replace("HOST_DIR", host.path().to_str().unwrap())).unwrap();
    pc.c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_for(90, "drainer Ready", || {
        is_ready(&json(&pc.c, &["get", "pod", "drainer"])).then_some(())
    });
    let drained = host.path().join("drained");
    assert!(!drained.exists(), "the hook ran before the pod was deleted");
    pc.c.ok(&["delete", "pod", "drainer", "--wait=false"]);
    wait_for(60, "drainer gone", || {
        (!pc.c.kulisse(&["get", "pod", "drainer"]).status.success()).then_some(())
    });
    let text = std::fs::read_to_string(&drained).expect("the preStop hook's request reached the container");
    assert_eq!(text, "drained by GET /cgi-bin/drain\n");
}
