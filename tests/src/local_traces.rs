//! # Tracing inside a test process
//!
//! Tests that run components in their own process (an [`crate::inproc::ApiServerFixture`]
//! with a kubelet, kube-proxy or the controllers next to it) check the traces those
//! components write: the `kulisse.dev/traceparent` annotations, the spans in the process's
//! trace store. For that the test process needs kulisse's tracing, installed once per test
//! binary by [`install`].
//!
//! The spans stay in the process ([`kulisse_traces::span_store::global`]): a developer who has
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set for their own Jaeger must not receive test spans, and
//! the checks must run all the same, in CI and everywhere else. So tracing is installed with
//! [`InitOptions::export_from_env`] off, whatever the `OTEL_EXPORTER_OTLP_*` variables say,
//! and with the tree style of trace contexts (the parent/child checks assume it), whatever
//! `KULISSE_TRACE_STYLE` says.

use std::sync::OnceLock;

use kulisse_traces::{InitOptions, TraceStyle, TracingGuard};

/// Installs kulisse's tracing for this test binary (the first call wins; later calls do
/// nothing), reporting as `service`. Panics if it cannot be installed: a test that checks
/// traces must not silently pass without them.
pub fn install(service: &str) {
    static GUARD: OnceLock<TracingGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let options = InitOptions::new(service)
            .export_from_env(false)
            .trace_style(TraceStyle::Tree);
        kulisse_traces::init_with(options)
            .unwrap_or_else(|e| panic!("installing kulisse's tracing for the test binary: {e:#}"))
    });
}
