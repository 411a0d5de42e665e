//! kubectl's everyday verbs through the `kulisse` CLI against a real cluster (`kulisse up`,
//! mock runtime): `rollout history|undo|restart|pause|resume`, `create
//! deployment|configmap|secret|namespace`, `wait`, `cordon`, `uncordon` and `drain`.
//! Where the real kubectl is installed, the same command through kubectl must print the
//! same bytes (and exit the same way); the other checks hold either way.

use std::process::Output;

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::{items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

fn up(nodes: &str) -> (Cluster, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Cluster::start_in(dir.path(), &["--nodes", nodes]), dir)
}

/// stdout, stderr and success of a run, for comparing kulisse with kubectl. client-go's
/// log lines (`I1204 18:01:41.484045 ...`, e.g. about a watch its time-out cut short) are
/// kubectl's diagnostics, not the command's output, and are left out.
fn outcome(out: &Output) -> (String, String, bool) {
    let klog = |l: &str| {
        let b = l.as_bytes();
        b.len() > 5 && b"IWEF".contains(&b[0]) && b[1..5].iter().all(u8::is_ascii_digit) && b[5] == b' '
    };
    let stderr: String = text(&out.stderr).split_inclusive('\n').filter(|l| !klog(l)).collect();
    (text(&out.stdout), stderr, out.status.success())
}

/// Run `args` through kulisse, and (if installed) through kubectl, which must agree.
fn same(c: &Cluster, k: Option<&Kubectl>, args: &[&str]) -> (String, String, bool) {
    let ours = outcome(&c.kulisse(args));
    if let Some(k) = k {
        assert_eq!(ours, outcome(&k.run(args)), "kulisse and kubectl differ on {args:?}");
    }
    ours
}

/// A command that must fail; returns its stderr.
fn fails(c: &Cluster, args: &[&str]) -> String {
    let out = c.kulisse(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?} should exit 1: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn replicasets(c: &Cluster) -> Vec<Value> {
    items(&json(c, &["get", "rs", "-l", "app=web"]))
}

fn revision(rs: &Value) -> &str {
    s(rs, "/metadata/annotations/deployment.kubernetes.io~1revision")
}

fn rolled_out(c: &Cluster) {
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout", "120"]);
    assert!(out.ends_with("deployment \"web\" successfully rolled out\n"), "{out}");
}

fn set_command(c: &Cluster, seconds: &str) {
    let patch = format!(
        r#"{{"spec":{{"template":{{"spec":{{"containers":[{{"name":"busybox","image":"localhost/busybox:latest","command":["sleep","{seconds}"]}}]}}}}}}}}"#
    );
    c.ok(&["patch", "deployment", "web", "-p", &patch]);
}

/// `kulisse create deployment web` with two sleeping busybox pods.
fn create_web(c: &Cluster) {
    let out = c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=localhost/busybox:latest",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    assert_eq!(out, "deployment.apps/web created\n");
}

#[test]
fn rollout_history_undo_restart_pause_and_resume_work_as_in_kubectl() {
    let (c, _dir) = up("2");
    let k = Kubectl::for_cluster(&c);
    create_web(&c);
    rolled_out(&c);
    set_command(&c, "7200");
    rolled_out(&c);
    let (history, _, ok) = same(&c, k.as_ref(), &["rollout", "history", "deployment/web"]);
    assert!(ok);
    assert_eq!(
        history,
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
    );
    let (one, _, _) = same(&c, k.as_ref(), &["rollout", "history", "deploy/web", "--revision=1"]);
    assert!(
        one.starts_with("deployment.apps/web with revision #1\nPod Template:\n"),
        "{one}"
    );
    assert!(one.contains("    Command:\n      sleep\n      3600\n"), "{one}");
    let (_, err, _) = same(&c, k.as_ref(), &["rollout", "history", "deploy/web", "--revision=9"]);
    assert_eq!(err, "error: unable to find the specified revision\n");

    paused_deployments_roll_nothing_out(&c, k.as_ref());
    undo_and_restart_roll_out_old_and_fresh_templates(&c, k.as_ref());
}

/// Paused: a template change makes no new ReplicaSet, and the controller says so.
fn paused_deployments_roll_nothing_out(c: &Cluster, k: Option<&Kubectl>) {
    assert_eq!(
        c.ok(&["rollout", "pause", "deploy/web"]),
        "deployment.apps/web paused\n"
    );
    let (_, err, _) = same(c, k, &["rollout", "pause", "deploy/web"]);
    assert_eq!(err, "error: deployments.apps \"web\" is already paused\n");
    set_command(c, "100");
    wait_for(60, "the controller sees the paused change", || {
        let d = json(c, &["get", "deploy", "web"]);
        let paused = d
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| s(c, "/type") == "Progressing" && s(c, "/reason") == "DeploymentPaused")
            });
        (paused && d.pointer("/status/observedGeneration") == d.pointer("/metadata/generation")).then_some(())
    });
    assert_eq!(replicasets(c).len(), 2, "no new ReplicaSet while paused");
    let (_, err, _) = same(c, k, &["rollout", "restart", "deploy/web"]);
    assert_eq!(
        err,
        "error: deployments.apps \"web\" can't restart paused deployment (run rollout resume first)\n"
    );
    let (_, err, _) = same(c, k, &["rollout", "undo", "deploy/web"]);
    assert!(
        err.starts_with("error: you cannot rollback a paused deployment;"),
        "{err}"
    );
    assert_eq!(
        c.ok(&["rollout", "resume", "deploy/web"]),
        "deployment.apps/web resumed\n"
    );
    let (_, err, _) = same(c, k, &["rollout", "resume", "deploy/web"]);
    assert_eq!(err, "error: deployments.apps \"web\" is not paused\n");
    rolled_out(c);
}

/// Undo to revision 1: its ReplicaSet comes back as revision 4, remembering 1; restart
/// makes revision 5.
fn undo_and_restart_roll_out_old_and_fresh_templates(c: &Cluster, k: Option<&Kubectl>) {
    assert_eq!(
        c.ok(&["rollout", "undo", "deploy/web", "--to-revision=1"]),
        "deployment.apps/web rolled back\n"
    );
    rolled_out(c);
    let rss = replicasets(c);
    let back = rss.iter().find(|r| revision(r) == "4").expect("revision 4");
    assert_eq!(
        s(back, "/metadata/annotations/deployment.kubernetes.io~1revision-history"),
        "1"
    );
    let (history, _, _) = same(c, k, &["rollout", "history", "deploy/web"]);
    assert_eq!(
        history,
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n2         <none>\n3         <none>\n4         <none>\n\n"
    );
    let (out, _, _) = same(c, k, &["rollout", "undo", "deploy/web", "--to-revision=4"]);
    assert_eq!(
        out,
        "deployment.apps/web skipped rollback (current template already matches revision 4)\n"
    );
    let (_, err, _) = same(c, k, &["rollout", "undo", "deploy/web", "--to-revision=1"]);
    assert_eq!(err, "error: unable to find specified revision 1 in history\n");

    // Restart: a new template annotation, so a new ReplicaSet replaces every pod.
    assert_eq!(
        c.ok(&["rollout", "restart", "deploy/web"]),
        "deployment.apps/web restarted\n"
    );
    rolled_out(c);
    let d = json(c, &["get", "deploy", "web"]);
    assert!(
        !s(
            &d,
            "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt"
        )
        .is_empty(),
        "{d}"
    );
    assert!(replicasets(c).iter().any(|r| revision(r) == "5"));
    let (_, err, _) = same(c, k, &["rollout", "history", "pod/nope"]);
    assert_eq!(err, "Error from server (NotFound): pods \"nope\" not found\n");
    let pod = items(&json(c, &["get", "pods", "-l", "app=web"]))[0]["metadata"]["name"].clone();
    let pod = format!("pod/{}", pod.as_str().unwrap_or_default());
    let (_, err, _) = same(c, k, &["rollout", "status", &pod]);
    assert_eq!(err, "error: no status viewer has been implemented for Pod\n");
}

#[test]
fn create_builds_kubectls_objects_and_wait_watches_for_conditions() {
    let (c, dir) = up("1");
    let k = Kubectl::for_cluster(&c);
    let file = dir.path().join("motd.txt");
    std::fs::write(&file, "hello\n").unwrap();
    let from_file = format!("--from-file=motd={}", file.display());
    // The client-side objects are kubectl's, byte for byte.
    for args in [
        vec![
            "create",
            "deployment",
            "web",
            "--image=localhost/busybox:latest",
            "--port=80",
            "--replicas=2",
        ],
        vec!["create", "configmap", "c", "--from-literal=a=b", from_file.as_str()],
        vec![
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=user=admin",
            "--type=Opaque",
        ],
        vec![
            "create",
            "secret",
            "docker-registry",
            "r",
            "--docker-username=u",
            "--docker-password=p",
        ],
        vec!["create", "namespace", "shop"],
    ] {
        for output in ["yaml", "json", "name"] {
            let mut all = args.clone();
            all.extend(["--dry-run=client", "-o", output]);
            let (out, _, ok) = same(&c, k.as_ref(), &all);
            assert!(ok && !out.is_empty(), "{all:?}");
        }
    }
    let (yaml, _, _) = same(
        &c,
        k.as_ref(),
        &[
            "create",
            "cm",
            "c",
            from_file.as_str(),
            "--dry-run=client",
            "-o",
            "yaml",
        ],
    );
    assert_eq!(
        yaml,
        "apiVersion: v1\ndata:\n  motd: |\n    hello\nkind: ConfigMap\nmetadata:\n  creationTimestamp: null\n  name: c\n"
    );
    let (_, err, _) = same(
        &c,
        k.as_ref(),
        &["create", "cm", "c", "--from-literal=a=1", "--from-literal=a=2"],
    );
    assert_eq!(
        err,
        "error: cannot add key \"a\", another key by that name already exists in Data for ConfigMap \"c\"\n"
    );
    assert_eq!(
        fails(&c, &["create", "cm", "c", "--from-literal=oops"]),
        "error: invalid literal source oops, expected key=value\n"
    );

    tls_secrets_hold_the_pem_files(&c, k.as_ref());
    created_objects_are_stored(&c, &from_file);
    wait_reports_conditions_and_timeouts(&c, k.as_ref());
    wait_for_delete_ends_when_the_object_is_gone(&c, k.as_ref(), dir.path());
}

/// `create secret tls` with the cluster's own serving certificate and key.
fn tls_secrets_hold_the_pem_files(c: &Cluster, k: Option<&Kubectl>) {
    let cert = format!("--cert={}", c.data_dir.join("apiserver.crt").display());
    let key = format!("--key={}", c.data_dir.join("apiserver.key").display());
    let args = [
        "create",
        "secret",
        "tls",
        "t",
        &cert,
        &key,
        "--dry-run=client",
        "-o",
        "yaml",
    ];
    let (out, _, ok) = same(c, k, &args);
    assert!(
        ok && out.contains("  tls.crt: LS0tLS1CRUdJTi") && out.ends_with("type: kubernetes.io/tls\n"),
        "{out}"
    );
    let (_, err, _) = same(c, k, &["create", "secret", "tls", "t", &cert, "--dry-run=client"]);
    assert_eq!(err, "error: key and cert must be specified\n");
}

/// Real creates: stored as built, and `--dry-run=server` stores nothing.
fn created_objects_are_stored(c: &Cluster, from_file: &str) {
    create_web(c);
    assert_eq!(
        c.ok(&["create", "configmap", "c", "--from-literal=a=b", &from_file]),
        "configmap/c created\n"
    );
    assert_eq!(
        c.ok(&["create", "secret", "generic", "s", "--from-literal=user=admin"]),
        "secret/s created\n"
    );
    assert_eq!(c.ok(&["create", "namespace", "shop"]), "namespace/shop created\n");
    assert_eq!(
        c.ok(&["create", "namespace", "dry", "--dry-run=server"]),
        "namespace/dry created (server dry run)\n"
    );
    assert!(fails(c, &["get", "namespace", "dry"]).contains("NotFound"));
    let cm = json(c, &["get", "configmap", "c"]);
    assert_eq!(cm["data"], serde_json::json!({"a": "b", "motd": "hello\n"}));
    assert_eq!(s(&json(c, &["get", "secret", "s"]), "/data/user"), "YWRtaW4=");
    let d = json(c, &["get", "deployment", "web"]);
    assert_eq!(d.pointer("/spec/selector/matchLabels/app"), Some(&Value::from("web")));
    assert_eq!(s(&d, "/spec/template/spec/containers/0/name"), "busybox");
}

/// `wait`: kubectl's lines for conditions, selectors, JSONPath and time-outs.
fn wait_reports_conditions_and_timeouts(c: &Cluster, k: Option<&Kubectl>) {
    let (out, _, ok) = same(
        &c,
        k,
        &["wait", "--for=condition=Available", "deploy/web", "--timeout=120s"],
    );
    assert!(ok);
    assert_eq!(out, "deployment.apps/web condition met\n");
    let out = c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=web",
        "--timeout=120s",
    ]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" condition met")).count(),
        2,
        "{out}"
    );
    let out = c.ok(&["wait", "--for=jsonpath={.status.phase}=Running", "pod", "-l", "app=web"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, err, ok) = same(&c, k, &["wait", "--for=condition=Bogus", "deploy/web", "--timeout=1s"]);
    assert!(!ok);
    assert_eq!(err, "error: timed out waiting for the condition on deployments/web\n");
    assert_eq!(
        fails(c, &["wait", "--for=condition=Ready", "pod", "-l", "app=nope"]),
        "error: no matching resources found\n"
    );
}

/// `--for=delete`: a ConfigMap held by a finalizer stays (terminating) until we let go.
fn wait_for_delete_ends_when_the_object_is_gone(c: &Cluster, k: Option<&Kubectl>, dir: &std::path::Path) {
    let held = dir.join("held.yaml");
    std::fs::write(
        &held,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [kulisse.dev/test]\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", held.to_str().unwrap()]);
    c.ok(&["delete", "configmap", "held", "--wait=false"]);
    let victim = "configmap/held".to_string();
    let waiter = std::thread::spawn({
        let kulisse = kulisse_tests::cluster::kulisse_bin();
        let kubeconfig = c.kubeconfig();
        move || {
            std::process::Command::new(kulisse)
                .args([
                    "wait",
                    "--for=delete",
                    "configmap/held",
                    "--timeout=120s",
                    "--kubeconfig",
                ])
                .arg(kubeconfig)
                .output()
                .expect("run kulisse wait")
        }
    });
    // A second waiter, started later, times out: the object is there and waited on, and the
    // first waiter (started earlier, same steps) is watching it by then.
    let (_, err, ok) = same(&c, k, &["wait", "--for=delete", "configmap/held", "--timeout=1s"]);
    assert!(!ok);
    assert_eq!(err, "error: timed out waiting for the condition on configmaps/held\n");
    c.ok(&[
        "patch",
        "configmap",
        "held",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = waiter.join().expect("the waiter ends");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{victim} condition met\n"));
    let (out, _, ok) = same(c, k, &["wait", "--for=delete", &victim]);
    assert!(ok && out.is_empty(), "an object already gone is skipped: {out}");
}

#[test]
fn cordon_and_drain_move_the_pods_to_the_other_node() {
    let (c, dir) = up("2");
    let k = Kubectl::for_cluster(&c);
    create_web(&c);
    let bare = dir.path().join("bare.yaml");
    std::fs::write(
        &bare,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\nspec:\n  nodeName: node-1\n  containers:\n  \
         - name: c\n    image: localhost/busybox:latest\n    command: [sleep, \"3600\"]\n",
    )
    .unwrap();
    c.ok(&["apply", "-f", bare.to_str().unwrap()]);
    c.ok(&["wait", "--for=condition=Available", "deploy/web", "--timeout=120s"]);
    c.ok(&["wait", "--for=condition=Ready", "pod/bare", "--timeout=120s"]);

    assert_eq!(c.ok(&["cordon", "node-1"]), "node/node-1 cordoned\n");
    let (out, _, _) = same(&c, k.as_ref(), &["cordon", "node-1"]);
    assert_eq!(out, "node/node-1 already cordoned\n");
    assert_eq!(json(&c, &["get", "node", "node-1"])["spec"]["unschedulable"], true);
    let (_, err, _) = same(&c, k.as_ref(), &["cordon", "node-9"]);
    assert_eq!(err, "Error from server (NotFound): nodes \"node-9\" not found\n");

    // The unmanaged pod would be lost: refused, and nothing is deleted.
    let (out, err, ok) = same(&c, k.as_ref(), &["drain", "node-1"]);
    assert!(!ok);
    assert_eq!(out, "node/node-1 already cordoned\n");
    assert!(
        err.starts_with(
            "error: unable to drain node \"node-1\" due to error: cannot delete cannot delete Pods that declare \
             no controller (use --force to override): default/bare, continuing command...\n"
        ),
        "{err}"
    );
    json(&c, &["get", "pod", "bare"]);

    let on_node_1: Vec<String> = items(&json(&c, &["get", "pods", "--field-selector", "spec.nodeName=node-1"]))
        .iter()
        .map(|p| format!("pod/{} deleted", s(p, "/metadata/name")))
        .collect();
    let out = c.kulisse(&["drain", "node-1", "--force", "--grace-period=0", "--timeout=120s"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "Warning: deleting Pods that declare no controller: default/bare\n"
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"node/node-1 already cordoned"), "{stdout}");
    assert_eq!(lines.last(), Some(&"node/node-1 drained"), "{stdout}");
    let mut deleted: Vec<String> = lines[1..lines.len() - 1].iter().map(|l| l.to_string()).collect();
    let mut want = on_node_1.clone();
    deleted.sort();
    want.sort();
    assert_eq!(deleted, want, "{stdout}");

    // The ReplicaSet replaces its pods on node-2; the bare pod is gone for good.
    c.ok(&["wait", "--for=condition=Available", "deploy/web", "--timeout=120s"]);
    wait_for(120, "two web pods running on node-2", || {
        let pods = items(&json(&c, &["get", "pods", "-l", "app=web"]));
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| s(p, "/spec/nodeName") == "node-2" && s(p, "/status/phase") == "Running"))
        .then_some(())
    });
    assert!(fails(&c, &["get", "pod", "bare"]).contains("NotFound"));
    assert_eq!(c.ok(&["uncordon", "node-1"]), "node/node-1 uncordoned\n");
    let (out, _, _) = same(&c, k.as_ref(), &["uncordon", "node-1"]);
    assert_eq!(out, "node/node-1 already uncordoned\n");
}
