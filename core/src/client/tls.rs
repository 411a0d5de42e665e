//! # TLS for clients (mirrors client-go's `transport` TLS config)
//!
//! A client trusts exactly one certificate authority: the cluster's own, which the
//! kubeconfig carries as `certificate-authority-data`. Only after the API server has proved
//! that its certificate was signed by that CA does the client send its credentials. The API
//! server's side (creating the CA and the serving certificate) lives in the API server's `certs.rs`; both
//! use the same crypto provider, from here.

use std::sync::Arc;

/// The crypto kulisse uses for TLS (ring), on both sides of every connection.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// A rustls client configuration trusting only `ca_pem` (the cluster's CA).
pub fn client_config(ca_pem: &[u8]) -> std::io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert?).map_err(|e| err("the cluster CA certificate", e))?;
    }
    if roots.is_empty() {
        return Err(err(
            "the cluster CA",
            "no certificate found in certificate-authority-data",
        ));
    }
    Ok(rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
