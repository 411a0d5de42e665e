//! # A real podman for tests
//!
//! [`PodmanService::start`] runs `podman system service --time=0 unix://<tempdir>/podman.sock`
//! (podman's REST API, what `kulisse --runtime podman` talks to) on a socket of its own,
//! waits until it answers, and stops it when dropped. It also makes sure the offline test
//! image `localhost/busybox:latest` exists (`scripts/build-busybox-image.sh`).
//!
//! Containers keep running when the service stops (each is watched by its own `conmon`),
//! so tests remove what they created: [`remove_labelled`] force-removes every podman pod
//! and container with a label, and [`list_labelled`] finds leftovers (leak checks).
//!
//! If podman is not installed: with `CI=true` the test fails; otherwise it prints a loud
//! SKIPPING message and [`PodmanService::start`] returns `None`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image the podman tests run (built offline from the host's static busybox).
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:latest";

/// A `podman system service` on a private socket.
pub struct PodmanService {
    child: Option<Child>,
    /// The API socket (`unix://` path).
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

/// The repository's `scripts/` folder.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("scripts")
}

fn podman_installed() -> bool {
    Command::new("podman")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl PodmanService {
    /// Start the service, or `None` (after a loud message) when podman is missing outside CI.
    pub fn start() -> Option<PodmanService> {
        if !podman_installed() {
            return crate::require::missing(
                "podman is not installed: install and configure it with scripts/setup-podman.sh (scripts/install-deps.sh runs it)",
            );
        }
        ensure_busybox_image();
        let dir = tempfile::tempdir().expect("temp dir for the podman socket");
        let socket = dir.path().join("podman.sock");
        let mut svc = PodmanService {
            child: None,
            socket,
            _dir: dir,
        };
        svc.restart();
        Some(svc)
    }

    /// Start the service (again) on its socket and wait until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the podman service is already running");
        let child = Command::new("podman")
            .arg("system")
            .arg("service")
            .arg("--time=0")
            .arg(format!("unix://{}", self.socket.display()))
            // conmon (podman 4) drops an `oom` file into the service's working directory
            // when a container is OOM-killed: keep it in the temp dir, not in the repository.
            .current_dir(&self._dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start `podman system service`");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Stop the service, as a crashed or restarting podman: its socket stops answering
    /// (containers keep running under their `conmon`).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::cluster::terminate(c, Duration::from_secs(10));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("`podman system service` exited at once ({status}); see its output above");
            }
            if ping(&self.socket) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "`podman system service` did not answer on {} within 30s",
            self.socket.display()
        );
    }

    /// The socket path as a string (for `--podman-socket`).
    pub fn socket_str(&self) -> String {
        self.socket.display().to_string()
    }
}

/// `GET /_ping` over the unix socket answers `OK`.
fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Build `localhost/busybox:latest` if podman does not have it (idempotent).
pub fn ensure_busybox_image() {
    let script = scripts_dir().join("build-busybox-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn podman_ids(args: &[&str]) -> Vec<String> {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e}"));
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Podman pods and containers (all, also stopped ones, infra containers included) whose
/// labels include every `key=value` of `labels`: `(pod ids, container ids)`. Uses the podman
/// CLI, which sees the same storage as the service.
pub fn list_labelled(labels: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let mut filters = Vec::new();
    for (k, v) in labels {
        filters.push("--filter".to_string());
        filters.push(format!("label={k}={v}"));
    }
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let mut pod_args = vec!["pod", "ps", "-q", "--no-trunc"];
    pod_args.extend(&filters);
    let mut ctr_args = vec!["ps", "-a", "-q", "--no-trunc"];
    ctr_args.extend(&filters);
    (podman_ids(&pod_args), podman_ids(&ctr_args))
}

/// Force-remove every podman pod and container labelled `key=value` (test cleanup).
pub fn remove_labelled(key: &str, value: &str) {
    let (pods, containers) = list_labelled(&[(key, value)]);
    if !containers.is_empty() {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0"])
            .args(&containers)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if !pods.is_empty() {
        let _ = Command::new("podman")
            .args(["pod", "stop", "-t", "0"])
            .args(&pods)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("podman")
            .args(["pod", "rm", "-f"])
            .args(&pods)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes everything labelled `key=value` when dropped (also when a test panics).
pub struct CleanupLabel {
    pub key: String,
    pub value: String,
}

impl CleanupLabel {
    pub fn new(key: &str, value: &str) -> Self {
        CleanupLabel {
            key: key.to_string(),
            value: value.to_string(),
        }
    }
}

impl Drop for CleanupLabel {
    fn drop(&mut self) {
        remove_labelled(&self.key, &self.value);
    }
}

/// `kulisse up --runtime podman` on `svc` with its data in `dir` (and `extra` arguments),
/// and the guard that removes, when dropped, every podman pod and container the cluster made
/// (drop it before the data dir goes).
pub fn podman_cluster(svc: &PodmanService, dir: &Path, extra: &[&str]) -> (crate::cluster::Cluster, CleanupLabel) {
    use kulisse_backends::runtime::podman::{LABEL_CLUSTER, cluster_id_from_ca};
    let socket = svc.socket_str();
    let mut args = vec!["--runtime", "podman", "--podman-socket", &socket];
    args.extend_from_slice(extra);
    let cluster = crate::cluster::Cluster::start_in(dir, &args);
    let ca = std::fs::read_to_string(cluster.data_dir.join("ca.crt")).expect("the cluster CA");
    let cleanup = CleanupLabel::new(LABEL_CLUSTER, &cluster_id_from_ca(&ca));
    (cluster, cleanup)
}

/// A plain HTTP GET to a loopback address; returns (status code, body). Refuses anything
/// that is not loopback.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    assert!(
        sock.ip().is_loopback(),
        "tests only ever connect to loopback, not {addr}"
    );
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
