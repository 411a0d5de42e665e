//! "May I?" and "who am I?" with the real kubectl against a real kulisse cluster
//! (`kulisse up --nodes 2`, mock runtime): `kubectl auth can-i` (SelfSubjectAccessReview,
//! with `--as`/`--as-group` impersonation), `kubectl auth can-i --list`
//! (SelfSubjectRulesReview), `kubectl auth whoami` (SelfSubjectReview), and a request that
//! impersonates a kubelet and meets the Node authorizer's 403.
//!
//! Each row of the table is one (identity, verb, resource) question answered yes or no as
//! upstream's RBAC (with its bootstrap policy) and Node authorizer answer it.

use kulisse_tests::cluster::Cluster;
use kulisse_tests::kubectl::Kubectl;

fn start() -> Option<(tempfile::TempDir, Cluster, Kubectl)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "2"]);
    let kubectl = Kubectl::for_cluster(&cluster)?;
    Some((dir, cluster, kubectl))
}

/// `kubectl [--as ...] auth can-i ARGS`: "yes" with exit 0, or "no" with exit 1.
fn can_i(k: &Kubectl, who: &[&str], args: &[&str]) -> bool {
    let mut all: Vec<&str> = who.to_vec();
    all.extend(["auth", "can-i"]);
    all.extend(args);
    let out = k.run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer = stdout.lines().next().unwrap_or("").trim().to_string();
    match out.status.code() {
        Some(0) => assert_eq!(answer, "yes", "{all:?}: {stdout}"),
        Some(1) => assert!(
            answer.starts_with("no"),
            "{all:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        other => panic!(
            "kubectl {all:?} exited {other:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    out.status.success()
}

const ALICE_ROLE: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
  namespace: default
rules:
  - apiGroups: [\"\"]
    resources: [\"pods\", \"pods/log\"]
    verbs: [\"get\", \"list\", \"watch\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: alice-reads-pods
  namespace: default
subjects:
  - kind: User
    name: alice
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: pod-reader
  apiGroup: rbac.authorization.k8s.io
";

#[test]
fn can_i_answers_as_upstreams_authorizers_would() {
    let Some((_dir, _cluster, k)) = start() else { return };
    k.run_stdin(&["apply", "-f", "-"], Some(ALICE_ROLE.as_bytes()));
    let admin: &[&str] = &[];
    let node1: &[&str] = &["--as", "system:node:node-1", "--as-group", "system:nodes"];
    let sched: &[&str] = &["--as", "system:kube-scheduler"];
    let proxy: &[&str] = &["--as", "system:kube-proxy"];
    let alice: &[&str] = &["--as", "alice"];
    let bob: &[&str] = &["--as", "bob"];
    let cases: &[(&[&str], &[&str], bool)] = &[
        (admin, &["get", "pods"], true),
        (admin, &["create", "deployments.apps"], true),
        (admin, &["delete", "nodes"], true),
        (admin, &["*", "*"], true),
        (admin, &["impersonate", "users"], true),
        (admin, &["get", "/healthz"], true),
        (node1, &["get", "nodes/node-1"], true),
        (node1, &["patch", "nodes/node-1"], true),
        // The Node authorizer lets kubelets patch any Node (upstream's NodeRules); it is
        // the NodeRestriction admission plugin, after the body is read, that refuses
        // another node's object. `can-i` asks only the authorizers, so: yes.
        (node1, &["patch", "nodes/node-2"], true),
        (node1, &["update", "nodes/node-1", "--subresource", "status"], true),
        (node1, &["update", "nodes/node-2", "--subresource", "status"], true),
        (node1, &["delete", "deployments.apps", "-n", "default"], false),
        (node1, &["list", "secrets", "-n", "default"], false),
        (node1, &["create", "clusterroles.rbac.authorization.k8s.io"], false),
        (node1, &["impersonate", "users"], false),
        (
            sched,
            &["create", "pods", "--subresource", "binding", "-n", "default"],
            true,
        ),
        (sched, &["list", "nodes"], true),
        (sched, &["watch", "pods", "--all-namespaces"], true),
        (sched, &["delete", "nodes"], false),
        (sched, &["create", "secrets", "-n", "default"], false),
        (proxy, &["list", "services", "--all-namespaces"], true),
        (
            proxy,
            &["watch", "endpointslices.discovery.k8s.io", "--all-namespaces"],
            true,
        ),
        (proxy, &["create", "pods", "-n", "default"], false),
        (proxy, &["get", "secrets", "-n", "default"], false),
        (bob, &["get", "/healthz"], true),
        (bob, &["get", "/version"], true),
        (bob, &["get", "/api"], true),
        (bob, &["create", "selfsubjectrulesreviews.authorization.k8s.io"], true),
        (bob, &["patch", "nodes/node-1"], false),
        (alice, &["get", "pods", "-n", "default"], true),
        (alice, &["list", "pods", "-n", "default"], true),
        (alice, &["get", "pods", "--subresource", "log", "-n", "default"], true),
        (alice, &["delete", "pods", "-n", "default"], false),
        (alice, &["get", "pods", "-n", "kube-system"], false),
        (alice, &["get", "secrets", "-n", "default"], false),
        (alice, &["get", "/api"], true),
        (
            alice,
            &["create", "selfsubjectaccessreviews.authorization.k8s.io"],
            true,
        ),
        (alice, &["impersonate", "users"], false),
        (bob, &["get", "pods", "-n", "default"], false),
        (bob, &["list", "namespaces"], false),
    ];
    assert!(cases.len() >= 40);
    let mut wrong = Vec::new();
    for (who, what, expected) in cases {
        let got = can_i(&k, who, what);
        if got != *expected {
            wrong.push(format!("{who:?} can-i {what:?}: got {got}, expected {expected}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} answers differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn whoami_list_and_an_impersonated_kubelet_refused() {
    let Some((_dir, _cluster, k)) = start() else { return };
    let me = k.ok(&["auth", "whoami", "-o", "json"]);
    let me: serde_json::Value = serde_json::from_str(&me).expect("whoami JSON");
    assert_eq!(me["kind"], "SelfSubjectReview", "{me}");
    assert_eq!(me["status"]["userInfo"]["username"], "kubernetes-admin", "{me}");
    let them = k.ok(&["--as", "alice", "--as-group", "devs", "auth", "whoami"]);
    assert!(them.contains("alice") && them.contains("devs"), "{them}");
    // The admin's rules: cluster-admin's `*.*`.
    let list = k.ok(&["auth", "can-i", "--list"]);
    assert!(list.lines().any(|l| l.starts_with("*.*")), "{list}");
    // A kubelet's list is incomplete: the Node authorizer has no rules to list.
    let out = k.run(&[
        "--as",
        "system:node:node-1",
        "--as-group",
        "system:nodes",
        "auth",
        "can-i",
        "--list",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("selfsubjectaccessreviews"), "{all}");
    // Anonymous may not even ask: system:basic-user is bound to system:authenticated only.
    let err = k.fails(&["--as", "system:anonymous", "auth", "can-i", "get", "pods"]);
    assert!(
        err.contains("User \"system:anonymous\" cannot create resource \"selfsubjectaccessreviews\""),
        "{err}"
    );
    // A kubelet changing another node: the Node authorizer's 403, in upstream's words.
    let err = k.fails(&[
        "--as",
        "system:node:node-1",
        "--as-group",
        "system:nodes",
        "label",
        "node",
        "node-2",
        "stolen=yes",
    ]);
    assert!(
        err.contains("nodes \"node-2\" is forbidden: User \"system:node:node-1\" cannot ")
            && err.contains("node 'node-1' cannot"),
        "{err}"
    );
}
