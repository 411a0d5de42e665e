//! # The userspace data path (mirrors kube-proxy's original `--proxy-mode=userspace`)
//!
//! The rule table says *where* Service traffic should go; something still has to move the
//! bytes. Today's kube-proxy leaves that to the kernel (iptables DNAT, IPVS, nftables). The
//! first kube-proxy (Kubernetes 1.0 to 1.1 by default, removed in 1.26) did it itself, in
//! "userspace" mode, and that is what this module does:
//!
//! 1. For every rule of the [`RuleTable`] it **listens** on the rule's frontend: the
//!    Service's `clusterIP:port` (kulisse hands out ClusterIPs from `127.1.0.0/16`; all of
//!    `127.0.0.0/8` is routed to the loopback interface on Linux, so binding `127.1.0.5:80`
//!    needs no setup) and, for a NodePort Service, `127.0.0.1:nodePort`.
//! 2. For every accepted connection it picks one ready endpoint **round-robin** (one
//!    counter per rule, as upstream's `LoadBalancerRR`), connects to it and copies bytes in
//!    both directions until both sides have closed.
//! 3. An endpoint that refuses (or does not answer in time) is skipped and the next one is
//!    tried, at most 4 times with growing timeouts (250 ms, 500 ms, 1 s, 2 s), exactly as
//!    upstream's `tryConnectTCP`. A rule without ready endpoints resets the connection at
//!    once, as the REJECT rule of the iptables mode does: clients fail fast.
//!
//! ```text
//! client ──► 127.1.0.5:80 (listener of rule default.web.http)
//!                 │  lookup in the RuleTable on every accept → 127.64.0.2:8080, 127.64.1.3:8080
//!                 └─► round-robin ─► 127.64.1.3:8080 (the Pod)   bytes copied both ways
//! ```
//!
//! The listener reads the *current* backends from the table on every accept, so endpoint
//! changes (a Pod became ready, one was deleted) apply to the next connection without
//! touching the listener; open connections keep going, as conntrack keeps them with
//! iptables. A rule that disappears closes its listener; a new rule opens one. The data
//! path learns of changes by subscribing to the table ([`RuleTable::subscribe`]).
//!
//! **Spans.** Opening and closing a listener is a `proxy.listen` span (it continues the
//! trace of the `proxy.sync_rules` that changed the table). Connections are data-plane
//! traffic: they get no span, only counters ([`DataPath::stats`]) and debug logs.
//!
//! **Limits a learner will meet.**
//! - Ports below 1024 are privileged on Linux: without root (or `CAP_NET_BIND_SERVICE`)
//!   a Service on port 80 cannot be listened on. kube-proxy then logs a warning naming the
//!   Service and port, counts it, keeps the rule, and tries again every 10 s.
//! - All nodes of a `kulisse up` share this machine's loopback interface, so only one
//!   kube-proxy per machine can own the listeners: in `kulisse up` it is node-1's; with
//!   separate processes, the one started with `kulisse proxy --data-path`. Two clusters on
//!   one machine hand out the same ClusterIPs: the second one's listeners find the address
//!   in use (a warning; it retries every 10 s).
//! - Only loopback: kulisse never listens on or connects to anything outside
//!   `127.0.0.0/8`. A rule pointing elsewhere is logged and skipped.
//! - TCP only (upstream's userspace mode also relayed UDP datagrams); no session affinity.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::rules::{Rule, RuleTable};

/// How long each attempt to reach an endpoint may take; one attempt per entry (upstream's
/// `endpointDialTimeout`).
const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How often listeners that could not be opened are tried again.
const RETRY_FAILED_BINDS: Duration = Duration::from_secs(10);

/// The only protocol this data path forwards.
const TCP: &str = "TCP";

/// True for `127.0.0.0/8`, the only addresses kulisse listens on or connects to.
pub fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

/// Counters of the data path (a metrics endpoint would export these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Listeners opened (including re-opens after a failure).
    pub listeners_opened: u64,
    /// Listeners closed because their rule went away (or the data path stopped).
    pub listeners_closed: u64,
    /// Binds refused with "permission denied" (a port below 1024 without root).
    pub bind_permission_denied: u64,
    /// Binds refused with "address already in use".
    pub bind_address_in_use: u64,
    /// Binds that failed for another reason.
    pub bind_other_errors: u64,
    /// Rules not served (not TCP, or a frontend outside 127.0.0.0/8), counted once each.
    pub rules_skipped: u64,
    /// Client connections accepted on any listener.
    pub connections_accepted: u64,
    /// Connections joined to an endpoint.
    pub connections_forwarded: u64,
    /// Connections reset at once because their rule had no ready endpoint.
    pub connections_rejected: u64,
    /// Connections reset because every attempt to reach an endpoint failed.
    pub connections_failed: u64,
    /// Single attempts to reach an endpoint that failed (refused, timed out).
    pub endpoint_dial_failures: u64,
}

#[derive(Default)]
struct Counters {
    listeners_opened: AtomicU64,
    listeners_closed: AtomicU64,
    bind_permission_denied: AtomicU64,
    bind_address_in_use: AtomicU64,
    bind_other_errors: AtomicU64,
    rules_skipped: AtomicU64,
    connections_accepted: AtomicU64,
    connections_forwarded: AtomicU64,
    connections_rejected: AtomicU64,
    connections_failed: AtomicU64,
    endpoint_dial_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            listeners_opened: g(&self.listeners_opened),
            listeners_closed: g(&self.listeners_closed),
            bind_permission_denied: g(&self.bind_permission_denied),
            bind_address_in_use: g(&self.bind_address_in_use),
            bind_other_errors: g(&self.bind_other_errors),
            rules_skipped: g(&self.rules_skipped),
            connections_accepted: g(&self.connections_accepted),
            connections_forwarded: g(&self.connections_forwarded),
            connections_rejected: g(&self.connections_rejected),
            connections_failed: g(&self.connections_failed),
            endpoint_dial_failures: g(&self.endpoint_dial_failures),
        }
    }
}

/// One open listener, as reported by [`DataPath::listeners`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The rule's id, e.g. `default.web.http`.
    pub rule_id: String,
    /// The Service, `namespace/name`.
    pub service: String,
    /// The frontend listened on.
    pub address: SocketAddr,
    /// A number unique to this listener within the data path: a listener that is closed
    /// and opened again gets a new one.
    pub serial: u64,
}

/// A frontend that could not be listened on, as reported by [`DataPath::bind_failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindFailure {
    pub rule_id: String,
    pub service: String,
    pub address: SocketAddr,
    /// The operating system's answer, e.g. `PermissionDenied`.
    pub kind: io::ErrorKind,
    /// The warning that was logged.
    pub message: String,
}

/// A listening socket shared by the accept loop and the data path, so that closing it is
/// immediate: once a rule's listener is reported closed, the kernel refuses connections.
type SharedListener = Arc<Mutex<Option<TcpListener>>>;

struct Open {
    info: ListenerInfo,
    listener: SharedListener,
    task: JoinHandle<()>,
}

impl Open {
    /// Close the listening socket now and end its accept loop.
    fn close(self) {
        drop(self.listener.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    open: HashMap<SocketAddr, Open>,
    failed: HashMap<SocketAddr, BindFailure>,
    /// Rules already warned about (rule id → reason), so each is logged once.
    skipped: HashMap<String, String>,
    /// Rules already warned about for endpoints outside loopback (rule id → those endpoints).
    foreign_endpoints: HashMap<String, Vec<SocketAddr>>,
    next_serial: u64,
    stopped: bool,
    /// The trace of the sync that changed the table last (see [`DataPath::note_cause`]).
    cause: Option<String>,
}

struct Inner {
    table: RuleTable,
    node: String,
    counters: Arc<Counters>,
    state: Mutex<State>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, open) in state.open.drain() {
            open.close();
        }
    }
}

/// kube-proxy's userspace data path: listeners for the rules of a [`RuleTable`]. A cheap
/// handle; the listeners close when the `shutdown` given to [`DataPath::start`] turns true.
#[derive(Clone)]
pub struct DataPath {
    inner: Arc<Inner>,
}

impl DataPath {
    /// Start forwarding the rules of `table` (now and as it changes) until `shutdown` turns
    /// true (or its sender is dropped). `node` names the kube-proxy in logs and spans. Call
    /// from inside a tokio runtime.
    pub fn start(table: RuleTable, node: impl Into<String>, shutdown: watch::Receiver<bool>) -> DataPath {
        let dp = DataPath {
            inner: Arc::new(Inner {
                table,
                node: node.into(),
                counters: Arc::default(),
                state: Mutex::new(State::default()),
            }),
        };
        // Subscribe before the first sync, so no change between the two is missed.
        let changes = dp.inner.table.subscribe();
        tokio::spawn(run(dp.clone(), changes, shutdown));
        dp
    }

    /// Remember the trace (`traceparent`) of the sync that is about to change the table, so
    /// that the `proxy.listen` spans it causes join that trace. kube-proxy's sync loop calls
    /// this right before [`RuleTable::apply`].
    pub fn note_cause(&self, traceparent: Option<String>) {
        if traceparent.is_some() {
            self.inner.lock().cause = traceparent;
        }
    }

    /// The listeners open now, sorted by address.
    pub fn listeners(&self) -> Vec<ListenerInfo> {
        let mut out: Vec<ListenerInfo> = self.inner.lock().open.values().map(|o| o.info.clone()).collect();
        out.sort_by_key(|l| l.address);
        out
    }

    /// The frontends that could not be listened on (yet), sorted by address.
    pub fn bind_failures(&self) -> Vec<BindFailure> {
        let mut out: Vec<BindFailure> = self.inner.lock().failed.values().cloned().collect();
        out.sort_by_key(|f| f.address);
        out
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }
}

/// Follow the table until shutdown, then close every listener.
async fn run(dp: DataPath, mut changes: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
    changes.borrow_and_update();
    dp.inner.sync(false);
    let mut retry = tokio::time::interval_at(tokio::time::Instant::now() + RETRY_FAILED_BINDS, RETRY_FAILED_BINDS);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break; // the table is gone
                }
                changes.borrow_and_update();
                dp.inner.sync(false);
            }
            _ = retry.tick() => dp.inner.sync(true),
            _ = shutdown.wait_for(|s| *s) => break,
        }
    }
    dp.inner.stop();
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `proxy.listen` span, joined to the trace in `cause` (background work otherwise).
    fn listen_span(
        &self,
        cause: Option<&str>,
        action: &str,
        rule_id: &str,
        service: &str,
        address: SocketAddr,
    ) -> tracing::Span {
        kulisse_traces::caused_span!(
            cause,
                "proxy.listen",
                "kulisse.stage" = "proxy",
                "proxy.node" = %self.node,
                "proxy.service" = service,
                "proxy.rule" = rule_id,
                "proxy.address" = %address,
                "proxy.action" = action,
                "otel.status_code" = tracing::field::Empty,
                "otel.status_message" = tracing::field::Empty,
        )
    }

    /// Make the listeners match the table: close those whose rule is gone, open those of
    /// new rules, and (with `retry_failed`) try again those that could not be opened.
    fn sync(&self, retry_failed: bool) {
        let rules = self.table.snapshot();
        let mut state = self.lock();
        if state.stopped {
            return;
        }
        let cause = state.cause.take();
        let cause = cause.as_deref();

        let mut wanted: HashMap<SocketAddr, &Rule> = HashMap::new();
        let mut seen_ids = HashSet::new();
        for rule in &rules {
            let id = rule.id();
            seen_ids.insert(id.clone());
            if let Some(reason) = skip_reason(rule) {
                if state.skipped.get(&id) != Some(&reason) {
                    tracing::warn!("kube-proxy ({}): {reason}", self.node);
                    bump(&self.counters.rules_skipped);
                    state.skipped.insert(id, reason);
                }
                continue;
            }
            state.skipped.remove(&id);
            self.warn_foreign_endpoints(&mut state, &id, rule);
            wanted.insert(rule.frontend, rule);
        }
        state.skipped.retain(|id, _| seen_ids.contains(id));
        state.foreign_endpoints.retain(|id, _| seen_ids.contains(id));

        // Close the listeners of rules that are gone (or whose frontend now belongs to
        // another rule, which gets a listener of its own below).
        let stale: Vec<SocketAddr> = state
            .open
            .iter()
            .filter(|(addr, o)| wanted.get(*addr).is_none_or(|r| r.id() != o.info.rule_id))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in stale {
            if let Some(open) = state.open.remove(&addr) {
                self.close(open, cause);
            }
        }
        state
            .failed
            .retain(|addr, f| wanted.get(addr).is_some_and(|r| r.id() == f.rule_id));

        let mut to_open: Vec<&Rule> = wanted
            .iter()
            .filter(|(addr, _)| !state.open.contains_key(*addr))
            .filter(|(addr, _)| retry_failed || !state.failed.contains_key(*addr))
            .map(|(_, r)| *r)
            .collect();
        to_open.sort_by_key(|r| r.frontend);
        for rule in to_open {
            self.open(&mut state, rule, cause);
        }
    }

    fn warn_foreign_endpoints(&self, state: &mut State, id: &str, rule: &Rule) {
        let foreign: Vec<SocketAddr> = rule
            .endpoints
            .iter()
            .copied()
            .filter(|e| !is_loopback_v4(e.ip()))
            .collect();
        if foreign.is_empty() {
            state.foreign_endpoints.remove(id);
        } else if state.foreign_endpoints.get(id) != Some(&foreign) {
            let list = foreign.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", ");
            tracing::warn!(
                "kube-proxy ({}): Service {} (rule {id}) has endpoints outside 127.0.0.0/8 ({list}); \
                 kulisse never sends traffic off this machine's loopback, so they get no connections",
                self.node,
                rule.service
            );
            state.foreign_endpoints.insert(id.to_string(), foreign);
        }
    }

    fn open(&self, state: &mut State, rule: &Rule, cause: Option<&str>) {
        let id = rule.id();
        let address = rule.frontend;
        let span = self.listen_span(cause, "open", &id, &rule.service, address);
        let _entered = span.enter();
        match bind(address) {
            Ok(listener) => {
                state.next_serial += 1;
                let info = ListenerInfo {
                    rule_id: id.clone(),
                    service: rule.service.clone(),
                    address,
                    serial: state.next_serial,
                };
                let was_failing = state.failed.remove(&address).is_some();
                bump(&self.counters.listeners_opened);
                if was_failing {
                    tracing::warn!(
                        "kube-proxy ({}): now listening on {address} for Service {} (rule {id})",
                        self.node,
                        rule.service
                    );
                } else {
                    tracing::info!(
                        "kube-proxy ({}): listening on {address} for Service {} (rule {id})",
                        self.node,
                        rule.service
                    );
                }
                let listener: SharedListener = Arc::new(Mutex::new(Some(listener)));
                let task = tokio::spawn(accept_loop(
                    listener.clone(),
                    address,
                    self.table.clone(),
                    self.counters.clone(),
                ));
                state.open.insert(address, Open { info, listener, task });
            }
            Err(e) => {
                let kind = e.kind();
                let message = bind_failure_message(&self.node, rule, &id, &e);
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_message", message.as_str());
                let repeated = state.failed.get(&address).is_some_and(|f| f.kind == kind);
                if repeated {
                    tracing::debug!("{message}");
                } else {
                    match kind {
                        io::ErrorKind::PermissionDenied => bump(&self.counters.bind_permission_denied),
                        io::ErrorKind::AddrInUse => bump(&self.counters.bind_address_in_use),
                        _ => bump(&self.counters.bind_other_errors),
                    }
                    tracing::warn!("{message}");
                }
                state.failed.insert(
                    address,
                    BindFailure {
                        rule_id: id,
                        service: rule.service.clone(),
                        address,
                        kind,
                        message,
                    },
                );
            }
        }
    }

    fn close(&self, open: Open, cause: Option<&str>) {
        let info = open.info.clone();
        let span = self.listen_span(cause, "close", &info.rule_id, &info.service, info.address);
        let _entered = span.enter();
        // Accepted connections are tasks of their own and keep going.
        open.close();
        bump(&self.counters.listeners_closed);
        tracing::info!(
            "kube-proxy ({}): closed the listener on {} (rule {} of Service {} is gone)",
            self.node,
            info.address,
            info.rule_id,
            info.service
        );
    }

    fn stop(&self) {
        let mut state = self.lock();
        state.stopped = true;
        let open: Vec<Open> = state.open.drain().map(|(_, o)| o).collect();
        for o in open {
            o.close();
            bump(&self.counters.listeners_closed);
        }
        state.failed.clear();
    }
}

/// Why a rule gets no listener, if it does not.
fn skip_reason(rule: &Rule) -> Option<String> {
    if rule.protocol != TCP {
        return Some(format!(
            "not forwarding {} for Service {} (rule {}): kulisse's userspace data path forwards TCP only",
            rule.frontend_text(),
            rule.service,
            rule.id()
        ));
    }
    if !is_loopback_v4(rule.frontend.ip()) {
        return Some(format!(
            "not listening on {} for Service {} (rule {}): kulisse only listens on loopback addresses \
             (127.0.0.0/8); ClusterIPs come from 127.1.0.0/16",
            rule.frontend,
            rule.service,
            rule.id()
        ));
    }
    None
}

fn bind_failure_message(node: &str, rule: &Rule, id: &str, e: &io::Error) -> String {
    let head = format!(
        "kube-proxy ({node}) cannot listen on {} for Service {} (rule {id}, port {})",
        rule.frontend,
        rule.service,
        rule.frontend.port()
    );
    let why = match e.kind() {
        io::ErrorKind::PermissionDenied => format!(
            "permission denied. Ports below 1024 are privileged on Linux: only root, a process with \
             CAP_NET_BIND_SERVICE, or a system with a lower net.ipv4.ip_unprivileged_port_start may \
             listen on port {}. The rule stays in the table, but connections to {} are refused; \
             run kulisse as root or give the Service a port of 1024 or more",
            rule.frontend.port(),
            rule.frontend
        ),
        io::ErrorKind::AddrInUse => format!(
            "the address is already in use: another program listens on {} (another kulisse cluster \
             on this machine hands out the same ClusterIPs and node ports, and only one may own them)",
            rule.frontend
        ),
        _ => format!("{e}"),
    };
    format!("{head}: {why}. Trying again every {}s", RETRY_FAILED_BINDS.as_secs())
}

/// Listen on `address` (synchronously, so the table lock is never held across an await).
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so a frontend can be listened on again at once after
    // its listener closed, even with old connections in TIME_WAIT.
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Accept connections on one frontend until aborted.
async fn accept_loop(listener: SharedListener, frontend: SocketAddr, table: RuleTable, counters: Arc<Counters>) {
    // The rule's round-robin position (upstream keeps one per Service port).
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = std::future::poll_fn(|cx| {
            let guard = listener.lock().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some(l) => l.poll_accept(cx).map(Some),
                None => std::task::Poll::Ready(None), // closed
            }
        })
        .await;
        let (client, peer) = match accepted {
            None => return,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // A connection that died in the backlog, or no file descriptors left: wait
                // a moment instead of spinning, and go on.
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) {
                    tracing::debug!("kube-proxy: accept on {frontend}: {e}");
                } else {
                    tracing::warn!("kube-proxy: could not accept a connection on {frontend}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        bump(&counters.connections_accepted);
        // The backends as the table says *now*: endpoint changes need no new listener.
        let backends: Vec<SocketAddr> = table
            .lookup(frontend, TCP)
            .map(|r| r.endpoints.into_iter().filter(|e| is_loopback_v4(e.ip())).collect())
            .unwrap_or_default();
        if backends.is_empty() {
            bump(&counters.connections_rejected);
            tracing::debug!("kube-proxy: {peer} → {frontend}: no ready endpoints, connection reset");
            reset(client);
            continue;
        }
        tokio::spawn(forward(
            client,
            peer,
            frontend,
            backends,
            next.clone(),
            counters.clone(),
        ));
    }
}

/// Close a client connection with a TCP reset (what a REJECT rule makes the client see).
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

/// Connect `client` to one of `backends` (round-robin, bounded retries) and relay bytes.
async fn forward(
    mut client: TcpStream,
    peer: SocketAddr,
    frontend: SocketAddr,
    backends: Vec<SocketAddr>,
    next: Arc<AtomicUsize>,
    counters: Arc<Counters>,
) {
    let mut server = None;
    for timeout in DIAL_TIMEOUTS {
        let endpoint = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => {
                server = Some((endpoint, s));
                break;
            }
            Ok(Err(e)) => {
                bump(&counters.endpoint_dial_failures);
                tracing::debug!("kube-proxy: {peer} → {frontend}: endpoint {endpoint}: {e}; trying the next one");
            }
            Err(_) => {
                bump(&counters.endpoint_dial_failures);
                tracing::debug!(
                    "kube-proxy: {peer} → {frontend}: endpoint {endpoint} did not answer within {timeout:?}; trying the next one"
                );
            }
        }
    }
    let Some((endpoint, mut server)) = server else {
        bump(&counters.connections_failed);
        tracing::debug!(
            "kube-proxy: {peer} → {frontend}: no endpoint could be reached after {} attempts, connection reset",
            DIAL_TIMEOUTS.len()
        );
        reset(client);
        return;
    };
    bump(&counters.connections_forwarded);
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => {
            tracing::debug!("kube-proxy: {peer} → {frontend} → {endpoint}: closed ({up} bytes up, {down} bytes down)")
        }
        Err(e) => tracing::debug!("kube-proxy: {peer} → {frontend} → {endpoint}: {e}"),
    }
}
