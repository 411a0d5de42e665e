//! # Content negotiation for protobuf (mirrors apimachinery's `runtime/serializer` negotiation)
//!
//! Two headers decide the encodings of one request:
//!
//! - `Content-Type` names the encoding of the *request body*. A body sent as
//!   `application/vnd.kubernetes.protobuf` (what `kubectl create` sends) is decoded here,
//!   before any handler sees it, into the JSON every handler works with
//!   ([`crate::objects::protobuf`]); the handlers never know it was protobuf.
//! - `Accept` lists the encodings the client can read, best first, as in
//!   `Accept: application/vnd.kubernetes.protobuf,application/json` (client-go's typed
//!   clients). kube-apiserver answers in the first listed type it can produce. Here the
//!   handlers always produce JSON, and [`negotiate`] re-encodes the finished answer when
//!   protobuf comes first: objects, lists and `Status` errors alike.
//!
//! What stays JSON, as upstream: `Table`s (`kubectl get` asks for
//! `application/json;as=Table;...` first; a Table has no protobuf schema), discovery,
//! OpenAPI and logs. Where kulisse differs: watch streams are always JSON lines (client-go
//! reads them, as JSON is in every client's `Accept` list), and a kind without a vendored
//! schema is answered in JSON instead of `406 Not Acceptable`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use super::Body;
use crate::objects::{ApiError, protobuf};

/// The request body after decoding: the same bytes, or JSON made from protobuf (with the
/// headers saying `Content-Type: application/json`).
pub enum RequestBody {
    Unchanged(Bytes),
    Decoded(HeaderMap, Bytes),
}

/// Is this media type (parameters ignored) Kubernetes protobuf?
fn is_protobuf(media: &str) -> bool {
    media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(protobuf::MEDIA_TYPE)
}

/// Decode a protobuf request body into JSON; leave every other body alone.
///
/// Bad protobuf is `415 UnsupportedMediaType` when the envelope is not Kubernetes protobuf
/// at all, `400 BadRequest` when the object inside it is malformed; nothing is written.
pub fn decode_request(headers: &HeaderMap, body: Bytes) -> Result<RequestBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !is_protobuf(content_type) || body.is_empty() {
        return Ok(RequestBody::Unchanged(body));
    }
    let _span = tracing::info_span!(
        "apiserver.decode",
        "kulisse.stage" = "apiserver",
        "http.request.body.size" = body.len(),
        "content_type" = protobuf::MEDIA_TYPE
    )
    .entered();
    if !body.starts_with(protobuf::MAGIC) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body is not {}: it must start with the 4 bytes \"k8s\\x00\" followed by a runtime.Unknown message",
                protobuf::MEDIA_TYPE
            ),
        ));
    }
    let value = protobuf::decode(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "error decoding the request body ({}): {e}",
            protobuf::MEDIA_TYPE
        ))
    })?;
    let json = serde_json::to_vec(&value).unwrap_or_default();
    let mut headers = headers.clone();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
    Ok(RequestBody::Decoded(headers, Bytes::from(json)))
}

/// Does the client's `Accept` put protobuf before anything else the server can write?
///
/// Media ranges are tried best first: by `q` (default 1), ties in the order written.
/// `application/json`, `application/*` and `*/*` mean JSON; a range with `as=` (a Table or
/// metadata-only conversion) is answered in JSON too; unknown types are skipped.
pub fn prefers_protobuf(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut ranges: Vec<(f32, usize, &str, bool)> = Vec::new();
    for (i, range) in accept.split(',').enumerate() {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut q = 1.0f32;
        let mut conversion = false;
        for param in parts {
            match param.split_once('=') {
                Some(("q", v)) => q = v.trim().parse().unwrap_or(0.0),
                Some(("as", _)) => conversion = true,
                _ => {}
            }
        }
        if q > 0.0 && !media.is_empty() {
            ranges.push((q, i, media, conversion));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media, conversion) in ranges {
        if is_protobuf(media) && !conversion {
            return true;
        }
        if matches!(
            media.to_ascii_lowercase().as_str(),
            "application/json" | "application/*" | "*/*"
        ) {
            return false;
        }
    }
    false
}

/// Re-encode a finished JSON answer as protobuf when the client asked for protobuf first
/// and the answer is an object with a schema (not a Table, not a watch stream).
pub async fn negotiate(request: &HeaderMap, is_watch: bool, response: Response<Body>) -> Response<Body> {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if is_watch || !json || !prefers_protobuf(request) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(protobuf::has_schema)
        .and_then(|obj| match protobuf::encode(&obj) {
            Ok(pb) => Some(pb),
            Err(e) => {
                tracing::debug!("answering in JSON: the object cannot be written as protobuf: {e}");
                None
            }
        });
    let body = match encoded {
        Some(pb) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(protobuf::MEDIA_TYPE));
            Bytes::from(pb)
        }
        None => bytes,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(body).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).expect("header"));
        h
    }

    #[test]
    fn negotiation_follows_the_accept_order() {
        // What kubectl's typed clients send (create, run, expose).
        assert!(prefers_protobuf(&accept(
            "application/vnd.kubernetes.protobuf,application/json"
        )));
        // What kubectl get sends: a Table in JSON first.
        assert!(!prefers_protobuf(&accept(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        )));
        assert!(!prefers_protobuf(&accept("application/json, */*")));
        assert!(!prefers_protobuf(&HeaderMap::new()));
        assert!(!prefers_protobuf(&accept(
            "application/json,application/vnd.kubernetes.protobuf"
        )));
        assert!(prefers_protobuf(&accept(
            "application/json;q=0.5,application/vnd.kubernetes.protobuf"
        )));
        assert!(!prefers_protobuf(&accept(
            "application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1,application/json"
        )));
        assert!(prefers_protobuf(&accept(
            "text/html,application/vnd.kubernetes.protobuf"
        )));
    }

    async fn answer(accept_header: &str, watch: bool, body: serde_json::Value) -> (String, Bytes) {
        let resp = super::super::json_response(http::StatusCode::NOT_FOUND, &body);
        let resp = negotiate(&accept(accept_header), watch, resp).await;
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .to_string();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (ct, bytes)
    }

    #[tokio::test]
    async fn answers_in_protobuf_only_when_asked_first_and_possible() {
        let typed = "application/vnd.kubernetes.protobuf,application/json";
        let status = crate::objects::ApiError::new(404, "NotFound", "configmaps \"c\" not found").to_status_json();
        let (ct, bytes) = answer(typed, false, status.clone()).await;
        assert_eq!(ct, protobuf::MEDIA_TYPE);
        assert_eq!(
            protobuf::decode(&bytes).expect("a protobuf Status")["reason"],
            "NotFound"
        );
        let (ct, bytes) = answer("application/json", false, status.clone()).await;
        assert_eq!(ct, "application/json");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON"), status);
        // A Table has no protobuf form, and watch streams stay JSON lines.
        let table = serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": []});
        assert_eq!(answer(typed, false, table).await.0, "application/json");
        assert_eq!(answer(typed, true, status).await.0, "application/json");
    }

    #[test]
    fn bad_protobuf_is_refused_with_a_status() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.kubernetes.protobuf"),
        );
        let e = decode_request(&h, Bytes::from_static(b"{\"kind\":\"Pod\"}"))
            .err()
            .expect("not protobuf");
        assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
        let e = decode_request(&h, Bytes::from_static(b"k8s\0\x0a\xff\xff"))
            .err()
            .expect("truncated");
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
        assert!(e.message.contains("malformed"), "{}", e.message);
        let json = decode_request(&HeaderMap::new(), Bytes::from_static(b"{}")).expect("json passes");
        assert!(matches!(json, RequestBody::Unchanged(_)));
    }
}
