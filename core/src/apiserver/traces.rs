//! # Traces at the API server: an OTLP receiver and a small trace API (kulisse-only)
//!
//! In a Kubernetes cluster, the kube-apiserver, kubelets and container runtimes *send* their
//! spans to an OpenTelemetry Collector or a tracing backend such as Jaeger; nothing in the
//! cluster keeps them. kulisse wants a learner to see a trace without installing anything, so
//! its API server plays that backend's role too:
//!
//! - `POST /v1/traces` is an **OTLP/HTTP receiver** (the path and protobuf body the
//!   OpenTelemetry specification defines, the same a Collector listens on at port 4318). The
//!   CLI and components that run as separate processes send their spans here (see
//!   `kulisse_traces::InitOptions::control_plane`), authenticated with the cluster's bearer
//!   token like every other request. The spans land in the process's
//!   [`kulisse_traces::TraceStore`], next to the API server's own spans.
//! - `GET /apis/kulisse.dev/v1/traces` lists the kept traces (id, root span, start, duration,
//!   span count, services), newest first.
//! - `GET /apis/kulisse.dev/v1/traces/{id}` (or `.../traces/last`, the last `kulisse apply`)
//!   returns the spans of one trace as JSON; `?format=otlp` returns OTLP JSON to load into
//!   Jaeger, `?format=waterfall&width=N` a text waterfall; `?links=true` adds the traces
//!   linked to it (see `kulisse_traces::TraceStyle::Links`).
//!
//! Requests to these paths are not traced themselves: a trace of "someone read the traces",
//! or of every export, would bury the traces a learner is looking for (an OpenTelemetry
//! Collector does not trace its own receivers either).

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use kulisse_traces::span_store::{self, TraceStore};
use serde_json::{Value, json};

use super::{Body, json_response};
use crate::objects::ApiError;

/// The OTLP/HTTP traces path.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

/// The trace API's collection path.
pub const TRACES_API_PATH: &str = "/apis/kulisse.dev/v1/traces";

/// The content type of OTLP/HTTP in binary protobuf.
pub const OTLP_PROTOBUF: &str = "application/x-protobuf";

/// Whether `path` is served by this module (checked before the Kubernetes routes).
pub fn is_trace_path(path: &str) -> bool {
    path == OTLP_TRACES_PATH
        || path
            .strip_prefix(TRACES_API_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Serves one (already authenticated) request to a trace path, from the process's store.
pub fn handle(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    handle_with(span_store::global(), method, path, query, headers, body)
}

/// [`handle`] on a given store.
pub fn handle_with(
    store: &TraceStore,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Body>, ApiError> {
    if path == OTLP_TRACES_PATH {
        return match *method {
            Method::POST => receive_otlp(store, headers, &body),
            ref m => Err(method_not_allowed(m, path, "POST")),
        };
    }
    let rest = path.strip_prefix(TRACES_API_PATH).unwrap_or("").trim_start_matches('/');
    if *method != Method::GET {
        return Err(method_not_allowed(method, path, "GET"));
    }
    if rest.is_empty() {
        return Ok(list(store));
    }
    if rest.contains('/') {
        return Err(ApiError::new(
            404,
            "NotFound",
            format!(
                "the server does not serve {path}: expected {TRACES_API_PATH} or \
                 {TRACES_API_PATH}/{{trace id|last}}"
            ),
        ));
    }
    get_trace(store, rest, query)
}

fn method_not_allowed(method: &Method, path: &str, allowed: &str) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("{method} is not supported on {path}; use {allowed}"),
    )
}

/// `POST /v1/traces`: an OTLP/HTTP export in binary protobuf.
fn receive_otlp(store: &TraceStore, headers: &HeaderMap, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type != OTLP_PROTOBUF {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "{OTLP_TRACES_PATH} accepts OTLP/HTTP in binary protobuf (Content-Type: \
                 {OTLP_PROTOBUF}), not {content_type:?}; with an OpenTelemetry SDK set \
                 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ),
        ));
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok())
        && !encoding.trim().eq_ignore_ascii_case("identity")
    {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "{OTLP_TRACES_PATH} does not accept Content-Encoding {encoding:?}; send the \
                 protobuf uncompressed (OTEL_EXPORTER_OTLP_COMPRESSION unset)"
            ),
        ));
    }
    let decoded = kulisse_traces::otlp_proto::decode_otlp_protobuf(body).map_err(ApiError::bad_request)?;
    store.insert_all(decoded.spans.iter().cloned());
    let reply = kulisse_traces::otlp_proto::encode_otlp_response(&decoded);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OTLP_PROTOBUF)
        .body(Full::new(Bytes::from(reply)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// `GET /apis/kulisse.dev/v1/traces`.
fn list(store: &TraceStore) -> Response<Body> {
    let (max_spans, max_traces) = store.limits();
    let items: Vec<Value> = store
        .recent_traces()
        .into_iter()
        .map(|summary| serde_json::to_value(summary).unwrap_or(Value::Null))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "TraceList",
            "apiVersion": "kulisse.dev/v1",
            "metadata": {},
            "limits": { "spans": max_spans, "traces": max_traces },
            "items": items,
        }),
    )
}

/// `GET /apis/kulisse.dev/v1/traces/{id|last}`.
fn get_trace(store: &TraceStore, wanted: &str, query: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let is_last = wanted.eq_ignore_ascii_case("last");
    if !is_last && !span_store::is_trace_id(wanted) {
        return Err(ApiError::bad_request(format!(
            "{wanted:?} is not a trace id: expected 32 hex digits (as in a traceparent \
             00-<trace id>-<span id>-01) or \"last\""
        )));
    }
    let Some(trace_id) = store.resolve(wanted) else {
        let (_, max_traces) = store.limits();
        return Err(ApiError::new(
            404,
            "NotFound",
            if is_last {
                "this API server holds no traces yet: run `kulisse apply` (spans from other \
                 processes arrive within a second or so)"
                    .to_string()
            } else {
                format!(
                    "this API server holds no trace {wanted}: it keeps the last {max_traces} \
                     traces, and spans from other processes arrive within a second or so"
                )
            },
        ));
    };
    let with_links = matches!(
        query.get("links").map(|v| v.to_ascii_lowercase()).as_deref(),
        Some("true" | "1")
    );
    let spans = if with_links {
        store.spans_of_linked(&trace_id)
    } else {
        store.spans_of(&trace_id)
    };
    match query.get("format").map(String::as_str).unwrap_or("") {
        "" | "json" => Ok(json_response(
            StatusCode::OK,
            &json!({
                "kind": "Trace",
                "apiVersion": "kulisse.dev/v1",
                "traceId": trace_id,
                "summary": store.summary_of(&trace_id),
                "spans": spans,
            }),
        )),
        "otlp" => Ok(json_response(StatusCode::OK, &kulisse_traces::to_otlp_json(&spans))),
        "waterfall" => {
            let width = query
                .get("width")
                .and_then(|w| w.parse::<usize>().ok())
                .unwrap_or(120)
                .clamp(40, 1000);
            let text = kulisse_traces::render_waterfall(&spans, width);
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(text)).boxed())
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
        }
        other => Err(ApiError::bad_request(format!(
            "format={other:?} is not supported: expected json (default), otlp or waterfall"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_paths_are_recognised() {
        assert!(is_trace_path("/v1/traces"));
        assert!(is_trace_path("/apis/kulisse.dev/v1/traces"));
        assert!(is_trace_path("/apis/kulisse.dev/v1/traces/last"));
        assert!(!is_trace_path("/apis/kulisse.dev/v1/tracesX"));
        assert!(!is_trace_path("/api/v1/pods"));
        assert!(!is_trace_path("/v1/traces/x"));
    }

    fn status(r: &Result<Response<Body>, ApiError>) -> u16 {
        match r {
            Ok(resp) => resp.status().as_u16(),
            Err(e) => e.code,
        }
    }

    #[test]
    fn requests_are_checked() {
        let store = TraceStore::new(10, 10);
        let q = HashMap::new();
        let h = HeaderMap::new();
        let get = |path: &str| handle_with(&store, &Method::GET, path, &q, &h, Bytes::new());
        assert_eq!(status(&get("/apis/kulisse.dev/v1/traces")), 200);
        assert_eq!(status(&get("/apis/kulisse.dev/v1/traces/last")), 404);
        assert_eq!(status(&get("/apis/kulisse.dev/v1/traces/not-an-id")), 400);
        assert_eq!(
            status(&get(&format!("/apis/kulisse.dev/v1/traces/{}", "ab".repeat(16)))),
            404
        );
        assert_eq!(status(&get("/apis/kulisse.dev/v1/traces/last/spans")), 404);
        assert_eq!(status(&get("/v1/traces")), 405);
        let post = handle_with(&store, &Method::POST, "/v1/traces", &q, &h, Bytes::new());
        assert_eq!(status(&post), 415, "no content type");
        let mut proto = HeaderMap::new();
        proto.insert(header::CONTENT_TYPE, http::HeaderValue::from_static(OTLP_PROTOBUF));
        let bad = handle_with(
            &store,
            &Method::POST,
            "/v1/traces",
            &q,
            &proto,
            Bytes::from_static(&[0xff, 0xff]),
        );
        assert_eq!(status(&bad), 400);
        let empty = handle_with(&store, &Method::POST, "/v1/traces", &q, &proto, Bytes::new());
        assert_eq!(status(&empty), 200, "an empty export is valid");
        proto.insert(header::CONTENT_ENCODING, http::HeaderValue::from_static("gzip"));
        let gz = handle_with(&store, &Method::POST, "/v1/traces", &q, &proto, Bytes::new());
        assert_eq!(status(&gz), 415);
    }
}
