//! EndpointSlices on a real cluster (`kulisse up`, mock runtime): the EndpointSlice
//! controller writes a Service's slices with upstream's labels, ownerReference, ports and
//! endpoint conditions; kube-proxy's rules follow the slices (a terminating endpoint gets no
//! traffic while ready ones exist, and all of it when none is left); the Endpoints object is
//! still written for old clients; a Service without endpoints keeps an empty slice;
//! the garbage collector deletes the slices with their Service; and kubectl prints them with
//! its columns.

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::{is_ready, items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

const WEB: &str = "\
apiVersion: apps/v1
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
      containers:
        - name: httpd
          image: localhost/busybox:latest
          ports:
            - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
";

/// A pod the Service selects, bound to a node no kubelet runs: nothing ever finishes its
/// termination, so it stays `terminating` (its last status says Ready) until deleted for good.
const DRAINING: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: draining
  labels: {app: web}
spec:
  nodeName: node-gone
  containers:
    - name: httpd
      image: localhost/busybox:latest
      ports:
        - {name: http, containerPort: 8080}
";

const DRAINING_IP: &str = "127.64.250.9";

fn slices(c: &Cluster) -> Vec<Value> {
    items(&json(
        c,
        &["get", "endpointslices", "-l", "kubernetes.io/service-name=web"],
    ))
}

fn endpoints_of(slices: &[Value]) -> Vec<Value> {
    slices
        .iter()
        .flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn ready_pod_ips(c: &Cluster) -> Vec<String> {
    let mut ips: Vec<String> = items(&json(c, &["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| is_ready(p) && p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| s(p, "/status/podIP").to_string())
        .collect();
    ips.sort();
    ips
}

/// The backends of kube-proxy's rule for `default/web` on node-1, as published.
fn proxy_backends(c: &Cluster) -> Vec<String> {
    let cm = c.kulisse(&[
        "get",
        "configmap",
        "kube-proxy-rules-node-1",
        "-n",
        "kube-system",
        "-o",
        "json",
    ]);
    let cm: Value = serde_json::from_slice(&cm.stdout).unwrap_or(Value::Null);
    let rule = s(&cm, "/data/default.web.http");
    let mut b: Vec<String> = rule
        .split(" -> ")
        .nth(1)
        .unwrap_or("")
        .split(',')
        .filter(|e| e.contains(':'))
        .map(|e| e.split(':').next().unwrap_or("").to_string())
        .collect();
    b.sort();
    b
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, body).expect("write manifest");
    path.to_string_lossy().into_owned()
}

/// The Service's one slice holds its two ready pods in upstream's shape, kube-proxy's rule
/// has them, and the Endpoints are still written. Returns the ready pods' IPs.
fn first_slice_in_upstreams_shape(c: &Cluster, svc: &Value) -> Vec<String> {
    // One slice with both ready pods, in upstream's shape.
    let slice = wait_for(90, "a slice with the two ready pods", || {
        let all = slices(c);
        let ready = ready_pod_ips(c);
        let eps = endpoints_of(&all);
        let mut ips: Vec<String> = eps.iter().map(|e| s(e, "/addresses/0").to_string()).collect();
        ips.sort();
        (all.len() == 1 && ready.len() == 2 && ips == ready).then(|| all[0].clone())
    });
    assert_eq!(s(&slice, "/metadata/generateName"), "web-", "{slice}");
    assert!(s(&slice, "/metadata/name").starts_with("web-"), "{slice}");
    assert_eq!(
        s(&slice, "/metadata/labels/endpointslice.kubernetes.io~1managed-by"),
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(
        s(&slice, "/metadata/labels/tier"),
        "front",
        "the Service's labels are copied"
    );
    assert_eq!(s(&slice, "/metadata/ownerReferences/0/kind"), "Service");
    assert_eq!(s(&slice, "/metadata/ownerReferences/0/uid"), s(svc, "/metadata/uid"));
    assert_eq!(slice["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(s(&slice, "/addressType"), "IPv4");
    assert_eq!(
        slice["ports"],
        serde_json::json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    for ep in endpoints_of(std::slice::from_ref(&slice)) {
        assert_eq!(
            ep["conditions"],
            serde_json::json!({"ready": true, "serving": true, "terminating": false})
        );
        assert!(s(&ep, "/nodeName").starts_with("node-"), "{ep}");
        assert_eq!(s(&ep, "/targetRef/kind"), "Pod");
    }
    // kube-proxy's rule has exactly the slice's ready endpoints; Endpoints are still written.
    let ready = ready_pod_ips(c);
    wait_for(30, "kube-proxy's rule with both pods", || {
        (proxy_backends(c) == ready).then_some(())
    });
    let ep = json(c, &["get", "endpoints", "web"]);
    assert_eq!(ep["subsets"][0]["addresses"].as_array().map(Vec::len), Some(2), "{ep}");

    ready
}

/// A third pod joins (its status written as a kubelet would), then is deleted: it stays in
/// the slice as terminating but still serving, and gets no traffic while others are ready.
fn a_terminating_pod_stays_serving_without_traffic(c: &Cluster, dir: &tempfile::TempDir, ready: &[String]) {
    c.ok(&["apply", "-f", &write(dir, "draining.yaml", DRAINING)]);
    let auth = format!("Bearer {}", c.token());
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/merge-patch+json"),
    ];
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{DRAINING_IP}","podIPs":[{{"ip":"{DRAINING_IP}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#
    );
    let (code, body) = c.http(
        "PATCH",
        "/api/v1/namespaces/default/pods/draining/status",
        &headers,
        status.as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    let mut three = ready.to_vec();
    three.push(DRAINING_IP.to_string());
    three.sort();
    wait_for(60, "kube-proxy's rule with three pods", || {
        (proxy_backends(c) == three).then_some(())
    });
    c.ok(&["delete", "pod", "draining", "--wait=false"]);
    let draining = wait_for(60, "the deleted pod terminating in the slice", || {
        endpoints_of(&slices(c))
            .into_iter()
            .find(|e| s(e, "/targetRef/name") == "draining" && e["conditions"]["terminating"] == true)
    });
    assert_eq!(
        draining["conditions"],
        serde_json::json!({"ready": false, "serving": true, "terminating": true})
    );
    wait_for(30, "kube-proxy's rule without the terminating pod", || {
        (proxy_backends(c) == ready).then_some(())
    });
}

#[test]
fn a_services_slices_follow_its_pods_and_kube_proxy_follows_the_slices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = Cluster::start_in(dir.path(), &["--nodes", "2", "--fast-failover"]);
    c.ok(&["apply", "-f", &write(&dir, "web.yaml", WEB)]);
    let svc = json(&c, &["get", "service", "web"]);
    let ready = first_slice_in_upstreams_shape(&c, &svc);
    a_terminating_pod_stays_serving_without_traffic(&c, &dir, &ready);

    // kubectl's columns.
    if let Some(k) = Kubectl::for_cluster(&c) {
        let table = k.ok(&["get", "endpointslices"]);
        let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
        assert_eq!(header, ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], "{table}");
        let row = table.lines().find(|l| l.starts_with("web-")).expect("the web slice");
        assert!(
            row.contains("IPv4") && row.contains("8080") && row.contains("127.64."),
            "{row}"
        );
    }

    // The ready pods go: with no ready endpoint left, the serving terminating one gets the
    // traffic (upstream's kube-proxy does the same, so connections survive a rollout's end).
    c.ok(&["scale", "deployment", "web", "--replicas", "0"]);
    wait_for(60, "kube-proxy falling back to the terminating pod", || {
        (proxy_backends(&c) == [DRAINING_IP.to_string()]).then_some(())
    });
    let auth = format!("Bearer {}", c.token());
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let (code, body) = c.http(
        "DELETE",
        "/api/v1/namespaces/default/pods/draining",
        &headers,
        br#"{"gracePeriodSeconds":0}"#,
    );
    assert_eq!(code, 200, "{body}");
    // No endpoint at all: one empty slice stays (the placeholder).
    wait_for(60, "one empty placeholder slice", || {
        let all = slices(&c);
        (all.len() == 1 && endpoints_of(&all).is_empty()).then_some(())
    });

    // The Service goes: the garbage collector takes its slices (ownerReference).
    c.ok(&["delete", "service", "web"]);
    wait_for(30, "the slices gone with their Service", || {
        slices(&c).is_empty().then_some(())
    });
    let out = c.kulisse(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web"]);
    assert!(
        text(&out.stderr).contains("No resources found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn max_endpoints_per_slice_is_a_controller_manager_flag_within_upstreams_range() {
    let bin = kulisse_tests::cluster::kulisse_bin();
    let help = std::process::Command::new(&bin)
        .args(["controller-manager", "--help"])
        .output()
        .expect("run kulisse");
    assert!(
        text(&help.stdout).contains("--max-endpoints-per-slice"),
        "{}",
        text(&help.stdout)
    );
    assert!(text(&help.stdout).contains("[default: 100]"), "{}", text(&help.stdout));
    let out = std::process::Command::new(&bin)
        .args(["controller-manager", "--max-endpoints-per-slice", "1001"])
        .output()
        .expect("run kulisse");
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1001"), "{}", text(&out.stderr));
}
