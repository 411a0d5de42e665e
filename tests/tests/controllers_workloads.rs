//! The Deployment and ReplicaSet controllers against a real (in-process) API server.
//!
//! The controller manager runs as `kulisse up` runs it (`controllers::run`), talking to the
//! API server over HTTP. There is no kubelet here: where a test needs pods to be ready, it
//! writes their status through `pods/{name}/status` itself, as a kubelet would. Everything is
//! checked as a user would see it: objects read back from the API server, and Events.

use std::cell::Cell;
use std::collections::BTreeSet;

use kulisse_core::client::{Client, ListParams};
use kulisse_core::controllers::{self, Options};
use kulisse_core::objects;
use kulisse_tests::inproc::{ApiServerFixture, eventually};
use serde_json::{Value, json};

const TRACEPARENT: &str = "kulisse.dev/traceparent";

fn info(api_version: &str, kind: &str) -> &'static objects::ResourceInfo {
    objects::by_gvk(api_version, kind).expect("built-in kind")
}

fn pods_info() -> &'static objects::ResourceInfo {
    info("v1", "Pod")
}

fn rs_info() -> &'static objects::ResourceInfo {
    info("apps/v1", "ReplicaSet")
}

fn deploy_info() -> &'static objects::ResourceInfo {
    info("apps/v1", "Deployment")
}

/// Start an API server and the whole controller manager.
async fn start() -> ApiServerFixture {
    kulisse_tests::local_traces::install("controllers-workloads-test");
    let fx = ApiServerFixture::start().await;
    tokio::spawn(controllers::run(fx.client.clone(), Options::fast(), fx.shutdown_rx()));
    fx
}

fn deployment(name: &str, replicas: i64, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

async fn list(client: &Client, info: &'static objects::ResourceInfo, selector: &str) -> Vec<Value> {
    let params = ListParams {
        label_selector: Some(selector.to_string()),
        ..ListParams::default()
    };
    client
        .list(info, Some("default"), &params)
        .await
        .expect("list")
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_active(pod: &Value) -> bool {
    objects::deletion_timestamp(pod).is_none()
}

fn is_ready(pod: &Value) -> bool {
    objects::pod::is_pod_ready(pod)
}

/// The pods (not being deleted) that the ReplicaSet with `uid` controls.
async fn pods_of(client: &Client, selector: &str, uid: &str) -> Vec<Value> {
    list(client, pods_info(), selector)
        .await
        .into_iter()
        .filter(|p| is_active(p) && objects::controller_uid(p) == Some(uid))
        .collect()
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn name(v: &Value) -> String {
    objects::name(v).unwrap_or("").to_string()
}

/// Do what a kubelet does when a pod's containers run and pass their readiness probes:
/// write phase Running, the Ready condition and ready container statuses to `/status`.
async fn mark_ready(client: &Client, pod_name: &str) {
    for _ in 0..20 {
        let mut pod = match client.get(pods_info(), Some("default"), pod_name).await {
            Ok(p) => p,
            Err(e) if e.code() == Some(404) => return,
            Err(e) => panic!("get pod {pod_name}: {e}"),
        };
        // Any valid time will do for a test without minReadySeconds: use the pod's own.
        let now = pod
            .pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null);
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                json!({
                    "name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                    "restartCount": 0, "state": {"running": {"startedAt": now}}
                })
            })
            .collect();
        pod["status"] = json!({
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": containers,
            "startTime": now,
        });
        match client
            .replace(pods_info(), Some("default"), pod_name, Some("status"), &pod)
            .await
        {
            Ok(_) => return,
            Err(e) if e.code() == Some(409) => continue, // the controller wrote meanwhile
            Err(e) if e.code() == Some(404) => return,
            Err(e) => panic!("update status of pod {pod_name}: {e}"),
        }
    }
    panic!("pod {pod_name}: status update kept conflicting");
}

async fn mark_all_ready(client: &Client, pods: &[Value]) {
    for p in pods.iter().filter(|p| !is_ready(p)) {
        mark_ready(client, &name(p)).await;
    }
}

/// Events about the object `involved` (by name), as `kulisse describe` shows them.
async fn events_about(client: &Client, involved: &str) -> Vec<(String, String)> {
    client
        .list(info("v1", "Event"), Some("default"), &ListParams::default())
        .await
        .expect("list events")
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e.pointer("/involvedObject/name").and_then(Value::as_str) == Some(involved))
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_for_event(client: &Client, involved: &str, reason: &str, message: &str) {
    eventually(
        20,
        &format!("event {reason} \"{message}\" about {involved}"),
        || async {
            events_about(client, involved)
                .await
                .iter()
                .any(|(r, m)| r == reason && m == message)
                .then_some(())
        },
    )
    .await
}

/// The ReplicaSets the Deployment controls.
async fn replicasets_of(client: &Client, d: &Value) -> Vec<Value> {
    let uid = objects::uid(d).unwrap_or("");
    list(client, rs_info(), "")
        .await
        .into_iter()
        .filter(|rs| objects::controller_uid(rs) == Some(uid))
        .collect()
}

fn condition(obj: &Value, kind: &str) -> Option<Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_creates_a_replicaset_and_pods_and_scales() {
    let fx = start().await;
    let c = &fx.client;
    // Created inside a span, as `kulisse apply` does, so the write belongs to a trace and
    // every step after it continues that trace.
    let d = tracing::Instrument::instrument(
        c.create(
            deploy_info(),
            Some("default"),
            &deployment("web", 3, "busybox:1.36", json!({})),
        ),
        tracing::info_span!("cli.apply", "kulisse.stage" = "cli"),
    )
    .await
    .expect("create deployment");

    // One ReplicaSet named web-<hash>, with the hash in its labels, selector and template.
    let rs = eventually(20, "one ReplicaSet for Deployment web", || async {
        let rss = replicasets_of(c, &d).await;
        (rss.len() == 1).then(|| rss[0].clone())
    })
    .await;
    let rs_name = name(&rs);
    let hash = rs
        .pointer("/metadata/labels/pod-template-hash")
        .and_then(Value::as_str)
        .expect("pod-template-hash label on the ReplicaSet")
        .to_string();
    assert_eq!(rs_name, format!("web-{hash}"));
    assert!(
        hash.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
        "{hash}"
    );
    assert_eq!(
        rs.pointer("/spec/selector/matchLabels/pod-template-hash"),
        Some(&json!(hash))
    );
    assert_eq!(rs.pointer("/spec/selector/matchLabels/app"), Some(&json!("web")));
    assert_eq!(
        rs.pointer("/spec/template/metadata/labels/pod-template-hash"),
        Some(&json!(hash))
    );
    assert_eq!(rs.pointer("/spec/replicas"), Some(&json!(3)));
    let ann = |k: &str| rs.pointer("/metadata/annotations").and_then(|a| a.get(k)).cloned();
    assert_eq!(ann("deployment.kubernetes.io/revision"), Some(json!("1")));
    assert_eq!(ann("deployment.kubernetes.io/desired-replicas"), Some(json!("3")));
    assert_eq!(
        ann("deployment.kubernetes.io/max-replicas"),
        Some(json!("4")),
        "3 + 25% surge rounded up"
    );
    let owner = &objects::owner_references(&rs)[0];
    assert_eq!(owner["kind"], "Deployment");
    assert_eq!(owner["name"], "web");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    wait_for_event(
        c,
        "web",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {rs_name} from 0 to 3"),
    )
    .await;

    // Three pods owned by the ReplicaSet, named <rs>-<5 chars>, carrying the hash label.
    let rs_uid = objects::uid(&rs).unwrap_or("").to_string();
    let pods = eventually(20, "3 pods of the ReplicaSet", || async {
        let pods = pods_of(c, "app=web", &rs_uid).await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    for p in &pods {
        let n = name(p);
        assert!(
            n.starts_with(&format!("{rs_name}-")) && n.len() == rs_name.len() + 6,
            "{n}"
        );
        assert_eq!(p.pointer("/metadata/labels/pod-template-hash"), Some(&json!(hash)));
        let owner = &objects::owner_references(p)[0];
        assert_eq!(owner["apiVersion"], "apps/v1");
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["name"], json!(rs_name));
        assert_eq!(owner["uid"], json!(rs_uid));
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
    }
    wait_for_event(
        c,
        &rs_name,
        "SuccessfulCreate",
        &format!("Created pod: {}", name(&pods[0])),
    )
    .await;
    // One trace: the pod's traceparent continues the trace of the ReplicaSet's.
    {
        let rs_tp = ann(TRACEPARENT)
            .and_then(|v| v.as_str().map(str::to_string))
            .expect("RS traceparent");
        for p in &pods {
            let tp = p
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(TRACEPARENT))
                .and_then(Value::as_str)
                .expect("pod traceparent");
            assert_eq!(
                trace_id(tp),
                trace_id(&rs_tp),
                "pod {} is in the ReplicaSet's trace",
                name(p)
            );
            assert_ne!(tp, rs_tp, "the pod's parent span is its own create_pod span");
        }
    }

    // Not ready yet: the Deployment says so.
    let status = eventually(20, "status of web with 3 unavailable replicas", || async {
        let d = c.get(deploy_info(), Some("default"), "web").await.ok()?;
        (int(&d, "/status/replicas") == 3 && int(&d, "/status/unavailableReplicas") == 3).then_some(d)
    })
    .await;
    assert_eq!(int(&status, "/status/updatedReplicas"), 3);
    assert_eq!(int(&status, "/status/availableReplicas"), 0);
    let available = condition(&status, "Available").expect("Available condition");
    assert_eq!(available["status"], "False");
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    assert_eq!(available["message"], "Deployment does not have minimum availability.");
    assert_eq!(
        status.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&json!("1"))
    );

    // The pods become ready (as a kubelet would report): the Deployment completes.
    mark_all_ready(c, &pods).await;
    let done = eventually(20, "web complete with 3 available", || async {
        let d = c.get(deploy_info(), Some("default"), "web").await.ok()?;
        let progressing = condition(&d, "Progressing")?;
        (int(&d, "/status/availableReplicas") == 3 && progressing["reason"] == "NewReplicaSetAvailable").then_some(d)
    })
    .await;
    assert_eq!(int(&done, "/status/readyReplicas"), 3);
    assert_eq!(int(&done, "/status/updatedReplicas"), 3);
    assert_eq!(int(&done, "/status/unavailableReplicas"), 0);
    assert_eq!(
        int(&done, "/status/observedGeneration"),
        int(&done, "/metadata/generation")
    );
    let progressing = condition(&done, "Progressing").expect("Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(
        progressing["message"],
        json!(format!("ReplicaSet \"{rs_name}\" has successfully progressed."))
    );
    let available = condition(&done, "Available").expect("Available");
    assert_eq!(available["status"], "True");
    assert_eq!(available["reason"], "MinimumReplicasAvailable");
    let rs_now = c.get(rs_info(), Some("default"), &rs_name).await.expect("get rs");
    assert_eq!(int(&rs_now, "/status/replicas"), 3);
    assert_eq!(int(&rs_now, "/status/fullyLabeledReplicas"), 3);
    assert_eq!(int(&rs_now, "/status/readyReplicas"), 3);
    assert_eq!(int(&rs_now, "/status/availableReplicas"), 3);
    assert_eq!(
        int(&rs_now, "/status/observedGeneration"),
        int(&rs_now, "/metadata/generation")
    );

    // Scale up to 5: the same ReplicaSet grows.
    c.merge_patch(
        deploy_info(),
        Some("default"),
        "web",
        None,
        &json!({"spec": {"replicas": 5}}),
    )
    .await
    .expect("scale to 5");
    let pods = eventually(20, "5 pods after scaling to 5", || async {
        let pods = pods_of(c, "app=web", &rs_uid).await;
        (pods.len() == 5).then_some(pods)
    })
    .await;
    wait_for_event(
        c,
        "web",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {rs_name} from 3 to 5"),
    )
    .await;
    assert_eq!(replicasets_of(c, &d).await.len(), 1, "scaling makes no new ReplicaSet");
    mark_all_ready(c, &pods).await;
    eventually(20, "web reports 5 available", || async {
        let d = c.get(deploy_info(), Some("default"), "web").await.ok()?;
        (int(&d, "/status/availableReplicas") == 5 && int(&d, "/status/replicas") == 5).then_some(())
    })
    .await;
    let rs_now = c.get(rs_info(), Some("default"), &rs_name).await.expect("get rs");
    assert_eq!(
        rs_now.pointer("/metadata/annotations/deployment.kubernetes.io~1desired-replicas"),
        Some(&json!("5"))
    );

    // Scale down to 1.
    c.merge_patch(
        deploy_info(),
        Some("default"),
        "web",
        None,
        &json!({"spec": {"replicas": 1}}),
    )
    .await
    .expect("scale to 1");
    eventually(20, "1 pod after scaling to 1", || async {
        (pods_of(c, "app=web", &rs_uid).await.len() == 1).then_some(())
    })
    .await;
    wait_for_event(
        c,
        "web",
        "ScalingReplicaSet",
        &format!("Scaled down replica set {rs_name} from 5 to 1"),
    )
    .await;
    let final_status = eventually(20, "web reports 1 replica", || async {
        let d = c.get(deploy_info(), Some("default"), "web").await.ok()?;
        (int(&d, "/status/replicas") == 1 && int(&d, "/status/availableReplicas") == 1).then_some(d)
    })
    .await;
    assert_eq!(int(&final_status, "/status/readyReplicas"), 1);
    assert_eq!(replicasets_of(c, &d).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_enough_pods_available() {
    let fx = start().await;
    let c = &fx.client;
    // 4 replicas, maxSurge 25% (→ 1, rounded up), maxUnavailable 25% (→ 1, rounded down):
    // at least 3 pods available and at most 5 pods planned at every moment.
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
    let d = c
        .create(
            deploy_info(),
            Some("default"),
            &deployment("roll", 4, "busybox:1.36", strategy),
        )
        .await
        .expect("create deployment");
    let old_rs = eventually(20, "first ReplicaSet of roll", || async {
        let rss = replicasets_of(c, &d).await;
        (rss.len() == 1).then(|| rss[0].clone())
    })
    .await;
    let old_uid = objects::uid(&old_rs).unwrap_or("").to_string();
    let pods = eventually(20, "4 pods of roll", || async {
        let pods = pods_of(c, "app=roll", &old_uid).await;
        (pods.len() == 4).then_some(pods)
    })
    .await;
    mark_all_ready(c, &pods).await;
    eventually(20, "roll complete at revision 1", || async {
        let d = c.get(deploy_info(), Some("default"), "roll").await.ok()?;
        (int(&d, "/status/availableReplicas") == 4
            && condition(&d, "Progressing")?["reason"] == "NewReplicaSetAvailable")
            .then_some(())
    })
    .await;

    // New image: a new ReplicaSet, rolled out step by step.
    c.merge_patch(
        deploy_info(),
        Some("default"),
        "roll",
        None,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]}}}}),
    )
    .await
    .expect("change the image");

    let samples = Cell::new(0);
    let lowest_available = Cell::new(i64::MAX);
    let saw_both_versions = Cell::new(false);
    let new_rs = eventually(60, "rollout of roll to the new image", || async {
        samples.set(samples.get() + 1);
        let pods: Vec<Value> = list(c, pods_info(), "app=roll")
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        let available = pods.iter().filter(|p| is_ready(p)).count() as i64;
        lowest_available.set(lowest_available.get().min(available));
        assert!(
            available >= 3,
            "only {available} available pods during the rollout (replicas 4 - maxUnavailable 1 = 3): {:?}",
            pods.iter().map(|p| (name(p), is_ready(p))).collect::<Vec<_>>()
        );
        let rss = replicasets_of(c, &d).await;
        let planned: i64 = rss.iter().map(|rs| int(rs, "/spec/replicas")).sum();
        assert!(
            planned <= 5,
            "ReplicaSets plan {planned} pods, more than replicas 4 + maxSurge 1"
        );
        let new_rs = rss
            .iter()
            .find(|rs| objects::uid(rs) != Some(old_uid.as_str()))?
            .clone();
        let new_uid = objects::uid(&new_rs).unwrap_or("").to_string();
        let (new_pods, old_pods): (Vec<&Value>, Vec<&Value>) = pods
            .iter()
            .partition(|p| objects::controller_uid(p) == Some(new_uid.as_str()));
        if !new_pods.is_empty() && !old_pods.is_empty() {
            saw_both_versions.set(true);
        }
        // Step by step: one new pod becomes ready per sample.
        if let Some(p) = new_pods.iter().find(|p| !is_ready(p)) {
            mark_ready(c, &name(p)).await;
            return None;
        }
        let d_now = c.get(deploy_info(), Some("default"), "roll").await.ok()?;
        let old_now = rss.iter().find(|rs| objects::uid(rs) == Some(old_uid.as_str()))?;
        let done = old_pods.is_empty()
            && new_pods.len() == 4
            && int(old_now, "/spec/replicas") == 0
            && int(&d_now, "/status/updatedReplicas") == 4
            && int(&d_now, "/status/availableReplicas") == 4
            && int(&d_now, "/status/replicas") == 4
            && condition(&d_now, "Progressing")?["reason"] == "NewReplicaSetAvailable";
        done.then_some(new_rs)
    })
    .await;
    eprintln!(
        "rollout sampled {} times; fewest available pods seen: {}",
        samples.get(),
        lowest_available.get()
    );
    assert!(
        saw_both_versions.get(),
        "a rolling update runs old and new pods side by side"
    );
    let new_name = name(&new_rs);
    assert_ne!(new_name, name(&old_rs));
    assert_eq!(
        new_rs.pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("busybox:1.37"))
    );
    assert_eq!(
        new_rs.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&json!("2"))
    );
    let old_now = c
        .get(rs_info(), Some("default"), &name(&old_rs))
        .await
        .expect("old RS kept as history");
    assert_eq!(int(&old_now, "/spec/replicas"), 0);
    let d_now = c.get(deploy_info(), Some("default"), "roll").await.expect("get");
    assert_eq!(
        d_now.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&json!("2"))
    );
    assert_eq!(
        condition(&d_now, "Progressing").expect("Progressing")["message"],
        json!(format!("ReplicaSet \"{new_name}\" has successfully progressed."))
    );
    wait_for_event(
        c,
        "roll",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {new_name} from 0 to 1"),
    )
    .await;
    let downs = events_about(c, "roll")
        .await
        .into_iter()
        .filter(|(r, m)| {
            r == "ScalingReplicaSet" && m.starts_with(&format!("Scaled down replica set {}", name(&old_rs)))
        })
        .count();
    assert!(downs >= 1, "the old ReplicaSet was scaled down in steps");

    // Back to the old template: the old ReplicaSet becomes the new one again (revision 3).
    c.merge_patch(
        deploy_info(),
        Some("default"),
        "roll",
        None,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}}),
    )
    .await
    .expect("roll back the image");
    eventually(20, "the first ReplicaSet takes revision 3", || async {
        let rs = c.get(rs_info(), Some("default"), &name(&old_rs)).await.ok()?;
        let rev = rs
            .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")?
            .clone();
        (rev == json!("3") && int(&rs, "/spec/replicas") >= 1).then_some(())
    })
    .await;
    assert_eq!(replicasets_of(c, &d).await.len(), 2, "same template, same ReplicaSet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_old_pods_first_and_history_is_trimmed() {
    let fx = start().await;
    let c = &fx.client;
    let mut manifest = deployment("rec", 2, "busybox:1.36", json!({"type": "Recreate"}));
    manifest["spec"]["revisionHistoryLimit"] = json!(0);
    let d = c
        .create(deploy_info(), Some("default"), &manifest)
        .await
        .expect("create deployment");
    let old_rs = eventually(20, "first ReplicaSet of rec", || async {
        let rss = replicasets_of(c, &d).await;
        (rss.len() == 1).then(|| rss[0].clone())
    })
    .await;
    let old_uid = objects::uid(&old_rs).unwrap_or("").to_string();
    let pods = eventually(20, "2 pods of rec", || async {
        let pods = pods_of(c, "app=rec", &old_uid).await;
        (pods.len() == 2).then_some(pods)
    })
    .await;
    mark_all_ready(c, &pods).await;
    eventually(20, "rec available", || async {
        let d = c.get(deploy_info(), Some("default"), "rec").await.ok()?;
        (int(&d, "/status/availableReplicas") == 2).then_some(())
    })
    .await;

    c.merge_patch(
        deploy_info(),
        Some("default"),
        "rec",
        None,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "busybox:1.37"}]}}}}),
    )
    .await
    .expect("change the image");
    let new_uid = eventually(60, "rec recreated with the new image", || async {
        let pods: Vec<Value> = list(c, pods_info(), "app=rec")
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        let old = pods
            .iter()
            .filter(|p| objects::controller_uid(p) == Some(old_uid.as_str()))
            .count();
        let new: Vec<&Value> = pods
            .iter()
            .filter(|p| objects::controller_uid(p) != Some(old_uid.as_str()))
            .collect();
        assert!(
            old == 0 || new.is_empty(),
            "Recreate never runs old and new pods together: {old} old, {} new",
            new.len()
        );
        if let Some(p) = new.iter().find(|p| !is_ready(p)) {
            mark_ready(c, &name(p)).await;
            return None;
        }
        let d_now = c.get(deploy_info(), Some("default"), "rec").await.ok()?;
        let done = new.len() == 2
            && int(&d_now, "/status/availableReplicas") == 2
            && int(&d_now, "/status/updatedReplicas") == 2;
        done.then(|| objects::controller_uid(new[0]).unwrap_or("").to_string())
    })
    .await;
    // revisionHistoryLimit 0: the old ReplicaSet, now at 0, is deleted.
    eventually(20, "old ReplicaSet of rec deleted (revisionHistoryLimit 0)", || async {
        let rss = replicasets_of(c, &d).await;
        (rss.len() == 1 && objects::uid(&rss[0]) == Some(new_uid.as_str())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_releases_and_replaces_pods() {
    let fx = start().await;
    let c = &fx.client;
    // An orphan pod that matches the selector of a ReplicaSet created after it.
    let orphan = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "namespace": "default", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
    });
    c.create(pods_info(), Some("default"), &orphan)
        .await
        .expect("create orphan pod");
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "solo", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": {
                "metadata": {"labels": {"app": "solo", "tier": "demo"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
            }
        }
    });
    let rs = c
        .create(rs_info(), Some("default"), &rs)
        .await
        .expect("create replicaset");
    let uid = objects::uid(&rs).unwrap_or("").to_string();

    // The orphan is adopted, so only one pod is created.
    let pods = eventually(20, "stray adopted and one more pod created", || async {
        let pods = pods_of(c, "app=solo", &uid).await;
        (pods.len() == 2 && pods.iter().any(|p| name(p) == "stray")).then_some(pods)
    })
    .await;
    let stray = pods.iter().find(|p| name(p) == "stray").expect("stray");
    let owner = &objects::owner_references(stray)[0];
    assert_eq!(owner["kind"], "ReplicaSet");
    assert_eq!(owner["name"], "solo");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    // Only 2 pods ever exist: the adopted orphan counted.
    assert_eq!(list(c, pods_info(), "app=solo").await.len(), 2);
    let created = pods.iter().find(|p| name(p) != "stray").expect("created pod");
    wait_for_event(
        c,
        "solo",
        "SuccessfulCreate",
        &format!("Created pod: {}", name(created)),
    )
    .await;

    // Status: the adopted pod lacks the template's `tier` label → not fully labeled.
    mark_all_ready(c, &pods).await;
    let rs_now = eventually(20, "solo reports 2 ready", || async {
        let rs = c.get(rs_info(), Some("default"), "solo").await.ok()?;
        (int(&rs, "/status/readyReplicas") == 2).then_some(rs)
    })
    .await;
    assert_eq!(int(&rs_now, "/status/replicas"), 2);
    assert_eq!(int(&rs_now, "/status/availableReplicas"), 2);
    assert_eq!(int(&rs_now, "/status/fullyLabeledReplicas"), 1);
    assert_eq!(
        int(&rs_now, "/status/observedGeneration"),
        int(&rs_now, "/metadata/generation")
    );

    // Relabel the adopted pod: the ReplicaSet releases it and makes a replacement.
    let mut stray_now = c.get(pods_info(), Some("default"), "stray").await.expect("get stray");
    stray_now["metadata"]["labels"] = json!({"app": "elsewhere"});
    c.replace(pods_info(), Some("default"), "stray", None, &stray_now)
        .await
        .expect("relabel stray");
    eventually(20, "stray released and replaced", || async {
        let stray = c.get(pods_info(), Some("default"), "stray").await.ok()?;
        let released = objects::owner_references(&stray).is_empty();
        let mine = pods_of(c, "app=solo", &uid).await;
        (released && mine.len() == 2).then_some(())
    })
    .await;

    // Delete one of its pods: the ReplicaSet creates a new one.
    let before: BTreeSet<String> = pods_of(c, "app=solo", &uid).await.iter().map(name).collect();
    let victim = before.iter().next().cloned().expect("a pod");
    c.delete(pods_info(), Some("default"), &victim, None)
        .await
        .expect("delete pod");
    let after = eventually(20, "a replacement for the deleted pod", || async {
        let now: BTreeSet<String> = pods_of(c, "app=solo", &uid).await.iter().map(name).collect();
        (now.len() == 2 && !now.contains(&victim)).then_some(now)
    })
    .await;
    assert_eq!(
        after.difference(&before).count(),
        1,
        "exactly one new pod: {before:?} → {after:?}"
    );

    // Scale the ReplicaSet down to 0: all its pods go, the released one stays.
    c.merge_patch(
        rs_info(),
        Some("default"),
        "solo",
        None,
        &json!({"spec": {"replicas": 0}}),
    )
    .await
    .expect("scale rs to 0");
    eventually(20, "solo at 0 pods", || async {
        let rs = c.get(rs_info(), Some("default"), "solo").await.ok()?;
        (pods_of(c, "app=solo", &uid).await.is_empty() && int(&rs, "/status/replicas") == 0).then_some(())
    })
    .await;
    assert!(
        c.get(pods_info(), Some("default"), "stray").await.is_ok(),
        "released pods are not the ReplicaSet's to delete"
    );
    let deletes = events_about(c, "solo")
        .await
        .into_iter()
        .filter(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: "))
        .count();
    assert!(deletes >= 1);
}
