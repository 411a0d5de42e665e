//! # Image pull secrets (mirrors the kubelet's `credentialprovider` keyring)
//!
//! A private registry wants a login before it hands out an image. A pod names Secrets that
//! hold logins in `spec.imagePullSecrets`; each is a Docker config, as
//! `kubectl create secret docker-registry NAME --docker-server=... --docker-username=...
//! --docker-password=...` writes it: type `kubernetes.io/dockerconfigjson`, key
//! `.dockerconfigjson`, `{"auths": {"SERVER": {"username", "password", "auth"}}}` (the older
//! `kubernetes.io/dockercfg` has the server map at the top level of `.dockercfg`).
//!
//! Before a pull the kubelet reads the pod's pull secrets (the node authorizer lets a node
//! read exactly the Secrets its pods reference), finds the entry whose server matches the
//! image's registry, and hands that login to the runtime with the pull (the CRI's
//! `PullImageRequest.auth`). Matching is upstream's in its simple form: the entry's host
//! (`https://` and `/v1/` stripped, `index.docker.io` meaning `docker.io`), optionally with a
//! path, must be a prefix of the image's `registry/repository` at a `/`; the longest match
//! wins. A secret that cannot be read is skipped, as upstream does ("the image pull may not
//! succeed"): the pull goes ahead without it.
//!
//! Where kulisse differs: no globs in servers (`*.example.com`), and no credential provider
//! plugins (the cloud registries' own logins).

use base64::Engine;
use serde_json::Value;

use crate::runtime::AuthConfig;

/// The login for `image` among `secrets` (the pod's readable pull secrets, in spec order),
/// and the name of the secret it came from.
pub(crate) fn credentials_for(image: &str, secrets: &[Value]) -> Option<(AuthConfig, String)> {
    let target = image_path(image);
    let mut best: Option<(usize, AuthConfig, String)> = None;
    for secret in secrets {
        let name = secret.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        for (server, entry) in entries(secret) {
            let key = server_path(&server);
            let matches = target == key || target.starts_with(&format!("{key}/"));
            if !matches || best.as_ref().is_some_and(|(len, ..)| *len >= key.len()) {
                continue;
            }
            if let Some(auth) = login(&server, &entry) {
                best = Some((key.len(), auth, name.to_string()));
            }
        }
    }
    best.map(|(_, auth, name)| (auth, name))
}

/// `registry/repository` of an image reference, with Docker Hub's default registry spelled
/// out (`busybox` → `docker.io/library/busybox`); no tag or digest.
fn image_path(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A tag is a `:` after the last `/` (a `:` before it is a registry's port).
    let name = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    let first = name.split('/').next().unwrap_or("");
    let has_registry = name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// A Docker config's server key as a `host[/path]` prefix.
fn server_path(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let s = s.strip_suffix("/v1").or_else(|| s.strip_suffix("/v2")).unwrap_or(s);
    match s.split_once('/') {
        Some((host, path)) => format!("{}/{path}", canonical_host(host)),
        None => canonical_host(s).to_string(),
    }
}

fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// The (server, entry) pairs of a pull secret, whichever of the two Docker config forms it
/// holds.
fn entries(secret: &Value) -> Vec<(String, Value)> {
    let decoded = |key: &str| -> Option<Value> {
        let b64 = secret.pointer("/data")?.get(key)?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let servers = decoded(".dockerconfigjson")
        .and_then(|c| c.get("auths").cloned())
        .or_else(|| decoded(".dockercfg"));
    servers
        .and_then(|s| s.as_object().cloned())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default()
}

/// The login of one entry: `username` and `password`, or the `auth` field
/// (`base64(username:password)`).
fn login(server: &str, entry: &Value) -> Option<AuthConfig> {
    let field = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (mut username, mut password) = (field("username"), field("password"));
    if username.is_empty() && password.is_empty() {
        let joined = base64::engine::general_purpose::STANDARD.decode(field("auth")).ok()?;
        let joined = String::from_utf8(joined).ok()?;
        let (u, p) = joined.split_once(':')?;
        (username, password) = (u.to_string(), p.to_string());
    }
    Some(AuthConfig {
        server: server_path(server).split('/').next().unwrap_or("").to_string(),
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, key: &str, config: Value) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(config.to_string());
        json!({"metadata": {"name": name}, "data": {key: b64}})
    }

    #[test]
    fn the_entry_for_the_image_registry_is_chosen() {
        let auth = base64::engine::general_purpose::STANDARD.encode("hub:hubpass");
        let secrets = [
            secret(
                "hub",
                ".dockerconfigjson",
                json!({"auths": {"https://index.docker.io/v1/": {"auth": auth}}}),
            ),
            secret(
                "local",
                ".dockerconfigjson",
                json!({"auths": {"127.0.0.1:5000": {"username": "learner", "password": "s3cret"}}}),
            ),
        ];
        let (auth, from) = credentials_for("127.0.0.1:5000/team/app:v1", &secrets).unwrap();
        assert_eq!(
            (auth.server.as_str(), auth.username.as_str(), auth.password.as_str()),
            ("127.0.0.1:5000", "learner", "s3cret")
        );
        assert_eq!(from, "local");
        let (auth, from) = credentials_for("busybox:1.36", &secrets).unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str(), from.as_str()),
            ("hub", "hubpass", "hub")
        );
        assert!(credentials_for("quay.io/x/y", &secrets).is_none());
        // The port is part of the host: 127.0.0.1:5001 is another registry.
        assert!(credentials_for("127.0.0.1:5001/team/app", &secrets).is_none());
    }

    #[test]
    fn a_path_narrows_an_entry_and_the_longest_match_wins() {
        let secrets = [secret(
            "both",
            ".dockercfg",
            json!({
                "registry.example.com": {"username": "any", "password": "p1"},
                "registry.example.com/team": {"username": "team", "password": "p2"},
            }),
        )];
        let user = |image: &str| credentials_for(image, &secrets).map(|(a, _)| a.username);
        assert_eq!(user("registry.example.com/team/app:v1").as_deref(), Some("team"));
        assert_eq!(user("registry.example.com/teamster/app").as_deref(), Some("any"));
        assert_eq!(
            user("registry.example.com/other/app@sha256:abc").as_deref(),
            Some("any")
        );
    }

    #[test]
    fn a_password_never_reaches_debug_output() {
        let a = AuthConfig {
            server: "r".into(),
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
