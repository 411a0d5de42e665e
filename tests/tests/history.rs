//! `kulisse history TYPE/NAME` and `kulisse get TYPE/NAME --revision N` against a real
//! `kulisse up`, with writes from the real kubectl: every stored revision is listed with
//! its writer from the audit log, kubectl's write carries its trace id, the diffs show
//! what changed, and a past revision reads back as it was.

use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::wait_for;
use kulisse_tests::kubectl::Kubectl;
use serde_json::Value;

/// The revisions `history` lists: (revision, the rest of its header line).
fn headers(history: &str) -> Vec<(u64, String)> {
    history
        .lines()
        .filter_map(|l| l.strip_prefix("revision "))
        .map(|l| {
            let (rev, rest) = l.split_once("  ").expect("revision N  ...");
            (rev.parse().expect("a number"), rest.to_string())
        })
        .collect()
}

#[test]
fn history_lists_each_revision_with_its_writer_and_get_revision_shows_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(dir.path(), &["--nodes", "1"]);
    let Some(kubectl) = Kubectl::for_cluster(&c) else {
        return; // not under CI and no kubectl: find_kubectl said why
    };
    kubectl.ok(&["create", "configmap", "settings", "--from-literal=colour=blue"]);
    kubectl.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"colour":"green"}}"#,
    ]);
    kubectl.ok(&["label", "configmap", "settings", "tier=web"]);

    let history = c.ok(&["history", "configmap/settings"]);
    let revs = headers(&history);
    assert_eq!(revs.len(), 3, "three writes, three revisions:\n{history}");
    assert!(
        history.starts_with("configmap/settings: 3 revisions in the store's history\n"),
        "{history}"
    );
    let verbs: Vec<&str> = ["(create)", "(patch)", "(patch)"].to_vec();
    for ((_, header), verb) in revs.iter().zip(verbs) {
        assert!(
            header.contains(&format!("kubernetes-admin {verb}")),
            "writer and verb in {header:?}:\n{history}"
        );
        // kubectl's writes are traced by the API server (it starts a trace for clients
        // outside kulisse): each names its trace, which `kulisse trace ID` opens.
        let trace = header.split("trace ").nth(1).expect("a trace id");
        assert_eq!(trace.len(), 32, "{header}");
        wait_for(30, "the write's trace in the trace store", || {
            c.kulisse(&["trace", trace]).status.success().then_some(())
        });
    }
    assert!(
        history.contains("-  colour: blue\n") && history.contains("+  colour: green\n"),
        "{history}"
    );
    assert!(history.contains("+    tier: web\n"), "{history}");
    assert!(revs.windows(2).all(|w| w[0].0 < w[1].0), "oldest first: {revs:?}");

    // The first revision, whole, as it was; and before it, nothing.
    let first: Value = serde_json::from_str(&c.ok(&[
        "get",
        "configmap/settings",
        "--revision",
        &revs[0].0.to_string(),
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(first["data"]["colour"], "blue");
    assert_eq!(first["metadata"]["resourceVersion"], revs[0].0.to_string());
    assert!(first.pointer("/metadata/labels/tier").is_none(), "{first}");
    let before = c.kulisse(&["get", "configmap/settings", "--revision", &(revs[0].0 - 1).to_string()]);
    assert!(!before.status.success());
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("did not exist then"),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    // The audit log it reads is private: it names every user.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
