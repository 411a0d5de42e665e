//! # A real etcd for tests
//!
//! Kubernetes' own integration tests start a real etcd next to the API server
//! (`hack/install-etcd.sh`, `integration.StartEtcd`). kulisse does the same: [`EtcdServer`]
//! starts the `etcd` binary as a one-member cluster on loopback, on free ports, with its data
//! in a temporary directory, waits until it answers, and kills it and removes the directory
//! when dropped.
//!
//! If etcd is not installed, a test cannot be meaningful. In CI (`CI=true`, see
//! [`crate::require`]) that is a failure; on a developer machine the test prints a loud
//! `SKIPPING` line and returns early. `scripts/install-deps.sh` installs etcd (Debian package `etcd-server`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a freshly started etcd may take to elect itself leader and answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running single-member etcd on 127.0.0.1. Killed and cleaned up on drop.
pub struct EtcdServer {
    /// The client URL, e.g. `http://127.0.0.1:40123`, for `EtcdStore::connect` or `etcdctl`.
    pub endpoint: String,
    child: Child,
    data: tempfile::TempDir,
}

/// Whether this is a CI run (decided in one place: [`crate::require`]).
pub use crate::require::in_ci;

/// Find an executable: on `PATH`, then in the given fallback locations.
pub fn find_binary(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    fallbacks.iter().map(PathBuf::from).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A missing binary: fails in CI, skips loudly elsewhere ([`crate::require::missing`]).
/// Returns `None` so callers can write `let Some(x) = ... else { return };`.
fn missing<T>(binary: &str, package: &str) -> Option<T> {
    crate::require::missing(&format!(
        "{binary} is not installed (apt-get install {package}, or run scripts/install-deps.sh): this test needs the real {binary}"
    ))
}

impl EtcdServer {
    /// Start a fresh etcd, or return `None` (after a loud message) if etcd is not installed
    /// and we are not in CI. Panics, with etcd's log, if etcd is installed but will not start.
    pub fn start() -> Option<EtcdServer> {
        let binary = match find_binary("etcd", &["/usr/bin/etcd", "/usr/local/bin/etcd"]) {
            Some(b) => b,
            None => return missing("etcd", "etcd-server"),
        };
        // Free ports are found by binding and releasing them, so another process can grab
        // one in between. That is rare; a retry with new ports covers it.
        let mut last_error = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&binary) {
                Ok(server) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("could not start etcd ({}): {last_error}", binary.display());
    }

    fn try_start(binary: &Path) -> Result<EtcdServer, String> {
        let data = tempfile::Builder::new()
            .prefix("kulisse-etcd-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        // Two different ports: the picker never hands out one twice.
        let (client_port, peer_port) = (crate::free_port(), crate::free_port());
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log_path = data.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("cannot create log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("cannot dup log: {e}"))?;
        let child = Command::new(binary)
            .arg("--name")
            .arg("kulisse-test")
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("kulisse-test={peer}"))
            // A one-member cluster still holds an election before it serves; short raft
            // timers make that take ~0.1 s instead of ~1 s. Fine on loopback.
            .arg("--heartbeat-interval")
            .arg("10")
            .arg("--election-timeout")
            .arg("100")
            // Progress notifications (the store's `WatchMessage::Progress`, the API server's
            // bookmarks) every 100 ms instead of etcd's default ten minutes.
            .arg("--experimental-watch-progress-notify-interval")
            .arg("100ms")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut server = EtcdServer { endpoint, child, data };
        match server.wait_ready(client_port) {
            Ok(()) => Ok(server),
            Err(e) => Err(format!("{e}\n--- etcd log ---\n{}", server.log_tail())),
            // `server` is dropped here on error: the process is killed, the dir removed.
        }
    }

    /// Poll `GET /health` until etcd says `"health":"true"`, the process dies, or time runs out.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited before it was ready ({status})"));
            }
            if http_get(addr, "/health").is_some_and(|b| b.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("etcd did not become healthy within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines etcd logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The client port's address.
    fn client_addr(&self) -> Option<SocketAddr> {
        self.endpoint.strip_prefix("http://")?.parse().ok()
    }

    /// Read one of etcd's Prometheus metrics (from `GET /metrics` on the client port), e.g.
    /// `etcd_debugging_mvcc_watcher_total`, the number of watchers etcd is serving.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.client_addr()?, "/metrics")?;
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            if key == name { value.trim().parse().ok() } else { None }
        })
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `data` (a TempDir) removes the data directory when it is dropped right after this.
    }
}

/// A minimal HTTP/1.0 GET on loopback; returns the body, or `None` on any failure.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1);
    if !head.starts_with("HTTP/1.") || status != Some("200") {
        return None;
    }
    Some(body.to_string())
}

/// Find `etcdctl`, or decide what a test should do without it (fail in CI, skip loudly
/// elsewhere). Returns `true` when it is installed.
pub fn require_etcdctl() -> bool {
    if find_binary("etcdctl", &["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"]).is_some() {
        true
    } else {
        missing::<()>("etcdctl", "etcd-client").is_some()
    }
}

/// List the keys under `prefix` with the real `etcdctl` (`ETCDCTL_API=3 etcdctl get --prefix
/// --keys-only`), exactly as a learner would type it. Panics with etcdctl's output if it fails.
pub fn etcdctl_get_prefix(endpoint: &str, prefix: &str) -> Vec<String> {
    let etcdctl = find_binary("etcdctl", &["/usr/bin/etcdctl", "/usr/local/bin/etcdctl"])
        .expect("etcdctl is not installed (apt-get install etcd-client); call require_etcdctl() first");
    let out = Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoint)
        .arg("--command-timeout=10s")
        .arg("get")
        .arg("--prefix")
        .arg("--keys-only")
        .arg(prefix)
        .stdin(Stdio::null())
        .output()
        .expect("could not run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl get --prefix {prefix} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
