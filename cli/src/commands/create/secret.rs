//! `kulisse create secret generic|tls|docker-registry NAME ...` (mirrors
//! `kubectl create secret`).
//!
//! A Secret stores bytes under keys, base64-encoded in `data` (base64 is an encoding, not
//! encryption: anyone who may read the Secret reads its values). The three generators only
//! differ in where the bytes come from and the `type` they set:
//! - `generic`: `--from-literal`/`--from-file`, any `--type` (none given: the server's
//!   default, `Opaque`);
//! - `tls`: `--cert`/`--key` PEM files as `tls.crt`/`tls.key`, type `kubernetes.io/tls`;
//! - `docker-registry`: a `.dockerconfigjson` with one registry's credentials, type
//!   `kubernetes.io/dockerconfigjson` (what a pod's `imagePullSecrets` names).
//!
//! kulisse checks that the TLS files hold PEM blocks of the right kinds; unlike kubectl it
//! does not check that the key belongs to the certificate.

use std::process::ExitCode;

use anyhow::bail;
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::{CreateCommon, Entry, Sources, read_sources, send, sorted, valid_key};
use crate::GlobalArgs;

#[derive(Args, Debug)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// A Secret from literal values and files.
    Generic(GenericArgs),
    /// A TLS Secret from a certificate and its key.
    Tls(TlsArgs),
    /// A Secret for pulling images from a registry.
    DockerRegistry(DockerArgs),
}

#[derive(Args, Debug)]
pub struct GenericArgs {
    pub name: String,
    #[command(flatten)]
    pub sources: Sources,
    /// The Secret's type (default: Opaque, set by the server).
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[command(flatten)]
    pub common: CreateCommon,
}

#[derive(Args, Debug)]
pub struct TlsArgs {
    pub name: String,
    /// PEM-encoded certificate file.
    #[arg(long)]
    pub cert: Option<String>,
    /// PEM-encoded private key file.
    #[arg(long)]
    pub key: Option<String>,
    #[command(flatten)]
    pub common: CreateCommon,
}

#[derive(Args, Debug)]
pub struct DockerArgs {
    pub name: String,
    #[arg(long = "docker-server", default_value = "https://index.docker.io/v1/")]
    pub server: String,
    #[arg(long = "docker-username")]
    pub username: Option<String>,
    #[arg(long = "docker-password")]
    pub password: Option<String>,
    #[arg(long = "docker-email")]
    pub email: Option<String>,
    /// Existing docker config files (`.dockerconfigjson=path`).
    #[arg(long = "from-file")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub common: CreateCommon,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Secret of `kind` (if given) holding `entries`, in kubectl's field order.
pub fn secret(name: &str, entries: Vec<Entry>, kind: Option<&str>) -> anyhow::Result<Value> {
    let mut data = Map::new();
    for (key, bytes) in entries {
        if !valid_key(&key) {
            bail!(
                "{key:?} is not valid key name for a Secret a valid config key must consist of alphanumeric \
                 characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for \
                 validation is '[-._a-zA-Z0-9]+')"
            );
        }
        if data.contains_key(&key) {
            bail!("cannot add key {key}, another key by that name already exists");
        }
        data.insert(key, json!(b64(&bytes)));
    }
    let mut s = json!({"kind": "Secret", "apiVersion": "v1",
                       "metadata": {"name": name, "creationTimestamp": null}});
    if !data.is_empty() {
        s["data"] = sorted(&Value::Object(data));
    }
    if let Some(k) = kind.filter(|k| !k.is_empty()) {
        s["type"] = json!(k);
    }
    Ok(s)
}

/// Does `pem` hold a block whose label ends with `label` (`CERTIFICATE`, `PRIVATE KEY`)?
fn has_pem_block(pem: &[u8], label: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            .is_some_and(|l| l.ends_with(label))
    })
}

fn tls(args: &TlsArgs) -> anyhow::Result<Value> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        bail!("key and cert must be specified");
    };
    let read = |p: &str| std::fs::read(p).map_err(|e| anyhow::anyhow!("open {p}: {e}"));
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    if !has_pem_block(&cert_pem, "CERTIFICATE") {
        bail!("tls: failed to find any PEM data in certificate input");
    }
    if !has_pem_block(&key_pem, "PRIVATE KEY") {
        bail!("tls: failed to find any PEM data in key input");
    }
    let entries = vec![("tls.crt".to_string(), cert_pem), ("tls.key".to_string(), key_pem)];
    secret(&args.name, entries, Some("kubernetes.io/tls"))
}

/// The `.dockerconfigjson` of one registry login (`handleDockerCfgJSONContent`).
pub fn docker_config(server: &str, user: &str, password: &str, email: Option<&str>) -> Vec<u8> {
    let mut entry = json!({"username": user, "password": password});
    if let Some(e) = email.filter(|e| !e.is_empty()) {
        entry["email"] = json!(e);
    }
    entry["auth"] = json!(b64(format!("{user}:{password}").as_bytes()));
    let mut auths = Map::new();
    auths.insert(server.to_string(), entry);
    serde_json::to_vec(&json!({"auths": auths})).unwrap_or_default()
}

fn docker(args: &DockerArgs) -> anyhow::Result<Value> {
    let entries = if args.files.is_empty() {
        let (Some(user), Some(password)) = (&args.username, &args.password) else {
            bail!(
                "either --from-file or the combination of --docker-username, --docker-password and --docker-server is required"
            );
        };
        let config = docker_config(&args.server, user, password, args.email.as_deref());
        vec![(".dockerconfigjson".to_string(), config)]
    } else {
        read_sources(&Sources {
            literals: vec![],
            files: args.files.clone(),
        })?
    };
    secret(&args.name, entries, Some("kubernetes.io/dockerconfigjson"))
}

pub async fn run(global: &GlobalArgs, args: SecretArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SecretCommand::Generic(a) => {
            let s = secret(&a.name, read_sources(&a.sources)?, a.kind.as_deref())?;
            send(global, s, &a.common).await
        }
        SecretCommand::Tls(a) => send(global, tls(&a)?, &a.common).await,
        SecretCommand::DockerRegistry(a) => send(global, docker(&a)?, &a.common).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hold_base64_data_and_their_type() {
        let s = secret(
            "s",
            vec![("b".into(), b"hello\n".to_vec()), ("a".into(), b"b".to_vec())],
            None,
        )
        .unwrap();
        assert_eq!(s["data"], json!({"a": "Yg==", "b": "aGVsbG8K"}));
        assert!(s.get("type").is_none(), "no --type: the server defaults it");
        let keys: Vec<&String> = s["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b"], "sorted, as Go writes a map");
        let typed = secret("s", vec![], Some("kubernetes.io/basic-auth")).unwrap();
        assert_eq!(typed["type"], "kubernetes.io/basic-auth");
        let dup = secret("s", vec![("a".into(), vec![]), ("a".into(), vec![])], None).unwrap_err();
        assert_eq!(
            dup.to_string(),
            "cannot add key a, another key by that name already exists"
        );
    }

    #[test]
    fn a_docker_config_is_kubectls_json() {
        let c = docker_config("r.io", "u", "p", Some("e@x"));
        assert_eq!(
            String::from_utf8(c).unwrap(),
            r#"{"auths":{"r.io":{"username":"u","password":"p","email":"e@x","auth":"dTpw"}}}"#
        );
    }

    #[test]
    fn tls_files_must_be_pem() {
        assert!(has_pem_block(
            b"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n",
            "CERTIFICATE"
        ));
        assert!(has_pem_block(b"-----BEGIN RSA PRIVATE KEY-----\n", "PRIVATE KEY"));
        assert!(!has_pem_block(b"hello\n", "PRIVATE KEY"));
    }
}
