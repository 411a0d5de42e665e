//! # Access reviews: asking the API server "may I?" and "who am I?" (mirrors
//! `pkg/registry/authorization` and `pkg/registry/authentication`)
//!
//! Some resources are not stored at all: they are *questions*. A client creates one
//! (`POST`), the API server fills in `status` with its answer and sends it back; nothing is
//! written, and there is nothing to get, list or watch afterwards. Discovery lists them with
//! the single verb `create`:
//!
//! | resource | kubectl | the answer |
//! |---|---|---|
//! | `selfsubjectaccessreviews.authorization.k8s.io` | `kubectl auth can-i VERB RESOURCE` | may *I* do this? `status.allowed`, `status.reason` |
//! | `subjectaccessreviews.authorization.k8s.io` | (webhooks, other servers) | may *this user* do it? |
//! | `selfsubjectrulesreviews.authorization.k8s.io` | `kubectl auth can-i --list` | every rule I have in a namespace |
//! | `selfsubjectreviews.authentication.k8s.io` | `kubectl auth whoami` | who the server thinks I am |
//!
//! The questions are answered by the same authorizer chain ([`super::authz`]) that guards
//! every request, so `can-i` tells exactly what a real request would meet. The rules review
//! can only list what RBAC grants: the Node authorizer decides from the object graph and has
//! no rules to list, so for a kubelet the answer says `incomplete: true` with upstream's
//! `evaluationError`, as kube-apiserver does.

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::UserInfo;
use super::authz::{Attributes, Decision};
use super::{ApiServer, Body, json_response};
use crate::objects::ApiError;

/// The API group of the access reviews.
pub const AUTHORIZATION: &str = "authorization.k8s.io";
/// The API group of `SelfSubjectReview` (and `TokenReview` upstream).
pub const AUTHENTICATION: &str = "authentication.k8s.io";

/// One review resource: group, plural, kind.
pub struct Review {
    pub group: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
}

/// The reviews kulisse serves, each at `/apis/<group>/v1/<plural>`.
pub static REVIEWS: &[Review] = &[
    Review {
        group: AUTHENTICATION,
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
    },
    Review {
        group: AUTHORIZATION,
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
    },
    Review {
        group: AUTHORIZATION,
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
    },
    Review {
        group: AUTHORIZATION,
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
    },
];

/// The review a path names, if it names one (`/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`).
pub fn parse(path: &str) -> Option<&'static Review> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", group, "v1", plural] => REVIEWS.iter().find(|r| r.group == *group && r.plural == *plural),
        _ => None,
    }
}

/// Does a review live in this group-version (for discovery)?
pub fn serves(group: &str, version: &str) -> bool {
    version == "v1" && REVIEWS.iter().any(|r| r.group == group)
}

/// The discovery entries of a group-version's reviews: create-only, cluster-scoped.
pub fn discovery_entries(group: &str, version: &str) -> Vec<Value> {
    if version != "v1" {
        return Vec::new();
    }
    REVIEWS
        .iter()
        .filter(|r| r.group == group)
        .map(|r| {
            json!({"name": r.plural, "singularName": r.kind.to_ascii_lowercase(), "namespaced": false,
                "kind": r.kind, "verbs": ["create"]})
        })
        .collect()
}

/// The attributes of "create this review", for the request's own authorization.
pub fn create_attributes(user: UserInfo, review: &Review, path: &str) -> Attributes {
    Attributes {
        user,
        verb: "create".into(),
        resource_request: true,
        api_group: review.group.into(),
        api_version: "v1".into(),
        resource: review.plural.into(),
        path: path.into(),
        ..Attributes::default()
    }
}

/// Answer a review: `body` is the (JSON) review the client created, `user` who sent it.
pub async fn handle(
    server: &ApiServer,
    review: &Review,
    method: &Method,
    user: &UserInfo,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    if *method != Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {}: it only accepts create", review.plural),
        ));
    }
    let mut obj: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding the review: {e}")))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request("a review must be a JSON object"));
    }
    obj["apiVersion"] = json!(format!("{}/v1", review.group));
    obj["kind"] = json!(review.kind);
    let status = match review.plural {
        "selfsubjectreviews" => json!({"userInfo": user_info_json(user)}),
        "selfsubjectaccessreviews" => access(server, user.clone(), &obj["spec"]).await?,
        "subjectaccessreviews" => {
            let subject = subject_of(&obj["spec"])?;
            access(server, subject, &obj["spec"]).await?
        }
        _ => rules(server, user, &obj["spec"]).await?,
    };
    obj["status"] = status;
    let meta = obj
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    if let Some(meta) = meta.filter(|m| m.is_object()) {
        meta["creationTimestamp"] = json!(crate::objects::time::now());
    }
    Ok(json_response(StatusCode::CREATED, &obj))
}

/// `status.userInfo` as upstream's `UserInfo` (username, uid, groups).
fn user_info_json(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    info
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The user a `SubjectAccessReview` asks about.
fn subject_of(spec: &Value) -> Result<UserInfo, ApiError> {
    let name = s(spec, "user");
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if name.is_empty() && groups.is_empty() {
        return Err(invalid("spec.user", "at least one of user or group must be specified"));
    }
    Ok(UserInfo {
        name: name.to_string(),
        uid: s(spec, "uid").to_string(),
        groups,
    })
}

fn invalid(field: &str, why: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("{field}: Invalid value: {why}"))
}

/// The attributes a review's `spec` describes (upstream's `ResourceAttributesFrom` /
/// `NonResourceAttributesFrom`).
fn attributes_of(user: UserInfo, spec: &Value) -> Result<Attributes, ApiError> {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            user,
            verb: s(r, "verb").to_string(),
            resource_request: true,
            api_group: s(r, "group").to_string(),
            api_version: s(r, "version").to_string(),
            resource: s(r, "resource").to_string(),
            subresource: s(r, "subresource").to_string(),
            namespace: s(r, "namespace").to_string(),
            name: s(r, "name").to_string(),
            ..Attributes::default()
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|n| n.is_object()) {
        return Ok(Attributes {
            user,
            verb: s(n, "verb").to_string(),
            path: s(n, "path").to_string(),
            ..Attributes::default()
        });
    }
    Err(invalid(
        "spec.resourceAttributes",
        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// `SubjectAccessReviewStatus`: allowed, denied (only on an explicit deny), reason.
async fn access(server: &ApiServer, user: UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let attrs = attributes_of(user, spec)?;
    let verdict = server.authorizer.decide(&server.storage, &attrs).await?;
    let mut status = json!({"allowed": verdict.decision == Decision::Allow});
    if verdict.decision == Decision::Deny {
        status["denied"] = json!(true);
    }
    if !verdict.reason.is_empty() {
        status["reason"] = json!(verdict.reason);
    }
    Ok(status)
}

/// `SubjectRulesReviewStatus`: what RBAC grants `user` in `spec.namespace`.
async fn rules(server: &ApiServer, user: &UserInfo, spec: &Value) -> Result<Value, ApiError> {
    let namespace = s(spec, "namespace");
    let policy = server.authorizer.rbac.policy(&server.storage).await?;
    let (rules, mut errors) = policy.rules_for(user, namespace);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if r.non_resource_urls.is_empty() {
            let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            resource_rules.push(rule);
        } else {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    let mut incomplete = !errors.is_empty();
    // The Node authorizer decides from the graph of pods, secrets and nodes: it has no
    // rules to list, so a kubelet's answer is incomplete (upstream's words).
    if user.in_group(super::authz::node::NODES_GROUP) {
        incomplete = true;
        errors.push("node authorizer does not support user rule resolution".into());
    }
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules,
        "incomplete": incomplete});
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_discovery() {
        assert_eq!(
            parse("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").map(|r| r.kind),
            Some("SelfSubjectAccessReview")
        );
        assert_eq!(
            parse("/apis/authentication.k8s.io/v1/selfsubjectreviews").map(|r| r.kind),
            Some("SelfSubjectReview")
        );
        assert!(parse("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews/x").is_none());
        assert!(parse("/apis/apps/v1/deployments").is_none());
        assert!(serves(AUTHORIZATION, "v1") && !serves(AUTHORIZATION, "v2"));
        let entries = discovery_entries(AUTHORIZATION, "v1");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0]["verbs"], json!(["create"]));
    }

    #[test]
    fn specs_become_attributes() {
        let bob = UserInfo::authenticated("bob", []);
        let spec = json!({"resourceAttributes": {"verb": "get", "resource": "pods", "subresource": "log",
            "namespace": "dev", "name": "web"}});
        let a = attributes_of(bob.clone(), &spec).unwrap();
        assert_eq!(
            (
                a.verb.as_str(),
                a.resource_and_subresource().as_str(),
                a.namespace.as_str()
            ),
            ("get", "pods/log", "dev")
        );
        let spec = json!({"nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        let a = attributes_of(bob.clone(), &spec).unwrap();
        assert!(!a.resource_request);
        assert_eq!(a.path, "/healthz");
        assert_eq!(attributes_of(bob, &json!({})).unwrap_err().code, 422);
        assert_eq!(subject_of(&json!({})).unwrap_err().code, 422);
        assert_eq!(
            subject_of(&json!({"user": "x", "groups": ["g"]})).unwrap().groups,
            ["g"]
        );
    }
}
