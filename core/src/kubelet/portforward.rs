//! # port-forward on the kubelet (mirrors the kubelet's `portforward` streaming handler)
//!
//! The API server proxies `pods/portforward` here as a SPDY/3.1 upgrade of
//! `/portForward/{namespace}/{pod}` (see [`crate::portforward`] for the whole road). The
//! kubelet answers `101 Switching Protocols` and then serves the SPDY connection:
//!
//! - every `SYN_STREAM` is accepted with a `SYN_REPLY`; its headers say which pair
//!   (`requestid`), which half (`streamtype: error|data`) and which port;
//! - once both streams of a pair are open, the kubelet asks the runtime for a connection
//!   to that port inside the pod's network namespace
//!   ([`ContainerRuntime::port_forward`](crate::runtime::ContainerRuntime::port_forward),
//!   the CRI's `PortForward`) and copies bytes between it and the data stream;
//! - if that fails, the reason goes on the error stream, in upstream's words
//!   (`error forwarding port 80 to pod web-1, uid ...: ...`), and kubectl prints it;
//! - when the pod's side closes, the kubelet half-closes the data stream (`FIN`), then the
//!   error stream, and the pair is done. `PING`s from the client are echoed.
//!
//! As with exec, only the API server may connect: the request passed the same client
//! certificate check (see [`super::server`]); the user's right (`create pods/portforward`)
//! was checked by the API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::Shared;
use super::reply::{Body, text};
use crate::objects;
use crate::portforward::spdy::{self, Frame, Headers};
use crate::portforward::{PORT, PROTOCOL, REQUEST_ID, SPDY_UPGRADE, STREAM_TYPE};
use crate::runtime::{LABEL_POD_UID, SandboxState};

/// The pod a session forwards to.
#[derive(Clone)]
struct Target {
    sandbox_id: String,
    pod: String,
    uid: String,
}

/// The sandbox of `{namespace}/{pod}` on this node.
async fn target(shared: &Shared, path: &str) -> Result<Target, Response<Body>> {
    let rest = path.strip_prefix("/portForward/").unwrap_or("");
    let Some((namespace, pod)) = rest.split_once('/').filter(|(_, p)| !p.is_empty() && !p.contains('/')) else {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!("expected /portForward/{{namespace}}/{{pod}}, got {path}"),
        ));
    };
    let Some(obj) = shared.pods.get(&format!("{namespace}/{pod}")) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" in namespace \"{namespace}\" is not running on this node"),
        ));
    };
    let uid = objects::uid(&obj).unwrap_or("").to_string();
    let mut filter = BTreeMap::new();
    filter.insert(LABEL_POD_UID.to_string(), uid.clone());
    let sandboxes = shared
        .runtime
        .list_pod_sandboxes(&filter)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let sandbox = sandboxes
        .into_iter()
        .filter(|s| s.state == SandboxState::Ready)
        .max_by_key(|s| s.attempt)
        .ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("pod {pod} has no running sandbox (network namespace) to forward to"),
            )
        })?;
    Ok(Target {
        sandbox_id: sandbox.id,
        pod: pod.to_string(),
        uid,
    })
}

/// `GET|POST /portForward/{namespace}/{pod}`: check, answer `101`, serve the connection.
pub(crate) async fn handle(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let target = match target(shared, req.uri().path()).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let header_of = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let spdy = header_of("upgrade").eq_ignore_ascii_case(SPDY_UPGRADE);
    let protocols = header_of("x-stream-protocol-version");
    if !spdy || !protocols.split(',').any(|p| p.trim() == PROTOCOL) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("port-forward needs an upgrade to {SPDY_UPGRADE} with X-Stream-Protocol-Version: {PROTOCOL}"),
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => session(shared, target, TokioIo::new(upgraded)).await,
            Err(e) => tracing::debug!("port-forward: the upgrade failed: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, SPDY_UPGRADE)
        .header("X-Stream-Protocol-Version", PROTOCOL)
        .body(http_body_util::BodyExt::boxed_unsync(http_body_util::Empty::new()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "could not build the upgrade answer"))
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Option<Vec<u8>>>)>,
}

/// Serve one SPDY connection until the client goes away.
async fn session<IO>(shared: Arc<Shared>, target: Target, io: IO)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(io);
    let (frames, writer) = spdy::spawn_writer(wr);
    let mut codec = spdy::HeaderCodec::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Where the data frames of each open data stream go.
    let mut inbound: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let frame = match spdy::read_frame(&mut rd, &mut codec).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(pod = %target.pod, "port-forward: {e}");
                break;
            }
        };
        match frame {
            Frame::SynStream { stream_id, headers, .. } => {
                let Some((kind, port, request)) = stream_headers(&headers) else {
                    let _ = frames
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::RST_PROTOCOL_ERROR,
                        })
                        .await;
                    continue;
                };
                let reply = Frame::SynReply {
                    stream_id,
                    fin: false,
                    headers: Headers::new(),
                };
                if frames.send(reply).await.is_err() {
                    break;
                }
                if let Some((port, error_id, data_id, rx)) =
                    pair_up(&mut pairs, &mut inbound, stream_id, &kind, port, request)
                {
                    let (shared, target, frames) = (shared.clone(), target.clone(), frames.clone());
                    forwards.spawn(async move {
                        forward(&shared, &target, port, error_id, data_id, rx, frames).await;
                    });
                }
            }
            Frame::Data { stream_id, fin, data } => {
                if let Some(tx) = inbound.get(&stream_id) {
                    if !data.is_empty() {
                        let _ = tx.send(Some(data)).await;
                    }
                    if fin {
                        let _ = tx.send(None).await;
                        inbound.remove(&stream_id);
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(tx) = inbound.remove(&stream_id) {
                    let _ = tx.send(None).await;
                }
            }
            // The client's pings have odd ids: echo them.
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = frames.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    // The connection is gone: so are its forwards.
    forwards.shutdown().await;
    drop(frames);
    let _ = writer.await;
}

/// Note a new stream of request `request`; once both streams of the request are there, the
/// pair to forward: `(port, error stream, data stream, the data stream's inbound bytes)`.
fn pair_up(
    pairs: &mut HashMap<String, Pair>,
    inbound: &mut HashMap<u32, mpsc::Sender<Option<Vec<u8>>>>,
    stream_id: u32,
    kind: &str,
    port: u16,
    request: String,
) -> Option<(u16, u32, u32, mpsc::Receiver<Option<Vec<u8>>>)> {
    let pair = pairs.entry(request.clone()).or_default();
    pair.port = port;
    if kind == "error" {
        pair.error = Some(stream_id);
    } else {
        let (tx, rx) = mpsc::channel(16);
        inbound.insert(stream_id, tx);
        pair.data = Some((stream_id, rx));
    }
    if pair.error.is_none() || pair.data.is_none() {
        return None;
    }
    match pairs.remove(&request)? {
        Pair {
            port,
            error: Some(error_id),
            data: Some((data_id, rx)),
        } => Some((port, error_id, data_id, rx)),
        _ => None,
    }
}

/// `(streamtype, port, requestid)` of a new stream, if they are all there and valid.
fn stream_headers(headers: &Headers) -> Option<(String, u16, String)> {
    let kind = spdy::header(headers, STREAM_TYPE).filter(|k| *k == "error" || *k == "data")?;
    let port = spdy::header(headers, PORT)?.parse::<u16>().ok().filter(|p| *p > 0)?;
    // kubectl always sends a request id; very old clients sent none and one pair at a time.
    let request = spdy::header(headers, REQUEST_ID).unwrap_or("").to_string();
    Some((kind.to_string(), port, request))
}

/// Forward one pair: dial the pod's port, copy both ways, then close both streams.
async fn forward(
    shared: &Shared,
    target: &Target,
    port: u16,
    error_id: u32,
    data_id: u32,
    mut from_client: mpsc::Receiver<Option<Vec<u8>>>,
    frames: mpsc::Sender<Frame>,
) {
    let data = |stream_id: u32, data: Vec<u8>, fin: bool| Frame::Data { stream_id, fin, data };
    let conn = match shared.runtime.port_forward(&target.sandbox_id, port).await {
        Ok(conn) => conn,
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                target.pod, target.uid
            );
            tracing::debug!("port-forward: {message}");
            let _ = frames.send(data(error_id, message.into_bytes(), false)).await;
            let _ = frames.send(data(error_id, Vec::new(), true)).await;
            let _ = frames.send(data(data_id, Vec::new(), true)).await;
            return;
        }
    };
    let (mut pod_rd, mut pod_wr) = tokio::io::split(conn);
    let to_pod = async {
        while let Some(Some(chunk)) = from_client.recv().await {
            if pod_wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = pod_wr.shutdown().await;
        // The client is done sending; the pod may still answer.
        std::future::pending::<()>().await
    };
    let from_pod = async {
        let mut buf = vec![0u8; spdy::MAX_DATA_CHUNK];
        loop {
            match pod_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if frames.send(data(data_id, buf[..n].to_vec(), false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = to_pod => {}
        _ = from_pod => {}
    }
    let _ = frames.send(data(data_id, Vec::new(), true)).await;
    let _ = frames.send(data(error_id, Vec::new(), true)).await;
}
