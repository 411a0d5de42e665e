//! Sending spans to the control plane: an OTLP exporter that brings no HTTP client of its own.
//!
//! Every kulisse process other than the API server (the CLI, a kubelet or scheduler started
//! as its own process) sends its finished spans to the API server's OTLP/HTTP receiver,
//! `POST /v1/traces`, so that one `kulisse apply` can be read there as a whole trace. What
//! travels is what any OpenTelemetry SDK sends to a Collector: an OTLP
//! **`ExportTraceServiceRequest`** in protobuf, with `Content-Type: application/x-protobuf`.
//! Its shape is *resource → scope → spans*:
//!
//! ```text
//! ExportTraceServiceRequest
//! ├─ ResourceSpans  resource: service.name=kulisse-cli, telemetry.sdk.language=rust, ...
//! │  └─ ScopeSpans  scope: kulisse
//! │     ├─ Span cli.apply
//! │     └─ Span cli.request
//! └─ ResourceSpans  resource: service.name=kulisse-kubelet, ...
//!    └─ ScopeSpans  scope: kulisse
//!       └─ Span kubelet.sync_pod
//! ```
//!
//! One `ResourceSpans` per `service.name`, chosen for each span by the same routing as the
//! other exporters ([`crate::routing`]): a process that runs several components still reports
//! each span under its component's name.
//!
//! ## Why the exporter does not make the HTTP request itself
//!
//! The request must reach the API server exactly as every other request of that process does:
//! over the same transport (HTTPS with the cluster's own certificate authority), with the same
//! bearer token. In Kubernetes, every component talks to the kube-apiserver through one
//! client-go REST client built from its kubeconfig, and kulisse does the same: the exporter
//! only *encodes* a batch and hands the bytes to a [`SendSpans`] function that the caller
//! supplies, usually a call to `kulisse_core::client::Client::post_otlp`.
//!
//! ## Which thread runs the send
//!
//! The OpenTelemetry SDK's batch span processor calls [`ControlPlaneExporter`] from a plain
//! thread of its own, which has no tokio runtime. The send future, however, needs one (an
//! HTTP client's sockets and timers belong to a runtime). So the exporter remembers a runtime
//! when it is built ([`SendRuntime::current_or_own`]): the caller's multi-threaded runtime if
//! there is one (the `kulisse` binary always has one), or else a small runtime of its own on a
//! dedicated thread. Each batch is spawned on that runtime and the processor's thread waits for
//! the answer (at most [`SEND_TIMEOUT`]). Because the wait happens inside the export, flushing
//! the tracer provider returns only after the API server has answered: `kulisse apply
//! --follow` can read its own spans back at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::context::{Context, FutureExt as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use prost::Message as _;

use crate::routing::{ServiceRouter, group_by_service, resource_with_service};

/// The future a [`SendSpans`] function returns: `Ok(())` once the API server accepted the
/// spans (a 2xx answer), or an error text for the learner.
pub type SendFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Delivers one encoded OTLP `ExportTraceServiceRequest` (protobuf bytes) to the control plane,
/// e.g. `POST /v1/traces` with `Content-Type: application/x-protobuf` through the process's
/// API client. Build one from an async closure with [`sender`].
pub type SendSpans = Arc<dyn Fn(Vec<u8>) -> SendFuture + Send + Sync>;

/// Turns an async function into a [`SendSpans`]:
///
/// ```
/// let send = kulisse_traces::control_plane::sender(|body: Vec<u8>| async move {
///     // e.g. client.post_otlp(body).await.map_err(|err| err.to_string())
///     let _ = body;
///     Ok(())
/// });
/// # let _ = send;
/// ```
pub fn sender<F, Fut>(send: F) -> SendSpans
where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move |body| Box::pin(send(body)))
}

/// How long one export waits for the control plane's answer. Shorter than the SDK's own
/// 5 s flush timeout, so that a slow API server shows up as this exporter's clear error.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(4);

/// The tokio runtime on which the send futures run. See the module docs.
pub struct SendRuntime {
    handle: tokio::runtime::Handle,
    /// Set when the runtime is our own: dropping it stops that runtime's thread.
    _own: Option<OwnRuntime>,
}

impl std::fmt::Debug for SendRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRuntime")
            .field("own_runtime", &self._own.is_some())
            .finish()
    }
}

/// A current-thread runtime driven by a thread of its own, until it is dropped.
struct OwnRuntime {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        // The thread ends its runtime without waiting for unfinished sends; it is not joined,
        // so dropping never blocks (also not inside async code).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl SendRuntime {
    /// The runtime of the calling code if it is a multi-threaded tokio runtime (as in the
    /// `kulisse` binary), else a small runtime of its own on a dedicated thread.
    ///
    /// A current-thread runtime of the caller is not used: its only thread is the one that
    /// calls `flush()` and blocks there, so it could not run the send it waits for.
    ///
    /// # Errors
    ///
    /// Fails if the own runtime or its thread cannot be started.
    pub fn current_or_own() -> anyhow::Result<SendRuntime> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                Ok(SendRuntime { handle, _own: None })
            }
            _ => SendRuntime::own(),
        }
    }

    /// A small current-thread runtime on a dedicated thread (`kulisse-otlp-send`).
    ///
    /// # Errors
    ///
    /// Fails if the runtime or its thread cannot be started.
    pub fn own() -> anyhow::Result<SendRuntime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime that sends spans to the control plane")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("kulisse-otlp-send".into())
            .spawn(move || {
                // A current-thread runtime runs its spawned tasks while `block_on` runs.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })
            .context("starting the thread that sends spans to the control plane")?;
        Ok(SendRuntime {
            handle,
            _own: Some(OwnRuntime { stop: Some(stop) }),
        })
    }

    /// Whether this is the exporter's own runtime (no usable runtime was current).
    pub fn is_own(&self) -> bool {
        self._own.is_some()
    }
}

/// Encodes a batch of finished spans as an OTLP `ExportTraceServiceRequest` in protobuf: one
/// `ResourceSpans` per service that `router` picks (each with `base` and that `service.name`),
/// spans grouped by instrumentation scope inside.
pub fn encode_request(router: &ServiceRouter, base: &Resource, batch: Vec<SpanData>) -> Vec<u8> {
    let mut resource_spans = Vec::new();
    for (service, spans) in group_by_service(router, batch) {
        let resource = resource_with_service(base, &service);
        resource_spans.extend(group_spans_by_resource_and_scope(
            spans,
            &ResourceAttributesWithSchema::from(&resource),
        ));
    }
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

/// The span exporter that sends each batch to the control plane through a [`SendSpans`]. See
/// the module docs.
///
/// `export` waits (blocking its thread) until the send is answered or [`SEND_TIMEOUT`] passed:
/// use it from a batch span processor, whose export thread is its own, not from async code.
pub struct ControlPlaneExporter {
    router: ServiceRouter,
    base: Resource,
    send: SendSpans,
    runtime: Arc<SendRuntime>,
    timeout: Duration,
    shut_down: AtomicBool,
}

impl std::fmt::Debug for ControlPlaneExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneExporter")
            .field("router", &self.router)
            .field("runtime", &self.runtime)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ControlPlaneExporter {
    /// An exporter that routes spans with `router`, starts every service's resource from
    /// `base` (the SDK replaces it through `set_resource` when the provider is built), and
    /// runs `send` on `runtime`.
    pub fn new(router: ServiceRouter, base: Resource, send: SendSpans, runtime: Arc<SendRuntime>) -> Self {
        ControlPlaneExporter {
            router,
            base,
            send,
            runtime,
            timeout: SEND_TIMEOUT,
            shut_down: AtomicBool::new(false),
        }
    }

    /// Waits at most `timeout` per export instead of [`SEND_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Spawns the send of `body` on the runtime and waits for its answer.
    fn deliver(&self, body: Vec<u8>, span_count: usize) -> OTelSdkResult {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let task = {
            // Call the sender inside the runtime's context, in case it creates sockets or
            // timers before its first poll.
            let _entered = self.runtime.handle.enter();
            let send = (self.send)(body);
            async move {
                let _ = answer.send(send.await);
            }
            // The send must not make spans of its own: they would be sent again, forever.
            .with_context(Context::new().with_telemetry_suppressed())
        };
        let running = self.runtime.handle.spawn(task);
        let failed = |why: String| {
            Err(OTelSdkError::InternalFailure(format!(
                "sending {span_count} span(s) to the control plane (the API server's POST \
                 /v1/traces) failed: {why}"
            )))
        };
        match answered.recv_timeout(self.timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => failed(reason),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                running.abort();
                failed(format!(
                    "no answer within {:?}; is the API server running and reachable?",
                    self.timeout
                ))
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => failed(
                "the task that sends the spans ended without an answer (its tokio runtime shut \
                 down, or the sender panicked)"
                    .to_string(),
            ),
        }
    }
}

impl SpanExporter for ControlPlaneExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let span_count = batch.len();
        let body = encode_request(&self.router, &self.base, batch);
        self.deliver(body, span_count)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Nothing is buffered here: every export waited for its answer.
        self.shut_down.store(true, Ordering::Release);
        Ok(())
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.base = resource.clone();
        self.router.set_default_from_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::STAGE_KEY;
    use crate::otlp_proto::decode_otlp_protobuf;
    use opentelemetry::KeyValue;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::Mutex;

    fn span_data(name: &str, span_id: u8, parent: Option<u8>, stage: Option<&str>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([7; 16]),
                SpanId::from_bytes([span_id; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: parent.map_or(SpanId::INVALID, |p| SpanId::from_bytes([p; 8])),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_string().into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: stage
                .map(|s| vec![KeyValue::new(STAGE_KEY, s.to_string())])
                .unwrap_or_default(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("kulisse").build(),
        }
    }

    fn batch() -> Vec<SpanData> {
        vec![
            span_data("cli.apply", 1, None, Some("cli")),
            span_data("apiserver.request", 2, Some(1), Some("apiserver")),
            span_data("store.txn", 3, Some(2), Some("store")),
            span_data("kubelet.sync_pod", 4, Some(1), Some("kubelet")),
            span_data("startup", 5, None, None),
        ]
    }

    /// Records every body it is given, after yielding to the runtime a few times (so that a
    /// caller that did not wait for the send would see nothing yet).
    fn recording_sender() -> (SendSpans, Arc<Mutex<Vec<Vec<u8>>>>) {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        let send = sender(move |body| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen.lock().map_err(|_| "poisoned".to_string())?.push(body);
                Ok(())
            }
        });
        (send, bodies)
    }

    /// Runs a future on this thread without tokio, as the SDK's batch processor does with
    /// `futures_executor::block_on` on its own thread: no reactor, no timers here.
    fn block_on<F: Future>(future: F) -> F::Output {
        use std::task::{Context as TaskContext, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = TaskContext::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    #[test]
    fn the_request_has_one_resource_per_service_and_decodes_back() {
        let router = ServiceRouter::new("kulisse-up", true);
        let base = Resource::builder_empty()
            .with_service_name("kulisse-up")
            .with_attribute(KeyValue::new("host.name", "learner"))
            .build();
        let body = encode_request(&router, &base, batch());
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("valid protobuf");
        assert_eq!(request.resource_spans.len(), 4, "cli, apiserver, kubelet, kulisse-up");

        let decoded = decode_otlp_protobuf(&body).expect("the API server's decoder reads it");
        assert_eq!(decoded.rejected, 0);
        let service_of = |name: &str| {
            decoded
                .spans
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.service_name.clone())
                .unwrap_or_else(|| panic!("span {name} is missing: {:#?}", decoded.spans))
        };
        assert_eq!(service_of("cli.apply"), "kulisse-cli");
        assert_eq!(service_of("apiserver.request"), "kulisse-apiserver");
        assert_eq!(service_of("store.txn"), "kulisse-apiserver");
        assert_eq!(service_of("kubelet.sync_pod"), "kulisse-kubelet");
        assert_eq!(service_of("startup"), "kulisse-up");
        let txn = decoded.spans.iter().find(|s| s.name == "store.txn").expect("store.txn");
        assert_eq!(txn.parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(txn.stage.as_deref(), Some("store"));
        assert_eq!(txn.scope, "kulisse");
        assert_eq!(txn.trace_id, "07".repeat(16));
        // The rest of the resource is kept for every service.
        for resource_spans in &request.resource_spans {
            let attributes = &resource_spans.resource.as_ref().expect("a resource").attributes;
            assert!(attributes.iter().any(|kv| kv.key == "host.name"), "{attributes:?}");
            assert_eq!(attributes.iter().filter(|kv| kv.key == "service.name").count(), 1);
        }
    }

    #[test]
    fn without_routing_every_span_reports_the_process_service() {
        let mut exporter = ControlPlaneExporter::new(
            ServiceRouter::new("kulisse-cli", false),
            Resource::builder_empty().build(),
            recording_sender().0,
            Arc::new(SendRuntime::own().expect("a runtime")),
        );
        // OTEL_SERVICE_NAME arrives through the provider's resource.
        exporter.set_resource(&Resource::builder_empty().with_service_name("from-env").build());
        let body = encode_request(&exporter.router, &exporter.base, batch());
        let decoded = decode_otlp_protobuf(&body).expect("valid");
        assert_eq!(decoded.spans.len(), 5);
        assert!(
            decoded.spans.iter().all(|s| s.service_name == "from-env"),
            "{decoded:#?}"
        );
    }

    #[test]
    fn export_waits_for_the_send_on_a_thread_without_a_runtime() {
        let (send, bodies) = recording_sender();
        let runtime = Arc::new(SendRuntime::current_or_own().expect("a runtime"));
        assert!(runtime.is_own(), "no runtime is current in a plain test thread");
        let exporter = ControlPlaneExporter::new(
            ServiceRouter::new("kulisse-cli", true),
            Resource::builder_empty().build(),
            send,
            runtime,
        );
        block_on(exporter.export(batch())).expect("the export succeeds");
        // An empty batch sends nothing.
        block_on(exporter.export(Vec::new())).expect("nothing to do");
        let bodies = bodies.lock().expect("not poisoned").clone();
        assert_eq!(bodies.len(), 1, "one request per batch");
        let decoded = decode_otlp_protobuf(&bodies[0]).expect("valid");
        assert_eq!(decoded.spans.len(), 5);
    }

    #[test]
    fn the_caller_runtime_is_used_when_it_is_multi_threaded() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let runtime = rt.block_on(async { SendRuntime::current_or_own() }).expect("a runtime");
        assert!(!runtime.is_own());
        let current_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let runtime = current_thread
            .block_on(async { SendRuntime::current_or_own() })
            .expect("a runtime");
        assert!(
            runtime.is_own(),
            "a current-thread runtime could not run the send during flush"
        );
    }

    #[test]
    fn failures_and_silence_become_clear_errors() {
        let runtime = Arc::new(SendRuntime::own().expect("a runtime"));
        let refusing = ControlPlaneExporter::new(
            ServiceRouter::new("kulisse-cli", false),
            Resource::builder_empty().build(),
            sender(|_| async { Err("the API server answered 401 Unauthorized".to_string()) }),
            runtime.clone(),
        );
        let err = block_on(refusing.export(batch())).expect_err("refused");
        assert!(err.to_string().contains("401 Unauthorized"), "{err}");
        assert!(err.to_string().contains("/v1/traces"), "{err}");

        let silent = ControlPlaneExporter::new(
            ServiceRouter::new("kulisse-cli", false),
            Resource::builder_empty().build(),
            sender(|_| std::future::pending()),
            runtime,
        )
        .with_timeout(Duration::from_millis(100));
        let err = block_on(silent.export(batch())).expect_err("no answer");
        assert!(err.to_string().contains("no answer within"), "{err}");

        silent.shutdown().expect("shutdown");
        assert!(matches!(
            block_on(silent.export(batch())),
            Err(OTelSdkError::AlreadyShutdown)
        ));
    }
}
