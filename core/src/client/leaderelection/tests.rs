//! The election's state machine driven with a fake clock (instants passed in), and the
//! driver [`run`] against an in-memory Lease with compare-and-swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;

const WALL: &str = "2026-01-01T00:00:00.000000Z";

fn record(holder: &str, transitions: i64) -> LeaderElectionRecord {
    LeaderElectionRecord {
        holder_identity: holder.into(),
        lease_duration_seconds: 15,
        acquire_time: Some("2025-12-31T23:00:00.000000Z".into()),
        renew_time: Some("2025-12-31T23:59:59.000000Z".into()),
        lease_transitions: transitions,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn the_first_candidate_creates_the_lease() {
    let mut a = Elector::new("a", Timing::upstream());
    let Attempt::Create(r) = a.plan(None, Instant::now(), WALL) else {
        panic!("no Lease: create it")
    };
    assert_eq!(r.holder_identity, "a");
    assert_eq!(r.lease_duration_seconds, 15);
    assert_eq!(r.lease_transitions, 0);
    assert_eq!(r.acquire_time.as_deref(), Some(WALL));
    assert_eq!(r.renew_time.as_deref(), Some(WALL));
}

#[test]
fn a_standby_waits_a_lease_duration_after_the_record_last_changed() {
    let t0 = Instant::now();
    let mut b = Elector::new("b", Timing::upstream());
    let held = record("a", 3);
    assert_eq!(b.plan(Some(&held), t0, WALL), Attempt::HeldBy("a".into()));
    assert_eq!(b.plan(Some(&held), t0 + secs(14.9), WALL), Attempt::HeldBy("a".into()));
    // The leader renewed at 10 s: the standby's wait starts again from when it saw that.
    let mut renewed = held.clone();
    renewed.renew_time = Some("2026-01-01T00:00:10.000000Z".into());
    assert_eq!(
        b.plan(Some(&renewed), t0 + secs(10.0), WALL),
        Attempt::HeldBy("a".into())
    );
    assert_eq!(
        b.plan(Some(&renewed), t0 + secs(24.9), WALL),
        Attempt::HeldBy("a".into())
    );
    // Nothing changed for 15 s on b's clock: the lease expired, b takes over.
    let Attempt::Update(r) = b.plan(Some(&renewed), t0 + secs(25.0), WALL) else {
        panic!("an expired lease is taken over")
    };
    assert_eq!(r.holder_identity, "b");
    assert_eq!(r.lease_transitions, 4, "a takeover counts a transition");
    assert_eq!(r.acquire_time.as_deref(), Some(WALL), "a new term starts now");
}

#[test]
fn the_wall_clock_times_in_the_record_are_never_compared() {
    // renewTime lies far in the past (the leader's clock is off): the standby still waits.
    let mut b = Elector::new("b", Timing::upstream());
    let mut old = record("a", 0);
    old.renew_time = Some("1999-01-01T00:00:00.000000Z".into());
    assert_eq!(b.plan(Some(&old), Instant::now(), WALL), Attempt::HeldBy("a".into()));
}

#[test]
fn a_released_lease_is_taken_at_once() {
    let a = Elector::new("a", Timing::upstream());
    let released = a.release_record(WALL);
    assert_eq!(released.holder_identity, "");
    assert_eq!(released.lease_duration_seconds, 1);
    let mut b = Elector::new("b", Timing::upstream());
    assert!(matches!(b.plan(Some(&released), Instant::now(), WALL), Attempt::Update(r) if r.holder_identity == "b"));
}

#[test]
fn the_leader_renews_keeping_its_acquire_time_and_transitions() {
    let t0 = Instant::now();
    let mut a = Elector::new("a", Timing::upstream());
    let mut held = record("b", 7);
    held.lease_duration_seconds = 1;
    assert_eq!(a.plan(Some(&held), t0, WALL), Attempt::HeldBy("b".into()));
    let Attempt::Update(took) = a.plan(Some(&held), t0 + secs(1.0), WALL) else {
        panic!("expired")
    };
    a.wrote(took.clone(), t0 + secs(1.0));
    assert!(a.is_leader());
    let later = "2026-01-01T00:00:02.000000Z";
    let Attempt::Update(renewed) = a.plan(Some(&took), t0 + secs(3.0), later) else {
        panic!("the leader renews")
    };
    assert_eq!(renewed.holder_identity, "a");
    assert_eq!(renewed.lease_transitions, 8, "a renewal is no transition");
    assert_eq!(renewed.acquire_time, took.acquire_time);
    assert_eq!(renewed.renew_time.as_deref(), Some(later));
}

#[test]
fn a_leader_stops_acting_before_any_standby_can_take_over() {
    for timing in [Timing::upstream(), Timing::fast()] {
        let t0 = Instant::now();
        let mut a = Elector::new("a", timing);
        let Attempt::Create(r) = a.plan(None, t0, WALL) else {
            panic!()
        };
        a.wrote(r.clone(), t0);
        // b reads the record a wrote, at the earliest the moment a planned it.
        let mut b = Elector::new("b", timing);
        assert_eq!(b.plan(Some(&r), t0, WALL), Attempt::HeldBy("a".into()));
        let stop = a.stop_acting_at().expect("a leads");
        // Step b's clock in 10 ms steps: the first instant it may take over is after a stopped.
        let mut t = t0;
        while matches!(b.clone().plan(Some(&r), t, WALL), Attempt::HeldBy(_)) {
            t += Duration::from_millis(10);
        }
        assert!(
            stop < t,
            "{timing:?}: a stops at +{:?}, b takes over at +{:?}",
            stop - t0,
            t - t0
        );
        assert_eq!(stop - t0, timing.renew_deadline);
        assert_eq!(t - t0, timing.lease_duration);
    }
}

#[test]
fn timings_are_checked_as_client_go_checks_them() {
    assert_eq!(Timing::upstream().validate(), Ok(()));
    assert_eq!(Timing::fast().validate(), Ok(()));
    let bad = |l: f64, r: f64, p: f64| {
        Timing {
            lease_duration: secs(l),
            renew_deadline: secs(r),
            retry_period: secs(p),
        }
        .validate()
        .unwrap_err()
    };
    assert_eq!(bad(10.0, 10.0, 2.0), "leaseDuration must be greater than renewDeadline");
    assert_eq!(
        bad(15.0, 2.0, 2.0),
        "renewDeadline must be greater than retryPeriod*JitterFactor (1.2)"
    );
    assert!(bad(2.5, 1.5, 0.5).contains("whole seconds"));
}

#[test]
fn the_record_is_the_leases_spec() {
    let r = record("a", 2);
    let lease = json!({"spec": r.to_spec()});
    assert_eq!(LeaderElectionRecord::from_lease(&lease), r);
    assert_eq!(lease["spec"]["holderIdentity"], "a");
    assert_eq!(lease["spec"]["leaseTransitions"], 2);
    assert_eq!(
        LeaderElectionRecord::from_lease(&json!({})),
        LeaderElectionRecord::default()
    );
}

/// An in-memory Lease with a resourceVersion, shared by several candidates; each handle
/// can be cut off from it (every call fails, as when its API server is gone).
#[derive(Default)]
struct Shared {
    lease: Mutex<Option<(u64, LeaderElectionRecord)>>,
}

struct FakeLock {
    shared: Arc<Shared>,
    read_version: AtomicU64,
    cut_off: AtomicBool,
}

impl FakeLock {
    fn new(shared: &Arc<Shared>) -> Arc<FakeLock> {
        Arc::new(FakeLock {
            shared: shared.clone(),
            read_version: AtomicU64::new(0),
            cut_off: AtomicBool::new(false),
        })
    }

    fn reachable(&self) -> Result<(), String> {
        if self.cut_off.load(Ordering::SeqCst) {
            Err("connection refused".into())
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl LeaseLock for FakeLock {
    async fn get(&self) -> Result<Option<LeaderElectionRecord>, String> {
        self.reachable()?;
        let lease = self.shared.lease.lock().unwrap().clone();
        self.read_version
            .store(lease.as_ref().map_or(0, |l| l.0), Ordering::SeqCst);
        Ok(lease.map(|l| l.1))
    }
    async fn create(&self, record: &LeaderElectionRecord) -> Result<(), String> {
        self.reachable()?;
        let mut lease = self.shared.lease.lock().unwrap();
        if lease.is_some() {
            return Err("already exists".into());
        }
        *lease = Some((1, record.clone()));
        Ok(())
    }
    async fn update(&self, record: &LeaderElectionRecord) -> Result<(), String> {
        self.reachable()?;
        let mut lease = self.shared.lease.lock().unwrap();
        let current = lease.as_ref().map_or(0, |l| l.0);
        if current != self.read_version.load(Ordering::SeqCst) {
            return Err("Operation cannot be fulfilled: the object has been modified".into());
        }
        *lease = Some((current + 1, record.clone()));
        Ok(())
    }
    fn describe(&self) -> String {
        "kube-system/test".into()
    }
}

fn test_span(_: &str, _: &str, _: &str, _: i64) -> tracing::Span {
    tracing::Span::none()
}

/// Short real timings: 2 s lease, 1 s renew deadline, 0.2 s retry.
fn config(identity: &str) -> Config {
    Config {
        identity: identity.into(),
        timing: Timing {
            lease_duration: secs(2.0),
            renew_deadline: secs(1.0),
            retry_period: secs(0.2),
        },
        span: test_span,
        release_on_cancel: true,
    }
}

/// When each candidate started and stopped acting.
#[derive(Default)]
struct Terms(Mutex<Vec<(String, Instant, Option<Instant>)>>);

impl Terms {
    /// The `lead` future of candidate `who`: records its term, ends on its stop signal
    /// (and, aborted, through the guard's drop).
    fn lead(
        self: &Arc<Self>,
        who: &str,
    ) -> impl FnOnce(watch::Receiver<bool>) -> futures::future::BoxFuture<'static, ()> {
        let terms = self.clone();
        let who = who.to_string();
        move |mut stop| {
            Box::pin(async move {
                let index = {
                    let mut t = terms.0.lock().unwrap();
                    t.push((who, Instant::now(), None));
                    t.len() - 1
                };
                struct End(Arc<Terms>, usize);
                impl Drop for End {
                    fn drop(&mut self) {
                        let mut t = self.0.0.lock().unwrap();
                        t[self.1].2.get_or_insert_with(Instant::now);
                    }
                }
                let _end = End(terms, index);
                let _ = stop.wait_for(|s| *s).await;
            })
        }
    }

    fn snapshot(&self) -> Vec<(String, Instant, Option<Instant>)> {
        self.0.lock().unwrap().clone()
    }
}

/// Candidates sharing one fake Lease, one stop signal and one record of terms.
struct Field {
    shared: Arc<Shared>,
    terms: Arc<Terms>,
    stop_tx: watch::Sender<bool>,
}

impl Field {
    fn new() -> Field {
        Field {
            shared: Arc::new(Shared::default()),
            terms: Arc::new(Terms::default()),
            stop_tx: watch::channel(false).0,
        }
    }

    /// Start candidate `name`; its lock is returned so a test can cut it off.
    fn candidate(&self, name: &'static str) -> (tokio::task::JoinHandle<Outcome>, Arc<FakeLock>) {
        let (stop, terms, lock, cfg) = (
            self.stop_tx.subscribe(),
            self.terms.clone(),
            FakeLock::new(&self.shared),
            config(name),
        );
        let handle = lock.clone();
        (
            tokio::spawn(async move { run(&cfg, lock.as_ref(), stop, terms.lead(name)).await }),
            handle,
        )
    }

    async fn wait_for_terms(&self, n: usize) -> Vec<(String, Instant, Option<Instant>)> {
        while self.terms.snapshot().len() < n {
            tokio::time::sleep(secs(0.05)).await;
        }
        self.terms.snapshot()
    }

    fn lease(&self) -> LeaderElectionRecord {
        self.shared.lease.lock().unwrap().clone().unwrap().1
    }
}

#[tokio::test]
async fn a_standby_takes_over_after_the_leader_dies_and_never_overlaps() {
    let field = Field::new();
    let (a, _) = field.candidate("a");
    field.wait_for_terms(1).await; // a leads before b starts
    let (b, _) = field.candidate("b");
    tokio::time::sleep(secs(1.0)).await;
    assert_eq!(field.terms.snapshot().len(), 1, "b stays a standby while a renews");
    // kill -9: a's task vanishes without releasing the lease.
    a.abort();
    let _ = a.await;
    let t = field.wait_for_terms(2).await;
    assert_eq!((t[0].0.as_str(), t[1].0.as_str()), ("a", "b"));
    assert!(t[0].2.expect("a's term ended") <= t[1].1, "no overlap: {t:?}");
    let lease = field.lease();
    assert_eq!(lease.holder_identity, "b");
    assert_eq!(lease.lease_transitions, 1);
    b.abort();
}

#[tokio::test]
async fn a_leader_cut_off_from_the_lease_stops_before_the_standby_starts() {
    let field = Field::new();
    let (a, a_lock) = field.candidate("a");
    field.wait_for_terms(1).await;
    let (b, _) = field.candidate("b");
    tokio::time::sleep(secs(0.5)).await;
    a_lock.cut_off.store(true, Ordering::SeqCst);
    assert_eq!(a.await.unwrap(), Outcome::Lost, "a cannot renew: it loses");
    let t = field.wait_for_terms(2).await;
    assert_eq!(t[1].0, "b");
    assert!(
        t[0].2.expect("a stopped") < t[1].1,
        "a stopped acting before b started: {t:?}"
    );
    b.abort();
}

#[tokio::test]
async fn a_graceful_stop_releases_the_lease() {
    let field = Field::new();
    let (a, _) = field.candidate("a");
    field.wait_for_terms(1).await;
    field.stop_tx.send(true).unwrap();
    assert_eq!(a.await.unwrap(), Outcome::Stopped);
    assert!(field.terms.snapshot()[0].2.is_some(), "the component stopped");
    let lease = field.lease();
    assert_eq!(lease.holder_identity, "", "released");
    assert_eq!(lease.lease_duration_seconds, 1);
    // The next candidate takes it at its first try.
    let mut b = Elector::new("b", Timing::upstream());
    assert!(matches!(b.plan(Some(&lease), Instant::now(), WALL), Attempt::Update(_)));
}

#[tokio::test]
async fn of_many_candidates_exactly_one_leads() {
    let field = Field::new();
    let tasks: Vec<_> = ["a", "b", "c", "d", "e"].map(|n| field.candidate(n).0).into();
    tokio::time::sleep(secs(1.5)).await;
    let t = field.terms.snapshot();
    assert_eq!(t.len(), 1, "one leader: {t:?}");
    field.stop_tx.send(true).unwrap();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Outcome::Stopped);
    }
}
