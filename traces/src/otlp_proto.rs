//! # OTLP over protobuf: what an exporter sends, as the trace store keeps it
//!
//! OpenTelemetry's wire protocol (OTLP) carries spans as an `ExportTraceServiceRequest`:
//! resources (one per process, with its `service.name`) → instrumentation scopes → spans, with
//! ids as raw bytes and attributes as typed `AnyValue`s. kulisse's API server receives such
//! requests over OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf`) from the processes
//! that do not hold the trace store themselves, exactly as an OpenTelemetry Collector or
//! Jaeger does, and this module turns them into [`StoredSpan`]s. Its sibling
//! [`crate::otlp_json`] goes the other way, for `kulisse trace --export`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue as ProtoKeyValue, any_value},
    resource::v1::Resource,
    trace::v1::Span,
};
use prost::Message as _;

use crate::catalogue::STAGE_KEY;
use crate::span_store::{SpanStatusCode, StoredEvent, StoredLink, StoredSpan};

/// Spans decoded from an OTLP export request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedSpans {
    /// The spans that could be read.
    pub spans: Vec<StoredSpan>,
    /// How many spans were rejected (invalid trace or span id).
    pub rejected: usize,
    /// Why the first rejected span was rejected.
    pub first_error: Option<String>,
}

/// Decodes the body of an OTLP/HTTP `POST /v1/traces` (`application/x-protobuf`, an
/// `ExportTraceServiceRequest`) into spans. A span whose ids are not 16/8 bytes or are all
/// zero is rejected (counted in [`DecodedSpans::rejected`]), as the OTLP spec asks.
///
/// # Errors
///
/// Returns a message for a learner when the body is not such a protobuf message.
pub fn decode_otlp_protobuf(body: &[u8]) -> Result<DecodedSpans, String> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|err| {
        format!(
            "the body is not an OTLP ExportTraceServiceRequest in protobuf encoding ({err}); \
             OTLP/HTTP exporters send that with Content-Type application/x-protobuf"
        )
    })?;
    Ok(spans_from_otlp(request))
}

/// The protobuf body of the answer to an OTLP/HTTP export: an `ExportTraceServiceResponse`,
/// with a `partial_success` when some spans were rejected.
pub fn encode_otlp_response(decoded: &DecodedSpans) -> Vec<u8> {
    let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
        error_message: decoded.first_error.clone().unwrap_or_default(),
    });
    ExportTraceServiceResponse { partial_success }.encode_to_vec()
}

/// Flattens an OTLP export request (resource → scope → spans) into [`StoredSpan`]s. The
/// service name is the resource's `service.name` (`unknown_service` if absent, as the
/// OpenTelemetry specification names it).
pub fn spans_from_otlp(request: ExportTraceServiceRequest) -> DecodedSpans {
    let mut out = DecodedSpans::default();
    for resource_spans in request.resource_spans {
        let service_name = service_name_of(resource_spans.resource.as_ref());
        let instance = resource_attr(resource_spans.resource.as_ref(), SERVICE_INSTANCE_KEY);
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.map(|s| s.name).unwrap_or_default();
            for span in scope_spans.spans {
                match stored_span(span, &service_name, &scope) {
                    Ok(mut span) => {
                        if let Some(instance) = &instance {
                            span.attributes
                                .entry(SERVICE_INSTANCE_KEY.to_string())
                                .or_insert_with(|| instance.clone());
                        }
                        out.spans.push(span)
                    }
                    Err(why) => out.reject(why),
                }
            }
        }
    }
    out
}

/// The resource attribute that says which copy of a component a process is (`scheduler-2`
/// under `kulisse up --masters 3`). The trace store keeps it among each span's attributes,
/// so that a drawing can say which copy did a step.
pub const SERVICE_INSTANCE_KEY: &str = "service.instance.id";

/// The resource's `service.name`, or `unknown_service`.
fn service_name_of(resource: Option<&Resource>) -> String {
    resource_attr(resource, "service.name").unwrap_or_else(|| "unknown_service".to_string())
}

/// A resource attribute as text, if present and not empty.
fn resource_attr(resource: Option<&Resource>, key: &str) -> Option<String> {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == key))
        .map(|kv| render_any(kv.value.as_ref()))
        .filter(|value| !value.is_empty())
}

/// One OTLP span as the trace store keeps it, or why it is rejected (a trace or span id that
/// is not 16/8 bytes, or all zero).
fn stored_span(span: Span, service_name: &str, scope: &str) -> Result<StoredSpan, String> {
    let Some(trace_id) = id_hex(&span.trace_id, 16) else {
        return Err(format!(
            "span {:?} has trace id {:?}: expected 16 bytes, not all zero",
            span.name,
            hex(&span.trace_id)
        ));
    };
    let Some(span_id) = id_hex(&span.span_id, 8) else {
        return Err(format!(
            "span {:?} has span id {:?}: expected 8 bytes, not all zero",
            span.name,
            hex(&span.span_id)
        ));
    };
    let attributes = attributes_to_map(&span.attributes);
    let (status, status_message) = match span.status {
        Some(status) => (
            match status.code {
                1 => SpanStatusCode::Ok,
                2 => SpanStatusCode::Error,
                _ => SpanStatusCode::Unset,
            },
            status.message,
        ),
        None => (SpanStatusCode::Unset, String::new()),
    };
    Ok(StoredSpan {
        trace_id,
        span_id,
        // An empty or all-zero parent id means "root", as in the SDKs.
        parent_span_id: id_hex(&span.parent_span_id, 8),
        kind: kind_name(span.kind).to_string(),
        service_name: service_name.to_string(),
        stage: attributes.get(STAGE_KEY).cloned(),
        start_unix_nanos: span.start_time_unix_nano,
        end_unix_nanos: span.end_time_unix_nano.max(span.start_time_unix_nano),
        status,
        status_message,
        events: span
            .events
            .into_iter()
            .map(|event| StoredEvent {
                name: event.name,
                time_unix_nanos: event.time_unix_nano,
                attributes: attributes_to_map(&event.attributes),
            })
            .collect(),
        links: span
            .links
            .into_iter()
            .filter_map(|link| {
                Some(StoredLink {
                    trace_id: id_hex(&link.trace_id, 16)?,
                    span_id: id_hex(&link.span_id, 8)?,
                    attributes: attributes_to_map(&link.attributes),
                })
            })
            .collect(),
        scope: scope.to_string(),
        name: span.name,
        attributes,
    })
}

/// OTLP's `SpanKind` number as the store names it.
fn kind_name(kind: i32) -> &'static str {
    match kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

impl DecodedSpans {
    fn reject(&mut self, why: String) {
        self.rejected += 1;
        self.first_error.get_or_insert(why);
    }
}

/// The lowercase hex of an id of exactly `len` bytes that are not all zero.
fn id_hex(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then(|| hex(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn attributes_to_map(attributes: &[ProtoKeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), render_any(kv.value.as_ref())))
        .collect()
}

/// Renders an OTLP `AnyValue` as text: strings as they are, numbers and booleans as usual,
/// bytes as hex, arrays as `[a, b]` and maps as `{k=v, ...}`.
fn render_any(value: Option<&AnyValue>) -> String {
    use any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(bytes)) => hex(bytes),
        Some(Value::ArrayValue(array)) => format!(
            "[{}]",
            array
                .values
                .iter()
                .map(|v| render_any(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::KvlistValue(list)) => format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|kv| format!("{}={}", kv.key, render_any(kv.value.as_ref())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::StringValueStrindex(index)) => format!("<string table index {index}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        resource::v1::Resource as ProtoResource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan, span::Link as ProtoLink},
    };

    #[test]
    fn otlp_protobuf_is_decoded_and_bad_ids_are_rejected() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: vec![ProtoKeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("kulisse-kubelet".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        ProtoSpan {
                            trace_id: vec![0xab; 16],
                            span_id: vec![1; 8],
                            parent_span_id: vec![0; 8],
                            name: "kubelet.sync_pod".into(),
                            kind: 2,
                            start_time_unix_nano: 10,
                            end_time_unix_nano: 30,
                            attributes: vec![ProtoKeyValue {
                                key: STAGE_KEY.into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue("kubelet".into())),
                                }),
                                ..Default::default()
                            }],
                            links: vec![ProtoLink {
                                trace_id: vec![0xcd; 16],
                                span_id: vec![2; 8],
                                ..Default::default()
                            }],
                            ..Default::default()
                        },
                        ProtoSpan {
                            trace_id: vec![0; 16],
                            span_id: vec![1; 8],
                            name: "bad".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let decoded = decode_otlp_protobuf(&request.encode_to_vec()).expect("valid protobuf");
        assert_eq!(decoded.rejected, 1);
        assert!(decoded.first_error.as_deref().is_some_and(|e| e.contains("\"bad\"")));
        let span = &decoded.spans[0];
        assert_eq!(span.trace_id, "ab".repeat(16));
        assert_eq!(span.parent_span_id, None, "an all-zero parent id means root");
        assert_eq!(span.service_name, "kulisse-kubelet");
        assert_eq!(span.stage.as_deref(), Some("kubelet"));
        assert_eq!(span.kind, "server");
        assert_eq!(span.duration_nanos(), 20);
        assert_eq!(span.links[0].trace_id, "cd".repeat(16));
        let answer =
            ExportTraceServiceResponse::decode(encode_otlp_response(&decoded).as_slice()).expect("a valid response");
        assert_eq!(answer.partial_success.map(|p| p.rejected_spans), Some(1));

        assert!(decode_otlp_protobuf(&[0xff, 0xff, 0xff]).is_err());
        // An empty body is a valid (empty) request.
        assert_eq!(decode_otlp_protobuf(&[]).map(|d| d.spans.len()), Ok(0));
    }
}
