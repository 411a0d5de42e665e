//! # exec and attach on the kubelet (mirrors the kubelet's CRI streaming server)
//!
//! `kubectl exec POD -- cmd` reaches the API server as `pods/exec`; the API server proxies
//! the upgraded connection here, to `/exec/{namespace}/{pod}/{container}?command=...`
//! (`/attach/...` for `kubectl attach`). Upstream's kubelet hands the request to the CRI
//! runtime's own streaming server; kulisse's kubelet speaks the protocol itself and asks
//! the runtime for the streams ([`ContainerRuntime::exec`](crate::runtime::ContainerRuntime::exec)).
//!
//! The connection is a WebSocket with the `v5.channel.k8s.io` (or `v4`) subprotocol; see
//! [`crate::remotecommand`] for the channels. kulisse does not serve the older SPDY
//! transport for exec (kubectl ≥ 1.31 uses WebSocket); port-forward, which speaks SPDY, is in
//! [`super::portforward`].
//!
//! Only the API server may open a session: the request arrives over the kubelet's HTTPS port
//! and passes the same check as `/containerLogs` (a client certificate naming
//! `kube-apiserver-kubelet-client`, see [`super::server`]); whether the *user* may exec was
//! decided by the API server (`create pods/exec`). The pod and container are checked before
//! the protocol, because kubectl retries a refused WebSocket upgrade over SPDY and prints
//! only that second answer. The session ends with the status on channel 3 and a normal
//! WebSocket close (1000): client-go treats any other close as a broken stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Shared;
use super::reply::{Body, text};
use crate::objects;
use crate::remotecommand::{self, CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT};
use crate::runtime::{ContainerState, LABEL_CONTAINER_NAME, LABEL_POD_UID, StreamIo, TerminalSize};

/// What an `/exec/...` or `/attach/...` request asks for.
struct StreamRequest {
    attach: bool,
    namespace: String,
    pod: String,
    container: String,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn parse(path: &str, query: &str) -> Result<StreamRequest, String> {
    let (attach, rest) = match (path.strip_prefix("/exec/"), path.strip_prefix("/attach/")) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        _ => return Err(format!("{path} is neither /exec/... nor /attach/...")),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, pod, container] = parts.as_slice() else {
        return Err(format!(
            "expected /exec/{{namespace}}/{{pod}}/{{container}}, got {path}"
        ));
    };
    let mut r = StreamRequest {
        attach,
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        container: container.to_string(),
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let on = v == "true" || v == "1";
        match k.as_ref() {
            "command" => r.command.push(v.into_owned()),
            "stdin" => r.stdin = on,
            "stdout" => r.stdout = on,
            "stderr" => r.stderr = on,
            "tty" => r.tty = on,
            _ => {}
        }
    }
    if !attach && r.command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
    if !(r.stdin || r.stdout || r.stderr) {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    // A terminal has one output stream (upstream: "tty and stderr are mutually exclusive").
    r.stderr &= !r.tty;
    Ok(r)
}

/// The running instance of the container the request names.
async fn running_container(shared: &Shared, r: &StreamRequest) -> Result<String, Response<Body>> {
    let Some(pod) = shared.pods.get(&format!("{}/{}", r.namespace, r.pod)) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "pod \"{}\" in namespace \"{}\" is not running on this node",
                r.pod, r.namespace
            ),
        ));
    };
    let mut filter = BTreeMap::new();
    filter.insert(LABEL_POD_UID.to_string(), objects::uid(&pod).unwrap_or("").to_string());
    filter.insert(LABEL_CONTAINER_NAME.to_string(), r.container.clone());
    let instances = shared
        .runtime
        .list_containers(&filter)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    instances
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .max_by_key(|c| c.attempt)
        .map(|c| c.id)
        .ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                format!("container {} is not running in pod {}", r.container, r.pod),
            )
        })
}

/// `GET|POST /exec/...` and `/attach/...`: check, answer `101 Switching Protocols`, and
/// serve the session on the upgraded connection.
pub(crate) async fn handle(shared: &Arc<Shared>, mut req: Request<Incoming>) -> Response<Body> {
    let r = match parse(req.uri().path(), req.uri().query().unwrap_or("")) {
        Ok(r) => r,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    // The pod and container first: kubectl retries a refused WebSocket upgrade over SPDY,
    // and prints only that second answer, so both must carry the reason that matters.
    let id = match running_container(shared, &r).await {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let header_of = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let websocket = header_of("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (header_of("sec-websocket-key"), websocket) else {
        return text(
            StatusCode::BAD_REQUEST,
            "kulisse's kubelet serves exec and attach over WebSocket only (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY",
        );
    };
    let Some(protocol) = remotecommand::negotiate(&header_of("sec-websocket-protocol").unwrap_or_default()) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "no supported subprotocol offered; kulisse speaks {}",
                remotecommand::PROTOCOLS.join(", ")
            ),
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let shared = shared.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                session(&shared, &id, r, ws, protocol == remotecommand::V5).await;
            }
            Err(e) => tracing::debug!("exec: the upgrade failed: {e}"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(http_body_util::BodyExt::boxed_unsync(http_body_util::Empty::new()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "could not build the upgrade answer"))
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The client's side of a session: stdin, resizes, and (v5) the close of stdin.
async fn read_client(
    mut source: futures::stream::SplitStream<Ws>,
    stdin_tx: mpsc::Sender<Vec<u8>>,
    resize_tx: mpsc::Sender<TerminalSize>,
    v5: bool,
) {
    let mut stdin = Some(stdin_tx);
    while let Some(Ok(msg)) = source.next().await {
        let data = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        match (data.first().copied(), &stdin) {
            (Some(STDIN), Some(tx)) if data.len() > 1 => {
                let _ = tx.send(data[1..].to_vec()).await;
            }
            (Some(RESIZE), _) => {
                if let Ok(size) = serde_json::from_slice::<TerminalSize>(&data[1..]) {
                    let _ = resize_tx.send(size).await;
                }
            }
            (Some(CLOSE), _) if v5 && data.get(1) == Some(&STDIN) => stdin = None,
            _ => {}
        }
    }
}

/// One session: client messages become stdin and resizes; the runtime's output becomes
/// stdout/stderr messages; the end becomes the status on the error channel.
async fn session(shared: &Shared, id: &str, r: StreamRequest, ws: Ws, v5: bool) {
    let (mut sink, source) = ws.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    let (err_tx, mut err_rx) = mpsc::channel::<Vec<u8>>(16);
    let io = StreamIo {
        stdin: r.stdin.then_some(stdin_rx),
        stdout: r.stdout.then_some(out_tx),
        stderr: r.stderr.then_some(err_tx),
        resize: r.tty.then_some(resize_rx),
        tty: r.tty,
    };
    let reader = tokio::spawn(read_client(source, stdin_tx, resize_tx, v5));
    let run = async {
        if r.attach {
            shared.runtime.attach(id, io).await.map(|code| code.unwrap_or(0))
        } else {
            shared.runtime.exec(id, &r.command, io).await
        }
    };
    let forward = async {
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let (channel, chunk) = tokio::select! {
                c = out_rx.recv(), if out_open => (STDOUT, c),
                c = err_rx.recv(), if err_open => (STDERR, c),
            };
            let Some(mut chunk) = chunk else {
                if channel == STDOUT {
                    out_open = false
                } else {
                    err_open = false
                }
                continue;
            };
            chunk.insert(0, channel);
            if sink.send(Message::Binary(chunk.into())).await.is_err() {
                break;
            }
        }
        sink
    };
    let (result, mut sink) = tokio::join!(run, forward);
    let status = match &result {
        Ok(code) => remotecommand::exit_status(*code, &r.command),
        Err(e) => remotecommand::error_status(&e.to_string()),
    };
    let mut message = vec![ERROR];
    message.extend(serde_json::to_vec(&status).unwrap_or_default());
    let _ = sink.send(Message::Binary(message.into())).await;
    // A normal close (1000): client-go treats any other close, even one without a code, as
    // a broken stream and drops what the error channel said.
    let close = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
    reader.abort();
}
