//! # The official client libraries against kulisse
//!
//! kubectl is not the only program that talks to an API server: operators, CI scripts and
//! dashboards use the client libraries that the Kubernetes project publishes. They are
//! generated from the API's OpenAPI description and decode every answer into typed
//! models, so they notice a missing or mistyped field that a hand-written client would
//! let through. These tests run two of them against a real `kulisse up --nodes 2
//! --fast-failover` (mock runtime), with the kubeconfig it wrote (https, the cluster CA,
//! a bearer token), exactly as they would be pointed at a real cluster:
//!
//! - **Python** (`kubernetes` on PyPI, the official client): `tests/clients/python_client.py`
//!   lists pods in all namespaces, creates and reads a ConfigMap, applies a Deployment
//!   (server-side apply), watches pods from a list's resourceVersion and sees one of the
//!   Deployment's pods ADDED, and reads the Deployment's status. It prints one
//!   `OK <step> <json>` line per step; this test checks those lines. Without python3 or
//!   the package the test is skipped loudly, or fails when `CI=true`
//!   (`scripts/install-deps.sh` installs the package).
//! - **Rust** (the `kube` crate with `k8s-openapi`): `Api::<Pod>::list`, a
//!   `kube::runtime::watcher` stream that sees a pod being created, and `Api::patch` with
//!   server-side apply (`PatchParams::apply(..).force()`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kulisse_tests::cluster::{Cluster, text};
use serde_json::{Value, json};

/// Skip loudly, or fail in CI (CI must not pass by skipping): [`kulisse_tests::require`].
fn skip(msg: &str) {
    kulisse_tests::require::missing::<()>(msg);
}

fn start_cluster() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "2", "--fast-failover"]);
    (dir, cluster)
}

// ---------------------------------------------------------------------------------------
// Python
// ---------------------------------------------------------------------------------------

/// `$PYTHON`, else `python3` on the PATH.
fn find_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PYTHON") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join("python_client.py")
}

/// Run `python` with `args`; kill it if it has not finished after `limit` (a guard against a
/// hang, not a speed requirement). Returns (exit code, stdout, stderr).
fn run_bounded(python: &Path, args: &[&std::ffi::OsStr], limit: Duration) -> (Option<i32>, String, String) {
    let out_dir = tempfile::tempdir().expect("temp dir for the script's output");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let mut child = Command::new(python)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start python3");
    let deadline = Instant::now() + limit;
    let code = loop {
        match child.try_wait().expect("wait for python3") {
            Some(status) => break status.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let read = |p: &Path| std::fs::read(p).map(|b| text(&b)).unwrap_or_default();
    (code, read(&out_path), read(&err_path))
}

#[test]
fn python_client_lists_creates_watches_and_reads() {
    let Some(python) = find_python() else {
        skip("python3 is not installed (looked at $PYTHON and the PATH): the Python client test needs it");
        return;
    };
    let probe = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run python3");
    if !probe.status.success() {
        skip(&format!(
            "the Python package 'kubernetes' is not installed for {} ({}); run scripts/install-deps.sh or `pip install kubernetes`",
            python.display(),
            text(&probe.stderr).lines().last().unwrap_or("").trim()
        ));
        return;
    }

    let (_dir, cluster) = start_cluster();
    let script = python_script();
    let kubeconfig = cluster.kubeconfig();
    let (code, stdout, stderr) = run_bounded(
        &python,
        &[script.as_os_str(), kubeconfig.as_os_str()],
        Duration::from_secs(300),
    );
    let report = format!("python exit code {code:?}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    eprintln!("{report}");

    // `OK <step> <json>` lines, by step.
    let mut steps: BTreeMap<String, Value> = BTreeMap::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("OK ") {
            let (step, json) = rest.split_once(' ').unwrap_or((rest, "null"));
            let value = serde_json::from_str(json).unwrap_or_else(|e| panic!("step {step}: bad JSON {json:?}: {e}"));
            steps.insert(step.to_string(), value);
        }
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("FAIL ")) && code == Some(0) && stdout.lines().any(|l| l == "DONE"),
        "the Python client failed against kulisse:\n{report}"
    );
    let step = |name: &str| -> &Value {
        steps
            .get(name)
            .unwrap_or_else(|| panic!("the script printed no OK line for step {name}:\n{report}"))
    };

    // The client connected to the https server of the kubeconfig.
    assert_eq!(step("load-kubeconfig")["host"], json!(cluster.server));

    // GET /api/v1/pods decoded as a V1PodList.
    let list = step("list-pods-all-namespaces");
    assert_eq!(list["kind"], "PodList", "{list}");
    assert!(
        list["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()),
        "{list}"
    );

    // Create, then read the same ConfigMap back.
    let created = step("configmap-create");
    assert_eq!(created["name"], "py-config");
    assert!(created["uid"].as_str().is_some_and(|u| !u.is_empty()), "{created}");
    let read = step("configmap-read");
    assert_eq!(read["namespace"], "default");
    assert_eq!(read["sameUid"], true, "{read}");
    assert_eq!(read["sameResourceVersion"], true, "{read}");
    assert_eq!(read["data"], json!({"greeting": "hello from python", "answer": "42"}));
    assert_eq!(read["labels"], json!({"made-by": "python"}));
    assert!(read["creationTimestamp"].is_string(), "{read}");
    // ... and it is really stored: the server answers a plain GET for it.
    let (status, body) = cluster.http(
        "GET",
        "/api/v1/namespaces/default/configmaps/py-config",
        &[("Authorization", &format!("Bearer {}", cluster.token()))],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).expect("ConfigMap JSON");
    assert_eq!(stored["data"]["greeting"], "hello from python");

    // Server-side apply of the Deployment, recorded under the script's field manager.
    let applied = step("deployment-apply");
    assert_eq!(applied["name"], "py-web");
    assert_eq!(applied["replicas"], 2);
    assert!(
        applied["managers"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("kulisse-python-test"))),
        "managedFields should name the apply's field manager: {applied}"
    );

    // The watch (from the resourceVersion of a list taken before the apply) saw a pod
    // of the Deployment being ADDED; the pod is owned by the Deployment's ReplicaSet.
    let watched = step("watch-pod-added");
    assert_eq!(watched["type"], "ADDED");
    assert!(
        watched["pod"].as_str().is_some_and(|p| p.starts_with("py-web-")),
        "{watched}"
    );
    assert!(
        watched["ownerReferences"].as_array().is_some_and(|o| o
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("ReplicaSet/py-web-")))),
        "{watched}"
    );
    assert_eq!(watched["image"], "localhost/busybox:latest");

    // The Deployment's status, as the Python model decoded it.
    let status = step("deployment-read");
    for field in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas"] {
        assert_eq!(status[field], 2, "status.{field}: {status}");
    }
    assert_eq!(status["observedGeneration"], status["generation"], "{status}");
    assert!(
        status["conditions"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("Available=True"))),
        "the Deployment should be Available: {status}"
    );

    // Its pods, listed across namespaces with a label selector, are running.
    let after = step("list-pods-after");
    assert_eq!(after["count"], 2, "{after}");
    assert_eq!(after["phases"], json!(["Running", "Running"]), "{after}");
    assert!(
        after["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().all(|n| n.as_str().is_some_and(|n| !n.is_empty()))),
        "every pod should be bound to a node: {after}"
    );
}

// ---------------------------------------------------------------------------------------
// Rust: the kube crate
// ---------------------------------------------------------------------------------------

/// A `kube::Client` from the cluster's kubeconfig file, as a program would build one.
async fn kube_client(cluster: &Cluster) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig()).expect("kube reads kulisse's kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kube builds a client config from kulisse's kubeconfig");
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), cluster.server);
    kube::Client::try_from(config).expect("kube builds a client (rustls, the cluster CA)")
}

/// Give up on a step that does not finish (a guard against a hang, not a speed check).
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("gave up after 120s waiting for: {what}"))
}

fn rs_web() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "rs-web", "labels": {"app": "rs-web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "rs-web"}},
            "template": {
                "metadata": {"labels": {"app": "rs-web"}},
                "spec": {
                    "containers": [{
                        "name": "httpd",
                        "image": "localhost/busybox:latest",
                        "command": ["httpd", "-f", "-p", "8080", "-h", "/"],
                        "ports": [{"containerPort": 8080}]
                    }]
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_watches_and_applies() {
    // rustls needs one process-wide crypto provider; kube's `ring` feature uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_dir, cluster) = tokio::task::spawn_blocking(start_cluster)
        .await
        .expect("start the cluster");
    let client = kube_client(&cluster).await;

    // Api::<Pod>::list across all namespaces: decoded into k8s-openapi's PodList.
    let all_pods: Api<Pod> = Api::all(client.clone());
    let list = bounded("list pods", all_pods.list(&ListParams::default()))
        .await
        .expect("list pods in all namespaces");
    assert!(
        list.metadata
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty()),
        "a list carries the resourceVersion a watch starts from: {:?}",
        list.metadata
    );

    // A watcher on the pods of the Deployment we are about to apply. Drive it through its
    // initial list (Init .. InitDone: there are no such pods yet) before applying, so the
    // pod it reports next is one being created, not one that already existed.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(pods.clone(), watcher::Config::default().labels("app=rs-web")).boxed();
    bounded("the watcher's initial list", async {
        loop {
            match events.try_next().await {
                Ok(Some(watcher::Event::InitDone)) => break,
                Ok(Some(watcher::Event::InitApply(p))) => {
                    panic!("no rs-web pod should exist before the apply, got {:?}", p.metadata.name)
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watcher stream ended during its initial list"),
                Err(e) => panic!("the watcher failed during its initial list: {e}"),
            }
        }
    })
    .await;

    // Server-side apply (PATCH, application/apply-patch+yaml, fieldManager, force).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let params = PatchParams::apply("kulisse-test").force();
    let applied = bounded(
        "server-side apply",
        deployments.patch("rs-web", &params, &Patch::Apply(rs_web())),
    )
    .await
    .expect("server-side apply of the rs-web Deployment");
    assert_eq!(applied.metadata.name.as_deref(), Some("rs-web"));
    assert_eq!(applied.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert!(applied.metadata.uid.is_some(), "{:?}", applied.metadata);
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| Some((m.manager.clone()?, m.operation.clone()?)))
        .collect();
    assert!(
        managers.contains(&("kulisse-test".to_string(), "Apply".to_string())),
        "managedFields should record the apply by kulisse-test: {managers:?}"
    );

    // The watcher now reports a pod of the Deployment being created.
    let pod = bounded("the watcher to see an rs-web pod", async {
        loop {
            match events.try_next().await {
                Ok(Some(watcher::Event::Apply(p))) => break p,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the watcher stream ended before it saw an rs-web pod"),
                Err(e) => panic!("the watcher failed: {e}"),
            }
        }
    })
    .await;
    let name = pod.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("rs-web-"), "{name}");
    let owners: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    assert!(
        owners.iter().any(|o| o.starts_with("ReplicaSet/rs-web-")),
        "the pod is owned by the Deployment's ReplicaSet: {owners:?}"
    );
    drop(events);

    // Applying again with a changed field: same object, new generation, still one manager.
    let mut scaled = rs_web();
    scaled["spec"]["replicas"] = json!(3);
    let reapplied = bounded(
        "server-side apply (replicas 3)",
        deployments.patch("rs-web", &params, &Patch::Apply(scaled)),
    )
    .await
    .expect("second server-side apply");
    assert_eq!(reapplied.metadata.uid, applied.metadata.uid);
    assert_eq!(reapplied.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert!(
        reapplied.metadata.generation > applied.metadata.generation,
        "a spec change bumps metadata.generation: {:?} -> {:?}",
        applied.metadata.generation,
        reapplied.metadata.generation
    );

    // The Deployment's status, decoded by k8s-openapi, catches up with the new spec.
    let status = bounded("the rs-web rollout", async {
        loop {
            let d = deployments.get("rs-web").await.expect("get the rs-web Deployment");
            let s = d.status.clone().unwrap_or_default();
            if s.observed_generation == d.metadata.generation
                && s.ready_replicas == Some(3)
                && s.available_replicas == Some(3)
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(status.replicas, Some(3));
    assert_eq!(status.updated_replicas, Some(3));

    // And the list through kube sees exactly the Deployment's three pods.
    let rs_pods = pods
        .list(&ListParams::default().labels("app=rs-web"))
        .await
        .expect("list the rs-web pods");
    assert_eq!(
        rs_pods.items.len(),
        3,
        "{:?}",
        rs_pods.items.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
    );
}

/// A TLS server on a free loopback port offering `alpn`, answering every request with its
/// HTTP version (`HTTP/2.0`, `HTTP/1.1`): its URL, its CA and how many connections it took.
async fn version_echo_server(alpn: &[&[u8]]) -> (String, String, Arc<AtomicUsize>, tempfile::TempDir) {
    use http_body_util::Full;
    let dir = tempfile::tempdir().unwrap();
    let certs = kulisse_core::apiserver::certs::ensure(dir.path(), "127.0.0.1".parse().unwrap(), &[]).unwrap();
    let mut config = (*kulisse_core::apiserver::certs::server_config(&certs).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let answer = format!("{:?}", req.version());
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from(answer))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, certs.ca_pem.clone(), accepted, dir)
}

/// kulisse's own client speaks HTTP/2 where the server offers it (ALPN `h2`), and HTTP/1.1
/// to a TLS server that offers only that (as kulisse did before it spoke HTTP/2).
#[tokio::test]
async fn kulisse_client_speaks_http1_to_a_server_that_offers_only_http1() {
    let (url, ca, _, _dir) = version_echo_server(&[b"http/1.1"]).await;
    let client = kulisse_core::client::Client::with_ca(&url, "", Some(ca.as_bytes())).unwrap();
    for _ in 0..2 {
        let resp = client.request(http::Method::GET, "/", &[], None).await.unwrap();
        assert_eq!(resp.body, "HTTP/1.1");
    }
}

/// Fifty requests that a fresh client sends at once to a server offering HTTP/2 travel over
/// one connection: the first opens it, the others wait for it instead of each making a TCP
/// and TLS handshake that is thrown away once the first turns out to be HTTP/2.
#[tokio::test]
async fn requests_sent_at_once_by_a_fresh_client_share_one_http2_connection() {
    let (url, ca, accepted, _dir) = version_echo_server(&[b"h2", b"http/1.1"]).await;
    let client = kulisse_core::client::Client::with_ca(&url, "", Some(ca.as_bytes())).unwrap();
    let answers = futures::future::join_all((0..50).map(|_| {
        let client = client.for_component("kubelet", "n1");
        async move { client.request(http::Method::GET, "/", &[], None).await }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().body, "HTTP/2.0");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "connections the server accepted");
}
