//! Exporting stored spans as OTLP JSON, to open them in Jaeger's UI or any OTLP tool.
//!
//! OTLP has a JSON encoding of the same protobuf messages (the
//! [OTLP/JSON spec](https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding)):
//! field names in lowerCamelCase, trace and span ids as **hex** strings (not base64, unlike
//! the generic protobuf JSON mapping), 64-bit integers such as `startTimeUnixNano` as decimal
//! **strings**, enums (span kind, status code) as integers. [`to_otlp_json`] writes an
//! `ExportTraceServiceRequest` in that form: spans grouped by resource (one per
//! `service.name`) and scope. Save it to a file and load it with Jaeger's "Upload JSON", or
//! `curl -H 'Content-Type: application/json' --data @trace.json http://127.0.0.1:4318/v1/traces`
//! into any OTLP/HTTP receiver.
//!
//! kulisse's store keeps attribute values as text, so every attribute is exported as a
//! `stringValue`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::INSTRUMENTATION_SCOPE;
use crate::span_store::{SpanStatusCode, StoredSpan};

/// The spans as an OTLP JSON `ExportTraceServiceRequest` (`{"resourceSpans": [...]}`): one
/// resource per service name, in order of first appearance, one scope per scope name.
pub fn to_otlp_json(spans: &[StoredSpan]) -> Value {
    // service → scope → spans, keeping the order in which they first appear.
    type Scopes<'a> = Vec<(&'a str, Vec<&'a StoredSpan>)>;
    let mut services: Vec<(&str, Scopes<'_>)> = Vec::new();
    for span in spans {
        let scope_name = if span.scope.is_empty() {
            INSTRUMENTATION_SCOPE
        } else {
            span.scope.as_str()
        };
        let service = match services.iter_mut().find(|(name, _)| *name == span.service_name) {
            Some(service) => service,
            None => {
                services.push((span.service_name.as_str(), Vec::new()));
                services.last_mut().expect("just pushed")
            }
        };
        match service.1.iter_mut().find(|(name, _)| *name == scope_name) {
            Some((_, list)) => list.push(span),
            None => service.1.push((scope_name, vec![span])),
        }
    }
    let resource_spans: Vec<Value> = services
        .into_iter()
        .map(|(service, scopes)| {
            json!({
                "resource": {
                    "attributes": [string_attribute("service.name", service)],
                },
                "scopeSpans": scopes
                    .into_iter()
                    .map(|(scope, spans)| json!({
                        "scope": { "name": scope },
                        "spans": spans.into_iter().map(span_json).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

fn string_attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn attributes(map: &BTreeMap<String, String>) -> Vec<Value> {
    map.iter().map(|(k, v)| string_attribute(k, v)).collect()
}

/// OTLP's `SpanKind` enum values.
fn kind_number(kind: &str) -> u8 {
    match kind {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0, // SPAN_KIND_UNSPECIFIED
    }
}

fn span_json(span: &StoredSpan) -> Value {
    let mut out = json!({
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": kind_number(&span.kind),
        "startTimeUnixNano": span.start_unix_nanos.to_string(),
        "endTimeUnixNano": span.end_unix_nanos.to_string(),
        "attributes": attributes(&span.attributes),
        "events": span.events.iter().map(|event| json!({
            "timeUnixNano": event.time_unix_nanos.to_string(),
            "name": event.name,
            "attributes": attributes(&event.attributes),
        })).collect::<Vec<_>>(),
        "links": span.links.iter().map(|link| json!({
            "traceId": link.trace_id,
            "spanId": link.span_id,
            "attributes": attributes(&link.attributes),
        })).collect::<Vec<_>>(),
        "status": match span.status {
            SpanStatusCode::Unset => json!({}),
            SpanStatusCode::Ok => json!({ "code": 1 }),
            SpanStatusCode::Error => json!({ "code": 2, "message": span.status_message }),
        },
    });
    if let (Some(parent), Some(obj)) = (&span.parent_span_id, out.as_object_mut()) {
        obj.insert("parentSpanId".to_string(), Value::String(parent.clone()));
    }
    out
}

/// The other way round: the spans of an OTLP JSON `ExportTraceServiceRequest` (or
/// `TracesData`, the same shape): a file written by [`to_otlp_json`], or what Jaeger's
/// `/api/v3/traces/{id}` answers inside its `result`. Read with the official serde types
/// of the OTLP messages, then flattened as the API server flattens OTLP/protobuf
/// ([`crate::otlp_proto::spans_from_otlp`]).
///
/// # Errors
///
/// A message for a learner when `json` is not OTLP JSON.
pub fn from_otlp_json(json: Value) -> Result<crate::otlp_proto::DecodedSpans, String> {
    let request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_value(json).map_err(|e| format!("not OTLP JSON (resourceSpans → scopeSpans → spans): {e}"))?;
    Ok(crate::otlp_proto::spans_from_otlp(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_store::tests::span;
    use crate::span_store::{StoredEvent, StoredLink};

    #[test]
    fn otlp_json_parses_back_with_the_official_serde_types() {
        let mut root = span(1, 1, None, "cli.apply", 0, 100);
        root.kind = "client".into();
        root.events.push(StoredEvent {
            name: "request failed: boom".into(),
            time_unix_nanos: root.start_unix_nanos + 5,
            attributes: BTreeMap::from([("code".to_string(), "500".to_string())]),
        });
        let mut child = span(1, 2, Some(1), "apiserver.request", 10, 50);
        child.status = SpanStatusCode::Error;
        child.status_message = "boom".into();
        let mut linked = span(2, 3, None, "controller.reconcile", 60, 70);
        linked.links.push(StoredLink {
            trace_id: root.trace_id.clone(),
            span_id: root.span_id.clone(),
            attributes: BTreeMap::new(),
        });
        let spans = vec![root.clone(), child.clone(), linked.clone()];
        let json = to_otlp_json(&spans);

        // Spec details: hex ids, nanos as strings, one resource per service.
        let resources = json["resourceSpans"].as_array().expect("resourceSpans");
        assert_eq!(resources.len(), 3);
        assert_eq!(
            resources[0]["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "kulisse-cli"}})
        );
        let first = &resources[0]["scopeSpans"][0]["spans"][0];
        assert_eq!(first["traceId"], root.trace_id);
        assert_eq!(first["startTimeUnixNano"], root.start_unix_nanos.to_string());
        assert!(first.get("parentSpanId").is_none());
        assert_eq!(resources[1]["scopeSpans"][0]["spans"][0]["parentSpanId"], root.span_id);

        let back = from_otlp_json(json).expect("OTLP JSON that opentelemetry-proto understands");
        assert_eq!(back.rejected, 0);
        assert_eq!(back.spans, spans, "the export round-trips to the same spans");
    }

    #[test]
    fn what_is_not_otlp_json_is_a_clear_error() {
        let err = from_otlp_json(json!({"resourceSpans": "no"})).unwrap_err();
        assert!(err.starts_with("not OTLP JSON"), "{err}");
        let none = from_otlp_json(json!({})).expect("no resourceSpans: no spans");
        assert!(none.spans.is_empty());
    }
}
