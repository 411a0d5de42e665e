//! kubectl's idioms in the kulisse CLI, against a real cluster (`kulisse up`, mock runtime):
//! `TYPE/NAME` wherever a name is taken, several kinds and `all`, `-l` and `--all`,
//! `--show-labels`, `-o jsonpath` and `-o custom-columns`, `label` and `annotate`, `events`,
//! `version`, `cluster-info` and `explain`. Where the real kubectl is installed, the same
//! command runs through it on the same cluster and both outputs are compared.

use std::process::Output;

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::flows::{is_ready, items, json, s, wait_for};
use kulisse_tests::kubectl::Kubectl;

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml");

/// A cluster running examples/web.yaml: two ready `web` pods behind a Service.
fn cluster_with_web() -> Cluster {
    let c = Cluster::start();
    c.ok(&["apply", "-f", WEB]);
    wait_for(90, "2 web pods Running and Ready", || {
        let pods = items(&json(&c, &["get", "pods", "-l", "app=web"]));
        (pods.len() == 2 && pods.iter().all(|p| s(p, "/status/phase") == "Running" && is_ready(p))).then_some(())
    });
    c
}

fn pod_names(c: &Cluster) -> Vec<String> {
    let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    out.lines().map(|l| l.trim_start_matches("pod/").to_string()).collect()
}

/// `kulisse ARGS` must fail: its stderr.
fn fails(c: &Cluster, args: &[&str]) -> String {
    let out = c.kulisse(args);
    assert!(
        !out.status.success(),
        "kulisse {args:?} should fail:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Each line's words, with ages (`3s`, `2m5s`, which may tick between two runs) blanked:
/// what to compare of two tables.
fn without_age(table: &str) -> Vec<Vec<String>> {
    let is_age = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_digit())
            && w.ends_with(|c: char| "smhdy".contains(c))
            && w.chars().all(|c| c.is_ascii_digit() || "smhdy".contains(c))
    };
    table
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| if is_age(w) { "AGE".to_string() } else { w.to_string() })
                .collect()
        })
        .collect()
}

/// stdout, stderr and success of a run, to compare kulisse's with kubectl's.
fn all_of(o: &Output) -> (String, String, bool) {
    (text(&o.stdout), text(&o.stderr), o.status.success())
}

#[test]
fn type_slash_name_several_kinds_and_all_print_as_kubectl_does() {
    let c = cluster_with_web();
    let pods = pod_names(&c);
    let pod = pods[0].as_str();
    let one = c.ok(&["get", &format!("pod/{pod}")]);
    assert!(one.starts_with("NAME ") && one.contains(&format!("\n{pod} ")), "{one}");
    let mixed = c.ok(&["get", &format!("pod/{pod}"), "deploy/web"]);
    assert!(
        mixed.contains(&format!("\npod/{pod} "))
            && mixed.contains("\n\nNAME ")
            && mixed.contains("\ndeployment.apps/web "),
        "several kinds: kind/name and a blank line between tables:\n{mixed}"
    );
    let all = c.ok(&["get", "all"]);
    for name in ["pod/", "service/web", "deployment.apps/web", "replicaset.apps/web-"] {
        assert!(all.contains(&format!("\n{name}")), "get all lists {name}:\n{all}");
    }
    let two = c.ok(&["get", "pods,svc"]);
    assert!(
        two.contains("\npod/") && two.contains("\nservice/web ") && !two.contains("deployment"),
        "{two}"
    );
    let labels = c.ok(&["get", "pods", "--show-labels"]);
    assert!(
        labels.lines().next().unwrap().trim_end().ends_with("LABELS"),
        "{labels}"
    );
    assert!(labels.contains("app=web,pod-template-hash="), "{labels}");
    let missing = c.kulisse(&["get", &format!("pod/{pod}"), "pod/nope"]);
    assert!(!missing.status.success() && text(&missing.stdout).contains(pod));
    assert_eq!(
        text(&missing.stderr).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let e = fails(&c, &["get", "pods", &format!("pod/{pod}")]);
    assert!(
        e.starts_with("error: there is no need to specify a resource type as a separate argument"),
        "{e}"
    );
    assert_eq!(
        fails(&c, &["get", "foo"]).trim(),
        "error: the server doesn't have a resource type \"foo\""
    );
    let e = fails(&c, &["get"]);
    assert!(e.contains("\nerror: Required resource not specified.\n"), "{e}");

    let Some(k) = Kubectl::for_cluster(&c) else { return };
    for args in [
        vec!["get", "all"],
        vec!["get", "pods,svc"],
        vec!["get", "pods", "--show-labels"],
        vec!["get", "pod/x", "deploy/web"],
        vec!["get", "pods", "-o", "name"],
        vec!["get", "all", "-o", "name"],
        vec!["get", "deploy,svc", "--no-headers"],
    ] {
        let ours = c.kulisse(&args);
        let theirs = k.run(&args);
        assert_eq!(
            without_age(&text(&ours.stdout)),
            without_age(&text(&theirs.stdout)),
            "kulisse and kubectl print `{}` alike",
            args.join(" ")
        );
        assert_eq!(
            text(&ours.stderr),
            text(&theirs.stderr),
            "stderr of `{}`",
            args.join(" ")
        );
    }
}

#[test]
fn selectors_and_workloads_in_describe_logs_scale_and_delete() {
    let c = cluster_with_web();
    let described = c.ok(&["describe", "deployment/web"]);
    assert!(
        described.starts_with("Name:") && described.contains("web"),
        "{described}"
    );
    let by_label = c.ok(&["describe", "pods", "-l", "app=web"]);
    assert_eq!(by_label.matches("\nName:").count() + 1, 2, "both pods:\n{by_label}");

    // `logs deploy/web` picks one pod of the selector and says which.
    let out = c.kulisse(&["logs", "deploy/web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let note = text(&out.stderr);
    let pods = pod_names(&c);
    assert!(
        note.starts_with("Found 2 pods, using pod/") && pods.iter().any(|p| note.trim().ends_with(p.as_str())),
        "{note}"
    );
    assert!(!text(&out.stdout).is_empty());
    let prefixed = c.ok(&["logs", "-l", "app=web", "--prefix"]);
    for p in &pods {
        assert!(prefixed.contains(&format!("[pod/{p}/httpd] ")), "{prefixed}");
    }

    // A pod of two containers: kubectl's default is the first, and it says so.
    let two = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: two\nspec:\n  containers:\n  - name: a\n    image: localhost/busybox:latest\n  - name: b\n    image: localhost/busybox:latest\n";
    let applied = c.kulisse_stdin(&["apply", "-f", "-"], Some(two));
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    wait_for(60, "pod two Running", || {
        (s(&json(&c, &["get", "pod/two"]), "/status/phase") == "Running").then_some(())
    });
    let out = c.kulisse(&["logs", "pod/two"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "Defaulted container \"a\" out of: a, b");
    assert!(c.ok(&["logs", "two", "b"]).contains("[mock]"));
    c.ok(&["delete", "pod/two", "--wait=false"]);
    let e = fails(&c, &["logs", "deploy/nope"]);
    assert_eq!(
        e.trim(),
        "error: error from server (NotFound): deployments.apps \"nope\" not found in namespace \"default\""
    );

    assert_eq!(
        c.ok(&["scale", "deploy/web", "--replicas=3"]).trim(),
        "deployment.apps/web scaled"
    );
    wait_for(60, "3 web pods", || (pod_names(&c).len() == 3).then_some(()));
    assert_eq!(
        c.ok(&["scale", "deploy", "-l", "app=web", "--replicas=3"]).trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        c.ok(&["scale", "deployments", "--all", "--replicas=3"]).trim(),
        "deployment.apps/web scaled"
    );

    let first = pod_names(&c)[0].clone();
    let deleted = c.ok(&["delete", &format!("pod/{first}"), "--wait=false"]);
    assert_eq!(deleted.trim(), format!("pod \"{first}\" deleted"));
    let e = fails(&c, &["delete", "pods"]);
    assert_eq!(e.trim(), "error: resource(s) were provided, but no name was specified");
    let e = fails(&c, &["delete", "pods", "x", "-l", "app=web"]);
    assert_eq!(e.trim(), "error: name cannot be provided when a selector is specified");
    let out = c.ok(&["delete", "deploy,svc", "-l", "app=web", "--wait=false"]);
    assert_eq!(
        out.trim(),
        "deployment.apps \"web\" deleted",
        "only the Deployment has app=web"
    );
    let out = c.ok(&["delete", "svc", "--all", "--wait=false"]);
    assert_eq!(out.trim(), "service \"web\" deleted");
}

#[test]
fn jsonpath_and_custom_columns_print_what_kubectl_prints() {
    let c = cluster_with_web();
    let pods = pod_names(&c);
    let names = c.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, pods.join(" "));
    let rows = c.ok(&[
        "get",
        "pods",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#,
    ]);
    assert_eq!(rows.lines().count(), 2);
    assert!(rows.lines().all(|l| l.ends_with("\tRunning")), "{rows}");
    let filtered = c.ok(&[
        "get",
        "pods",
        "-o",
        r#"jsonpath={.items[?(@.status.phase=="Running")].metadata.name}"#,
    ]);
    assert_eq!(filtered, pods.join(" "));
    let one = c.ok(&[
        "get",
        &format!("pod/{}", pods[0]),
        "-o",
        "jsonpath={.spec.containers[0].name}",
    ]);
    assert_eq!(one, "httpd");
    let cols = c.ok(&[
        "get",
        "deploy",
        "-o",
        "custom-columns=NAME:.metadata.name,REPLICAS:spec.replicas,X:.nope",
    ]);
    assert_eq!(cols, "NAME   REPLICAS   X\nweb    2          <none>\n");
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("names.jsonpath");
    std::fs::write(&template, r#"{range .items[*]}{.metadata.name}{"\n"}{end}"#).unwrap();
    let from_file = c.ok(&["get", "pods", "-o", &format!("jsonpath-file={}", template.display())]);
    assert_eq!(from_file, pods.iter().map(|p| format!("{p}\n")).collect::<String>());
    let columns = dir.path().join("columns.txt");
    std::fs::write(&columns, "NAME  REPLICAS\n.metadata.name  .spec.replicas\n").unwrap();
    let from_file = c.ok(&[
        "get",
        "deploy",
        "-o",
        &format!("custom-columns-file={}", columns.display()),
    ]);
    assert_eq!(from_file, "NAME   REPLICAS\nweb    2\n");
    let e = fails(&c, &["get", "pods", "-o", "jsonpath={.items["]);
    assert_eq!(e.trim(), "error: error parsing jsonpath {.items[, unterminated array");
    let e = fails(&c, &["get", "pods", "-o", "custom-columns=NAME"]);
    assert!(e.starts_with("error: unexpected custom-columns spec: NAME"), "{e}");

    let Some(k) = Kubectl::for_cluster(&c) else { return };
    for output in [
        "jsonpath={.items[*].metadata.name}",
        r#"jsonpath={range .items[*]}{.metadata.name}{"\t"}{.spec.nodeName}{"\n"}{end}"#,
        r#"jsonpath={.items[?(@.status.phase=="Running")].status.podIP}"#,
        "jsonpath={..containerPort}",
        "jsonpath={.items[0].metadata.labels}",
        "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,PORTS:.spec.containers[*].ports[*].containerPort",
        "jsonpath={.items[",
        "jsonpath",
        "custom-columns=NAME",
        "foo",
    ] {
        let args = ["get", "pods", "-o", output];
        let (ours, theirs) = (c.kulisse(&args), k.run(&args));
        assert_eq!(all_of(&ours).0, all_of(&theirs).0, "stdout of -o {output}");
        assert_eq!(all_of(&ours).2, all_of(&theirs).2, "success of -o {output}");
        if output != "foo" {
            assert_eq!(all_of(&ours).1, all_of(&theirs).1, "stderr of -o {output}");
        }
    }
}

#[test]
fn label_and_annotate_speak_kubectl() {
    let c = cluster_with_web();
    let pods = pod_names(&c);
    let pod = format!("pod/{}", pods[0]);
    assert_eq!(c.ok(&["label", &pod, "tier=front"]).trim(), format!("{pod} labeled"));
    assert_eq!(
        c.ok(&["label", &pod, "tier=front"]).trim(),
        format!("{pod} not labeled")
    );
    let e = fails(&c, &["label", &pod, "tier=back"]);
    assert_eq!(
        e.trim(),
        "error: 'tier' already has a value (front), and --overwrite is false"
    );
    assert_eq!(
        c.ok(&["label", &pod, "tier=back", "--overwrite"]).trim(),
        format!("{pod} labeled")
    );
    assert_eq!(c.ok(&["get", "pods", "-l", "tier=back", "-o", "name"]).trim(), pod);
    assert_eq!(c.ok(&["label", &pod, "tier-"]).trim(), format!("{pod} unlabeled"));
    let out = c.ok(&["label", "pods", "-l", "app=web", "team=a"]);
    assert_eq!(out.lines().filter(|l| l.ends_with(" labeled")).count(), 2, "{out}");
    let out = c.ok(&["label", "pods", "--all", "team-"]);
    assert_eq!(out.lines().filter(|l| l.ends_with(" unlabeled")).count(), 2, "{out}");
    let e = fails(&c, &["label", &pod]);
    assert_eq!(e.trim(), "error: at least one label update is required");

    assert_eq!(
        c.ok(&["annotate", "pods", &pods[0], "note=hi"]).trim(),
        format!("{pod} annotated")
    );
    let e = fails(&c, &["annotate", &pod, "note=ho"]);
    assert_eq!(
        e.trim(),
        "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (hi)"
    );
    assert_eq!(
        c.ok(&["annotate", &pod, "note=ho", "--overwrite"]).trim(),
        format!("{pod} annotated")
    );
    let got = c.ok(&["get", &pod, "-o", "jsonpath={.metadata.annotations.note}"]);
    assert_eq!(got, "ho");
    assert_eq!(c.ok(&["annotate", &pod, "note-"]).trim(), format!("{pod} annotated"));

    let Some(k) = Kubectl::for_cluster(&c) else { return };
    // The same sequence through kubectl gives the same words.
    for args in [
        vec!["label", &pod, "size=s"],
        vec!["label", &pod, "size=m"],
        vec!["label", &pod, "size=m", "--overwrite"],
        vec!["label", &pod, "size-"],
        vec!["label", &pod, "size-"],
        vec!["annotate", &pod, "a=1"],
        vec!["annotate", &pod, "a=2"],
        vec!["annotate", &pod, "a-"],
        vec!["label", &pod, "a=1", "a-"],
        vec!["label", &pod, "m=1", "n=1"],
        vec!["label", &pod, "m=2", "n=2"],
    ] {
        // kubectl runs right after kulisse made the change, so their stdout may differ
        // (`labeled` then `not labeled`); errors and exit codes must not.
        let (ours, theirs) = (c.kulisse(&args), k.run(&args));
        let (o, t) = (all_of(&ours), all_of(&theirs));
        assert_eq!(o.2, t.2, "success of `{}`", args.join(" "));
        // kubectl walks the keys of a Go map: several errors come in any order.
        let lines = |e: &str| {
            let mut l: Vec<String> = e.lines().map(str::to_string).collect();
            l.sort();
            l
        };
        assert_eq!(lines(&o.1), lines(&t.1), "stderr of `{}`", args.join(" "));
    }
}

#[test]
fn events_version_cluster_info_and_explain() {
    let c = cluster_with_web();
    let events = c.ok(&["events"]);
    let header: Vec<&str> = events
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|w| !w.is_empty())
        .collect();
    let header: Vec<&str> = header.iter().map(|w| w.trim()).collect();
    assert_eq!(header, ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], "{events}");
    let for_web = c.ok(&["events", "--for", "deploy/web"]);
    assert!(
        for_web.contains("ScalingReplicaSet") && for_web.contains("Deployment/web"),
        "{for_web}"
    );
    assert!(!for_web.contains("Pod/"), "{for_web}");
    let all = c.ok(&["events", "-A"]);
    assert!(all.starts_with("NAMESPACE"), "{all}");
    let warnings = c.kulisse(&["events", "--types", "Warning"]);
    assert!(text(&warnings.stdout).lines().skip(1).all(|l| l.contains(" Warning ")));
    assert_eq!(
        fails(&c, &["events", "--types", "Foo"]).trim(),
        "error: valid --types are Normal or Warning"
    );

    let version = c.ok(&["version"]);
    let lines: Vec<&str> = version.lines().collect();
    assert!(
        lines[0].starts_with("Client Version: v1.") && lines[1].starts_with("Server Version: v1."),
        "{version}"
    );
    let info = c.ok(&["cluster-info"]);
    assert_eq!(
        info.lines().next().unwrap(),
        format!("Kubernetes control plane is running at {}", c.server)
    );
    let explained = c.ok(&["explain", "pod.spec.containers"]);
    assert!(
        explained.starts_with("KIND:       Pod\nVERSION:    v1\n\nFIELD: containers <[]Container>"),
        "{explained}"
    );
    let e = c.kulisse(&["explain", "pod.spec.nope"]);
    assert_eq!(text(&e.stderr).trim(), "error: field \"nope\" does not exist");

    let Some(k) = Kubectl::for_cluster(&c) else { return };
    for args in [
        vec!["events", "--for", "deploy/web"],
        vec!["events", "--types", "Warning"],
    ] {
        let (ours, theirs) = (c.kulisse(&args), k.run(&args));
        assert_eq!(
            text(&ours.stdout).lines().count(),
            text(&theirs.stdout).lines().count(),
            "{args:?}"
        );
        assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{args:?}");
    }
    assert_eq!(info.lines().next(), k.ok(&["cluster-info"]).lines().next());
    for what in [
        "pods",
        "pod.spec.containers",
        "deployment.spec",
        "svc.spec.ports.port",
        "pod.metadata.labels",
        "pod.spec.nope",
        "nope",
    ] {
        let (ours, theirs) = (c.kulisse(&["explain", what]), k.run(&["explain", what]));
        assert_eq!(all_of(&ours), all_of(&theirs), "explain {what}");
    }
}
