//! # TLS for clients (mirrors client-go's `transport` TLS config)
//!
//! A client trusts exactly one certificate authority: the cluster's own, which the
//! kubeconfig carries as `certificate-authority-data`. Only after the API server has proved
//! that its certificate was signed by that CA does the client send its credentials. The API
//! server's side (creating the CA and the serving certificate) lives in the API server's `certs.rs`; both
//! use the same crypto provider, from here. So does the one server outside the API server
//! that checks client certificates: the kubelet's own API ([`kubelet_serving_config`]).

use std::sync::Arc;

/// The crypto kulisse uses for TLS (ring), on both sides of every connection.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// A client's own certificate and key (PEM), signed by the cluster CA: who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// A rustls client configuration trusting only `ca_pem` (the cluster's CA).
pub fn client_config(ca_pem: &[u8]) -> std::io::Result<rustls::ClientConfig> {
    client_config_as(ca_pem, None)
}

/// The certificate chain and key of `identity`, as rustls wants them.
pub fn identity_parts(
    identity: &Identity,
) -> std::io::Result<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut &identity.cert_pem[..]).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut &identity.key_pem[..])?
        .ok_or_else(|| err("the client key", "no private key in client-key-data"))?;
    Ok((chain, key))
}

/// A rustls client configuration trusting only `ca_pem`, and presenting `identity`'s
/// client certificate when there is one (how every component logs in).
pub fn client_config_as(ca_pem: &[u8], identity: Option<&Identity>) -> std::io::Result<rustls::ClientConfig> {
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
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let (chain, key) = identity_parts(id)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err("the client certificate", e))
        }
    }
}

/// The user of the API server's client certificate for kubelets (kubeadm's
/// `apiserver-kubelet-client.crt`, `O=system:masters`): the only user a kubelet's API serves.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// A kubelet's TLS server configuration: its own certificate (`identity`, which names
/// its loopback address), and a client certificate signed by the cluster CA asked of every
/// caller. A caller without one still completes the handshake, so the kubelet can answer
/// `401 Unauthorized` in HTTP (as upstream's kubelet with anonymous auth off does) instead of
/// breaking the connection.
pub fn kubelet_serving_config(identity: &Identity, ca_pem: &[u8]) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = identity_parts(identity)?;
    let verifier = client_verifier(ca_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err("the kubelet's serving certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Checks client certificates against the cluster CA, and lets clients without one in
/// (the server then decides what they may do: upstream's `--client-ca-file`).
pub fn client_verifier(ca_pem: &[u8]) -> std::io::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        roots.add(cert?).map_err(|e| err("the cluster CA certificate", e))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| err("the client certificate verifier", e))
}
