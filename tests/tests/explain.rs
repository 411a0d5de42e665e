//! `kulisse explain KIND NAME` against a real `kulisse up` (three nodes, mock runtime): why a
//! pod is Pending or on its node (from the scheduler's `scheduler.plugin` spans in the trace
//! store), why a pod is not in a Service's endpoints, what a ReplicaSet would delete first,
//! and why a rollout is stuck. The real kubectl's writes are explained too: a pod it runs
//! (from the trace the API server starts for kubectl's untraced request), and a pod it
//! annotates (the newest attempt, in whichever trace). The documentation mode (`kulisse
//! explain pod.spec`) keeps working beside it.

use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::{items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

fn up() -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(dir.path(), &["--nodes", "3"]);
    wait_for(60, "3 nodes Ready", || {
        let nodes = items(&json(&c, &["get", "nodes"]));
        (nodes.len() == 3
            && nodes.iter().all(|n| {
                n.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True"))
            }))
        .then_some(())
    });
    (c, dir)
}

fn apply(c: &Cluster, yaml: &str) {
    let out = c.kulisse_stdin(&["apply", "-f", "-"], Some(yaml.as_bytes()));
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kulisse explain ARGS` once its output contains every one of `wanted`.
fn explain_until(c: &Cluster, args: &[&str], wanted: &[&str]) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    wait_for(60, &format!("kulisse explain {args:?} to say {wanted:?}"), || {
        let out = c.ok(&all);
        wanted.iter().all(|w| out.contains(w)).then_some(out)
    })
}

/// Deployment `app` (2 replicas, a 3 s progress deadline), its container with `extra`.
fn app_deployment(extra: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: app}}
spec:
  replicas: 2
  progressDeadlineSeconds: 3
  selector: {{matchLabels: {{app: app}}}}
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers:
      - name: c
        image: localhost/busybox:latest
        {extra}
"#
    )
}

const BIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: big}
spec:
  containers:
  - name: c
    image: localhost/busybox:latest
    resources: {requests: {cpu: "64"}}
"#;

#[test]
fn a_pod_that_fits_nowhere_and_a_pod_on_a_tainted_cluster() {
    let (c, _dir) = up();
    apply(&c, BIG);
    let out = explain_until(&c, &["pod", "big"], &["is Pending", "unschedulable"]);
    assert!(out.contains("0/3 nodes are available: 3 Insufficient cpu."), "{out}");
    for node in ["node-1", "node-2", "node-3"] {
        // every plugin before NodeResourcesFit passed, NodeResourcesFit vetoed, the rest did not run
        let row = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{node} ")))
            .unwrap_or_else(|| panic!("no filter row for {node}:\n{out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                node,
                "Success",
                "Success",
                "Success",
                "Success",
                "Success",
                "Unschedulable",
                "-"
            ],
            "{out}"
        );
        assert!(
            out.contains(&format!("{node}: NodeResourcesFit: Insufficient cpu")),
            "{out}"
        );
    }
    assert!(
        !out.contains("\nScore:"),
        "nothing was feasible, nothing was scored:\n{out}"
    );

    // A write by another client (kubectl, whose requests start their own traces) moves the
    // pod's traceparent annotation to a new trace; a changed annotation sends the pod back to
    // the scheduler, and explain shows the newest attempt, wherever it is.
    let writer = Kubectl::for_cluster(&c);
    match &writer {
        Some(k) => {
            k.ok(&["annotate", "pod", "big", "note=checked"]);
        }
        None => {
            c.ok(&["annotate", "pod", "big", "note=checked"]);
        }
    }
    let again = c.ok(&["explain", "pod", "big"]);
    assert!(again.contains("node-1: NodeResourcesFit: Insufficient cpu"), "{again}");
    if let Some(k) = &writer {
        a_pod_kubectl_runs(&c, k);
    }

    // Taint every node; a pod without a toleration fits nowhere, one with it fits anywhere.
    for node in ["node-1", "node-2", "node-3"] {
        c.ok(&[
            "patch",
            "node",
            node,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"taints":[{"key":"dedicated","value":"gpu","effect":"NoSchedule"}]}}"#,
        ]);
    }
    apply(
        &c,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: c, image: localhost/busybox:latest}]
---
apiVersion: v1
kind: Pod
metadata: {name: tolerant}
spec:
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers: [{name: c, image: localhost/busybox:latest}]
"#,
    );
    let plain = explain_until(&c, &["pod", "plain"], &["unschedulable"]);
    assert!(
        plain.contains("0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: gpu}."),
        "{plain}"
    );
    assert!(
        plain.contains("node-2: TaintToleration: node(s) had untolerated taint {dedicated: gpu}"),
        "{plain}"
    );
    // all three nodes passed every filter that ran and were scored by all five plugins
    let tolerant = explained_winner_of_three(&c, "tolerant");
    assert!(tolerant.contains("TaintToleration×3"), "{tolerant}");

    // the documentation mode still works, and bad input changes nothing
    assert!(
        c.ok(&["explain", "pod.spec.nodeName"])
            .contains("FIELD: nodeName <string>")
    );
    let bad = c.kulisse(&["explain", "pod.spec", "big"]);
    assert!(!bad.status.success());
    let missing = c.kulisse(&["explain", "pod", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("pods \"nope\" not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let configmap = c.kulisse(&["explain", "configmap", "x"]);
    assert!(String::from_utf8_lossy(&configmap.stderr).contains("there is no \"why\" for ConfigMap"));
}

/// A pod the real kubectl creates (`kubectl run`): its request brings no trace, the API
/// server starts one, and the scheduler's attempt continues it, so explain finds where the
/// pod went and why: every node feasible, scored, and the winner the pod is bound to.
fn a_pod_kubectl_runs(c: &Cluster, kubectl: &Kubectl) {
    assert_eq!(
        kubectl.ok(&["run", "kc", "--image=localhost/busybox:latest"]).trim(),
        "pod/kc created"
    );
    explained_winner_of_three(c, "kc");
}

/// `kulisse explain pod NAME` once the pod is scheduled: the winner it names is the pod's
/// node, and all three nodes were feasible and scored. Returns the explanation.
fn explained_winner_of_three(c: &Cluster, pod: &str) -> String {
    let out = explain_until(c, &["pod", pod], &["scheduled on node-"]);
    let node = s(&json(c, &["get", "pod", pod]), "/spec/nodeName").to_string();
    assert!(out.contains(&format!("Winner: {node} with ")), "{out}");
    let score_rows = out
        .lines()
        .skip_while(|l| !l.starts_with("Score:"))
        .filter(|l| l.trim_start().starts_with("node-"))
        .count();
    assert_eq!(score_rows, 3, "three feasible nodes, each scored:\n{out}");
    out
}

#[test]
fn endpoints_replicasets_and_a_stuck_rollout() {
    let (c, _dir) = up();
    apply(
        &c,
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: sulky
  labels: {app: web}
  annotations: {"mock.kulisse.dev/readiness.c": fail}
spec:
  containers:
  - name: c
    image: localhost/busybox:latest
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, labels: {app: db}}
spec:
  containers: [{name: c, image: localhost/busybox:latest}]
"#,
    );
    let pod = explain_until(&c, &["pod", "sulky"], &["notReadyAddresses"]);
    assert!(pod.contains("Service web selects this pod (selector app=web)"), "{pod}");
    assert!(pod.contains("it is not ready: Ready=False"), "{pod}");
    let svc = explain_until(
        &c,
        &["service", "web"],
        &["pod sulky", "notReadyAddresses", "pod stranger"],
    );
    assert!(
        svc.contains("pod stranger: not selected (app=db, not web), so never in the endpoints."),
        "{svc}"
    );

    apply(&c, &app_deployment(""));
    let rs = wait_for(60, "the ReplicaSet with 2 ready pods", || {
        items(&json(&c, &["get", "rs", "-l", "app=app"]))
            .into_iter()
            .find(|r| r.pointer("/status/readyReplicas").and_then(Value::as_i64) == Some(2))
    });
    let rs_name = s(&rs, "/metadata/name").to_string();
    let out = explain_until(&c, &["rs", &rs_name], &["nothing is in flight"]);
    assert!(out.contains("wants 2 pods and controls 2 active ones"), "{out}");
    assert!(out.contains("Desired equals current"), "{out}");
    let ranked: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("1 ") || l.trim_start().starts_with("2 "))
        .collect();
    assert_eq!(ranked.len(), 2, "two pods in the deletion ranking:\n{out}");

    // A new template that fits nowhere: one new pod (maxSurge 25% of 2 → 1), none of the
    // old ones may go (maxUnavailable 25% of 2 → 0), and the deadline passes.
    apply(&c, &app_deployment(r#"resources: {requests: {cpu: "64"}}"#));
    let stuck = explain_until(&c, &["deployment", "app"], &["ProgressDeadlineExceeded"]);
    for want in [
        "maxSurge 25% of 2 is 1 (rounded up), maxUnavailable 25% of 2 is 0",
        "at most 2 + 1 = 3 pods may exist, and at least 2 - 0 = 2 must stay available",
        "3 allowed - 3 pods the ReplicaSets want = 0 room; it needs 1 more, so it may add 0",
        "so it may remove 0",
        "Neither is possible",
        "not scheduled: PodScheduled=False (Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.)",
        "The rollout is stuck",
    ] {
        assert!(stuck.contains(want), "missing {want:?} in:\n{stuck}");
    }
}
