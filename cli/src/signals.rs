//! Stopping on SIGINT (Ctrl-C) and SIGTERM (mirrors `k8s.io/apiserver/pkg/server`'s
//! `SetupSignalHandler`, which every Kubernetes component binary calls in its `main`).
//!
//! A Kubernetes component does not exit the moment a signal arrives: the signal closes a
//! "stop" channel (a cancelled context in Go), every loop of the component sees it, finishes
//! the step it is in and returns, and only then does the process exit. kulisse does the same
//! with a `tokio::sync::watch` channel of `bool`:
//!
//! - [`shutdown_signal`] resolves on the first SIGINT or SIGTERM (`kulisse up` awaits it, then
//!   stops its components and finally its API server, see `commands::up`);
//! - [`shutdown_on_signal`] turns that into a channel that flips to `true`: the receiver is
//!   what every component's `run(…, stop)` takes (controller manager, scheduler, kubelet,
//!   kube-proxy), so a component started alone (`kulisse kubelet`, see `commands::components`)
//!   and one started inside `kulisse up` shut down by the same path.
//!
//! Upstream exits at once on a second signal; here a second Ctrl-C is not treated specially.

use tokio::sync::watch;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// A shutdown channel that flips on Ctrl-C / SIGTERM.
pub fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}
