//! Why a pod is or is not in a Service's endpoints: the selector, then readiness.

use std::fmt::Write as _;

use kulisse_core::client::Client;
use kulisse_core::controllers::endpointutil;
use kulisse_core::objects;
use serde_json::Value;

use super::{kind, labels_text, list, name};

pub async fn explain(client: &Client, ns: &str, svc_name: &str) -> anyhow::Result<String> {
    let svc = client.get(kind("v1", "Service"), Some(ns), svc_name).await?;
    let mut out = String::new();
    let Some(selector) = endpointutil::service_selector(&svc) else {
        let _ = writeln!(
            out,
            "Service {ns}/{svc_name} has no selector: the endpoints controller leaves its endpoints alone, and \
             whoever created the Service writes them (an ExternalName or a manually managed Service)."
        );
        return Ok(out);
    };
    let pods = list(client, kind("v1", "Pod"), ns, None).await?;
    let (selected, others): (Vec<&Value>, Vec<&Value>) = pods
        .iter()
        .partition(|p| endpointutil::selector_matches(&selector, &objects::labels(p)));
    let _ = writeln!(
        out,
        "Service {ns}/{svc_name} selects the pods labelled {}: {} of the {} pods in the namespace. The endpoints \
         controller lists each selected pod that has an IP and is not terminating: as ready (addresses, kube-proxy \
         sends it traffic) when its Ready condition is True, else as not ready (notReadyAddresses).",
        labels_text(&selector),
        selected.len(),
        pods.len()
    );
    for pod in &selected {
        let verdict = super::pod::endpoint_verdict(client, ns, &svc, pod).await?;
        let _ = writeln!(out, "  pod {}: {verdict}", name(pod));
    }
    for pod in others {
        let labels = objects::labels(pod);
        let missing: Vec<String> = selector
            .iter()
            .filter(|(k, v)| labels.get(*k) != Some(v))
            .map(|(k, v)| match labels.get(k) {
                Some(have) => format!("{k}={have}, not {v}"),
                None => format!("no label {k}"),
            })
            .collect();
        let _ = writeln!(
            out,
            "  pod {}: not selected ({}), so never in the endpoints.",
            name(pod),
            missing.join("; ")
        );
    }
    Ok(out)
}
