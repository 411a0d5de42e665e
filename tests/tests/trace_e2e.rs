//! One trace from `apply` to proxy rule, checked on the real OTLP wire format: a real
//! `kulisse up` (mock runtime) and a real `kulisse apply` export to an OTLP receiver built
//! on the official protobuf definitions. Also the terminal views (`trace last`,
//! `apply --follow`, `trace --export`) and `kulisse demo`.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kulisse_tests::cluster::{Cluster, kulisse_bin, text};
use kulisse_tests::otlp::{OtlpReceiver, ReceivedSpan};

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml");

const STAGES: [&str; 8] = [
    "cli",
    "apiserver",
    "store",
    "controller",
    "scheduler",
    "kubelet",
    "runtime",
    "proxy",
];

/// Start `kulisse up` exporting to `receiver`, apply the example app exporting too, and
/// return the cluster (kept alive) with the id of the apply's trace.
fn traced_apply(
    rt: &tokio::runtime::Runtime,
    receiver: &OtlpReceiver,
    style: &str,
) -> (Cluster, tempfile::TempDir, String) {
    let _ = rt;
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_with_env(
        dir.path(),
        &["--nodes", "3", "--fast-failover", "--trace-style", style],
        &env,
    );
    c.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = c.ok(&["apply", "-f", WEB]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let root = wait_spans(receiver, 30, "the CLI's cli.apply span", |spans| {
        spans.iter().find(|s| s.name == "cli.apply").cloned()
    });
    (c, dir, root.trace_id)
}

fn wait_spans<T>(receiver: &OtlpReceiver, secs: u64, what: &str, check: impl Fn(&[ReceivedSpan]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let spans = receiver.spans();
        if let Some(v) = check(&spans) {
            return v;
        }
        if Instant::now() > deadline {
            let names: BTreeSet<String> = spans
                .iter()
                .map(|s| format!("{} ({})", s.name, s.service_name))
                .collect();
            panic!(
                "timed out after {secs}s waiting for {what}; the receiver has {} spans: {names:?}",
                spans.len()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stage(s: &ReceivedSpan) -> &str {
    s.attributes.get("kulisse.stage").map(String::as_str).unwrap_or("")
}

#[test]
fn one_trace_from_apply_to_proxy_rule_over_otlp() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(OtlpReceiver::start_grpc()).unwrap();
    let (_cluster, _dir, trace_id) = traced_apply(&rt, &receiver, "tree");

    // Wait until the trace reaches kube-proxy, through every stage, and the pods' addresses
    // reach a rule (the first syncs may come from the Service alone, or its empty slice).
    let spans = wait_spans(&receiver, 60, "every stage in the apply's trace", |all| {
        let ours: Vec<ReceivedSpan> = all.iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        let stages: BTreeSet<&str> = ours.iter().map(stage).collect();
        let with_pods = ours.iter().any(|s| {
            s.name == "proxy.sync_rules" && s.attributes.get("proxy.diff").is_some_and(|d| d.contains("127.64."))
        });
        (STAGES.iter().all(|s| stages.contains(s)) && with_pods).then_some(ours)
    });

    // One root: the CLI's span.
    let roots: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.parent_span_id.is_none()).collect();
    assert_eq!(
        roots.len(),
        1,
        "one root, got {:?}",
        roots.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert_eq!(roots[0].name, "cli.apply");
    assert_eq!(roots[0].service_name, "kulisse-cli");
    let root_id = roots[0].span_id.clone();

    // The proxy rule span's parent chain leads to that root, through the components.
    let by_id: HashMap<&str, &ReceivedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // The proxy sync that put the pods' addresses into a rule: its cause travelled through
    // the whole cluster.
    let proxy = spans
        .iter()
        .filter(|s| {
            s.name == "proxy.sync_rules" && s.attributes.get("proxy.diff").is_some_and(|d| d.contains("127.64."))
        })
        .max_by_key(|s| depth(&spans, s))
        .expect("a proxy sync with pod addresses");
    let mut chain = vec![proxy.name.clone()];
    let mut at = proxy;
    while let Some(parent) = at.parent_span_id.as_deref() {
        at = by_id.get(parent).unwrap_or_else(|| {
            panic!(
                "span {} has a parent {parent} missing from the trace; chain so far {chain:?}",
                at.name
            )
        });
        chain.push(at.name.clone());
    }
    assert_eq!(at.span_id, root_id, "chain {chain:?}");
    for hop in [
        "cli.request",
        "apiserver.request",
        "controller.reconcile",
        "scheduler.schedule_pod",
        "kubelet.sync_pod",
    ] {
        assert!(
            chain.iter().any(|n| n == hop),
            "the chain {chain:?} passes through {hop}"
        );
    }

    // One service per component, also inside one `kulisse up` process.
    let want = [
        ("cli", "kulisse-cli"),
        ("apiserver", "kulisse-apiserver"),
        ("store", "kulisse-apiserver"),
        ("controller", "kulisse-controller-manager"),
        ("scheduler", "kulisse-scheduler"),
        ("kubelet", "kulisse-kubelet"),
        ("runtime", "kulisse-kubelet"),
        ("proxy", "kulisse-proxy"),
    ];
    for s in &spans {
        let expected = want.iter().find(|(st, _)| *st == stage(s)).map(|(_, svc)| *svc);
        assert_eq!(
            Some(s.service_name.as_str()),
            expected,
            "span {} (stage {})",
            s.name,
            stage(s)
        );
    }
    // Every span says which step of the road it is.
    assert!(
        spans.iter().all(|s| STAGES.contains(&stage(s))),
        "every span has a kulisse.stage"
    );
}

fn depth(spans: &[ReceivedSpan], s: &ReceivedSpan) -> usize {
    let mut d = 0;
    let mut at = s;
    while let Some(p) = at
        .parent_span_id
        .as_deref()
        .and_then(|p| spans.iter().find(|x| x.span_id == p))
    {
        d += 1;
        at = p;
    }
    d
}

#[test]
fn links_style_starts_a_trace_per_stage_linked_to_its_cause() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = rt.block_on(OtlpReceiver::start_grpc()).unwrap();
    let (_cluster, _dir, trace_id) = traced_apply(&rt, &receiver, "links");
    let linked = wait_spans(
        &receiver,
        60,
        "linked controller, scheduler and kubelet traces",
        |all| {
            let linked: Vec<ReceivedSpan> = all
                .iter()
                .filter(|s| s.parent_span_id.is_none() && !s.links.is_empty() && s.trace_id != trace_id)
                .cloned()
                .collect();
            let stages: BTreeSet<&str> = linked.iter().map(stage).collect();
            (["controller", "scheduler", "kubelet"]
                .iter()
                .all(|s| stages.contains(s)))
            .then_some(linked)
        },
    );
    // The apply's own trace holds the CLI and the API server's work, but no controller.
    let all = receiver.spans();
    let apply: Vec<&ReceivedSpan> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    assert!(apply.iter().any(|s| s.name == "cli.apply") && apply.iter().any(|s| s.name == "apiserver.request"));
    assert!(
        !apply.iter().any(|s| stage(s) == "controller"),
        "in links style controllers start their own traces"
    );
    // The Deployment controller's trace links straight into the apply's trace.
    let deploy = linked
        .iter()
        .find(|s| s.attributes.get("controller.name").map(String::as_str) == Some("deployment"))
        .expect("a linked deployment reconcile");
    assert!(deploy.links.iter().any(|(t, _)| *t == trace_id), "{deploy:?}");
    // Every link points at a span that exists.
    let known: BTreeSet<&str> = all.iter().map(|s| s.span_id.as_str()).collect();
    for s in &linked {
        for (_, span) in &s.links {
            assert!(
                known.contains(span.as_str()),
                "link of {} to an unknown span {span}",
                s.name
            );
        }
    }
}

#[test]
fn terminal_views_trace_follow_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(dir.path(), &["--nodes", "3", "--fast-failover"]);
    let out = c.ok(&["apply", "-f", WEB, "--follow"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "deployment.apps/web created");
    assert!(lines[2].starts_with("following trace "), "{out}");
    for st in STAGES {
        assert!(
            lines.iter().any(|l| l.split_whitespace().nth(2) == Some(st)),
            "--follow narrates the {st} stage:\n{out}"
        );
    }
    assert!(lines.last().unwrap().starts_with("done in "), "{out}");
    assert!(
        out.contains("scheduled default/web-") && out.contains("rules of service default/web"),
        "{out}"
    );

    let waterfall = c.ok(&["trace", "last", "--width", "220"]);
    let first = waterfall.lines().next().unwrap();
    assert!(first.starts_with("trace ") && first.contains(" spans · "), "{first}");
    for name in [
        "cli.apply",
        "apiserver.compare",
        "controller.reconcile",
        "scheduler.schedule_pod",
        "kubelet.sync_pod",
        "runtime.start_container",
        "proxy.sync_rules",
    ] {
        // Deeply nested names are cut with an ellipsis; the start of each must be there.
        let start = &name[..name.len().min(12)];
        assert!(waterfall.contains(start), "the waterfall shows {name}:\n{waterfall}");
    }
    assert!(
        waterfall.lines().nth(2).is_some_and(|l| l.starts_with("cli.apply")),
        "the root comes first:\n{waterfall}"
    );

    let list = c.ok(&["trace", "--list"]);
    assert!(list.lines().next().unwrap().starts_with("TRACE ID"), "{list}");
    // Newest first; the components' leader-election traces may sit above or below the apply.
    assert!(list.lines().skip(1).any(|l| l.contains("cli.apply")), "{list}");

    let file = dir.path().join("trace.json");
    let msg = c.ok(&["trace", "last", "--export", file.to_str().unwrap()]);
    assert!(msg.starts_with("wrote "), "{msg}");
    let json = std::fs::read_to_string(&file).unwrap();
    let data: opentelemetry_proto::tonic::trace::v1::TracesData =
        serde_json::from_str(&json).expect("the export parses as OTLP JSON");
    let spans: usize = data
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert!(spans > 50, "the export holds the whole trace ({spans} spans)");
    let services: BTreeSet<String> = data
        .resource_spans
        .iter()
        .flat_map(|r| r.resource.iter().flat_map(|res| &res.attributes))
        .filter(|kv| kv.key == "service.name")
        .map(|kv| format!("{:?}", kv.value))
        .collect();
    assert!(services.len() >= 6, "one resource per component: {services:?}");
}

/// A user's write that brings no trace (here `kulisse scale`, as `kubectl scale`) starts a
/// trace of its own at the API server, and what the cluster does about it is in that
/// trace: not appended to the last apply's, whose `kulisse.dev/traceparent` annotation the
/// Deployment still carried.
#[test]
fn a_scale_is_a_trace_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_in(dir.path(), &["--nodes", "2"]);
    c.ok(&["apply", "-f", WEB]);
    c.ok(&["rollout", "status", "deployment/web"]);
    let first = c.ok(&["trace", "last"]);
    let apply_id = first.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        c.ok(&["scale", "deployment/web", "--replicas=3"]).trim(),
        "deployment.apps/web scaled"
    );
    c.ok(&["rollout", "status", "deployment/web"]);
    let scale_id = kulisse_tests::flows::wait_for(30, "a trace of the scale that reaches a kubelet", || {
        c.ok(&["trace", "--list"]).lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&"apiserver.request") && cols[0] != apply_id && l.contains("kubelet"))
                .then(|| cols[0].to_string())
        })
    });
    let waterfall = c.ok(&["trace", &scale_id, "--width", "220"]);
    for name in [
        "apiserver.request",
        "controller.reconcile",
        "scheduler.schedule_pod",
        "kubelet.sync_pod",
    ] {
        let start = &name[..name.len().min(12)];
        assert!(
            waterfall.contains(start),
            "the scale's trace shows {name}:\n{waterfall}"
        );
    }
    assert!(
        waterfall.contains("scale"),
        "the root is the scale request:\n{waterfall}"
    );
}

#[test]
fn demo_runs_every_stage_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(kulisse_bin())
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run kulisse demo");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "kulisse demo failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    for st in STAGES {
        assert!(
            stdout.lines().any(|l| l.split_whitespace().nth(2) == Some(st)),
            "the demo narrates the {st} stage:\n{stdout}"
        );
    }
    for section in [
        "== 2. kulisse apply",
        "deployment.apps/web created",
        "== 4. kulisse get pods -o wide",
        "== 5. kulisse get proxyrules",
        "== 6. kulisse trace",
        "cli.apply",
        "removed ",
    ] {
        assert!(stdout.contains(section), "the demo shows {section:?}:\n{stdout}");
    }
    assert!(stdout.contains("Running"), "the demo's pods run:\n{stdout}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "kulisse demo left files behind: {left:?}");
}
