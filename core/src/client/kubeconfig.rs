//! # kubeconfig (mirrors client-go's `clientcmd`)
//!
//! A kubeconfig file tells a client *where* the API server is and *who* it is:
//! `clusters` (server URLs), `users` (credentials: a bearer token, or a client certificate
//! and its key), and `contexts`
//! that pair a cluster with a user and a default namespace; `current-context` picks one.
//! `kulisse up` writes one to `<data-dir>/kubeconfig` with mode 0600 (it holds the
//! cluster's only credential), and the same file works unchanged with `kubectl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The kubeconfig file, as client-go reads and writes it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub server: String,
    /// The cluster CA certificate (PEM), base64-encoded: what clients trust.
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
    /// The same, as a file path.
    #[serde(rename = "certificate-authority", default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user's client certificate (PEM), base64-encoded: who it is, vouched for by the CA.
    #[serde(rename = "client-certificate-data", default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// The certificate's private key (PEM), base64-encoded.
    #[serde(rename = "client-key-data", default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a client needs from a kubeconfig: the server URL, the token, the default namespace.
#[derive(Debug, Clone)]
pub struct Connection {
    pub server: String,
    pub token: String,
    pub namespace: String,
    /// The cluster CA (PEM) to verify an `https://` server with.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and key, when the user logs in with one.
    pub identity: Option<super::tls::Identity>,
}

/// The name kulisse uses for its cluster, user and context entries.
pub const NAME: &str = "kulisse";

impl Kubeconfig {
    /// A kubeconfig for one kulisse cluster.
    pub fn for_cluster(server: &str, token: &str, ca_pem: Option<&str>) -> Self {
        use base64::Engine as _;
        let certificate_authority_data = ca_pem.map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: NAME.into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data,
                    certificate_authority: None,
                },
            }],
            users: vec![NamedUser {
                name: NAME.into(),
                user: User {
                    token: Some(token.into()),
                    ..User::default()
                },
            }],
            contexts: vec![NamedContext {
                name: NAME.into(),
                context: Context {
                    cluster: NAME.into(),
                    user: NAME.into(),
                    namespace: Some("default".into()),
                },
            }],
            current_context: NAME.into(),
        }
    }

    /// A kubeconfig for one kulisse cluster whose user logs in with a client certificate
    /// (what `kulisse up` writes for each component).
    pub fn for_identity(server: &str, ca_pem: &str, identity: &super::tls::Identity) -> Self {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut k = Kubeconfig::for_cluster(server, "", Some(ca_pem));
        k.users[0].user = User {
            token: None,
            client_certificate_data: Some(b64(&identity.cert_pem)),
            client_key_data: Some(b64(&identity.key_pem)),
        };
        k
    }

    /// Read and parse a kubeconfig file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "no kubeconfig at {}: start a cluster with `kulisse up` (it writes one), or pass --kubeconfig",
                path.display()
            ),
            _ => format!("could not read kubeconfig {}: {e}", path.display()),
        })?;
        serde_saphyr::from_str(&text).map_err(|e| format!("kubeconfig {} is not valid: {e}", path.display()))
    }

    /// The connection of the current context.
    pub fn connection(&self) -> Result<Connection, String> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .ok_or_else(|| {
                format!(
                    "the kubeconfig's current-context {:?} is not among its contexts",
                    self.current_context
                )
            })?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                format!(
                    "context {:?} names cluster {:?}, which the kubeconfig does not have",
                    ctx.name, ctx.context.cluster
                )
            })?;
        let user = self.users.iter().find(|u| u.name == ctx.context.user);
        let ca_pem = match (
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
        ) {
            (Some(data), _) => {
                use base64::Engine as _;
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(data.trim())
                        .map_err(|e| {
                            format!(
                                "certificate-authority-data of cluster {:?} is not base64: {e}",
                                cluster.name
                            )
                        })?,
                )
            }
            (None, Some(path)) => {
                Some(std::fs::read(path).map_err(|e| format!("reading certificate-authority {path}: {e}"))?)
            }
            (None, None) => None,
        };
        let decode = |what: &str, data: &Option<String>| -> Result<Option<Vec<u8>>, String> {
            use base64::Engine as _;
            data.as_ref()
                .map(|d| {
                    base64::engine::general_purpose::STANDARD
                        .decode(d.trim())
                        .map_err(|e| format!("{what} of user {:?} is not base64: {e}", ctx.context.user))
                })
                .transpose()
        };
        let identity = match user {
            Some(u) => match (
                decode("client-certificate-data", &u.user.client_certificate_data)?,
                decode("client-key-data", &u.user.client_key_data)?,
            ) {
                (Some(cert_pem), Some(key_pem)) => Some(super::tls::Identity { cert_pem, key_pem }),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "user {:?} needs both client-certificate-data and client-key-data",
                        u.name
                    ));
                }
            },
            None => None,
        };
        Ok(Connection {
            server: cluster.cluster.server.clone(),
            identity,
            token: user.and_then(|u| u.user.token.clone()).unwrap_or_default(),
            namespace: ctx.context.namespace.clone().unwrap_or_else(|| "default".into()),
            ca_pem,
        })
    }

    /// Write the file with mode 0600 (it contains a credential), creating its directory
    /// with mode 0700. Written to a temporary file and renamed, so a crash never leaves
    /// half a kubeconfig.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_saphyr::to_string(self).map_err(std::io::Error::other)?;
        write_private(path, text.as_bytes())
    }
}

/// Write `bytes` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
    }
    // A temporary name of this process's own: two processes writing the same file at once
    // each rename a whole file into place, and the last one wins.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.{seq}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Where clients look for the kubeconfig: `--kubeconfig`, else `$KULISSE_KUBECONFIG`,
/// else `~/.kulisse/kubeconfig`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KULISSE_KUBECONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    default_data_dir().join("kubeconfig")
}

/// `~/.kulisse`
pub fn default_data_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".kulisse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/kubeconfig");
        Kubeconfig::for_cluster(
            "https://127.0.0.1:6443",
            "tok",
            Some("-----BEGIN CERTIFICATE-----\nx\n"),
        )
        .write(&path)
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let conn = Kubeconfig::load(&path).unwrap().connection().unwrap();
        assert_eq!(conn.server, "https://127.0.0.1:6443");
        assert_eq!(conn.ca_pem.as_deref(), Some(&b"-----BEGIN CERTIFICATE-----\nx\n"[..]));
        assert_eq!(conn.token, "tok");
        assert_eq!(conn.namespace, "default");
    }
}
