//! Every component its own identity (issue 13): `kulisse up` issues each component's
//! certificate with kubeadm's names and a kubeconfig of its own; the components run a
//! rollout logged in as themselves (RBAC's bootstrap roles and the Node authorizer let
//! them); the kubelet's API serves HTTPS and refuses anything but the API server's client
//! certificate, while `kulisse logs` keeps working through the API server.

use kulisse_core::apiserver::certs;
use kulisse_core::client::kubeconfig::Kubeconfig;
use kulisse_core::client::tls::Identity;
use kulisse_tests::cluster::{Cluster, http_with_ca};
use kulisse_tests::flows::{is_ready, items, json, s, wait_for};
use serde_json::Value;

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml");

/// The user and groups the certificate `pki/<stem>.crt` names.
fn subject(dir: &std::path::Path, stem: &str) -> (String, Vec<String>) {
    let cert_pem = std::fs::read(dir.join("pki").join(format!("{stem}.crt"))).expect("certificate");
    let user = certs::identity_user(&Identity {
        cert_pem,
        key_pem: Vec::new(),
    })
    .expect("a user in the certificate");
    (user.name, user.groups)
}

#[test]
fn components_log_in_as_themselves_and_the_kubelet_api_takes_only_the_api_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Cluster::start_in(dir.path(), &["--nodes", "2", "--fast-failover"]);
    let d = dir.path();

    // Each component's certificate, with kubeadm's names; keys 0600.
    let expected = [
        ("admin", "kubernetes-admin", Some("system:masters")),
        ("controller-manager", "system:kube-controller-manager", None),
        ("scheduler", "system:kube-scheduler", None),
        ("kube-proxy", "system:kube-proxy", None),
        ("kubelet-node-1", "system:node:node-1", Some("system:nodes")),
        ("kubelet-node-2", "system:node:node-2", Some("system:nodes")),
        (
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
        ),
    ];
    for (stem, user, group) in expected {
        let (name, groups) = subject(d, stem);
        assert_eq!(name, user, "{stem}");
        let mut want: Vec<String> = group.into_iter().map(str::to_string).collect();
        want.push("system:authenticated".into());
        assert_eq!(groups, want, "{stem}");
        use std::os::unix::fs::PermissionsExt;
        let key = d.join("pki").join(format!("{stem}.key"));
        let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
    // Each component's kubeconfig logs in with its certificate, and holds no token.
    for conf in [
        "admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
        "kube-proxy.conf",
        "kubelet-node-1.conf",
    ] {
        let conn = Kubeconfig::load(&d.join(conf))
            .and_then(|k| k.connection())
            .expect("kubeconfig");
        assert_eq!(conn.token, "", "{conf} holds no token");
        assert!(conn.identity.is_some(), "{conf} has a client certificate");
    }
    let admin_conf = d.join("admin.conf");
    let as_admin = c.ok(&["get", "nodes", "--kubeconfig", admin_conf.to_str().expect("path")]);
    assert!(as_admin.contains("node-1"), "{as_admin}");

    // A rollout: controllers, scheduler and kubelets, each as itself, bring the pods up.
    c.ok(&["apply", "-f", WEB]);
    let pods = wait_for(90, "the web pods ready", || {
        let p: Vec<Value> = items(&json(&c, &["get", "pods", "-l", "app=web"]))
            .into_iter()
            .filter(|p| is_ready(p))
            .collect();
        (p.len() >= 2).then_some(p)
    });

    authenticated_writers(&c, d);

    // Logs through the API server, which logs in to the kubelet with its own certificate.
    let pod = s(&pods[0], "/metadata/name").to_string();
    let logs = c.ok(&["logs", &pod]);
    assert!(!logs.trim().is_empty(), "the log of {pod}");

    // The kubelet itself refuses a caller without a client certificate, and the admin token.
    let node = json(&c, &["get", "node", s(&pods[0], "/spec/nodeName")]);
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .expect("kubelet port");
    let server = format!("https://127.0.0.1:{port}");
    let path = format!("/containerLogs/default/{pod}/httpd");
    let ca = c.ca().expect("cluster CA");
    let (code, body) = http_with_ca(&server, Some(&ca), "GET", &path, &[], b"");
    assert_eq!(code, 401, "{body}");
    let bearer = format!("Bearer {}", c.token());
    let (code, body) = http_with_ca(&server, Some(&ca), "GET", &path, &[("Authorization", &bearer)], b"");
    assert_eq!(code, 401, "the admin token is no credential at the kubelet: {body}");
}

/// An OTLP JSON attribute's string value.
fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span.get("attributes")?
        .as_array()?
        .iter()
        .find(|a| a.get("key").and_then(Value::as_str) == Some(key))?
        .pointer("/value/stringValue")?
        .as_str()
}

/// In the apply's trace, every `apiserver.authenticate` span under a component's work
/// names that component's user; `kubernetes-admin` only ever stands for the CLI.
fn authenticated_writers(c: &Cluster, d: &std::path::Path) {
    let file = d.join("trace.json");
    let users = wait_for(30, "the components' requests in the apply's trace", || {
        c.ok(&["trace", "last", "--export", file.to_str().expect("path")]);
        let trace: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
        let spans: Vec<Value> = trace
            .pointer("/resourceSpans")?
            .as_array()?
            .iter()
            .flat_map(|r| {
                r.get("scopeSpans")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|s| s.get("spans").and_then(Value::as_array).cloned().unwrap_or_default())
            .collect();
        let by_id = |id: &str| {
            spans
                .iter()
                .find(|s| s.get("spanId").and_then(Value::as_str) == Some(id))
        };
        // The stage of the nearest caller outside the API server and the store.
        let caller_stage = |span: &Value| -> Option<String> {
            let mut cur = by_id(span.get("parentSpanId")?.as_str()?)?;
            loop {
                match attr(cur, "kulisse.stage") {
                    Some("apiserver") | Some("store") | None => {}
                    Some(stage) => return Some(stage.to_string()),
                }
                cur = by_id(cur.get("parentSpanId")?.as_str()?)?;
            }
        };
        let mut users = std::collections::BTreeMap::<String, String>::new();
        for span in spans
            .iter()
            .filter(|s| s.get("name").and_then(Value::as_str) == Some("apiserver.authenticate"))
        {
            let (Some(user), Some(stage)) = (attr(span, "auth.user"), caller_stage(span)) else {
                continue;
            };
            if user == "kubernetes-admin" {
                assert_eq!(stage, "cli", "only the CLI logs in as the admin");
            }
            users.insert(stage, user.to_string());
        }
        (["controller", "scheduler", "kubelet"]
            .iter()
            .all(|s| users.contains_key(*s)))
        .then_some(users)
    });
    assert_eq!(users["controller"], "system:kube-controller-manager", "{users:?}");
    assert_eq!(users["scheduler"], "system:kube-scheduler", "{users:?}");
    assert!(users["kubelet"].starts_with("system:node:node-"), "{users:?}");
}
