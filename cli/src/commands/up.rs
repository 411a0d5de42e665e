//! `kulisse up`: run the control plane in the foreground (what `kube-apiserver` plus its
//! etcd are in a real cluster).
//!
//! It opens the store (an embedded redb file in the data dir, or a real etcd), makes sure
//! the system namespaces exist, listens on loopback, and writes `<data-dir>/kubeconfig`
//! (mode 0600) with a random token that every client must present. Restarting on the same
//! data dir keeps the objects, the token and the kubeconfig. Ctrl-C stops it cleanly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use kulisse_backends::store::{embedded::EmbeddedStore, etcd::EtcdStore};
use kulisse_core::apiserver::{self, ApiServer};
use kulisse_core::client::kubeconfig::{self, Kubeconfig};
use kulisse_core::store::Store;

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where the cluster keeps its state, token and kubeconfig.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API server listens on. Keep it on loopback: anyone who can reach it and
    /// holds the token controls the cluster. Ports below 1024 need root.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Which store keeps the cluster's objects.
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// etcd endpoints, comma-separated (with --store etcd).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379",
        value_name = "URL,..."
    )]
    pub etcd_endpoints: Vec<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// One redb file in the data dir (no other process needed).
    Embedded,
    /// A real etcd, as in a production cluster.
    Etcd,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let _tracing = kulisse_traces::init("kulisse-apiserver")?;
    let data_dir = args.data_dir.clone().unwrap_or_else(kubeconfig::default_data_dir);
    create_private_dir(&data_dir)?;

    let store: Arc<dyn Store> = match args.store {
        StoreKind::Embedded => {
            let path = data_dir.join("store.redb");
            EmbeddedStore::open(&path).with_context(|| format!("opening the embedded store {}", path.display()))?
        }
        StoreKind::Etcd => EtcdStore::connect(&args.etcd_endpoints)
            .await
            .context("connecting to etcd")?,
    };
    let token = load_or_create_token(&data_dir)?;
    let server = ApiServer::new(store, apiserver::Config { token: token.clone() });
    server
        .bootstrap()
        .await
        .map_err(|e| anyhow::anyhow!("creating the system namespaces failed: {e}"))?;

    let listener = bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let kubeconfig_path = data_dir.join("kubeconfig");
    Kubeconfig::for_cluster(&url, &token)
        .write(&kubeconfig_path)
        .with_context(|| format!("writing {}", kubeconfig_path.display()))?;

    println!("kulisse control plane is up");
    println!(
        "  API server:  {url}  (store: {})",
        match args.store {
            StoreKind::Embedded => format!("embedded, {}", data_dir.join("store.redb").display()),
            StoreKind::Etcd => format!("etcd, {}", args.etcd_endpoints.join(",")),
        }
    );
    println!("  kubeconfig:  {}", kubeconfig_path.display());
    println!();
    println!("In another terminal:");
    println!("  export KULISSE_KUBECONFIG={}", kubeconfig_path.display());
    println!("  kulisse apply -f examples/web.yaml");
    println!("  kulisse get deployments");
    println!();
    println!("Press Ctrl-C to stop.");

    server.serve(listener, shutdown_signal()).await?;
    println!("kulisse control plane stopped");
    Ok(ExitCode::SUCCESS)
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: listening on {addr}, which is not a loopback address: anyone who can reach it and has the token controls this cluster"
        );
    }
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 => bail!(
            "cannot listen on {addr}: ports below 1024 need root. Pick a higher port, e.g. --listen 127.0.0.1:6443"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "cannot listen on {addr}: the address is in use (is another `kulisse up` running?). Pick another with --listen"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    Ok(())
}

/// The cluster's bearer token: kept in `<data-dir>/token` (mode 0600) so a restart keeps it.
fn load_or_create_token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    let bytes: [u8; 24] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    kubeconfig::write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
