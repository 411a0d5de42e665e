//! Every component its own identity (mirrors kubeadm's "certs" and "kubeconfig" phases).
//!
//! A cluster where every component holds the admin credential has one lock and many keys:
//! a broken kube-proxy could delete every Secret. So `kulisse up` issues, from the cluster
//! CA, one client certificate per component with kubeadm's names, and writes a kubeconfig
//! for each into the data dir, as `kubeadm init` writes `/etc/kubernetes/*.conf`:
//!
//! | kubeconfig              | user (CN)                        | group (O)        |
//! |-------------------------|----------------------------------|------------------|
//! | `admin.conf`            | `kubernetes-admin`               | `system:masters` |
//! | `controller-manager.conf` | `system:kube-controller-manager` |                |
//! | `scheduler.conf`        | `system:kube-scheduler`          |                  |
//! | `kube-proxy.conf`       | `system:kube-proxy`              |                  |
//! | `kubelet-<node>.conf`   | `system:node:<node>`             | `system:nodes`   |
//!
//! plus `pki/apiserver-kubelet-client.crt` (`kube-apiserver-kubelet-client`, `O=system:masters`):
//! how the API server logs in to kubelets. Certificates and keys live in `<data-dir>/pki`
//! (keys mode 0600) and are reused at the next start. RBAC's bootstrap bindings and the Node
//! authorizer then give each user exactly its component's rights.
//!
//! A component run as its own process (`kulisse scheduler`, `kulisse kubelet`, ...) uses its
//! own kubeconfig ([`own_kubeconfig`]). Given the admin's kubeconfig (`--kubeconfig`, or
//! the default), it takes the kubeconfig of its own that lies beside it instead, and a
//! kubelet of a node `kulisse up` does not know gets one issued there from the cluster CA:
//! the step that upstream's `kubeadm join` does through TLS bootstrapping (a bootstrap
//! token and a CertificateSigningRequest), which kulisse leaves out. The component itself
//! never holds the admin token.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use kulisse_core::apiserver::{auth, certs};
use kulisse_core::client::Client;
use kulisse_core::client::kubeconfig::Kubeconfig;
use kulisse_core::client::tls::Identity;

/// The address every kulisse kubelet serves on by default (its node IP).
const KUBELET_IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A component with an identity of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    Admin,
    ControllerManager,
    Scheduler,
    Proxy,
    /// The kubelet of this node.
    Kubelet(String),
}

impl Who {
    /// The user name (the certificate's Common Name) and group (its Organization).
    pub fn subject(&self) -> (String, Option<&'static str>) {
        match self {
            Who::Admin => (auth::ADMIN_USER.to_string(), Some(auth::SYSTEM_MASTERS)),
            Who::ControllerManager => ("system:kube-controller-manager".into(), None),
            Who::Scheduler => ("system:kube-scheduler".into(), None),
            Who::Proxy => ("system:kube-proxy".into(), None),
            Who::Kubelet(node) => (format!("system:node:{node}"), Some("system:nodes")),
        }
    }

    /// The file name of its certificate and key in `pki/` (without `.crt`/`.key`).
    fn stem(&self) -> String {
        match self {
            Who::Admin => "admin".into(),
            Who::ControllerManager => "controller-manager".into(),
            Who::Scheduler => "scheduler".into(),
            Who::Proxy => "kube-proxy".into(),
            Who::Kubelet(node) => format!("kubelet-{node}"),
        }
    }

    /// Its kubeconfig's file name in the data dir (kubeadm's names; one per kubelet).
    pub fn kubeconfig_name(&self) -> String {
        format!("{}.conf", self.stem())
    }
}

/// Issue `who`'s certificate from the CA in `data_dir` (kept if it exists) and write its
/// kubeconfig for `server` there. Returns the kubeconfig's path and the identity.
pub fn write_kubeconfig(data_dir: &Path, server: &str, ca_pem: &str, who: &Who) -> anyhow::Result<(PathBuf, Identity)> {
    let (user, group) = who.subject();
    // A kubelet serves its own API with this certificate too: valid for its address, on this
    // machine's loopback or, for `node-N`, on a node host of its own (the certificate is kept
    // across restarts, so it names both).
    let serving_ips: Vec<std::net::IpAddr> = match who {
        Who::Kubelet(node) => std::iter::once(KUBELET_IP)
            .chain(super::hosts::node_number(node).map(|n| super::hosts::host_ip(n).into()))
            .collect(),
        _ => Vec::new(),
    };
    let identity = certs::client_identity(data_dir, &who.stem(), &user, group, &serving_ips)
        .with_context(|| format!("issuing the certificate of {user}"))?;
    let path = data_dir.join(who.kubeconfig_name());
    Kubeconfig::for_identity(server, ca_pem, &identity)
        .write(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((path, identity))
}

/// A client for `server` that logs in as `identity`, trusting only `ca_pem`.
pub fn client_as(server: &str, ca_pem: &str, identity: &Identity) -> anyhow::Result<Client> {
    Ok(Client::with_identity(
        server,
        "",
        Some(ca_pem.as_bytes()),
        Some(identity),
    )?)
}

/// The components of a single-process cluster with `nodes` nodes: their kubeconfigs written,
/// and the API server's client configuration for kubelets.
pub struct Issued {
    pub controller_manager: Identity,
    pub scheduler: Identity,
    pub proxy: Identity,
    /// The kubelets of `node-1` ... `node-N`, in order.
    pub kubelets: Vec<Identity>,
}

/// Issue every component's certificate and kubeconfig for `server` (what `kulisse up` does
/// at each start; the certificates are kept, the kubeconfigs name the current address).
pub fn issue_all(data_dir: &Path, server: &str, ca_pem: &str, nodes: u32) -> anyhow::Result<Issued> {
    let one = |who: Who| write_kubeconfig(data_dir, server, ca_pem, &who).map(|(_, id)| id);
    one(Who::Admin)?;
    Ok(Issued {
        controller_manager: one(Who::ControllerManager)?,
        scheduler: one(Who::Scheduler)?,
        proxy: one(Who::Proxy)?,
        kubelets: issue_kubelets(data_dir, server, ca_pem, nodes)?,
    })
}

/// The kubelets' certificates and kubeconfigs, `node-1` ... `node-N` in order, issued on
/// every core at once: each is a new ECDSA key, a signature and three files synced to disk,
/// and one after the other 5,000 of them took a minute in a debug build. A cluster that big
/// prints how far it is on stderr every two seconds, so the wait says what it waits for.
fn issue_kubelets(data_dir: &Path, server: &str, ca_pem: &str, nodes: u32) -> anyhow::Result<Vec<Identity>> {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Twice the cores: a worker waiting for its fsync leaves its core to another.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 2) as u32;
    let per_worker = nodes.div_ceil(workers.max(1)).max(1);
    let done = AtomicU32::new(0);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| (w * per_worker + 1, ((w + 1) * per_worker).min(nodes)))
            .filter(|(first, last)| first <= last)
            .map(|(first, last)| {
                let done = &done;
                scope.spawn(move || {
                    (first..=last)
                        .map(|i| {
                            let who = Who::Kubelet(format!("node-{i}"));
                            let issued = write_kubeconfig(data_dir, server, ca_pem, &who).map(|(_, id)| id);
                            done.fetch_add(1, Ordering::Relaxed);
                            issued
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut printed = std::time::Instant::now();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if printed.elapsed() >= std::time::Duration::from_secs(2) {
                printed = std::time::Instant::now();
                eprintln!(
                    "[certs] {}/{nodes} kubelet certificates and kubeconfigs ({:.1}s)",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let mut kubelets = Vec::with_capacity(nodes as usize);
        for h in handles {
            kubelets.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a certificate worker panicked"))??,
            );
        }
        Ok(kubelets)
    })
}

/// The user a kubeconfig's client certificate names, if it has one.
fn user_of(identity: &Identity) -> Option<String> {
    certs::identity_user(identity).map(|u| u.name)
}

/// The kubeconfig component `who` runs with, given `path` (`--kubeconfig` or the default):
/// `path` itself when it logs in as `who`; when it is the admin's (a token), `who`'s own
/// kubeconfig beside it, issued there from the cluster CA if it is not there yet.
pub fn own_kubeconfig(path: &Path, who: &Who) -> anyhow::Result<PathBuf> {
    let conn = Kubeconfig::load(path)
        .and_then(|k| k.connection())
        .map_err(anyhow::Error::msg)?;
    let (user, _) = who.subject();
    if let Some(identity) = &conn.identity {
        match user_of(identity) {
            Some(name) if name == user => return Ok(path.to_path_buf()),
            Some(name) => bail!(
                "{} logs in as {name:?}; this component must log in as {user:?} (kulisse up writes its kubeconfig, {})",
                path.display(),
                who.kubeconfig_name()
            ),
            None => bail!("the client certificate in {} names no user", path.display()),
        }
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let own = dir.join(who.kubeconfig_name());
    if own.exists() {
        return Ok(own);
    }
    let ca_pem = conn
        .ca_pem
        .as_deref()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .filter(|_| dir.join("ca.key").exists());
    let Some(ca_pem) = ca_pem else {
        bail!(
            "{} holds the admin token, and no {} lies beside it: pass --kubeconfig with this component's own kubeconfig (kulisse up writes them into its data dir)",
            path.display(),
            who.kubeconfig_name()
        );
    };
    let (own, _) = write_kubeconfig(dir, &conn.server, &ca_pem, who)?;
    eprintln!("issued {user}'s certificate and kubeconfig {}", own.display());
    Ok(own)
}

/// A process component's client: its own kubeconfig ([`own_kubeconfig`]) loaded.
pub fn own_client(kubeconfig: Option<&Path>, who: &Who) -> anyhow::Result<(Client, PathBuf)> {
    let given = kubeconfig
        .map(Path::to_path_buf)
        .unwrap_or_else(kulisse_core::client::kubeconfig::default_path);
    let own = own_kubeconfig(&given, who).with_context(|| format!("finding the kubeconfig of {}", who.subject().0))?;
    let client = Client::from_kubeconfig(&own).with_context(|| format!("using kubeconfig {}", own.display()))?;
    Ok((client, own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_its_own_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let certs = certs::ensure(dir.path(), "127.0.0.1".parse().unwrap(), &[]).unwrap();
        let server = "https://127.0.0.1:6443";
        issue_all(dir.path(), server, &certs.ca_pem, 1).unwrap();
        let admin = dir.path().join("kubeconfig");
        Kubeconfig::for_cluster(server, "tok", Some(&certs.ca_pem))
            .write(&admin)
            .unwrap();
        // Given the admin's kubeconfig, a component takes its own beside it.
        let own = own_kubeconfig(&admin, &Who::Scheduler).unwrap();
        assert_eq!(own, dir.path().join("scheduler.conf"));
        let conn = Kubeconfig::load(&own).unwrap().connection().unwrap();
        assert_eq!(conn.token, "", "no token in a component's kubeconfig");
        assert_eq!(
            user_of(&conn.identity.unwrap()).as_deref(),
            Some("system:kube-scheduler")
        );
        // A kubelet of a node kulisse up did not start gets one issued.
        let own = own_kubeconfig(&admin, &Who::Kubelet("worker-a".into())).unwrap();
        assert_eq!(own, dir.path().join("kubelet-worker-a.conf"));
        // Another component's kubeconfig is refused.
        let err = own_kubeconfig(&dir.path().join("kube-proxy.conf"), &Who::Scheduler).unwrap_err();
        assert!(err.to_string().contains("system:kube-proxy"), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("pki/scheduler.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
