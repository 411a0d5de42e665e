//! # Authentication (mirrors kube-apiserver's bearer-token authenticator)
//!
//! The first thing the API server asks is *who are you?* A real cluster has many
//! answers (client certificates, OIDC, service-account tokens). kulisse has one: the
//! random token that `kulisse up` writes into the kubeconfig (mode 0600). A request must
//! carry it as `Authorization: Bearer <token>`, or it gets `401 Unauthorized` and
//! nothing else happens. (Authorization, the *may you?* question that RBAC answers in
//! Kubernetes, is out of scope: whoever holds the token is the cluster admin.)

use http::{HeaderMap, header};
use tracing::info_span;

use crate::objects::ApiError;

/// Check the request's bearer token against the cluster's token.
pub fn authenticate(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let span = info_span!(
        "apiserver.authenticate",
        "kulisse.stage" = "apiserver",
        "auth.method" = "bearer-token",
        "auth.result" = tracing::field::Empty
    );
    let _enter = span.enter();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
    span.record("auth.result", if ok { "authenticated" } else { "rejected" });
    if ok { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// Compare without leaking, through timing, how many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
        assert_eq!(authenticate(&h, "s3cret").unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert_eq!(authenticate(&h, "s3cret").unwrap_err().code, 401);
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authenticate(&h, "s3cret").is_ok());
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(authenticate(&h, "s3cret").is_err());
    }
}
