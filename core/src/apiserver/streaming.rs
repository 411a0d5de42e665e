//! # exec, attach and port-forward (mirrors the `pods/exec`, `pods/attach` and `pods/portforward` subresources)
//!
//! `kubectl exec` opens `GET /api/v1/namespaces/{ns}/pods/{name}/exec?command=...` with an
//! `Upgrade: websocket` header. The API server does not run anything: like upstream's
//! `UpgradeAwareHandler`, it finds the pod's kubelet (the same lookup as `pods/log`,
//! [`super::logs::pod_kubelet`]), repeats the upgrade request to the kubelet's
//! `/exec/{ns}/{pod}/{container}`, and when the kubelet answers `101 Switching Protocols`
//! it answers the client the same and splices the two connections together, byte for byte.
//! The WebSocket itself is between kubectl and the kubelet ([`crate::kubelet`]).
//! The call to the kubelet goes the way logs go: HTTPS, the API server logging in with its
//! kubelet client certificate ([`super::logs::call_kubelet`]), which is the only user the
//! kubelet lets exec.
//!
//! `kubectl port-forward` opens `GET .../pods/{name}/portforward` as a WebSocket with the
//! subprotocol `SPDY/3.1+portforward.k8s.io`: a tunnel whose binary messages carry a SPDY
//! connection ([`crate::portforward`]). Here the API server does what upstream's
//! `TunnelingHandler` does: it opens a plain SPDY upgrade to the kubelet's
//! `/portForward/{ns}/{pod}`, answers the client's WebSocket itself and pumps the tunnel's
//! bytes to the kubelet and back ([`crate::portforward::tunnel`]). A client that asks for
//! SPDY directly (kubectl before 1.31, or its fallback) is spliced byte for byte, as exec is.
//!
//! Authorization: the three subresources need verb `create` (`create pods/exec`), whatever the
//! method. kubectl's WebSocket upgrade is a GET, which kube-apiserver 1.32 still checked as
//! `get`; upstream closed that gap in 1.35 (`AuthorizePodWebsocketUpgradeCreatePermission`),
//! and kulisse does what 1.35 does.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Body, Ctx};
use crate::objects::ApiError;
use crate::portforward::{self, PROTOCOL, SPDY_UPGRADE, TUNNELING_PROTOCOL};

/// The request headers that make up an upgrade, passed on to the kubelet.
const UPGRADE_HEADERS: [&str; 6] = [
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The answer headers passed back to the client.
const ANSWER_HEADERS: [&str; 5] = [
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `GET|POST .../pods/{name}/exec` and `/attach`: proxy the upgrade to the kubelet.
pub async fn handle(ctx: &Ctx<'_>, ns: &str, name: &str, sub: &str) -> Result<Response<Body>, ApiError> {
    let (pod, kubelet) = super::logs::pod_kubelet(ctx, ns, name, "containers to exec into").await?;
    not_completed(&pod, &format!("{sub} into a container in"))?;
    let container = super::logs::container_of(ctx, &pod, name)?;
    let on_upgrade = take_upgrade(
        ctx,
        &format!("pods/{sub} needs an upgraded connection (Upgrade: websocket)"),
    )?;
    let url = format!(
        "{}/{sub}/{ns}/{name}/{container}?{}",
        kubelet.base_url,
        ctx.raw_query.as_deref().unwrap_or("")
    );
    let mut req = http::Request::get(&url);
    for h in UPGRADE_HEADERS {
        if let Some(v) = ctx.headers.get(h) {
            req = req.header(h, v);
        }
    }
    let switched = |s: &StatusCode| *s == StatusCode::SWITCHING_PROTOCOLS;
    let mut resp = super::logs::call_kubelet(ctx, &kubelet, req, sub, switched).await?;
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for h in ANSWER_HEADERS {
        if let Some(v) = resp.headers().get(h) {
            answer = answer.header(h, v);
        }
    }
    let kubelet_side = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        match tokio::try_join!(on_upgrade, kubelet_side) {
            Ok((client, kubelet)) => {
                let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
            }
            Err(e) => tracing::debug!("exec: an upgrade failed: {e}"),
        }
    });
    switching(answer)
}

/// Refuse a pod that has finished: there is nothing left to `what` it (kubectl's words:
/// "cannot exec into a container in a completed pod; current phase is Succeeded").
fn not_completed(pod: &Value, what: &str) -> Result<(), ApiError> {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot {what} a completed pod; current phase is {phase}"
        )));
    }
    Ok(())
}

/// The client's side of the upgrade, which the server handed to this request; `missing` says
/// what the client should have sent.
fn take_upgrade(ctx: &Ctx<'_>, missing: &str) -> Result<hyper::upgrade::OnUpgrade, ApiError> {
    ctx.upgrade
        .lock()
        .ok()
        .and_then(|mut u| u.take())
        .ok_or_else(|| ApiError::bad_request(missing.to_string()))
}

/// The `101 Switching Protocols` answer, headers as built.
fn switching(answer: http::response::Builder) -> Result<Response<Body>, ApiError> {
    answer
        .body(BodyExt::boxed(http_body_util::Full::new(Bytes::new())))
        .map_err(|e| ApiError::internal(format!("could not build the upgrade answer: {e}")))
}

/// `GET|POST .../pods/{name}/portforward`: open a SPDY connection to the pod's kubelet and
/// join it to the client, unwrapping the client's WebSocket tunnel if it sent one.
pub async fn port_forward(ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let (pod, kubelet) = super::logs::pod_kubelet(ctx, ns, name, "ports to forward").await?;
    not_completed(&pod, "forward ports to")?;
    let header_of = |h: &str| ctx.headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let websocket = header_of("upgrade").eq_ignore_ascii_case("websocket");
    if websocket
        && !header_of("sec-websocket-protocol")
            .split(',')
            .any(|p| p.trim() == TUNNELING_PROTOCOL)
    {
        return Err(ApiError::bad_request(format!(
            "port-forward over WebSocket needs the subprotocol {TUNNELING_PROTOCOL}"
        )));
    }
    if !websocket && !header_of("upgrade").eq_ignore_ascii_case(SPDY_UPGRADE) {
        return Err(ApiError::bad_request(format!(
            "pods/portforward needs an upgraded connection (Upgrade: websocket with {TUNNELING_PROTOCOL}, or {SPDY_UPGRADE})"
        )));
    }
    let key = header_of("sec-websocket-key").to_string();
    let on_upgrade = take_upgrade(ctx, "pods/portforward needs an upgraded connection")?;
    let req = http::Request::get(format!("{}/portForward/{ns}/{name}", kubelet.base_url))
        .header("connection", "Upgrade")
        .header("upgrade", SPDY_UPGRADE)
        .header("x-stream-protocol-version", PROTOCOL);
    let switched = |s: &StatusCode| *s == StatusCode::SWITCHING_PROTOCOLS;
    let mut resp = super::logs::call_kubelet(ctx, &kubelet, req, "portforward", switched).await?;
    let kubelet_side = hyper::upgrade::on(&mut resp);
    let answer = if websocket {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", TUNNELING_PROTOCOL)
    } else {
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", SPDY_UPGRADE)
            .header("connection", "Upgrade")
            .header("x-stream-protocol-version", PROTOCOL)
    };
    tokio::spawn(async move {
        let (client, kubelet) = match tokio::try_join!(on_upgrade, kubelet_side) {
            Ok(both) => both,
            Err(e) => return tracing::debug!("portforward: an upgrade failed: {e}"),
        };
        let (client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
        if websocket {
            use tokio_tungstenite::tungstenite::protocol::Role;
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Server, None).await;
            portforward::tunnel(ws, kubelet).await;
        } else {
            let mut client = client;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await;
        }
    });
    switching(answer)
}
