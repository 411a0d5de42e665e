//! # The client (mirrors client-go's REST client)
//!
//! Every component that is not the API server talks to the cluster through this client:
//! the `kulisse` CLI, and (in later chapters) the controllers, the scheduler, kubelets and
//! kube-proxy. It knows the URL layout of Kubernetes resources, sends the bearer token
//! from the kubeconfig, and turns failures back into Kubernetes `Status` errors.
//!
//! Every request carries the W3C `traceparent` header of the current span, so the API
//! server's spans join the caller's trace: this is how one `kulisse apply` becomes one
//! trace across processes.
//!
//! A client speaks **HTTP/2** to the API server (chosen in the TLS handshake, ALPN `h2`), as
//! client-go does: every request and every watch of one client travels as a stream of one
//! TCP connection, so a kubelet with five informers and a stream of status writes holds one
//! connection, not six. Clones of a client ([`Client::for_component`]) share it. The first
//! request opens that connection while the others wait for it ([`first`]). A server that
//! offers only HTTP/1.1 gets one connection per request in flight, as before.
//!
//! Where kulisse differs: a connection carries at most as many streams as the server allows
//! (1,000 at kulisse's API server, as at kube-apiserver). When they are all taken, Go's
//! transport opens a second connection; hyper's, and so this client, waits for a stream to
//! end. A program that holds a thousand watches gives them several clients
//! ([`Client::from_kubeconfig`] once per few hundred), as `kulisse bench`'s watch case does.

pub mod first;
pub mod informer;
pub mod kubeconfig;
pub mod leaderelection;
pub mod tls;
pub mod workqueue;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::objects::{self, ApiError, ResourceInfo};
pub use kubeconfig::{Connection, Kubeconfig};

/// The `Accept` header that asks the server for a `Table` (what `kubectl get` sends).
pub const ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// The `User-Agent` of kulisse's clients (the CLI's).
const USER_AGENT: &str = concat!("kulisse/", env!("CARGO_PKG_VERSION"));

/// Whether `ua` is the `User-Agent` of one of kulisse's components
/// (`kulisse/VERSION (scheduler)`, from [`Client::for_component`]) rather than of a user's
/// client (`kulisse/VERSION` of the CLI, kubectl's, ...). The API server traces the writes
/// of users even when they bring no trace, and leaves the components' untraced writes
/// (leases, heartbeats) in the background.
pub fn is_component_user_agent(ua: &str) -> bool {
    ua.strip_prefix("kulisse/").is_some_and(|rest| rest.contains(" ("))
}

/// A hyper client over TLS with `tls` (or plain HTTP, by the URL's scheme): HTTP/2 or
/// HTTP/1.1 as the server chooses in the TLS handshake when `h2`, HTTP/1.1 only otherwise.
fn http_client(tls: rustls::ClientConfig, h2: bool) -> Http {
    let mut http_connector = HttpConnector::new();
    http_connector.set_nodelay(true);
    http_connector.set_connect_timeout(Some(Duration::from_secs(5)));
    http_connector.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1();
    let connector = if h2 {
        builder.enable_http2().wrap_connector(http_connector)
    } else {
        builder.wrap_connector(http_connector)
    };
    HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// What can go wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a Kubernetes `Status` error (404, 409, 422, ...).
    #[error("{0}")]
    Api(ApiError),
    /// The server could not be reached.
    #[error("could not connect to the API server at {server}: {reason}. Is `kulisse up` running?")]
    Connect { server: String, reason: String },
    /// The server answered something that is not what the API promises.
    #[error("unexpected answer from the API server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP status code, for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

/// A raw response: status, headers, whole body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One event of a watch stream.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: String,
    pub object: Value,
}

/// A stream of watch events.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;

/// Options of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// A list at this store revision (with `resource_version_match`), e.g. an object's past.
    pub resource_version: Option<String>,
    /// `Exact`: the list as it was at `resource_version`; `NotOlderThan`: at least that new.
    pub resource_version_match: Option<String>,
}

type Http = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for one API server. Cheap to clone: connections are pooled and shared.
#[derive(Clone)]
pub struct Client {
    server: String,
    token: String,
    http: Http,
    /// The gate in front of `http`: one request opens the connection, the others wait for
    /// it ([`first`]).
    first: std::sync::Arc<first::FirstConnection>,
    /// HTTP/1.1 only, for the requests that upgrade their connection (`exec`, `attach`,
    /// `port-forward`): HTTP/2 has no `Upgrade`, and client-go's SPDY and WebSocket dialers
    /// ask for HTTP/1.1 too.
    http1: Http,
    /// The namespace used when a command does not name one.
    pub default_namespace: String,
    /// The `User-Agent` sent: `kulisse/VERSION`, with the component for the control plane's
    /// own components (`kulisse/0.1.0 (scheduler)`, [`Client::for_component`]).
    user_agent: HeaderValue,
}

impl Client {
    /// A client for a plain-HTTP `server` (`http://127.0.0.1:6443`) presenting `token`.
    pub fn new(server: &str, token: &str) -> Result<Self, ClientError> {
        Client::with_ca(server, token, None)
    }

    /// A client for `server` presenting `token`. An `https://` server is verified against
    /// `ca_pem` (the cluster CA from the kubeconfig), and nothing else: the token is only
    /// sent to the API server that CA vouches for.
    pub fn with_ca(server: &str, token: &str, ca_pem: Option<&[u8]>) -> Result<Self, ClientError> {
        Client::with_identity(server, token, ca_pem, None)
    }

    /// A client for `server` that logs in with a client certificate (`identity`) and/or a
    /// bearer token (`token`, empty for none), trusting only `ca_pem`.
    pub fn with_identity(
        server: &str,
        token: &str,
        ca_pem: Option<&[u8]>,
        identity: Option<&tls::Identity>,
    ) -> Result<Self, ClientError> {
        let uri: http::Uri = server
            .parse()
            .map_err(|e| ClientError::Protocol(format!("server URL {server:?} is not valid: {e}")))?;
        let tls = match (uri.scheme_str(), ca_pem) {
            (Some("http"), _) => None,
            (Some("https"), Some(ca)) => Some(tls::client_config_as(ca, identity).map_err(|e| {
                ClientError::Protocol(format!("cannot use the cluster CA or the client certificate: {e}"))
            })?),
            (Some("https"), None) => {
                return Err(ClientError::Protocol(format!(
                    "server URL {server:?} is https, but the kubeconfig has no certificate-authority-data to check it with"
                )));
            }
            (Some(other), _) => {
                return Err(ClientError::Protocol(format!(
                    "server URL {server:?} uses {other}://; expected https:// or http://"
                )));
            }
            (None, _) => {
                return Err(ClientError::Protocol(format!(
                    "server URL {server:?} has no scheme (expected https://HOST:PORT)"
                )));
            }
        };
        let tls = tls.unwrap_or_else(|| {
            // Plain HTTP: TLS is never used, but the connector type wants a configuration.
            rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        // HTTP/2 where the server offers it in the TLS handshake (ALPN), as API servers and
        // kubelets do; HTTP/1.1 otherwise. Not HTTP/2 only: the pool would then wait for one
        // connection attempt at a time, and one that hangs (a balancer with no server up
        // yet holds the handshake) would hold every request of the client behind it.
        let http = http_client(tls.clone(), true);
        let http1 = http_client(tls, false);
        Ok(Client {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
            first: Default::default(),
            http1,
            default_namespace: "default".into(),
            user_agent: HeaderValue::from_static(USER_AGENT),
        })
    }

    /// A client from a kubeconfig file's current context.
    pub fn from_kubeconfig(path: &std::path::Path) -> Result<Self, ClientError> {
        let conn = Kubeconfig::load(path)
            .and_then(|k| k.connection())
            .map_err(ClientError::Protocol)?;
        let mut client = Client::with_identity(
            &conn.server,
            &conn.token,
            conn.ca_pem.as_deref(),
            conn.identity.as_ref(),
        )?;
        client.default_namespace = conn.namespace;
        Ok(client)
    }

    /// This client, saying in its `User-Agent` that `component` (`scheduler`, `kubelet`, ...)
    /// sends its requests, and which instance (`instance`: the node of a kubelet, or empty).
    /// Upstream's components do the same (`kube-scheduler/v1.33.0 ...`). It is informative
    /// only: the API server tells who writes from the authenticated user, not from this.
    pub fn for_component(&self, component: &str, instance: &str) -> Client {
        let who = if instance.is_empty() {
            component.to_string()
        } else {
            format!("{component}/{instance}")
        };
        let mut client = self.clone();
        if let Ok(ua) = HeaderValue::from_str(&format!("{USER_AGENT} ({who})")) {
            client.user_agent = ua;
        }
        client
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The bearer token this client presents (components pass it on to their own servers,
    /// and send their spans to the control plane with it).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Send a request and read the whole answer. `path` includes the query string.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let resp = self.send(method, path, headers, body).await?;
        read_whole(resp).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let body = Bytes::from(body.unwrap_or_default());
        let turn = self.first.enter().await;
        let sent = self.send_over(&self.http, method, path, headers, body).await;
        let connected = !matches!(sent, Err(ClientError::Connect { .. }));
        match turn {
            first::Turn::Open(opener) => opener.done(connected),
            first::Turn::Go if !connected => self.first.lost(),
            first::Turn::Go => {}
        }
        sent
    }

    async fn send_over(
        &self,
        http: &Http,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let url = format!("{}{}", self.server, path);
        let mut req = Request::builder().method(method).uri(&url);
        let hm = req
            .headers_mut()
            .ok_or_else(|| ClientError::Protocol(format!("bad request URL {url}")))?;
        if !self.token.is_empty() {
            let value = HeaderValue::from_str(&format!("Bearer {}", self.token))
                .map_err(|_| ClientError::Protocol("the token contains characters not allowed in a header".into()))?;
            hm.insert(header::AUTHORIZATION, value);
        }
        hm.insert(header::USER_AGENT, self.user_agent.clone());
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                hm.insert(k, v);
            }
        }
        kulisse_traces::propagation::inject_current(hm);
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(format!("could not build request: {e}")))?;
        http.request(req).await.map_err(|e| ClientError::Connect {
            server: self.server.clone(),
            reason: connect_reason(&e),
        })
    }

    /// Open an upgraded connection (`GET path` with `Connection: Upgrade` and `headers`,
    /// e.g. a WebSocket's): the raw connection once the server answers `101 Switching
    /// Protocols`, with the answer's headers; any other answer becomes `ClientError::Api`.
    pub async fn upgrade(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, HeaderMap), ClientError> {
        let mut all = vec![("connection", "Upgrade")];
        all.extend_from_slice(headers);
        let mut resp = self
            .send_over(&self.http1, Method::GET, path, &all, Bytes::new())
            .await?;
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(refusal(resp, |status| format!("the server answered {status}, not 101")).await);
        }
        let headers = resp.headers().clone();
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| ClientError::Protocol(format!("the upgrade failed: {e}")))?;
        Ok((hyper_util::rt::TokioIo::new(upgraded), headers))
    }

    /// Open a WebSocket on `path` (a `pods/exec`, `attach` or `portforward` URL) offering
    /// `protocols` as subprotocols, best first: the client end of the socket and the
    /// subprotocol the server chose (empty when it chose none).
    pub async fn websocket(&self, path: &str, protocols: &[&str]) -> Result<(WebSocket, String), ClientError> {
        use tokio_tungstenite::tungstenite::handshake;
        let key = handshake::client::generate_key();
        let offered = protocols.join(", ");
        let (io, headers) = self
            .upgrade(
                path,
                &[
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", &key),
                    ("sec-websocket-protocol", &offered),
                ],
            )
            .await?;
        let accept = headers.get("sec-websocket-accept").and_then(|v| v.to_str().ok());
        if accept != Some(handshake::derive_accept_key(key.as_bytes()).as_str()) {
            return Err(ClientError::Protocol(
                "the server's WebSocket answer does not match the key sent".into(),
            ));
        }
        let chosen = headers
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        Ok((ws, chosen))
    }

    /// Send spans to the API server's OTLP/HTTP receiver: `POST /v1/traces` with an OTLP
    /// `ExportTraceServiceRequest` in protobuf (`body`), over this client's transport and with
    /// its bearer token. A non-2xx answer becomes `ClientError::Api`.
    pub async fn post_otlp(&self, body: Vec<u8>) -> Result<(), ClientError> {
        let resp = self
            .request(
                Method::POST,
                "/v1/traces",
                &[("content-type", "application/x-protobuf")],
                Some(body),
            )
            .await?;
        if resp.status.is_success() {
            return Ok(());
        }
        Err(parse_answer(&resp)
            .err()
            .unwrap_or_else(|| ClientError::Protocol(format!("POST /v1/traces answered {}", resp.status))))
    }

    /// Send a request whose answer is a JSON object; a non-2xx answer becomes `ClientError::Api`.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(Value, HeaderMap), ClientError> {
        let mut headers = vec![("accept", "application/json")];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let resp = self.request(method, path, &headers, bytes).await?;
        let value = parse_answer(&resp)?;
        Ok((value, resp.headers))
    }

    /// Send a request whose answer is a byte stream (logs with `follow`). A non-2xx answer
    /// becomes `ClientError::Api`.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
    ) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>, ClientError> {
        let resp = self
            .send(method, path, &[("accept", "text/plain, application/json")], None)
            .await?;
        if !resp.status().is_success() {
            return Err(refusal(resp, |status| format!("the server answered {status}")).await);
        }
        let body = resp.into_body().into_data_stream();
        Ok(Box::pin(body.map(|r| {
            r.map_err(|e| ClientError::Protocol(format!("the stream broke: {e}")))
        })))
    }

    /// `GET` one object.
    pub async fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> Result<Value, ClientError> {
        Ok(self
            .json(Method::GET, &path(info, ns, Some(name), None), None, None)
            .await?
            .0)
    }

    /// `GET` a collection (`ns: None` lists all namespaces).
    pub async fn list(&self, info: &ResourceInfo, ns: Option<&str>, params: &ListParams) -> Result<Value, ClientError> {
        let url = with_query(&path(info, ns, None, None), params, &[]);
        Ok(self.json(Method::GET, &url, None, None).await?.0)
    }

    /// A server-printed `Table` of one object or a collection.
    pub async fn table(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: Option<&str>,
        params: &ListParams,
    ) -> Result<Value, ClientError> {
        let url = with_query(&path(info, ns, name, None), params, &[]);
        let resp = self
            .request(Method::GET, &url, &[("accept", ACCEPT_TABLE)], None)
            .await?;
        parse_answer(&resp)
    }

    /// `POST` a new object.
    pub async fn create(&self, info: &ResourceInfo, ns: Option<&str>, obj: &Value) -> Result<Value, ClientError> {
        Ok(self
            .json(
                Method::POST,
                &path(info, ns, None, None),
                Some("application/json"),
                Some(obj),
            )
            .await?
            .0)
    }

    /// `PUT` an object (or its `status` with `sub = Some("status")`).
    pub async fn replace(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        Ok(self
            .json(
                Method::PUT,
                &path(info, ns, Some(name), sub),
                Some("application/json"),
                Some(obj),
            )
            .await?
            .0)
    }

    /// `PATCH` with a JSON merge patch.
    pub async fn merge_patch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        patch: &Value,
    ) -> Result<Value, ClientError> {
        Ok(self
            .json(
                Method::PATCH,
                &path(info, ns, Some(name), sub),
                Some("application/merge-patch+json"),
                Some(patch),
            )
            .await?
            .0)
    }

    /// Server-side apply of a whole desired object. Returns the stored object and what
    /// the server did: `created`, `configured` or `unchanged`.
    pub async fn apply(&self, obj: &Value, field_manager: &str, dry_run: bool) -> Result<(Value, String), ClientError> {
        let (info, ns, name) = self.target_of(obj)?;
        let mut url = format!(
            "{}?fieldManager={}&force=true",
            path(info, ns.as_deref(), Some(&name), None),
            encode(field_manager)
        );
        if dry_run {
            url.push_str("&dryRun=All");
        }
        let (value, headers) = self
            .json(Method::PATCH, &url, Some("application/apply-patch+yaml"), Some(obj))
            .await?;
        let outcome = headers
            .get(crate::objects::APPLY_OUTCOME_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("serverside-applied")
            .to_string();
        Ok((value, outcome))
    }

    /// `DELETE` an object; `propagation` is `Background`, `Foreground` or `Orphan`.
    pub async fn delete(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        propagation: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = propagation
            .map(|p| serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": p}));
        Ok(self
            .json(
                Method::DELETE,
                &path(info, ns, Some(name), None),
                Some("application/json"),
                body.as_ref(),
            )
            .await?
            .0)
    }

    /// `DELETE` with a full `DeleteOptions` body (`gracePeriodSeconds`, `propagationPolicy`,
    /// `preconditions`). A kubelet finishing a pod's termination sends `gracePeriodSeconds: 0`.
    pub async fn delete_with_options(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value, ClientError> {
        Ok(self
            .json(
                Method::DELETE,
                &path(info, ns, Some(name), None),
                Some("application/json"),
                Some(options),
            )
            .await?
            .0)
    }

    /// Bind a pod to a node: `POST .../pods/{name}/binding` with a `Binding` (what the
    /// scheduler does at the end of a scheduling cycle).
    pub async fn bind(&self, ns: &str, pod: &str, node: &str) -> Result<(), ClientError> {
        let info = objects::by_gvk("v1", "Pod").expect("Pod is a built-in kind");
        let binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        self.json(
            Method::POST,
            &path(info, Some(ns), Some(pod), Some("binding")),
            Some("application/json"),
            Some(&binding),
        )
        .await?;
        Ok(())
    }

    /// Watch a collection from `resource_version` (exclusive; `None` starts with the
    /// current objects as `ADDED` events).
    pub async fn watch(
        &self,
        info: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
        resource_version: Option<&str>,
    ) -> Result<WatchEvents, ClientError> {
        let mut extra = vec![("watch", "true".to_string())];
        if let Some(rv) = resource_version {
            extra.push(("resourceVersion", rv.to_string()));
        }
        let url = with_query(&path(info, ns, None, None), params, &extra);
        let resp = self
            .send(Method::GET, &url, &[("accept", "application/json")], None)
            .await?;
        if !resp.status().is_success() {
            return Err(refusal(resp, |status| format!("watch answered {status}")).await);
        }
        let body = resp.into_body().into_data_stream();
        let stream = watch_lines(body);
        Ok(Box::pin(stream))
    }

    /// Which resource, namespace and name a manifest object is, for the URL.
    pub fn target_of(&self, obj: &Value) -> Result<(&'static ResourceInfo, Option<String>, String), ClientError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let info = objects::by_gvk(api_version, kind).ok_or_else(|| {
            ClientError::Api(ApiError::bad_request(&format!(
                "no kind \"{kind}\" is registered for version \"{api_version}\"; the server knows: {}",
                objects::kind_names().join(", ")
            )))
        })?;
        let name = objects::name(obj).unwrap_or("").to_string();
        let ns = if info.namespaced {
            Some(objects::namespace(obj).unwrap_or(&self.default_namespace).to_string())
        } else {
            None
        };
        Ok((info, ns, name))
    }
}

/// Parse newline-delimited JSON watch events out of a chunked body: one event per line.
fn watch_lines<S>(body: S) -> impl Stream<Item = Result<WatchEvent, ClientError>> + Send
where
    S: Stream<Item = Result<Bytes, hyper::Error>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (body, Vec::<u8>::new(), false),
        |(mut body, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<Value>(&line)
                        .map_err(|e| ClientError::Protocol(format!("a watch event is not JSON: {e}")))
                        .map(|v| WatchEvent {
                            kind: v.get("type").and_then(Value::as_str).unwrap_or("").to_string(),
                            object: v.get("object").cloned().unwrap_or(Value::Null),
                        });
                    return Some((item, (body, buf, false)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        return Some((
                            Err(ClientError::Protocol(format!("the watch connection broke: {e}"))),
                            (body, buf, true),
                        ));
                    }
                    None => return None,
                }
            }
        },
    )
}

/// The client end of a WebSocket to the API server ([`Client::websocket`]).
pub type WebSocket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The error a streamed answer that is not the one asked for carries: the server's Status
/// when the body is one, else `plain(status code)`.
async fn refusal(
    resp: http::Response<hyper::body::Incoming>,
    plain: impl FnOnce(http::StatusCode) -> String,
) -> ClientError {
    let status = resp.status();
    match read_whole(resp).await {
        Ok(raw) => parse_answer(&raw)
            .err()
            .unwrap_or_else(|| ClientError::Protocol(plain(status))),
        Err(_) => ClientError::Protocol(plain(status)),
    }
}

/// An answer with its whole body read.
async fn read_whole(resp: http::Response<hyper::body::Incoming>) -> Result<RawResponse, ClientError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Protocol(format!("reading the answer failed: {e}")))?
        .to_bytes();
    Ok(RawResponse { status, headers, body })
}

fn parse_answer(resp: &RawResponse) -> Result<Value, ClientError> {
    let value: Result<Value, _> = serde_json::from_slice(&resp.body);
    if resp.status.is_success() {
        return value.map_err(|e| ClientError::Protocol(format!("the answer is not JSON: {e}")));
    }
    if let Ok(v) = &value {
        if let Some(err) = ApiError::from_status_json(v) {
            return Err(ClientError::Api(err));
        }
    }
    let text = String::from_utf8_lossy(&resp.body);
    Err(ClientError::Api(ApiError {
        code: resp.status.as_u16(),
        reason: resp.status.canonical_reason().unwrap_or("Unknown").replace(' ', ""),
        message: format!("the server answered {}: {}", resp.status, text.trim()),
        details: None,
    }))
}

fn connect_reason(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut source: Option<&dyn Error> = e.source();
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// The URL path of a resource: `/apis/apps/v1/namespaces/default/deployments/web/scale`.
pub fn path(info: &ResourceInfo, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> String {
    let mut p = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    if info.namespaced {
        if let Some(ns) = ns {
            p.push_str(&format!("/namespaces/{}", encode(ns)));
        }
    }
    p.push('/');
    p.push_str(info.plural);
    if let Some(name) = name {
        p.push('/');
        p.push_str(&encode(name));
        if let Some(sub) = sub {
            p.push('/');
            p.push_str(sub);
        }
    }
    p
}

fn with_query(base: &str, params: &ListParams, extra: &[(&str, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(l) = &params.label_selector {
        q.append_pair("labelSelector", l);
    }
    if let Some(f) = &params.field_selector {
        q.append_pair("fieldSelector", f);
    }
    if let Some(l) = params.limit {
        q.append_pair("limit", &l.to_string());
    }
    if let Some(c) = &params.continue_token {
        q.append_pair("continue", c);
    }
    if let Some(rv) = &params.resource_version {
        q.append_pair("resourceVersion", rv);
    }
    if let Some(m) = &params.resource_version_match {
        q.append_pair("resourceVersionMatch", m);
    }
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{q}")
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
