//! kulisse's tracing, end to end: real processes export real OTLP to a real receiver.
//!
//! A trace is only worth something if it arrives complete, after the process that made it has
//! exited, and if its spans link up across processes. So each test here re-runs this very test
//! binary as a **child process** (with `KULISSE_TRACES_TEST_CHILD` naming what the child should
//! do). The child calls [`kulisse_traces::init`] with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at
//! an in-process [`OtlpReceiver`], emits spans and exits normally, letting its
//! [`kulisse_traces::TracingGuard`] flush. The parent then reads what the receiver got.
//!
//! The batch span processor's timer is set to one minute in the children, so the spans can only
//! have arrived through the guard's final flush, which is what these tests are about.

use kulisse_tests::child::{self, ChildOutput, emit, output_value, runtime};
use kulisse_tests::otlp::{OtlpReceiver, ReceivedSpan, Transport};

/// Names the child's job; unset in the normal (parent) run of the tests.
const CHILD_ENV: &str = "KULISSE_TRACES_TEST_CHILD";
/// Passes a `traceparent` from the parent to a child.
const TRACEPARENT_ENV: &str = "KULISSE_TRACES_TEST_TRACEPARENT";

// ---------------------------------------------------------------------------------------------
// The tests (parent side)
// ---------------------------------------------------------------------------------------------

#[test]
fn grpc_export_arrives_when_the_guard_drops_inside_a_current_thread_runtime() {
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    check_parent_and_child_span_export(
        "grpc_export_arrives_when_the_guard_drops_inside_a_current_thread_runtime",
        Transport::Grpc,
        "spans-current-thread-runtime",
    );
}

#[test]
fn grpc_export_arrives_when_the_guard_shuts_down_without_any_runtime() {
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    check_parent_and_child_span_export(
        "grpc_export_arrives_when_the_guard_shuts_down_without_any_runtime",
        Transport::Grpc,
        "spans-no-runtime",
    );
}

#[test]
fn http_protobuf_export_arrives_when_the_guard_drops_inside_a_multi_thread_runtime() {
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    check_parent_and_child_span_export(
        "http_protobuf_export_arrives_when_the_guard_drops_inside_a_multi_thread_runtime",
        Transport::HttpProtobuf,
        "spans-multi-thread-runtime",
    );
}

#[test]
fn http_protobuf_export_arrives_when_the_guard_shuts_down_without_any_runtime() {
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    check_parent_and_child_span_export(
        "http_protobuf_export_arrives_when_the_guard_shuts_down_without_any_runtime",
        Transport::HttpProtobuf,
        "spans-no-runtime",
    );
}

/// `OTEL_SERVICE_NAME` beats the name kulisse passes to `init`, `OTEL_RESOURCE_ATTRIBUTES`
/// adds resource attributes, and the signal-specific `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` and
/// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` are used as they are.
#[test]
fn standard_otel_environment_variables_are_honoured() {
    const TEST: &str = "standard_otel_environment_variables_are_honoured";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    for transport in [Transport::Grpc, Transport::HttpProtobuf] {
        let receiver = start_receiver(&rt, transport);
        let out = run_child(
            &rt,
            TEST,
            "spans-no-runtime",
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.traces_endpoint()),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    transport.protocol_env_value().to_string(),
                ),
                // The generic variable names the other protocol: the signal-specific one wins.
                (
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                    match transport {
                        Transport::Grpc => "http/protobuf",
                        Transport::HttpProtobuf => "grpc",
                    }
                    .to_string(),
                ),
                ("OTEL_SERVICE_NAME", "renamed-by-otel-service-name".to_string()),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=kulisse-tests,kulisse.test=yes".to_string(),
                ),
            ],
        );
        let spans = receiver.spans();
        let (parent, child) = parent_and_child(&spans, &out);
        for span in [parent, child] {
            assert_eq!(span.service_name, "renamed-by-otel-service-name", "{span:#?}");
            assert_eq!(
                span.resource_attributes.get("kulisse.test").map(String::as_str),
                Some("yes"),
                "OTEL_RESOURCE_ATTRIBUTES must reach the resource: {span:#?}"
            );
            assert_eq!(
                span.resource_attributes
                    .get("deployment.environment.name")
                    .map(String::as_str),
                Some("kulisse-tests")
            );
        }
    }
}

/// Without an OTLP endpoint nothing is exported, but spans still get trace ids, and the W3C
/// `traceparent` header can be injected and extracted: the `kulisse.dev/traceparent`
/// annotation and the CLI → API server propagation work even when nobody collects traces.
#[test]
fn without_an_endpoint_trace_context_still_exists_and_propagates() {
    const TEST: &str = "without_an_endpoint_trace_context_still_exists_and_propagates";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    let out = run_child(&rt, TEST, "no-endpoint", &[]);
    let traceparent = output_value(&out, "traceparent");
    assert!(
        kulisse_traces::propagation::is_well_formed_traceparent(&traceparent),
        "the child's traceparent {traceparent:?} is not in W3C format"
    );
    assert_eq!(output_value(&out, "exporting"), "false");
    assert_eq!(
        output_value(&out, "extracted_trace_id"),
        traceparent.split('-').nth(1).unwrap_or_default(),
        "extract(inject(cx)) must give back the same trace id"
    );
}

/// `InitOptions::export_from_env(false)` keeps a process's spans at home even when the
/// environment names a collector: the in-process tests use it (`kulisse_tests::local_traces`),
/// so that their trace checks run wherever they run, without shipping test spans anywhere.
#[test]
fn export_from_env_off_keeps_spans_local_although_an_endpoint_is_set() {
    const TEST: &str = "export_from_env_off_keeps_spans_local_although_an_endpoint_is_set";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    let receiver = start_receiver(&rt, Transport::HttpProtobuf);
    let endpoint = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let out = run_child(&rt, TEST, "no-export-from-env", &endpoint);
    assert_eq!(output_value(&out, "exporting"), "false");
    assert_eq!(
        output_value(&out, "stored_spans"),
        "2",
        "cli.apply and cli.request are in the child's local store"
    );
    // The child has exited, after its guard's final flush: anything an exporter had to send
    // has been sent (and answered) by now.
    assert!(
        receiver.spans().is_empty(),
        "no span may reach the collector: {:#?}",
        receiver.spans()
    );
}

/// The CLI → API server hop: one process (service `test-cli`) injects the `traceparent` of its
/// `cli.apply` span into HTTP headers; a second process (service `test-apiserver`) continues the
/// trace from those headers. The receiver must see one trace spanning both services.
#[test]
fn traceparent_headers_continue_a_trace_in_another_process() {
    const TEST: &str = "traceparent_headers_continue_a_trace_in_another_process";
    if let Some(job) = child_job() {
        return run_child_job(&job);
    }
    let rt = runtime();
    let receiver = start_receiver(&rt, Transport::HttpProtobuf);
    let endpoint = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];

    let cli = run_child(&rt, TEST, "propagate-sender", &endpoint);
    let header = output_value(&cli, "traceparent_header");
    assert!(
        kulisse_traces::propagation::is_well_formed_traceparent(&header),
        "the injected traceparent header {header:?} is not in W3C format"
    );
    let mut receiver_env = endpoint.to_vec();
    receiver_env.push((TRACEPARENT_ENV, header.clone()));
    let apiserver = run_child(&rt, TEST, "propagate-receiver", &receiver_env);
    assert_eq!(output_value(&apiserver, "parent_set"), "true");

    let spans = receiver.spans();
    let by_name = |name: &str| -> &ReceivedSpan {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name:?} was received; got {spans:#?}"))
    };
    let apply = by_name("cli.apply");
    let request = by_name("apiserver.request");
    let decode = by_name("apiserver.decode");

    assert_eq!(apply.service_name, "test-cli");
    assert_eq!(request.service_name, "test-apiserver");
    assert_eq!(decode.service_name, "test-apiserver");
    // One trace across both processes, with the parent links of the header.
    assert_eq!(header, format!("00-{}-{}-01", apply.trace_id, apply.span_id));
    assert_eq!(request.trace_id, apply.trace_id);
    assert_eq!(decode.trace_id, apply.trace_id);
    assert_eq!(request.parent_span_id.as_deref(), Some(apply.span_id.as_str()));
    assert_eq!(decode.parent_span_id.as_deref(), Some(request.span_id.as_str()));
    assert_eq!(apply.parent_span_id, None, "cli.apply is the root of the trace");
    assert_eq!(stage(request), "apiserver");
    assert_eq!(stage(apply), "cli");
}

/// In-process check of the propagation helpers on plain OpenTelemetry contexts (no subscriber
/// needed): inject writes a W3C `traceparent`, extract reads the same trace back.
#[test]
fn inject_then_extract_keeps_the_trace_id() {
    use kulisse_traces::propagation;
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};

    let trace_id = TraceId::from_bytes(*b"kulisse-trace-01");
    let span_id = SpanId::from_bytes(*b"span-001");
    let cx = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ));
    let mut headers = http::HeaderMap::new();
    propagation::inject(&cx, &mut headers);
    let header = headers
        .get(propagation::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .expect("inject must write a traceparent header");
    assert_eq!(header, format!("00-{trace_id}-{span_id}-01"));
    assert!(propagation::is_well_formed_traceparent(header));

    let extracted = propagation::extract(&headers);
    let remote = extracted.span().span_context().clone();
    assert_eq!(remote.trace_id(), trace_id);
    assert_eq!(remote.span_id(), span_id);
    assert!(remote.is_remote() && remote.is_sampled());

    // The same text works as an object annotation.
    let stored = propagation::traceparent_of(&cx).expect("a valid context has a traceparent");
    let restored = propagation::context_from_traceparent(&stored);
    assert_eq!(restored.span().span_context().trace_id(), trace_id);
}

// ---------------------------------------------------------------------------------------------
// Parent-side helpers
// ---------------------------------------------------------------------------------------------

/// Runs a child that emits `cli.apply` → `cli.request` and checks what the receiver got.
fn check_parent_and_child_span_export(test: &str, transport: Transport, job: &str) {
    let rt = runtime();
    let receiver = start_receiver(&rt, transport);
    let service = format!("kulisse-test-{}", transport.protocol_env_value().replace('/', "-"));
    let out = run_child(
        &rt,
        test,
        job,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                transport.protocol_env_value().to_string(),
            ),
            ("KULISSE_TRACES_TEST_SERVICE", service.clone()),
        ],
    );
    // The child has exited: whatever its guard flushed is already in the receiver (the
    // receiver stores a request before it answers it).
    let spans = receiver.spans();
    let (parent, child) = parent_and_child(&spans, &out);
    assert_eq!(parent.service_name, service, "{parent:#?}");
    assert_eq!(child.service_name, service, "{child:#?}");
    assert_eq!(stage(parent), "cli");
    assert_eq!(stage(child), "cli");
    assert_eq!(
        spans.len(),
        2,
        "exactly the two spans of the child were expected: {spans:#?}"
    );
}

/// Finds the child's `cli.apply` and `cli.request` spans and checks the links between them and
/// the `traceparent` the child printed.
fn parent_and_child<'a>(spans: &'a [ReceivedSpan], out: &ChildOutput) -> (&'a ReceivedSpan, &'a ReceivedSpan) {
    let find = |name: &str| {
        spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
            panic!(
                "the receiver did not get span {name:?}; it got {spans:#?}\n\
                 child stderr:\n{}",
                out.stderr
            )
        })
    };
    let parent = find("cli.apply");
    let child = find("cli.request");
    let traceparent = output_value(out, "traceparent");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", parent.trace_id, parent.span_id),
        "the exported cli.apply span must be the one the child saw as current"
    );
    assert_eq!(child.trace_id, parent.trace_id, "both spans belong to one trace");
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "cli.request must be a child of cli.apply"
    );
    assert_eq!(parent.parent_span_id, None, "cli.apply is a root span");
    (parent, child)
}

fn stage(span: &ReceivedSpan) -> &str {
    span.attributes
        .get("kulisse.stage")
        .map(String::as_str)
        .unwrap_or("<missing kulisse.stage>")
}

fn start_receiver(rt: &tokio::runtime::Runtime, transport: Transport) -> OtlpReceiver {
    rt.block_on(async {
        match transport {
            Transport::Grpc => OtlpReceiver::start_grpc().await,
            Transport::HttpProtobuf => OtlpReceiver::start_http().await,
        }
    })
    .expect("starting the OTLP test receiver")
}

// ---------------------------------------------------------------------------------------------
// Child side: what a re-executed test binary does
// ---------------------------------------------------------------------------------------------

fn service_for_child(default: &str) -> String {
    std::env::var("KULISSE_TRACES_TEST_SERVICE").unwrap_or_else(|_| default.to_string())
}

fn run_child_job(job: &str) {
    match job {
        "spans-no-runtime" => {
            let guard = kulisse_traces::init(&service_for_child("kulisse-test")).expect("kulisse_traces::init");
            assert!(guard.exporting(), "an endpoint is set, so spans must be exported");
            emit_apply_and_request();
            guard.shutdown().expect("the final flush of the guard");
        }
        "spans-current-thread-runtime" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            rt.block_on(async {
                let guard = kulisse_traces::init(&service_for_child("kulisse-test")).expect("kulisse_traces::init");
                assert!(guard.exporting());
                emit_apply_and_request_async().await;
                // Dropped on the runtime's only thread: the flush must not need this thread.
                drop(guard);
            });
        }
        "spans-multi-thread-runtime" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a multi-thread runtime");
            rt.block_on(async {
                let guard = kulisse_traces::init(&service_for_child("kulisse-test")).expect("kulisse_traces::init");
                assert!(guard.exporting());
                emit_apply_and_request_async().await;
                drop(guard);
            });
        }
        "no-export-from-env" => keep_spans_at_home(),
        "no-endpoint" => {
            use opentelemetry::trace::TraceContextExt as _;
            let guard = kulisse_traces::init("kulisse-test").expect("kulisse_traces::init");
            emit("exporting", guard.exporting());
            let span = tracing::info_span!("cli.apply", kulisse.stage = "cli");
            let _entered = span.enter();
            let traceparent = kulisse_traces::propagation::traceparent_of_current()
                .expect("the current span has a trace context even without an exporter");
            emit("traceparent", &traceparent);
            let mut headers = http::HeaderMap::new();
            kulisse_traces::propagation::inject_current(&mut headers);
            assert_eq!(
                headers
                    .get(kulisse_traces::propagation::TRACEPARENT_HEADER)
                    .and_then(|v| v.to_str().ok()),
                Some(traceparent.as_str())
            );
            let extracted = kulisse_traces::propagation::extract(&headers);
            emit("extracted_trace_id", extracted.span().span_context().trace_id());
        }
        "propagate-sender" => {
            let guard = kulisse_traces::init("test-cli").expect("kulisse_traces::init");
            {
                let span = tracing::info_span!("cli.apply", kulisse.stage = "cli");
                let _entered = span.enter();
                let mut headers = http::HeaderMap::new();
                kulisse_traces::propagation::inject_current(&mut headers);
                let header = headers
                    .get(kulisse_traces::propagation::TRACEPARENT_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .expect("inject_current writes a traceparent header");
                emit("traceparent_header", header);
            }
            guard.shutdown().expect("the final flush of the guard");
        }
        "propagate-receiver" => {
            let guard = kulisse_traces::init("test-apiserver").expect("kulisse_traces::init");
            let traceparent = std::env::var(TRACEPARENT_ENV).expect("the parent passes a traceparent");
            let mut headers = http::HeaderMap::new();
            headers.insert(
                kulisse_traces::propagation::TRACEPARENT_HEADER,
                http::HeaderValue::from_str(&traceparent).expect("a header-safe traceparent"),
            );
            {
                let request = tracing::info_span!("apiserver.request", kulisse.stage = "apiserver");
                let parent_set = kulisse_traces::propagation::set_parent_from_headers(&request, &headers);
                emit("parent_set", parent_set);
                let _entered = request.enter();
                let decode = tracing::info_span!("apiserver.decode", kulisse.stage = "apiserver");
                let _decoding = decode.enter();
            }
            guard.shutdown().expect("the final flush of the guard");
        }
        other => panic!("unknown {CHILD_ENV} job {other:?}"),
    }
}

/// Tracing with `export_from_env(false)`: spans go to the local store only.
fn keep_spans_at_home() {
    let options = kulisse_traces::InitOptions::new("kulisse-test").export_from_env(false);
    let guard = kulisse_traces::init_with(options).expect("kulisse_traces::init_with");
    emit("exporting", guard.exporting());
    emit_apply_and_request();
    emit("stored_spans", kulisse_traces::span_store::global().len());
    guard.shutdown().expect("the final flush of the guard");
}

/// `cli.apply` with a child `cli.request`, on the current thread.
fn emit_apply_and_request() {
    let apply = tracing::info_span!("cli.apply", kulisse.stage = "cli");
    let _entered = apply.enter();
    emit(
        "traceparent",
        kulisse_traces::propagation::traceparent_of_current().expect("a current trace context"),
    );
    let request = tracing::info_span!("cli.request", kulisse.stage = "cli");
    let _inner = request.enter();
}

/// The same spans across `.await` points, the way async kulisse code creates them.
async fn emit_apply_and_request_async() {
    use tracing::Instrument as _;
    let apply = tracing::info_span!("cli.apply", kulisse.stage = "cli");
    async {
        emit(
            "traceparent",
            kulisse_traces::propagation::traceparent_of_current().expect("a current trace context"),
        );
        tokio::task::yield_now().await;
        let request = tracing::info_span!("cli.request", kulisse.stage = "cli");
        async {
            tokio::task::yield_now().await;
        }
        .instrument(request)
        .await;
    }
    .instrument(apply)
    .await;
}

/// Runs this test binary again as a child that executes only `test`, doing `job`. Spans may
/// only arrive through the guard's final flush, never through the batch timer.
fn run_child(rt: &tokio::runtime::Runtime, test: &str, job: &str, env: &[(&str, String)]) -> ChildOutput {
    let mut all = vec![("OTEL_BSP_SCHEDULE_DELAY", "60000".to_string())];
    all.extend(env.iter().cloned());
    child::run_child(rt, CHILD_ENV, test, job, &[], &all)
}

fn child_job() -> Option<String> {
    child::child_job(CHILD_ENV)
}
