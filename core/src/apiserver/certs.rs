//! # Certificates (mirrors kubeadm's "certs" phase)
//!
//! A real cluster's API server speaks only HTTPS, and kubectl sends its credentials (the
//! bearer token) only over TLS. So `kulisse up` creates a tiny public-key infrastructure in
//! its data directory the first time it starts, as `kubeadm init` does in `/etc/kubernetes/pki`:
//!
//! - `ca.crt` / `ca.key`: the cluster's own certificate authority (kept across restarts);
//! - `apiserver.crt` / `apiserver.key`: the API server's serving certificate, signed by that
//!   CA, valid for `localhost`, `127.0.0.1`, `::1` and the address it listens on (made anew
//!   at every start, so a new `--listen` address is always covered).
//!
//! The kubeconfig carries the CA (`certificate-authority-data`), so clients can check that
//! they talk to *this* API server, and only then send the token. Private keys are written
//! with mode 0600.
//!
//! The same CA signs one **client certificate** per component ([`client_identity`]), with
//! kubeadm's names: the Common Name is the user, the Organization its group. `kulisse up`
//! issues them all into `<data-dir>/pki` (kubeadm: `/etc/kubernetes/pki`) and writes a
//! kubeconfig for each component beside it (`admin.conf`, `controller-manager.conf`,
//! `scheduler.conf`, `kube-proxy.conf`, `kubelet-<node>.conf`), so that no component
//! holds the admin token. One of them is the API server's own client certificate for
//! talking to kubelets ([`KUBELET_CLIENT_USER`]); each kubelet demands exactly that one on
//! its API ([`kubelet_serving_config`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::client::tls::crypto_provider;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

/// The cluster CA and a serving certificate for the API server, in PEM.
pub struct ClusterCerts {
    /// The CA certificate (what clients trust).
    pub ca_pem: String,
    /// The API server's certificate chain (its certificate, then the CA's).
    pub serving_chain_pem: String,
    /// The API server's private key.
    pub serving_key_pem: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

/// The CA certificate (PEM) and an issuer for certificates it signs, from `dir` (created
/// there the first time).
fn load_ca(dir: &Path) -> std::io::Result<(String, Issuer<'static, KeyPair>)> {
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let (ca_pem, ca_key_pem) = match (std::fs::read_to_string(&ca_crt), std::fs::read_to_string(&ca_key)) {
        (Ok(c), Ok(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(|e| err("generating the CA key", e))?;
            let cert = ca_params()?
                .self_signed(&key)
                .map_err(|e| err("self-signing the CA", e))?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            crate::client::kubeconfig::write_private(&ca_key, k.as_bytes())?;
            crate::client::kubeconfig::write_private(&ca_crt, c.as_bytes())?;
            (c, k)
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| err("reading ca.key", e))?;
    // The issuer is the CA's subject and key: the same parameters the CA was made with.
    Ok((ca_pem, Issuer::new(ca_params()?, ca_key)))
}

/// Load the CA from `dir` (or create it), and issue a serving certificate for `listen_ip`
/// and the `extra_ips` (kube-apiserver's certificate names every address clients use:
/// kubeadm's `apiServer.certSANs`, k3s' `--tls-san`).
pub fn ensure(dir: &Path, listen_ip: IpAddr, extra_ips: &[IpAddr]) -> std::io::Result<ClusterCerts> {
    let (ca_pem, issuer) = load_ca(dir)?;

    let key = KeyPair::generate().map_err(|e| err("generating the API server key", e))?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
    ])
    .map_err(|e| err("API server certificate parameters", e))?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse().expect("valid"), "::1".parse().expect("valid")];
    for ip in std::iter::once(&listen_ip).chain(extra_ips) {
        if !ips.contains(ip) && !ip.is_unspecified() {
            ips.push(*ip);
        }
    }
    params.subject_alt_names.extend(ips.into_iter().map(SanType::IpAddress));
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err("signing the API server certificate", e))?;
    let serving_key_pem = key.serialize_pem();
    crate::client::kubeconfig::write_private(&dir.join("apiserver.key"), serving_key_pem.as_bytes())?;
    let serving_chain_pem = format!("{}{}", cert.pem(), ca_pem);
    crate::client::kubeconfig::write_private(&dir.join("apiserver.crt"), serving_chain_pem.as_bytes())?;
    Ok(ClusterCerts {
        ca_pem,
        serving_chain_pem,
        serving_key_pem,
    })
}

/// A client certificate for the user `cn` in the group `org`, signed by the cluster CA
/// in `dir`: kept in `<dir>/pki/<stem>.crt` and `.key` (mode 0600) and reused at the next
/// start, as kubeadm keeps `/etc/kubernetes/pki`. A component logs in with it: the API
/// server reads the user from the Common Name and the group from the Organization.
///
/// `serving_ips`: also valid as a TLS *server* certificate for these addresses (kulisse's
/// kubelets serve their API with their own certificate; upstream gives them a separate one).
pub fn client_identity(
    dir: &Path,
    stem: &str,
    cn: &str,
    org: Option<&str>,
    serving_ips: &[IpAddr],
) -> std::io::Result<crate::client::tls::Identity> {
    let crt = dir.join("pki").join(format!("{stem}.crt"));
    let key_path = dir.join("pki").join(format!("{stem}.key"));
    if let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read(&crt), std::fs::read(&key_path)) {
        return Ok(crate::client::tls::Identity { cert_pem, key_pem });
    }
    let (_, issuer) = load_ca(dir)?;
    let key = KeyPair::generate().map_err(|e| err("generating a client key", e))?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err("client certificate parameters", e))?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(org) = org {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if !serving_ips.is_empty() {
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        params
            .subject_alt_names
            .extend(serving_ips.iter().map(|ip| SanType::IpAddress(*ip)));
    }
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| err("signing a client certificate", e))?;
    let identity = crate::client::tls::Identity {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    };
    crate::client::kubeconfig::write_private(&key_path, &identity.key_pem)?;
    crate::client::kubeconfig::write_private(&crt, &identity.cert_pem)?;
    Ok(identity)
}

pub use crate::client::tls::{KUBELET_CLIENT_USER, client_verifier, kubelet_serving_config};

/// The API server's TLS client configuration for kubelets: trust the cluster CA in `dir`,
/// present `pki/apiserver-kubelet-client.crt` (`kube-apiserver-kubelet-client`,
/// `O=system:masters`, as kubeadm issues it; made the first time).
pub fn kubelet_client_config(dir: &Path, ca_pem: &str) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let identity = client_identity(
        dir,
        "apiserver-kubelet-client",
        KUBELET_CLIENT_USER,
        Some(super::auth::SYSTEM_MASTERS),
        &[],
    )?;
    Ok(Arc::new(crate::client::tls::client_config_as(
        ca_pem.as_bytes(),
        Some(&identity),
    )?))
}

/// The user a client identity's certificate names (Common Name, Organizations).
pub fn identity_user(identity: &crate::client::tls::Identity) -> Option<super::auth::UserInfo> {
    let der = rustls_pemfile::certs(&mut &identity.cert_pem[..]).next()?.ok()?;
    super::auth::user_from_certificate(der.as_ref())
}

/// The CA's parameters: a self-signed authority named `kulisse-ca`.
fn ca_params() -> std::io::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA parameters", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "kulisse-ca");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

/// A rustls server configuration from the serving chain and key.
pub fn server_config(certs: &ClusterCerts) -> std::io::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut certs.serving_chain_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut certs.serving_key_pem.as_bytes())?
        .ok_or_else(|| err("apiserver.key", "no private key in it"))?;
    // Clients may present a certificate signed by the cluster CA (every component does; it
    // names the user), or none (kubectl with the admin token): upstream's
    // `--client-ca-file`, which asks for a certificate but does not demand one.
    let verifier = client_verifier(certs.ca_pem.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| err("the API server certificate", e))?;
    // HTTP/2 first, as kube-apiserver offers it; HTTP/1.1 for clients that speak only that
    // (and for the upgrades of `exec` and `port-forward`).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_kept_and_serving_certs_are_signed_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path(), "127.0.0.1".parse().unwrap(), &[]).unwrap();
        let b = ensure(dir.path(), "127.0.0.2".parse().unwrap(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem, "the CA survives restarts");
        assert_ne!(
            a.serving_key_pem, b.serving_key_pem,
            "the serving key is new each start"
        );
        server_config(&b).unwrap();
        crate::client::tls::client_config(b.ca_pem.as_bytes()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in ["ca.key", "apiserver.key"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}
