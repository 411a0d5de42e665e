//! # A real Jaeger for tests
//!
//! "Viewing request traces in Jaeger" is one of the things kulisse is for, so the tests run
//! the real thing: [`Jaeger::start`] starts the `jaeger` binary (Jaeger v2, release v1.75.0
//! of `github.com/jaegertracing/jaeger`, which is an OpenTelemetry Collector with Jaeger's
//! storage and query service built in) with the repository's `examples/jaeger.yaml`, its
//! `127.0.0.1` ports replaced by free ones: OTLP over gRPC and over HTTP in, traces kept in
//! memory, and the query service (`/api/traces/{id}`, `/api/v3/traces/{id}`,
//! `/api/transform`) out. It waits until the query service answers, and stops Jaeger and
//! removes its directory when dropped.
//!
//! The binary is found on `PATH`, else in Go's binary directory (`$GOBIN`,
//! `$(go env GOPATH)/bin`, `~/go/bin`), where `scripts/install-deps.sh` puts it
//! (`go install` in a throwaway module, see there). Without it a test skips loudly, and in
//! CI fails ([`crate::require`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::etcd::find_binary;

/// The release the project uses (and `scripts/install-deps.sh` installs).
pub const VERSION: &str = "v1.75.0";

/// How to install Jaeger, for messages.
pub const INSTALL_HINT: &str = "scripts/install-deps.sh installs it with Go \
     (go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0 in a throwaway module)";

/// How long Jaeger may take to start serving.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The example configuration the book uses too.
pub fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jaeger.yaml")
}

/// The ports `examples/jaeger.yaml` names: OTLP gRPC, OTLP HTTP, query HTTP, query gRPC.
pub const PORTS: [u16; 4] = [4317, 4318, 16686, 16685];

/// Go's binary directories, where `go install` puts `jaeger`: `$GOBIN`, `$GOPATH/bin` (from
/// the environment, else `go env GOPATH`), and `~/go/bin` (Go's default GOPATH).
pub fn go_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(gobin) = std::env::var_os("GOBIN").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(gobin));
    }
    let gopath = std::env::var("GOPATH").ok().filter(|v| !v.is_empty()).or_else(|| {
        let out = Command::new("go")
            .args(["env", "GOPATH"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    });
    for path in gopath.iter().flat_map(|p| std::env::split_paths(p).collect::<Vec<_>>()) {
        dirs.push(path.join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join("go").join("bin"));
    }
    dirs
}

/// The `jaeger` binary: on `PATH`, else in Go's binary directories.
pub fn find_jaeger() -> Option<PathBuf> {
    let fallbacks: Vec<String> = go_bin_dirs()
        .iter()
        .map(|d| d.join("jaeger").display().to_string())
        .collect();
    let fallbacks: Vec<&str> = fallbacks.iter().map(String::as_str).collect();
    find_binary("jaeger", &fallbacks)
}

/// A running Jaeger on 127.0.0.1. Stopped and cleaned up on drop.
pub struct Jaeger {
    /// `http://127.0.0.1:P`: OTLP over gRPC (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`).
    pub otlp_grpc: String,
    /// `http://127.0.0.1:P`: OTLP over HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`).
    pub otlp_http: String,
    /// `http://127.0.0.1:P`: the query service (API and UI).
    pub query: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Jaeger {
    /// Starts Jaeger, or returns `None` (after a loud message) if it is not installed and
    /// this is not CI. Panics, with Jaeger's log, if it is installed but does not start.
    pub fn start() -> Option<Jaeger> {
        let Some(binary) = find_jaeger() else {
            return crate::require::missing(&format!(
                "jaeger is not installed ({INSTALL_HINT}): this test needs the real Jaeger"
            ));
        };
        // Free ports are found by binding and releasing them; another process may take one
        // in between. A retry with new ports covers that.
        let mut last = String::new();
        for _ in 0..3 {
            match Jaeger::try_start(&binary) {
                Ok(j) => return Some(j),
                Err(e) => last = e,
            }
        }
        panic!("could not start Jaeger ({}): {last}", binary.display());
    }

    fn try_start(binary: &Path) -> Result<Jaeger, String> {
        let dir = tempfile::Builder::new()
            .prefix("kulisse-jaeger-")
            .tempdir()
            .map_err(|e| format!("no temp dir: {e}"))?;
        // Different ports: the picker never hands out one twice.
        let ports: Vec<u16> = PORTS.iter().map(|_| crate::free_port()).collect();
        let mut config =
            std::fs::read_to_string(example_config()).map_err(|e| format!("{}: {e}", example_config().display()))?;
        for (well_known, real) in PORTS.iter().zip(&ports) {
            config = config.replace(&format!("127.0.0.1:{well_known}"), &format!("127.0.0.1:{real}"));
        }
        let config_path = dir.path().join("jaeger.yaml");
        std::fs::write(&config_path, config).map_err(|e| format!("writing the config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("jaeger.log")).map_err(|e| format!("log: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let mut jaeger = Jaeger {
            otlp_grpc: url(ports[0]),
            otlp_http: url(ports[1]),
            query: url(ports[2]),
            child,
            dir,
        };
        match jaeger.wait_ready([ports[0], ports[1], ports[2]]) {
            Ok(()) => Ok(jaeger),
            Err(e) => Err(format!("{e}\n--- jaeger log ---\n{}", jaeger.log())),
        }
    }

    /// Until the query service lists services and both receivers accept connections.
    fn wait_ready(&mut self, ports: [u16; 3]) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("jaeger exited before it was ready ({status})"));
            }
            let receivers = ports[..2]
                .iter()
                .all(|p| TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], *p))).is_ok());
            if receivers && self.get("/api/services").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("jaeger did not answer within {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What Jaeger logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("jaeger.log")).unwrap_or_default()
    }

    /// `GET path` on the query service: (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        request(&self.query, "GET", path, None)
    }

    /// `POST path` with a JSON body on the query service: (status, body).
    pub fn post(&self, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        request(&self.query, "POST", path, Some(body))
    }

    /// `GET path` that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).unwrap_or_else(|e| panic!("GET {path} on Jaeger: {e}"));
        assert_eq!(code, 200, "GET {path} on Jaeger answered {code}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} on Jaeger: not JSON ({e}): {body}"))
    }

    /// The trace `id` from Jaeger's own API (`/api/traces/{id}`: `{"data": [trace]}` in
    /// Jaeger's JSON model), once it has at least one span; `None` while it is unknown.
    pub fn trace_v1(&self, id: &str) -> Option<Value> {
        let (code, body) = self.get(&format!("/api/traces/{id}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v.pointer("/data/0").cloned()
    }

    /// The trace `id` from the OTLP-shaped API (`/api/v3/traces/{id}`:
    /// `{"result": {"resourceSpans": [...]}}`); `None` while it is unknown.
    pub fn trace_v3(&self, id: &str) -> Option<Value> {
        let (code, body) = self.get(&format!("/api/v3/traces/{id}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        v.get("result").cloned()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request (so the answer is never chunked) to `base` (`http://127.0.0.1:P`):
/// (status, body).
pub fn request(base: &str, method: &str, path: &str, body: Option<&[u8]>) -> Result<(u16, String), String> {
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .map_err(|e| format!("{base} is not http://IP:PORT: {e}"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body.unwrap_or_default()))
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer from {addr}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_string()))
}
