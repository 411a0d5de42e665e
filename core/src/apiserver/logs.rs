//! # logs (mirrors the `pods/log` subresource and the API server → kubelet proxy)
//!
//! Container logs live on the node, not in the store. When you ask the API server for
//! `GET .../pods/web-abc12/log?container=httpd&follow=true`, it looks up which node runs
//! the pod, finds that node's kubelet endpoint (`status.daemonEndpoints.kubeletEndpoint`),
//! and streams the kubelet's `/containerLogs/<ns>/<pod>/<container>` answer back to you.
//! It is one of the few places where the control plane calls *into* a node.
//!
//! That call is HTTPS both ways, as kubeadm sets it up: the API server checks the kubelet's
//! serving certificate against the cluster CA (for the node's address), and logs in with its
//! own client certificate, `CN=kube-apiserver-kubelet-client`
//! ([`Config::kubelet_client`](super::Config::kubelet_client)). No bearer token travels to a
//! kubelet.
//!
//! A kubelet on a node host (`kulisse up --node-hosts`) listens on its host's address, inside
//! a network namespace the machine's own namespace has no route into. The API server then
//! makes each kubelet connection from a socket created in the hub namespace the hosts hang
//! off ([`Config::kubelet_network`](super::Config::kubelet_network), [`crate::netns`]), as if
//! its machine had a leg on the nodes' network.

use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::{Body, Ctx};
use crate::objects::{self, ApiError};

/// `GET .../pods/{name}/log`: find where the log is ([`log_location`]), then stream it.
pub async fn handle(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let location = log_location(ctx, ns, name).await?;
    stream_from_kubelet(ctx, &location).await
}

/// Where a pod's container log is served: the kubelet URL and the node it runs on.
struct LogLocation {
    url: String,
    kubelet: PodKubelet,
}

/// Resolve the container, the node and its kubelet endpoint, as upstream's pod
/// `LogLocation` does (`pkg/registry/core/pod/strategy.go`).
async fn log_location(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<LogLocation, ApiError> {
    let (pod, kubelet) = pod_kubelet(ctx, ns, name, "logs").await?;
    let container = container_of(ctx, &pod, name)?;
    let query = log_query(ctx);
    Ok(LogLocation {
        url: format!("{}/containerLogs/{ns}/{name}/{container}?{query}", kubelet.base_url),
        kubelet,
    })
}

/// The kubelet that runs a pod: where to reach it (`https://address:port`).
pub(crate) struct PodKubelet {
    pub base_url: String,
    pub node_name: String,
    pub endpoint: String,
}

/// The pod and its node's kubelet: the one "connect to this pod's kubelet" lookup that
/// logs, exec, attach and port-forward share. `what` names the request in errors.
pub(crate) async fn pod_kubelet(
    ctx: &Ctx<'_>,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<(Value, PodKubelet), ApiError> {
    let pods = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let nodes = objects::by_gvk("v1", "Node").expect("Node is a built-in kind");
    let pod = ctx
        .server
        .storage
        .get(pods, Some(ns), name)
        .await?
        .ok_or_else(|| ApiError::not_found(pods, name))?
        .object;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {name} has not been scheduled to a node yet, so it has no {what}"
            ))
        })?
        .to_string();
    let node = ctx
        .server
        .storage
        .get(nodes, None, &node_name)
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, &node_name))?
        .object;
    let (address, port) = kubelet_endpoint(&node, &node_name)?;
    let endpoint = std::net::SocketAddr::new(address, port).to_string();
    let kubelet = PodKubelet {
        base_url: format!("https://{endpoint}"),
        node_name,
        endpoint,
    };
    Ok((pod, kubelet))
}

/// The HTTPS client the API server calls kubelets with (upgrades included): it checks the
/// kubelet's certificate against the cluster CA and logs in as `kube-apiserver-kubelet-client`.
/// `what` names the request in the error when this API server has no such certificate.
fn kubelet_client(
    ctx: &Ctx<'_>,
    what: &str,
) -> Result<hyper_util::client::legacy::Client<hyper_rustls::HttpsConnector<KubeletDialer>, Empty<Bytes>>, ApiError> {
    let tls = ctx.server.config.kubelet_client.clone().ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("this API server has no client certificate for kubelets, so it cannot {what}"),
        )
    })?;
    let dialer = KubeletDialer {
        netns: ctx.server.config.kubelet_network.clone().map(std::sync::Arc::new),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_only()
        .enable_http1()
        .wrap_connector(dialer);
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector))
}

/// How long the API server waits for a kubelet to accept a connection.
const KUBELET_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the TCP connections to kubelets, addressed by IP as Node objects give them: from
/// this process' own network namespace, or from a socket made in `netns`.
#[derive(Clone)]
pub(crate) struct KubeletDialer {
    netns: Option<std::sync::Arc<std::path::PathBuf>>,
}

impl tower_service::Service<http::Uri> for KubeletDialer {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let netns = self.netns.clone();
        Box::pin(async move {
            let addr = uri
                .authority()
                .and_then(|a| a.as_str().parse::<std::net::SocketAddr>().ok())
                .ok_or_else(|| std::io::Error::other(format!("a kubelet is addressed by IP:port, not {uri}")))?;
            let stream = match netns.as_deref() {
                Some(ns) => crate::netns::connect_in(ns, addr, KUBELET_DIAL_TIMEOUT).await?,
                None => tokio::time::timeout(KUBELET_DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {addr} timed out"))
                    })??,
            };
            stream.set_nodelay(true)?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Send `req` to a pod's kubelet over [`kubelet_client`]. An answer `accepted` does not
/// admit comes back as the error it carries (the kubelet's own words); `what` names the
/// request in errors.
pub(crate) async fn call_kubelet(
    ctx: &Ctx<'_>,
    kubelet: &PodKubelet,
    req: http::request::Builder,
    what: &str,
    accepted: impl Fn(&StatusCode) -> bool,
) -> Result<Response<hyper::body::Incoming>, ApiError> {
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("could not build the kubelet request: {e}")))?;
    let resp = kubelet_client(ctx, what)?.request(req).await.map_err(|e| {
        ApiError::new(
            502,
            "ServiceUnavailable",
            format!(
                "could not reach the kubelet of node {} at {}: {e}",
                kubelet.node_name, kubelet.endpoint
            ),
        )
    })?;
    if accepted(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(ApiError::new(
        status,
        "BadRequest",
        String::from_utf8_lossy(&body).trim().to_string(),
    ))
}

/// The container the request names, or the pod's only one.
pub(crate) fn container_of(ctx: &Ctx<'_>, pod: &Value, name: &str) -> Result<String, ApiError> {
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    match ctx.param("container") {
        Some(c) if containers.iter().any(|x| x == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            containers.join(" ")
        ))),
    }
}

/// The node's kubelet address and port, from its status: its first `InternalIP` (loopback,
/// or a node host's address, which the API server reaches through [`KubeletDialer`]).
fn kubelet_endpoint(node: &Value, node_name: &str) -> Result<(std::net::IpAddr, u16), ApiError> {
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "node {node_name} does not report a kubelet endpoint; is its kubelet running?"
            ))
        })?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .filter_map(|a| {
            a.get("address")
                .and_then(Value::as_str)?
                .parse::<std::net::IpAddr>()
                .ok()
        })
        .next()
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok((address, port))
}

/// The log options the kubelet understands, passed through from the request.
fn log_query(ctx: &Ctx<'_>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for key in [
        "follow",
        "tailLines",
        "timestamps",
        "previous",
        "sinceSeconds",
        "limitBytes",
    ] {
        if let Some(v) = ctx.param(key) {
            q.append_pair(key, v);
        }
    }
    q.finish()
}

/// Ask the kubelet and stream its answer back as it comes.
async fn stream_from_kubelet(ctx: &Ctx<'_>, location: &LogLocation) -> Result<Response<Body>, ApiError> {
    let req = http::Request::get(&location.url);
    let resp = call_kubelet(ctx, &location.kubelet, req, "fetch logs", StatusCode::is_success).await?;
    let stream = resp
        .into_body()
        .into_data_stream()
        .filter_map(|chunk| async move { chunk.ok().map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))) });
    let body: Body = BodyExt::boxed(StreamBody::new(stream));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)
        .unwrap_or_else(|_| Response::new(BodyExt::boxed(http_body_util::Full::new(Bytes::new())))))
}
