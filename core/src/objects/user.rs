//! # Users (mirrors `authentication.k8s.io/v1` `UserInfo` and upstream's `user.Info`)
//!
//! Kubernetes keeps no user objects: a user is what a trusted credential says, a name, a
//! uid and groups. This is the shape every authenticator answers with, and the
//! certificate convention the whole cluster shares: a client certificate's Common Name is
//! the user, each Organization a group (`CN=system:node:node-1, O=system:nodes` is node-1's
//! kubelet). It lives among the objects because two sides use it: the API server, which
//! authenticates every request ([`crate::apiserver::auth`]), and the kubelet, whose own API
//! checks who calls it ([`crate::kubelet`]).

/// The group whose members may do anything, checked before any role (upstream's
/// `user.SystemPrivilegedGroup`).
pub const SYSTEM_MASTERS: &str = "system:masters";
/// Every authenticated user is in this group.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
/// The group of `system:anonymous`.
pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of a request without credentials.
pub const ANONYMOUS: &str = "system:anonymous";
/// The user the admin token stands for (kubeadm's admin kubeconfig user).
pub const ADMIN_USER: &str = "kubernetes-admin";

/// Who sent a request: upstream's `user.Info`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name, e.g. `kubernetes-admin`, `system:node:node-1`,
    /// `system:serviceaccount:default:default`.
    pub name: String,
    /// A unique id, where the credential carries one (service accounts); else empty.
    pub uid: String,
    /// The groups, e.g. `system:masters`, `system:nodes`, `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// A user with these groups, plus `system:authenticated` (as every authenticator's
    /// answer gets it upstream).
    pub fn authenticated(name: impl Into<String>, groups: impl IntoIterator<Item = String>) -> UserInfo {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == SYSTEM_AUTHENTICATED) {
            groups.push(SYSTEM_AUTHENTICATED.to_string());
        }
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups,
        }
    }

    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS.to_string(),
            uid: String::new(),
            groups: vec![SYSTEM_UNAUTHENTICATED.to_string()],
        }
    }

    /// The admin token's user.
    pub fn admin() -> UserInfo {
        UserInfo::authenticated(ADMIN_USER, [SYSTEM_MASTERS.to_string()])
    }

    /// Is the user in `group`?
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// The user a verified client certificate names: Common Name → user, each Organization →
/// a group (upstream's `CommonNameUserConversion`). `None` when `der` is not a certificate
/// or has no Common Name. The caller has verified the certificate against the cluster CA.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    if name.is_empty() {
        return None;
    }
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo::authenticated(name, groups))
}
