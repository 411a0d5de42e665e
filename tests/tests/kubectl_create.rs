//! The real `kubectl create ...`, `kubectl run` and `kubectl expose` against a real kulisse
//! cluster. kubectl's typed clients send these objects as Kubernetes protobuf
//! (`Content-Type: application/vnd.kubernetes.protobuf`) and ask for protobuf back, so this
//! is the end-to-end test of `core/src/apiserver/protobuf.rs` and of Secrets. Every object
//! is checked through the API afterwards, not only kubectl's exit code.

use base64::Engine;
use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::wait_for;
use kulisse_tests::kubectl::Kubectl;
use serde_json::{Value, json};

/// `GET path` on the API server, as JSON (`None` for anything but 200).
fn api_get(cluster: &Cluster, path: &str) -> Option<Value> {
    let auth = format!("Bearer {}", cluster.token());
    let (code, body) = cluster.http(
        "GET",
        path,
        &[("Authorization", &auth), ("Accept", "application/json")],
        b"",
    );
    (code == 200).then(|| serde_json::from_str(&body).expect("JSON object"))
}

fn obj(cluster: &Cluster, path: &str) -> Value {
    api_get(cluster, path).unwrap_or_else(|| panic!("{path} was not created"))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn kubectl_creates_every_served_kind_imperatively() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &[]);
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };
    let ns = "/api/v1/namespaces/default";

    // Namespaces, Deployments, ConfigMaps: the three that answered 415 before.
    assert_eq!(k.ok(&["create", "namespace", "x"]).trim(), "namespace/x created");
    assert_eq!(obj(&cluster, "/api/v1/namespaces/x")["status"]["phase"], "Active");
    k.ok(&["create", "deployment", "web", "--image=busybox", "--port=8080"]);
    let deploy = obj(&cluster, "/apis/apps/v1/namespaces/default/deployments/web");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["selector"]["matchLabels"], json!({"app": "web"}));
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (&container["name"], &container["image"]),
        (&json!("busybox"), &json!("busybox"))
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert!(deploy["metadata"]["uid"].is_string(), "server-set metadata is there");

    k.ok(&["create", "configmap", "lit", "--from-literal=a=b", "--from-literal=c=d"]);
    assert_eq!(
        obj(&cluster, &format!("{ns}/configmaps/lit"))["data"],
        json!({"a": "b", "c": "d"})
    );
    let file = k.work_dir().join("app.properties");
    std::fs::write(&file, "color=blue\n").expect("write a file");
    let from_file = format!("--from-file={}", file.display());
    k.ok(&["create", "configmap", "files", &from_file]);
    assert_eq!(
        obj(&cluster, &format!("{ns}/configmaps/files"))["data"],
        json!({"app.properties": "color=blue\n"})
    );

    // An error answered in protobuf (kubectl asked for it first) still reads as kubectl's.
    let again = k.fails(&["create", "configmap", "lit", "--from-literal=a=b"]);
    assert!(
        again.contains("failed to create configmap: configmaps \"lit\" already exists"),
        "{again}"
    );

    // Services: ClusterIP and NodePort get their addresses allocated.
    k.ok(&["create", "service", "clusterip", "internal", "--tcp=80:8080"]);
    let svc = obj(&cluster, &format!("{ns}/services/internal"));
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(
        svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("127.")),
        "{svc}"
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["selector"], json!({"app": "internal"}));
    k.ok(&["create", "service", "nodeport", "outside", "--tcp=80:8080"]);
    let svc = obj(&cluster, &format!("{ns}/services/outside"));
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert!(
        svc["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p)),
        "{svc}"
    );

    // kubectl run and kubectl expose.
    k.ok(&["run", "one", "--image=busybox", "--labels=app=one", "--", "sleep", "60"]);
    let pod = obj(&cluster, &format!("{ns}/pods/one"));
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
    assert_eq!(pod["spec"]["containers"][0]["args"], json!(["sleep", "60"]));
    assert_eq!(pod["metadata"]["labels"], json!({"app": "one"}));
    k.ok(&["expose", "deployment", "web", "--port=80", "--target-port=8080"]);
    let exposed = obj(&cluster, &format!("{ns}/services/web"));
    assert_eq!(exposed["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(
        (
            &exposed["spec"]["ports"][0]["port"],
            &exposed["spec"]["ports"][0]["targetPort"]
        ),
        (&json!(80), &json!(8080))
    );

    secrets(&cluster, &k, dir.path());
}

/// `kubectl create secret generic | tls | docker-registry`, `get` and `describe`.
fn secrets(cluster: &Cluster, k: &Kubectl, data_dir: &std::path::Path) {
    let ns = "/api/v1/namespaces/default";
    k.ok(&[
        "create",
        "secret",
        "generic",
        "login",
        "--from-literal=user=admin",
        "--from-literal=password=s3cr3t!",
    ]);
    let login = obj(cluster, &format!("{ns}/secrets/login"));
    assert_eq!(login["type"], "Opaque");
    assert_eq!(login["data"], json!({"password": b64("s3cr3t!"), "user": b64("admin")}));

    // The cluster's own CA is a real certificate and key pair (kubectl checks that).
    let (crt, key) = (data_dir.join("ca.crt"), data_dir.join("ca.key"));
    let (cert_arg, key_arg) = (format!("--cert={}", crt.display()), format!("--key={}", key.display()));
    k.ok(&["create", "secret", "tls", "serving", &cert_arg, &key_arg]);
    let tls = obj(cluster, &format!("{ns}/secrets/serving"));
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let ca = std::fs::read_to_string(&crt).expect("ca.crt");
    assert_eq!(tls["data"]["tls.crt"], json!(b64(&ca)));
    assert!(tls["data"]["tls.key"].is_string());

    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "--docker-server=registry.example",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let pull = obj(cluster, &format!("{ns}/secrets/pull"));
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let config = pull["data"][".dockerconfigjson"].as_str().expect("config");
    let config: Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(config).expect("b64")).expect("JSON");
    assert_eq!(config["auths"]["registry.example"]["username"], "u");

    // stringData is merged into data and never stored.
    let manifest = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\nstringData:\n  token: abc\n";
    let out = k.run_stdin(&["apply", "-f", "-"], Some(manifest.as_bytes()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plain = obj(cluster, &format!("{ns}/secrets/plain"));
    assert_eq!(plain["data"], json!({"token": b64("abc")}));
    assert!(plain.get("stringData").is_none(), "{plain}");

    let table = k.ok(&["get", "secrets"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "TYPE", "DATA", "AGE"]);
    let row = table.lines().find(|l| l.starts_with("login ")).expect("login row");
    assert_eq!(
        row.split_whitespace().take(3).collect::<Vec<_>>(),
        ["login", "Opaque", "2"]
    );

    let described = cluster.ok(&["describe", "secret", "login"]);
    assert!(described.contains("user:  5 bytes"), "{described}");
    assert!(described.contains("password:  7 bytes"), "{described}");
    assert!(
        !described.contains("admin") && !described.contains(&b64("admin")),
        "values leak: {described}"
    );

    // A tls Secret without its key is refused, and nothing is written.
    let bad =
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: half\ntype: kubernetes.io/tls\ndata:\n  tls.crt: eA==\n";
    let out = k.run_stdin(&["create", "-f", "-"], Some(bad.as_bytes()));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("data[tls.key]: Required value"),
        "{}",
        text(&out.stderr)
    );
    assert!(api_get(cluster, &format!("{ns}/secrets/half")).is_none());
}

/// Bad protobuf gets a Status and changes nothing.
#[test]
fn bad_protobuf_is_refused_and_nothing_is_written() {
    let cluster = Cluster::start();
    let auth = format!("Bearer {}", cluster.token());
    let path = "/api/v1/namespaces/default/configmaps";
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/vnd.kubernetes.protobuf"),
    ];
    let (code, body) = cluster.http("POST", path, &headers, b"{\"metadata\":{\"name\":\"c\"}}");
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("\"reason\":\"UnsupportedMediaType\""), "{body}");
    let (code, body) = cluster.http(
        "POST",
        path,
        &headers,
        b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\xff\x01",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("malformed"), "{body}");
    let list = wait_for(30, "the list of ConfigMaps", || api_get(&cluster, path));
    let names: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["metadata"]["name"].as_str())
        .collect();
    assert!(!names.contains(&"c"), "{names:?}");
}
