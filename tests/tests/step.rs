//! Step mode end to end (`kulisse up --step`, `kulisse step`, `kulisse break`), with the real
//! kubectl: its write waits at the API server's gate (kubectl waits with it, and returns once
//! the write is let through), then every write of the control loop comes through one at a
//! time in causal order; `continue` lets the Deployment converge, `pause` stops it again
//! while node heartbeats go on; breakpoints hold only the writes they name (the
//! components' writes that follow kubectl's, and kubectl's own create of a ConfigMap whose
//! name matches, while another of its creates goes through); and every pause
//! is an `apiserver.step_pause` span, with its duration, in the write's trace. While
//! kubectl's writes wait, `kulisse step show N -o yaml|json` and `kulisse step -o json` show
//! the whole objects they propose (kubectl's create as the store will hold it, its scale
//! with the new replicas while the store still says the old).

use std::process::Child;

use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::{items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

/// `kulisse step next`'s line: (what was let through, its revision if it was written; a
/// held update can fail with a conflict when another write changed the object meanwhile).
fn next(c: &Cluster) -> (String, Option<u64>) {
    let out = c.ok(&["step", "next"]);
    let line = out
        .trim()
        .strip_prefix("let through: ")
        .unwrap_or_else(|| panic!("{out}"));
    let (what, outcome) = line.rsplit_once(": ").unwrap_or_else(|| panic!("{out}"));
    let (what, outcome) = match what.rsplit_once(": failed") {
        Some((w, _)) => (w, "failed"),
        None => (what, outcome),
    };
    let rev = outcome
        .strip_prefix("written (revision ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.parse().ok());
    assert!(rev.is_some() || outcome == "failed", "{out}");
    (what.to_string(), rev)
}

/// The waiting writes `kulisse step` lists (`1. scheduler: bind Pod ...`).
fn waiting(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .collect()
}

fn position(log: &[String], what: &str) -> usize {
    log.iter()
        .position(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{what:?} among the writes let through:\n{}", log.join("\n")))
}

fn pods(c: &Cluster) -> Vec<Value> {
    items(&json(c, &["get", "pods"]))
}

/// Wait until `kulisse step` shows a waiting write whose line contains `what`; its output.
fn waits(c: &Cluster, what: &str) -> String {
    wait_for(30, what, || {
        let out = c.ok(&["step"]);
        out.contains(what).then_some(out)
    })
}

/// Wait until `what` is the oldest held write, letting through (`step next`) the writes
/// held before it: the tail of earlier work (an EndpointSlice turning ready, a status)
/// may still be on its way when the cluster pauses.
fn waits_first(c: &Cluster, what: &str) -> String {
    wait_for(30, what, || {
        let out = c.ok(&["step"]);
        let first = out.lines().find(|l| l.starts_with("1. "))?;
        if first.contains(what) {
            return Some(out);
        }
        c.ok(&["step", "next"]);
        None
    })
}

/// The number `kulisse step` gives the waiting write whose line contains `what`.
fn number_of(shown: &str, what: &str) -> usize {
    waiting(shown)
        .iter()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_once(". "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{what:?} among the waiting writes:\n{shown}"))
}

/// While kubectl's create of the Deployment waits (write `n`): the whole object it proposes,
/// as one object (`step show N -o json|yaml`) and in the List of every waiting write's
/// (`step -o json`), the write in full (`step show N`), and a number nothing has.
fn proposed_objects_of_kubectls_create(c: &Cluster, n: usize) {
    let shown = n.to_string();
    let one: Value = serde_json::from_str(&c.ok(&["step", "show", &shown, "-o", "json"])).unwrap();
    assert_eq!((s(&one, "/kind"), s(&one, "/metadata/name")), ("Deployment", "web"));
    assert_eq!(one["spec"]["replicas"], 2, "{one}");
    // What the API server added: defaults, the trace, and kubectl's own annotation.
    assert_eq!(s(&one, "/spec/strategy/type"), "RollingUpdate", "{one}");
    assert!(!s(&one, "/metadata/uid").is_empty(), "{one}");
    let annotations = &one["metadata"]["annotations"];
    assert!(annotations["kulisse.dev/traceparent"].is_string(), "{one}");
    assert!(
        annotations["kubectl.kubernetes.io/last-applied-configuration"].is_string(),
        "kubectl's client-side apply: {one}"
    );
    // A create: no revision yet; managedFields hidden, as kubectl's -o hides them.
    assert!(one.pointer("/metadata/resourceVersion").is_none(), "{one}");
    assert!(one.pointer("/metadata/managedFields").is_none(), "{one}");
    let yaml = c.ok(&["step", "show", &shown, "-o", "yaml"]);
    assert!(
        yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\n") && yaml.contains("\n  name: web\n"),
        "{yaml}"
    );
    let all: Value = serde_json::from_str(&c.ok(&["step", "-o", "json"])).unwrap();
    assert_eq!(s(&all, "/kind"), "List", "{all}");
    let listed = items(&all);
    assert!(listed.len() >= n, "{all}");
    assert_eq!(listed[n - 1], one, "the List holds the same object at the same place");
    let full = c.ok(&["step", "show", &shown]);
    assert!(
        full.starts_with(&format!("{n}. apiserver: create Deployment default/web (waiting ")),
        "{full}"
    );
    assert!(
        full.contains("diff against the store (which holds nothing: a create)"),
        "{full}"
    );
    let none = c.kulisse(&["step", "show", "999"]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("there is no waiting write 999: "),
        "{none:?}"
    );
}

fn finished(child: &mut Child) -> bool {
    child.try_wait().expect("kubectl's status").is_some()
}

#[test]
fn step_mode_holds_each_write_in_causal_order_and_breakpoints_hold_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(dir.path(), &["--nodes", "2", "--step", "--fast-failover"]);
    let Some(kubectl) = Kubectl::for_cluster(&c) else {
        return; // not under CI and no kubectl: find_kubectl said why
    };
    // The book's example: a Deployment of two replicas and a Service in front of them.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/web.yaml");
    let mut apply = kubectl.spawn(&["apply", "-f", manifest.to_str().unwrap()]);

    // kubectl's create waits at the gate: the API server's own write of a client's request.
    let shown = waits(&c, "apiserver: create Deployment default/web");
    assert!(shown.starts_with("paused; breakpoints: none\n"), "{shown}");
    assert!(
        !finished(&mut apply),
        "kubectl returned before its write was let through"
    );
    proposed_objects_of_kubectls_create(&c, number_of(&shown, "apiserver: create Deployment default/web"));

    // Let the writes through one at a time until both pods reported their status.
    let mut log = Vec::new();
    let mut last_rev = 0;
    // ... until kube-proxy published rules with the ready pods behind the Service.
    let published = |log: &[String]| {
        let after = log.iter().rposition(|l| l.starts_with("kubelet node-"));
        after.is_some_and(|i| log[i..].iter().any(|l| l.starts_with("kube-proxy node-")))
            && log.iter().filter(|l| l.starts_with("kubelet node-")).count() >= 2
    };
    while !published(&log) {
        assert!(log.len() < 80, "no rules after 80 writes:\n{}", log.join("\n"));
        let (what, rev) = next(&c);
        if let Some(rev) = rev {
            assert!(
                rev > last_rev,
                "one write at a time, each stored after the last: {what} at {rev}"
            );
            last_rev = rev;
        }
        log.push(what);
    }
    let out = apply.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("deployment.apps/web created\nservice/web created"),
        "{out}"
    );
    let deployment = position(&log, "apiserver: create Deployment default/web");
    let replicaset = position(&log, "controller-manager: create ReplicaSet default/web-");
    let pod = position(&log, "controller-manager: create Pod default/web-");
    let bind = position(&log, "scheduler: bind Pod default/web-");
    let status = position(&log, "kubelet node-");
    let service = position(&log, "apiserver: create Service default/web");
    let endpoints = position(&log, "controller-manager: update Endpoints default/web");
    let rules = log.len() - 1;
    assert!(
        log[rules].contains("update ConfigMap kube-system/kube-proxy-rules-"),
        "{log:#?}"
    );
    assert!(
        deployment < replicaset && replicaset < pod && pod < bind && bind < status,
        "{log:#?}"
    );
    assert!(
        deployment < service && status < endpoints && endpoints < rules,
        "{log:#?}"
    );
    for line in log.iter().filter(|l| l.starts_with("kubelet node-")) {
        // A kubelet reports only pods bound to its node, after the bind.
        let (node, rest) = line["kubelet ".len()..].split_once(": ").unwrap();
        assert!(
            rest.starts_with("update Pod default/web-") && rest.ends_with("(status)"),
            "{line}"
        );
        let name = rest.split_whitespace().nth(2).unwrap();
        let bound = position(&log, &format!("bind Pod {name} to {node}"));
        assert!(bound < position(&log, line), "{log:#?}");
    }

    // Run: the Deployment converges.
    assert!(c.ok(&["step", "continue"]).starts_with("running; let "));
    wait_for(60, "two web pods Running", || {
        let p = pods(&c);
        (p.len() == 2 && p.iter().all(|p| s(p, "/status/phase") == "Running")).then_some(())
    });

    // Pause again, hold kubectl's scale for longer than fast failover's grace (4 s): no
    // node goes NotReady, as heartbeats (Leases, Node status) are never held.
    assert!(c.ok(&["step", "pause"]).starts_with("paused"));
    let mut scale = kubectl.spawn(&["scale", "deployment/web", "--replicas=3"]);
    let shown = waits_first(&c, "apiserver: update Deployment default/web");
    let trace_id = shown
        .split("trace ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .map(|t| t.trim_end_matches(':').to_string())
        .unwrap_or_else(|| panic!("the write's trace id: {shown}"));
    assert!(shown.contains("~ spec.replicas: 2 -> 3"), "{shown}");
    // The whole object kubectl's scale proposes, replicas 3, over the revision the store
    // holds (which still says 2).
    let proposed = c.ok(&[
        "step",
        "show",
        "1",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.resourceVersion}",
    ]);
    let stored = json(&c, &["get", "deployment", "web"]);
    assert_eq!(stored["spec"]["replicas"], 2);
    assert_eq!(
        proposed,
        format!("3 {}", s(&stored, "/metadata/resourceVersion")),
        "{stored}"
    );
    wait_for(30, "the scale held for 6 s", || {
        let out = c.ok(&["step"]);
        let secs: f64 = out.split("(waiting ").nth(1)?.split('s').next()?.parse().ok()?;
        (secs >= 6.0).then_some(())
    });
    for node in items(&json(&c, &["get", "nodes"])) {
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready["status"], "True", "{node}");
    }
    assert!(!finished(&mut scale));
    // Whatever else waited goes first (oldest first), then kubectl's scale.
    wait_for(60, "kubectl's scale let through", || {
        let (what, _) = next(&c);
        what.starts_with("apiserver: update Deployment default/web")
            .then_some(())
    });
    assert!(scale.wait().unwrap().success());
    // The pause is a span of the write's trace, with its duration.
    let trace = wait_for(30, "the scale's trace with its pause", || {
        let out = c.kulisse(&["trace", &trace_id]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .any(|l| l.contains("apiserver.step_pause") && l.contains(" s "))
            .then_some(text)
    });
    assert!(trace.contains("Deployment web"), "{trace}");

    // A breakpoint on the scheduler, then run: only the new pod's bind waits (the scale's
    // chain is still held at the ReplicaSet's update, well before any bind).
    assert_eq!(c.ok(&["break", "scheduler"]).trim(), "breakpoint set: scheduler");
    c.ok(&["step", "continue"]);
    let shown = waits(&c, "scheduler: bind Pod default/web-");
    assert!(shown.starts_with("running; breakpoints: scheduler\n"), "{shown}");
    assert_eq!(pods(&c).len(), 3, "the controller manager's create was not held");
    assert_eq!(waiting(&shown).len(), 1, "{shown}");
    let list = c.ok(&["break", "--list"]);
    assert!(list.contains("COMPONENT") && list.contains("scheduler"), "{list}");
    assert!(next(&c).0.starts_with("scheduler: bind Pod default/web-"));
    assert_eq!(c.ok(&["break", "--clear"]).trim(), "cleared 1 breakpoints");
    assert_eq!(c.ok(&["break", "--list"]), "No breakpoints.\n");
    wait_for(60, "three web pods Running", || {
        let p = pods(&c);
        (p.len() == 3 && p.iter().all(|p| s(p, "/status/phase") == "Running")).then_some(())
    });

    // A breakpoint on the kubelets' writes of pods named web-*: another pod runs.
    assert_eq!(
        c.ok(&["break", "kubelet", "pod/web-*"]).trim(),
        "breakpoint set: kubelet pod/web-*"
    );
    kubectl.ok(&["scale", "deployment/web", "--replicas=4"]);
    kubectl.ok(&["run", "db", "--image=busybox"]);
    let shown = waits(&c, ": update Pod default/web-");
    assert!(shown.contains("1. kubelet node-"), "{shown}");
    wait_for(60, "pod db Running", || {
        let db = json(&c, &["get", "pod", "db"]);
        (s(&db, "/status/phase") == "Running").then_some(())
    });
    let held = c.ok(&["step"]);
    assert!(!held.contains("Pod default/db"), "{held}");
    assert!(
        waiting(&held).iter().all(|l| l.contains(": update Pod default/web-")),
        "{held}"
    );
    let bad = c.kulisse(&["break", "etcd"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown component \"etcd\""));
    // Running, clearing the breakpoints lets through what only they held.
    let cleared = c.ok(&["break", "--clear"]);
    assert!(
        cleared.starts_with("cleared 1 breakpoints; let ") && cleared.trim_end().ends_with(" waiting writes through"),
        "{cleared}"
    );
    wait_for(60, "four web pods Running", || {
        let p: Vec<Value> = pods(&c)
            .into_iter()
            .filter(|p| s(p, "/metadata/name").starts_with("web-"))
            .collect();
        (p.len() == 4 && p.iter().all(|p| s(p, "/status/phase") == "Running")).then_some(())
    });
    a_breakpoint_holds_kubectls_own_write(&c, &kubectl);
}

/// Running, a breakpoint on the API server's writes of ConfigMaps named `settings-*` holds
/// kubectl's create of one (kubectl waits with it, and nothing reads it yet) while kubectl's
/// create of another ConfigMap goes through; clearing the breakpoint lets it through.
fn a_breakpoint_holds_kubectls_own_write(c: &Cluster, kubectl: &Kubectl) {
    assert_eq!(
        c.ok(&["break", "apiserver", "configmap/settings-*"]).trim(),
        "breakpoint set: apiserver configmap/settings-*"
    );
    let mut held = kubectl.spawn(&["create", "configmap", "settings-1", "--from-literal=colour=blue"]);
    let shown = waits(c, "apiserver: create ConfigMap default/settings-1");
    assert_eq!(
        kubectl
            .ok(&["create", "configmap", "other", "--from-literal=colour=red"])
            .trim(),
        "configmap/other created"
    );
    let n = number_of(&shown, "apiserver: create ConfigMap default/settings-1").to_string();
    assert_eq!(
        c.ok(&[
            "step",
            "show",
            &n,
            "-o",
            "jsonpath={.kind}/{.metadata.name}: {.data.colour}"
        ]),
        "ConfigMap/settings-1: blue"
    );
    let missing = kubectl.run(&["get", "configmap", "settings-1"]);
    assert!(!missing.status.success(), "a held create is not in the store yet");
    assert!(
        !finished(&mut held),
        "kubectl returned before its write was let through"
    );
    assert_eq!(
        c.ok(&["break", "--clear"]).trim(),
        "cleared 1 breakpoints; let 1 waiting writes through"
    );
    let out = held.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/settings-1 created"
    );
    assert!(
        kubectl
            .ok(&["get", "configmap", "settings-1", "-o", "name"])
            .contains("configmap/settings-1")
    );
}
