//! # The ServiceAccount controller (mirrors kube-controller-manager's `serviceaccount-controller`, `pkg/controller/serviceaccount`)
//!
//! Every namespace has a ServiceAccount named `default`: it is who a program in that
//! namespace is when it says nothing else, and `kubectl create token default` needs it.
//! Nobody writes it by hand. This controller watches Namespaces and ServiceAccounts and,
//! for every namespace that is not being deleted, makes sure `default` exists:
//!
//! ```text
//! kubectl create ns shop ──► Namespace shop ──► serviceaccount controller:
//!                                                  no shop/default in the cache
//!                                                  ──► POST /api/v1/namespaces/shop/serviceaccounts {"metadata":{"name":"default"}}
//! kubectl delete sa default -n shop ──► (deleted) ──► the controller makes it again (new uid:
//!                                                      tokens of the old one no longer work)
//! ```
//!
//! It runs as `system:kube-controller-manager`, whose bootstrap role allows creating
//! ServiceAccounts. A namespace that is being deleted gets nothing (the create would be
//! refused anyway); a `default` that already exists is left alone (`409 AlreadyExists` from
//! a race with another writer is success). At start every namespace is looked at once, so
//! `default`, `kube-system`, `kube-public` and `kube-node-lease` get theirs too.

use std::sync::Arc;

use serde_json::json;

use super::reconciler::{
    Action, Cause, Queue, ReconcileError, ReconcileReason, Reconciler, namespace_terminating, new_queue,
};
use super::{Ctx, SharedInformers};
use crate::client::informer::InformerEvent;
use crate::objects::{self, ResourceInfo};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The ServiceAccount controller. Its keys are namespace names.
pub struct ServiceAccountsController {
    ctx: Arc<Ctx>,
}

fn service_account_info() -> &'static ResourceInfo {
    objects::by_gvk("v1", "ServiceAccount").expect("ServiceAccount is a built-in kind")
}

/// Set up the controller: queue a namespace when it appears or changes, and when its
/// `default` ServiceAccount is deleted.
pub fn setup(informers: &mut SharedInformers, ctx: Arc<Ctx>) -> (Arc<ServiceAccountsController>, Queue) {
    let queue = new_queue();
    {
        let queue = queue.clone();
        informers.namespaces.on_event(move |ev| {
            if matches!(ev, InformerEvent::Deleted(_)) {
                return;
            }
            let name = objects::name(ev.object()).unwrap_or("").to_string();
            queue.add(
                name,
                Cause {
                    reason: ReconcileReason::of_event(ev),
                    traceparent: None,
                },
            );
        });
    }
    {
        let queue = queue.clone();
        informers.serviceaccounts.on_event(move |ev| {
            let InformerEvent::Deleted(sa) = ev else { return };
            if objects::name(sa) != Some(DEFAULT_SERVICE_ACCOUNT) {
                return;
            }
            let ns = objects::namespace(sa).unwrap_or("").to_string();
            let reason = ReconcileReason::RelatedObjectChanged {
                kind: "ServiceAccount".into(),
                name: DEFAULT_SERVICE_ACCOUNT.into(),
            };
            queue.add(
                ns,
                Cause {
                    reason,
                    traceparent: None,
                },
            );
        });
    }
    (Arc::new(ServiceAccountsController { ctx }), queue)
}

#[async_trait::async_trait]
impl Reconciler for ServiceAccountsController {
    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    /// Upstream's `syncNamespace`: create each missing managed ServiceAccount.
    async fn reconcile(&self, namespace: &str, _reason: &ReconcileReason) -> Result<Action, ReconcileError> {
        let caches = &self.ctx.caches;
        let Some(ns) = caches.namespaces.get(namespace) else {
            return Ok(Action::await_change());
        };
        if objects::deletion_timestamp(&ns).is_some() {
            return Ok(Action::await_change());
        }
        let key = format!("{namespace}/{DEFAULT_SERVICE_ACCOUNT}");
        if caches.serviceaccounts.get(&key).is_some() {
            return Ok(Action::await_change());
        }
        let sa = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT_SERVICE_ACCOUNT, "namespace": namespace},
        });
        // Inside the reconciler's `controller.reconcile` span (controller `serviceaccount`).
        let created = self
            .ctx
            .client
            .create(service_account_info(), Some(namespace), &sa)
            .await;
        match created {
            Ok(_) => Ok(Action::await_change()),
            Err(e) if e.code() == Some(409) || namespace_terminating(&e) => Ok(Action::await_change()),
            Err(e) => Err(ReconcileError::from(e)),
        }
    }
}
