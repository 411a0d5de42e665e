//! `kulisse trace ID --jaeger URL`: the same waterfall, read from a running Jaeger.
//!
//! When the components export their spans over OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT`), Jaeger
//! keeps a copy of every trace. This command asks Jaeger's query service for one
//! (`GET URL/api/v3/traces/ID`, Jaeger's OTLP-shaped API: `{"result": {"resourceSpans":
//! [...]}}`), reads it with the same OTLP decoding the API server uses for spans it
//! receives, draws it as `kulisse trace` draws the control plane's copy, and prints the
//! trace's address in Jaeger's UI (`URL/trace/ID`). The two views show the same spans,
//! parents and services: what Jaeger shows is what kulisse sent.
//!
//! `ID` may be `last`: the control plane (the kubeconfig's cluster) names the newest apply,
//! and Jaeger is asked for that trace (`trace.rs` asks). An explicit id needs no cluster.

use anyhow::{Context as _, bail};
use http::Method;
use kulisse_core::client::Client;
use kulisse_traces::StoredSpan;
use serde_json::Value;

/// The spans of trace `id` as the Jaeger at `url` holds them.
pub async fn fetch(url: &str, id: &str) -> anyhow::Result<Vec<StoredSpan>> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{id:?} is not a trace id (32 hex digits) or `last`");
    }
    let jaeger = Client::new(url, "").with_context(|| format!("--jaeger {url}"))?;
    let path = format!("/api/v3/traces/{id}");
    let resp = jaeger
        .request(Method::GET, &path, &[("accept", "application/json")], None)
        .await
        .with_context(|| format!("asking Jaeger at {url} for trace {id}"))?;
    let body = String::from_utf8_lossy(&resp.body);
    if resp.status == http::StatusCode::NOT_FOUND {
        bail!(
            "Jaeger at {url} has no trace {id} (spans reach it a few seconds after they end; \
             are the components started with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it?)"
        );
    }
    if !resp.status.is_success() {
        bail!(
            "Jaeger at {url} answered GET {path} with {}: {}",
            resp.status,
            body.trim()
        );
    }
    let answer: Value = serde_json::from_str(&body)
        .with_context(|| format!("Jaeger at {url} answered GET {path} with something that is not JSON"))?;
    let Some(result) = answer.get("result").cloned() else {
        bail!("Jaeger at {url} answered GET {path} without a `result` (is {url} Jaeger's query service?)");
    };
    let decoded = kulisse_traces::otlp_json::from_otlp_json(result)
        .map_err(|e| anyhow::anyhow!("Jaeger's answer to GET {path}: {e}"))?;
    let mut spans = decoded.spans;
    if spans.is_empty() {
        bail!("Jaeger at {url} has no spans of trace {id}");
    }
    // Jaeger groups spans by process; the control plane lists them by start time.
    spans.sort_by(|a, b| (a.start_unix_nanos, &a.span_id).cmp(&(b.start_unix_nanos, &b.span_id)));
    Ok(spans)
}
