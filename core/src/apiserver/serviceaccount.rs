//! # ServiceAccount tokens (mirrors kube-apiserver's `pkg/serviceaccount`: the JWT signer and validator)
//!
//! People log in with certificates or tokens someone handed them; programs running *in*
//! the cluster log in as a **ServiceAccount**, a namespaced object (`kubectl get sa`). A
//! ServiceAccount has no password. Instead the API server signs a short-lived token that
//! says "this bearer is the ServiceAccount `default` in namespace `shop`, uid …, until …":
//! a **JSON Web Token** (RFC 7519), three base64url parts joined by dots:
//!
//! ```text
//! header   {"alg":"ES256","typ":"JWT"}
//! claims   {"iss":"https://kubernetes.default.svc.cluster.local",
//!           "sub":"system:serviceaccount:shop:default",
//!           "aud":["https://kubernetes.default.svc.cluster.local"],
//!           "exp":…, "iat":…, "nbf":…, "jti":"…",
//!           "kubernetes.io":{"namespace":"shop","serviceaccount":{"name":"default","uid":"…"}}}
//! signature  ECDSA P-256 over the first two parts, with the cluster's service-account key
//! ```
//!
//! The key is made once by `kulisse up`, as kubeadm makes `/etc/kubernetes/pki/sa.key`:
//! `<data dir>/pki/sa.key` (the private key, 0600, kept by the API server only) and
//! `pki/sa.pub` (the public key anyone may use to check a token). `kubectl create token`
//! asks for a token through the `serviceaccounts/token` subresource ([`super::token`]).
//!
//! When a token comes back as `Authorization: Bearer …`, [`ServiceAccountTokens::authenticate`]
//! checks, as upstream's validator does: the signature, the issuer, that `exp` has not
//! passed and `nbf` has (60 s leeway for clocks), that one audience is the API server's own
//! (a token made for another audience is no key to the API), and that the ServiceAccount
//! still exists *with the same uid*: deleting the account revokes every token it was given,
//! even one that has not expired. The user is then `system:serviceaccount:NS:NAME`, uid the
//! account's uid, in the groups `system:serviceaccounts` and `system:serviceaccounts:NS`.
//!
//! Where kulisse differs: upstream signs with RS256 by default (kubeadm makes an RSA key);
//! kulisse signs with ES256 (a P-256 key, which `rcgen` already makes for the certificates),
//! a choice upstream also supports. Tokens bound to a Pod or Secret are not issued, the
//! header carries no `kid`, and the issuer's discovery document (`/.well-known/openid-configuration`)
//! is not served.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::objects::user::UserInfo;

/// The issuer kulisse's tokens name (kube-apiserver's `--service-account-issuer`, as
/// kubeadm sets it).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The audience the API server accepts tokens for (`--api-audiences`, which defaults to the
/// issuer); a TokenRequest without `spec.audiences` gets this one.
pub const API_AUDIENCE: &str = ISSUER;

/// The group of every ServiceAccount (upstream's `serviceaccount.AllServiceAccountsGroup`).
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// What user names of ServiceAccounts start with.
pub const USER_PREFIX: &str = "system:serviceaccount:";

/// The user name of a ServiceAccount: `system:serviceaccount:NS:NAME`.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("{USER_PREFIX}{namespace}:{name}")
}

/// The user a valid token of the ServiceAccount `namespace/name` (uid `uid`) stands for.
pub fn user_info(namespace: &str, name: &str, uid: &str) -> UserInfo {
    let mut user = UserInfo::authenticated(
        user_name(namespace, name),
        [
            ALL_SERVICE_ACCOUNTS_GROUP.to_string(),
            format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{namespace}"),
        ],
    );
    user.uid = uid.to_string();
    user
}

/// The `kubernetes.io` claim: which ServiceAccount the token is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
}

/// A reference by name and uid, as upstream's `ref` in the private claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The claims of a ServiceAccount token (upstream's `jwt.Claims` plus `privateClaims`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaim,
}

impl Claims {
    /// Claims for the ServiceAccount `namespace/name` (uid `uid`), valid from `now` for
    /// `seconds`, for `audiences`.
    pub fn new(namespace: &str, name: &str, uid: &str, audiences: Vec<String>, now: i64, seconds: i64) -> Claims {
        Claims {
            iss: ISSUER.to_string(),
            sub: user_name(namespace, name),
            aud: audiences,
            exp: now + seconds,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaim {
                namespace: namespace.to_string(),
                serviceaccount: ObjectRef {
                    name: name.to_string(),
                    uid: uid.to_string(),
                },
            },
        }
    }
}

/// Why a token was not accepted (the client sees only `401 Unauthorized`; the reason goes
/// to the `apiserver.authenticate` span).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

/// The cluster's service-account key: signs tokens and checks them.
pub struct ServiceAccountTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.write_str("ServiceAccountTokens { algorithm: ES256 }")
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

impl ServiceAccountTokens {
    /// Load `<data_dir>/pki/sa.key` (created, with `sa.pub`, the first time).
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<ServiceAccountTokens> {
        let key_path = data_dir.join("pki").join("sa.key");
        let pem = match std::fs::read_to_string(&key_path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate().map_err(|e| err("generating the service-account key", e))?;
                let pem = key.serialize_pem();
                crate::client::kubeconfig::write_private(&key_path, pem.as_bytes())?;
                crate::client::kubeconfig::write_private(
                    &key_path.with_extension("pub"),
                    key.public_key_pem().as_bytes(),
                )?;
                pem
            }
            Err(e) => return Err(err(&format!("reading {}", key_path.display()), e)),
        };
        let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| err(&format!("reading {}", key_path.display()), e))?;
        Self::from_key(&key)
    }

    /// Sign and check with `key` (an ECDSA P-256 key pair).
    pub fn from_key(key: &rcgen::KeyPair) -> std::io::Result<ServiceAccountTokens> {
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(err("the service-account key", "it is not an ECDSA P-256 key"));
        }
        Ok(ServiceAccountTokens {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(&key.public_key_raw()),
        })
    }

    /// Sign `claims` into a token.
    pub fn issue(&self, claims: &Claims) -> Result<String, String> {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// Check a token's signature, issuer, times and audience (see the module doc); the
    /// caller then checks that the ServiceAccount still exists with this uid.
    pub fn verify(&self, token: &str) -> Result<Claims, Rejected> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[API_AUDIENCE]);
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| Rejected(format!("invalid service account token: {e}")))?;
        let claims = data.claims;
        let k = &claims.kubernetes;
        if claims.sub != user_name(&k.namespace, &k.serviceaccount.name) {
            return Err(Rejected(
                "the token's subject does not match its service account".into(),
            ));
        }
        Ok(claims)
    }
}

/// Does this bearer token look like a JWT (three dot-separated parts)? Only those are
/// handed to the ServiceAccount authenticator.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ServiceAccountTokens {
        ServiceAccountTokens::from_key(&rcgen::KeyPair::generate().unwrap()).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn a_token_round_trips() {
        let k = keys();
        let claims = Claims::new("shop", "default", "u-1", vec![API_AUDIENCE.into()], now(), 3600);
        let token = k.issue(&claims).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(k.verify(&token).unwrap(), claims);
        let user = user_info("shop", "default", "u-1");
        assert_eq!(user.name, "system:serviceaccount:shop:default");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:shop",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let (k, other) = (keys(), keys());
        let good = Claims::new("shop", "default", "u-1", vec![API_AUDIENCE.into()], now(), 3600);
        // Signed by another key.
        assert!(k.verify(&other.issue(&good).unwrap()).is_err());
        // Expired (well past the leeway).
        let old = Claims::new("shop", "default", "u-1", vec![API_AUDIENCE.into()], now() - 7200, 600);
        assert!(k.verify(&k.issue(&old).unwrap()).is_err());
        // Not valid yet.
        let future = Claims::new("shop", "default", "u-1", vec![API_AUDIENCE.into()], now() + 3600, 600);
        assert!(k.verify(&k.issue(&future).unwrap()).is_err());
        // For another audience.
        let vault = Claims::new("shop", "default", "u-1", vec!["vault".into()], now(), 3600);
        assert!(k.verify(&k.issue(&vault).unwrap()).is_err());
        // A subject that does not match the account.
        let mut forged = good.clone();
        forged.sub = "system:serviceaccount:kube-system:default".into();
        assert!(k.verify(&k.issue(&forged).unwrap()).is_err());
        assert!(k.verify("garbage").is_err());
        assert!(k.verify("a.b.c").is_err());
    }

    #[test]
    fn the_key_is_kept_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ServiceAccountTokens::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("pki/sa.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            std::fs::read_to_string(dir.path().join("pki/sa.pub"))
                .unwrap()
                .contains("PUBLIC KEY")
        );
        let again = ServiceAccountTokens::load_or_create(dir.path()).unwrap();
        let claims = Claims::new("default", "default", "u", vec![API_AUDIENCE.into()], now(), 600);
        assert!(again.verify(&first.issue(&claims).unwrap()).is_ok());
    }
}
