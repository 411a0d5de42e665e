//! 8. **Growth over time** (`--soak 100x30`): whether kulisse forgets what it should.
//!
//! Every write stays in the store's history until it is compacted, and every Event stays
//! until its TTL runs out (kube-apiserver: `--etcd-compaction-interval`, 5 minutes, and
//! `--event-ttl`, an hour). A cluster that works for hours must therefore grow for a while and
//! then stay flat. This case runs `kulisse up --nodes N --fast-failover` for M minutes under
//! constant churn (a Deployment scaled between 100 and 300 replicas every 10 seconds: pods
//! created, scheduled, started, deleted, each with its Events) and samples, every minute, the
//! store file's size, the process' resident memory and how many spans its trace store keeps
//! (a bounded store that fills up would look like a leak; it holds a few dozen here, since a
//! load generator's changes are not traced). Events live 10 minutes here
//! (`--event-ttl 10m`) so that a half-hour run sees them expire; compaction keeps its 5-minute
//! default.
//!
//! The figures compare the last sample with the first one taken after the first compaction
//! and the first Event expiry (minute 11): the growth from there to the end should be close to
//! zero. Anchor: the target, flat after the first compaction.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Report, Server, info, mib};

/// Events live this long in the soak (the default is an hour).
const SOAK_EVENT_TTL: &str = "10m";
/// The first sample that has seen a compaction (5 min) and the first Events expire (10 min).
const SETTLED_MINUTE: u32 = 11;
const ANCHOR_SOAK: &str = "issue target: flat after the first compaction";

/// One minute's sample: (minute, store bytes, resident bytes).
type Sample = (u32, u64, u64);

pub(super) async fn soak_case(nodes: u32, minutes: u32, report: &mut Report) -> anyhow::Result<()> {
    let size = format!("{nodes}x{minutes}min");
    println!();
    println!(
        "soak: kulisse up --nodes {nodes} --fast-failover --event-ttl {SOAK_EVENT_TTL} for {minutes} min, a Deployment scaled 100 <-> 300 every 10 s"
    );
    let dir = tempfile::tempdir()?;
    let nodes_arg = nodes.to_string();
    let args = ["--nodes", &nodes_arg, "--fast-failover", "--event-ttl", SOAK_EVENT_TTL];
    let server = Server::start(dir.path(), &args).await?;
    let deployments = info("deployments")?;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "soak", "namespace": "default"},
        "spec": {
            "replicas": 100,
            "selector": {"matchLabels": {"app": "soak"}},
            "template": {
                "metadata": {"labels": {"app": "soak"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
            }
        }
    });
    server.client.create(deployments, Some("default"), &deployment).await?;
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut scale = tokio::time::interval(Duration::from_secs(10));
    let mut up = true;
    while started.elapsed() < Duration::from_secs(u64::from(minutes) * 60) {
        scale.tick().await;
        let replicas = if up { 300 } else { 100 };
        up = !up;
        let patch = json!({"spec": {"replicas": replicas}});
        if let Err(e) = server
            .client
            .merge_patch(deployments, Some("default"), "soak", None, &patch)
            .await
        {
            println!("  scaling to {replicas} failed: {e}");
        }
        let minute = (started.elapsed().as_secs() / 60) as u32;
        if samples.last().is_none_or(|(m, _, _)| *m < minute) {
            let sample = (minute, server.store_bytes(), server.proc.rss().unwrap_or(0));
            let spans = server.kept_spans().await.map_or("?".into(), |n| n.to_string());
            println!(
                "  minute {:>3}: store {:>8}  RSS {:>8}  spans kept {spans:>6}",
                sample.0,
                mib(sample.1),
                mib(sample.2)
            );
            samples.push(sample);
        }
    }
    server.proc.stop().await;
    report_soak(&samples, &size, report);
    Ok(())
}

fn report_soak(samples: &[Sample], size: &str, report: &mut Report) {
    let settled = samples.iter().find(|(m, _, _)| *m >= SETTLED_MINUTE);
    let (Some(settled), Some(last)) = (settled, samples.last()) else {
        report.unfinished(
            "soak",
            size,
            &format!("shorter than {SETTLED_MINUTE} minutes: nothing to compare"),
        );
        return;
    };
    let growth = |a: u64, b: u64| (b as f64 / a.max(1) as f64 - 1.0) * 100.0;
    let rows = [("store", settled.1, last.1), ("RSS", settled.2, last.2)];
    for (what, from, to) in rows {
        report.figure(
            "soak",
            size,
            &format!("{what} MiB, minute {}", settled.0),
            from as f64 / 1048576.0,
            &mib(from),
            "",
        );
        report.figure(
            "soak",
            size,
            &format!("{what} MiB, minute {}", last.0),
            to as f64 / 1048576.0,
            &mib(to),
            "",
        );
        let g = growth(from, to);
        report.figure(
            "soak",
            size,
            &format!("{what} growth % since minute {}", settled.0),
            g,
            &format!("{g:+.1} %"),
            ANCHOR_SOAK,
        );
    }
}
