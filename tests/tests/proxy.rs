//! kube-proxy's rule table against a real (in-process) API server.
//!
//! The test writes Services and EndpointSlices as the API server and the EndpointSlice
//! controller would, and checks that kube-proxy's table follows — rule added, endpoints
//! scaled over two slices, Service deleted — and that the ConfigMap
//! `kube-system/kube-proxy-rules-<node>` mirrors the table exactly. It also checks that the
//! proxy's sync continues the trace of the EndpointSlice write that caused it.

use std::collections::BTreeMap;

use kulisse_core::client::Client;
use kulisse_core::objects;
use kulisse_core::proxy::{self, RuleTable};
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::{Value, json};
use tracing::Instrument;

const TRACEPARENT: &str = "kulisse.dev/traceparent";

fn info(kind: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk("v1", kind).expect("built-in kind")
}

fn slices() -> &'static objects::ResourceInfo {
    objects::by_gvk("discovery.k8s.io/v1", "EndpointSlice").expect("built-in kind")
}

fn table_lines(t: &RuleTable) -> BTreeMap<String, String> {
    t.snapshot().into_iter().map(|r| (r.id(), r.to_string())).collect()
}

async fn configmap(c: &Client) -> Option<Value> {
    c.get(info("ConfigMap"), Some("kube-system"), "kube-proxy-rules-node-1")
        .await
        .ok()
}

fn configmap_lines(cm: &Value) -> BTreeMap<String, String> {
    cm.get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until the table holds exactly `want` and the ConfigMap mirrors it.
async fn expect_rules(c: &Client, table: &RuleTable, what: &str, want: &BTreeMap<String, String>) -> Value {
    eventually(15, what, || async {
        let cm = configmap(c).await?;
        (table_lines(table) == *want && configmap_lines(&cm) == *want).then_some(cm)
    })
    .await
}

fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// An EndpointSlice of the Service `web`, as the EndpointSlice controller writes one.
fn slice(name: &str, ready: &[&str], not_ready: &[&str]) -> Value {
    let eps = |ips: &[&str], ready: bool| {
        ips.iter()
            .map(
                |ip| json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}}),
            )
            .collect::<Vec<_>>()
    };
    let mut endpoints = eps(ready, true);
    endpoints.extend(eps(not_ready, false));
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_table_follows_services_and_endpoint_slices_and_is_published() {
    kulisse_tests::local_traces::install("proxy-test");
    let fx = ApiServerFixture::start().await;
    let c = &fx.client;
    let table = RuleTable::new();
    tokio::spawn(proxy::run(
        c.clone(),
        proxy::Options {
            node_name: "node-1".into(),
            data_path: false,
        },
        fx.shutdown_rx(),
        table.clone(),
    ));

    // A NodePort Service: the API server allocates its ClusterIP and node port.
    let svc = c
        .create(
            info("Service"),
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"type": "NodePort", "selector": {"app": "web"},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        )
        .await
        .expect("create service");
    let cip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("allocated clusterIP")
        .to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("allocated nodePort");
    let mut want = BTreeMap::from([
        ("default.web.http".to_string(), format!("{cip}:80/TCP -> <none>")),
        (
            "default.web.http.nodeport".to_string(),
            format!("127.0.0.1:{node_port}/TCP -> <none>"),
        ),
    ]);
    expect_rules(c, &table, "rules for the new Service, without endpoints", &want).await;

    // A slice appears (written inside a trace): ready endpoints only.
    let write_span = tracing::info_span!("test.write_endpoints", "kulisse.stage" = "cli");
    let ep = c
        .create(
            slices(),
            Some("default"),
            &slice("web-a", &["127.64.2.7", "127.64.1.5"], &["127.64.3.3"]),
        )
        .instrument(write_span)
        .await
        .expect("create endpointslice");
    let backends = "127.64.1.5:8080,127.64.2.7:8080";
    want.insert("default.web.http".into(), format!("{cip}:80/TCP -> {backends}"));
    want.insert(
        "default.web.http.nodeport".into(),
        format!("127.0.0.1:{node_port}/TCP -> {backends}"),
    );
    let cm = expect_rules(c, &table, "rules with the two ready endpoints", &want).await;
    // The proxy's sync is in the trace of the Endpoints write.
    {
        let ep_tp = ep["metadata"]["annotations"][TRACEPARENT]
            .as_str()
            .expect("the API server records the write's trace on the EndpointSlice");
        let cm_tp = cm["metadata"]["annotations"][TRACEPARENT]
            .as_str()
            .expect("the proxy's ConfigMap write carries a trace");
        assert_eq!(
            trace_id(cm_tp),
            trace_id(ep_tp),
            "the proxy's sync continues the trace of the EndpointSlice write"
        );
    }
    let rule = table
        .lookup(format!("{cip}:80").parse().expect("socket address"), "TCP")
        .expect("lookup by frontend");
    assert_eq!(rule.service, "default/web");
    assert_eq!(rule.endpoints.len(), 2);

    // Scale up: the not-ready endpoint becomes ready, and a second slice brings a fourth;
    // kube-proxy merges the Service's slices.
    let mut current = c
        .get(slices(), Some("default"), "web-a")
        .await
        .expect("get endpointslice");
    current["endpoints"] = slice("web-a", &["127.64.1.5", "127.64.2.7", "127.64.3.3"], &[])["endpoints"].clone();
    c.replace(slices(), Some("default"), "web-a", None, &current)
        .await
        .expect("update endpointslice");
    c.create(slices(), Some("default"), &slice("web-b", &["127.64.4.4"], &[]))
        .await
        .expect("create a second endpointslice");
    let backends = "127.64.1.5:8080,127.64.2.7:8080,127.64.3.3:8080,127.64.4.4:8080";
    want.insert("default.web.http".into(), format!("{cip}:80/TCP -> {backends}"));
    want.insert(
        "default.web.http.nodeport".into(),
        format!("127.0.0.1:{node_port}/TCP -> {backends}"),
    );
    expect_rules(c, &table, "rules with four endpoints", &want).await;

    // A second Service (ClusterIP, unnamed port) leaves the first one's rules alone.
    let api = c
        .create(
            info("Service"),
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                    "spec": {"ports": [{"port": 8081}]}}),
        )
        .await
        .expect("create second service");
    let api_ip = api["spec"]["clusterIP"]
        .as_str()
        .expect("allocated clusterIP")
        .to_string();
    want.insert("default.api.8081".into(), format!("{api_ip}:8081/TCP -> <none>"));
    expect_rules(c, &table, "rules of both Services", &want).await;

    // Deleting the Service removes its rules, even though its slices are still there.
    c.delete(info("Service"), Some("default"), "web", None)
        .await
        .expect("delete service");
    want.remove("default.web.http");
    want.remove("default.web.http.nodeport");
    expect_rules(c, &table, "the deleted Service's rules removed", &want).await;
    assert!(table.rules_of("default/web").is_empty());
}
