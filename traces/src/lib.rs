//! # kulisse-traces: how kulisse tells you what it is doing (OpenTelemetry)
//!
//! OpenTelemetry in ten lines:
//! 1. A **trace** is the story of one user action (`kulisse apply -f pod.yaml`) across every
//!    process it touches. It is named by a 16-byte **trace id**.
//! 2. A **span** is one timed step of that story (`apiserver.validate`): a name, an 8-byte span
//!    id, the id of its **parent** span, start/end times and key/value **attributes**.
//! 3. Spans form a tree: the CLI's `cli.apply` span is the root, everything else hangs below it.
//! 4. The **context** is "which span am I in right now"; a new span becomes a child of it.
//! 5. **Propagation** carries the context across a process boundary: the W3C `traceparent`
//!    HTTP header (`00-<trace id>-<span id>-<flags>`) lets the receiver continue the same trace.
//! 6. An **exporter** ships finished spans over **OTLP** (the OpenTelemetry protocol, protobuf
//!    over gRPC or HTTP) to a backend such as Jaeger, Grafana Tempo or an OpenTelemetry Collector.
//! 7. Each process reports under its own **`service.name`** (`kulisse-cli`, `kulisse-apiserver`,
//!    ...), so a trace view shows which component did which step.
//!
//! ## How this mirrors Kubernetes
//!
//! The kube-apiserver (KEP-647 "API Server Tracing"), the kubelet (KEP-2831) and the container
//! runtimes (containerd, CRI-O) all emit OpenTelemetry spans over OTLP, and they continue a
//! trace from an incoming W3C `traceparent` header. kulisse does the same, and adds the
//! attribute `kulisse.stage` (see [`catalogue`]) to every span so that you can colour a trace
//! by component: `cli`, `apiserver`, `store`, `controller`, `scheduler`, `kubelet`, `runtime`,
//! `proxy`.
//!
//! ## Using it
//!
//! Call [`init`] once at the start of `main` and keep the returned [`TracingGuard`] alive until
//! the end of `main`: dropping it flushes the spans that are still buffered. Spans are only
//! *exported* when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set, e.g. run `docker run -p 4318:4318 -p 16686:16686 jaegertracing/jaeger` and
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 kulisse apply -f pod.yaml`, then open
//! Jaeger's UI. Without an endpoint, trace ids are still created and propagated, so the
//! `kulisse.dev/traceparent` annotation works either way.
//!
//! The standard OpenTelemetry environment variables are honoured:
//!
//! | Variable | Effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | where to send spans; unset means "do not export" |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | `http/protobuf` (default, as the spec says) or `grpc` |
//! | `OTEL_SERVICE_NAME` | overrides the `service.name` kulisse picks |
//! | `OTEL_RESOURCE_ATTRIBUTES` | extra resource attributes, `key=value,key2=value2` |
//! | `OTEL_TRACES_EXPORTER` | `otlp` (default) or `none` |
//! | `OTEL_SDK_DISABLED` | `true` disables exporting |
//! | `OTEL_EXPORTER_OTLP_{TRACES_}HEADERS`, `..._TIMEOUT`, `..._COMPRESSION`, `OTEL_TRACES_SAMPLER{_ARG}`, `OTEL_BSP_*` | read by the OpenTelemetry SDK itself |
//!
//! Two kulisse-specific variables choose *which* `tracing` spans and events go where:
//! `RUST_LOG` filters the human-readable log on stderr (default `warn`), and
//! [`OTEL_FILTER_ENV`] (`KULISSE_TRACES_FILTER`) filters what becomes OpenTelemetry spans
//! (default [`DEFAULT_OTEL_FILTER`]: every kulisse span, `info` and above from libraries).
//!
//! ## Several components in one process
//!
//! `kulisse up` runs the API server, controller manager, scheduler, kubelets and proxy in one
//! process. With [`InitOptions::route_by_stage`], each span is still reported under its
//! component's `service.name` (`kulisse-apiserver`, `kulisse-scheduler`, ...), chosen from its
//! `kulisse.stage` attribute by the exporter wrapper in [`routing`]. `OTEL_SERVICE_NAME` (or a
//! `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) still wins: it names every span of the process.
//!
//! ## No backend needed: the local trace store
//!
//! Every process keeps its finished spans in memory ([`span_store`]), and a process started with
//! [`InitOptions::control_plane_sender`] also sends them to the API server, which keeps them
//! too: as an OTLP protobuf `ExportTraceServiceRequest` that [`control_plane`] encodes and
//! hands to a function of the caller, which posts it to `POST /v1/traces` through the
//! process's own API client (same transport, same bearer token as every other request). So the
//! API server can show a whole `kulisse apply`, CLI included, with [`view::render_waterfall`]
//! or export it for Jaeger with [`otlp_json::to_otlp_json`]. This works alongside an
//! `OTEL_EXPORTER_OTLP_*` exporter.

pub mod catalogue;
pub mod control_plane;
pub mod filter;
pub mod map;
pub mod otlp_json;
pub mod otlp_proto;
pub mod propagation;
pub mod routing;
pub mod span_store;
pub mod view;

pub use control_plane::{SendSpans, sender as control_plane_sender};
pub use filter::TraceFilter;
pub use otlp_json::to_otlp_json;
pub use propagation::{TraceStyle, background_tracing_enabled, continue_from, set_trace_style};
pub use span_store::{StoredSpan, TraceStore};
pub use view::{narrate, render_svg, render_waterfall};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    resource::EnvResourceDetector,
    resource::ResourceDetector as _,
    trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider},
};
use routing::{ExporterFactory, RoutingExporter, ServiceRouter};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::LevelFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// Name of the environment variable that filters which `tracing` spans and events are turned
/// into OpenTelemetry spans (same syntax as `RUST_LOG`, e.g. `info,kulisse_core=debug`).
pub const OTEL_FILTER_ENV: &str = "KULISSE_TRACES_FILTER";

/// The filter used when [`OTEL_FILTER_ENV`] is unset: every span from kulisse's own crates (their
/// targets start with `kulisse`), and `info` and above from the libraries kulisse uses.
pub const DEFAULT_OTEL_FILTER: &str = "info,kulisse=trace";

/// The instrumentation scope name given to kulisse's tracer (shown as "library" or "scope" in
/// trace viewers).
pub const INSTRUMENTATION_SCOPE: &str = "kulisse";

/// The OTLP transport that [`init`] chose from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC: protobuf messages over HTTP/2, usually port 4317.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies, `POST /v1/traces`, usually port 4318.
    HttpProtobuf,
}

impl std::fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// How [`init_with`] sets tracing up. Start from [`InitOptions::new`].
#[derive(Clone)]
pub struct InitOptions {
    /// The process's `service.name` (e.g. `kulisse-cli`), used for spans without a stage and
    /// for all spans unless [`InitOptions::route_by_stage`].
    pub default_service: String,
    /// Report each span under its component's service, from its `kulisse.stage` (for
    /// processes that run several components, like `kulisse up`).
    pub route_by_stage: bool,
    /// Also send every span to the control plane through this function (see
    /// [`InitOptions::control_plane_sender`]).
    pub control_plane: Option<SendSpans>,
    /// The [`TraceStyle`] for [`continue_from`]; `None`: `KULISSE_TRACE_STYLE`, else tree.
    pub trace_style: Option<TraceStyle>,
    /// Keep finished spans in this process's [`span_store::global`] store (default `true`).
    pub local_store: bool,
    /// Export over OTLP when the `OTEL_EXPORTER_OTLP_*` variables ask for it (default
    /// `true`). `false` keeps this process's spans at home whatever the environment says:
    /// for tests that check spans in the local store and must not ship them to a
    /// developer's collector.
    pub export_from_env: bool,
}

impl InitOptions {
    /// Options for a process that reports as `default_service`: no routing, no control plane,
    /// local store on.
    pub fn new(default_service: impl Into<String>) -> InitOptions {
        InitOptions {
            default_service: default_service.into(),
            route_by_stage: false,
            control_plane: None,
            trace_style: None,
            local_store: true,
            export_from_env: true,
        }
    }

    /// See [`InitOptions::route_by_stage`].
    pub fn route_by_stage(mut self, route: bool) -> InitOptions {
        self.route_by_stage = route;
        self
    }

    /// Also send every span to the control plane: each batch is encoded as an OTLP protobuf
    /// `ExportTraceServiceRequest` and handed to `send`, which delivers it to the API server's
    /// `POST /v1/traces` (`Content-Type: application/x-protobuf`), usually with
    /// `kulisse_core::client::Client::post_otlp`. Build `send` with [`control_plane_sender`].
    ///
    /// The sends run on the tokio runtime that is current when [`init_with`] is called, if it
    /// is multi-threaded (as in the `kulisse` binary), else on a small runtime of the exporter's
    /// own; see [`control_plane`]. On a current-thread runtime, give `send` an API client of
    /// its own: a pooled connection of a client shared with the application would be driven by
    /// the application's runtime, which is blocked while [`TracingGuard::flush`] waits.
    pub fn control_plane_sender(mut self, send: SendSpans) -> InitOptions {
        self.control_plane = Some(send);
        self
    }

    /// See [`InitOptions::trace_style`].
    pub fn trace_style(mut self, style: TraceStyle) -> InitOptions {
        self.trace_style = Some(style);
        self
    }

    /// See [`InitOptions::local_store`].
    pub fn local_store(mut self, keep: bool) -> InitOptions {
        self.local_store = keep;
        self
    }

    /// See [`InitOptions::export_from_env`].
    pub fn export_from_env(mut self, export: bool) -> InitOptions {
        self.export_from_env = export;
        self
    }
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("default_service", &self.default_service)
            .field("route_by_stage", &self.route_by_stage)
            .field("control_plane", &self.control_plane.as_ref().map(|_| "<sender>"))
            .field("trace_style", &self.trace_style)
            .field("local_store", &self.local_store)
            .field("export_from_env", &self.export_from_env)
            .finish()
    }
}

/// How often buffered spans are sent to the control plane (unless `OTEL_BSP_SCHEDULE_DELAY` is
/// set): short, so that `kulisse apply --follow` sees other processes' steps soon.
const CONTROL_PLANE_SCHEDULE_DELAY: Duration = Duration::from_millis(500);

/// Installs kulisse's tracing for a process that is one component, reporting as
/// `service_name`. Same as `init_with(InitOptions::new(service_name))`; see [`init_with`].
///
/// # Errors
///
/// See [`init_with`].
pub fn init(service_name: &str) -> anyhow::Result<TracingGuard> {
    init_with(InitOptions::new(service_name))
}

/// Installs kulisse's tracing for this process and returns the guard that flushes it.
///
/// What it sets up:
/// - a global `tracing` subscriber with a human-readable log layer on stderr, filtered by
///   `RUST_LOG` (default `warn`), and an OpenTelemetry layer (filtered by [`OTEL_FILTER_ENV`])
///   that turns `tracing` spans into OpenTelemetry spans;
/// - an OpenTelemetry SDK tracer provider whose `service.name` is `options.default_service`
///   unless `OTEL_SERVICE_NAME` or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` says
///   otherwise (then that name is used for every span, also with `route_by_stage`);
/// - a span processor that keeps finished spans in [`span_store::global`] (unless
///   `options.local_store` is `false`);
/// - an OTLP exporter, only if `OTEL_EXPORTER_OTLP_ENDPOINT` or
///   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (see the crate docs for the other variables)
///   and `options.export_from_env`, routed by stage when `options.route_by_stage`;
/// - an exporter to the control plane, if `options.control_plane` has a sender (see
///   [`InitOptions::control_plane_sender`]); its sends run on the tokio runtime that is
///   current here if it is multi-threaded, else on a small runtime of its own;
/// - the process-wide [`TraceStyle`] and the global text-map propagator (W3C Trace Context).
///
/// Misconfigured OpenTelemetry variables do not stop kulisse: they are reported as warnings on
/// stderr and exporting is skipped, as the OpenTelemetry specification asks.
///
/// # Errors
///
/// Fails if a global `tracing` subscriber is already installed (call `init_with` once per
/// process), or if the background runtime for the gRPC exporter cannot be started.
pub fn init_with(options: InitOptions) -> anyhow::Result<TracingGuard> {
    let service_name = options.default_service.as_str();
    let mut warnings = Vec::new();
    let Pipeline {
        provider,
        plan,
        export_runtime,
        exporting,
        exporting_to_control_plane,
    } = Pipeline::build(&options, &mut warnings);
    propagation::set_trace_style(trace_style(&options, &mut warnings));
    let tracer = provider.tracer(INSTRUMENTATION_SCOPE);

    let log_filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .from_env_lossy();
    let otel_filter = otel_filter(&mut warnings);
    let log_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not for logs redirected to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(log_filter);
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(otel_filter);

    let guard = TracingGuard {
        inner: Some(GuardInner {
            provider: provider.clone(),
            runtime: export_runtime,
        }),
        exporting,
        exporting_to_control_plane,
    };
    if let Err(err) = tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .try_init()
    {
        // Shut the provider (and its export thread) down again before reporting the error.
        drop(guard);
        return Err(anyhow::anyhow!(
            "kulisse_traces::init({service_name:?}) could not install the global tracing \
             subscriber: {err}. init must be called once per process, before anything else \
             installs a subscriber"
        ));
    }

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider);

    for warning in warnings {
        tracing::warn!(target: "kulisse_traces", "{warning}");
    }
    if let ExportPlan::Otlp { protocol, endpoint } = &plan
        && exporting
    {
        tracing::debug!(
            target: "kulisse_traces",
            "exporting spans with OTLP {protocol} to {endpoint}"
        );
    }
    Ok(guard)
}

/// The trace style of [`init_with`]: the option, else `$KULISSE_TRACE_STYLE`, else `tree`
/// (a bad value is a warning, not an error).
fn trace_style(options: &InitOptions, warnings: &mut Vec<String>) -> TraceStyle {
    match options.trace_style {
        Some(style) => style,
        None => match env_value(propagation::TRACE_STYLE_ENV) {
            Some(value) => value.parse().unwrap_or_else(|err| {
                warnings.push(format!("{}: {err}; using \"tree\"", propagation::TRACE_STYLE_ENV));
                TraceStyle::Tree
            }),
            None => TraceStyle::Tree,
        },
    }
}

/// Which `tracing` spans become OpenTelemetry spans: [`OTEL_FILTER_ENV`], else
/// [`DEFAULT_OTEL_FILTER`] (a bad filter is a warning, not an error).
fn otel_filter(warnings: &mut Vec<String>) -> EnvFilter {
    match std::env::var(OTEL_FILTER_ENV) {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(&value).unwrap_or_else(|err| {
            warnings.push(format!(
                "{OTEL_FILTER_ENV}={value:?} is not a valid filter ({err}); \
                 using the default {DEFAULT_OTEL_FILTER:?}"
            ));
            EnvFilter::new(DEFAULT_OTEL_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_OTEL_FILTER),
    }
}

/// The OpenTelemetry side of [`init_with`]: the tracer provider with its processors and
/// exporters, before anything global is installed.
struct Pipeline {
    provider: SdkTracerProvider,
    plan: ExportPlan,
    export_runtime: ExportRuntime,
    exporting: bool,
    exporting_to_control_plane: bool,
}

impl Pipeline {
    fn build(options: &InitOptions, warnings: &mut Vec<String>) -> Pipeline {
        let service_name = options.default_service.as_str();
        let plan = if options.export_from_env {
            ExportPlan::from_env(warnings)
        } else {
            ExportPlan::Disabled
        };

        let resource = resource_for(service_name);
        let env_names_service = env_names_service();
        let router = ServiceRouter::new(service_name, options.route_by_stage && !env_names_service);
        if options.route_by_stage && env_names_service {
            warnings.push(
                "OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) is set, so every \
                 span of this process reports under that name instead of one name per component"
                    .to_string(),
            );
        }

        let mut export_runtime = ExportRuntime(None);
        let mut exporter = None;
        if let ExportPlan::Otlp { protocol, endpoint } = &plan {
            match build_env_exporter(*protocol, router.clone(), resource.clone()) {
                Ok((built, runtime)) => {
                    exporter = Some(built);
                    export_runtime = ExportRuntime(runtime);
                }
                Err(err) => warnings.push(format!(
                    "spans will not be exported: could not build the OTLP {protocol} exporter \
                     for endpoint {endpoint:?}: {err:#}"
                )),
            }
        }
        let exporting = exporter.is_some();

        let mut control_plane_exporter = None;
        if let Some(send) = &options.control_plane {
            match control_plane::SendRuntime::current_or_own() {
                Ok(runtime) => {
                    control_plane_exporter = Some(control_plane::ControlPlaneExporter::new(
                        router.clone(),
                        resource.clone(),
                        send.clone(),
                        Arc::new(runtime),
                    ))
                }
                Err(err) => warnings.push(format!("spans will not be sent to the control plane: {err:#}")),
            }
        }
        let exporting_to_control_plane = control_plane_exporter.is_some();

        let mut builder = SdkTracerProvider::builder().with_resource(resource);
        if options.local_store {
            builder =
                builder.with_span_processor(span_store::StoreProcessor::new(span_store::global(), router.clone()));
        }
        if let Some(exporter) = exporter {
            builder = builder.with_batch_exporter(exporter);
        }
        if let Some(exporter) = control_plane_exporter {
            let mut config = BatchConfigBuilder::default();
            if env_value("OTEL_BSP_SCHEDULE_DELAY").is_none() {
                config = config.with_scheduled_delay(CONTROL_PLANE_SCHEDULE_DELAY);
            }
            builder = builder.with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(config.build())
                    .build(),
            );
        }
        Pipeline {
            provider: builder.build(),
            plan,
            export_runtime,
            exporting,
            exporting_to_control_plane,
        }
    }
}

/// Keeps kulisse's tracing alive; dropping it flushes and shuts down the exporter.
///
/// OpenTelemetry exporters batch spans in memory and send them every few seconds. If a process
/// exits without flushing, the last batch (often the whole trace of a short CLI command) is
/// lost. Keep the guard in a variable in `main` (`let _guard = kulisse_traces::init(...)?;`,
/// not `let _ = ...`, which drops it at once) and make sure `main` returns, also on Ctrl-C
/// (e.g. by racing the work against `tokio::signal::ctrl_c()`), so that the guard is dropped.
/// End (drop) your spans before the guard: a span that is still open is not exported.
///
/// Flushing blocks the calling thread until the export finished or timed out (the
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default; for the control plane
/// [`control_plane::SEND_TIMEOUT`]). The export itself runs on threads owned by the guard (the
/// control plane's sends on the application's multi-threaded runtime, or on a runtime of the
/// exporter's own), so it works from plain threads and from inside any tokio runtime,
/// including a single-threaded one.
#[must_use = "dropping the TracingGuard at once shuts tracing down; keep it in a variable until the end of main"]
pub struct TracingGuard {
    inner: Option<GuardInner>,
    exporting: bool,
    exporting_to_control_plane: bool,
}

struct GuardInner {
    provider: SdkTracerProvider,
    runtime: ExportRuntime,
}

impl TracingGuard {
    /// Whether spans are exported over OTLP (an endpoint was configured and the exporter was
    /// built). When `false`, spans still get trace ids and propagate, but are not sent anywhere.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Whether spans are also sent to the control plane
    /// ([`InitOptions::control_plane_sender`]).
    pub fn exporting_to_control_plane(&self) -> bool {
        self.exporting_to_control_plane
    }

    /// Sends every finished span that is still buffered, and waits for the export: when it
    /// returns `Ok`, the control plane (if any) has accepted every span that ended before the
    /// call, so the API server can show them at once.
    ///
    /// Call it from a plain thread or from a multi-threaded tokio runtime (it blocks the
    /// calling thread for as long as the export takes, at most a few seconds).
    pub fn flush(&self) -> anyhow::Result<()> {
        match &self.inner {
            Some(inner) => inner
                .provider
                .force_flush()
                .context("flushing the buffered spans (to the control plane and the OTLP endpoint) failed"),
            None => Ok(()),
        }
    }

    /// Flushes the buffered spans and shuts the tracer provider down. Spans that end after this
    /// are dropped. Dropping the guard does the same, but can only print errors to stderr.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        match self.inner.take() {
            Some(inner) => inner.shutdown(),
            None => Ok(()),
        }
    }
}

impl GuardInner {
    fn shutdown(self) -> anyhow::Result<()> {
        let result = self
            .provider
            .shutdown()
            .context("shutting down the OpenTelemetry tracer provider (final flush of spans) failed");
        // The export runtime is stopped only after the provider: the final flush needs it.
        drop(self.runtime);
        result
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take()
            && let Err(err) = inner.shutdown()
        {
            // The subscriber may be the thing that is shutting down: print directly.
            eprintln!("kulisse: warning: {err:#}");
        }
    }
}

impl std::fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingGuard")
            .field("exporting", &self.exporting)
            .field("exporting_to_control_plane", &self.exporting_to_control_plane)
            .field("shut_down", &self.inner.is_none())
            .finish()
    }
}

/// A small tokio runtime owned by the gRPC exporter.
///
/// tonic (the gRPC library) needs a tokio runtime for its connection. The SDK's batch span
/// processor exports from its own plain thread, and the application's runtime may be
/// single-threaded, busy blocking on the final flush, or already gone at exit, so the exporter
/// gets a runtime of its own. It is stopped without blocking, so dropping it is allowed even
/// inside an async context.
struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// What [`init`] decided to do about exporting, from the environment.
enum ExportPlan {
    Disabled,
    Otlp { protocol: OtlpProtocol, endpoint: String },
}

const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];
const PROTOCOL_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"];

/// Reads a variable, treating "unset", "empty" and "not UTF-8" the same: as absent.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|value| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

impl ExportPlan {
    fn from_env(warnings: &mut Vec<String>) -> ExportPlan {
        if env_value("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return ExportPlan::Disabled;
        }
        if let Some(exporters) = env_value("OTEL_TRACES_EXPORTER") {
            let mut otlp = false;
            for name in exporters.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match name.to_ascii_lowercase().as_str() {
                    "otlp" => otlp = true,
                    "none" => {}
                    other => warnings.push(format!(
                        "OTEL_TRACES_EXPORTER lists {other:?}, which kulisse does not support \
                         (expected \"otlp\" or \"none\"); ignoring it"
                    )),
                }
            }
            if !otlp {
                return ExportPlan::Disabled;
            }
        }
        let Some(endpoint) = ENDPOINT_VARS.iter().find_map(|var| env_value(var)) else {
            return ExportPlan::Disabled;
        };
        ExportPlan::Otlp {
            protocol: protocol_from_env(warnings),
            endpoint,
        }
    }
}

/// The OTLP protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, then the specification's default, `http/protobuf`.
fn protocol_from_env(warnings: &mut Vec<String>) -> OtlpProtocol {
    for var in PROTOCOL_VARS {
        let Some(value) = env_value(var) else {
            continue;
        };
        match value.to_ascii_lowercase().as_str() {
            "grpc" => return OtlpProtocol::Grpc,
            "http/protobuf" => return OtlpProtocol::HttpProtobuf,
            _ => warnings.push(format!(
                "{var}={value:?} is not supported by kulisse (expected \"grpc\" or \
                 \"http/protobuf\"); ignoring it"
            )),
        }
    }
    OtlpProtocol::HttpProtobuf
}

/// Builds the OTLP span exporter from the environment, routed by `router`. The endpoint,
/// headers, timeout and compression are read from the standard variables by
/// `opentelemetry-otlp` itself.
fn build_env_exporter(
    protocol: OtlpProtocol,
    router: ServiceRouter,
    resource: Resource,
) -> anyhow::Result<(RoutingExporter<SpanExporter>, Option<tokio::runtime::Runtime>)> {
    match protocol {
        OtlpProtocol::Grpc => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kulisse-otlp-grpc")
                .enable_all()
                .build()
                .context("starting the background runtime of the OTLP/gRPC exporter")?;
            let handle = runtime.handle().clone();
            let make: ExporterFactory<SpanExporter> = Arc::new(move || {
                // tonic spawns its connection tasks on the runtime that is current here.
                let _entered = handle.enter();
                Ok(SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .build()?)
            });
            // Dropping the runtime here on an error must not block (we may be in async code).
            match RoutingExporter::new(router, resource, make) {
                Ok(exporter) => Ok((exporter, Some(runtime))),
                Err(err) => {
                    runtime.shutdown_background();
                    Err(err)
                }
            }
        }
        OtlpProtocol::HttpProtobuf => {
            let make: ExporterFactory<SpanExporter> = Arc::new(|| {
                build_http_exporter(|| {
                    SpanExporter::builder()
                        .with_http()
                        .with_protocol(Protocol::HttpBinary)
                        .build()
                })
            });
            Ok((RoutingExporter::new(router, resource, make)?, None))
        }
    }
}

/// Runs `build` on a plain thread: the HTTP exporter uses reqwest's blocking client, which owns
/// a small runtime and refuses to be created on a thread that runs async code.
fn build_http_exporter<F>(build: F) -> anyhow::Result<SpanExporter>
where
    F: FnOnce() -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> + Send,
{
    let exporter = std::thread::scope(|scope| scope.spawn(build).join())
        .map_err(|_| anyhow::anyhow!("building the OTLP/HTTP exporter panicked"))??;
    Ok(exporter)
}

/// Whether `OTEL_SERVICE_NAME` or a `service.name` in `OTEL_RESOURCE_ATTRIBUTES` names the
/// service.
fn env_names_service() -> bool {
    env_value("OTEL_SERVICE_NAME").is_some()
        || EnvResourceDetector::new()
            .detect()
            .get(&opentelemetry::Key::from_static_str("service.name"))
            .is_some()
}

/// The resource (who is reporting) for this process.
///
/// `Resource::builder()` reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; kulisse's own
/// `service_name` is used only when neither of them names the service.
///
/// It also says which machine the process runs on, so a trace viewer knows that the spans of
/// all kulisse processes share one clock: Jaeger's query service "corrects clock skew"
/// between a parent and a child span from *different* hosts (a child that starts after its
/// parent ended, as every asynchronous controller does, looks skewed), and warns on every
/// such span. It recognises a host by the resource attributes `host.id`, `host.ip` or
/// `host.name` (its OTLP API, `/api/v3`) and by the process tag `ip` (its older JSON API,
/// `/api/traces`, which its UI reads). So every process reports `host.name` (the kernel's
/// host name) and `ip`: `127.0.0.1`, the loopback address all of a kulisse cluster talks
/// over. `OTEL_RESOURCE_ATTRIBUTES` can set either differently.
fn resource_for(service_name: &str) -> Resource {
    let detected = EnvResourceDetector::new().detect();
    let mut host = Vec::new();
    if detected
        .get(&opentelemetry::Key::from_static_str("host.name"))
        .is_none()
        && let Some(name) = host_name()
    {
        host.push(opentelemetry::KeyValue::new("host.name", name));
    }
    if detected.get(&opentelemetry::Key::from_static_str("ip")).is_none() {
        host.push(opentelemetry::KeyValue::new("ip", "127.0.0.1"));
    }
    let builder = Resource::builder().with_attributes(host);
    if env_names_service() {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_string()).build()
    }
}

/// The host name the kernel knows (`/proc/sys/kernel/hostname`), else `$HOSTNAME`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer as _};
    use std::sync::Mutex;

    /// A control plane that takes a while to answer, and remembers what it was sent.
    fn slow_control_plane() -> (SendSpans, Arc<Mutex<Vec<span_store::StoredSpan>>>) {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let received = delivered.clone();
        let send = control_plane_sender(move |body| {
            let received = received.clone();
            async move {
                // Yield to the runtime for a while: a flush that did not wait for the send
                // would return before the spans are delivered.
                for _ in 0..20 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let decoded = otlp_proto::decode_otlp_protobuf(&body)?;
                received
                    .lock()
                    .map_err(|_| "poisoned".to_string())?
                    .extend(decoded.spans);
                Ok(())
            }
        });
        (send, delivered)
    }

    /// Builds the pipeline as `init_with` does (without installing the global subscriber),
    /// ends two spans, flushes, and returns what the control plane had received by then.
    fn spans_delivered_by_flush() -> Vec<(String, String)> {
        let (send, delivered) = slow_control_plane();
        let options = InitOptions::new("kulisse-cli")
            .route_by_stage(true)
            .local_store(false)
            .control_plane_sender(send);
        let mut warnings = Vec::new();
        let pipeline = Pipeline::build(&options, &mut warnings);
        assert!(pipeline.exporting_to_control_plane, "{warnings:?}");
        let guard = TracingGuard {
            inner: Some(GuardInner {
                provider: pipeline.provider.clone(),
                runtime: pipeline.export_runtime,
            }),
            exporting: pipeline.exporting,
            exporting_to_control_plane: pipeline.exporting_to_control_plane,
        };
        let tracer = pipeline.provider.tracer(INSTRUMENTATION_SCOPE);
        for (name, stage) in [("cli.apply", "cli"), ("kubelet.sync_pod", "kubelet")] {
            let mut span = tracer.start(name);
            span.set_attribute(opentelemetry::KeyValue::new(catalogue::STAGE_KEY, stage));
            span.end();
        }
        guard.flush().expect("the flush is answered");
        let mut seen: Vec<(String, String)> = delivered
            .lock()
            .map(|spans| spans.iter().map(|s| (s.name.clone(), s.service_name.clone())).collect())
            .unwrap_or_default();
        seen.sort();
        guard.shutdown().expect("shutdown");
        seen
    }

    fn expected() -> Vec<(String, String)> {
        vec![
            ("cli.apply".into(), "kulisse-cli".into()),
            ("kubelet.sync_pod".into(), "kulisse-kubelet".into()),
        ]
    }

    #[test]
    fn flush_waits_until_the_control_plane_has_the_spans_from_a_plain_thread() {
        assert_eq!(spans_delivered_by_flush(), expected());
    }

    #[test]
    fn flush_waits_until_the_control_plane_has_the_spans_inside_a_multi_thread_runtime() {
        // As in the `kulisse` binary: init and flush inside `block_on` of a multi-thread runtime.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        assert_eq!(rt.block_on(async { spans_delivered_by_flush() }), expected());
    }

    #[test]
    fn flush_waits_until_the_control_plane_has_the_spans_inside_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        assert_eq!(rt.block_on(async { spans_delivered_by_flush() }), expected());
    }
}
