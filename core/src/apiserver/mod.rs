//! Stations ① and ② · chapters "apply: from the CLI to the API server" (book/src/apply.md) and "The store: keys, revisions, watches" (book/src/store.md) · spans `apiserver.*`, `store.*`
//!
//! # The API server (mirrors kube-apiserver)
//!
//! Everything in a Kubernetes cluster goes through the API server: `kubectl`, the
//! controller manager, the scheduler, every kubelet. It is the only component that talks
//! to the store. A request passes the same stations every time, and each one is a span
//! in the trace:
//!
//! 1. **authenticate** ([`auth`]): who is asking? A client certificate signed by the
//!    cluster CA, the admin token written into the kubeconfig by `kulisse up`, or a
//!    ServiceAccount token the server signed itself ([`serviceaccount`]). `/version`,
//!    `/healthz` and `/readyz` are open, as in Kubernetes. Then **authorize** ([`authz`]):
//!    may they?
//! 2. **route** ([`routes`]): which group, version, resource, namespace, name?
//! 3. **decode** the body (JSON, YAML or Kubernetes protobuf, see [`protobuf`]) within size
//!    and nesting budgets;
//! 4. **default and validate** the object ([`crate::objects`]): a bad object answers
//!    `422 Invalid` with the field path that is wrong, and nothing is written;
//! 5. **compare** with what the store holds (for `apply`: is there anything to change?);
//! 6. **write** through [`storage`] to the store, conditionally on the revision that was read;
//! 7. **respond** with the stored object, or with a `Status` object on failure.
//!
//! One file per verb, each with the same shape (`handle(ctx, ...) -> Result<Response, ApiError>`):
//! [`get`] (get and list), [`create`], [`update`] (PUT), [`patch`] (merge patch and
//! server-side apply), [`delete`], [`watch`]; [`discovery`] answers "what do you serve?".
//! The steps every write shares (decode, target checks, unknown fields, defaults and
//! validation, the conditional write) are [`write`]'s; verbs call it, never one another.
//!
//! The server takes its listener and a shutdown future from the caller (as tokio's
//! mini-redis does), so tests run it on `127.0.0.1:0`.
//!
//! Before and around that pipeline, [`limits`] protects the server from slow and heavy
//! clients: connections must finish their headers in time and are closed when idle, their
//! number is capped, and right after authentication the max-in-flight filter answers
//! `429 TooManyRequests` when too many requests are already being served.

pub mod allocator;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod binding;
pub mod cacher;
pub mod certs;
pub mod compactor;
pub mod create;
pub mod delete;
pub mod discovery;
pub mod get;
pub mod health;
pub mod impersonation;
pub mod limits;
pub mod list_options;
pub mod logs;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod priority;
pub mod protobuf;
pub mod reviews;
pub mod routes;
pub mod scale;
pub mod serviceaccount;
pub mod step;
pub mod storage;
pub mod streaming;
pub mod table;
pub mod token;
pub mod traces;
pub mod update;
pub mod watch;
pub mod write;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tracing::{Instrument, info_span};

use crate::objects::{ApiError, ResourceInfo, Subresource};
use crate::store::Store;
use routes::Route;
pub use storage::Storage;

/// The body type of every response: a whole JSON document, or a stream of watch events.
pub type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted, as in kube-apiserver (3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The Kubernetes version kulisse speaks (its object schemas follow this release).
pub const KUBERNETES_VERSION: (&str, &str) = ("1", "33");

/// How the API server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The bearer token clients must present (from the kubeconfig).
    pub token: String,
    /// Serve HTTPS with this configuration ([`certs`]); `None` serves plain HTTP (tests).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where Service ClusterIPs come from (inside 127.0.0.0/8).
    pub service_cidr: allocator::ServiceCidr,
    /// How often a watch with `allowWatchBookmarks=true` gets a `BOOKMARK`
    /// ([`watch::DEFAULT_BOOKMARK_INTERVAL`], a minute, as upstream; shorter in tests).
    pub bookmark_interval: Duration,
    /// Timeouts, the connection cap and the in-flight limits ([`limits`]).
    pub limits: limits::Limits,
    /// The audit log every successful write is recorded in ([`audit`]); `None`: no log.
    pub audit_log: Option<Arc<audit::AuditLog>>,
    /// How often history is compacted ([`compactor`]) and how long Events live.
    pub retention: Retention,
    /// How the API server calls kubelets ([`logs`]): trusting only the cluster CA and
    /// presenting its `kube-apiserver-kubelet-client` certificate (upstream's
    /// `--kubelet-certificate-authority`, `--kubelet-client-certificate`). `None`: it cannot
    /// reach kubelets (`kubectl logs` answers 503).
    pub kubelet_client: Option<Arc<rustls::ClientConfig>>,
    /// The network namespace kubelets are reached from (a file such as `/run/netns/NAME`),
    /// when they live on node hosts (`kulisse up --node-hosts`, [`crate::netns`]); `None`:
    /// this process' own namespace. kulisse only: upstream dials over the machine's network.
    pub kubelet_network: Option<std::path::PathBuf>,
    /// The cluster's service-account key ([`serviceaccount`], kube-apiserver's
    /// `--service-account-signing-key-file` and `--service-account-key-file`): signs the
    /// tokens of `serviceaccounts/token` ([`token`]) and checks them when they come back.
    /// `None`: no tokens are issued or accepted.
    pub service_accounts: Option<Arc<serviceaccount::ServiceAccountTokens>>,
}

/// How long the store keeps what: kube-apiserver's `--etcd-compaction-interval` and
/// `--event-ttl`, with their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Compact the store's history this often (zero: never) ([`compactor`]).
    pub compaction_interval: Duration,
    /// Delete each Event this long after its last write (a TTL in the store).
    pub event_ttl: Duration,
}

/// kube-apiserver's `--event-ttl` default.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(60 * 60);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            compaction_interval: compactor::DEFAULT_INTERVAL,
            event_ttl: DEFAULT_EVENT_TTL,
        }
    }
}

/// kulisse's own endpoints, outside Kubernetes' API: the trace store and step mode's gate.
/// They are served apart from the API's routes, and their traffic is never traced.
fn is_kulisse_path(path: &str) -> bool {
    traces::is_trace_path(path) || path == step::STEP_PATH
}

/// What every handler gets: the storage layer and the server's settings.
///
/// Concurrency: the server is shared by every connection task through an `Arc`. It holds
/// no lock of its own; all coordination between writers happens in the store, through
/// revisions (optimistic concurrency), exactly as in Kubernetes.
pub struct ApiServer {
    /// Objects ↔ store keys. Cloning is cheap (an `Arc` inside).
    pub storage: Storage,
    /// Settings, fixed at start.
    pub config: Config,
    /// The watch caches: one store watch per resource, shared by every API watch ([`cacher`]).
    pub watch_cache: Arc<cacher::WatchCache>,
    /// Who may do what ([`authz`]).
    pub authorizer: authz::Authorizer,
    /// Service ClusterIPs and node ports in use, built from the stored Services on first
    /// use. An async mutex: allocation reads the store once, while holding it.
    services: tokio::sync::Mutex<Option<allocator::ServiceAllocator>>,
    /// The max-in-flight filter ([`limits::InFlight`]).
    inflight: limits::InFlight,
    /// The priority levels of the cluster's own components, with seats of their own ([`priority`]).
    priority: priority::PriorityLevels,
    /// Step mode's gate, which holds writes while paused or at a breakpoint ([`step`]).
    pub step: step::StepGate,
}

/// A parsed request, as the handlers see it.
pub struct Ctx<'a> {
    pub server: &'a ApiServer,
    pub query: HashMap<String, String>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    /// Warnings for the client, sent as `Warning: 299 - "..."` response headers (kubectl
    /// prints them as `Warning: ...`).
    pub warnings: std::sync::Mutex<Vec<String>>,
    /// Which component sent the request, and its instance ([`step::component_of`]).
    pub component: (String, String),
    /// The client's side of a connection upgrade (`pods/exec`, `pods/attach`), taken by
    /// the handler that serves it ([`streaming`]).
    pub upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
    /// The query string as sent (repeated `command=` parameters intact).
    pub raw_query: Option<String>,
}

impl Ctx<'_> {
    /// A query parameter, if present and not empty.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Add warnings for the client (see [`Ctx::warnings`]).
    pub fn warn_all(&self, warnings: impl IntoIterator<Item = String>) {
        if let Ok(mut w) = self.warnings.lock() {
            for warning in warnings {
                if !w.contains(&warning) {
                    w.push(warning);
                }
            }
        }
    }

    /// `?dryRun=All`: validate and compare, but do not write.
    pub fn dry_run(&self) -> bool {
        self.param("dryRun").is_some()
    }

    /// The request's `Content-Type`, without parameters.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim())
    }
}

impl ApiServer {
    /// A server over `store`, checking `config.token`.
    pub fn new(store: Arc<dyn Store>, config: Config) -> Arc<Self> {
        // The caches' store watches report progress often enough for the shortest bookmark.
        let progress = (config.bookmark_interval / 4).max(Duration::from_millis(10));
        Arc::new(ApiServer {
            watch_cache: cacher::WatchCache::new(store.clone(), progress),
            storage: Storage::new(store)
                .with_audit(config.audit_log.clone())
                .with_event_ttl(config.retention.event_ttl),
            inflight: limits::InFlight::new(&config.limits),
            priority: priority::PriorityLevels::new(&config.limits),
            step: step::StepGate::new(false),
            config,
            authorizer: authz::Authorizer::new(),
            services: tokio::sync::Mutex::new(None),
        })
    }

    /// Give a Service its ClusterIP (and node ports), or check the ones it asks for.
    /// Returns what was newly taken: pass it to [`ApiServer::revert_service_addresses`]
    /// when the request does not store the Service (it failed, or was a dry run).
    pub async fn allocate_service_addresses(&self, svc: &mut Value) -> Result<allocator::Allocation, ApiError> {
        let info = crate::objects::by_gvk("v1", "Service").expect("Service is a built-in kind");
        let mut guard = self.services.lock().await;
        if guard.is_none() {
            let listed = self.storage.list(info, None, None).await?;
            let all: Vec<Value> = listed.items.into_iter().map(|s| s.object).collect();
            *guard = Some(allocator::ServiceAllocator::from_services(
                self.config.service_cidr,
                &all,
            ));
        }
        guard.as_mut().expect("just set").allocate(info, svc)
    }

    /// Give back what [`ApiServer::allocate_service_addresses`] took for a request that did
    /// not store its Service.
    pub async fn revert_service_addresses(&self, taken: allocator::Allocation) {
        if taken.is_empty() {
            return;
        }
        if let Some(a) = self.services.lock().await.as_mut() {
            a.revert(taken);
        }
    }

    /// Free what a deleted Service held.
    pub async fn release_service_addresses(&self, svc: &Value) {
        if let Some(a) = self.services.lock().await.as_mut() {
            a.release(svc);
        }
    }

    /// Create the namespaces every cluster has (`default`, `kube-system`, `kube-public`,
    /// `kube-node-lease`) if they are missing. Kubernetes' "system namespaces controller"
    /// does this inside kube-apiserver.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        // Start-up housekeeping belongs to no one's trace.
        let span = {
            let _untraced =
                kulisse_traces::propagation::untraced_unless(kulisse_traces::propagation::background_tracing_enabled());
            info_span!("apiserver.bootstrap", "kulisse.stage" = "apiserver")
        };
        openapi::warm();
        async {
            self.bootstrap_namespaces().await?;
            self.bootstrap_policy().await
        }
        .instrument(span)
        .await
    }

    /// Create the bootstrap roles and bindings ([`authz::bootstrap`]) that are missing, as
    /// kube-apiserver's `rbac/bootstrap-roles` post-start hook does.
    async fn bootstrap_policy(&self) -> Result<(), ApiError> {
        use authz::bootstrap;
        let objects = bootstrap::cluster_roles()
            .into_iter()
            .chain(bootstrap::cluster_role_bindings())
            .chain(bootstrap::role_bindings());
        for mut obj in objects {
            let kind = obj["kind"].as_str().unwrap_or("").to_string();
            let info = crate::objects::by_gvk("rbac.authorization.k8s.io/v1", &kind).expect("RBAC kinds are built in");
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            let ns = obj["metadata"]["namespace"].as_str().map(str::to_string);
            if self.storage.get(info, ns.as_deref(), &name).await?.is_none() {
                meta::prepare_create(info, &mut obj, ns.as_deref());
                match self.storage.create(info, ns.as_deref(), &name, &obj).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.authorizer.rbac.invalidate();
        Ok(())
    }

    async fn bootstrap_namespaces(&self) -> Result<(), ApiError> {
        let info = crate::objects::by_gvk("v1", "Namespace").expect("Namespace is a built-in kind");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if self.storage.get(info, None, ns).await?.is_none() {
                let mut obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                meta::prepare_create(info, &mut obj, None);
                match self.storage.create(info, None, ns, &obj).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Serve HTTP on `listener` until `shutdown` completes. Open connections are then
    /// given a moment to finish; watches end.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut compactor_stop = stop_rx.clone();
        tokio::spawn(compactor::run(
            self.storage.store().clone(),
            self.config.retention.compaction_interval,
            async move {
                let _ = compactor_stop.wait_for(|s| *s).await;
            },
        ));
        tokio::pin!(shutdown);
        let cap = limits::ConnectionCap::new(&self.config.limits);
        let handshake_timeout = self.config.limits.read_header_timeout;
        loop {
            tokio::select! {
                // At the connection cap, wait for a place before accepting ([`limits`]).
                accepted = async { (cap.place().await, listener.accept().await) } => {
                    let (place, (stream, _peer)) = match accepted {
                        (place, Ok(conn)) => (place, conn),
                        (_, Err(e)) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let stop_rx = stop_rx.clone();
                    let watcher = graceful.watcher();
                    let tls = self.config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
                    tokio::spawn(async move {
                        let _place = place;
                        match tls {
                            // The TLS handshake happens here, off the accept loop, within the
                            // read-header timeout (as Go's http.Server bounds it).
                            Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(tls_stream)) => {
                                    let peer = peer_user(&tls_stream);
                                    serve_connection(server, tls_stream, peer, stop_rx, watcher).await
                                }
                                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            },
                            None => serve_connection(server, stream, None, stop_rx, watcher).await,
                        }
                    });
                }
                _ = &mut shutdown => break,
            }
        }
        let _ = stop_tx.send(true);
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
        Ok(())
    }

    /// Handle one HTTP request: the whole pipeline of the module doc, inside an
    /// `apiserver.request` span that continues the caller's trace (W3C `traceparent`).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        peer: Option<&auth::UserInfo>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let path = parts.uri.path().to_string();
        // Which requests are traced: those that carry a `traceparent` (they are part of a
        // trace, e.g. a `kulisse apply`), and the writes of users, from any client (kubectl,
        // or `kulisse scale` without a trace of its own, starts a trace here). The writes of
        // the components (a `User-Agent` of `kulisse/VERSION (component)`, see
        // `Client::for_component`) that carry no trace are background work, as are reads,
        // heartbeats, step mode's controls and the trace endpoints themselves: not traced
        // unless KULISSE_TRACE_BACKGROUND=1.
        let trace_path = is_kulisse_path(&path);
        let remote = kulisse_traces::propagation::extract(&parts.headers);
        let continued = !trace_path
            && opentelemetry::trace::TraceContextExt::span(&remote)
                .span_context()
                .is_valid();
        let foreign_write = parts.method != Method::GET
            && !parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(crate::client::is_component_user_agent);
        let traced =
            !trace_path && (continued || foreign_write || kulisse_traces::propagation::background_tracing_enabled());
        let span = {
            let _untraced = kulisse_traces::propagation::untraced_unless(traced);
            info_span!(
                "apiserver.request",
                "kulisse.stage" = "apiserver",
                "http.request.method" = %parts.method,
                "url.path" = %path,
                "k8s.verb" = tracing::field::Empty,
                "k8s.resource" = tracing::field::Empty,
                "k8s.namespace" = tracing::field::Empty,
                "k8s.name" = tracing::field::Empty,
                "k8s.outcome" = tracing::field::Empty,
                "http.response.status_code" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
            )
        };
        if continued {
            kulisse_traces::propagation::set_parent(&span, remote);
        }
        let response = async {
            let routed = self.route(&parts.method, &parts.uri, &parts.headers, peer, (body, upgrade), stop);
            let response = match answer_panics(routed).await {
                Ok(resp) => resp,
                Err(err) => error_response(&err),
            };
            let watch = parse_query(parts.uri.query())
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1");
            protobuf::negotiate(&parts.headers, watch, response).await
        }
        .instrument(span.clone())
        .await;
        span.record("http.response.status_code", response.status().as_u16());
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        response
    }

    async fn route(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<&auth::UserInfo>,
        (body, upgrade): (Incoming, Option<hyper::upgrade::OnUpgrade>),
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Response<Body>, ApiError> {
        if is_kulisse_path(uri.path()) {
            return self.kulisse_endpoint(method, uri, headers, peer, body).await;
        }
        if let Some(review) = reviews::parse(uri.path()) {
            return self.review(review, method, uri, headers, peer, body).await;
        }
        let received = chrono::Utc::now();
        let route = routes::parse(uri.path())?;
        let query = parse_query(uri.query());
        let public = matches!(route, Route::Version | Route::Health | Route::Ready);
        let user = self.identify(headers, peer, public).await?;
        let attrs = authz::attributes(user, method, uri.path(), &route, &query);
        // Priority levels and the max-in-flight filter, after authentication as upstream's.
        let _inflight = match self.admit(&attrs, method, uri).await {
            Ok(permit) => permit,
            Err(too_many) => return Ok(*too_many),
        };
        // The public endpoints answer everyone without consulting RBAC (what upstream's
        // system:public-info-viewer grants), so health checks work while the store is down.
        if !public {
            self.authorizer.authorize(&self.storage, &attrs).await?;
        }
        let rbac_write = attrs.resource_request
            && attrs.api_group == authz::rbac::GROUP
            && !matches!(attrs.verb.as_str(), "get" | "list" | "watch");
        let body = read_body(headers, body).await?;
        // A protobuf body becomes JSON here; the handlers only ever see JSON.
        let decoded_headers;
        let (headers, body) = match protobuf::decode_request(headers, body)? {
            protobuf::RequestBody::Unchanged(body) => (headers, body),
            protobuf::RequestBody::Decoded(h, body) => {
                decoded_headers = h;
                (&decoded_headers, body)
            }
        };
        // NodeRestriction: what a kubelet may not do, now that the body is known.
        authz::node::admit(&self.storage, &attrs, &body).await?;
        let ctx = Ctx {
            server: self,
            query,
            headers,
            body,
            warnings: std::sync::Mutex::new(Vec::new()),
            component: step::component_of(headers, &attrs.user.name),
            upgrade: std::sync::Mutex::new(upgrade),
            raw_query: uri.query().map(str::to_string),
        };
        // The storage layer's audit lines name this request's user and verb ([`audit`]).
        let request = audit::RequestInfo {
            user: attrs.user.clone(),
            verb: attrs.verb.clone(),
            subresource: attrs.subresource.clone(),
            request_uri: uri.to_string(),
            received,
        };
        let result = audit::REQUEST
            .scope(request, self.dispatch(&ctx, route, method, stop))
            .await;
        if rbac_write {
            // A Role, ClusterRole or binding changed who may do what: read them anew.
            self.authorizer.rbac.invalidate();
        }
        let warnings = ctx.warnings.lock().map(|w| w.clone()).unwrap_or_default();
        result.map(|resp| with_warnings(resp, warnings))
    }

    /// kulisse's own endpoints, outside Kubernetes' API: the trace store (any authenticated
    /// user: every component sends its spans there) and step mode's gate (any authenticated
    /// user may look, `system:masters` may drive it). No RBAC.
    async fn kulisse_endpoint(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<&auth::UserInfo>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let user = auth::authenticate(headers, peer, &self.credentials(), false).await?;
        let body = read_body(headers, body).await?;
        if uri.path() == step::STEP_PATH {
            return self.step.handle(method, &user, body).await;
        }
        traces::handle(method, uri.path(), &parse_query(uri.query()), headers, body)
    }

    /// Who the request acts as: authentication, then impersonation ([`impersonation`]),
    /// both recorded on one `apiserver.authenticate` span.
    async fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<&auth::UserInfo>,
        public: bool,
    ) -> Result<auth::UserInfo, ApiError> {
        let span = auth::span();
        let user = auth::authenticate_in(&span, headers, peer, &self.credentials(), public).await?;
        impersonation::impersonate(self, headers, user, &span)
            .instrument(span.clone())
            .await
    }

    /// What bearer tokens this server accepts ([`auth::Credentials`]).
    fn credentials(&self) -> auth::Credentials<'_> {
        auth::Credentials {
            admin_token: &self.config.token,
            service_accounts: self.config.service_accounts.as_deref(),
            storage: Some(&self.storage),
        }
    }

    /// Count a request in: a request of the cluster's own components takes a seat of its
    /// priority level ([`priority`]), waiting for one if need be; any other request goes to
    /// the max-in-flight filter ([`limits`]). Long-running requests are not counted.
    async fn admit(
        &self,
        attrs: &authz::Attributes,
        method: &Method,
        uri: &http::Uri,
    ) -> Result<limits::InFlightPermit, Box<Response<Body>>> {
        if limits::classify(method, uri.path(), uri.query()) == limits::RequestClass::LongRunning {
            return Ok(limits::InFlightPermit::unlimited());
        }
        match self.priority.admit(attrs).await {
            priority::Admission::Unclassified => self.inflight.admit(method, uri),
            priority::Admission::Seated(permit) => Ok(permit),
            priority::Admission::Refused(level) => Err(Box::new(limits::too_many_requests(&format!(
                "the queue of priority level {level} is full, or its wait ran out"
            )))),
        }
    }

    /// A review ([`reviews`]): authenticate, authorize `create` on it, answer it.
    async fn review(
        &self,
        review: &'static reviews::Review,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        peer: Option<&auth::UserInfo>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let user = self.identify(headers, peer, false).await?;
        let _inflight = match self.inflight.admit(method, uri) {
            Ok(permit) => permit,
            Err(too_many) => return Ok(*too_many),
        };
        let attrs = reviews::create_attributes(user, review, uri.path());
        self.authorizer.authorize(&self.storage, &attrs).await?;
        let body = read_body(headers, body).await?;
        let body = match protobuf::decode_request(headers, body)? {
            protobuf::RequestBody::Unchanged(body) | protobuf::RequestBody::Decoded(_, body) => body,
        };
        reviews::handle(self, review, method, &attrs.user, &body).await
    }

    async fn dispatch(
        &self,
        ctx: &Ctx<'_>,
        route: Route,
        method: &Method,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Response<Body>, ApiError> {
        let span = tracing::Span::current();
        match (route, method) {
            (Route::Version, &Method::GET) => discovery::version(),
            (Route::Health, &Method::GET) => Ok(text_response(StatusCode::OK, "ok")),
            (Route::Ready, &Method::GET) => Ok(health::readyz(self, ctx, &stop).await),
            (Route::CoreVersions, &Method::GET) => discovery::core_versions(),
            (Route::Groups, &Method::GET) => discovery::groups(),
            (Route::Group(g), &Method::GET) => discovery::group(&g),
            (Route::Resources { group, version }, &Method::GET) => discovery::resources(&group, &version),
            (Route::OpenApiIndex, &Method::GET) => openapi::index(),
            (Route::OpenApi(path), &Method::GET) => openapi::group_version(&path),
            (Route::Collection { info, namespace }, m) => {
                record_target(&span, info, namespace.as_deref(), None);
                self.collection(ctx, info, namespace, m, stop).await
            }
            (
                Route::Object {
                    info,
                    namespace,
                    name,
                    subresource,
                },
                m,
            ) => {
                record_target(&span, info, namespace.as_deref(), Some(&name));
                self.object(ctx, info, namespace.as_deref(), &name, subresource.as_deref(), m)
                    .await
            }
            (_, m) => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{m} is not supported here"),
            )),
        }
    }
    /// A request on a collection: list, watch or create.
    async fn collection(
        &self,
        ctx: &Ctx<'_>,
        info: &'static ResourceInfo,
        namespace: Option<String>,
        m: &Method,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Response<Body>, ApiError> {
        let span = tracing::Span::current();
        match *m {
            Method::GET if is_watch(ctx) => {
                span.record("k8s.verb", "watch");
                watch::handle(ctx, info, namespace.as_deref(), stop).await
            }
            Method::GET => {
                span.record("k8s.verb", "list");
                get::list(ctx, info, namespace.as_deref()).await
            }
            Method::POST => {
                span.record("k8s.verb", "create");
                if info.namespaced {
                    let ns = namespace.ok_or_else(|| cluster_scoped_create(info))?;
                    create::handle(ctx, info, Some(&ns)).await
                } else {
                    create::handle(ctx, info, None).await
                }
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{m} is not supported on a collection of {}", info.plural),
            )),
        }
    }

    /// A request on one object or one of its subresources. Which kinds serve which
    /// subresource is the registry's to say ([`ResourceInfo::subresources`]). `/status`
    /// answers for every kind, as it always has in kulisse (upstream serves it only where
    /// [`Subresource::Status`] is listed); the status split itself ([`meta`]) applies only
    /// to those kinds.
    async fn object(
        &self,
        ctx: &Ctx<'_>,
        info: &'static ResourceInfo,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        m: &Method,
    ) -> Result<Response<Body>, ApiError> {
        let span = tracing::Span::current();
        let serves = |s: Subresource| sub == Some(s.name()) && info.has(s);
        match (m.clone(), sub) {
            (Method::GET, None | Some("status")) => {
                span.record("k8s.verb", "get");
                get::get(ctx, info, ns, name).await
            }
            (Method::PUT, None | Some("status")) => {
                span.record("k8s.verb", "update");
                update::handle(ctx, info, ns, name, sub).await
            }
            (Method::PUT, _) if serves(Subresource::Finalize) => {
                span.record("k8s.verb", "update");
                update::handle(ctx, info, ns, name, sub).await
            }
            (Method::PATCH, None | Some("status")) => {
                span.record("k8s.verb", "patch");
                patch::handle(ctx, info, ns, name, sub).await
            }
            (Method::DELETE, None) => {
                span.record("k8s.verb", "delete");
                delete::handle(ctx, info, ns, name).await
            }
            (Method::POST, _) if serves(Subresource::Binding) => {
                span.record("k8s.verb", "create");
                binding::handle(ctx, ns.unwrap_or("default"), name).await
            }
            (Method::POST, _) if serves(Subresource::Token) => {
                span.record("k8s.verb", "create");
                token::handle(ctx, ns.unwrap_or("default"), name).await
            }
            (Method::GET | Method::PUT | Method::PATCH, _) if serves(Subresource::Scale) => {
                span.record("k8s.verb", if *m == Method::GET { "get" } else { "update" });
                scale::handle(ctx, info, ns, name, m).await
            }
            (Method::GET | Method::POST, Some(s @ ("exec" | "attach"))) if info.has(Subresource::Exec) => {
                span.record("k8s.verb", "create");
                streaming::handle(ctx, ns.unwrap_or("default"), name, s).await
            }
            (Method::GET | Method::POST, Some("portforward")) if info.has(Subresource::Exec) => {
                span.record("k8s.verb", "create");
                streaming::port_forward(ctx, ns.unwrap_or("default"), name).await
            }
            (Method::GET, _) if serves(Subresource::Log) => {
                span.record("k8s.verb", "get");
                logs::handle(ctx, ns.unwrap_or("default"), name).await
            }
            (Method::POST, None) if !info.namespaced => {
                span.record("k8s.verb", "create");
                create::handle(ctx, info, None).await
            }
            (m, Some(other)) => Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "the server does not serve {m} on the subresource \"{other}\" of {}",
                    info.plural
                ),
            )),
            (m, None) => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{m} is not supported on {}", info.plural),
            )),
        }
    }
}

/// The user the client certificate of a TLS connection names (verified against the
/// cluster CA during the handshake), if the client presented one.
fn peer_user(tls: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Option<Arc<auth::UserInfo>> {
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates()?.first()?;
    auth::user_from_certificate(leaf.as_ref()).map(Arc::new)
}

/// The request's warnings as `Warning: 299 - "..."` headers (kubectl prints them).
fn with_warnings(mut resp: Response<Body>, warnings: Vec<String>) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// HTTP/2 streams one client may have open at once on a connection. Go's default is 250;
/// upstream's aggregated API servers raise it to 1000 (`HTTP2MaxStreamsPerConnection`)
/// because one client multiplexes many long-running watches into one connection, as every
/// kulisse component does with its informers.
const HTTP2_MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// Serve one connection (plain or TLS) until it ends or the server shuts down: HTTP/2 when
/// the client chose it (ALPN `h2` in the TLS handshake, or the HTTP/2 preface on a plain
/// connection), HTTP/1.1 otherwise. Like kube-apiserver, which serves both: client-go's
/// components speak HTTP/2 and send all their requests and watches over one connection;
/// `exec`, `attach` and `port-forward` upgrade an HTTP/1.1 connection.
async fn serve_connection<IO>(
    server: Arc<ApiServer>,
    io: IO,
    peer: Option<Arc<auth::UserInfo>>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The connection's clock closes it when headers or the next request take too long.
    let clock = limits::ConnectionClock::start(&server.config.limits);
    let service_clock = clock.clone();
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        let stop_rx = stop_rx.clone();
        let busy = service_clock.request_started();
        let peer = peer.clone();
        async move {
            let resp = server.handle(req, peer.as_deref(), stop_rx).await;
            Ok::<_, Infallible>(resp.map(|body| limits::ConnectionClock::track_response(busy, body)))
        }
    });
    let io = limits::Clocked::new(io, clock.clone());
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http2().max_concurrent_streams(HTTP2_MAX_STREAMS_PER_CONNECTION);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    tokio::select! {
        served = watcher.watch(conn) => {
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
        }
        why = clock.expired() => tracing::debug!("connection closed: {why}"),
    }
}

fn cluster_scoped_create(info: &ResourceInfo) -> ApiError {
    ApiError::bad_request(format!(
        "{} are namespaced: create them under /namespaces/<namespace>/{}",
        info.plural, info.plural
    ))
}

fn record_target(span: &tracing::Span, info: &ResourceInfo, ns: Option<&str>, name: Option<&str>) {
    span.record("k8s.resource", info.plural);
    if let Some(ns) = ns {
        span.record("k8s.namespace", ns);
    }
    if let Some(name) = name {
        span.record("k8s.name", name);
    }
}

fn is_watch(ctx: &Ctx<'_>) -> bool {
    matches!(ctx.param("watch"), Some("true" | "1"))
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::too_large(MAX_BODY_BYTES))
        }
        Err(e) => Err(ApiError::bad_request(&format!("could not read the request body: {e}"))),
    }
}

/// Run a handler, turning a panic inside it into a `500 InternalError` and a log line
/// instead of a dropped connection (kube-apiserver's `WithPanicRecovery` filter does the
/// same). Handlers must not panic on any input; this is the defence in depth.
pub async fn answer_panics<F>(handler: F) -> Result<Response<Body>, ApiError>
where
    F: Future<Output = Result<Response<Body>, ApiError>>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(handler).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            tracing::error!("a request handler panicked: {what}");
            Err(ApiError::internal(format!(
                "the request handler failed unexpectedly: {what}"
            )))
        }
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(text.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    resp
}

/// A Kubernetes `Status` object for a failed request.
pub fn error_response(err: &ApiError) -> Response<Body> {
    let span = tracing::Span::current();
    span.record("k8s.outcome", err.reason.as_str());
    tracing::event!(parent: &span, tracing::Level::INFO, reason = %err.reason, code = err.code, "request failed: {}", err.message);
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &err.to_status_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_status() {
        let handler = async {
            let body: Vec<u8> = Vec::new();
            let _boom = body[7]; // an index out of bounds, as a handler bug would
            Ok(text_response(StatusCode::OK, "unreachable"))
        };
        let err = answer_panics(handler).await.expect_err("the panic is an error");
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
        assert!(err.message.contains("index out of bounds"), "{}", err.message);
        let ok = answer_panics(async { Ok(text_response(StatusCode::OK, "fine")) }).await;
        assert_eq!(ok.map(|r| r.status()).ok(), Some(StatusCode::OK));
    }
}
