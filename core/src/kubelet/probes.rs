//! # Probes (mirrors the kubelet's prober and probe workers)
//!
//! A running process is not necessarily a working one. A container can declare three
//! **probes**, small checks the kubelet runs every `periodSeconds`:
//!
//! - **startup**: "has it finished starting?" Until it succeeds, the other two wait. If it
//!   fails `failureThreshold` times in a row, the container is killed and restarted.
//! - **liveness**: "is it still alive?" `failureThreshold` failures in a row: the kubelet
//!   kills it (events `Unhealthy`, then `Killing`) and restarts it per `restartPolicy`.
//! - **readiness**: "may it receive traffic?" While it fails, the container is not
//!   `ready`, the pod's `Ready` condition is `False`, and the endpoints controller takes the
//!   pod out of its Services. Nothing is restarted.
//!
//! A check is an `httpGet` (success: status 200–399), a `tcpSocket` (success: the
//! connection is accepted), an `exec` (success: exit code 0) or a `grpc` health check.
//! `initialDelaySeconds`, `timeoutSeconds` (1), `successThreshold` (1) and
//! `failureThreshold` (3) shape when and how results count.
//!
//! A runtime that simulates containers may also simulate their probes
//! ([`ContainerRuntime::probe`]); otherwise the kubelet probes for real, and only ever
//! towards loopback addresses.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::runtime::{ContainerRuntime, ProbeAction, ProbeKind, ProbeResult, ProbeSpec};

/// One probe of a container, parsed from the pod spec with Kubernetes' defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    pub spec: ProbeSpec,
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// `terminationGracePeriodSeconds` of the probe, used when it kills the container.
    pub termination_grace_seconds: Option<i64>,
}

fn field_u64(v: &Value, key: &str, default: u64) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(default)
}

/// Resolve a probe's `port`: a number, or the name of one of the container's ports.
fn resolve_port(container: &Value, port: Option<&Value>) -> Result<u16, String> {
    match port {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("probe port {n} is not between 1 and 65535")),
        Some(Value::String(s)) => {
            if let Ok(p) = s.parse::<u16>() {
                return Ok(p);
            }
            container
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("probe port {s:?} is not the name of one of the container's ports"))
        }
        _ => Err("the probe has no port".into()),
    }
}

/// The `startupProbe`, `livenessProbe` or `readinessProbe` of a container spec, if set.
/// `Err` describes a probe that cannot run (it then counts as failing).
pub fn parse(container: &Value, kind: ProbeKind) -> Option<Result<ProbeConfig, String>> {
    let key = match kind {
        ProbeKind::Startup => "startupProbe",
        ProbeKind::Liveness => "livenessProbe",
        ProbeKind::Readiness => "readinessProbe",
    };
    let p = container.get(key).filter(|v| v.is_object())?;
    let name = container.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let action = action_of(container, p, key);
    Some(action.map(|action| ProbeConfig {
        spec: ProbeSpec {
            kind,
            container_name: name,
            action,
            timeout: Duration::from_secs(field_u64(p, "timeoutSeconds", 1).max(1)),
        },
        initial_delay: Duration::from_secs(field_u64(p, "initialDelaySeconds", 0)),
        period: Duration::from_secs(field_u64(p, "periodSeconds", 10).max(1)),
        success_threshold: field_u64(p, "successThreshold", 1).clamp(1, u64::from(u32::MAX)) as u32,
        failure_threshold: field_u64(p, "failureThreshold", 3).clamp(1, u64::from(u32::MAX)) as u32,
        termination_grace_seconds: p.get("terminationGracePeriodSeconds").and_then(Value::as_i64),
    }))
}

/// What a check of `container` does, from `p` (a probe, or a lifecycle hook's handler):
/// `httpGet`, `tcpSocket`, `exec` or `grpc`. `key` names `p` in the error.
pub fn action_of(container: &Value, p: &Value, key: &str) -> Result<ProbeAction, String> {
    if let Some(h) = p.get("httpGet") {
        resolve_port(container, h.get("port")).map(|port| ProbeAction::Http {
            scheme: h.get("scheme").and_then(Value::as_str).unwrap_or("HTTP").to_string(),
            host: h
                .get("host")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            port,
            path: h.get("path").and_then(Value::as_str).unwrap_or("/").to_string(),
            headers: h
                .get("httpHeaders")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|x| {
                    Some((
                        x.get("name")?.as_str()?.to_string(),
                        x.get("value").and_then(Value::as_str).unwrap_or("").to_string(),
                    ))
                })
                .collect(),
        })
    } else if let Some(t) = p.get("tcpSocket") {
        resolve_port(container, t.get("port")).map(|port| ProbeAction::Tcp {
            host: t
                .get("host")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            port,
        })
    } else if let Some(e) = p.get("exec") {
        Ok(ProbeAction::Exec {
            command: e
                .get("command")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
        })
    } else if let Some(g) = p.get("grpc") {
        resolve_port(container, g.get("port")).map(|port| ProbeAction::Grpc {
            port,
            service: g.get("service").and_then(Value::as_str).map(str::to_string),
        })
    } else {
        let name = container.get("name").and_then(Value::as_str).unwrap_or("");
        Err(format!(
            "the {key} of container {name:?} has no httpGet, tcpSocket, exec or grpc"
        ))
    }
}

/// A probe of one running container instance: when it runs next, and its current verdict.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub config: Result<ProbeConfig, String>,
    pub kind: ProbeKind,
    pub next_due: Instant,
    successes: u32,
    failures: u32,
    /// The current verdict. Starts `true` for liveness (innocent until proven guilty),
    /// `false` for readiness and startup.
    pub ok: bool,
}

impl ProbeState {
    /// A fresh probe for a container that started at `started`.
    pub fn new(config: Result<ProbeConfig, String>, kind: ProbeKind, started: Instant) -> Self {
        let delay = config.as_ref().map(|c| c.initial_delay).unwrap_or_default();
        ProbeState {
            config,
            kind,
            next_due: started + delay,
            successes: 0,
            failures: 0,
            ok: kind == ProbeKind::Liveness,
        }
    }

    /// Count one result; returns `true` when the verdict changed.
    pub fn record(&mut self, result: &ProbeResult, now: Instant) -> bool {
        let (success_threshold, failure_threshold, period) = match &self.config {
            Ok(c) => (c.success_threshold, c.failure_threshold, c.period),
            Err(_) => (1, 1, Duration::from_secs(10)),
        };
        self.next_due = now + period;
        let before = self.ok;
        match result {
            ProbeResult::Success => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if self.successes >= success_threshold {
                    self.ok = true;
                }
            }
            ProbeResult::Failure(_) => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.failures >= failure_threshold {
                    self.ok = false;
                }
            }
        }
        before != self.ok
    }

    /// For liveness and startup: the failure threshold was reached (time to kill).
    pub fn tripped(&self) -> bool {
        let threshold = self.config.as_ref().map(|c| c.failure_threshold).unwrap_or(1);
        self.failures >= threshold
    }
}

/// Run one probe against a container: simulated by the runtime if it can, else for real.
pub async fn run(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    pod_ip: &str,
    config: &Result<ProbeConfig, String>,
) -> ProbeResult {
    let config = match config {
        Ok(c) => c,
        Err(e) => return ProbeResult::Failure(e.clone()),
    };
    if let Some(result) = runtime.probe(container_id, &config.spec).await {
        return result;
    }
    check(runtime, container_id, pod_ip, &config.spec.action, config.spec.timeout).await
}

/// Run one check for real against a container whose pod has `pod_ip`: an `exec` through
/// the runtime, or a connection towards loopback. Probes and lifecycle hooks both use it.
pub async fn check(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    pod_ip: &str,
    action: &ProbeAction,
    timeout: Duration,
) -> ProbeResult {
    match action {
        ProbeAction::Exec { command } => match runtime.exec_sync(container_id, command, timeout).await {
            Ok((0, _)) => ProbeResult::Success,
            Ok((code, out)) => ProbeResult::Failure(format!(
                "command {:?} exited with {code}: {}",
                command.join(" "),
                String::from_utf8_lossy(&out).trim()
            )),
            Err(e) => ProbeResult::Failure(e.to_string()),
        },
        ProbeAction::Grpc { port, .. } => ProbeResult::Failure(format!(
            "gRPC probes (port {port}) are not supported by kulisse's kubelet yet"
        )),
        ProbeAction::Tcp { host, port } => {
            let addr = match target(host.as_deref(), pod_ip, *port) {
                Ok(a) => a,
                Err(e) => return ProbeResult::Failure(e),
            };
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => ProbeResult::Success,
                Ok(Err(e)) => ProbeResult::Failure(format!("dial tcp {addr}: connect: {e}")),
                Err(_) => ProbeResult::Failure(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        ProbeAction::Http {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            if !scheme.eq_ignore_ascii_case("http") {
                return ProbeResult::Failure(format!(
                    "{scheme} probes are not supported by kulisse's kubelet (only HTTP)"
                ));
            }
            let addr = match target(host.as_deref(), pod_ip, *port) {
                Ok(a) => a,
                Err(e) => return ProbeResult::Failure(e),
            };
            let url = format!("http://{addr}{path}");
            match tokio::time::timeout(timeout, http_get(addr, path, headers)).await {
                Ok(Ok(code)) if (200..400).contains(&code) => ProbeResult::Success,
                Ok(Ok(code)) => ProbeResult::Failure(format!("HTTP probe failed with statuscode: {code}")),
                Ok(Err(e)) => ProbeResult::Failure(format!("Get \"{url}\": {e}")),
                Err(_) => ProbeResult::Failure(format!(
                    "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
            }
        }
    }
}

/// The address to probe; refuses anything that is not loopback.
fn target(host: Option<&str>, pod_ip: &str, port: u16) -> Result<SocketAddr, String> {
    let host = host.unwrap_or(pod_ip);
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("cannot probe {host:?}: kulisse probes only IP addresses on loopback"))?;
    if !ip.is_loopback() {
        return Err(format!(
            "refusing to probe {ip}: kulisse only sends probes to loopback addresses (127.0.0.0/8, ::1)"
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

async fn http_get(addr: SocketAddr, path: &str, headers: &[(String, String)]) -> Result<u16, String> {
    use http_body_util::Empty;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn_task = tokio::spawn(conn);
    let mut req = http::Request::get(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
    .header(http::header::HOST, addr.to_string())
    .header(http::header::USER_AGENT, "kube-probe/1.33")
    .header(http::header::ACCEPT, "*/*")
    .header(http::header::CONNECTION, "close");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    conn_task.abort();
    Ok(resp?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_probes_with_defaults_and_named_ports() {
        let c = json!({
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 9}},
        });
        let r = parse(&c, ProbeKind::Readiness).unwrap().unwrap();
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!(r.failure_threshold, 3);
        assert!(matches!(r.spec.action, ProbeAction::Http { port: 8080, ref path, .. } if path == "/"));
        assert!(parse(&c, ProbeKind::Startup).is_none());
        let bad = json!({"name": "x", "livenessProbe": {"httpGet": {"port": "nope"}}});
        assert!(parse(&bad, ProbeKind::Liveness).unwrap().is_err());
    }

    #[test]
    fn thresholds() {
        let c = json!({"name": "w", "livenessProbe": {"tcpSocket": {"port": 1}, "failureThreshold": 2}});
        let now = Instant::now();
        let mut s = ProbeState::new(parse(&c, ProbeKind::Liveness).unwrap(), ProbeKind::Liveness, now);
        assert!(s.ok);
        assert!(!s.record(&ProbeResult::Failure("x".into()), now));
        assert!(s.record(&ProbeResult::Failure("x".into()), now));
        assert!(s.tripped() && !s.ok);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(target(None, "127.64.0.2", 80).is_ok());
        assert!(target(None, "10.88.0.2", 80).is_err());
        assert!(target(Some("example.com"), "127.0.0.1", 80).is_err());
    }
}
