//! Carrying a trace from one process to the next: W3C Trace Context.
//!
//! When the CLI sends a request to the API server, the API server's spans must join the CLI's
//! trace instead of starting a new one. The CLI therefore writes the identity of its current
//! span into an HTTP header, and the API server reads it back. The header format is the W3C
//! [Trace Context](https://www.w3.org/TR/trace-context/) standard, the same that the
//! kube-apiserver, the kubelet and containerd understand:
//!
//! ```text
//! traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!              ^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^^ ^^
//!              |  trace id (16 bytes, hex)         parent span id   flags (01 = sampled)
//!              version
//! ```
//!
//! An optional `tracestate` header carries vendor-specific data and is passed along unchanged.
//!
//! Writing the header is called **injecting** the context, reading it is **extracting**. The
//! same text can be stored elsewhere than in a header: kulisse stores it in the object
//! annotation [`TRACEPARENT_ANNOTATION`], so that a controller or kubelet that acts on the object
//! much later can link its work to the `kulisse apply` that caused it.
//!
//! These functions always use W3C Trace Context (they do not depend on the global propagator),
//! so they also work in tests and tools that never called [`crate::init`]. They never panic:
//! a missing or malformed `traceparent` simply yields a context without a remote parent.

use std::collections::HashMap;

use http::HeaderMap;
use opentelemetry::{
    Context,
    propagation::TextMapPropagator as _,
    trace::{SpanContext, TraceContextExt as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The HTTP header (and text-map key) that carries the trace id and parent span id.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The HTTP header that carries vendor-specific trace data alongside `traceparent`.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The object annotation in which kulisse remembers the `traceparent` of the request that
/// created or last changed an object.
pub const TRACEPARENT_ANNOTATION: &str = "kulisse.dev/traceparent";

/// Writes `cx`'s span identity into `headers` as `traceparent` (and `tracestate` if any).
///
/// Does nothing when `cx` holds no valid span (for example when tracing is not initialised).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// Reads `traceparent`/`tracestate` from `headers` into a context whose span is the remote
/// parent. Missing or malformed headers give a context without a valid span; check with
/// `cx.span().span_context().is_valid()` or use [`remote_span_context`].
pub fn extract(headers: &HeaderMap) -> Context {
    let well_formed = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_well_formed_traceparent);
    if !well_formed {
        return Context::new();
    }
    TraceContextPropagator::new().extract_with_context(&Context::new(), &HeaderExtractor(headers))
}

/// Injects the context of the current `tracing` span (the innermost entered span).
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current().context(), headers);
}

/// Makes `span` a child of the remote span named in `headers`, as the API server does for
/// every request it receives.
///
/// Call it right after creating the span and before entering it: once a span has started, its
/// parent can no longer change. Returns `true` if the headers carried a valid `traceparent`
/// and the parent was set; `false` means the span stays a root span (or child of the current
/// span) of a new trace.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HeaderMap) -> bool {
    set_parent(span, extract(headers))
}

/// The `traceparent` text of the current `tracing` span, e.g. to store it in the
/// [`TRACEPARENT_ANNOTATION`]. `None` when there is no current span with a valid context.
pub fn traceparent_of_current() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_sampled() {
        // Untraced (background) work leaves no trace context behind.
        return None;
    }
    traceparent_of(&cx)
}

/// Will `span` reach a trace? False for work that belongs to no trace (created inside
/// [`untraced_unless`]`(false)`) and when no OpenTelemetry layer is installed.
pub fn is_sampled(span: &tracing::Span) -> bool {
    span.context().span().span_context().is_sampled()
}

/// Has OpenTelemetry decided that `span` goes to no trace? True for work created inside
/// [`untraced_unless`]`(false)`; false for a sampled span, and when no OpenTelemetry layer is
/// installed (another subscriber, a test's say, may record everything).
///
/// OpenTelemetry's advice for costly attributes and events is to compute them only when the
/// span is recording; this is the check. A span that is not sampled costs its layer the same
/// work as one that is (it is built, then dropped when it ends), so a component that adds
/// many details only a reader of the trace would see (the scheduler's verdict per node and
/// plugin) asks first.
pub fn is_known_unsampled(span: &tracing::Span) -> bool {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid() && !sc.is_sampled()
}

/// A context whose span is *not sampled*: spans started under it, and all their
/// descendants, are recorded by no one.
pub fn unsampled_context() -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let unsampled = SpanContext::new(
        TraceId::from_bytes(rand_bytes::<16>()),
        SpanId::from_bytes(rand_bytes::<8>()),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(unsampled)
}

/// Keep the spans created while the returned guard lives (and their descendants) out of
/// the traces, unless `traced` is true. Create the root span of a piece of background work
/// (a heartbeat, a resync, a request that belongs to no trace) inside it:
///
/// ```text
/// let span = { let _g = untraced_unless(traced); info_span!("controller.reconcile") };
/// ```
///
/// The sampling decision of a span is made when it starts, and children inherit it; that
/// is why the unsampled parent must be in place *before* the span exists.
pub fn untraced_unless(traced: bool) -> Option<opentelemetry::ContextGuard> {
    (!traced).then(|| unsampled_context().attach())
}

/// Should work caused by a change carrying `traceparent` be traced? Yes if the change
/// belongs to a trace, or if background tracing is switched on.
pub fn should_trace(traceparent: Option<&str>) -> bool {
    traceparent.is_some_and(is_well_formed_traceparent) || background_tracing_enabled()
}

/// Non-zero pseudo-random bytes for ids that are never exported (no rand dependency needed).
fn rand_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [1u8; N];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6b_756c_6973_7365);
        let v = h.finish().to_le_bytes();
        for (o, b) in chunk.iter_mut().zip(v) {
            *o = b | 1;
        }
    }
    out
}

/// Continue the trace in `traceparent` if there is one. Create `span` inside
/// [`untraced_unless`]`(`[`should_trace`]`(traceparent))` so that work belonging to no trace
/// stays out of the traces.
pub fn continue_if_any(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        continue_from(span, tp);
    }
}

/// The `traceparent` text of `cx`'s span; `None` when `cx` holds no valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT_HEADER)
}

/// The context described by a `traceparent` text (e.g. read from the
/// [`TRACEPARENT_ANNOTATION`]). A malformed text gives a context without a valid span.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    if !is_well_formed_traceparent(traceparent) {
        return Context::new();
    }
    let carrier = HashMap::from([(TRACEPARENT_HEADER.to_string(), traceparent.trim().to_string())]);
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// Whether `traceparent` follows the W3C format exactly: `version-traceid-parentid-flags` with
/// lowercase hex fields of 2, 32, 16 and 2 digits, a version other than `ff`, and neither id
/// all zeros. Version `00` has exactly these four fields; later versions may append more.
///
/// The OpenTelemetry Rust SDK is more lenient (it accepts, for example, a trace id with too
/// few digits); kulisse checks the exact format first, as the Go implementation used by
/// Kubernetes does, so that a malformed header starts a new trace instead of a wrong one.
pub fn is_well_formed_traceparent(traceparent: &str) -> bool {
    fn lower_hex(field: &str, len: usize) -> bool {
        field.len() == len && field.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let [version, trace_id, span_id, flags, rest @ ..] = parts.as_slice() else {
        return false;
    };
    lower_hex(version, 2)
        && *version != "ff"
        && (*version != "00" || rest.is_empty())
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(span_id, 16)
        && span_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2)
}

/// Makes `span` a child of the span in `cx` if `cx` holds a valid span; see
/// [`set_parent_from_headers`] for the rules and the meaning of the result.
pub fn set_parent(span: &tracing::Span, cx: Context) -> bool {
    if !cx.span().span_context().is_valid() {
        return false;
    }
    match span.set_parent(cx) {
        Ok(()) => true,
        Err(err) => {
            tracing::debug!(
                target: "kulisse_traces",
                "could not attach the remote trace parent to span {:?}: {err}",
                span.metadata().map(|m| m.name()).unwrap_or("<disabled>")
            );
            false
        }
    }
}

/// How a component that acts *later*, on its own (a controller, the scheduler, a kubelet),
/// joins the trace of the write that caused its work.
///
/// - [`TraceStyle::Tree`] (kulisse's default): the work becomes a **child** of the span named
///   in the `kulisse.dev/traceparent` annotation, so one `kulisse apply` is one trace, from
///   the CLI to the proxy rule. Easy to read, but the trace "ends" only when the last
///   controller or kubelet is done, possibly minutes later.
/// - [`TraceStyle::Links`]: the work starts a **new trace** (a new root span) with a span
///   **link** to that span. This is what the Kubernetes enhancement proposals for tracing
///   suggest for asynchronous, level-triggered work: each stage is its own trace, and the
///   links let a viewer (Jaeger shows them as `FOLLOWS_FROM` references) jump between them.
///   [`crate::span_store::TraceStore::spans_of_linked`] puts them together again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TraceStyle {
    /// One trace, parent → child across components.
    #[default]
    Tree,
    /// One trace per asynchronous stage, joined by span links.
    Links,
}

impl TraceStyle {
    /// `tree` or `links`.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceStyle::Tree => "tree",
            TraceStyle::Links => "links",
        }
    }
}

impl std::fmt::Display for TraceStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TraceStyle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tree" => Ok(TraceStyle::Tree),
            "links" | "link" => Ok(TraceStyle::Links),
            other => Err(format!("unknown trace style {other:?}: expected \"tree\" or \"links\"")),
        }
    }
}

/// The environment variable that chooses the [`TraceStyle`] when [`crate::init_with`] is not
/// told: `tree` or `links`.
pub const TRACE_STYLE_ENV: &str = "KULISSE_TRACE_STYLE";

/// The environment variable that turns on spans for background work (heartbeats, lease
/// renewals, periodic resyncs): `1` or `true`. See [`background_tracing_enabled`].
pub const TRACE_BACKGROUND_ENV: &str = "KULISSE_TRACE_BACKGROUND";

static TRACE_STYLE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
/// 0: not decided yet (read the environment), 1: off, 2: on.
static BACKGROUND: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the process-wide [`TraceStyle`] used by [`continue_from`].
pub fn set_trace_style(style: TraceStyle) {
    let value = match style {
        TraceStyle::Tree => 0,
        TraceStyle::Links => 1,
    };
    TRACE_STYLE.store(value, std::sync::atomic::Ordering::Relaxed);
}

/// The process-wide [`TraceStyle`] (default [`TraceStyle::Tree`]).
pub fn trace_style() -> TraceStyle {
    match TRACE_STYLE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => TraceStyle::Links,
        _ => TraceStyle::Tree,
    }
}

/// Whether components should trace their background work: heartbeats, lease renewals, resyncs
/// that find nothing to do. Off by default, because such spans bury the traces a learner is
/// looking for; on with `KULISSE_TRACE_BACKGROUND=1` (or [`set_background_tracing`]).
pub fn background_tracing_enabled() -> bool {
    use std::sync::atomic::Ordering;
    match BACKGROUND.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var(TRACE_BACKGROUND_ENV)
                .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
                .unwrap_or(false);
            BACKGROUND.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Overrides `KULISSE_TRACE_BACKGROUND` for this process.
pub fn set_background_tracing(enabled: bool) {
    BACKGROUND.store(if enabled { 2 } else { 1 }, std::sync::atomic::Ordering::Relaxed);
}

/// Joins `span` to the work named by `traceparent` (e.g. the object's
/// [`TRACEPARENT_ANNOTATION`]) in the process's [`TraceStyle`]: as its child ([`TraceStyle::Tree`])
/// or as a new root span with a link to it ([`TraceStyle::Links`]).
///
/// Call it right after creating the span and before entering it (or instrumenting a future
/// with it). Returns `false`, and leaves the span alone, when `traceparent` is malformed or no
/// OpenTelemetry layer is installed.
pub fn continue_from(span: &tracing::Span, traceparent: &str) -> bool {
    continue_from_with_style(span, traceparent, trace_style())
}

/// [`continue_from`] with an explicit style.
pub fn continue_from_with_style(span: &tracing::Span, traceparent: &str, style: TraceStyle) -> bool {
    let cx = context_from_traceparent(traceparent);
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return false;
    }
    match style {
        TraceStyle::Tree => set_parent(span, cx),
        TraceStyle::Links => {
            // An empty context as the parent makes the span a root: a new trace id, even if
            // the span was created inside another span.
            if span.set_parent(Context::new()).is_err() {
                return false;
            }
            span.add_link(remote);
            true
        }
    }
}

/// The remote span context carried by `headers`, if they carry a valid `traceparent`.
pub fn remote_span_context(headers: &HeaderMap) -> Option<SpanContext> {
    let cx = extract(headers);
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn sample_context() -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("valid hex"),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(span_context)
    }

    #[test]
    fn inject_writes_w3c_traceparent_and_extract_reads_it_back() {
        let mut headers = HeaderMap::new();
        inject(&sample_context(), &mut headers);
        assert_eq!(
            headers.get(TRACEPARENT_HEADER).and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = remote_span_context(&headers).expect("a valid remote parent");
        assert_eq!(back.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(back.span_id().to_string(), "00f067aa0ba902b7");
        assert!(back.is_remote());
        assert!(back.is_sampled());
    }

    #[test]
    fn traceparent_text_round_trips() {
        let text = traceparent_of(&sample_context()).expect("valid context has a traceparent");
        let cx = context_from_traceparent(&text);
        assert_eq!(traceparent_of(&cx).as_deref(), Some(text.as_str()));
    }

    #[test]
    fn malformed_or_missing_traceparent_gives_no_parent() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // all-zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // all-zero span id
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",   // short trace id
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // bad version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ünïcödé",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // v00 has 4 fields
        ] {
            assert!(!is_well_formed_traceparent(bad), "{bad:?} is malformed");
            let cx = context_from_traceparent(bad);
            assert!(
                !cx.span().span_context().is_valid(),
                "{bad:?} must not give a valid parent"
            );
            assert_eq!(traceparent_of(&cx), None);
        }
        assert!(remote_span_context(&HeaderMap::new()).is_none());
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT_HEADER,
            http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01"),
        );
        assert!(remote_span_context(&headers).is_none());
    }

    #[test]
    fn well_formed_traceparents_are_accepted() {
        assert!(is_well_formed_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_well_formed_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        // A future version may carry more fields; the first four are still understood.
        assert!(is_well_formed_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"
        ));
    }

    #[test]
    fn nothing_is_injected_without_a_valid_span() {
        let mut headers = HeaderMap::new();
        inject(&Context::new(), &mut headers);
        assert!(headers.is_empty());
        // No subscriber is installed in unit tests, so there is no current span either.
        inject_current(&mut headers);
        assert!(headers.is_empty());
        assert_eq!(traceparent_of_current(), None);
    }

    #[test]
    fn trace_styles_parse_and_continue_from_refuses_bad_input() {
        assert_eq!("links".parse::<TraceStyle>(), Ok(TraceStyle::Links));
        assert_eq!(" Tree ".parse::<TraceStyle>(), Ok(TraceStyle::Tree));
        assert!("forest".parse::<TraceStyle>().is_err());
        assert_eq!(TraceStyle::default(), TraceStyle::Tree);
        let span = tracing::Span::none();
        assert!(!continue_from(&span, "garbage"));
        // Without an OpenTelemetry layer nothing can be attached.
        for style in [TraceStyle::Tree, TraceStyle::Links] {
            assert!(!continue_from_with_style(
                &span,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                style
            ));
        }
    }

    #[test]
    fn only_an_opentelemetry_decision_makes_a_span_known_unsampled() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        // No subscriber: nothing is known, so a component records its details.
        assert!(!is_known_unsampled(&tracing::info_span!("no.subscriber")));
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let background = {
            let _untraced = untraced_unless(false);
            tracing::info_span!("background")
        };
        assert!(is_known_unsampled(&background));
        assert!(!is_sampled(&background));
        let caused = tracing::info_span!("caused");
        assert!(continue_from(
            &caused,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_known_unsampled(&caused));
        assert!(is_sampled(&caused));
    }

    #[test]
    fn set_parent_refuses_an_invalid_context() {
        let span = tracing::Span::none();
        assert!(!set_parent(&span, Context::new()));
        assert!(!set_parent_from_headers(&span, &HeaderMap::new()));
    }
}

/// An `info_span!` for work *caused by a change*: it continues the trace named by the
/// change's traceparent (as a child, or a linked root in the links style), and when the
/// change belongs to no trace it is started under an unsampled parent, so background work
/// records nothing (unless `KULISSE_TRACE_BACKGROUND=1`). Every component that reacts to an
/// object — controllers, the scheduler, kubelets, kube-proxy — starts its spans this way:
///
/// ```text
/// let span = kulisse_traces::caused_span!(traceparent.as_deref(), "kubelet.sync_pod", "kulisse.stage" = "kubelet");
/// ```
#[macro_export]
macro_rules! caused_span {
    ($traceparent:expr, $($span:tt)+) => {{
        let traceparent: Option<&str> = $traceparent;
        let span = {
            let _untraced = $crate::propagation::untraced_unless($crate::propagation::should_trace(traceparent));
            ::tracing::info_span!($($span)+)
        };
        $crate::propagation::continue_if_any(&span, traceparent);
        span
    }};
}
