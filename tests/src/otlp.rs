//! An in-process OTLP receiver: a tiny stand-in for the OpenTelemetry Collector or Jaeger.
//!
//! OTLP (the OpenTelemetry Protocol) is how a traced process hands its finished spans to a
//! backend. It comes in two transports, both carrying the same protobuf message,
//! `ExportTraceServiceRequest` (resource → scope → spans):
//!
//! - **OTLP/gRPC**: the `opentelemetry.proto.collector.trace.v1.TraceService/Export` RPC,
//!   usually on port 4317;
//! - **OTLP/HTTP**: `POST /v1/traces` with a `application/x-protobuf` body, usually on port
//!   4318.
//!
//! [`OtlpReceiver`] speaks either one on `127.0.0.1` and a free port, decodes the requests with
//! the official protobuf definitions (`opentelemetry-proto`) and keeps every span it received as
//! a [`ReceivedSpan`], so a test can point a kulisse process at it with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` and then assert on what arrived.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kulisse_tests::otlp::OtlpReceiver;
//! let receiver = OtlpReceiver::start_http().await?;
//! // ... run something with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint() ...
//! let spans = receiver
//!     .wait_for(|spans| spans.iter().any(|s| s.name == "cli.apply"), std::time::Duration::from_secs(30))
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The largest OTLP/HTTP body the receiver accepts (the Collector's default is similar).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// One span as the receiver got it, flattened for easy assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The 16-byte trace id as 32 lowercase hex digits (as in `traceparent`).
    pub trace_id: String,
    /// The 8-byte span id as 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id as hex; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span name, e.g. `cli.apply`.
    pub name: String,
    /// The `service.name` resource attribute of the process that sent the span ("" if absent).
    pub service_name: String,
    /// The span's attributes, values rendered as text (`kulisse.stage` → `cli`).
    pub attributes: BTreeMap<String, String>,
    /// The resource attributes of the process that sent the span (`service.name`,
    /// `telemetry.sdk.language`, everything from `OTEL_RESOURCE_ATTRIBUTES`, ...).
    pub resource_attributes: BTreeMap<String, String>,
    /// Span links: (trace id, span id) of each linked span, as hex.
    pub links: Vec<(String, String)>,
}

/// Which OTLP transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    HttpProtobuf,
}

impl Transport {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that selects this transport.
    pub fn protocol_env_value(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Spans received so far, plus a counter that wakes up [`OtlpReceiver::wait_for`].
#[derive(Clone)]
struct Sink {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    received: Arc<watch::Sender<usize>>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            spans: Arc::new(Mutex::new(Vec::new())),
            received: Arc::new(watch::channel(0).0),
        }
    }

    fn add(&self, request: ExportTraceServiceRequest) {
        let new = flatten(request);
        let total = {
            let mut spans = self.spans.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            spans.extend(new);
            spans.len()
        };
        self.received.send_replace(total);
    }

    fn snapshot(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// An OTLP trace receiver listening on `127.0.0.1`; stops when dropped.
pub struct OtlpReceiver {
    transport: Transport,
    addr: SocketAddr,
    sink: Sink,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts an OTLP/gRPC receiver (a tonic `TraceService` server) on `127.0.0.1:0`.
    pub async fn start_grpc() -> anyhow::Result<OtlpReceiver> {
        let listener = bind().await?;
        let addr = listener.local_addr()?;
        let sink = Sink::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(GrpcCollector { sink: sink.clone() });
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                eprintln!("OTLP/gRPC test receiver on {addr} stopped with an error: {err}");
            }
        });
        Ok(OtlpReceiver {
            transport: Transport::Grpc,
            addr,
            sink,
            stop: Some(stop),
            task,
        })
    }

    /// Starts an OTLP/HTTP receiver (`POST /v1/traces`, `application/x-protobuf`) on
    /// `127.0.0.1:0`.
    pub async fn start_http() -> anyhow::Result<OtlpReceiver> {
        let listener = bind().await?;
        let addr = listener.local_addr()?;
        let sink = Sink::new();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let accept_sink = sink.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so they are cancelled with the accept loop.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted,
                };
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(err) => {
                        eprintln!("OTLP/HTTP test receiver on {addr}: accept failed: {err}");
                        continue;
                    }
                };
                let sink = accept_sink.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| handle_http(sink.clone(), request));
                    // A client that hangs up mid-request is not the receiver's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow forever.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(OtlpReceiver {
            transport: Transport::HttpProtobuf,
            addr,
            sink,
            stop: Some(stop),
            task,
        })
    }

    /// Which transport this receiver speaks.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The value for `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://127.0.0.1:PORT`. (For OTLP/HTTP the
    /// exporter appends `/v1/traces` itself; see [`OtlpReceiver::traces_endpoint`].)
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, which is used as is: the full URL
    /// `http://127.0.0.1:PORT/v1/traces` for OTLP/HTTP, the same as [`OtlpReceiver::endpoint`]
    /// for gRPC.
    pub fn traces_endpoint(&self) -> String {
        match self.transport {
            Transport::Grpc => self.endpoint(),
            Transport::HttpProtobuf => format!("http://{}/v1/traces", self.addr),
        }
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.snapshot()
    }

    /// Waits until `condition` holds for the spans received so far and returns them.
    ///
    /// `timeout` only guards against hanging forever; the error lists what did arrive.
    pub async fn wait_for(
        &self,
        condition: impl Fn(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let mut changes = self.sink.received.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.borrow_and_update();
            let spans = self.spans();
            if condition(&spans) {
                return Ok(spans);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => {
                    let names: Vec<_> = spans
                        .iter()
                        .map(|s| format!("{} ({})", s.name, s.service_name))
                        .collect();
                    anyhow::bail!(
                        "the OTLP {:?} receiver at {} did not receive the expected spans within \
                         {timeout:?}; it received {} span(s): {names:?}",
                        self.transport,
                        self.endpoint(),
                        spans.len()
                    );
                }
            }
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl std::fmt::Debug for OtlpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpReceiver")
            .field("transport", &self.transport)
            .field("addr", &self.addr)
            .finish()
    }
}

async fn bind() -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("binding the OTLP test receiver to 127.0.0.1 on a free port")
}

/// The gRPC side: tonic calls `export` for every `TraceService/Export` RPC.
struct GrpcCollector {
    sink: Sink,
}

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.sink.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The HTTP side: one OTLP/HTTP request.
async fn handle_http(sink: Sink, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/v1/traces" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            format!(
                "this OTLP receiver only serves POST /v1/traces, not {}",
                request.uri().path()
            ),
        ));
    }
    if request.method() != hyper::Method::POST {
        return Ok(plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("/v1/traces expects POST, got {}", request.method()),
        ));
    }
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !content_type.starts_with("application/x-protobuf") {
        return Ok(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this OTLP receiver expects Content-Type application/x-protobuf \
                 (OTLP/HTTP binary), got {content_type:?}"
            ),
        ));
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {err}"),
            ));
        }
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(decoded) => {
            sink.add(decoded);
            let reply = ExportTraceServiceResponse { partial_success: None };
            let mut response = Response::new(Full::new(Bytes::from(reply.encode_to_vec())));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(response)
        }
        Err(err) => Ok(plain(
            StatusCode::BAD_REQUEST,
            format!("the body is not a protobuf ExportTraceServiceRequest: {err}"),
        )),
    }
}

fn plain(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response
}

/// Turns the nested resource → scope → span message into flat [`ReceivedSpan`]s.
fn flatten(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let resource_attributes = resource_spans
            .resource
            .map(|resource| attributes_to_map(&resource.attributes))
            .unwrap_or_default();
        let service_name = resource_attributes.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                out.push(ReceivedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty() && span.parent_span_id.iter().any(|b| *b != 0))
                        .then(|| hex(&span.parent_span_id)),
                    name: span.name,
                    service_name: service_name.clone(),
                    attributes: attributes_to_map(&span.attributes),
                    resource_attributes: resource_attributes.clone(),
                    links: span.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                });
            }
        }
    }
    out
}

fn attributes_to_map(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), render_any(kv.value.as_ref())))
        .collect()
}

/// Renders an OTLP `AnyValue` as text: strings as they are, numbers and booleans in Rust's
/// notation, bytes as hex, arrays as `[a, b]` and maps as `{k=v, ...}`.
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::{
        common::v1::ArrayValue,
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    fn string_kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_string())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn flatten_reads_ids_names_and_attributes() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_kv("service.name", "kulisse-cli")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                        parent_span_id: vec![],
                        name: "cli.apply".into(),
                        attributes: vec![
                            string_kv("kulisse.stage", "cli"),
                            KeyValue {
                                key: "list".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                                        values: vec![
                                            AnyValue {
                                                value: Some(any_value::Value::IntValue(1)),
                                            },
                                            AnyValue {
                                                value: Some(any_value::Value::BoolValue(true)),
                                            },
                                        ],
                                    })),
                                }),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let spans = flatten(request);
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.trace_id, "ab".repeat(16));
        assert_eq!(span.span_id, "0102030405060708");
        assert_eq!(span.parent_span_id, None);
        assert_eq!(span.service_name, "kulisse-cli");
        assert_eq!(span.attributes["kulisse.stage"], "cli");
        assert_eq!(span.attributes["list"], "[1, true]");
    }

    /// Sends one raw HTTP/1.1 request and returns the status line.
    async fn post(addr: &str, content_type: &str, body: &[u8]) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read response");
        String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn http_receiver_decodes_protobuf_and_wait_for_sees_it() {
        let receiver = OtlpReceiver::start_http().await.expect("start");
        let addr = receiver.endpoint().trim_start_matches("http://").to_string();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        parent_span_id: vec![3; 8],
                        name: "store.txn".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let status = post(&addr, "application/x-protobuf", &request.encode_to_vec()).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        let spans = receiver
            .wait_for(
                |spans| spans.iter().any(|s| s.name == "store.txn"),
                Duration::from_secs(30),
            )
            .await
            .expect("the span arrives");
        assert_eq!(spans[0].parent_span_id.as_deref(), Some("0303030303030303"));
        assert_eq!(spans[0].service_name, "");

        // Wrong media type and a body that is not protobuf are refused, and nothing is stored.
        let status = post(&addr, "application/json", b"{}").await;
        assert_eq!(status, "HTTP/1.1 415 Unsupported Media Type");
        let status = post(&addr, "application/x-protobuf", &[0xff, 0xff, 0xff]).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert_eq!(receiver.spans().len(), 1);
    }
}
