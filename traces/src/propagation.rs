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
    traceparent_of(&tracing::Span::current().context())
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
    fn set_parent_refuses_an_invalid_context() {
        let span = tracing::Span::none();
        assert!(!set_parent(&span, Context::new()));
        assert!(!set_parent_from_headers(&span, &HeaderMap::new()));
    }
}
