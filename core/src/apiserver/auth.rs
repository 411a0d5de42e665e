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
//!    stands for `kubernetes-admin` in the group `system:masters`; or a **ServiceAccount
//!    token**, a JWT the API server itself signed ([`super::serviceaccount`], upstream's
//!    service-account authenticator): `system:serviceaccount:NS:NAME` in the groups
//!    `system:serviceaccounts` and `system:serviceaccounts:NS`, valid while it has not
//!    expired and its ServiceAccount still exists.
//!
//! Every authenticated user also gets the group `system:authenticated`, as upstream adds
//! it. A request with a credential that does not check out gets `401 Unauthorized` and
//! nothing else happens (the span's `auth.reason` says why, the client is not told). A request with no credential at all is `system:anonymous`
//! (group `system:unauthenticated`); kulisse lets anonymous requests reach only
//! `/version`, `/healthz`, `/livez` and `/readyz` (upstream's anonymous authentication
//! restricted to those endpoints), every other anonymous request is a 401.
//!
//! *May you?* is the next station's question: [`super::authz`].

use http::{HeaderMap, header};
use tracing::info_span;

use super::serviceaccount::{self, Rejected, ServiceAccountTokens};
use super::storage::Storage;
use crate::objects::{self, ApiError};

pub use crate::objects::user::{
    ADMIN_USER, ANONYMOUS, SYSTEM_AUTHENTICATED, SYSTEM_MASTERS, SYSTEM_UNAUTHENTICATED, UserInfo,
    user_from_certificate,
};

/// How a request proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ClientCertificate,
    BearerToken,
    ServiceAccountToken,
    Anonymous,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::ClientCertificate => "x509",
            Method::BearerToken => "bearer-token",
            Method::ServiceAccountToken => "serviceaccount-token",
            Method::Anonymous => "anonymous",
        }
    }
}

/// The bearer tokens a server accepts: its admin token, and ServiceAccount tokens signed
/// with its key (checked against the ServiceAccounts in `storage`).
#[derive(Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub admin_token: &'a str,
    pub service_accounts: Option<&'a ServiceAccountTokens>,
    pub storage: Option<&'a Storage>,
}

impl<'a> Credentials<'a> {
    /// Only the admin token (no ServiceAccount tokens).
    pub fn admin_only(admin_token: &'a str) -> Self {
        Credentials {
            admin_token,
            ..Credentials::default()
        }
    }
}

/// Find out who sent the request: the client certificate the TLS handshake verified
/// (`peer`), else the bearer token, else anonymous when `anonymous_ok` (the public
/// endpoints).
pub async fn authenticate(
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    credentials: &Credentials<'_>,
    anonymous_ok: bool,
) -> Result<UserInfo, ApiError> {
    authenticate_in(&span(), headers, peer, credentials, anonymous_ok).await
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
        "auth.reason" = tracing::field::Empty,
    )
}

/// [`authenticate`], recording on `span`.
pub async fn authenticate_in(
    span: &tracing::Span,
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    credentials: &Credentials<'_>,
    anonymous_ok: bool,
) -> Result<UserInfo, ApiError> {
    let result = identify(headers, peer, credentials, anonymous_ok).await;
    match &result {
        Ok((method, user)) => {
            span.record("auth.method", method.name());
            span.record("auth.result", "authenticated");
            span.record("auth.user", user.name.as_str());
            span.record("auth.groups", user.groups.join(",").as_str());
        }
        Err((method, reason)) => {
            span.record("auth.method", method.name());
            span.record("auth.result", "rejected");
            if let Some(Rejected(reason)) = reason {
                span.record("auth.reason", reason.as_str());
            }
        }
    }
    result.map(|(_, user)| user).map_err(|_| ApiError::unauthorized())
}

type Identified = Result<(Method, UserInfo), (Method, Option<Rejected>)>;

async fn identify(
    headers: &HeaderMap,
    peer: Option<&UserInfo>,
    credentials: &Credentials<'_>,
    anonymous_ok: bool,
) -> Identified {
    if let Some(user) = peer {
        return Ok((Method::ClientCertificate, user.clone()));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let admin = credentials.admin_token;
    match presented {
        Some(p) if !admin.is_empty() && constant_time_eq(p.as_bytes(), admin.as_bytes()) => {
            Ok((Method::BearerToken, UserInfo::admin()))
        }
        Some(p) if serviceaccount::looks_like_jwt(p) && credentials.service_accounts.is_some() => {
            service_account(p, credentials)
                .await
                .map(|user| (Method::ServiceAccountToken, user))
                .map_err(|why| (Method::ServiceAccountToken, Some(why)))
        }
        Some(_) => Err((Method::BearerToken, None)),
        // Not a bearer token (empty, `Basic ...`): no credential this server reads.
        None if anonymous_ok => Ok((Method::Anonymous, UserInfo::anonymous())),
        None => Err((Method::Anonymous, None)),
    }
}

/// A ServiceAccount token: signed by the cluster key, in time, for the API server's
/// audience ([`ServiceAccountTokens::verify`]), and its ServiceAccount still there with the
/// uid the token names (upstream's `legacyValidator` lookup: deleting the account revokes
/// its tokens).
async fn service_account(token: &str, credentials: &Credentials<'_>) -> Result<UserInfo, Rejected> {
    let keys = credentials
        .service_accounts
        .ok_or_else(|| Rejected("no service-account key".into()))?;
    let claims = keys.verify(token)?;
    let k = &claims.kubernetes;
    let (ns, name, uid) = (&k.namespace, &k.serviceaccount.name, &k.serviceaccount.uid);
    if let Some(storage) = credentials.storage {
        let info = objects::by_gvk("v1", "ServiceAccount").expect("ServiceAccount is a built-in kind");
        let stored = storage
            .get(info, Some(ns), name)
            .await
            .map_err(|e| Rejected(format!("looking up the service account: {}", e.message)))?
            .ok_or_else(|| Rejected(format!("service account {ns}/{name} has been deleted")))?;
        let current = objects::uid(&stored.object).unwrap_or("");
        if current != uid {
            return Err(Rejected(format!(
                "service account UID ({uid}) does not match the current one ({current})"
            )));
        }
        if objects::deletion_timestamp(&stored.object).is_some() {
            return Err(Rejected(format!("service account {ns}/{name} is being deleted")));
        }
    }
    Ok(serviceaccount::user_info(ns, name, uid))
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

    fn admin(token: &str) -> Credentials<'_> {
        Credentials::admin_only(token)
    }

    #[tokio::test]
    async fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(
            authenticate(&h, None, &admin("s3cret"), false).await.unwrap_err().code,
            401
        );
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(
            authenticate(&h, None, &admin("s3cret"), true).await.unwrap_err().code,
            401
        );
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let user = authenticate(&h, None, &admin("s3cret"), false).await.unwrap();
        assert_eq!(user.name, "kubernetes-admin");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(authenticate(&h, None, &admin("s3cret"), false).await.is_err());
        assert_eq!(
            authenticate(&h, None, &admin("s3cret"), true).await.unwrap().name,
            "system:anonymous"
        );
    }

    #[tokio::test]
    async fn anonymous_only_where_allowed() {
        let h = HeaderMap::new();
        let anon = authenticate(&h, None, &admin("s3cret"), true).await.unwrap();
        assert_eq!(anon.name, "system:anonymous");
        assert_eq!(anon.groups, ["system:unauthenticated"]);
    }

    #[tokio::test]
    async fn a_certificate_names_user_and_groups() {
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
        assert_eq!(
            authenticate(&h, Some(&user), &admin("s3cret"), false).await.unwrap(),
            user
        );
        assert!(user_from_certificate(b"not a certificate").is_none());
    }
}
