//! The API server's connection and request limits as flags (see
//! `kulisse_core::apiserver::limits` for why each exists and what upstream calls it).
//!
//! `--max-requests-inflight` and `--max-mutating-requests-inflight` are kube-apiserver's
//! flags with its defaults. The two timeouts are hard-coded in kube-apiserver (Go's
//! `http.Server` fields `ReadHeaderTimeout` and `IdleTimeout`); `--max-connections` has no
//! upstream counterpart. kulisse makes all of them flags so labs and tests can shrink them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kulisse_core::apiserver::Retention;
use kulisse_core::apiserver::audit::{self, AuditLog};
use kulisse_core::apiserver::limits::{self, Limits};

use super::components::parse_duration;

#[derive(Args, Debug, Clone)]
pub struct ServingArgs {
    /// How long a client may take to send a request's headers, from its first byte, before
    /// the connection is closed (kube-apiserver: Go's ReadHeaderTimeout, 32s). Stops
    /// slowloris clients that never finish their headers.
    #[arg(long, value_parser = parse_duration, default_value = "32s", value_name = "DURATION")]
    pub read_header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (kube-apiserver: Go's
    /// IdleTimeout, 90s).
    #[arg(long, value_parser = parse_duration, default_value = "90s", value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Open connections at most; at the cap new ones wait in the kernel's backlog. 0: no cap
    /// (kulisse's own; upstream has none). Lowered to what the file-descriptor limit allows.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,
    /// Non-mutating requests (get, list) served at once at most; more are answered
    /// 429 TooManyRequests with Retry-After. Watches and logs are not counted. 0: no limit.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_REQUESTS_INFLIGHT, value_name = "N")]
    pub max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) served at once at most; more are
    /// answered 429 TooManyRequests. 0: no limit.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_MUTATING_REQUESTS_INFLIGHT, value_name = "N")]
    pub max_mutating_requests_inflight: usize,
    /// The audit log: one `audit.k8s.io/v1` Event (level Metadata) per stored write, naming
    /// its user; `kulisse history` reads it. Default `<data-dir>/audit.log` (upstream: off
    /// unless set); `none` turns it off.
    #[arg(long, value_name = "PATH")]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes, keeping one old file
    /// (`audit.log.1`). 0: never.
    #[arg(long, default_value_t = audit::DEFAULT_MAX_SIZE_MB, value_name = "MB")]
    pub audit_log_maxsize: u64,
}

impl Default for ServingArgs {
    fn default() -> Self {
        let l = Limits::default();
        ServingArgs {
            read_header_timeout: l.read_header_timeout,
            idle_timeout: l.idle_timeout,
            max_connections: l.max_connections,
            max_requests_inflight: l.max_requests_inflight,
            max_mutating_requests_inflight: l.max_mutating_requests_inflight,
            audit_log_path: None,
            audit_log_maxsize: audit::DEFAULT_MAX_SIZE_MB,
        }
    }
}

/// File descriptors kept free for everything but client connections (the store, the
/// in-process components' own connections, files).
const RESERVED_FDS: u64 = 256;

impl ServingArgs {
    /// The audit log this API server writes, opened (`None` with `--audit-log-path none`).
    pub fn audit_log(&self, data_dir: &Path) -> anyhow::Result<Option<Arc<AuditLog>>> {
        let path = self
            .audit_log_path
            .clone()
            .unwrap_or_else(|| data_dir.join("audit.log"));
        if path == Path::new("none") {
            return Ok(None);
        }
        let log = AuditLog::open(&path, self.audit_log_maxsize)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        Ok(Some(Arc::new(log)))
    }

    /// The limits, after raising this process's soft file-descriptor limit to its hard
    /// limit (as every Go program, kube-apiserver included, does at start) and fitting the
    /// connection cap under it: a cap the kernel cannot honour would fail as `accept`
    /// errors instead.
    pub fn limits(&self) -> Limits {
        let mut max_connections = self.max_connections;
        if let Some(soft) = limits::raise_open_file_limit() {
            let fit = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX);
            if max_connections == 0 || max_connections > fit {
                eprintln!("note: --max-connections lowered to {fit}: the open-file limit of this process is {soft}");
                max_connections = fit;
            }
        }
        Limits {
            read_header_timeout: self.read_header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections,
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
        }
    }
}

/// How long the store keeps history and Events: kube-apiserver's flags of the same names,
/// with its defaults.
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// How often the API server compacts the store's history (keeping one interval of it;
    /// older resourceVersions then get 410 Gone). 0 turns compaction off.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub etcd_compaction_interval: Duration,
    /// How long an Event is kept after its last write. 0 keeps Events for ever.
    #[arg(long, value_parser = parse_duration, default_value = "1h", value_name = "DURATION")]
    pub event_ttl: Duration,
}

impl Default for RetentionArgs {
    fn default() -> Self {
        let r = Retention::default();
        RetentionArgs {
            etcd_compaction_interval: r.compaction_interval,
            event_ttl: r.event_ttl,
        }
    }
}

impl RetentionArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            compaction_interval: self.etcd_compaction_interval,
            event_ttl: self.event_ttl,
        }
    }

    /// The flags again, for a child process (`kulisse up --masters N` starts API servers).
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!(
                "--etcd-compaction-interval={}ms",
                self.etcd_compaction_interval.as_millis()
            ),
            format!("--event-ttl={}ms", self.event_ttl.as_millis()),
        ]
    }
}
