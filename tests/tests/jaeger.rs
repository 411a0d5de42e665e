//! kulisse's traces in a real Jaeger (v1.75.0, started by the test on free loopback ports,
//! see `kulisse_tests::jaeger`): what Jaeger stores and shows of one `kulisse apply`.
//!
//! 1. `kulisse up` and `kulisse apply` export over OTLP, with `grpc` and with
//!    `http/protobuf`: Jaeger's APIs (`/api/traces/{id}`, which its UI reads, and the OTLP-shaped
//!    `/api/v3/traces/{id}`) hold ONE trace with spans of all eight stages, one process per
//!    component, a parent chain from `proxy.sync_rules` up to `cli.apply`, and none of
//!    Jaeger's warnings (unknown parents, clock skew).
//! 2. With `--trace-style links`, Jaeger holds a trace per stage, each linked
//!    (`FOLLOWS_FROM`) to the span that caused it.
//! 3. `kulisse trace --export` loads in Jaeger: its UI's "JSON File" upload hands OTLP JSON to
//!    the query service's `POST /api/transform`; the test sends the exported file there and
//!    gets back the same spans, names, parents and services Jaeger received over OTLP.
//! 4. `kulisse trace ID --jaeger URL` draws the trace Jaeger holds exactly as `kulisse trace
//!    ID` draws the control plane's copy, and prints its link in Jaeger's UI.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kulisse_tests::cluster::{Cluster, text};
use kulisse_tests::jaeger::Jaeger;
use kulisse_traces::StoredSpan;
use kulisse_traces::catalogue::{STAGES, service_for_stage};
use serde_json::Value;

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/web.yaml");

/// How long spans may take to reach Jaeger and the rollout to reach kube-proxy.
const CONVERGE: Duration = Duration::from_secs(90);

/// One span as Jaeger's JSON model (`/api/traces`, what its UI reads) shows it.
#[derive(Debug, Clone)]
struct JSpan {
    trace_id: String,
    span_id: String,
    name: String,
    /// The `CHILD_OF` reference: the parent.
    parent: Option<String>,
    /// `FOLLOWS_FROM` references (links): (trace id, span id).
    follows: Vec<(String, String)>,
    service: String,
    /// The process's `service.instance.id` (which copy of a component, with several masters).
    instance: Option<String>,
    tags: BTreeMap<String, String>,
    /// The span's events (Jaeger's logs): the `event` field of each.
    events: Vec<String>,
    warnings: Vec<String>,
}

impl JSpan {
    fn stage(&self) -> &str {
        self.tags.get("kulisse.stage").map_or("", String::as_str)
    }
}

fn as_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// The spans of one trace of Jaeger's JSON model (`{"traceID", "spans", "processes"}`).
fn jaeger_spans(trace: &Value) -> Vec<JSpan> {
    let processes = trace.get("processes").cloned().unwrap_or_default();
    let strings = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().map(as_text).collect() };
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let refs: Vec<(String, String, String)> = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| (as_text(&r["refType"]), as_text(&r["traceID"]), as_text(&r["spanID"])))
                .collect();
            let pid = as_text(&s["processID"]);
            JSpan {
                trace_id: as_text(&s["traceID"]),
                span_id: as_text(&s["spanID"]),
                name: as_text(&s["operationName"]),
                parent: refs
                    .iter()
                    .find(|(t, _, _)| t == "CHILD_OF")
                    .map(|(_, _, id)| id.clone()),
                follows: refs
                    .iter()
                    .filter(|(t, _, _)| t == "FOLLOWS_FROM")
                    .map(|(_, trace, span)| (trace.clone(), span.clone()))
                    .collect(),
                service: as_text(&processes[&pid]["serviceName"]),
                instance: processes[&pid]["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["key"] == "service.instance.id")
                    .map(|t| as_text(&t["value"])),
                events: s["logs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|l| l["fields"].as_array().into_iter().flatten())
                    .filter(|f| f["key"] == "event")
                    .map(|f| as_text(&f["value"]))
                    .collect(),
                tags: s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| (as_text(&t["key"]), as_text(&t["value"])))
                    .collect(),
                warnings: strings(&s["warnings"]),
            }
        })
        .collect()
}

/// The three-master test runs alone: its dozen processes would share the 2-core CI machine
/// with another test's cluster, and every test here waits for a whole trace to arrive. The
/// other tests run beside each other.
static HEAVY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Polls `check` until it gives a value; after [`CONVERGE`] fails with `what` and the last
/// state `check` described.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match check() {
            Ok(v) => return v,
            Err(state) if Instant::now() > deadline => {
                panic!("waited {CONVERGE:?} for {what}; last seen: {state}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// `kulisse up` exporting to `endpoint` over `protocol`, and `kulisse apply -f web.yaml`
/// exporting too. Returns the cluster (alive) and the apply's trace id, found in Jaeger as a
/// user finds it: service `kulisse-cli`, operation `cli.apply`.
fn traced_apply(jaeger: &Jaeger, protocol: &str, extra: &[&str]) -> (Cluster, tempfile::TempDir, String) {
    let endpoint = if protocol == "grpc" {
        &jaeger.otlp_grpc
    } else {
        &jaeger.otlp_http
    };
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--fast-failover"];
    args.extend_from_slice(extra);
    let mut c = Cluster::start_with_env(dir.path(), &args, &env);
    c.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = c.ok(&["apply", "-f", WEB]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    c.env.clear();
    let id = the_apply_trace(jaeger);
    (c, dir, id)
}

/// The id of the one `cli.apply` trace in Jaeger, found as a user finds it: service
/// `kulisse-cli`, operation `cli.apply`.
fn the_apply_trace(jaeger: &Jaeger) -> String {
    wait_for("the cli.apply trace in Jaeger's search", || {
        let (code, body) = jaeger.get("/api/traces?service=kulisse-cli&operation=cli.apply&limit=20")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
        let ids: Vec<String> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| as_text(&t["traceID"]))
            .collect();
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!("{code}: traces {ids:?}")),
        }
    })
}

/// The proxy syncs that put the pods' addresses into a rule.
fn is_rule_with_pods(name: &str, diff: Option<&String>) -> bool {
    name == "proxy.sync_rules" && diff.is_some_and(|d| d.contains("127.64."))
}

/// Waits until Jaeger's JSON model of trace `id` has every stage, a proxy rule with the pods,
/// and the parent of every span; returns the trace (JSON) and its spans.
fn complete_trace(jaeger: &Jaeger, id: &str) -> (Value, Vec<JSpan>) {
    wait_for("every stage of the apply in Jaeger, every parent present", || {
        let trace = jaeger.trace_v1(id).ok_or("no trace yet")?;
        let spans = jaeger_spans(&trace);
        let stages: BTreeSet<&str> = spans.iter().map(JSpan::stage).collect();
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let orphans: Vec<&str> = spans
            .iter()
            .filter(|s| s.parent.as_deref().is_some_and(|p| !ids.contains(p)))
            .map(|s| s.name.as_str())
            .collect();
        let pods = spans
            .iter()
            .any(|s| is_rule_with_pods(&s.name, s.tags.get("proxy.diff")));
        if STAGES.iter().all(|s| stages.contains(s)) && pods && orphans.is_empty() {
            Ok((trace, spans))
        } else {
            Err(format!(
                "{} spans, stages {stages:?}, proxy rule with pods: {pods}, spans whose parent is missing: {orphans:?}",
                spans.len()
            ))
        }
    })
}

fn one_apply_is_one_trace_in_jaeger(protocol: &str) {
    let Some(jaeger) = Jaeger::start() else { return };
    let (_cluster, _dir, id) = traced_apply(&jaeger, protocol, &["--nodes", "3"]);
    let (trace, spans) = complete_trace(&jaeger, &id);

    // ONE trace: every span carries its id, and one root, the CLI's apply.
    assert!(spans.iter().all(|s| s.trace_id == id));
    let roots: Vec<&JSpan> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(
        roots
            .iter()
            .map(|r| (r.name.as_str(), r.service.as_str()))
            .collect::<Vec<_>>(),
        [("cli.apply", "kulisse-cli")],
        "one root"
    );

    // One process per component: Jaeger groups spans by (service.name, resource), and every
    // component reports under its own service.name.
    let processes = trace["processes"].as_object().expect("processes");
    let mut names: Vec<String> = processes.values().map(|p| as_text(&p["serviceName"])).collect();
    names.sort();
    let mut want: Vec<&str> = STAGES.iter().filter_map(|s| service_for_stage(s)).collect();
    want.sort();
    want.dedup();
    assert_eq!(names, want, "one process per component: {processes:#?}");
    for s in &spans {
        let expected = service_for_stage(s.stage());
        assert_eq!(
            Some(s.service.as_str()),
            expected,
            "span {} (stage {:?})",
            s.name,
            s.stage()
        );
    }

    // The parent chain from the proxy rule up to the apply.
    let by_id: BTreeMap<&str, &JSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let depth = |s: &JSpan| {
        let mut d = 0;
        let mut at = s;
        while let Some(p) = at.parent.as_deref().and_then(|p| by_id.get(p)) {
            d += 1;
            at = p;
        }
        d
    };
    let proxy = spans
        .iter()
        .filter(|s| is_rule_with_pods(&s.name, s.tags.get("proxy.diff")))
        .max_by_key(|s| depth(s))
        .expect("a proxy rule with the pods");
    let mut chain = vec![proxy.name.as_str()];
    let mut at = proxy;
    while let Some(parent) = at.parent.as_deref() {
        at = by_id[parent];
        chain.push(at.name.as_str());
    }
    assert_eq!(chain.last(), Some(&"cli.apply"), "chain {chain:?}");
    for hop in [
        "cli.request",
        "apiserver.request",
        "controller.reconcile",
        "scheduler.schedule_pod",
        "kubelet.sync_pod",
    ] {
        assert!(chain.contains(&hop), "the chain {chain:?} passes through {hop}");
    }

    // None of Jaeger's warnings: no unknown parents, no clock skew "adjustments".
    let warned: Vec<(String, Vec<String>)> = spans
        .iter()
        .filter(|s| !s.warnings.is_empty())
        .map(|s| (s.name.clone(), s.warnings.clone()))
        .collect();
    assert!(warned.is_empty(), "Jaeger warns about spans: {warned:#?}");
    assert!(
        trace["warnings"].as_array().is_none_or(Vec::is_empty),
        "{}",
        trace["warnings"]
    );

    // The OTLP-shaped API holds the same spans, parents and services, also without warnings.
    let v3 = jaeger.trace_v3(&id).expect("the trace from /api/v3/traces");
    let otlp = kulisse_traces::otlp_json::from_otlp_json(v3)
        .expect("OTLP JSON from /api/v3")
        .spans;
    let otlp_by_id: BTreeMap<&str, &StoredSpan> = otlp.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for s in &spans {
        let o = otlp_by_id
            .get(s.span_id.as_str())
            .unwrap_or_else(|| panic!("/api/v3 lacks span {} {}", s.name, s.span_id));
        assert_eq!(
            (&o.name, &o.parent_span_id, &o.service_name),
            (&s.name, &s.parent, &s.service)
        );
        assert!(o.attributes.keys().all(|k| !k.starts_with("@jaeger@")), "{o:?}");
    }
}

#[test]
fn an_apply_over_otlp_grpc_is_one_trace_in_jaeger() {
    let _beside_others = HEAVY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    one_apply_is_one_trace_in_jaeger("grpc");
}

#[test]
fn an_apply_over_otlp_http_protobuf_is_one_trace_in_jaeger() {
    let _beside_others = HEAVY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    one_apply_is_one_trace_in_jaeger("http/protobuf");
}

#[test]
fn links_style_is_a_trace_per_stage_in_jaeger_following_from_its_cause() {
    let _beside_others = HEAVY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(jaeger) = Jaeger::start() else { return };
    let (_cluster, _dir, apply_id) = traced_apply(&jaeger, "grpc", &["--nodes", "1", "--trace-style", "links"]);

    // The traces of each stage, as Jaeger's search finds them by service.
    let linked = wait_for("linked controller, scheduler and kubelet traces in Jaeger", || {
        let mut linked: Vec<JSpan> = Vec::new();
        for service in ["kulisse-controller-manager", "kulisse-scheduler", "kulisse-kubelet"] {
            let (code, body) = jaeger.get(&format!("/api/traces?service={service}&limit=200"))?;
            let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}"))?;
            for trace in v["data"].as_array().into_iter().flatten() {
                linked.extend(
                    jaeger_spans(trace)
                        .into_iter()
                        .filter(|s| s.parent.is_none() && !s.follows.is_empty()),
                );
            }
        }
        let stages: BTreeSet<&str> = linked.iter().map(JSpan::stage).collect();
        let deployment = linked.iter().any(|s| is_deployment_reconcile_of(s, &apply_id));
        if ["controller", "scheduler", "kubelet"]
            .iter()
            .all(|s| stages.contains(s))
            && deployment
        {
            Ok(linked)
        } else {
            Err(format!(
                "linked roots of stages {stages:?}, deployment reconcile: {deployment}"
            ))
        }
    });

    // The apply's own trace holds the CLI and the API server, no controller.
    let apply = jaeger_spans(&jaeger.trace_v1(&apply_id).expect("the apply's trace"));
    assert!(apply.iter().any(|s| s.name == "cli.apply") && apply.iter().any(|s| s.name == "apiserver.request"));
    assert!(
        !apply.iter().any(|s| s.stage() == "controller"),
        "links style: controllers start their own traces"
    );

    // Each linked trace is its own trace, and follows from a span Jaeger has.
    for s in &linked {
        assert_ne!(s.trace_id, apply_id, "{} has a trace of its own", s.name);
        for (trace, span) in &s.follows {
            let cause = jaeger
                .trace_v1(trace)
                .unwrap_or_else(|| panic!("{} follows from trace {trace}, which Jaeger does not have", s.name));
            assert!(
                jaeger_spans(&cause).iter().any(|c| &c.span_id == span),
                "{} follows from span {span} of trace {trace}, which Jaeger does not have",
                s.name
            );
        }
    }
    // The Deployment controller's first reconcile follows from the apply itself.
    let deployment = linked
        .iter()
        .find(|s| is_deployment_reconcile_of(s, &apply_id))
        .expect("a deployment reconcile following from the apply");
    // The OTLP-shaped API shows the same as a span link.
    let v3 = jaeger
        .trace_v3(&deployment.trace_id)
        .expect("the deployment's trace from /api/v3");
    let otlp = kulisse_traces::otlp_json::from_otlp_json(v3).expect("OTLP JSON").spans;
    let root = otlp
        .iter()
        .find(|s| s.span_id == deployment.span_id)
        .expect("the reconcile in /api/v3");
    assert!(root.links.iter().any(|l| l.trace_id == apply_id), "{root:#?}");
}

/// A Deployment controller's reconcile that follows from (a span of) trace `cause`.
fn is_deployment_reconcile_of(s: &JSpan, cause: &str) -> bool {
    s.tags.get("controller.name").map(String::as_str) == Some("deployment") && s.follows.iter().any(|(t, _)| t == cause)
}

/// The (name, parent, service) of each span id of an OTLP JSON file or answer.
fn shape_of_otlp(json: Value) -> BTreeMap<String, (String, Option<String>, String)> {
    kulisse_traces::otlp_json::from_otlp_json(json)
        .expect("OTLP JSON")
        .spans
        .into_iter()
        .map(|s| (s.span_id, (s.name, s.parent_span_id, s.service_name)))
        .collect()
}

fn shape_of_jaeger(spans: &[JSpan]) -> BTreeMap<String, (String, Option<String>, String)> {
    spans
        .iter()
        .map(|s| (s.span_id.clone(), (s.name.clone(), s.parent.clone(), s.service.clone())))
        .collect()
}

/// `kulisse trace ID --export FILE`, until the file holds every stage and the proxy rule with
/// the pods (the components send their spans to the control plane a moment after they end).
fn export_complete(c: &Cluster, id: &str, file: &std::path::Path) -> Value {
    let path = file.display().to_string();
    wait_for("a complete trace in the control plane", || {
        c.ok(&["trace", id, "--export", &path]);
        let json: Value = serde_json::from_str(&std::fs::read_to_string(file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let spans = kulisse_traces::otlp_json::from_otlp_json(json.clone())?.spans;
        let stages: BTreeSet<&str> = spans.iter().filter_map(|s| s.stage.as_deref()).collect();
        let pods = spans
            .iter()
            .any(|s| is_rule_with_pods(&s.name, s.attributes.get("proxy.diff")));
        if STAGES.iter().all(|s| stages.contains(s)) && pods {
            Ok(json)
        } else {
            Err(format!(
                "{} spans, stages {stages:?}, proxy rule with pods: {pods}",
                spans.len()
            ))
        }
    })
}

#[test]
fn an_exported_trace_loads_in_jaeger_as_jaeger_received_it() {
    let _beside_others = HEAVY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(jaeger) = Jaeger::start() else { return };
    let (cluster, dir, id) = traced_apply(&jaeger, "grpc", &["--nodes", "1"]);
    let file = dir.path().join("trace.json");
    let exported = export_complete(&cluster, &id, &file);
    let want = shape_of_otlp(exported);

    // What Jaeger's UI does with an uploaded OTLP file: POST it to /api/transform, which
    // answers with the trace in Jaeger's JSON model.
    let body = std::fs::read(&file).unwrap();
    let (code, answer) = jaeger.post("/api/transform", &body).expect("POST /api/transform");
    assert_eq!(code, 200, "/api/transform refused the export: {answer}");
    let answer: Value = serde_json::from_str(&answer).expect("JSON from /api/transform");
    let traces = answer["data"].as_array().expect("data: [traces]");
    assert_eq!(traces.len(), 1, "one trace: {answer}");
    assert_eq!(as_text(&traces[0]["traceID"]), id);
    let loaded = jaeger_spans(&traces[0]);
    assert_eq!(shape_of_jaeger(&loaded), want, "the file as Jaeger loads it");
    assert!(loaded.iter().all(|s| s.warnings.is_empty()), "warnings on the upload");

    // And the same as Jaeger received over OTLP from the components themselves.
    let received = wait_for("the exported spans in Jaeger", || {
        let spans = jaeger_spans(&jaeger.trace_v1(&id).ok_or("no trace")?);
        let missing = want.keys().filter(|k| !spans.iter().any(|s| &&s.span_id == k)).count();
        if missing == 0 {
            Ok(spans)
        } else {
            Err(format!("{missing} spans not in Jaeger yet"))
        }
    });
    let received: BTreeMap<_, _> = shape_of_jaeger(&received)
        .into_iter()
        .filter(|(k, _)| want.contains_key(k))
        .collect();
    assert_eq!(received, want, "the export and what Jaeger received over OTLP");
}

#[test]
fn trace_with_jaeger_draws_what_jaeger_holds_like_the_control_plane() {
    let _beside_others = HEAVY.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(jaeger) = Jaeger::start() else { return };
    let (cluster, dir, id) = traced_apply(&jaeger, "http/protobuf", &["--nodes", "1"]);
    // The control plane's copy and Jaeger's, once both hold the whole trace.
    let file = dir.path().join("trace.json");
    let local = shape_of_otlp(export_complete(&cluster, &id, &file));
    wait_for("Jaeger to hold the spans the control plane holds", || {
        let theirs = shape_of_otlp(jaeger.trace_v3(&id).ok_or("no trace")?);
        let ours = shape_of_otlp(export_complete(&cluster, &id, &file));
        if theirs == ours && ours.len() >= local.len() {
            Ok(())
        } else {
            Err(format!("control plane {} spans, Jaeger {}", ours.len(), theirs.len()))
        }
    });

    let url = jaeger.query.as_str();
    let control_plane = cluster.ok(&["trace", &id]);
    let from_jaeger = cluster.ok(&["trace", &id, "--jaeger", url]);
    let link = format!("in Jaeger: {url}/trace/{id}");
    assert_eq!(
        from_jaeger,
        format!("{control_plane}{link}\n"),
        "the same waterfall, then the link"
    );
    // `last` is the newest apply, as the control plane knows it.
    assert_eq!(cluster.ok(&["trace", "last", "--jaeger", url]), from_jaeger);

    // Clear errors: an unknown trace, a bad id, no Jaeger there.
    let unknown = cluster.kulisse(&["trace", "0123456789abcdef0123456789abcdef", "--jaeger", url]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("has no trace 0123456789abcdef0123456789abcdef"),
        "{}",
        text(&unknown.stderr)
    );
    let bad = cluster.kulisse(&["trace", "nope", "--jaeger", url]);
    assert!(
        text(&bad.stderr).contains("\"nope\" is not a trace id"),
        "{}",
        text(&bad.stderr)
    );
}

/// `kulisse ps`'s row of the process of `role` that leads now: its name.
fn leading(c: &Cluster, role: &str) -> Option<String> {
    c.ok(&["ps"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|r| r.get(1) == Some(&role) && r.last() == Some(&"leader"))
        .map(|r| r[0].to_string())
}

/// Several masters (issue 14): an apply made right after `kulisse kill --leader scheduler`
/// waits for the standby, and its trace shows the standby that took over binding its pods, every span says which copy made
/// it (`service.instance.id`), and the new leader's `scheduler.leader_election` span carries
/// the event `started leading`.
#[test]
fn after_a_failover_the_trace_names_the_scheduler_that_took_over() {
    let _alone = HEAVY.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (binary, package) in [("etcd", "etcd-server"), ("haproxy", "haproxy")] {
        let found =
            kulisse_tests::etcd::find_binary(binary, &[&format!("/usr/bin/{binary}"), &format!("/usr/sbin/{binary}")]);
        if found.is_none() {
            kulisse_tests::require::missing::<()>(&format!(
                "{binary} is not installed (apt-get install {package}): kulisse up --masters 3 needs it"
            ));
            return;
        }
    }
    let Some(jaeger) = Jaeger::start() else { return };
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_grpc.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut c = Cluster::start_with_env(dir.path(), &["--masters", "3", "--nodes", "2", "--fast-failover"], &env);
    let old = wait_for("a leading scheduler", || {
        leading(&c, "scheduler").ok_or("none yet".to_string())
    });
    // The apply comes while no scheduler leads: its pods wait for the standby that takes
    // over once the killed leader's lease has run out, and the trace shows that one finish
    // the work.
    c.ok(&["kill", "--leader", "scheduler"]);
    c.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = c.ok(&["apply", "-f", WEB]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    c.env.clear();
    let new = wait_for("a standby scheduler leading", || match leading(&c, "scheduler") {
        Some(n) if n != old => Ok(n),
        other => Err(format!("{other:?}")),
    });
    let id = the_apply_trace(&jaeger);
    let spans = wait_for("the apply's pods bound, in the trace", || {
        let spans = jaeger_spans(&jaeger.trace_v1(&id).ok_or("no trace yet")?);
        let binds = spans.iter().filter(|s| s.name == "scheduler.bind").count();
        if binds >= 2 {
            Ok(spans)
        } else {
            Err(format!("{binds} scheduler.bind spans"))
        }
    });
    for s in spans.iter().filter(|s| s.name.starts_with("scheduler.")) {
        assert_eq!(
            s.instance.as_deref(),
            Some(new.as_str()),
            "{} by {:?}, not the new leader {new}",
            s.name,
            s.instance
        );
    }
    let servers: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.service == "kulisse-apiserver")
        .filter_map(|s| s.instance.as_deref())
        .collect();
    assert!(
        !servers.is_empty() && servers.iter().all(|i| i.starts_with("apiserver-")),
        "the API servers' spans name their copy: {servers:?}"
    );
    // The change of leadership is a span of its own, found by its operation.
    let elections = wait_for("the new leader's scheduler.leader_election span", || {
        let v = jaeger.get_json("/api/traces?service=kulisse-scheduler&operation=scheduler.leader_election&limit=50");
        let spans: Vec<JSpan> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(jaeger_spans)
            .collect();
        spans
            .into_iter()
            .find(|s| s.instance.as_deref() == Some(new.as_str()) && s.events.iter().any(|e| e == "started leading"))
            .ok_or_else(|| "not yet".to_string())
    });
    println!(
        "figure: after killing {old}, {new} led ({} in the trace; API servers {servers:?}) with the span {} and the event `started leading`",
        spans.iter().filter(|s| s.name == "scheduler.bind").count(),
        elections.name
    );
}
