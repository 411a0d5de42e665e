//! `kulisse rollout pause|resume|restart deployment/web` (mirrors kubectl's three
//! commands of the same names).
//!
//! None of them is a verb of the API; each is one small patch to the Deployment that the
//! Deployment controller reacts to:
//! - **pause** sets `spec.paused: true`. The controller then only scales; a changed pod
//!   template makes no new ReplicaSet until the Deployment is resumed, and the
//!   `Progressing` condition says `DeploymentPaused`. Handy to make several changes and
//!   roll them out as one.
//! - **resume** sets `spec.paused: false`; the controller rolls out whatever changed.
//! - **restart** writes the current time into the pod template's annotation
//!   `kubectl.kubernetes.io/restartedAt`. A changed template means a new ReplicaSet, so
//!   every pod is replaced, one rolling update at a time. A paused Deployment is refused.
//!
//! Like kubectl, each reads the Deployment first, computes the change, and refuses with
//! `is already paused` / `is not paused` instead of sending a patch that would change nothing.

use anyhow::bail;
use kulisse_core::client::Client;
use kulisse_core::objects;
use serde_json::{Value, json};

/// Which of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle {
    Pause,
    Resume,
    Restart,
}

/// The strategic merge patch for `toggle`, or kubectl's refusal.
pub fn patch_for(toggle: Toggle, d: &Value, now: &str) -> Result<Value, String> {
    let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    match toggle {
        Toggle::Pause if paused => Err("is already paused".into()),
        Toggle::Pause => Ok(json!({"spec": {"paused": true}})),
        Toggle::Resume if !paused => Err("is not paused".into()),
        Toggle::Resume => Ok(json!({"spec": {"paused": null}})),
        Toggle::Restart if paused => Err("can't restart paused deployment (run rollout resume first)".into()),
        Toggle::Restart => Ok(json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": now}}}}})),
    }
}

pub async fn run(client: &Client, ns: &str, name: &str, toggle: Toggle) -> anyhow::Result<()> {
    let info = objects::by_gvk("apps/v1", "Deployment").expect("Deployment is built in");
    let d = client.get(info, Some(ns), name).await?;
    let now = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = match patch_for(toggle, &d, &now) {
        Ok(p) => p,
        Err(why) => bail!("deployments.apps \"{name}\" {why}"),
    };
    let smp = "application/strategic-merge-patch+json";
    super::patch_as(client, info, Some(ns), name, smp, "kubectl-rollout", &patch, false).await?;
    let done = match toggle {
        Toggle::Pause => "paused",
        Toggle::Resume => "resumed",
        Toggle::Restart => "restarted",
    };
    println!("deployment.apps/{name} {done}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_toggle_is_one_small_patch_or_a_refusal() {
        let running = json!({"spec": {}});
        let paused = json!({"spec": {"paused": true}});
        assert_eq!(
            patch_for(Toggle::Pause, &running, "t"),
            Ok(json!({"spec": {"paused": true}}))
        );
        assert!(patch_for(Toggle::Pause, &paused, "t").is_err());
        assert_eq!(
            patch_for(Toggle::Resume, &paused, "t"),
            Ok(json!({"spec": {"paused": null}}))
        );
        assert!(patch_for(Toggle::Resume, &running, "t").is_err());
        let restart = patch_for(Toggle::Restart, &running, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            restart["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            patch_for(Toggle::Restart, &paused, "t"),
            Err("can't restart paused deployment (run rollout resume first)".into())
        );
    }
}
