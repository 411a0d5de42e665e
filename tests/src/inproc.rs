//! # An API server inside the test process
//!
//! For tests of one component (a controller, the scheduler, a kubelet) that need a real API
//! server but not a whole `kulisse up`: [`ApiServerFixture::start`] runs kulisse's API server
//! on `127.0.0.1:0` over an embedded store in a temporary directory, and hands out a
//! [`Client`] for it. Everything stops when the fixture is dropped.

use std::sync::Arc;

use kulisse_backends::store::embedded::EmbeddedStore;
use kulisse_core::apiserver::{self, ApiServer};
use kulisse_core::client::Client;
use kulisse_core::store::Store;
use tokio::sync::watch;

/// A running in-process API server.
pub struct ApiServerFixture {
    pub client: Client,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub token: String,
    /// The cluster CA (PEM) when the fixture serves HTTPS ([`ApiServerFixture::start_tls`]).
    pub ca_pem: Option<Vec<u8>>,
    /// The store under the API server (to compact it, for example).
    pub store: std::sync::Arc<dyn kulisse_core::store::Store>,
    /// Flip to `true` to stop components started with [`ApiServerFixture::shutdown_rx`].
    pub shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ApiServerFixture {
    /// Start the API server on plain HTTP (call from inside a tokio runtime).
    pub async fn start() -> ApiServerFixture {
        Self::start_with(false).await
    }

    /// Start the API server on plain HTTP with watch bookmarks every `interval` (instead of
    /// upstream's minute), for tests of bookmarks that should not wait that long.
    pub async fn start_with_bookmarks(interval: std::time::Duration) -> ApiServerFixture {
        Self::start_with_settings(false, interval).await
    }

    /// Start the API server on HTTPS with its own CA, as `kulisse up` does (for real clients
    /// such as kubectl, which send tokens only over TLS).
    pub async fn start_tls() -> ApiServerFixture {
        Self::start_with(true).await
    }

    /// Start the API server on plain HTTP over `store` (a real etcd, or a store a test
    /// wraps to inject failures).
    pub async fn start_with_store(store: Arc<dyn Store>) -> ApiServerFixture {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::serve(dir, store, false, apiserver::watch::DEFAULT_BOOKMARK_INTERVAL).await
    }

    /// [`ApiServerFixture::start_with_store`] with watch bookmarks every `interval`.
    pub async fn start_with_store_and_bookmarks(
        store: Arc<dyn Store>,
        interval: std::time::Duration,
    ) -> ApiServerFixture {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::serve(dir, store, false, interval).await
    }

    async fn start_with(tls: bool) -> ApiServerFixture {
        Self::start_with_settings(tls, apiserver::watch::DEFAULT_BOOKMARK_INTERVAL).await
    }

    async fn start_with_settings(tls: bool, bookmark_interval: std::time::Duration) -> ApiServerFixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open embedded store");
        Self::serve(dir, store, tls, bookmark_interval).await
    }

    async fn serve(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        tls: bool,
        bookmark_interval: std::time::Duration,
    ) -> ApiServerFixture {
        let token = "test-token".to_string();
        // The CA always exists: the API server logs in to kubelets with a certificate from it.
        let cluster_certs =
            apiserver::certs::ensure(dir.path(), "127.0.0.1".parse().expect("ip"), &[]).expect("certificates");
        let kubelet_client = apiserver::certs::kubelet_client_config(dir.path(), &cluster_certs.ca_pem)
            .expect("kubelet client certificate");
        let certs = tls.then_some(cluster_certs);
        let tls_config = certs
            .as_ref()
            .map(|c| apiserver::certs::server_config(c).expect("TLS config"));
        let ca_pem = certs.map(|c| c.ca_pem.into_bytes());
        let server = ApiServer::new(
            store.clone(),
            apiserver::Config {
                token: token.clone(),
                tls: tls_config,
                service_cidr: apiserver::allocator::DEFAULT_SERVICE_CIDR,
                bookmark_interval,
                limits: apiserver::limits::Limits::default(),
                audit_log: None,
                retention: apiserver::Retention::default(),
                kubelet_client: Some(kubelet_client),
                kubelet_network: None,
                service_accounts: Some(std::sync::Arc::new(
                    apiserver::serviceaccount::ServiceAccountTokens::load_or_create(dir.path())
                        .expect("service-account key"),
                )),
            },
        );
        server.bootstrap().await.expect("bootstrap namespaces");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        let client = Client::with_ca(&url, &token, ca_pem.as_deref()).expect("client");
        let (shutdown, _) = watch::channel(false);
        ApiServerFixture {
            client,
            url,
            token,
            ca_pem,
            store,
            shutdown,
            _dir: dir,
            stop: Some(stop),
        }
    }

    /// The serving certificate (issued from this fixture's CA) of the kubelet of `node`, and
    /// the CA its callers must be signed by.
    pub fn kubelet_tls(&self, node: &str) -> kulisse_core::kubelet::server::ServingTls {
        let dir = self._dir.path();
        let identity = apiserver::certs::client_identity(
            dir,
            &format!("kubelet-{node}"),
            &format!("system:node:{node}"),
            Some("system:nodes"),
            &["127.0.0.1".parse().expect("ip")],
        )
        .expect("kubelet certificate");
        let ca_pem = std::fs::read(dir.join("ca.crt")).expect("ca.crt");
        kulisse_core::kubelet::server::ServingTls { identity, ca_pem }
    }

    /// A client identity `user` (in `group`) signed by this fixture's CA.
    pub fn identity(&self, stem: &str, user: &str, group: Option<&str>) -> kulisse_core::client::tls::Identity {
        apiserver::certs::client_identity(self._dir.path(), stem, user, group, &[]).expect("client certificate")
    }

    /// A receiver for components' shutdown signal.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

impl Drop for ApiServerFixture {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Poll `check` every 20 ms until it returns `Some`, or panic with `what` after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
