//! `imagePullSecrets` with real podman: the kubelet finds the login for the image's registry
//! in the pod's pull secret and podman presents it to the registry.
//!
//! The registry is the test's own, on 127.0.0.1: it demands HTTP Basic auth, records what
//! each request presented, and has no images (a logged-in manifest request gets
//! `MANIFEST_UNKNOWN`). That is enough to see who sent which login; no image leaves the
//! machine, and nothing is pulled from outside it.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kulisse_tests::flows::wait_for;
use kulisse_tests::kubectl::Kubectl;
use kulisse_tests::podman::{PodmanService, podman_cluster};

/// `learner:s3cret`, as HTTP Basic auth sends it.
const BASIC: &str = "Basic bGVhcm5lcjpzM2NyZXQ=";

/// One request the registry saw: its path and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A registry (the distribution API's `/v2/` surface, minus the images) on a free loopback
/// port; returns its address and what it sees.
fn registry() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address").to_string();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || answer(conn, &log));
        }
    });
    (addr, seen)
}

fn answer(conn: TcpStream, seen: &Seen) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&conn);
    let mut request_line = String::new();
    // podman first tries HTTPS: a TLS hello is not a request line, and the connection just
    // closes (it then falls back to plain HTTP, as it does for a registry on this machine).
    if reader.read_line(&mut request_line).is_err()
        || !request_line.starts_with("GET ") && !request_line.starts_with("HEAD ")
    {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
    seen.lock().unwrap().push((path.clone(), auth.clone()));
    let (status, body) = match (auth.as_deref() == Some(BASIC), path.as_str()) {
        (false, _) => (
            "401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"kulisse-test\"",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        ),
        (true, "/v2/") => ("200 OK", "{}"),
        (true, _) => (
            "404 Not Found",
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ),
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nDocker-Distribution-API-Version: registry/2.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The pods' waiting reason and message (`kubectl get pod -o json`).
fn waiting(k: &Kubectl, pod: &str) -> Option<(String, String)> {
    let pod: serde_json::Value = serde_json::from_str(&k.ok(&["get", "pod", pod, "-o", "json"])).ok()?;
    let w = pod.pointer("/status/containerStatuses/0/state/waiting")?;
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    ))
}

#[test]
fn a_pull_secret_logs_podman_in_to_the_registry() {
    let Some(svc) = PodmanService::start() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let (cluster, _cleanup) = podman_cluster(&svc, dir.path(), &[]);
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };
    let (registry, seen) = registry();
    k.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={registry}"),
        "--docker-username=learner",
        "--docker-password=s3cret",
    ]);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: with-secret}}
spec:
  imagePullSecrets: [{{name: regcred}}]
  containers: [{{name: app, image: {registry}/team/app-a:v1}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: without-secret}}
spec:
  containers: [{{name: app, image: {registry}/team/app-b:v1}}]
"
    );
    let path = k.work_dir().join("pods.yaml");
    std::fs::write(&path, manifest).expect("write the manifest");
    k.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);

    // The pod with the secret: podman logs in, gets past /v2/, and asks for the manifest.
    let (reason, message) = wait_for(120, "with-secret to fail its pull past the login", || {
        waiting(&k, "with-secret").filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    let manifest_requests: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/v2/team/app-a/manifests/"))
        .cloned()
        .collect();
    eprintln!("with-secret: {reason}: {message}\nregistry saw for app-a: {manifest_requests:?}");
    assert!(
        manifest_requests.iter().any(|(_, auth)| auth.as_deref() == Some(BASIC)),
        "podman never presented the secret's login for app-a: {manifest_requests:?}"
    );
    assert!(message.contains("manifest unknown"), "{message}");

    // The pod without one: the login is not presented, and the registry's refusal is the
    // reason.
    let (reason, message) = wait_for(120, "without-secret to fail its pull", || {
        waiting(&k, "without-secret").filter(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    eprintln!("without-secret: {reason}: {message}");
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .filter(|(p, _)| p.contains("/team/app-b/"))
            // podman sends an empty login (`Basic Og==`, ":") when it has none.
            .all(|(_, auth)| auth.as_deref() != Some(BASIC)),
        "a login was sent for the pod without a pull secret: {requests:?}"
    );
    assert!(
        message.contains("authentication required") || message.contains("unauthorized"),
        "{message}"
    );
}
