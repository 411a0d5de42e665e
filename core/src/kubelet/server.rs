//! # The kubelet's API server (mirrors the kubelet API on port 10250)
//!
//! Some things only the node knows, above all a container's output. A real kubelet serves
//! them on its own HTTPS port (10250); `kubectl logs` asks the API server, which proxies
//! the request to the kubelet of the pod's node, found through the Node's
//! `status.daemonEndpoints.kubeletEndpoint.Port`.
//!
//! kulisse's kubelet serves, on loopback only, over **HTTPS** with its own certificate
//! (signed by the cluster CA, naming the node's loopback address: the API server checks it
//! as upstream's `--kubelet-certificate-authority` makes it):
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&timestamps=&previous=`:
//!   the container's log as `text/plain`, streamed while `follow=true`. The caller must log
//!   in with a client certificate signed by the cluster CA (upstream's kubelet
//!   `--client-ca-file`): without one the answer is `401 Unauthorized` (a bearer token is not
//!   read at all), and any user but the API server's own ([`KUBELET_CLIENT_USER`],
//!   `kube-apiserver-kubelet-client`) gets `403 Forbidden`.
//! - `GET|POST /exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`
//!   and `/attach/...`: a WebSocket session (see [`super::streaming`]), authorized like logs.
//! - `GET|POST /portForward/{namespace}/{pod}`: a SPDY/3.1 session of port-forward stream
//!   pairs (see [`super::portforward`]), authorized like logs.
//! - `GET /healthz`: `ok` (no credential needed, like the kubelet's healthz port).
//!
//! Where kulisse differs: upstream's kubelet authorizes each caller with a
//! SubjectAccessReview to the API server (kubeadm binds `system:kubelet-api-admin` to
//! `kube-apiserver-kubelet-client`); kulisse's kubelet knows that one user by name. Upstream
//! gives a kubelet a serving certificate separate from its client certificate; kulisse's
//! kubelet serves with its client certificate, which `kulisse up` issues valid for both.
//! Without a certificate ([`KubeletOptions::tls`](super::KubeletOptions::tls) empty) the
//! kubelet serves plain HTTP and refuses every log request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Shared;
use super::reply::{Body, text};
pub use crate::client::tls::KUBELET_CLIENT_USER;
use crate::objects;
use crate::objects::user::{self as auth, UserInfo};
use crate::runtime::{ContainerInfo, ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_UID, LogOptions};

/// The kubelet API's TLS: the kubelet's certificate and key, and the cluster CA its
/// callers' client certificates must chain to.
#[derive(Clone, Debug)]
pub struct ServingTls {
    /// The kubelet's certificate (naming its node IP) and key.
    pub identity: crate::client::tls::Identity,
    /// The cluster CA (PEM).
    pub ca_pem: Vec<u8>,
}

/// The rustls configuration of `tls` (checked before the kubelet registers its node).
pub(crate) fn tls_config(tls: Option<&ServingTls>) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    tls.map(|t| crate::client::tls::kubelet_serving_config(&t.identity, &t.ca_pem))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the kubelet's serving certificate: {e}"))
}

/// Serve until `shutdown` turns true: HTTPS with `tls`, else plain HTTP.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (shared, acceptor, watcher) = (shared.clone(), acceptor.clone(), graceful.watcher());
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_connection(shared, stream, None, watcher).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                            if let Ok(Ok(tls_stream)) = handshake.await {
                                let peer = peer_user(&tls_stream);
                                serve_connection(shared, tls_stream, Some(peer), watcher).await;
                            }
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

/// The user the verified client certificate of a TLS connection names, if any.
fn peer_user(tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Option<UserInfo> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    auth::user_from_certificate(leaf.as_ref())
}

/// Serve one connection. `peer`: `None` on plain HTTP, `Some(user or None)` over TLS.
async fn serve_connection<IO>(
    shared: Arc<Shared>,
    io: IO,
    peer: Option<Option<UserInfo>>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |req| {
        let (shared, peer) = (shared.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(&shared, req, &peer).await) }
    });
    // HTTP/2 or HTTP/1.1, as the client chose (like upstream's kubelet); HTTP/1.1 with
    // upgrades: exec and attach switch the connection to WebSocket.
    let conn = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    let _ = watcher.watch(conn).await;
}

/// May `peer` read logs or exec into pods? `401` without a client certificate, `403` for any user but the
/// API server's (in the words of upstream's kubelet authorizer).
fn authorize(peer: &Option<Option<UserInfo>>) -> Result<(), Response<Body>> {
    match peer {
        None => Err(text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: this kubelet has no serving certificate, so it serves no logs and no exec",
        )),
        Some(None) => Err(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
        Some(Some(user)) if user.name == KUBELET_CLIENT_USER => Ok(()),
        Some(Some(user)) => Err(text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb=get, resource=nodes, subresource=proxy)",
                user.name
            ),
        )),
    }
}

fn flag(params: &BTreeMap<String, String>, key: &str) -> bool {
    params.get(key).is_some_and(|v| v == "true" || v == "1")
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>, peer: &Option<Option<UserInfo>>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if path.starts_with("/exec/") || path.starts_with("/attach/") {
        if let Err(refused) = authorize(peer) {
            return refused;
        }
        return super::streaming::handle(shared, req).await;
    }
    if path.starts_with("/portForward/") {
        if let Err(refused) = authorize(peer) {
            return refused;
        }
        return super::portforward::handle(shared, req).await;
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
    if let Err(refused) = authorize(peer) {
        return refused;
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
