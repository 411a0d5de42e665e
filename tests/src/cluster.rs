//! # A real cluster for tests: `kulisse up` as a child process
//!
//! [`Cluster::start`] runs the real `kulisse` binary (`kulisse up`) in a temporary data
//! dir on `127.0.0.1:0`, reads the address it bound from its output, and waits until
//! `/readyz` answers. [`Cluster::kulisse`] runs client commands against it with its
//! kubeconfig. Dropping the cluster kills the process and removes the data dir.
//!
//! The binary is the one cargo built for this workspace (`target/<profile>/kulisse`, next
//! to the test executable's `deps/` folder), or `$KULISSE_BIN`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `kulisse` binary under test.
/// How long `kulisse up` may take to print its address (a guard against a hang, not a
/// timing: `--masters 3` on a busy 2-core machine waits for three etcd members and three
/// API servers first).
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

pub fn kulisse_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KULISSE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/test-abc → target/debug/kulisse
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let mut bin = dir.join("kulisse");
    if !bin.exists() {
        // A benchmark runs from target/release; use the debug build if that is what exists.
        if let Some(debug) = dir
            .parent()
            .map(|t| t.join("debug").join("kulisse"))
            .filter(|d| d.exists())
        {
            bin = debug;
        }
    }
    assert!(
        bin.exists(),
        "the kulisse binary is not built at {}: run `cargo build -p kulisse` (scripts/test.sh does) or set KULISSE_BIN",
        bin.display()
    );
    bin
}

/// A running `kulisse up`.
pub struct Cluster {
    child: Option<Child>,
    /// The data dir (kept when the cluster is restarted on it).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// `http://127.0.0.1:PORT`
    pub server: String,
    /// Everything `kulisse up` printed so far (stdout).
    pub banner: Vec<String>,
    /// Extra environment for client commands.
    pub env: Vec<(String, String)>,
    /// The cluster's service range (`127.N.0.0/16`).
    pub service_cidr: String,
}

impl Cluster {
    /// Start `kulisse up` in a fresh temporary data dir with the embedded store.
    pub fn start() -> Cluster {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster::start_in(&dir, &[]);
        c._tmp = Some(tmp);
        c
    }

    /// Start `kulisse up` on `data_dir` with extra arguments (e.g. `--store etcd`).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Cluster {
        Cluster::start_with_env(data_dir, extra, &[])
    }

    /// As [`Cluster::start_in`], with extra environment variables for the server process.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut cmd = Command::new(kulisse_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra);
        // Clusters of parallel tests get their own service range, so their kube-proxies do
        // not compete for the same ClusterIP:port listeners on this machine's loopback.
        let service_cidr = match extra.iter().position(|a| *a == "--service-cidr") {
            Some(i) => extra.get(i + 1).map(|s| s.to_string()).unwrap_or_default(),
            None => {
                let cidr = unique_service_cidr();
                cmd.arg("--service-cidr").arg(&cidr);
                cidr
            }
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start kulisse up");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // A guard against a hang, not a timing: `kulisse up --masters 3` on a busy 2-core
        // machine waits for three etcd members and three API servers before its address.
        let deadline = Instant::now() + START_TIMEOUT;
        let mut banner = Vec::new();
        let mut server = None;
        while server.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line
                        .split_whitespace()
                        .find(|w| w.starts_with("https://127.0.0.1:") || w.starts_with("http://127.0.0.1:"))
                    {
                        server = Some(url.to_string());
                    }
                    banner.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "kulisse up did not print its address within {:?}; it printed: {banner:?}",
                        START_TIMEOUT
                    );
                }
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let cluster = Cluster {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            server: server.expect("address found"),
            banner,
            env: Vec::new(),
            service_cidr,
        };
        cluster.wait_ready();
        cluster
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = std::panic::catch_unwind(|| {
                http_with_ca(&self.server, self.ca().as_deref(), "GET", "/readyz", &[], b"")
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("kulisse up at {} did not become ready within 30s", self.server);
    }

    /// The cluster CA (PEM) that `kulisse up` created, if it serves HTTPS.
    pub fn ca(&self) -> Option<Vec<u8>> {
        std::fs::read(self.data_dir.join("ca.crt")).ok()
    }

    /// A raw HTTP request to this cluster's API server over its TLS (see [`http`]).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http_with_ca(&self.server, self.ca().as_deref(), method, path, headers, body)
    }

    /// The kubeconfig `kulisse up` wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The cluster's token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    /// Run `kulisse ARGS --kubeconfig <this cluster's>` and return its output.
    pub fn kulisse(&self, args: &[&str]) -> Output {
        self.kulisse_stdin(args, None)
    }

    /// As [`Cluster::kulisse`], feeding `stdin`.
    pub fn kulisse_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(kulisse_bin());
        // The kubeconfig goes first: after `--` everything is the user's command.
        cmd.arg("--kubeconfig").arg(self.kubeconfig()).args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kulisse");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input).expect("write stdin");
        }
        child.wait_with_output().expect("kulisse output")
    }

    /// Run a client command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kulisse(args);
        assert!(
            out.status.success(),
            "kulisse {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Kill the server with SIGKILL (no clean shutdown), keeping the data dir.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop with SIGTERM and wait (clean shutdown).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c, Duration::from_secs(15));
        }
    }

    /// Take ownership of the temporary data dir so it outlives this cluster (for restarts).
    pub fn keep_data_dir(&mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A service range inside 127.0.0.0/8 that no other cluster of this test run uses:
/// `127.N.0.0/16` with N from 100 to 249, varied by process and by cluster.
pub fn unique_service_cidr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 150;
    format!("127.{}.0.0/16", 100 + n)
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A raw HTTP/1.1 request to `server` (for tests that must see exact status codes);
/// returns (status code, body). `https://` servers are verified against `ca_pem`.
pub fn http(server: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    http_with_ca(server, None, method, path, headers, body)
}

/// [`http`] with the cluster CA for `https://` servers.
pub fn http_with_ca(
    server: &str,
    ca_pem: Option<&[u8]>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (tls, addr) = match server.strip_prefix("https://") {
        Some(a) => (true, a),
        None => (false, server.trim_start_matches("http://")),
    };
    let tcp = std::net::TcpStream::connect(addr).expect("connect to API server");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    // A test may declare its own Content-Length (e.g. larger than the body it sends).
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut buf = Vec::new();
    if tls {
        let ca = ca_pem.expect("an https server needs the cluster CA (Cluster::http passes it)");
        let config = kulisse_core::client::tls::client_config(ca).expect("cluster CA");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .expect("server name")
            .to_owned();
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("TLS client");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        // A server may answer (413) and close before reading a large body: keep what it said.
        let _ = stream.write_all(req.as_bytes()).and_then(|_| stream.write_all(body));
        let _ = std::io::Read::read_to_end(&mut stream, &mut buf);
    } else {
        let mut s = tcp;
        let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    }
    let resp = String::from_utf8_lossy(&buf).into_owned();
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Stop a child process with SIGTERM; SIGKILL if it is still there after `grace`.
pub fn terminate(mut child: std::process::Child, grace: Duration) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
