//! Deleting a namespace as Kubernetes does, on a real cluster (`kulisse up`, mock runtime):
//! the namespace turns `Terminating`, the namespace controller deletes what is inside
//! through the API (pods first, each with its grace period), reports what is left in the
//! namespace's conditions, and removes its finalizer, and only then is the namespace gone.
//! Meanwhile nothing new may be created inside.
//!
//! The real kubectl and `kulisse` both delete a file holding a namespace *and* its contents
//! (`tests/fixtures/shop.yaml`) with exit status 0, reporting every object deleted.

use std::process::Child;
use std::sync::mpsc;

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::{items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

const SHOP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/shop.yaml");

/// What `delete -f shop.yaml` must report, in kubectl's words.
const SHOP_DELETED: &[&str] = &[
    "namespace \"shop\" deleted",
    "deployment.apps \"frontend\" deleted",
    "deployment.apps \"backend\" deleted",
    "service \"frontend\" deleted",
    "service \"backend\" deleted",
];

/// `delete -f shop.yaml` succeeded and reported every object deleted.
fn assert_shop_deleted(out: &std::process::Output) {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "delete -f failed: {stdout}{}", text(&out.stderr));
    for line in SHOP_DELETED {
        assert!(stdout.contains(line), "missing {line:?} in: {stdout}");
    }
}

fn up() -> (tempfile::TempDir, Cluster) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "2", "--fast-failover"]);
    (dir, cluster)
}

fn running_pods(c: &Cluster, ns: &str) -> usize {
    items(&json(c, &["get", "pods", "-n", ns]))
        .iter()
        .filter(|p| s(p, "/status/phase") == "Running")
        .count()
}

/// A `kubectl get ... --watch -o json --output-watch-events` running in the background; its
/// events (`{"type": ..., "object": ...}`) arrive on a channel as kubectl prints them.
struct Watch {
    child: Child,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Watch {
    /// Start the watch and wait until it has listed the `initial` objects that exist (so
    /// no later change can slip in before the watch is established).
    fn start(k: &Kubectl, args: &[&str], initial: usize) -> Watch {
        let mut all = args.to_vec();
        all.extend(["--watch", "-o", "json", "--output-watch-events"]);
        let mut child = k.spawn(&all);
        let stdout = child.stdout.take().expect("kubectl's stdout is piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for v in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                let Ok(v) = v else { break };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut w = Watch {
            child,
            events,
            seen: Vec::new(),
        };
        while w.seen.len() < initial {
            let ev = w
                .events
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("kubectl --watch lists the existing objects");
            w.seen.push(ev);
        }
        w
    }

    /// Stop kubectl and return every event it printed.
    fn finish(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.extend(self.events.iter());
        self.seen
    }
}

/// Every pod that was deleted went through graceful termination first: a MODIFIED event
/// with `deletionTimestamp` and a grace period before its DELETED event.
fn assert_graceful(events: &[Value], expected_pods: usize) {
    let deleted: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "DELETED")
        .map(|e| s(e, "/object/metadata/name"))
        .collect();
    assert_eq!(deleted.len(), expected_pods, "every pod deleted: {deleted:?}");
    for name in deleted {
        let graceful = events.iter().any(|e| {
            e["type"] == "MODIFIED"
                && s(e, "/object/metadata/name") == name
                && e.pointer("/object/metadata/deletionTimestamp").is_some()
                && e.pointer("/object/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_some_and(|g| g > 0)
        });
        assert!(graceful, "pod {name} was deleted without a grace period first");
    }
}

#[test]
fn kubectl_deletes_a_namespace_and_its_contents_from_one_file() {
    let (_dir, c) = up();
    let Some(k) = Kubectl::for_cluster(&c) else { return };
    let applied = k.ok(&["apply", "-f", SHOP]);
    assert!(applied.contains("namespace/shop created"), "{applied}");
    wait_for(90, "5 shop pods Running", || {
        (running_pods(&c, "shop") == 5).then_some(())
    });

    let pods = Watch::start(&k, &["get", "pods", "-n", "shop"], 5);
    let namespace = Watch::start(&k, &["get", "namespace", "shop"], 1);
    // kubectl deletes the namespace first, then the objects in it (still there: the
    // namespace controller waits its grace period), then waits until all are gone.
    let out = k.run(&["delete", "-f", SHOP]);
    assert_shop_deleted(&out);
    let err = k.fails(&["get", "namespace", "shop"]);
    assert!(err.contains("namespaces \"shop\" not found"), "{err}");

    let ns_events = namespace.finish();
    let terminating = ns_events
        .iter()
        .position(|e| e["type"] == "MODIFIED" && s(e, "/object/status/phase") == "Terminating");
    let deleted = ns_events.iter().position(|e| e["type"] == "DELETED");
    assert!(
        matches!((terminating, deleted), (Some(t), Some(d)) if t < d),
        "the namespace was Terminating before it was deleted: {ns_events:?}"
    );
    assert_graceful(&pods.finish(), 5);
}

#[test]
fn kulisse_deletes_a_namespace_and_its_contents_from_one_file() {
    let (_dir, c) = up();
    let applied = c.ok(&["apply", "-f", SHOP]);
    assert!(applied.contains("namespace/shop created"), "{applied}");
    wait_for(90, "5 shop pods Running", || {
        (running_pods(&c, "shop") == 5).then_some(())
    });

    let out = c.kulisse(&["delete", "-f", SHOP]);
    assert_shop_deleted(&out);
    let gone = c.kulisse(&["get", "namespace", "shop"]);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("namespaces \"shop\" not found"),
        "{}",
        text(&gone.stderr)
    );
}

const HELD: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: hold
---
apiVersion: v1
kind: Pod
metadata:
  name: held
  namespace: hold
  finalizers: [kulisse.dev/hold]
spec:
  containers:
    - name: c
      image: localhost/busybox:latest
      command: [\"sleep\", \"3600\"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: hold
data:
  a: b
";

const LATE: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: late
  namespace: hold
data:
  a: b
";

fn condition(ns: &Value, kind: &str) -> Option<(String, String)> {
    ns.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| s(c, "/type") == kind)
        .map(|c| (s(c, "/status").to_string(), s(c, "/message").to_string()))
}

/// Nothing new inside a terminating namespace, with upstream's message, reason and cause
/// (the kulisse CLI's apply and a plain POST).
fn creates_are_refused(c: &Cluster, dir: &tempfile::TempDir) {
    let late = dir.path().join("late.yaml");
    std::fs::write(&late, LATE).expect("write manifest");
    let refused = c.kulisse(&["apply", "-f", late.to_str().expect("utf-8 path")]);
    assert!(!refused.status.success());
    let msg = "configmaps \"late\" is forbidden: unable to create new content in namespace hold because it is being terminated";
    assert!(text(&refused.stderr).contains(msg), "{}", text(&refused.stderr));
    let token = c.token();
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"}}"#;
    let (code, status) = c.http("POST", "/api/v1/namespaces/hold/configmaps", &headers, body);
    let status: Value = serde_json::from_str(&status).expect("a Status");
    assert_eq!((code, s(&status, "/reason")), (403, "Forbidden"), "{status}");
    assert_eq!(
        s(&status, "/details/causes/0/reason"),
        "NamespaceTerminating",
        "{status}"
    );
    assert_eq!(s(&status, "/details/causes/0/field"), "metadata.namespace", "{status}");
}

#[test]
fn a_terminating_namespace_refuses_new_content_and_says_what_it_waits_for() {
    let (dir, c) = up();
    let file = dir.path().join("held.yaml");
    std::fs::write(&file, HELD).expect("write manifest");
    c.ok(&["apply", "-f", file.to_str().expect("utf-8 path")]);
    let ns = json(&c, &["get", "namespace", "hold"]);
    assert_eq!(ns["spec"]["finalizers"], serde_json::json!(["kubernetes"]), "{ns}");
    wait_for(60, "the held pod Running", || {
        (running_pods(&c, "hold") == 1).then_some(())
    });

    let out = c.ok(&["delete", "namespace", "hold", "--wait=false"]);
    assert_eq!(out.trim(), "namespace \"hold\" deleted");
    let ns = json(&c, &["get", "namespace", "hold"]);
    assert_eq!(s(&ns, "/status/phase"), "Terminating", "{ns}");
    assert!(ns.pointer("/metadata/deletionTimestamp").is_some(), "{ns}");

    creates_are_refused(&c, &dir);

    // The controller deleted the pod (gracefully) and waits for its finalizer; pods go
    // first, so the ConfigMap is still there.
    let ns = wait_for(60, "the namespace's conditions naming the held pod", || {
        let ns = json(&c, &["get", "namespace", "hold"]);
        let finalizers = condition(&ns, "NamespaceFinalizersRemaining")?;
        (finalizers.0 == "True").then_some(ns)
    });
    assert_eq!(
        condition(&ns, "NamespaceContentRemaining"),
        Some((
            "True".into(),
            "Some resources are remaining: pods. has 1 resource instances".into()
        ))
    );
    assert_eq!(
        condition(&ns, "NamespaceFinalizersRemaining").map(|c| c.1),
        Some("Some finalizers are remaining: kulisse.dev/hold in 1 resource instances".into())
    );
    assert_eq!(
        condition(&ns, "NamespaceDeletionContentFailure").map(|c| c.0),
        Some("False".into())
    );
    let pod = json(&c, &["get", "pod", "held", "-n", "hold"]);
    assert!(pod.pointer("/metadata/deletionTimestamp").is_some(), "{pod}");
    c.ok(&["get", "configmap", "settings", "-n", "hold"]);

    // Its owner lets go of the pod: the namespace empties and goes.
    let patch = c.kulisse(&[
        "patch",
        "pod",
        "held",
        "-n",
        "hold",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(patch.status.success(), "{}", text(&patch.stderr));
    wait_for(60, "the namespace gone", || {
        let out = c.kulisse(&["get", "namespace", "hold"]);
        (!out.status.success() && text(&out.stderr).contains("not found")).then_some(())
    });
    let leftovers = c.kulisse(&["get", "configmaps", "-n", "hold", "-o", "name"]);
    assert!(text(&leftovers.stdout).trim().is_empty(), "{}", text(&leftovers.stdout));
}
