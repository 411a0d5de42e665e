//! Running the controller manager or the scheduler as one candidate of a leader election
//! (the wiring kube-scheduler's and kube-controller-manager's `Run` do around client-go's
//! `leaderelection.RunOrDie`); the election itself is `kulisse_core::client::leaderelection`.
//!
//! - As its **own process** (`kulisse scheduler`, `kulisse controller-manager`): a fresh
//!   identity (`hostname_uuid`); when the lease is lost the process prints
//!   `leaderelection lost` and exits with code 1, as upstream's do, so no worker of the old
//!   term can still act. Ctrl-C releases the lease (`ReleaseOnCancel`), so a standby takes over
//!   at once.
//! - **Inside `kulisse up`**: the process also serves the API and cannot exit, so a lost
//!   component goes back to standing by. Its identity is stable across restarts of the same
//!   `kulisse up` (host, data dir and listen address), so a `kulisse up` restarted after a
//!   crash takes its own lease back at once instead of waiting out its dead predecessor's;
//!   it does not release the lease on Ctrl-C (its own API server stops at the same moment).

use std::future::Future;
use std::process::ExitCode;

use kulisse_core::client::Client;
use kulisse_core::client::leaderelection::{self, ApiLeaseLock, ChangeSpan, Config, LEASE_NAMESPACE, Outcome, Timing};
use tokio::sync::watch;

/// The identity to campaign as, when set (`kulisse up --masters` sets it for the processes
/// it starts, so `kulisse ps` can tell which one leads); else a fresh `hostname_uuid`.
pub const IDENTITY_ENV: &str = "KULISSE_LEADER_ELECT_IDENTITY";

/// Run `lead` in this process while it leads the Lease `kube-system/<lease>`; without an
/// election (`timing` is `None`: `--leader-elect=false`) run it at once. Exit code 1 when the
/// lease was lost.
pub async fn run_process<F, Fut>(
    client: &Client,
    lease: &str,
    span: ChangeSpan,
    timing: Option<Timing>,
    shutdown: watch::Receiver<bool>,
    lead: F,
) -> ExitCode
where
    F: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    let Some(timing) = timing else {
        lead(shutdown).await;
        return ExitCode::SUCCESS;
    };
    let config = Config {
        identity: std::env::var(IDENTITY_ENV).unwrap_or_else(|_| leaderelection::identity()),
        timing,
        span,
        release_on_cancel: true,
    };
    let lock = ApiLeaseLock::new(client.clone(), LEASE_NAMESPACE, lease);
    eprintln!(
        "attempting to acquire leader lease {LEASE_NAMESPACE}/{lease} as {}...",
        config.identity
    );
    let lead = |stop| {
        eprintln!("successfully acquired lease {LEASE_NAMESPACE}/{lease}");
        lead(stop)
    };
    match leaderelection::run(&config, &lock, shutdown, lead).await {
        Outcome::Stopped => ExitCode::SUCCESS,
        Outcome::Lost => {
            eprintln!("error: leaderelection lost");
            ExitCode::from(1)
        }
    }
}

/// The identity of a component inside the `kulisse up` that keeps its data in `data_dir`
/// and listens on `listen`: the same after a restart, different for another `kulisse up`.
pub fn in_process_identity(component: &str, data_dir: &std::path::Path, listen: &std::net::SocketAddr) -> String {
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = stable_hash(&format!("{}|{listen}", dir.display()));
    format!("{}_kulisse-up-{component}-{hash:016x}", leaderelection::hostname())
}

/// FNV-1a of `text`: the same across runs and Rust versions (std's hasher is not).
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Run `lead` inside `kulisse up` while it leads; after a lost term, stand by again.
pub async fn run_in_process<F, Fut>(
    client: &Client,
    lease: &str,
    span: ChangeSpan,
    identity: String,
    timing: Timing,
    shutdown: watch::Receiver<bool>,
    lead: F,
) where
    F: FnMut(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send,
{
    // No release on stop: the API server in this process stops at the same moment, and the
    // stable identity takes the lease back on the next start anyway.
    let config = Config {
        identity,
        timing,
        span,
        release_on_cancel: false,
    };
    let lock = ApiLeaseLock::new(client.clone(), LEASE_NAMESPACE, lease);
    leaderelection::run_until_shutdown(&config, &lock, shutdown, lead).await;
}
