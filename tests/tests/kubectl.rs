//! The real `kubectl` against a real kulisse cluster (`kulisse up --nodes 2 --fast-failover`
//! with the mock runtime): discovery, OpenAPI v3 and field validation, server-side printed
//! tables (also in watches), client-side and server-side apply, patch, scale, rollout,
//! logs, describe and delete, as a learner would type them.
//!
//! kubectl runs through [`kulisse_tests::kubectl::Kubectl`] with the cluster's kubeconfig
//! (https with the cluster's CA: kubectl sends credentials only over TLS).

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kulisse_tests::cluster::Cluster;
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

const WEB: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: httpd
          image: localhost/busybox:latest
          command: [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/\"]
          ports:
            - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 8080
      targetPort: 8080
";

fn start() -> Option<(tempfile::TempDir, Cluster, Kubectl)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "2", "--fast-failover"]);
    let kubectl = Kubectl::for_cluster(&cluster)?;
    Some((dir, cluster, kubectl))
}

/// Poll `check` every 100 ms until it returns `Some`, or fail after `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The column titles of kubectl's table output (columns are separated by 2+ spaces).
fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or("")
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn write(k: &Kubectl, name: &str, content: &str) -> String {
    let path = k.work_dir().join(name);
    std::fs::write(&path, content).expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k.ok(&all)).unwrap_or(Value::Null)
}

fn running_pods(k: &Kubectl) -> Vec<String> {
    let pods = json(k, &["get", "pods", "-l", "app=web"]);
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn kubectl_applies_inspects_changes_and_deletes_a_deployment() {
    let Some((_dir, _cluster, k)) = start() else { return };
    let web = write(&k, "web.yaml", WEB);

    // Client-side apply with kubectl's default --validate=strict: create, then nothing to do.
    let out = k.ok(&["apply", "-f", &web]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let out = k.ok(&["apply", "-f", &web]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for(30, "two running pods", || (running_pods(&k).len() == 2).then_some(()));

    // The columns of a real cluster, from the server's Tables.
    let pods = k.ok(&["get", "pods"]);
    assert_eq!(header(&pods), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{pods}");
    assert_eq!(pods.matches("Running").count(), 2, "{pods}");
    assert!(pods.contains("1/1"), "{pods}");
    let wide = k.ok(&["get", "pods", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    assert!(wide.contains("node-1") || wide.contains("node-2"), "{wide}");
    let deploy = k.ok(&["get", "deployments"]);
    assert_eq!(
        header(&deploy),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploy}"
    );
    assert!(deploy.contains("2/2"), "{deploy}");
    let deploy_wide = k.ok(&["get", "deploy", "-o", "wide"]);
    assert_eq!(
        header(&deploy_wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{deploy_wide}"
    );
    assert!(deploy_wide.contains("app=web"), "{deploy_wide}");
    let rs = k.ok(&["get", "rs"]);
    assert_eq!(header(&rs), ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{rs}");
    let svc = k.ok(&["get", "svc"]);
    assert_eq!(
        header(&svc),
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "{svc}"
    );
    assert!(svc.contains("8080/TCP"), "{svc}");
    let nodes = k.ok(&["get", "nodes"]);
    assert_eq!(header(&nodes), ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], "{nodes}");
    assert_eq!(nodes.matches(" Ready ").count(), 2, "{nodes}");
    let ns = k.ok(&["get", "namespaces"]);
    assert_eq!(header(&ns), ["NAME", "STATUS", "AGE"], "{ns}");
    assert!(ns.contains("kube-system"), "{ns}");
    let ep = k.ok(&["get", "endpoints", "web"]);
    assert_eq!(header(&ep), ["NAME", "ENDPOINTS", "AGE"], "{ep}");
    let leases = k.ok(&["get", "leases", "-n", "kube-node-lease"]);
    assert_eq!(header(&leases), ["NAME", "HOLDER", "AGE"], "{leases}");
    let events = k.ok(&["get", "events"]);
    assert_eq!(
        header(&events),
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{events}"
    );
    assert!(events.contains("Scheduled"), "{events}");

    // Other output formats and selectors.
    let names = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    assert_eq!(names.split_whitespace().count(), 2, "{names}");
    assert!(names.split_whitespace().all(|n| n.starts_with("web-")), "{names}");
    let none = k.ok(&["get", "pods", "-l", "app=nothing"]);
    assert!(none.trim().is_empty(), "{none}");
    let yaml = k.ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let d = json(&k, &["get", "deployment", "web"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["name"], "httpd");
    let all = k.ok(&["get", "all"]);
    for expected in ["pod/web-", "service/web", "deployment.apps/web", "replicaset.apps/web-"] {
        assert!(all.contains(expected), "get all lacks {expected}:\n{all}");
    }

    // describe, with the events about the object.
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(described.contains("Replicas:"), "{described}");
    assert!(described.contains("ScalingReplicaSet"), "{described}");
    let pod = running_pods(&k).into_iter().next().expect("a pod");
    let described = k.ok(&["describe", "pod", &pod]);
    assert!(described.contains("Successfully assigned default/"), "{described}");

    // logs through the pods/log subresource.
    let logs = k.ok(&["logs", &pod]);
    assert!(!logs.trim().is_empty(), "no logs for {pod}");

    // A watch with Tables: the current pods, then the new one scale brings.
    let mut watch = k.spawn(&["get", "pods", "-l", "app=web", "-w"]);
    let stdout = watch.stdout.take().expect("watch stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let read_until = |seen: &mut Vec<String>, what: &str, pred: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred(seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!("kubectl get -w: no {what} within 60s; it printed {seen:#?}"),
            }
        }
    };
    read_until(&mut seen, "header and both pods", &|s| s.len() >= 3);
    assert_eq!(
        header(&seen[0]),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{seen:#?}"
    );
    let out = k.ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    read_until(&mut seen, "a third pod", &|s| {
        let names: std::collections::BTreeSet<&str> =
            s[1..].iter().filter_map(|l| l.split_whitespace().next()).collect();
        names.len() >= 3
    });
    let _ = watch.kill();
    let _ = watch.wait();
    // Every watch line is a table row with the same five columns.
    for line in &seen[1..] {
        assert_eq!(
            line.split_whitespace().count(),
            5,
            "not a pod row: {line:?} in {seen:#?}"
        );
    }
    wait_for(30, "three running pods", || (running_pods(&k).len() == 3).then_some(()));

    // Patches: merge, JSON, strategic (kubectl's default).
    let out = k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"frontend"}}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let out = k.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let out = k.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"httpd","env":[{"name":"GREETING","value":"hello"}]}]}}}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    let d = json(&k, &["get", "deployment", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["spec"]["replicas"], 2);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["env"][0]["value"], "hello", "strategic merge by name: {c}");
    assert_eq!(
        c["image"], "localhost/busybox:latest",
        "the rest of the container stays: {c}"
    );

    // An image change rolls out; rollout status follows it to the end.
    let out = k.ok(&["set", "image", "deployment/web", "httpd=localhost/busybox:v2"]);
    assert!(out.contains("image updated"), "{out}");
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(out.contains("deployment \"web\" successfully rolled out"), "{out}");
    let d = json(&k, &["get", "deployment", "web"]);
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d}");

    // delete -f returns once the objects are gone.
    let out = k.ok(&["delete", "-f", &web]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(out.contains("service \"web\" deleted"), "{out}");
    let err = k.fails(&["get", "deployment", "web"]);
    assert!(
        err.contains("Error from server (NotFound): deployments.apps \"web\" not found"),
        "{err}"
    );
}

#[test]
fn kubectl_discovers_explains_and_validates_fields() {
    let Some((_dir, _cluster, k)) = start() else { return };

    // Discovery: kubectl api-resources, with short names and the scale subresource kubectl
    // scale relies on.
    let resources = k.ok(&["api-resources"]);
    assert_eq!(
        header(&resources),
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{resources}"
    );
    for (name, short) in [
        ("pods", "po"),
        ("deployments", "deploy"),
        ("replicasets", "rs"),
        ("services", "svc"),
        ("nodes", "no"),
        ("events", "ev"),
        ("namespaces", "ns"),
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, short])),
            "{name} ({short}) missing:\n{resources}"
        );
    }
    let apps: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/apis/apps/v1"])).expect("APIResourceList");
    let scale = apps["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "deployments/scale"))
        .unwrap_or_else(|| panic!("no deployments/scale in {apps:#}"));
    assert_eq!(
        (
            scale["group"].as_str(),
            scale["version"].as_str(),
            scale["kind"].as_str()
        ),
        (Some("autoscaling"), Some("v1"), Some("Scale"))
    );
    let core: Value = serde_json::from_str(&k.ok(&["get", "--raw", "/api/v1"])).expect("APIResourceList");
    for sub in ["pods/log", "pods/status", "pods/binding"] {
        assert!(
            core["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == sub)),
            "no {sub} in /api/v1"
        );
    }
    let api_versions = k.ok(&["api-versions"]);
    for gv in ["v1", "apps/v1", "coordination.k8s.io/v1"] {
        assert!(api_versions.lines().any(|l| l == gv), "{gv} missing: {api_versions}");
    }

    // OpenAPI v3: explain reads the schemas.
    let explained = k.ok(&["explain", "deployment.spec"]);
    assert!(explained.contains("KIND:       Deployment"), "{explained}");
    assert!(explained.contains("FIELD: spec <DeploymentSpec>"), "{explained}");
    assert!(explained.contains("replicas\t<integer>"), "{explained}");
    let explained = k.ok(&["explain", "pods.spec.containers.image"]);
    assert!(explained.contains("FIELD: image <string>"), "{explained}");

    // Strict field validation (kubectl's default): a typo is rejected by the server, and
    // nothing is created.
    // (Service port 8081: the other test's cluster on this machine serves 8080.)
    let manifest = WEB.replace("- port: 8080", "- port: 8081");
    let typo = write(&k, "typo.yaml", &manifest.replacen("replicas: 2", "replicass: 2", 1));
    let err = k.fails(&["apply", "-f", &typo]);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.replicass""#),
        "{err}"
    );
    assert!(err.contains("Error from server (BadRequest)"), "{err}");
    let err = k.fails(&["create", "-f", &typo]);
    assert!(
        err.contains(r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.replicass""#),
        "{err}"
    );
    let err = k.fails(&["get", "deployment", "web"]);
    assert!(err.contains("NotFound"), "{err}");

    // --validate=warn: created, the unknown field dropped, and a warning printed.
    let out = k.run(&["apply", "--validate=warn", "-f", &typo]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"Warning: unknown field "spec.replicass""#),
        "{stderr}"
    );
    let d = json(&k, &["get", "deployment", "web"]);
    assert!(d["spec"].get("replicass").is_none(), "{d}");
    assert_eq!(d["spec"]["replicas"], 1, "defaulted: {d}");

    // A strict patch with a typo is rejected too; the object is unchanged.
    let err = k.fails(&["apply", "-f", &typo]);
    assert!(err.contains(r#"unknown field "spec.replicass""#), "{err}");

    // Server-side apply, twice: the second is a no-op at the server.
    let web = write(&k, "web.yaml", &manifest);
    let out = k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &web]);
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let d = json(&k, &["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    // (The controllers keep writing the status, so compare the generation, which only a
    // change of the spec moves.)
    let generation = d["metadata"]["generation"].clone();
    k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &web]);
    let d = json(&k, &["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["generation"], generation,
        "an unchanged apply changes nothing: {d}"
    );
    let err = k.fails(&["apply", "--server-side", "-f", &typo]);
    assert!(err.contains(r#"unknown field "spec.replicass""#), "{err}");
}

/// A request that carries a W3C `traceparent` continues the caller's trace: the API server's
/// span is a child of the caller's span, in the caller's trace, and the trace store has it.
#[test]
fn a_traceparent_header_continues_the_callers_trace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "0"]);
    let auth = format!("Bearer {}", cluster.token());
    let trace_id = "4bf92f3577b34da6a3ce929e0e4e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"traced"},"data":{"a":"b"}}"#;
    let (code, resp) = cluster.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("traceparent", &traceparent),
        ],
        body,
    );
    assert_eq!(code, 201, "{resp}");
    let trace: Value = wait_for(30, "the trace in the trace store", || {
        let (code, body) = cluster.http(
            "GET",
            &format!("/apis/kulisse.dev/v1/traces/{trace_id}"),
            &[("Authorization", &auth)],
            b"",
        );
        (code == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    });
    assert_eq!(trace["traceId"], trace_id);
    let spans = trace["spans"].as_array().cloned().unwrap_or_default();
    let request = spans
        .iter()
        .find(|s| s["name"] == "apiserver.request")
        .unwrap_or_else(|| panic!("no apiserver.request span in {trace:#}"));
    assert_eq!(request["traceId"], trace_id);
    assert_eq!(request["parentSpanId"], parent, "{request:#}");
}
