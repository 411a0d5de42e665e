//! # Leader election (mirrors client-go's `tools/leaderelection` with a Lease lock)
//!
//! A cluster with several masters runs several copies of the controller manager and of the
//! scheduler, so that one can die without the cluster noticing. But two schedulers acting at
//! once would place the same pod twice, and two ReplicaSet controllers would both create the
//! missing pods. So the copies **elect a leader**: only the leader acts; the others are
//! *standbys* that wait, with their caches warm, and take over when the leader is gone.
//!
//! The election is a lock kept in an ordinary API object: the Lease
//! `kube-system/kube-scheduler` (or `kube-system/kube-controller-manager`). Its spec is the
//! *leader election record*:
//!
//! | field | meaning |
//! |---|---|
//! | `holderIdentity` | who leads (`hostname_uuid`, or empty once released) |
//! | `leaseDurationSeconds` | how long the others wait after the last change before they may take over |
//! | `acquireTime` | when the holder became leader |
//! | `renewTime` | when the holder last renewed |
//! | `leaseTransitions` | how often leadership changed hands |
//!
//! Every candidate runs the same loop (client-go's `tryAcquireOrRenew`): read the Lease;
//! if nobody holds it, or the holder has not changed the record for `leaseDurationSeconds`,
//! write itself in as holder. The write is an update with the `resourceVersion` it read, so
//! of two standbys that try at once, the API server lets exactly one win (the other gets
//! `409 Conflict`): the store's compare-and-swap is what makes the election safe.
//!
//! Three durations rule it (client-go's, and kube-scheduler's and kube-controller-manager's
//! defaults; `--fast-failover` shortens them for labs):
//!
//! | | default | fast | |
//! |---|---|---|---|
//! | lease duration | 15 s | 2 s | a standby waits this long after it last saw the record change |
//! | renew deadline | 10 s | 1.5 s | a leader that has not renewed for this long stops acting |
//! | retry period | 2 s | 0.5 s | how often candidates try, and the leader renews |
//!
//! **No clocks are compared.** A standby never reads `renewTime` to decide whether the lease
//! expired (the leader's clock may differ from its own). It remembers *when it, on its own
//! clock, last saw the record change* and waits `leaseDurationSeconds` from then. The leader,
//! for its part, stops acting `renewDeadline` after its last successful renewal, which is
//! shorter than the lease duration: it has stopped before any standby can believe the lease
//! free. That gap is what keeps two leaders from acting at once, even while the network
//! between them and the API server misbehaves.
//!
//! A leader that loses the lease does not try to carry on. kube-scheduler and
//! kube-controller-manager log `leaderelection lost` and **exit** (code 1): the only sure
//! way that no worker of the old term still acts is to end the process, and the kubelet that
//! runs them as static pods starts a fresh one, which joins as a standby. kulisse's
//! `kulisse scheduler` and `kulisse controller-manager` do the same ([`Outcome::Lost`]).
//! Inside `kulisse up` the components share the process with the API server, which must not
//! die: there the component's task is aborted and it goes back to being a standby. On a
//! graceful stop (Ctrl-C) the leader *releases* the lease (client-go's `ReleaseOnCancel`
//! option, which `kulisse scheduler` and `kulisse controller-manager` set): it writes an
//! empty holder, so a standby takes over at once instead of waiting out the lease.
//!
//! Where kulisse differs from client-go:
//! - client-go counts the renew deadline from the start of each renewal round (one retry
//!   period after the last success); kulisse counts it from the last successful renewal,
//!   so with the fast profile a leader stops 0.5 s before its lease could expire.
//! - A leader that reads the Lease and finds another holder stops at once; client-go keeps
//!   trying until the renew deadline.
//! - No coordinated leader election (KEP-4355: `strategy`, `preferredHolder`), no
//!   ConfigMap/Endpoints locks, no health-check watchdog.
//!
//! The decisions are a pure state machine ([`Elector`]: times are passed in, so the tests
//! drive it with a fake clock); [`run`] drives it against a [`LeaseLock`] (the API server,
//! [`ApiLeaseLock`], or a fake one in tests). Every change of leadership is a span event
//! (`started leading`, `stopped leading`, `new leader`) on a `scheduler.leader_election` or
//! `controller.leader_election` span, which the component makes ([`Config::span`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Client;
use crate::objects;

/// client-go's `JitterFactor`: a candidate waits `retryPeriod * (1 + rand * 1.2)` between tries.
pub const JITTER_FACTOR: f64 = 1.2;

/// The three durations of an election.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How long a standby waits after the record last changed before taking over.
    pub lease_duration: Duration,
    /// How long a leader may go without renewing before it stops acting.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
}

impl Timing {
    /// kube-scheduler's and kube-controller-manager's defaults: 15 s, 10 s, 2 s.
    pub fn upstream() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The teaching profile (`--fast-failover`): 2 s, 1.5 s, 0.5 s.
    pub fn fast() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(500),
        }
    }

    /// [`Timing::fast`] if `fast`, else [`Timing::upstream`].
    pub fn for_profile(fast: bool) -> Timing {
        if fast { Timing::fast() } else { Timing::upstream() }
    }

    /// client-go's checks (`NewLeaderElector`), in its words, plus one of kulisse's: the
    /// Lease stores the duration in whole seconds.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("leaseDuration must be greater than renewDeadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(format!(
                "renewDeadline must be greater than retryPeriod*JitterFactor ({JITTER_FACTOR})"
            ));
        }
        if self.lease_duration.is_zero() || self.renew_deadline.is_zero() || self.retry_period.is_zero() {
            return Err("leaseDuration, renewDeadline and retryPeriod must be greater than zero".into());
        }
        if self.lease_duration.subsec_nanos() != 0 {
            return Err(format!(
                "leaseDuration must be whole seconds (the Lease keeps leaseDurationSeconds), not {:?}",
                self.lease_duration
            ));
        }
        Ok(())
    }
}

/// The spec of the Lease, read as client-go's `LeaderElectionRecord`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderElectionRecord {
    pub holder_identity: String,
    pub lease_duration_seconds: i64,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub lease_transitions: i64,
}

impl LeaderElectionRecord {
    /// The record in a Lease object (missing fields are empty or zero).
    pub fn from_lease(lease: &Value) -> LeaderElectionRecord {
        let spec = lease.get("spec").unwrap_or(&Value::Null);
        let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
        let int = |k: &str| spec.get(k).and_then(Value::as_i64).unwrap_or(0);
        LeaderElectionRecord {
            holder_identity: text("holderIdentity").unwrap_or_default(),
            lease_duration_seconds: int("leaseDurationSeconds"),
            acquire_time: text("acquireTime"),
            renew_time: text("renewTime"),
            lease_transitions: int("leaseTransitions"),
        }
    }

    /// The Lease `spec` holding this record.
    pub fn to_spec(&self) -> Value {
        let mut spec = json!({
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.lease_transitions,
        });
        if let Some(t) = &self.acquire_time {
            spec["acquireTime"] = json!(t);
        }
        if let Some(t) = &self.renew_time {
            spec["renewTime"] = json!(t);
        }
        spec
    }
}

/// What one try (client-go's `tryAcquireOrRenew`) should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// There is no Lease: create it with this record.
    Create(LeaderElectionRecord),
    /// Write this record (acquire, or renew as the leader), conditional on what was read.
    Update(LeaderElectionRecord),
    /// Someone else holds a lease that has not expired yet: wait.
    HeldBy(String),
}

/// The state of one candidate: what it last saw of the record and when (on its own clock),
/// and when it last renewed. Pure: every method takes the time, nothing sleeps or does I/O.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timing: Timing,
    observed: Option<LeaderElectionRecord>,
    observed_at: Option<Instant>,
    renewed_at: Option<Instant>,
}

impl Elector {
    pub fn new(identity: &str, timing: Timing) -> Elector {
        Elector {
            identity: identity.to_string(),
            timing,
            observed: None,
            observed_at: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the last record this candidate saw (or wrote) names it as holder.
    pub fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|r| r.holder_identity == self.identity)
    }

    /// The holder of the last record seen (empty: nobody).
    pub fn observed_holder(&self) -> &str {
        self.observed.as_ref().map_or("", |r| r.holder_identity.as_str())
    }

    /// The last record seen or written.
    pub fn observed(&self) -> Option<&LeaderElectionRecord> {
        self.observed.as_ref()
    }

    /// Decide what to write, given the Lease's record as read at `now` (`None`: no Lease).
    /// `wall` is the wall-clock time (a `MicroTime`) written into `acquireTime`/`renewTime`,
    /// for people reading the Lease; the decisions use only `now`.
    pub fn plan(&mut self, current: Option<&LeaderElectionRecord>, now: Instant, wall: &str) -> Attempt {
        let mut record = LeaderElectionRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.timing.lease_duration.as_secs().max(1) as i64,
            acquire_time: Some(wall.to_string()),
            renew_time: Some(wall.to_string()),
            lease_transitions: 0,
        };
        let Some(old) = current else {
            return Attempt::Create(record);
        };
        if self.observed.as_ref() != Some(old) {
            self.observed = Some(old.clone());
            self.observed_at = Some(now);
        }
        let expires = self.observed_at.unwrap_or(now) + Duration::from_secs(old.lease_duration_seconds.max(0) as u64);
        if !old.holder_identity.is_empty() && !self.is_leader() && expires > now {
            return Attempt::HeldBy(old.holder_identity.clone());
        }
        if self.is_leader() {
            record.acquire_time = old.acquire_time.clone();
            record.lease_transitions = old.lease_transitions;
        } else {
            record.lease_transitions = old.lease_transitions + 1;
        }
        Attempt::Update(record)
    }

    /// The write of `record`, planned at `now`, succeeded: this candidate leads, renewed at `now`.
    pub fn wrote(&mut self, record: LeaderElectionRecord, now: Instant) {
        self.observed = Some(record);
        self.observed_at = Some(now);
        self.renewed_at = Some(now);
    }

    /// When a leader must have stopped acting if it has not renewed again: the last
    /// successful renewal plus the renew deadline. `None` if it never led.
    pub fn stop_acting_at(&self) -> Option<Instant> {
        self.renewed_at.map(|t| t + self.timing.renew_deadline)
    }

    /// The leader stopped (lost, or released): forget the renewal.
    pub fn stepped_down(&mut self) {
        self.renewed_at = None;
    }

    /// The record that releases the lease (client-go's `release`): no holder, a one-second
    /// duration, the transitions kept.
    pub fn release_record(&self, wall: &str) -> LeaderElectionRecord {
        LeaderElectionRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(wall.to_string()),
            renew_time: Some(wall.to_string()),
            lease_transitions: self.observed.as_ref().map_or(0, |r| r.lease_transitions),
        }
    }
}

/// Where the record lives: a Lease read and written through the API server
/// ([`ApiLeaseLock`]), or an in-memory fake in tests.
#[async_trait::async_trait]
pub trait LeaseLock: Send + Sync {
    /// Read the record (`None`: there is no Lease yet).
    async fn get(&self) -> Result<Option<LeaderElectionRecord>, String>;
    /// Create the Lease with `record`.
    async fn create(&self, record: &LeaderElectionRecord) -> Result<(), String>;
    /// Write `record`, only if the Lease is unchanged since the last [`LeaseLock::get`].
    async fn update(&self, record: &LeaderElectionRecord) -> Result<(), String>;
    /// `namespace/name`, for messages.
    fn describe(&self) -> String;
}

/// A Lease in the API server: `coordination.k8s.io/v1`, updated with the `resourceVersion`
/// last read, so a concurrent writer makes the update fail with `409 Conflict`.
pub struct ApiLeaseLock {
    client: Client,
    namespace: String,
    name: String,
    last: Mutex<Option<Value>>,
}

impl ApiLeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str) -> ApiLeaseLock {
        ApiLeaseLock {
            // Renewals are a component's background writes, not a user's.
            client: client.for_component("leader-election", name),
            namespace: namespace.to_string(),
            name: name.to_string(),
            last: Mutex::new(None),
        }
    }

    fn info() -> &'static objects::ResourceInfo {
        objects::by_gvk("coordination.k8s.io/v1", "Lease").expect("Lease is a built-in kind")
    }

    fn remember(&self, lease: Option<Value>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = lease;
    }
}

#[async_trait::async_trait]
impl LeaseLock for ApiLeaseLock {
    async fn get(&self) -> Result<Option<LeaderElectionRecord>, String> {
        match self.client.get(Self::info(), Some(&self.namespace), &self.name).await {
            Ok(lease) => {
                let record = LeaderElectionRecord::from_lease(&lease);
                self.remember(Some(lease));
                Ok(Some(record))
            }
            Err(e) if e.code() == Some(404) => {
                self.remember(None);
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn create(&self, record: &LeaderElectionRecord) -> Result<(), String> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.to_spec(),
        });
        let created = self
            .client
            .create(Self::info(), Some(&self.namespace), &lease)
            .await
            .map_err(|e| e.to_string())?;
        self.remember(Some(created));
        Ok(())
    }

    async fn update(&self, record: &LeaderElectionRecord) -> Result<(), String> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut lease = last.ok_or_else(|| "the Lease must be read before it is updated".to_string())?;
        lease["spec"] = record.to_spec();
        let written = self
            .client
            .replace(Self::info(), Some(&self.namespace), &self.name, None, &lease)
            .await
            .map_err(|e| e.to_string())?;
        self.remember(Some(written));
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Makes the component's span for one change of leadership (its `scheduler.leader_election`
/// or `controller.leader_election`): `(lease, identity, holder, transitions)`.
pub type ChangeSpan = fn(&str, &str, &str, i64) -> tracing::Span;

/// One candidate's election.
#[derive(Clone)]
pub struct Config {
    /// This candidate (`hostname_uuid`, see [`identity`]).
    pub identity: String,
    pub timing: Timing,
    /// The component's span for a change of leadership.
    pub span: ChangeSpan,
    /// Release the lease on a graceful stop (client-go's `ReleaseOnCancel`).
    pub release_on_cancel: bool,
}

/// A fresh identity, as upstream makes it: the host name, `_`, a random UUID.
pub fn identity() -> String {
    format!("{}_{}", hostname(), uuid::Uuid::new_v4())
}

/// This machine's name (for identities and span attributes).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How an election ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shutdown was asked for (the lease was released if this candidate led).
    Stopped,
    /// This candidate led and lost the lease: the component was stopped. A process exits
    /// (`leaderelection lost`); inside `kulisse up` the caller campaigns again.
    Lost,
}

/// One change of leadership, as a span event on the component's span.
fn announce(config: &Config, lock: &dyn LeaseLock, elector: &Elector, event: &str) {
    let record = elector.observed().cloned().unwrap_or_default();
    let span = (config.span)(
        &lock.describe(),
        &config.identity,
        &record.holder_identity,
        record.lease_transitions,
    );
    span.in_scope(|| match event {
        "stopped leading" => tracing::info!(lease = %lock.describe(), "stopped leading"),
        "started leading" => tracing::info!(lease = %lock.describe(), "started leading"),
        _ => tracing::info!(lease = %lock.describe(), holder = %record.holder_identity, "new leader"),
    });
}

/// One try: read the Lease and create, take over or renew it. `Ok(true)`: this candidate
/// leads now; `Ok(false)`: someone else does.
async fn try_acquire_or_renew(elector: &mut Elector, lock: &dyn LeaseLock) -> Result<bool, String> {
    let now = Instant::now();
    let wall = objects::time::micro_now();
    let current = lock.get().await?;
    let attempt = elector.plan(current.as_ref(), now, &wall);
    let result = match attempt {
        Attempt::Create(record) => lock.create(&record).await.map(|()| record),
        Attempt::Update(record) => lock.update(&record).await.map(|()| record),
        Attempt::HeldBy(_) => return Ok(false),
    };
    let record = result?;
    elector.wrote(record, now);
    Ok(true)
}

/// Sleep for a retry period with client-go's jitter, or until shutdown. `true`: shutdown.
async fn wait_jittered(retry: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    let factor = 1.0 + rand::random::<f64>() * JITTER_FACTOR;
    tokio::select! {
        _ = tokio::time::sleep(retry.mul_f64(factor)) => false,
        _ = shutdown.wait_for(|s| *s) => true,
    }
}

/// Campaign until this candidate leads (`true`) or shutdown is asked for (`false`).
async fn acquire(
    config: &Config,
    elector: &mut Elector,
    lock: &dyn LeaseLock,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    tracing::info!(lease = %lock.describe(), identity = %config.identity, "attempting to acquire leader lease");
    let mut announced = String::new();
    loop {
        let tried = tokio::time::timeout(config.timing.renew_deadline, try_acquire_or_renew(elector, lock)).await;
        match tried {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(lease = %lock.describe(), "error retrieving or updating the lease: {e}"),
            Err(_) => tracing::warn!(lease = %lock.describe(), "acquiring the lease timed out"),
        }
        let holder = elector.observed_holder().to_string();
        if !holder.is_empty() && holder != announced {
            announce(config, lock, elector, "new leader");
            announced = holder;
        }
        if wait_jittered(config.timing.retry_period, shutdown).await {
            return false;
        }
    }
}

/// Renew every retry period until the renew deadline passes without a renewal (`false`:
/// lost), another holder shows up (`false`) or shutdown is asked for (`true`).
async fn renew(
    config: &Config,
    elector: &mut Elector,
    lock: &dyn LeaseLock,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.timing.retry_period) => {}
            _ = shutdown.wait_for(|s| *s) => return true,
        }
        let Some(deadline) = elector.stop_acting_at() else {
            return false;
        };
        loop {
            let deadline = tokio::time::Instant::from_std(deadline);
            match tokio::time::timeout_at(deadline, try_acquire_or_renew(elector, lock)).await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %lock.describe(), holder = %elector.observed_holder(), "the lease is held by another candidate");
                    return false;
                }
                Ok(Err(e)) => tracing::warn!(lease = %lock.describe(), "failed to renew the lease: {e}"),
                Err(_) => return false,
            }
            let next = tokio::time::Instant::now() + config.timing.retry_period;
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(deadline)) => {}
                _ = shutdown.wait_for(|s| *s) => return true,
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }
}

/// Give the lease up on a graceful stop (client-go's `ReleaseOnCancel`), if still ours.
async fn release(elector: &mut Elector, lock: &dyn LeaseLock) {
    let now = Instant::now();
    let wall = objects::time::micro_now();
    let released = async {
        let current = lock.get().await?;
        if current.as_ref().map(|r| r.holder_identity.as_str()) != Some(elector.identity()) {
            return Ok(());
        }
        let record = elector.release_record(&wall);
        lock.update(&record).await?;
        elector.wrote(record, now);
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(2), released).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(lease = %lock.describe(), "failed to release the lease: {e}"),
        Err(_) => tracing::warn!(lease = %lock.describe(), "releasing the lease timed out"),
    }
    elector.stepped_down();
}

/// Run `lead` while this candidate holds the lease (client-go's `LeaderElector.Run` with
/// `OnStartedLeading`): campaign, start `lead` with its own stop signal once leading, renew,
/// and stop `lead` when the lease is lost (at once: its future is dropped) or shutdown is
/// asked for (its stop signal, then the lease is released). `lead` runs inside this future,
/// so dropping this future stops it too. Returns after one term, or when shutdown comes
/// first; see [`Outcome`].
pub async fn run<F, Fut>(config: &Config, lock: &dyn LeaseLock, mut shutdown: watch::Receiver<bool>, lead: F) -> Outcome
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    let mut elector = Elector::new(&config.identity, config.timing);
    if !acquire(config, &mut elector, lock, &mut shutdown).await {
        return Outcome::Stopped;
    }
    tracing::info!(lease = %lock.describe(), identity = %config.identity, "successfully acquired lease");
    announce(config, lock, &elector, "started leading");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut component = Box::pin(lead(stop_rx));
    let graceful = tokio::select! {
        graceful = renew(config, &mut elector, lock, &mut shutdown) => graceful,
        _ = &mut component => {
            // The component ended on its own (an error it reported): give the lease up.
            if config.release_on_cancel {
                release(&mut elector, lock).await;
            }
            return Outcome::Stopped;
        }
    };
    let _ = stop_tx.send(true);
    if graceful {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut component).await;
        drop(component);
        if config.release_on_cancel {
            release(&mut elector, lock).await;
        }
        return Outcome::Stopped;
    }
    // Lost: stop acting now, before the lease can run out for the others.
    drop(component);
    elector.stepped_down();
    announce(config, lock, &elector, "stopped leading");
    Outcome::Lost
}

/// Campaign again after every lost term, until shutdown: how a component that shares its
/// process with others (inside `kulisse up`) goes back to being a standby instead of exiting.
pub async fn run_until_shutdown<F, Fut>(
    config: &Config,
    lock: &dyn LeaseLock,
    shutdown: watch::Receiver<bool>,
    mut lead: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    while run(config, lock, shutdown.clone(), &mut lead).await == Outcome::Lost {
        tracing::warn!(lease = %lock.describe(), "leaderelection lost; standing by again");
    }
}

/// The namespace of the components' Leases (`--leader-elect-resource-namespace`).
pub const LEASE_NAMESPACE: &str = "kube-system";

#[cfg(test)]
mod tests;
