//! # Step mode: stop the control loop between two writes (kulisse only)
//!
//! Kubernetes is a set of loops that each read the store, decide, and **write**. Every
//! visible change in a cluster is one of those writes: the API server storing the
//! Deployment kubectl sent, the deployment controller creating a ReplicaSet, the ReplicaSet
//! controller creating Pods, the scheduler binding one, a kubelet reporting its status,
//! kube-proxy publishing its rules. Step mode holds each such write **just before the store
//! write**, so a learner can look at it (who, what, the diff against what the store holds,
//! the trace so far) and let it through one at a time.
//!
//! **Upstream Kubernetes has no such mode.** Nothing in kube-apiserver pauses writes; the
//! closest things are admission webhooks and API Priority and Fairness, which also hold a
//! request inside the server for a while. kulisse's gate is its own teaching instrument.
//!
//! ## Where the pause happens
//!
//! The gate is in the API server's write path ([`super::write`] for creates and updates,
//! [`super::binding`] for binds), after decoding, defaulting, validation and admission, and
//! right before the store transaction. Deletes are not held (a delete only marks most
//! objects terminating; the writes that follow it are). The component's request stays open meanwhile: the
//! controller, scheduler, kubelet or kube-proxy that sent it waits in its own write call,
//! exactly where it would wait for a slow etcd. So it works with any client (the real
//! kubectl included: its write is "the API server's own write of a client's request"), and
//! the waiting shows in the trace: an `apiserver.step_pause` span, with its duration, under
//! the `apiserver.request` that the component's own span (`scheduler.bind`,
//! `controller.reconcile`, ...) is the parent of.
//!
//! Which component wrote is read from the request's **authenticated user**: every component
//! logs in with its own client certificate, as upstream's do (`system:kube-scheduler`,
//! `system:kube-controller-manager`, `system:kube-proxy`, `system:node:<node>` for a
//! kubelet). Everything else (`kubernetes-admin` with kubectl, any other user) is a client,
//! whose write the API server itself makes: the component `apiserver`. The `User-Agent`
//! (`kulisse/0.1.0 (scheduler)`, as upstream's components name themselves in theirs) is
//! only what a client claims, so it never decides; it only names a kube-proxy's node.
//!
//! ## What is never held, and why nothing times out falsely
//!
//! - **Leases** (leader election of the controller manager and the scheduler, and the
//!   kubelets' node heartbeats in `kube-node-lease`), **Nodes** (status heartbeats, and the
//!   node lifecycle controller's taints) and **Events** pass the gate untouched. So while the
//!   cluster is paused no leader loses its lease, and the node lifecycle controller, whose
//!   clock keeps running, still sees every node's heartbeat: no node goes `NotReady`.
//! - **Probes** are not writes: the kubelet keeps probing while paused; only its report of
//!   the result (the pod status write) waits.
//! - **Deadlines that count wall time** keep counting: a Deployment's
//!   `progressDeadlineSeconds` (600 s by default) can pass while you look, and the
//!   deployment controller will then (honestly) report `ProgressDeadlineExceeded` once its
//!   status write is let through. kulisse does not stop those clocks; it says so here.
//! - A held update was checked against the revision the server read before the pause; if
//!   someone else wrote the object meanwhile, it fails with `409 Conflict` when released, and
//!   the component retries, as it would after any race.
//!
//! ## States
//!
//! `running` (nothing waits unless a **breakpoint** matches: a component, optionally with a
//! `kind/name-glob` such as `pod/web-*`) and `paused` (every gated write waits). `kulisse up
//! --step` starts paused. `next` lets the oldest waiting write through and answers once it
//! is written; `continue` lets everything through and runs; `pause` stops again.
//!
//! Each API server has its own gate (kulisse's `--masters 3` has three), so `kulisse up
//! --step` runs one API server.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tracing::Instrument;

use super::auth::UserInfo;
use super::{Body, Ctx, json_response};
use crate::objects::{ApiError, ResourceInfo};

/// The path of the gate: `GET` shows it, `POST` drives it.
pub const STEP_PATH: &str = "/apis/kulisse.dev/v1/step";

/// The components whose writes can be held, as `kulisse break` names them.
pub const COMPONENTS: &[&str] = &["apiserver", "controller-manager", "scheduler", "kubelet", "kube-proxy"];

/// How long `next` waits for a write to arrive, and then for it to be written.
const NEXT_WAIT: Duration = Duration::from_secs(20);

/// A breakpoint: writes of `component`, optionally only of `kind` objects whose name
/// matches `name` (a glob with `*`).
#[derive(Debug, Clone, PartialEq)]
pub struct Breakpoint {
    pub component: String,
    pub kind: Option<String>,
    pub name: Option<String>,
}

impl Breakpoint {
    fn matches(&self, w: &Write) -> bool {
        self.component == w.component
            && self.kind.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(&w.kind))
            && self.name.as_ref().is_none_or(|g| glob_match(g, &w.name))
    }

    fn to_json(&self) -> Value {
        let object = match (&self.kind, &self.name) {
            (Some(k), Some(n)) => format!("{}/{n}", k.to_ascii_lowercase()),
            (Some(k), None) => k.to_ascii_lowercase(),
            _ => String::new(),
        };
        json!({"component": self.component, "object": object})
    }
}

/// One write about to happen, as the gate shows it.
#[derive(Debug, Clone)]
pub struct Write {
    /// `apiserver`, `controller-manager`, `scheduler`, `kubelet`, `kube-proxy`.
    pub component: String,
    /// The component's instance where known (the node of a kubelet), else empty.
    pub instance: String,
    /// `create`, `update`, `bind`, `delete`.
    pub verb: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The subresource written (`status`, `binding`), or empty.
    pub subresource: String,
    /// The object as it would be stored.
    pub proposed: Value,
    /// The object as the store holds it now (`null` for a create).
    pub stored: Value,
    /// The W3C trace id of the write's trace, or empty when untraced.
    pub trace_id: String,
}

struct Waiting {
    id: u64,
    write: Write,
    since: Instant,
    since_wall: SystemTime,
    release: oneshot::Sender<Option<oneshot::Sender<String>>>,
}

#[derive(Default)]
struct State {
    paused: bool,
    breakpoints: Vec<Breakpoint>,
    waiting: VecDeque<Waiting>,
    next_id: u64,
}

/// The gate every gated write passes ([`StepGate::pass`]).
#[derive(Default)]
pub struct StepGate {
    state: Mutex<State>,
    arrived: Notify,
}

/// A write let through the gate. Tell it how the write went ([`Passage::done`]): `kulisse
/// step next` waits for that answer.
pub struct Passage {
    outcome: Option<oneshot::Sender<String>>,
}

impl Passage {
    /// Report the write's outcome to whoever released it.
    pub fn done<T>(mut self, result: &Result<T, ApiError>, revision: impl FnOnce(&T) -> String) {
        if let Some(tx) = self.outcome.take() {
            let _ = tx.send(match result {
                Ok(v) => format!("written ({})", revision(v)),
                Err(e) => format!("failed: {} {}: {}", e.code, e.reason, e.message),
            });
        }
    }
}

impl StepGate {
    /// A gate that starts paused (`kulisse up --step`) or running.
    pub fn new(paused: bool) -> Self {
        StepGate {
            state: Mutex::new(State {
                paused,
                ..State::default()
            }),
            arrived: Notify::new(),
        }
    }

    /// Pause (`true`) or run.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait here if `write` must be held; returns once it may go on. Writes that are never
    /// held (see the module doc) pass at once.
    pub async fn pass(&self, write: Write) -> Passage {
        let rx = {
            let mut st = self.lock();
            let hold = st.paused || st.breakpoints.iter().any(|b| b.matches(&write));
            if !hold {
                return Passage { outcome: None };
            }
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            st.waiting.push_back(Waiting {
                id,
                write: write.clone(),
                since: Instant::now(),
                since_wall: SystemTime::now(),
                release: tx,
            });
            self.arrived.notify_waiters();
            (id, rx)
        };
        let (id, rx) = rx;
        // Dropped (the client went away) before release: leave the queue.
        let guard = Unqueue { gate: self, id };
        let span = tracing::info_span!(
            "apiserver.step_pause",
            "kulisse.stage" = "apiserver",
            "kulisse.step.component" = write.component.as_str(),
            "kulisse.step.verb" = write.verb.as_str(),
            "k8s.kind" = write.kind.as_str(),
            "k8s.name" = write.name.as_str(),
        );
        let outcome = rx.instrument(span).await.ok().flatten();
        drop(guard);
        Passage { outcome }
    }

    /// Serve `GET` / `POST` on [`STEP_PATH`] for `user` (only `system:masters` may drive it).
    pub async fn handle(
        &self,
        method: &Method,
        user: &UserInfo,
        body: Bytes,
    ) -> Result<http::Response<Body>, ApiError> {
        match *method {
            Method::GET => Ok(json_response(StatusCode::OK, &self.status())),
            Method::POST => {
                if !user.groups.iter().any(|g| g == "system:masters") {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!("User \"{}\" cannot drive step mode: only system:masters may", user.name),
                    ));
                }
                let req: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(&format!("the step request is not JSON: {e}")))?;
                let answer = self.act(&req).await?;
                Ok(json_response(StatusCode::OK, &answer))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            )),
        }
    }

    async fn act(&self, req: &Value) -> Result<Value, ApiError> {
        let s = |k: &str| req.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        match s("action").unwrap_or("") {
            "next" => self.next().await,
            "continue" => {
                let mut st = self.lock();
                st.paused = false;
                let n = st.waiting.len();
                for w in st.waiting.drain(..) {
                    let _ = w.release.send(None);
                }
                Ok(json!({"released": n}))
            }
            "pause" => {
                self.lock().paused = true;
                Ok(json!({"paused": true}))
            }
            "break" => {
                let bp = parse_breakpoint(s("component").unwrap_or(""), s("object"))?;
                let mut st = self.lock();
                if !st.breakpoints.contains(&bp) {
                    st.breakpoints.push(bp.clone());
                }
                Ok(bp.to_json())
            }
            "clear" => {
                let mut st = self.lock();
                let n = st.breakpoints.len();
                st.breakpoints.clear();
                // Running, a write waits only because a breakpoint held it: with none left,
                // nothing holds it any more (paused, everything waits anyway).
                let released = if st.paused { 0 } else { st.waiting.len() };
                if !st.paused {
                    for w in st.waiting.drain(..) {
                        let _ = w.release.send(None);
                    }
                }
                Ok(json!({"cleared": n, "released": released}))
            }
            other => Err(ApiError::bad_request(&format!(
                "unknown step action {other:?}: expected next, continue, pause, break or clear"
            ))),
        }
    }

    /// Let the oldest waiting write through (waiting a while for one to arrive), and answer
    /// once it is written.
    async fn next(&self) -> Result<Value, ApiError> {
        let deadline = tokio::time::Instant::now() + NEXT_WAIT;
        let waiting = loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(w) = self.lock().waiting.pop_front() {
                break w;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(ApiError::new(
                    408,
                    "Timeout",
                    format!("no write arrived at the gate within {}s", NEXT_WAIT.as_secs()),
                ));
            }
        };
        let (tx, rx) = oneshot::channel();
        let entry = waiting_json(&waiting);
        let outcome = if waiting.release.send(Some(tx)).is_err() {
            "the writer went away".to_string()
        } else {
            match tokio::time::timeout(NEXT_WAIT, rx).await {
                Ok(Ok(outcome)) => outcome,
                _ => "let through (its outcome did not come back)".to_string(),
            }
        };
        Ok(json!({"released": entry, "outcome": outcome}))
    }

    /// The gate's state as JSON: mode, breakpoints, the waiting writes, oldest first.
    pub fn status(&self) -> Value {
        let st = self.lock();
        json!({
            "kind": "StepStatus",
            "apiVersion": "kulisse.dev/v1",
            "paused": st.paused,
            "breakpoints": st.breakpoints.iter().map(Breakpoint::to_json).collect::<Vec<_>>(),
            "waiting": st.waiting.iter().map(waiting_json).collect::<Vec<_>>(),
        })
    }
}

fn waiting_json(w: &Waiting) -> Value {
    let since: chrono::DateTime<chrono::Utc> = w.since_wall.into();
    json!({
        "id": w.id,
        "component": w.write.component,
        "instance": w.write.instance,
        "verb": w.write.verb,
        "kind": w.write.kind,
        "namespace": w.write.namespace,
        "name": w.write.name,
        "subresource": w.write.subresource,
        "traceId": w.write.trace_id,
        "waitingSince": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "waitingSeconds": w.since.elapsed().as_secs_f64(),
        "proposed": w.write.proposed,
        "stored": w.write.stored,
    })
}

struct Unqueue<'a> {
    gate: &'a StepGate,
    id: u64,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.gate.lock().waiting.retain(|w| w.id != self.id);
    }
}

/// `component` and an optional `kind/name-glob` (`pod/web-*`; `kind` alone matches every
/// object of that kind) as a [`Breakpoint`]. The kind is a Kind (`Pod`), any case.
pub fn parse_breakpoint(component: &str, object: Option<&str>) -> Result<Breakpoint, ApiError> {
    if !COMPONENTS.contains(&component) {
        return Err(ApiError::bad_request(&format!(
            "unknown component {component:?}: expected one of {}",
            COMPONENTS.join(", ")
        )));
    }
    let (kind, name) = match object {
        None => (None, None),
        Some(o) => match o.split_once('/') {
            Some((k, n)) if !k.is_empty() && !n.is_empty() => (Some(k.to_string()), Some(n.to_string())),
            None if !o.is_empty() => (Some(o.to_string()), None),
            _ => {
                return Err(ApiError::bad_request(&format!(
                    "object {o:?} is not KIND/NAME (a glob such as pod/web-* is allowed)"
                )));
            }
        },
    };
    Ok(Breakpoint {
        component: component.to_string(),
        kind,
        name,
    })
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Which component sent a request, from the **authenticated user** (after impersonation):
/// `system:kube-controller-manager`, `system:kube-scheduler`, `system:kube-proxy`,
/// `system:node:<node>` (a kubelet); anyone else is a client, whose write the API server
/// makes (`apiserver`). The user is what the API server trusts (a certificate or token it
/// checked); the `User-Agent` is whatever the client says, so it only adds the instance of
/// a kube-proxy (whose user is shared by every node): `kulisse/0.1.0 (kube-proxy/node-1)`.
/// Returns (component, instance).
pub fn component_of(headers: &HeaderMap, user: &str) -> (String, String) {
    let component = match user {
        "system:kube-controller-manager" => "controller-manager",
        "system:kube-scheduler" => "scheduler",
        "system:kube-proxy" => "kube-proxy",
        _ => match user.strip_prefix("system:node:") {
            Some(node) => return ("kubelet".to_string(), node.to_string()),
            None => return ("apiserver".to_string(), String::new()),
        },
    };
    let said = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.strip_prefix("kulisse/"))
        .and_then(|rest| rest.split_once('(').map(|(_, c)| c.trim_end_matches(')')))
        .and_then(|inner| inner.split_once('/'))
        .filter(|(c, _)| *c == component)
        .map(|(_, instance)| instance.to_string());
    (component.to_string(), said.unwrap_or_default())
}

/// What a gated write is about to write.
pub struct Target<'a> {
    pub info: &'static ResourceInfo,
    /// `create`, `update` or `bind`.
    pub verb: &'a str,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub sub: Option<&'a str>,
}

/// Hold the request's write of `proposed` (over `stored`, if any) at the gate while it must
/// wait. Dry runs and kinds that are never held ([`gated`]) pass at once.
pub async fn hold(ctx: &Ctx<'_>, t: Target<'_>, proposed: &Value, stored: Option<&Value>) -> Passage {
    if ctx.dry_run() || !gated(t.info) {
        return Passage { outcome: None };
    }
    let trace_id = kulisse_traces::propagation::traceparent_of_current()
        .and_then(|tp| tp.split('-').nth(1).map(str::to_string))
        .unwrap_or_default();
    let write = Write {
        component: ctx.component.0.clone(),
        instance: ctx.component.1.clone(),
        verb: t.verb.to_string(),
        kind: t.info.kind.to_string(),
        namespace: t.ns.unwrap_or("").to_string(),
        name: t.name.to_string(),
        subresource: t.sub.unwrap_or("").to_string(),
        proposed: proposed.clone(),
        stored: stored.cloned().unwrap_or(Value::Null),
        trace_id,
    };
    ctx.server.step.pass(write).await
}

/// Whether writes of `info` are ever held: Leases, Nodes and Events never are (heartbeats
/// and leader election must not stop; see the module doc).
pub fn gated(info: &ResourceInfo) -> bool {
    !matches!(info.kind, "Lease" | "Node" | "Event")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(component: &str, kind: &str, name: &str) -> Write {
        Write {
            component: component.into(),
            instance: String::new(),
            verb: "create".into(),
            kind: kind.into(),
            namespace: "default".into(),
            name: name.into(),
            subresource: String::new(),
            proposed: json!({}),
            stored: Value::Null,
            trace_id: String::new(),
        }
    }

    #[test]
    fn globs_and_breakpoints_match() {
        assert!(glob_match("web-*", "web-abc"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*c*e", "abcde"));
        assert!(!glob_match("web-*", "db-1"));
        assert!(!glob_match("a*a", "a"));
        let bp = parse_breakpoint("kubelet", Some("pod/web-*")).unwrap();
        assert!(bp.matches(&write("kubelet", "Pod", "web-1")));
        assert!(!bp.matches(&write("kubelet", "Pod", "db-1")));
        assert!(!bp.matches(&write("scheduler", "Pod", "web-1")));
        assert!(parse_breakpoint("etcd", None).is_err());
        assert!(parse_breakpoint("kubelet", Some("pod/")).is_err());
    }

    #[test]
    fn components_come_from_the_user_not_the_user_agent() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::USER_AGENT,
            "kulisse/0.1.0 (kubelet/node-2)".parse().unwrap(),
        );
        // An admin who claims to be a kubelet is still a client.
        assert_eq!(
            component_of(&h, "kubernetes-admin"),
            ("apiserver".into(), String::new())
        );
        assert_eq!(
            component_of(&h, "system:node:node-1"),
            ("kubelet".into(), "node-1".into())
        );
        h.insert(
            http::header::USER_AGENT,
            "kulisse/0.1.0 (kube-proxy/node-2)".parse().unwrap(),
        );
        assert_eq!(
            component_of(&h, "system:kube-proxy"),
            ("kube-proxy".into(), "node-2".into())
        );
        let h = HeaderMap::new();
        assert_eq!(component_of(&h, "system:kube-scheduler").0, "scheduler");
        assert_eq!(component_of(&h, "system:node:n1"), ("kubelet".into(), "n1".into()));
        assert_eq!(component_of(&h, "kubernetes-admin").0, "apiserver");
    }

    #[tokio::test]
    async fn a_paused_gate_holds_until_next() {
        let gate = std::sync::Arc::new(StepGate::new(true));
        let g = gate.clone();
        let writer = tokio::spawn(async move {
            let passage = g.pass(write("scheduler", "Pod", "web-1")).await;
            passage.done(&Ok::<_, ApiError>(7), |r| format!("revision {r}"));
        });
        let answer = gate.next().await.unwrap();
        assert_eq!(answer["released"]["name"], "web-1");
        assert_eq!(answer["outcome"], "written (revision 7)");
        writer.await.unwrap();
        assert_eq!(gate.status()["waiting"].as_array().unwrap().len(), 0);
        // Running with a breakpoint: only matching writes wait.
        gate.act(&json!({"action": "continue"})).await.unwrap();
        gate.act(&json!({"action": "break", "component": "kubelet"}))
            .await
            .unwrap();
        gate.pass(write("scheduler", "Pod", "web-2")).await;
        let g = gate.clone();
        let held = tokio::spawn(async move { g.pass(write("kubelet", "Pod", "web-2")).await.outcome.is_none() });
        let answer = gate.next().await.unwrap();
        assert_eq!(answer["released"]["component"], "kubelet");
        assert!(!held.await.unwrap());
    }
}
