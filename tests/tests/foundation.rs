//! End-to-end checks of the foundation: `kulisse up`, then `apply`, `get`, `describe`,
//! `delete` as a user runs them, bad input of every kind, authentication, and durability
//! across `kill -9`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use kulisse_tests::cluster::{Cluster, text};
use serde_json::Value;

const NGINX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nginx-deployment.yaml");

fn write(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.display().to_string()
}

#[test]
fn apply_is_created_then_unchanged_then_configured() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&["apply", "-f", NGINX]).trim(),
        "deployment.apps/nginx-deployment created"
    );
    assert_eq!(
        c.ok(&["apply", "-f", NGINX]).trim(),
        "deployment.apps/nginx-deployment unchanged"
    );

    let tmp = tempfile::tempdir().unwrap();
    let changed = std::fs::read_to_string(NGINX)
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    let f = write(tmp.path(), "changed.yaml", changed.as_bytes());
    assert_eq!(
        c.ok(&["apply", "-f", &f]).trim(),
        "deployment.apps/nginx-deployment configured"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &f]).trim(),
        "deployment.apps/nginx-deployment unchanged"
    );

    // get in a table with kubectl's columns
    let table = c.ok(&["get", "deploy"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(lines.next().unwrap().starts_with("nginx-deployment"), "{table}");

    // -o json is the stored object, with server-set metadata and the defaults
    let json: Value = serde_json::from_str(&c.ok(&["get", "deploy", "nginx-deployment", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["replicas"], 5);
    assert_eq!(
        json["metadata"]["generation"], 2,
        "generation counts spec changes: {json}"
    );
    assert!(json["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(
        json["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<i64>().is_ok())
    );
    assert!(json["metadata"]["creationTimestamp"].as_str().is_some());
    assert_eq!(json["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        json["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    // -o yaml and -o name
    let yaml = c.ok(&["get", "deployments.apps", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("name: nginx-deployment"),
        "{yaml}"
    );
    assert_eq!(
        c.ok(&["get", "deployment", "-o", "name"]).trim(),
        "deployment.apps/nginx-deployment"
    );

    // namespaces: -n and -A
    assert!(c.ok(&["apply", "-f", NGINX, "-n", "kube-system"]).contains("created"));
    let all = c.ok(&["get", "deploy", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    assert!(all.contains("default") && all.contains("kube-system"), "{all}");
    let ks = c.ok(&["get", "deploy", "-n", "kube-system", "-o", "name"]);
    assert_eq!(ks.trim(), "deployment.apps/nginx-deployment");
    let out = c.kulisse(&["get", "pods", "-n", "kube-public"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("No resources found in kube-public namespace."));

    // describe and delete
    let d = c.ok(&["describe", "deploy", "nginx-deployment"]);
    assert!(
        d.contains("Replicas:") && d.contains("5 desired") && d.contains("nginx:1.14.2"),
        "{d}"
    );
    assert_eq!(
        c.ok(&["delete", "-f", NGINX]).trim(),
        "deployment.apps \"nginx-deployment\" deleted"
    );
    let gone = c.kulisse(&["get", "deploy", "nginx-deployment"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("Error from server (NotFound): deployments.apps \"nginx-deployment\" not found"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn multi_document_file_with_one_bad_document_writes_nothing() {
    let c = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\ndata:\n  a: b\n";
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n data: [\n";
    let f = write(tmp.path(), "mixed.yaml", format!("{good}---\n{bad}").as_bytes());
    let out = c.kulisse(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("mixed.yaml") && err.contains("document 2") && err.contains("line"),
        "{err}"
    );
    let cms = c.kulisse(&["get", "cm", "first"]);
    assert_eq!(
        cms.status.code(),
        Some(1),
        "the good document must not have been applied"
    );

    // A document that parses but is invalid also stops the whole file.
    let invalid = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: neg\nspec:\n  replicas: -1\n  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers: [{name: c, image: i}]\n";
    let f = write(tmp.path(), "invalid.yaml", format!("{good}---\n{invalid}").as_bytes());
    let out = c.kulisse(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("spec.replicas"), "{}", text(&out.stderr));
    assert_eq!(c.kulisse(&["get", "cm", "first"]).status.code(), Some(1));
}

/// Every kind of bad input gets a clear error that names what is wrong, and the server
/// keeps serving afterwards.
#[test]
fn bad_input_gets_clear_errors_and_the_server_keeps_serving() {
    let c = Cluster::start();
    let tmp = tempfile::tempdir().unwrap();
    let deploy = |spec: &str| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n{spec}");
    let template = "  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers: [{name: c, image: i}]\n";
    let mut alias_bomb =
        String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..10 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        alias_bomb.push_str(&format!(
            "{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("yaml syntax", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n".to_vec(), &["line"]),
        ("unknown kind", b"apiVersion: v1\nkind: Widget\nmetadata: {name: x}\n".to_vec(), &["Widget", "Deployment"]),
        ("invalid name", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n".to_vec(), &["metadata.name", "RFC 1123"]),
        ("wrong type", deploy(&format!("  replicas: three\n{template}")).into_bytes(), &["spec.replicas"]),
        ("negative replicas", deploy(&format!("  replicas: -1\n{template}")).into_bytes(), &["spec.replicas", "greater than or equal to 0"]),
        (
            "selector mismatch",
            deploy("  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: y}\n    spec:\n      containers: [{name: c, image: i}]\n").into_bytes(),
            &["selector", "labels"],
        ),
        (
            "port out of range",
            b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 70000}]\n".to_vec(),
            &["spec.ports[0].port"],
        ),
        ("no containers", deploy("  selector:\n    matchLabels: {app: x}\n  template:\n    metadata:\n      labels: {app: x}\n    spec:\n      containers: []\n").into_bytes(), &["containers"]),
        ("alias bomb", alias_bomb.into_bytes(), &["alias"]),
        ("100k-deep nesting", deep.into_bytes(), &["nesting is too deep"]),
        ("binary garbage", vec![0u8, 159, 146, 150, 255, 254, 7, 0, 1], &["garbage.yaml"]),
        ("empty file", Vec::new(), &["no objects"]),
        ("tabs", b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: x\n".to_vec(), &["line 4"]),
    ];
    for (what, content, needles) in cases {
        let file = if what == "binary garbage" {
            "garbage.yaml".to_string()
        } else {
            format!("{}.yaml", what.replace(' ', "-"))
        };
        let f = write(tmp.path(), &file, &content);
        let out = c.kulisse(&["apply", "-f", &f]);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: expected failure, got {:?}\n{err}",
            out.status
        );
        for n in needles {
            assert!(
                err.to_lowercase().contains(&n.to_lowercase()),
                "{what}: error should mention {n:?}:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    // Still serving, nothing was written.
    assert!(c.ok(&["get", "ns", "-o", "name"]).contains("namespace/default"));
    let (code, body) = c.http(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[("Authorization", &format!("Bearer {}", c.token()))],
        b"",
    );
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{body}");
}

/// The server, not just the CLI, rejects bad bodies with Kubernetes Status objects.
#[test]
fn the_api_server_answers_bad_bodies_with_status_objects() {
    let c = Cluster::start();
    let auth = format!("Bearer {}", c.token());
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let path = "/apis/apps/v1/namespaces/default/deployments";

    let (code, body) = c.http("POST", path, &h, br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"replicas":-1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#);
    assert_eq!(code, 422, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.replicas");

    let (code, body) = c.http("POST", path, &h, &[0xff, 0xfe, 0x00]);
    assert_eq!(code, 400, "{body}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (code, _) = c.http("POST", path, &h, deep.as_bytes());
    assert_eq!(code, 400);
    // A body over the 3 MiB limit is refused from its declared length, before it is read.
    let too_long = (4 * 1024 * 1024).to_string();
    let mut big_headers = h.to_vec();
    big_headers.push(("Content-Length", too_long.as_str()));
    let (code, body) = c.http("POST", path, &big_headers, b"{");
    assert_eq!(code, 413, "{body}");
    let (code, body) = c.http("GET", "/apis/apps/v1/namespaces/default/deployments/missing", &h, b"");
    assert_eq!(code, 404);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["message"], "deployments.apps \"missing\" not found");
    assert_eq!(status["details"]["kind"], "deployments");
    // and it still works
    let (code, _) = c.http("GET", "/api/v1/namespaces", &h, b"");
    assert_eq!(code, 200);
}

#[test]
fn requests_without_the_token_get_401() {
    let c = Cluster::start();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Basic abc")],
    ] {
        let (code, body) = c.http("GET", "/api/v1/namespaces/default/pods", &headers, b"");
        assert_eq!(code, 401, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["reason"], "Unauthorized");
        assert_eq!(status["code"], 401);
    }
    for open in ["/version", "/healthz", "/readyz"] {
        let (code, _) = c.http("GET", open, &[], b"");
        assert_eq!(code, 200, "{open} answers without a token");
    }
    let auth = format!("Bearer {}", c.token());
    let (code, _) = c.http(
        "GET",
        "/api/v1/namespaces/default/pods",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200);
    // The kubeconfig holds the credential: 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.kubeconfig()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// `kill -9` of `kulisse up` while clients write: after a restart on the same data dir,
/// every write the server acknowledged is there, and the token and kubeconfig still work.
#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut c = Cluster::start();
    let keep = c.keep_data_dir().expect("temp dir");
    let client = kulisse_core::client::Client::from_kubeconfig(&c.kubeconfig()).unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let info = kulisse_core::objects::by_gvk("v1", "ConfigMap").unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            rt.spawn(async move {
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}});
                    match client.create(info, Some("default"), &cm).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Err(_) => break, // the server is gone
                    }
                }
            })
        })
        .collect();
    // Let the writers run until a good number of writes is acknowledged, then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while acked.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    c.kill9();
    rt.block_on(async {
        for w in writers {
            let _ = w.await;
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 300, "only {} writes were acknowledged", acked.len());

    let c2 = Cluster::start_in(keep.path(), &[]);
    let out = c2.ok(&["get", "configmaps", "-o", "name"]);
    let present: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("configmap/"))
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes were lost after kill -9, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// The same apply and get against a real etcd, and the keys are visible with etcdctl.
#[test]
fn apply_and_get_with_a_real_etcd() {
    let Some(etcd) = kulisse_tests::etcd::EtcdServer::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(tmp.path(), &["--store", "etcd", "--etcd-endpoints", &etcd.endpoint]);
    assert!(c.banner.iter().any(|l| l.contains("etcd")), "{:?}", c.banner);
    assert_eq!(
        c.ok(&["apply", "-f", NGINX]).trim(),
        "deployment.apps/nginx-deployment created"
    );
    assert_eq!(
        c.ok(&["apply", "-f", NGINX]).trim(),
        "deployment.apps/nginx-deployment unchanged"
    );
    assert!(c.ok(&["get", "deploy"]).contains("nginx-deployment"));
    let keys = kulisse_tests::etcd::etcdctl_get_prefix(&etcd.endpoint, "/registry/");
    assert!(
        keys.iter()
            .any(|k| k == "/registry/deployments/default/nginx-deployment"),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k == "/registry/namespaces/default"), "{keys:?}");
}

/// `kulisse up --nodes N` says on stderr when every node is Ready. Twelve nodes' certificates
/// are issued by several workers at once; each kubelet must get its own (a kubelet logged in
/// as another node would be refused by the Node authorizer and never turn Ready).
#[test]
fn up_reports_when_all_its_nodes_are_ready() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(kulisse_tests::cluster::kulisse_bin())
        .args(["up", "--nodes", "12", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .args(["--service-cidr", &kulisse_tests::cluster::unique_service_cidr()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kulisse up");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + kulisse_tests::cluster::START_TIMEOUT;
    let mut seen = Vec::new();
    let done = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) if line.starts_with("[nodes] all 12 nodes Ready (") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(done, "no '[nodes] all 12 nodes Ready' line; stderr was: {seen:#?}");
    // Twelve kubeconfigs, each with a certificate of its own.
    let certificates: BTreeSet<String> = (1..=12)
        .map(|i| std::fs::read_to_string(tmp.path().join(format!("kubelet-node-{i}.conf"))).unwrap())
        .collect();
    assert_eq!(certificates.len(), 12);
}
