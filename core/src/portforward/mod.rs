//! # port-forward (mirrors apimachinery's `httpstream/spdy` and client-go's `tools/portforward`)
//!
//! `kubectl port-forward pod/web 8080:80` listens on `127.0.0.1:8080`; every connection a
//! local program makes there reaches port 80 *inside the pod's network namespace*, as if
//! dialled from the pod itself to `localhost:80`. No Service, no published port, no pod IP
//! routing is involved: the bytes travel over the API server and the kubelet.
//!
//! The road, hop by hop:
//!
//! 1. **kubectl → API server.** `GET /api/v1/namespaces/{ns}/pods/{name}/portforward`,
//!    upgraded to a **WebSocket** with the subprotocol `SPDY/3.1+portforward.k8s.io`
//!    ([`TUNNELING_PROTOCOL`], kubectl ≥ 1.31; older ones upgrade straight to SPDY). The
//!    WebSocket only *tunnels*: its binary messages carry the bytes of a SPDY connection.
//! 2. **API server → kubelet.** The API server unwraps the tunnel and opens a plain SPDY
//!    upgrade to the kubelet's `/portForward/{ns}/{pod}` ([`tunnel`] pumps the bytes), as
//!    upstream's `TunnelingHandler` does. It authorizes `create pods/portforward` first.
//! 3. **Inside the SPDY connection**, each local connection gets a *pair* of streams that
//!    share a `requestid` header: an **error** stream (kubectl half-closes it at once; the
//!    kubelet writes a message there if forwarding fails) and a **data** stream, the TCP
//!    bytes both ways. Both carry `port: 80` ([`STREAM_TYPE`], [`PORT`], [`REQUEST_ID`]).
//! 4. **Kubelet → pod.** The kubelet asks the runtime for a connection to the port in the
//!    pod's network namespace (the CRI's `PortForward`) and copies the data stream to it.
//!
//! The framing is in [`spdy`]; [`Client`] is the kubectl side (used by `kulisse
//! port-forward`), and the kubelet side lives in `kubelet/portforward.rs`.
//!
//! Where kulisse differs: there is no SPDY flow control (neither does client-go's
//! spdystream enforce it), and the kubelet does not time out a stream pair that never
//! completes; it goes when the connection goes.

pub mod spdy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use spdy::{Frame, Headers};

/// The stream protocol inside SPDY (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of the tunnel: SPDY inside WebSocket.
pub const TUNNELING_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The `Upgrade` token of a plain SPDY connection.
pub const SPDY_UPGRADE: &str = "SPDY/3.1";
/// Stream header: `error` or `data`.
pub const STREAM_TYPE: &str = "streamtype";
/// Stream header: the pod's port.
pub const PORT: &str = "port";
/// Stream header: pairs an error stream with its data stream.
pub const REQUEST_ID: &str = "requestid";
/// How long a client waits for the other side to accept a stream (client-go: 30 s).
const STREAM_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pump the bytes of a tunnelled connection: each binary WebSocket message from `ws` is
/// written to `io`, and what `io` yields goes back as binary messages. Ends when either
/// side closes; the other then sees its end too (a WebSocket close, or EOF).
pub async fn tunnel<S, IO>(ws: WebSocketStream<S>, io: IO)
where
    S: AsyncRead + AsyncWrite + Unpin,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let inbound = async {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) => {
                    if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                        break;
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; spdy::MAX_DATA_CHUNK + 64];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    };
    // Whichever side ends first, the other follows: inbound's shutdown ends the peer,
    // whose EOF ends outbound; outbound's close ends the client, whose close ends inbound.
    tokio::join!(inbound, outbound);
}

/// Open a port-forward connection to pod `ns/name` through the API server, as kubectl
/// ≥ 1.31 does: a WebSocket upgrade of `pods/{name}/portforward` asking for
/// [`TUNNELING_PROTOCOL`], whose messages then carry the SPDY connection.
pub async fn connect(api: &crate::client::Client, ns: &str, name: &str) -> Result<Client, crate::client::ClientError> {
    let info = crate::objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
    let path = crate::client::path(info, Some(ns), Some(name), Some("portforward"));
    let (ws, _) = api.websocket(&path, &[TUNNELING_PROTOCOL]).await?;
    let (near, far) = tokio::io::duplex(4 * spdy::MAX_DATA_CHUNK);
    tokio::spawn(tunnel(ws, far));
    Ok(Client::start(near))
}

/// What arrives on a stream the client opened.
type Incoming = mpsc::Sender<Option<Vec<u8>>>;

struct Slot {
    reply: Option<oneshot::Sender<Result<(), String>>>,
    incoming: Incoming,
}

/// The kubectl side of a port-forward connection: opens a stream pair per local
/// connection and copies bytes (client-go's `PortForwarder.handleConnection`).
pub struct Client {
    frames: mpsc::Sender<Frame>,
    streams: Arc<Mutex<HashMap<u32, Slot>>>,
    next_stream: AtomicU32,
    next_request: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Speak SPDY as the client over `io` (an upgraded connection, or a tunnel's end).
    pub fn start<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO) -> Client {
        let (rd, wr) = tokio::io::split(io);
        let (frames, _writer) = spdy::spawn_writer(wr);
        let streams: Arc<Mutex<HashMap<u32, Slot>>> = Arc::default();
        let reader = tokio::spawn(read_loop(rd, streams.clone(), frames.clone()));
        Client {
            frames,
            streams,
            next_stream: AtomicU32::new(1),
            next_request: AtomicU32::new(0),
            reader,
        }
    }

    /// Has the connection ended (the server went away)?
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Open a stream with `headers` and wait for the server to accept it.
    async fn open(&self, headers: Headers) -> Result<(u32, mpsc::Receiver<Option<Vec<u8>>>), String> {
        let stream_id = self.next_stream.fetch_add(2, Ordering::SeqCst);
        let (reply_tx, reply_rx) = oneshot::channel();
        let (incoming, rx) = mpsc::channel(16);
        if let Ok(mut s) = self.streams.lock() {
            s.insert(
                stream_id,
                Slot {
                    reply: Some(reply_tx),
                    incoming,
                },
            );
        }
        let syn = Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            fin: false,
            headers,
        };
        self.frames
            .send(syn)
            .await
            .map_err(|_| "the port-forward connection is closed".to_string())?;
        match tokio::time::timeout(STREAM_REPLY_TIMEOUT, reply_rx).await {
            Ok(Ok(Ok(()))) => Ok((stream_id, rx)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err("the port-forward connection closed before the stream was accepted".into()),
            Err(_) => Err(format!(
                "timed out after {}s waiting for the server to accept a stream",
                STREAM_REPLY_TIMEOUT.as_secs()
            )),
        }
    }

    async fn send_data(&self, stream_id: u32, data: Vec<u8>, fin: bool) -> bool {
        self.frames.send(Frame::Data { stream_id, fin, data }).await.is_ok()
    }

    fn forget(&self, ids: &[u32]) {
        if let Ok(mut s) = self.streams.lock() {
            for id in ids {
                s.remove(id);
            }
        }
    }

    /// Forward one local connection to `port` of the pod. `Err` carries what the server
    /// wrote on the error stream (or why the streams could not be opened).
    pub async fn forward<C: AsyncRead + AsyncWrite + Unpin>(&self, port: u16, local: C) -> Result<(), String> {
        let request_id = self.next_request.fetch_add(1, Ordering::SeqCst).to_string();
        let headers = |kind: &str| -> Headers {
            vec![
                (STREAM_TYPE.into(), kind.into()),
                (PORT.into(), port.to_string()),
                (REQUEST_ID.into(), request_id.clone()),
            ]
        };
        let (error_id, mut error_rx) = self.open(headers("error")).await?;
        // The client never writes on the error stream: half-close it at once.
        self.send_data(error_id, Vec::new(), true).await;
        let (data_id, mut data_rx) = match self.open(headers("data")).await {
            Ok(opened) => opened,
            Err(e) => {
                self.forget(&[error_id]);
                return Err(e);
            }
        };
        let (mut local_rd, mut local_wr) = tokio::io::split(local);
        let remote_to_local = async {
            while let Some(Some(chunk)) = data_rx.recv().await {
                if local_wr.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = local_wr.shutdown().await;
        };
        let local_to_remote = async {
            let mut buf = vec![0u8; spdy::MAX_DATA_CHUNK];
            loop {
                match local_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !self.send_data(data_id, buf[..n].to_vec(), false).await {
                            return;
                        }
                    }
                }
            }
            self.send_data(data_id, Vec::new(), true).await;
            // Keep waiting: the answer may still be coming (remote_to_local ends the select).
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = remote_to_local => {}
            _ = local_to_remote => {}
        }
        let mut message = Vec::new();
        while let Some(Some(chunk)) = error_rx.recv().await {
            message.extend(chunk);
        }
        self.forget(&[error_id, data_id]);
        if message.is_empty() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&message).into_owned())
        }
    }
}

/// Dispatch the server's frames to the client's streams.
async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    streams: Arc<Mutex<HashMap<u32, Slot>>>,
    frames: mpsc::Sender<Frame>,
) {
    let mut codec = spdy::HeaderCodec::new();
    loop {
        let frame = match spdy::read_frame(&mut rd, &mut codec).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("port-forward: {e}");
                break;
            }
        };
        match frame {
            Frame::SynReply { stream_id, fin, .. } => {
                let slot = streams.lock().ok().and_then(|mut s| {
                    let slot = s.get_mut(&stream_id)?;
                    Some((slot.reply.take(), slot.incoming.clone()))
                });
                if let Some((reply, incoming)) = slot {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                    if fin {
                        let _ = incoming.send(None).await;
                    }
                }
            }
            Frame::Data { stream_id, fin, data } => {
                let incoming = streams
                    .lock()
                    .ok()
                    .and_then(|s| s.get(&stream_id).map(|s| s.incoming.clone()));
                if let Some(incoming) = incoming {
                    if !data.is_empty() {
                        let _ = incoming.send(Some(data)).await;
                    }
                    if fin {
                        let _ = incoming.send(None).await;
                    }
                }
            }
            Frame::RstStream { stream_id, status } => {
                let slot = streams.lock().ok().and_then(|mut s| s.remove(&stream_id));
                if let Some(mut slot) = slot {
                    if let Some(reply) = slot.reply.take() {
                        let _ = reply.send(Err(format!("the server reset the stream (status {status})")));
                    }
                    let _ = slot.incoming.send(None).await;
                }
            }
            // Pings the server starts have even ids; echo them.
            Frame::Ping { id } if id % 2 == 0 => {
                let _ = frames.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => break,
            _ => {}
        }
    }
    // The connection ended: wake everyone who waits.
    if let Ok(mut s) = streams.lock() {
        for (_, mut slot) in s.drain() {
            if let Some(reply) = slot.reply.take() {
                let _ = reply.send(Err("the port-forward connection closed".into()));
            }
            let _ = slot.incoming.try_send(None);
        }
    }
}
