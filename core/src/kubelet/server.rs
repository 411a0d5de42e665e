//! # The kubelet's HTTP server (mirrors the kubelet API on port 10250)
//!
//! Some things only the node knows, above all a container's output. A real kubelet serves
//! them on its own HTTPS port (10250); `kubectl logs` asks the API server, which proxies
//! the request to the kubelet of the pod's node, found through the Node's
//! `status.daemonEndpoints.kubeletEndpoint.Port`.
//!
//! kulisse's kubelet serves, on loopback only:
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&previous=`:
//!   the container's log as `text/plain`, streamed while `follow=true`. It demands the
//!   cluster's bearer token, like the API server.
//! - `GET|POST /exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`
//!   and `/attach/...`: a WebSocket session (see [`super::streaming`]).
//! - `GET /healthz`: `ok` (no token needed, like the kubelet's healthz port).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Shared;
use crate::objects;
use crate::runtime::{ContainerInfo, ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_UID, LogOptions};

pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    body.push('\n');
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// Serve until `shutdown` turns true.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let shared = shared.clone();
                let service = hyper::service::service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                });
                let conn = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .http1_only()
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn flag(params: &BTreeMap<String, String>, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if path.starts_with("/exec/") || path.starts_with("/attach/") {
        if !authorized(&req, &shared.options.token) {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        return super::streaming::handle(shared, req).await;
    }
    if req.method() != http::Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not supported here", req.method()),
        );
    }
    let Some(rest) = path.strip_prefix("/containerLogs/") else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{path} not found; the kubelet serves /containerLogs/{{namespace}}/{{pod}}/{{container}}"),
        );
    };
    if !authorized(&req, &shared.options.token) {
        return text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: the kubelet expects the cluster's token as `Authorization: Bearer <token>`",
        );
    }
    match container_logs(shared, &path, rest, req.uri().query().unwrap_or("")).await {
        Ok(response) | Err(response) => response,
    }
}

/// What a `/containerLogs/...` request asks for.
struct LogRequest {
    namespace: String,
    pod: String,
    container: String,
    options: LogOptions,
}

/// Read `{namespace}/{pod}/{container}` (`rest`) and the query's log options.
fn log_request(path: &str, rest: &str, query: &str) -> Result<LogRequest, Response<Body>> {
    // Object and container names are DNS labels: no escaping to undo.
    let parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("expected /containerLogs/{{namespace}}/{{pod}}/{{container}}, got {path}"),
        ));
    };
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let tail_lines = match params.get("tailLines") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n as usize),
            _ => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("tailLines must be a non-negative integer, got {v:?}"),
                ));
            }
        },
    };
    Ok(LogRequest {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container: container.clone(),
        options: LogOptions {
            tail_lines,
            follow: flag(&params, "follow"),
            timestamps: flag(&params, "timestamps"),
            previous: flag(&params, "previous"),
        },
    })
}

/// The container instance whose log is asked for: the newest, or the one before it with
/// `previous=true` (upstream's `validateContainerLogStatus`).
async fn log_instance(shared: &Shared, r: &LogRequest) -> Result<ContainerInfo, Response<Body>> {
    let (ns, pod_name, container) = (&r.namespace, &r.pod, &r.container);
    let Some(pod) = shared.pods.get(&format!("{ns}/{pod_name}")) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "pod \"{pod_name}\" in namespace \"{ns}\" is not running on node {}",
                shared.options.node_name
            ),
        ));
    };
    let uid = objects::uid(&pod).unwrap_or("").to_string();
    let mut filter = BTreeMap::new();
    filter.insert(LABEL_POD_UID.to_string(), uid);
    filter.insert(LABEL_CONTAINER_NAME.to_string(), container.clone());
    let mut instances = shared
        .runtime
        .list_containers(&filter)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    instances.sort_by(|a, b| b.attempt.cmp(&a.attempt).then(b.created_at.cmp(&a.created_at)));
    let waiting = || {
        text(
            StatusCode::BAD_REQUEST,
            format!("container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"),
        )
    };
    let chosen = if r.options.previous {
        instances.get(1).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod_name}\" not found"),
            )
        })?
    } else {
        instances.first().ok_or_else(waiting)?
    };
    if chosen.state == ContainerState::Created {
        return Err(waiting());
    }
    Ok(chosen.clone())
}

/// `GET /containerLogs/...`: the log, streamed as the runtime yields it.
async fn container_logs(
    shared: &Shared,
    path: &str,
    rest: &str,
    query: &str,
) -> Result<Response<Body>, Response<Body>> {
    let request = log_request(path, rest, query)?;
    let chosen = log_instance(shared, &request).await?;
    let stream = shared
        .runtime
        .container_logs(&chosen.id, &request.options)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // A runtime error in the middle of a stream ends it (the client sees a short log).
    let frames = stream
        .take_while(|chunk| futures::future::ready(chunk.is_ok()))
        .filter_map(|chunk| async move { chunk.ok().map(|b| Ok::<_, Infallible>(Frame::data(Bytes::from(b)))) });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync())))
}
