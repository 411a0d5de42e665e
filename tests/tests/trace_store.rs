//! One trace from `apply` to proxy rule: per-component service names, the API server as a
//! trace store, and the two ways (tree and links) of joining asynchronous work to a trace.
//!
//! As in `traces_otlp.rs`, each test that needs `kulisse_traces::init_with` (which installs a
//! process-wide subscriber) re-runs this test binary as a **child process**
//! (`KULISSE_TRACE_STORE_CHILD` names its job). Children print `KULISSE_TEST_OUTPUT key=value`
//! lines; the parent checks what arrived at a real OTLP receiver or a real API server.

use kulisse_core::client::Client;
use kulisse_tests::child::{self, ChildOutput, emit, output_value, runtime};
use kulisse_tests::cluster::http;
use kulisse_tests::inproc::ApiServerFixture;
use kulisse_tests::otlp::{OtlpReceiver, ReceivedSpan, Transport};
use kulisse_traces::{InitOptions, StoredSpan, TraceStyle};
use serde_json::Value;

const CHILD_ENV: &str = "KULISSE_TRACE_STORE_CHILD";

/// The spans the "components" child emits: (name, stage), nested in this order.
const COMPONENT_SPANS: &[(&str, Option<&str>)] = &[
    ("apiserver.request", Some("apiserver")),
    ("store.txn", Some("store")),
    ("controller.reconcile", Some("controller")),
    ("scheduler.schedule", Some("scheduler")),
    ("kubelet.sync_pod", Some("kubelet")),
    ("runtime.create_container", Some("runtime")),
    ("proxy.sync", Some("proxy")),
    ("startup", None),
];

fn expected_service(stage: Option<&str>) -> &'static str {
    match stage {
        Some("apiserver" | "store") => "kulisse-apiserver",
        Some("controller") => "kulisse-controller-manager",
        Some("scheduler") => "kulisse-scheduler",
        Some("kubelet" | "runtime") => "kulisse-kubelet",
        Some("proxy") => "kulisse-proxy",
        _ => "kulisse-all-in-one",
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (parent side)
// ---------------------------------------------------------------------------------------------

/// `kulisse up` runs every component in one process; with `route_by_stage` each span still
/// reaches the OTLP backend under its component's `service.name`, over gRPC and over HTTP,
/// and the process's local store names the same services.
#[test]
fn one_process_reports_one_service_name_per_component() {
    const TEST: &str = "one_process_reports_one_service_name_per_component";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    for transport in [Transport::Grpc, Transport::HttpProtobuf] {
        let receiver = rt
            .block_on(async {
                match transport {
                    Transport::Grpc => OtlpReceiver::start_grpc().await,
                    Transport::HttpProtobuf => OtlpReceiver::start_http().await,
                }
            })
            .expect("starting the OTLP test receiver");
        let out = run_child(
            &rt,
            TEST,
            "components",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    transport.protocol_env_value().to_string(),
                ),
            ],
        );
        let spans = receiver.spans();
        let trace_id = output_value(&out, "trace_id");
        for (name, stage) in COMPONENT_SPANS {
            let span = find(&spans, name);
            assert_eq!(
                span.service_name,
                expected_service(*stage),
                "{transport:?}: span {name} (stage {stage:?}) has the wrong service: {span:#?}"
            );
            assert_eq!(span.trace_id, trace_id, "all spans belong to one trace");
            // The rest of the resource (SDK attributes) is kept for every service.
            assert_eq!(
                span.resource_attributes
                    .get("telemetry.sdk.language")
                    .map(String::as_str),
                Some("rust"),
                "{span:#?}"
            );
            // The local store of the child saw the same service.
            assert_eq!(
                output_value(&out, &format!("local_service.{name}")),
                expected_service(*stage)
            );
        }
        let services: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.service_name.as_str()).collect();
        assert_eq!(services.len(), 6, "{services:?}");
        // Parent links survive routing to different services.
        let request = find(&spans, "apiserver.request");
        let txn = find(&spans, "store.txn");
        assert_eq!(txn.parent_span_id.as_deref(), Some(request.span_id.as_str()));
    }
}

/// The CLI (another process) sends its spans to the API server's `POST /v1/traces` through its
/// API client (`Client::post_otlp`, the bearer token and transport of every other request);
/// once its `flush()` returned, the API server has them (what `kulisse apply --follow` relies
/// on); `GET /apis/kulisse.dev/v1/traces/last` then returns them, as JSON, as OTLP JSON and as
/// a waterfall; requests without the token are refused.
#[test]
fn the_api_server_keeps_spans_that_other_processes_send_it() {
    const TEST: &str = "the_api_server_keeps_spans_that_other_processes_send_it";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    let fixture = rt.block_on(ApiServerFixture::start());
    let auth = format!("Bearer {}", fixture.token);

    // Without the token nothing is accepted or shown.
    let (code, _) = http(
        &fixture.url,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        b"",
    );
    assert_eq!(code, 401);
    let (code, _) = http(&fixture.url, "GET", "/apis/kulisse.dev/v1/traces/last", &[], b"");
    assert_eq!(code, 401);
    // With the token, but JSON instead of protobuf: a clear refusal.
    let (code, body) = http(
        &fixture.url,
        "POST",
        "/v1/traces",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("application/x-protobuf"), "{body}");

    let out = run_child(
        &rt,
        TEST,
        "cli-to-control-plane",
        &[
            ("KULISSE_TEST_CONTROL_PLANE_URL", fixture.url.clone()),
            ("KULISSE_TEST_CONTROL_PLANE_TOKEN", fixture.token.clone()),
        ],
    );
    assert_eq!(output_value(&out, "exporting_to_control_plane"), "true");
    // Read back by the child itself right after `flush()`, before its final shutdown.
    assert_eq!(output_value(&out, "spans_after_flush"), "3", "{}", out.stderr);
    let traceparent = output_value(&out, "traceparent");
    let trace_id = traceparent.split('-').nth(1).unwrap_or_default().to_string();

    // The child has exited, so its guard's final flush has been answered by the API server.
    let (code, body) = http(
        &fixture.url,
        "GET",
        "/apis/kulisse.dev/v1/traces/last",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let trace: Value = serde_json::from_str(&body).expect("a JSON Trace");
    assert_eq!(trace["kind"], "Trace");
    assert_eq!(trace["traceId"], trace_id.as_str());
    let spans: Vec<StoredSpan> = serde_json::from_value(trace["spans"].clone()).expect("spans as StoredSpan");
    let by_name = |name: &str| -> &StoredSpan {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "no span {name} at the API server; got {spans:#?}\nchild stderr:\n{}",
                out.stderr
            )
        })
    };
    let apply = by_name("cli.apply");
    let request = by_name("cli.request");
    let kubelet = by_name("kubelet.sync_pod");
    assert_eq!(traceparent, format!("00-{}-{}-01", apply.trace_id, apply.span_id));
    assert!(apply.is_root());
    assert_eq!(request.parent_span_id.as_deref(), Some(apply.span_id.as_str()));
    assert_eq!(apply.service_name, "kulisse-cli");
    assert_eq!(
        kubelet.service_name, "kulisse-kubelet",
        "routed by stage in the sending process"
    );
    assert_eq!(request.attr("k8s.name"), Some("web"));
    assert_eq!(trace["summary"]["rootName"], "cli.apply");
    assert_eq!(trace["summary"]["spanCount"], 3);

    // The same trace by id, and in the list.
    let (code, by_id) = http(
        &fixture.url,
        "GET",
        &format!("/apis/kulisse.dev/v1/traces/{trace_id}"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&by_id).expect("JSON")["traceId"],
        trace_id.as_str()
    );
    let (code, list) = http(
        &fixture.url,
        "GET",
        "/apis/kulisse.dev/v1/traces",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&list).expect("a JSON TraceList");
    let item = list["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["traceId"] == trace_id.as_str()))
        .unwrap_or_else(|| panic!("trace {trace_id} is not listed: {list:#}"));
    assert_eq!(item["rootName"], "cli.apply");
    assert_eq!(item["services"], serde_json::json!(["kulisse-cli", "kulisse-kubelet"]));

    // OTLP JSON for Jaeger: one resource per service, hex ids.
    let (code, otlp) = http(
        &fixture.url,
        "GET",
        "/apis/kulisse.dev/v1/traces/last?format=otlp",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200);
    let otlp: Value = serde_json::from_str(&otlp).expect("OTLP JSON");
    let services: Vec<&str> = otlp["resourceSpans"]
        .as_array()
        .expect("resourceSpans")
        .iter()
        .filter_map(|r| r["resource"]["attributes"][0]["value"]["stringValue"].as_str())
        .collect();
    assert_eq!(services, ["kulisse-cli", "kulisse-kubelet"]);
    assert_eq!(
        otlp["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        trace_id.as_str()
    );

    // A waterfall, as `kulisse trace last` shows it.
    let (code, text) = http(
        &fixture.url,
        "GET",
        "/apis/kulisse.dev/v1/traces/last?format=waterfall&width=100",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(code, 200);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with(&format!("trace {trace_id} · 3 spans")), "{text}");
    assert!(lines[2].starts_with("cli.apply "), "{text}");
    assert!(
        lines[3].starts_with("├─ cli.request ") && lines[3].contains("Deployment default/web"),
        "{text}"
    );
    assert!(lines[4].starts_with("└─ kubelet.sync_pod "), "{text}");
    drop(fixture);
}

/// `continue_from` in the two styles: tree (child of the annotation's span, same trace) and
/// links (a new root span in a new trace, with a span link to it).
#[test]
fn links_style_starts_a_new_trace_that_links_to_the_cause() {
    const TEST: &str = "links_style_starts_a_new_trace_that_links_to_the_cause";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    let out = run_child(&rt, TEST, "styles", &[]);
    let cause_trace = output_value(&out, "cause_trace_id");
    let cause_span = output_value(&out, "cause_span_id");

    // Tree: same trace, the cause is the parent.
    assert_eq!(output_value(&out, "tree.continued"), "true");
    assert_eq!(output_value(&out, "tree.trace_id"), cause_trace);
    assert_eq!(output_value(&out, "tree.parent"), cause_span);
    assert_eq!(output_value(&out, "tree.links"), "");

    // Links: a new trace, a root span, one link to the cause; its child stays in the new trace.
    assert_eq!(output_value(&out, "links.continued"), "true");
    let links_trace = output_value(&out, "links.trace_id");
    assert_ne!(links_trace, cause_trace, "links style starts a new trace");
    assert_eq!(output_value(&out, "links.parent"), "<root>", "even inside another span");
    assert_eq!(output_value(&out, "links.links"), format!("{cause_trace}-{cause_span}"));
    assert_eq!(output_value(&out, "links.child_trace_id"), links_trace);
    // The store puts linked traces back together.
    assert_eq!(output_value(&out, "linked_span_count"), "4");
    // The process-wide style came from the init options.
    assert_eq!(output_value(&out, "style"), "links");
}

// ---------------------------------------------------------------------------------------------
// Parent-side helpers
// ---------------------------------------------------------------------------------------------

fn find<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("the receiver did not get span {name:?}; it got {spans:#?}"))
}

// ---------------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------------

fn run_child_job(job: &str) {
    match job {
        "components" => child_components(),
        "cli-to-control-plane" => child_cli_to_control_plane(),
        "styles" => child_styles(),
        other => panic!("unknown {CHILD_ENV} job {other:?}"),
    }
}

/// All components in one process, like `kulisse up`: nested spans of every stage.
fn child_components() {
    let guard = kulisse_traces::init_with(InitOptions::new("kulisse-all-in-one").route_by_stage(true))
        .expect("kulisse_traces::init_with");
    assert!(guard.exporting(), "an endpoint is set, so spans must be exported");
    let trace_id;
    {
        let mut entered = Vec::new();
        for (name, stage) in COMPONENT_SPANS {
            let span = match stage {
                Some(stage) => tracing::info_span!("component", otel.name = *name, kulisse.stage = *stage),
                None => tracing::info_span!("component", otel.name = *name),
            };
            entered.push(span.entered());
        }
        trace_id = kulisse_traces::propagation::traceparent_of_current()
            .and_then(|tp| tp.split('-').nth(1).map(str::to_string))
            .expect("a current trace");
        while let Some(span) = entered.pop() {
            span.exit();
        }
    }
    emit("trace_id", &trace_id);
    for span in kulisse_traces::span_store::global().spans_of(&trace_id) {
        emit(&format!("local_service.{}", span.name), &span.service_name);
    }
    guard.shutdown().expect("the final flush of the guard");
}

/// A CLI process that sends its spans to the control plane only (no OTLP endpoint), set up as
/// the `kulisse` binary does it: inside a multi-threaded tokio runtime, through a `Client`.
fn child_cli_to_control_plane() {
    let url = std::env::var("KULISSE_TEST_CONTROL_PLANE_URL").expect("the parent passes the URL");
    let token = std::env::var("KULISSE_TEST_CONTROL_PLANE_TOKEN").expect("the parent passes the token");
    let rt = runtime();
    rt.block_on(async move {
        let client = Client::new(&url, &token).expect("a client for the API server fixture");
        let sender_client = client.clone();
        let guard = kulisse_traces::init_with(
            InitOptions::new("kulisse-cli")
                .route_by_stage(true)
                .control_plane_sender(kulisse_traces::control_plane_sender(move |body| {
                    let client = sender_client.clone();
                    async move { client.post_otlp(body).await.map_err(|e| e.to_string()) }
                })),
        )
        .expect("kulisse_traces::init_with");
        emit("exporting_to_control_plane", guard.exporting_to_control_plane());
        assert!(!guard.exporting(), "no OTEL endpoint is set");
        let traceparent;
        {
            let apply = tracing::info_span!("cli.apply", kulisse.stage = "cli");
            let _apply = apply.enter();
            traceparent = kulisse_traces::propagation::traceparent_of_current().expect("a current trace");
            emit("traceparent", &traceparent);
            {
                let request = tracing::info_span!(
                    "cli.request",
                    kulisse.stage = "cli",
                    k8s.kind = "Deployment",
                    k8s.namespace = "default",
                    k8s.name = "web"
                );
                let _request = request.enter();
            }
            let kubelet = tracing::info_span!("kubelet.sync_pod", kulisse.stage = "kubelet");
            let _kubelet = kubelet.enter();
        }
        // As `kulisse apply --follow` does: flush, then read the trace back from the API server.
        guard.flush().expect("the flush to the control plane");
        let trace_id = traceparent.split('-').nth(1).unwrap_or_default();
        let (trace, _) = client
            .json(
                ::http::Method::GET,
                &format!("/apis/kulisse.dev/v1/traces/{trace_id}"),
                None,
                None,
            )
            .await
            .expect("the API server has the trace right after flush()");
        emit("spans_after_flush", trace["spans"].as_array().map_or(0, Vec::len));
        guard.shutdown().expect("the final flush to the control plane");
    });
}

/// Tree and links style of `continue_from`, read back from the local store.
fn child_styles() {
    let guard =
        kulisse_traces::init_with(InitOptions::new("kulisse-controller-manager").trace_style(TraceStyle::Links))
            .expect("kulisse_traces::init_with");
    emit("style", kulisse_traces::propagation::trace_style());
    let store = kulisse_traces::span_store::global();

    // The write that caused the work (its traceparent would be in the object's annotation).
    let cause = tracing::info_span!("apiserver.request", kulisse.stage = "apiserver");
    let traceparent = {
        let _entered = cause.enter();
        kulisse_traces::propagation::traceparent_of_current().expect("a current trace")
    };
    drop(cause);
    let mut parts = traceparent.split('-').skip(1);
    let (cause_trace, cause_span) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    emit("cause_trace_id", &cause_trace);
    emit("cause_span_id", &cause_span);

    let describe = |prefix: &str, name: &str, continued: bool| {
        let span = store
            .recent_traces()
            .iter()
            .flat_map(|t| store.spans_of(&t.trace_id))
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("span {name} is not in the local store"));
        emit(&format!("{prefix}.continued"), continued);
        emit(&format!("{prefix}.trace_id"), &span.trace_id);
        emit(
            &format!("{prefix}.parent"),
            span.parent_span_id.as_deref().unwrap_or("<root>"),
        );
        emit(
            &format!("{prefix}.links"),
            span.links
                .iter()
                .map(|l| format!("{}-{}", l.trace_id, l.span_id))
                .collect::<Vec<_>>()
                .join(","),
        );
        span
    };

    // Tree style, explicitly.
    let tree = tracing::info_span!("controller.reconcile.tree", kulisse.stage = "controller");
    let continued = kulisse_traces::propagation::continue_from_with_style(&tree, &traceparent, TraceStyle::Tree);
    drop(tree.entered());
    describe("tree", "controller.reconcile.tree", continued);

    // Links style (the process-wide style), created inside an unrelated span.
    let worker = tracing::info_span!("controller.worker", kulisse.stage = "controller");
    let _worker = worker.enter();
    let linked = tracing::info_span!("controller.reconcile", kulisse.stage = "controller");
    let continued = kulisse_traces::continue_from(&linked, &traceparent);
    {
        let _linked = linked.enter();
        let child = tracing::info_span!("store.txn", kulisse.stage = "store");
        drop(child.entered());
    }
    drop(linked);
    let reconcile = describe("links", "controller.reconcile", continued);
    let child_trace = store
        .spans_of(&reconcile.trace_id)
        .into_iter()
        .find(|s| s.name == "store.txn")
        .map(|s| s.trace_id)
        .unwrap_or_default();
    emit("links.child_trace_id", child_trace);
    // cause + tree (one trace) and reconcile + its child (the linked trace).
    emit("linked_span_count", store.spans_of_linked(&reconcile.trace_id).len());
    drop(_worker);
    guard.shutdown().expect("shutdown");
}

/// Runs this test binary again as a child that executes only `test`, doing `job`.
fn run_child(rt: &tokio::runtime::Runtime, test: &str, job: &str, env: &[(&str, String)]) -> ChildOutput {
    child::run_child(rt, CHILD_ENV, test, job, &[], env)
}

fn child_job() -> Option<String> {
    child::child_job(CHILD_ENV)
}
