//! # Impersonation (mirrors kube-apiserver's `WithImpersonation` filter)
//!
//! A user may ask to act as someone else: `kubectl --as system:node:node-1 --as-group
//! system:nodes get pods` sends the headers `Impersonate-User`, `Impersonate-Group` (one per
//! group), and maybe `Impersonate-Uid` and `Impersonate-Extra-<key>`. Right after
//! authentication the API server checks, for each one, that the *real* user may
//! `impersonate` it, as an ordinary authorization question:
//!
//! | header | resource asked for |
//! |---|---|
//! | `Impersonate-User: alice` | `users` named `alice` (core group) |
//! | `Impersonate-User: system:serviceaccount:ns:sa` | `serviceaccounts` named `sa` in `ns` |
//! | `Impersonate-Group: devs` | `groups` named `devs` |
//! | `Impersonate-Uid: 42` | `uids` named `42` in `authentication.k8s.io` |
//! | `Impersonate-Extra-scopes: view` | `userextras/scopes` named `view` in `authentication.k8s.io` |
//!
//! One refusal and the request ends with upstream's 403 (`users "alice" is forbidden: User
//! "bob" cannot impersonate resource "users" in API group "" at the cluster scope`). When
//! all are allowed, the request goes on *as the impersonated user*: authorization, admission
//! and the `apiserver.authenticate` span see them, and the span keeps the real user as
//! `auth.impersonator` (what upstream's audit log records as `impersonatedUser` beside
//! `user`). Members of `system:masters` may impersonate anyone (the chain allows them
//! everything); RBAC grants it with the verb `impersonate`.
//!
//! The impersonated user gets `system:authenticated` (or `system:unauthenticated` for
//! `system:anonymous`), and a service account also its groups `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>`, as upstream adds them. Groups, a uid or extras without
//! `Impersonate-User` are a `400 BadRequest`.

use http::HeaderMap;

use super::ApiServer;
use super::auth::{self, UserInfo};
use super::authz::{self, Attributes, Decision};
use crate::objects::ApiError;

/// The header naming the user to act as.
pub const USER: &str = "impersonate-user";
/// The header naming one group (repeated for several).
pub const GROUP: &str = "impersonate-group";
/// The header naming the uid.
pub const UID: &str = "impersonate-uid";
/// The prefix of the headers naming extra fields.
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// What the headers ask for.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    user: Option<String>,
    groups: Vec<String>,
    uid: Option<String>,
    extra: Vec<(String, String)>,
}

fn wanted(headers: &HeaderMap) -> Result<Wanted, ApiError> {
    let text = |v: &http::HeaderValue| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| ApiError::bad_request("impersonation headers must be text"))
    };
    let mut w = Wanted::default();
    for (name, value) in headers {
        let name = name.as_str();
        if name == USER {
            w.user = Some(text(value)?);
        } else if name == GROUP {
            w.groups.push(text(value)?);
        } else if name == UID {
            w.uid = Some(text(value)?);
        } else if let Some(key) = name.strip_prefix(EXTRA_PREFIX) {
            let key = percent_decode(key);
            for v in text(value)?.split(',') {
                w.extra.push((key.clone(), v.trim().to_string()));
            }
        }
    }
    Ok(w)
}

/// Extra keys travel percent-encoded in header names (upstream's `unescapeExtraKey`).
fn percent_decode(key: &str) -> String {
    form_urlencoded::parse(format!("k={key}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| key.to_string())
}

/// One `impersonate` question about `user`'s right to act as something.
fn question(user: &UserInfo, group: &str, resource: &str, sub: &str, namespace: &str, name: &str) -> Attributes {
    Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        resource_request: true,
        api_group: group.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        subresource: sub.into(),
        namespace: namespace.into(),
        name: name.into(),
        ..Attributes::default()
    }
}

/// The questions the headers raise, and the user the request becomes.
fn plan(real: &UserInfo, w: Wanted) -> Result<Option<(Vec<Attributes>, UserInfo)>, ApiError> {
    let Some(name) = w.user else {
        if w.groups.is_empty() && w.uid.is_none() && w.extra.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        ));
    };
    let mut questions = Vec::new();
    let mut groups = w.groups.clone();
    if let Some(sa) = name.strip_prefix("system:serviceaccount:") {
        let (ns, sa_name) = sa.split_once(':').unwrap_or(("", sa));
        questions.push(question(real, "", "serviceaccounts", "", ns, sa_name));
        for g in [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ] {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    } else {
        questions.push(question(real, "", "users", "", "", &name));
    }
    for g in &w.groups {
        questions.push(question(real, "", "groups", "", "", g));
    }
    if let Some(uid) = &w.uid {
        questions.push(question(real, "authentication.k8s.io", "uids", "", "", uid));
    }
    for (key, value) in &w.extra {
        questions.push(question(real, "authentication.k8s.io", "userextras", key, "", value));
    }
    let mut user = if name == auth::ANONYMOUS {
        if !groups.iter().any(|g| g == auth::SYSTEM_UNAUTHENTICATED) {
            groups.push(auth::SYSTEM_UNAUTHENTICATED.to_string());
        }
        UserInfo {
            name,
            uid: String::new(),
            groups,
        }
    } else {
        UserInfo::authenticated(name, groups)
    };
    user.uid = w.uid.unwrap_or_default();
    Ok(Some((questions, user)))
}

/// The user the request acts as: `real` itself when no `Impersonate-*` header is present,
/// else the impersonated user once every question was allowed. Records the outcome on
/// `span` (the request's `apiserver.authenticate`).
pub async fn impersonate(
    server: &ApiServer,
    headers: &HeaderMap,
    real: UserInfo,
    span: &tracing::Span,
) -> Result<UserInfo, ApiError> {
    let Some((questions, user)) = plan(&real, wanted(headers)?)? else {
        return Ok(real);
    };
    for q in &questions {
        let verdict = server.authorizer.decide(&server.storage, q).await?;
        if verdict.decision != Decision::Allow {
            span.record("auth.result", "impersonation-refused");
            return Err(authz::forbidden(q, &verdict.reason));
        }
    }
    span.record("auth.impersonator", real.name.as_str());
    span.record("auth.user", user.name.as_str());
    span.record("auth.groups", user.groups.join(",").as_str());
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn no_headers_no_impersonation() {
        let bob = UserInfo::authenticated("bob", []);
        assert_eq!(plan(&bob, wanted(&HeaderMap::new()).unwrap()).unwrap(), None);
        let only_group = wanted(&headers(&[("Impersonate-Group", "devs")])).unwrap();
        assert_eq!(plan(&bob, only_group).unwrap_err().code, 400);
    }

    #[test]
    fn each_header_is_a_question_and_the_user_gets_upstreams_groups() {
        let bob = UserInfo::authenticated("bob", []);
        let h = headers(&[
            ("Impersonate-User", "system:node:node-1"),
            ("Impersonate-Group", "system:nodes"),
            ("Impersonate-Extra-Scopes%2Fx", "view, edit"),
        ]);
        let (questions, user) = plan(&bob, wanted(&h).unwrap()).unwrap().unwrap();
        let asked: Vec<String> = questions
            .iter()
            .map(|q| format!("{} {}/{}", q.resource_and_subresource(), q.api_group, q.name))
            .collect();
        assert_eq!(
            asked,
            [
                "users /system:node:node-1",
                "groups /system:nodes",
                "userextras/scopes/x authentication.k8s.io/view",
                "userextras/scopes/x authentication.k8s.io/edit"
            ]
        );
        assert_eq!(user.name, "system:node:node-1");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        let h = headers(&[("Impersonate-User", "system:serviceaccount:dev:ci")]);
        let (questions, user) = plan(&bob, wanted(&h).unwrap()).unwrap().unwrap();
        assert_eq!(
            (
                questions[0].resource.as_str(),
                questions[0].namespace.as_str(),
                questions[0].name.as_str()
            ),
            ("serviceaccounts", "dev", "ci")
        );
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:dev",
                "system:authenticated"
            ]
        );
        let h = headers(&[("Impersonate-User", "system:anonymous")]);
        let (_, user) = plan(&bob, wanted(&h).unwrap()).unwrap().unwrap();
        assert_eq!(user.groups, ["system:unauthenticated"]);
    }
}
