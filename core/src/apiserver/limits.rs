//! # Limits: connections and requests in flight (mirrors kube-apiserver's `http.Server` settings and its max-in-flight filter)
//!
//! An API server that waits politely for every client can be taken down by clients that
//! are slow on purpose. Two classic ways, and what stops each:
//!
//! - **Slowloris.** Open a connection, send half a request (`GET / HTTP/1.1\r\nHost: x\r\n`)
//!   and then one header byte every few seconds, never the blank line that ends the
//!   headers. A server that gives every connection a thread, or waits forever for headers,
//!   runs out of threads, memory or file descriptors after a few thousand such
//!   connections, and real clients can no longer get in. Defences:
//!   - a **header-read timeout**: a request must finish its headers within
//!     [`Limits::read_header_timeout`] of its first byte, or the connection is closed;
//!   - an **idle timeout**: a kept-alive connection with no request in progress is closed
//!     after [`Limits::idle_timeout`];
//!   - a **cap on open connections** ([`Limits::max_connections`]): at the cap the server
//!     stops accepting; new connections wait in the kernel's listen backlog until one closes.
//!
//!   kube-apiserver gets the first two from Go's `http.Server` (`secure_serving.go` sets
//!   `ReadHeaderTimeout: 32s`, "just shy of requestTimeoutUpperBound", and `IdleTimeout: 90s`,
//!   the keep-alive timeout of Go's default client transport). They are not flags upstream;
//!   kulisse makes them flags (`--read-header-timeout`, `--idle-timeout`) so tests and labs
//!   can shorten them. Upstream has no connection cap: Go's goroutines are cheap and Go
//!   raises its soft file-descriptor limit to the hard one at start. kulisse does the same
//!   (`kulisse up`) and adds `--max-connections` so the cap is a number you can see,
//!   not whatever the kernel refuses first.
//!
//! - **Overload.** Many honest clients, each sending requests as fast as answers come back,
//!   can queue more work than the server and its store can do; every request then gets
//!   slow, and clients time out and retry, which makes it worse. kube-apiserver's
//!   **max-in-flight filter** (`WithMaxInFlightLimit`, flags `--max-requests-inflight`,
//!   default 400, and `--max-mutating-requests-inflight`, default 200) counts requests being
//!   served, reads and writes separately; one over the limit is answered at once with
//!   `429 TooManyRequests` and `Retry-After: 1`, and client-go waits and retries. Shedding
//!   early is cheaper than queueing. Long-running requests (watches, and the `log`, `exec`,
//!   `attach`, `portforward` and `proxy` subresources) are not counted: a watch lasts
//!   minutes, and counting it would let a few hundred watchers lock everyone out.
//!   [`InFlight`] is that filter.
//!
//! Where kulisse differs:
//! - Upstream's filter writes a plain-text body ("Too many requests, please try again
//!   later."); kulisse sends the same words in a `Status` (reason `TooManyRequests`,
//!   `details.retryAfterSeconds: 1`), the shape `apierrors.NewTooManyRequests` gives and
//!   every client decodes.
//! - Upstream never refuses a member of `system:masters` ("so powerful that they should
//!   always get an answer"). kulisse counts every request: today every client holds the
//!   same admin token, and exempting it would exempt everything.
//! - Since 1.20 upstream's default is API Priority and Fairness, which queues requests per
//!   priority level and shares the two limits above among them; the max-in-flight filter is
//!   what runs with `--enable-priority-and-fairness=false`. kulisse has the filter, and
//!   four of APF's levels in front of it for its own components ([`super::priority`]).
//! - A request that trickles its *body* holds its in-flight slot; upstream ends such a
//!   request at `--request-timeout` (60 s), kulisse has no request timeout yet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{Body, json_response};
use crate::objects::ApiError;

/// Upstream's `--max-requests-inflight` default.
pub const DEFAULT_MAX_REQUESTS_INFLIGHT: usize = 400;
/// Upstream's `--max-mutating-requests-inflight` default.
pub const DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT: usize = 200;
/// Go's `http.Server.ReadHeaderTimeout` as kube-apiserver sets it.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(32);
/// Go's `http.Server.IdleTimeout` as kube-apiserver sets it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// kulisse's own cap on open connections (upstream has none).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// What a 429 asks the client to wait, in seconds (upstream's `retryAfter = "1"`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The limits of one API server. `0` for an in-flight limit or the connection cap means
/// "no limit", as upstream's flags do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time for a request's headers to arrive, from its first byte.
    pub read_header_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections at most; the accept loop waits at the cap.
    pub max_connections: usize,
    /// Reads (`get`, `list`) being served at most; watches and logs are not counted.
    pub max_requests_inflight: usize,
    /// Writes (`create`, `update`, `patch`, `delete`) being served at most.
    pub max_mutating_requests_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests_inflight: DEFAULT_MAX_REQUESTS_INFLIGHT,
            max_mutating_requests_inflight: DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT,
        }
    }
}

/// A semaphore for a limit, or none for "no limit".
fn semaphore(limit: usize) -> Option<Arc<Semaphore>> {
    (limit > 0).then(|| Arc::new(Semaphore::new(limit.min(Semaphore::MAX_PERMITS))))
}

// ---------------------------------------------------------------------------------------
// Requests in flight
// ---------------------------------------------------------------------------------------

/// What the max-in-flight filter sees in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestClass {
    /// A watch or a streaming subresource: not counted.
    LongRunning,
    /// `get`, `list` (and any other GET/HEAD/OPTIONS).
    ReadOnly,
    /// `create`, `update`, `patch`, `delete`.
    Mutating,
}

/// The subresources upstream's `BasicLongRunningRequestCheck` treats as long-running.
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["log", "exec", "attach", "portforward", "proxy"];

/// Sort a request as upstream's filter does: long-running first, then by verb.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestClass {
    let watch =
        form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // The old `/api/v1/watch/pods` and `/apis/<group>/<version>/watch/...` paths.
    let watch_segment = if segments.first() == Some(&"apis") { 3 } else { 2 };
    let old_style_watch = segments.get(watch_segment) == Some(&"watch");
    let subresource = segments.last().copied().unwrap_or("");
    let object_path = segments.len() >= 4;
    if (*method == Method::GET && (watch || old_style_watch))
        || (object_path && LONG_RUNNING_SUBRESOURCES.contains(&subresource))
    {
        return RequestClass::LongRunning;
    }
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => RequestClass::ReadOnly,
        _ => RequestClass::Mutating,
    }
}

/// kube-apiserver's max-in-flight filter: two counters, one for reads and one for writes.
pub struct InFlight {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
}

/// A counted request's slot; dropping it (the request is answered) gives the slot back.
#[must_use = "the request is counted only while the permit lives"]
pub struct InFlightPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl InFlightPermit {
    /// A request no limit counts.
    pub fn unlimited() -> InFlightPermit {
        InFlightPermit { _slot: None }
    }

    /// A request holding `seat` until it is answered.
    pub fn holding(seat: OwnedSemaphorePermit) -> InFlightPermit {
        InFlightPermit { _slot: Some(seat) }
    }
}

impl InFlight {
    /// The filter for `limits`.
    pub fn new(limits: &Limits) -> InFlight {
        InFlight {
            read_only: semaphore(limits.max_requests_inflight),
            mutating: semaphore(limits.max_mutating_requests_inflight),
        }
    }

    /// Count a request in, or answer it `429` at once (never wait: shedding is the point).
    pub fn admit(&self, method: &Method, uri: &http::Uri) -> Result<InFlightPermit, Box<Response<Body>>> {
        let sem = match classify(method, uri.path(), uri.query()) {
            RequestClass::LongRunning => return Ok(InFlightPermit { _slot: None }),
            RequestClass::ReadOnly => &self.read_only,
            RequestClass::Mutating => &self.mutating,
        };
        match sem {
            None => Ok(InFlightPermit { _slot: None }),
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(permit) => Ok(InFlightPermit { _slot: Some(permit) }),
                Err(_) => Err(Box::new(too_many_requests(
                    "the API server has too many requests in flight",
                ))),
            },
        }
    }
}

/// The `429` the filter answers: a `Status` and a `Retry-After` header; `why` goes to the log.
pub fn too_many_requests(why: &str) -> Response<Body> {
    let err = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
    let mut status = err.to_status_json();
    status["details"] = serde_json::json!({ "retryAfterSeconds": RETRY_AFTER_SECONDS });
    let span = tracing::Span::current();
    span.record("k8s.outcome", "TooManyRequests");
    tracing::info!("request refused: {why}");
    let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, &status);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    resp
}

// ---------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------

/// The cap on open connections.
pub struct ConnectionCap(Option<Arc<Semaphore>>);

/// An open connection's place under the cap; dropped when the connection closes.
pub struct ConnectionPermit {
    _place: Option<OwnedSemaphorePermit>,
}

impl ConnectionCap {
    pub fn new(limits: &Limits) -> ConnectionCap {
        ConnectionCap(semaphore(limits.max_connections))
    }

    /// Wait for a free place under the cap (at once when there is one). The accept loop
    /// calls this *before* `accept`, so at the cap new connections wait in the kernel.
    pub async fn place(&self) -> ConnectionPermit {
        match &self.0 {
            None => ConnectionPermit { _place: None },
            Some(sem) => ConnectionPermit {
                _place: sem.clone().acquire_owned().await.ok(),
            },
        }
    }
}

/// Where a connection is in its life, for the two timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers to complete, since this instant.
    Headers(Instant),
    /// This many requests being answered (their responses not yet fully sent).
    Busy(usize),
    /// Kept alive, no request in progress, since this instant.
    Idle(Instant),
}

/// One connection's clock: the IO wrapper, the service and the response bodies move it
/// between phases; [`ConnectionClock::expired`] closes the connection when a phase lasts
/// too long.
pub struct ConnectionClock {
    phase: Mutex<Phase>,
    changed: Notify,
    limits: Limits,
}

/// Why a connection was closed by its clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The headers did not arrive within the read-header timeout (slowloris).
    HeaderTimeout,
    /// No request within the idle timeout.
    IdleTimeout,
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::HeaderTimeout => "the request headers did not arrive within the read-header timeout",
            Expiry::IdleTimeout => "no request arrived within the idle timeout",
        })
    }
}

impl ConnectionClock {
    /// A clock for a connection just accepted: its first request's headers are due.
    pub fn start(limits: &Limits) -> Arc<ConnectionClock> {
        Arc::new(ConnectionClock {
            phase: Mutex::new(Phase::Headers(Instant::now())),
            changed: Notify::new(),
            limits: *limits,
        })
    }

    fn set(&self, f: impl FnOnce(Phase) -> Phase) {
        if let Ok(mut phase) = self.phase.lock() {
            let next = f(*phase);
            if next != *phase {
                *phase = next;
                self.changed.notify_one();
            }
        }
    }

    /// Bytes arrived: an idle connection starts its next request's headers.
    fn bytes_arrived(&self) {
        self.set(|p| match p {
            Phase::Idle(_) => Phase::Headers(Instant::now()),
            other => other,
        });
    }

    /// A request's headers are complete: it is being served.
    pub fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.set(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
        BusyGuard(self.clone())
    }

    /// When the current phase runs out, or `None` while requests are being served.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match *self.phase.lock().ok()? {
            Phase::Headers(since) => Some((since + self.limits.read_header_timeout, Expiry::HeaderTimeout)),
            Phase::Idle(since) => Some((since + self.limits.idle_timeout, Expiry::IdleTimeout)),
            Phase::Busy(_) => None,
        }
    }

    /// Completes when the connection has waited too long for headers or for its next
    /// request; the caller then drops the connection. Never completes while a request is
    /// being served (a watch may stream for an hour).
    pub async fn expired(&self) -> Expiry {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline() {
                Some((at, why)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {
                            if self.deadline().is_some_and(|(now_at, _)| now_at <= Instant::now()) {
                                return why;
                            }
                        }
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }

    /// Hold the request as busy until `body` (its response) has been sent or dropped.
    pub fn track_response(guard: BusyGuard, body: Body) -> Body {
        Tracked { body, _busy: guard }.boxed()
    }
}

/// A response body that keeps its request busy while it lives. It passes the body's size
/// on, so a whole answer keeps its `Content-Length` (a wrapper without it would be chunked).
struct Tracked {
    body: Body,
    _busy: BusyGuard,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A request being served; dropping it (the response is sent) may make the connection idle.
pub struct BusyGuard(Arc<ConnectionClock>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }
}

/// A connection's IO that tells its clock when bytes arrive.
pub struct Clocked<IO> {
    io: IO,
    clock: Arc<ConnectionClock>,
}

impl<IO> Clocked<IO> {
    pub fn new(io: IO, clock: Arc<ConnectionClock>) -> Self {
        Clocked { io, clock }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Clocked<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_arrived();
        }
        polled
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Clocked<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// File descriptors one node of `kulisse up` costs its process: its kubelet's HTTP/2
/// connection to the API server, counted at both ends (the client and the server are this
/// process), the listener of its kubelet's API, and a share of a connection its kube-proxy
/// shares with others. Measured: about 3 per node with 1,000 nodes (with HTTP/1.1, one
/// connection per watch, it was 11).
pub const FDS_PER_IN_PROCESS_NODE: u64 = 3;

/// Make room for `wanted` open files: where the hard limit is lower, raise it too when this
/// process may (root, `CAP_SYS_RESOURCE`), up to the kernel's `fs.nr_open`; then raise the
/// soft limit as [`raise_open_file_limit`] does. Returns the soft limit now in force.
pub fn make_room_for_open_files(wanted: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0
            && lim.rlim_max != libc::RLIM_INFINITY
            && (lim.rlim_max as u64) < wanted
        {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(wanted);
            let max = wanted.min(nr_open) as libc::rlim_t;
            // Refused without the privilege: the limits stay as they were.
            libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit {
                    rlim_cur: max,
                    rlim_max: max,
                },
            );
        }
    }
    raise_open_file_limit()
}

/// Raise this process's soft open-file limit (`RLIMIT_NOFILE`) to its hard limit, as every
/// Go program, kube-apiserver included, does at start; returns the soft limit now in force
/// (`None` when unknown or unlimited). Each open connection costs one file descriptor.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur != libc::RLIM_INFINITY).then(|| u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_sorted_as_upstream_sorts_them() {
        let get = Method::GET;
        let cases = [
            (&get, "/api/v1/namespaces/default/pods", None, RequestClass::ReadOnly),
            (&get, "/api/v1/pods", Some("watch=true"), RequestClass::LongRunning),
            (
                &get,
                "/api/v1/pods",
                Some("watch=1&resourceVersion=5"),
                RequestClass::LongRunning,
            ),
            (&get, "/api/v1/pods", Some("watch=false"), RequestClass::ReadOnly),
            (&get, "/api/v1/watch/pods", None, RequestClass::LongRunning),
            (&get, "/apis/apps/v1/watch/deployments", None, RequestClass::LongRunning),
            (
                &get,
                "/api/v1/namespaces/default/pods/web/log",
                None,
                RequestClass::LongRunning,
            ),
            (&get, "/healthz", None, RequestClass::ReadOnly),
            (
                &Method::POST,
                "/api/v1/namespaces/default/pods",
                None,
                RequestClass::Mutating,
            ),
            (&Method::PATCH, "/api/v1/nodes/n1/status", None, RequestClass::Mutating),
            (
                &Method::DELETE,
                "/api/v1/namespaces/default/pods/web",
                None,
                RequestClass::Mutating,
            ),
        ];
        for (m, path, query, want) in cases {
            assert_eq!(classify(m, path, query), want, "{m} {path}?{query:?}");
        }
    }

    #[tokio::test]
    async fn the_request_over_the_limit_gets_429_and_the_slot_comes_back() {
        let limits = Limits {
            max_requests_inflight: 1,
            max_mutating_requests_inflight: 1,
            ..Limits::default()
        };
        let filter = InFlight::new(&limits);
        let list: http::Uri = "/api/v1/pods".parse().expect("uri");
        let watch: http::Uri = "/api/v1/pods?watch=true".parse().expect("uri");
        let first = filter
            .admit(&Method::GET, &list)
            .ok()
            .expect("the first read is admitted");
        let refused = filter
            .admit(&Method::GET, &list)
            .err()
            .expect("the second read is refused");
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        let body = refused.into_body().collect().await.expect("body").to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).expect("a Status");
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["code"], 429);
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
        // Writes have their own counter; watches are not counted at all.
        assert!(filter.admit(&Method::POST, &list).is_ok());
        assert!(filter.admit(&Method::GET, &watch).is_ok());
        drop(first);
        assert!(filter.admit(&Method::GET, &list).is_ok(), "the slot came back");
        let unlimited = InFlight::new(&Limits {
            max_requests_inflight: 0,
            ..Limits::default()
        });
        let held: Vec<_> = (0..1000).map(|_| unlimited.admit(&Method::GET, &list)).collect();
        assert!(held.iter().all(Result::is_ok), "0 means no limit");
    }

    #[test]
    fn a_tracked_response_keeps_its_length_and_frees_the_connection_when_sent() {
        use hyper::body::Body as _;
        let clock = ConnectionClock::start(&Limits::default());
        let body = http_body_util::Full::new(bytes::Bytes::from_static(b"hello")).boxed();
        let tracked = ConnectionClock::track_response(clock.request_started(), body);
        assert_eq!(
            tracked.size_hint().exact(),
            Some(5),
            "sent with Content-Length, not chunked"
        );
        assert_eq!(clock.deadline(), None, "busy while the response is being sent");
        drop(tracked);
        assert!(
            matches!(clock.deadline(), Some((_, Expiry::IdleTimeout))),
            "idle once it is sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_expires_headers_and_idleness_but_never_a_busy_connection() {
        let limits = Limits {
            read_header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let clock = ConnectionClock::start(&limits);
        let started = Instant::now();
        assert_eq!(clock.expired().await, Expiry::HeaderTimeout);
        assert_eq!(Instant::now() - started, Duration::from_secs(5));

        let clock = ConnectionClock::start(&limits);
        let busy = clock.request_started();
        let waited = tokio::time::timeout(Duration::from_secs(3600), clock.expired()).await;
        assert!(waited.is_err(), "a connection serving a request never expires");
        drop(busy);
        let idle_from = Instant::now();
        assert_eq!(clock.expired().await, Expiry::IdleTimeout);
        assert_eq!(Instant::now() - idle_from, Duration::from_secs(60));

        clock.bytes_arrived();
        let headers_from = Instant::now();
        assert_eq!(clock.expired().await, Expiry::HeaderTimeout);
        assert_eq!(Instant::now() - headers_from, Duration::from_secs(5));
    }
}
