//! What does tracing cost? A burst of applies against two real `kulisse up` control planes
//! started in the same run: one tracing every request and exporting the spans over OTLP to
//! a receiver, one with the OpenTelemetry SDK disabled. Reports both throughputs and their
//! ratio; no thresholds, no timed assertions (the numbers depend on the machine).
//!
//! Run: `cargo bench -p kulisse-tests --bench tracing_overhead` (builds the binary first
//! with `cargo build -p kulisse --release` for representative numbers, or uses the debug
//! build next to the bench). `KULISSE_BENCH_APPLIES` sets the burst size (default 400).

use std::sync::Arc;
use std::time::Instant;

use kulisse_tests::cluster::Cluster;
use kulisse_tests::otlp::OtlpReceiver;

const CONCURRENCY: usize = 8;

fn main() {
    let applies: usize = std::env::var("KULISSE_BENCH_APPLIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let receiver = rt.block_on(OtlpReceiver::start_grpc()).expect("OTLP receiver");
    let endpoint = receiver.endpoint();

    let traced_dir = tempfile::tempdir().expect("temp dir");
    let traced = Cluster::start_with_env(
        traced_dir.path(),
        &["--nodes", "0", "--components", "apiserver"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let plain_dir = tempfile::tempdir().expect("temp dir");
    let plain = Cluster::start_with_env(
        plain_dir.path(),
        &["--nodes", "0", "--components", "apiserver"],
        &[("OTEL_SDK_DISABLED", "true")],
    );

    // Warm up both (connections, first writes), then measure each twice, interleaved.
    burst(&rt, &traced, 40, true, "warm");
    burst(&rt, &plain, 40, false, "warm");
    let mut on = Vec::new();
    let mut off = Vec::new();
    for round in 0..2 {
        on.push(burst(&rt, &traced, applies, true, &format!("on{round}")));
        off.push(burst(&rt, &plain, applies, false, &format!("off{round}")));
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (on, off) = (best(&on), best(&off));
    let spans = receiver.spans().len();
    println!("binary: {}", kulisse_tests::cluster::kulisse_bin().display());
    println!("burst of {applies} server-side applies, {CONCURRENCY} at a time (best of 2 rounds each)");
    println!("  tracing on, exporting over OTLP: {on:>8.0} applies/s  ({spans} spans received)");
    println!("  tracing off (SDK disabled):      {off:>8.0} applies/s");
    println!("  ratio on/off:                    {:>8.2}", on / off);
}

/// Apply `n` ConfigMaps (server-side apply) with `CONCURRENCY` clients; returns applies/s.
/// With `traced`, each request carries a sampled `traceparent`, as `kulisse apply` sends.
fn burst(rt: &tokio::runtime::Runtime, c: &Cluster, n: usize, traced: bool, tag: &str) -> f64 {
    let client = Arc::new(kulisse_core::client::Client::from_kubeconfig(&c.kubeconfig()).expect("client"));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..CONCURRENCY {
            let client = client.clone();
            let tag = tag.to_string();
            tasks.push(tokio::spawn(async move {
                for i in (w..n).step_by(CONCURRENCY) {
                    let name = format!("bench-{tag}-{i}");
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"i": i.to_string()}});
                    let path = format!("/api/v1/namespaces/default/configmaps/{name}?fieldManager=bench&force=true");
                    let tp = format!("00-{:032x}-{:016x}-01", (i as u128) + 1 + ((w as u128) << 64), (i as u64) + 1);
                    let mut headers = vec![("content-type", "application/apply-patch+yaml")];
                    if traced {
                        headers.push(("traceparent", tp.as_str()));
                    }
                    let resp = client
                        .request(http::Method::PATCH, &path, &headers, Some(serde_json::to_vec(&body).unwrap()))
                        .await
                        .expect("apply");
                    assert!(resp.status.is_success(), "apply answered {}", resp.status);
                }
            }));
        }
        for t in tasks {
            t.await.expect("worker");
        }
    });
    n as f64 / start.elapsed().as_secs_f64()
}
