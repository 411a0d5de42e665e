//! # Authentication (mirrors kube-apiserver's authenticators and `user.Info`)
//!
//! The first thing the API server asks is *who are you?* The answer is a **user**: a name,
//! a uid and a list of groups (upstream's `k8s.io/apiserver/pkg/authentication/user.Info`).
//! Kubernetes has no user objects: a user is whatever a trusted credential says. Like
//! kube-apiserver, kulisse tries its authenticators in turn and takes the first answer:
//!
//! 1. **x509 client certificates** (upstream's `--client-ca-file`): the TLS handshake has
//!    already proved that the client holds the key of a certificate signed by the cluster
//!    CA; the certificate's Common Name is the user name and each Organization is a group.
//!    This is how every component of the cluster logs in (`CN=system:node:node-1,
//!    O=system:nodes` is the kubelet of node-1), as kubeadm sets it up.
//! 2. **bearer tokens** (`Authorization: Bearer <token>`): the cluster's admin token that
//!    `kulisse up` writes into the admin kubeconfig (upstream's static token file); it
//!    stands for `kubernetes-admin` in the group `system:masters`.
//!
//! Every authenticated user also gets the group `system:authenticated`, as upstream adds
//! it. A request with a credential that does not check out gets `401 Unauthorized` and
//! nothing else happens. A request with no credential at all is `system:anonymous`
//! (group `system:unauthenticated`); kulisse lets anonymous requests reach only
//! `/version`, `/healthz`, `/livez` and `/readyz` (upstream's anonymous authentication
//! restricted to those endpoints), every other anonymous request is a 401.
//!
//! *May you?* is the next station's question: [`super::authz`].

use http::{HeaderMap, header};
use tracing::info_span;

use crate::objects::ApiError;

pub use crate::objects::user::{
    ADMIN_USER, ANONYMOUS, SYSTEM_AUTHENTICATED, SYSTEM_MASTERS, SYSTEM_UNAUTHENTICATED, UserInfo,
    user_from_certificate,
};

/// How a request proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ClientCertificate,
    BearerToken,
    Anonymous,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ClientCertificate => "x509",
            Method::BearerToken => "bearer-token",
            Method::Anonymous => "anonymous",
        }
    }
}

/// Find out who sent the request: the client certificate the TLS handshake verified
/// (`peer`), else the bearer token, else anonymous when `anonymous_ok` (the public
/// endpoints). `admin_token` is the cluster's admin token.
pub fn authenticate(
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    admin_token: &str,
    anonymous_ok: bool,
) -> Result<UserInfo, ApiError> {
    authenticate_in(&span(), headers, peer, admin_token, anonymous_ok)
}

/// The `apiserver.authenticate` span (impersonation records on it too).
pub fn span() -> tracing::Span {
    info_span!(
        "apiserver.authenticate",
        "kulisse.stage" = "apiserver",
        "auth.method" = tracing::field::Empty,
        "auth.result" = tracing::field::Empty,
        "auth.user" = tracing::field::Empty,
        "auth.groups" = tracing::field::Empty,
        "auth.impersonator" = tracing::field::Empty,
    )
}

/// [`authenticate`], recording on `span`.
pub fn authenticate_in(
    span: &tracing::Span,
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    admin_token: &str,
    anonymous_ok: bool,
) -> Result<UserInfo, ApiError> {
    let _enter = span.enter();
    let result = identify(headers, peer, admin_token, anonymous_ok);
    match &result {
        Ok((method, user)) => {
            span.record("auth.method", method.name());
            span.record("auth.result", "authenticated");
            span.record("auth.user", user.name.as_str());
            span.record("auth.groups", user.groups.join(",").as_str());
        }
        Err(method) => {
            span.record("auth.method", method.name());
            span.record("auth.result", "rejected");
        }
    }
    result.map(|(_, user)| user).map_err(|_| ApiError::unauthorized())
}

fn identify(
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    admin_token: &str,
    anonymous_ok: bool,
) -> Result<(Method, UserInfo), Method> {
    if let Some(user) = peer {
        return Ok((Method::ClientCertificate, user.clone()));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if !admin_token.is_empty() && constant_time_eq(p.as_bytes(), admin_token.as_bytes()) => {
            Ok((Method::BearerToken, UserInfo::admin()))
        }
        Some(_) => Err(Method::BearerToken),
        // Not a bearer token (empty, `Basic ...`): no credential this server reads.
        None if anonymous_ok => Ok((Method::Anonymous, UserInfo::anonymous())),
        None => Err(Method::Anonymous),
    }
}

/// Compare without leaking, through timing, how many leading bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(authenticate(&h, None, "s3cret", false).unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(authenticate(&h, None, "s3cret", true).unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let admin = authenticate(&h, None, "s3cret", false).unwrap();
        assert_eq!(admin.name, "kubernetes-admin");
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(authenticate(&h, None, "s3cret", false).is_err());
        assert_eq!(authenticate(&h, None, "s3cret", true).unwrap().name, "system:anonymous");
    }

    #[test]
    fn anonymous_only_where_allowed() {
        let h = HeaderMap::new();
        let anon = authenticate(&h, None, "s3cret", true).unwrap();
        assert_eq!(anon.name, "system:anonymous");
        assert_eq!(anon.groups, ["system:unauthenticated"]);
    }

    #[test]
    fn a_certificate_names_user_and_groups() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:node-1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        let cert = params.self_signed(&key).unwrap();
        let user = user_from_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "system:node:node-1");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        // A certificate beats a token: it was verified in the handshake.
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert_eq!(authenticate(&h, Some(&user), "s3cret", false).unwrap(), user);
        assert!(user_from_certificate(b"not a certificate").is_none());
    }
}
