//! Station ① · chapter "apply: from the CLI to the API server" (book/src/apply.md) · span `apiserver.authorize`
//!
//! # Authorization (mirrors kube-apiserver's `WithAuthorization` filter and its authorizers)
//!
//! Authentication ([`super::auth`]) said *who* is asking; authorization decides *may they?*
//! Before a request's body is even read, the API server describes it as **attributes**
//! (upstream's `authorizer.Attributes`): the user, the verb (`get`, `list`, `watch`,
//! `create`, `update`, `patch`, `delete`), and either the resource (API group, resource,
//! subresource, namespace, name) or, for a URL that names no resource, the path
//! (`/healthz`, `/api`, `/apis/apps/v1`). Each authorizer in a chain then answers
//! **allow**, **deny** or **no opinion**; the first allow or deny wins, and when every one
//! has no opinion the request is refused: `403 Forbidden`, as a `Status` in upstream's
//! words:
//!
//! ```text
//! nodes "node-2" is forbidden: User "system:node:node-1" cannot get resource "nodes" in API group "" at the cluster scope: node 'node-1' cannot read 'node-2', only its own Node object
//! ```
//!
//! The chain is kubeadm's `--authorization-mode=Node,RBAC`, behind the privileged group:
//!
//! 1. members of `system:masters` may do anything (upstream checks this group before every
//!    authorizer, so no role can lock the admin out);
//! 2. [`node`]: the Node authorizer, for kubelets (`system:node:<name>`): only what
//!    concerns their own node (and, once the body is read, the NodeRestriction check);
//! 3. [`rbac`]: Roles, ClusterRoles and their bindings, stored as objects, with the
//!    [`bootstrap`] policy every cluster starts with.
//!
//! Every decision is a span, `apiserver.authorize`, with the verb, the resource, the
//! decision, the reason and the authorizer that decided.
//!
//! The same chain answers the questions clients ask about themselves
//! ([`super::reviews`]: `kubectl auth can-i`) and decides who may act as someone else
//! ([`super::impersonation`]: `kubectl --as`).

pub mod bootstrap;
pub mod node;
pub mod rbac;

use std::collections::HashMap;

use http::Method;
use tracing::info_span;

use super::auth::{SYSTEM_MASTERS, UserInfo};
use super::routes::Route;
use super::storage::Storage;
use crate::objects::{ApiError, StatusDetails};

/// What a request wants to do: upstream's `authorizer.AttributesRecord`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`;
    /// for a non-resource request the lowercase HTTP method (`get`, `post`, ...).
    pub verb: String,
    /// Does the request name a resource (`/api/v1/...`, `/apis/g/v/...` below a
    /// group-version), or only a path?
    pub resource_request: bool,
    pub api_group: String,
    pub api_version: String,
    /// The plural resource, e.g. `pods`.
    pub resource: String,
    /// e.g. `status`, `log`, `binding`; empty for the object itself.
    pub subresource: String,
    /// Empty for cluster-scoped resources and requests across all namespaces.
    pub namespace: String,
    /// Empty for collections (list, watch, create).
    pub name: String,
    /// The URL path (what non-resource rules match).
    pub path: String,
    /// The request's `fieldSelector`, for authorizers that allow a scoped list (the Node
    /// authorizer lets a kubelet list the pods with `spec.nodeName=<itself>`).
    pub field_selector: String,
}

impl Attributes {
    /// `pods`, `pods/status`: the resource as rules and messages name it.
    pub fn resource_and_subresource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// A short description for spans: `get pods/status default/web`, `get /healthz`.
    fn describe(&self) -> String {
        if !self.resource_request {
            return self.path.clone();
        }
        let group = if self.api_group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.api_group)
        };
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        format!("{}{group}{sub}", self.resource)
    }
}

/// One authorizer's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    NoOpinion,
}

/// An answer with its reason and who gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Why (empty when there is nothing to add, as upstream's RBAC usually answers).
    pub reason: String,
    /// Which authorizer decided: `system:masters`, `Node`, `RBAC`, or `none`.
    pub authorizer: &'static str,
}

/// Attributes for a parsed request, as upstream's `RequestInfoFactory` derives them.
pub fn attributes(
    user: UserInfo,
    method: &Method,
    path: &str,
    route: &Route,
    query: &HashMap<String, String>,
) -> Attributes {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut a = Attributes {
        user,
        path: path.to_string(),
        field_selector: query.get("fieldSelector").cloned().unwrap_or_default(),
        ..Attributes::default()
    };
    let (info, namespace, name, subresource) = match route {
        Route::Collection { info, namespace } => (*info, namespace.clone(), None, None),
        Route::Object {
            info,
            namespace,
            name,
            subresource,
        } => (*info, namespace.clone(), Some(name.clone()), subresource.clone()),
        _ => {
            a.verb = method.as_str().to_ascii_lowercase();
            return a;
        }
    };
    a.resource_request = true;
    a.api_group = info.group.to_string();
    a.api_version = info.version.to_string();
    a.resource = info.plural.to_string();
    a.subresource = subresource.unwrap_or_default();
    // A namespace object is "in" itself: upstream's request info sets the namespace of
    // `/api/v1/namespaces/foo` to `foo`, so a Role in `foo` can grant `get` on it.
    a.namespace = match (&namespace, &name) {
        (None, Some(n)) if info.kind == "Namespace" => n.clone(),
        _ => namespace.unwrap_or_default(),
    };
    a.name = name.clone().unwrap_or_default();
    // The streaming subresources are `create` whatever the method (see apiserver/streaming.rs).
    if matches!(a.subresource.as_str(), "exec" | "attach" | "portforward") {
        a.verb = "create".to_string();
        return a;
    }
    a.verb = match (method, name.is_some()) {
        (&Method::GET | &Method::HEAD, _) if watch => "watch",
        (&Method::GET | &Method::HEAD, true) => "get",
        (&Method::GET | &Method::HEAD, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        (other, _) => {
            return Attributes {
                verb: other.as_str().to_ascii_lowercase(),
                ..a
            };
        }
    }
    .to_string();
    // A list or watch of one object by `fieldSelector=metadata.name=X` names it, as
    // upstream's RequestInfoFactory does (how a kubelet watches the ConfigMaps it may read).
    if a.name.is_empty() && matches!(a.verb.as_str(), "list" | "watch") {
        a.name = exact_name(&a.field_selector).unwrap_or_default();
    }
    a
}

/// `X` of a field selector that requires `metadata.name=X` (or `==X`), if a valid name.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let value = term.trim().strip_prefix("metadata.name")?;
        let value = value.strip_prefix("==").or_else(|| value.strip_prefix('='))?;
        (!value.is_empty() && !value.contains(['/', '%']) && value != "." && value != "..").then(|| value.to_string())
    })
}

/// The chain of authorizers, in order.
#[derive(Default)]
pub struct Authorizer {
    /// RBAC, over the policy objects in the store.
    pub rbac: rbac::RbacAuthorizer,
}

impl Authorizer {
    /// kulisse's chain (see the module doc).
    pub fn new() -> Authorizer {
        Authorizer::default()
    }

    /// Ask each authorizer in turn; the first allow or deny wins. Reasons of those with
    /// no opinion are kept (joined by newlines, as upstream's union authorizer does).
    pub async fn decide(&self, storage: &Storage, attrs: &Attributes) -> Result<Verdict, ApiError> {
        let verdict = |decision, reason: String, authorizer| Verdict {
            decision,
            reason,
            authorizer,
        };
        if attrs.user.in_group(SYSTEM_MASTERS) {
            return Ok(verdict(Decision::Allow, String::new(), SYSTEM_MASTERS));
        }
        let mut reasons = Vec::new();
        let (decision, reason) = node::authorize(storage, attrs).await?;
        if decision == Decision::Allow {
            return Ok(verdict(Decision::Allow, reason, "Node"));
        }
        reasons.extend((!reason.is_empty()).then_some(reason));
        let (allowed, reason) = self.rbac.policy(storage).await?.authorize(attrs);
        if allowed {
            return Ok(verdict(Decision::Allow, reason, "RBAC"));
        }
        reasons.extend((!reason.is_empty()).then_some(reason));
        Ok(verdict(Decision::NoOpinion, reasons.join("\n"), "none"))
    }

    /// Decide, inside an `apiserver.authorize` span, and turn a refusal into the 403.
    pub async fn authorize(&self, storage: &Storage, attrs: &Attributes) -> Result<(), ApiError> {
        let span = info_span!(
            "apiserver.authorize",
            "kulisse.stage" = "apiserver",
            "authz.user" = attrs.user.name.as_str(),
            "authz.verb" = attrs.verb.as_str(),
            "authz.resource" = attrs.describe().as_str(),
            "authz.namespace" = attrs.namespace.as_str(),
            "authz.decision" = tracing::field::Empty,
            "authz.reason" = tracing::field::Empty,
            "authz.authorizer" = tracing::field::Empty,
        );
        let verdict = {
            use tracing::Instrument;
            self.decide(storage, attrs).instrument(span.clone()).await?
        };
        let allowed = verdict.decision == Decision::Allow;
        span.record("authz.decision", if allowed { "allow" } else { "deny" });
        span.record("authz.authorizer", verdict.authorizer);
        if !verdict.reason.is_empty() {
            span.record("authz.reason", verdict.reason.as_str());
        }
        if allowed {
            Ok(())
        } else {
            Err(forbidden(attrs, &verdict.reason))
        }
    }
}

/// `User "bob" cannot list resource "pods" in API group "" in the namespace "default"`:
/// upstream's `forbiddenMessage`.
pub fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.name;
    if !a.resource_request {
        return format!("User {user:?} cannot {} path {:?}", a.verb, a.path);
    }
    let resource = a.resource_and_subresource();
    if a.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.api_group, a.namespace
        )
    }
}

/// The `403 Forbidden` `Status` of a refused request (upstream's `responsewriters.Forbidden`
/// wrapped in `apierrors.NewForbidden`): `nodes "node-2" is forbidden: <message>[: reason]`.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let mut message = forbidden_message(a);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    admission_forbidden(a, message)
}

/// A `403 Forbidden` about the resource `a` names, with `detail` after `is forbidden: `
/// (also what admission plugins such as NodeRestriction answer).
pub fn admission_forbidden(a: &Attributes, detail: String) -> ApiError {
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let message = if qualified.is_empty() {
        format!("forbidden: {detail}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {detail}")
    } else {
        format!("{qualified} {:?} is forbidden: {detail}", a.name)
    };
    let mut err = ApiError::forbidden(message);
    err.details = Some(StatusDetails {
        name: a.name.clone(),
        group: a.api_group.clone(),
        kind: a.resource.clone(),
        causes: Vec::new(),
    });
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs_of(user: UserInfo, method: Method, path: &str, query: &str) -> Attributes {
        let route = super::super::routes::parse(path).unwrap();
        let query: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        attributes(user, &method, path, &route, &query)
    }

    fn node1() -> UserInfo {
        UserInfo::authenticated("system:node:node-1", ["system:nodes".to_string()])
    }

    #[test]
    fn a_list_by_metadata_name_names_its_object() {
        assert_eq!(exact_name("metadata.name=cfg"), Some("cfg".into()));
        assert_eq!(exact_name("spec.x=1,metadata.name==cfg"), Some("cfg".into()));
        assert_eq!(exact_name("metadata.name!=cfg"), None);
        assert_eq!(exact_name("metadata.name=a/b"), None);
        assert_eq!(exact_name(""), None);
    }

    #[test]
    fn request_attributes_follow_upstream_request_info() {
        let a = attrs_of(node1(), Method::PATCH, "/api/v1/nodes/node-2", "");
        assert_eq!(
            (a.verb.as_str(), a.resource.as_str(), a.name.as_str()),
            ("patch", "nodes", "node-2")
        );
        let a = attrs_of(
            node1(),
            Method::GET,
            "/api/v1/pods",
            "watch=true&fieldSelector=spec.nodeName%3Dnode-1",
        );
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        assert_eq!(a.field_selector, "spec.nodeName=node-1");
        let a = attrs_of(node1(), Method::PUT, "/api/v1/namespaces/default/pods/web/status", "");
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource_and_subresource().as_str(),
                a.namespace.as_str()
            ),
            ("update", "pods/status", "default")
        );
        let a = attrs_of(node1(), Method::GET, "/api/v1/namespaces/foo", "");
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("foo", "foo"));
        let a = attrs_of(node1(), Method::GET, "/apis/apps/v1", "");
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
        let a = attrs_of(node1(), Method::DELETE, "/api/v1/namespaces/default/pods", "");
        assert_eq!(a.verb, "deletecollection");
    }

    #[test]
    fn forbidden_in_upstream_words() {
        let a = attrs_of(node1(), Method::PATCH, "/api/v1/nodes/node-2", "");
        let err = forbidden(&a, "node 'node-1' cannot modify node 'node-2'");
        assert_eq!(err.code, 403);
        assert_eq!(err.reason, "Forbidden");
        assert_eq!(
            err.message,
            "nodes \"node-2\" is forbidden: User \"system:node:node-1\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope: node 'node-1' cannot modify node 'node-2'"
        );
        let a = attrs_of(node1(), Method::GET, "/apis/apps/v1/namespaces/default/deployments", "");
        assert_eq!(
            forbidden(&a, "").message,
            "deployments.apps is forbidden: User \"system:node:node-1\" cannot list resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
        let a = attrs_of(node1(), Method::GET, "/apis/apps/v1", "");
        assert_eq!(
            forbidden_message(&a),
            "User \"system:node:node-1\" cannot get path \"/apis/apps/v1\""
        );
    }
}
