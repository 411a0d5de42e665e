//! ServiceAccounts and their tokens with the real kubectl against a real cluster
//! (`kulisse up`, temp data dir, free port): a new namespace gets its `default`
//! ServiceAccount from the controller manager; `kubectl create token` answers a JWT signed
//! by the cluster key (`pki/sa.key`); `kubectl --token ... auth whoami` names the account;
//! RBAC applies to it (403 until a RoleBinding grants `view`); expired, garbage and
//! foreign-signed tokens, and tokens of a deleted account, are 401.

use std::process::Output;

use kulisse_core::apiserver::serviceaccount::{API_AUDIENCE, Claims, ServiceAccountTokens};
use kulisse_tests::cluster::Cluster;
use kulisse_tests::flows::wait_for;
use kulisse_tests::kubectl::Kubectl;

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `kubectl ARGS` that must succeed: its stdout.
fn ok(k: &Kubectl, args: &[&str]) -> String {
    let o = k.run(args);
    assert!(o.status.success(), "kubectl {args:?} failed: {}", out(&o));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `kubectl ARGS` that must fail: its stdout and stderr.
fn fails(k: &Kubectl, args: &[&str]) -> String {
    let o = k.run(args);
    assert!(!o.status.success(), "kubectl {args:?} should have failed: {}", out(&o));
    out(&o)
}

const UNAUTHORIZED: &str = "error: You must be logged in to the server (Unauthorized)";

#[test]
fn service_accounts_get_tokens_that_log_in_and_obey_rbac() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::start_in(dir.path(), &["--nodes", "1"]);
    let Some(k) = Kubectl::for_cluster(&cluster) else {
        return;
    };

    // The controller gives the namespaces that exist at start, and every new one, a `default`.
    let all = wait_for(30, "default ServiceAccounts in the system namespaces", || {
        let listed = ok(&k, &["get", "serviceaccounts", "-A"]);
        (listed.lines().filter(|l| l.contains(" default ")).count() >= 4).then_some(listed)
    });
    assert!(all.starts_with("NAMESPACE"), "{all}");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(all.lines().any(|l| l.starts_with(ns)), "{ns}: {all}");
    }
    ok(&k, &["create", "namespace", "shop"]);
    let sa = wait_for(30, "shop/default", || {
        let o = k.run(&["get", "sa", "default", "-n", "shop"]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).to_string())
    });
    let header: Vec<&str> = sa.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "SECRETS", "AGE"], "{sa}");

    // kubectl create token: a JWT, for the API server's audience.
    let token = ok(&k, &["create", "token", "default", "-n", "shop"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let short = ok(&k, &["create", "token", "default", "-n", "shop", "--duration", "10m"]);
    assert_eq!(short.trim().split('.').count(), 3, "{short}");
    let missing = fails(&k, &["create", "token", "nosuch", "-n", "shop"]);
    assert!(
        missing.contains("error: failed to create token: serviceaccounts \"nosuch\" not found"),
        "{missing}"
    );
    let too_short = fails(&k, &["create", "token", "default", "-n", "shop", "--duration", "5m"]);
    assert!(
        too_short
            .contains("spec.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{too_short}"
    );

    // Who the token is.
    let t = format!("--token={token}");
    let whoami = ok(&k, &[&t, "auth", "whoami"]);
    assert!(whoami.contains("system:serviceaccount:shop:default"), "{whoami}");
    assert!(
        whoami.contains("[system:serviceaccounts system:serviceaccounts:shop system:authenticated]"),
        "{whoami}"
    );
    let uid = ok(
        &k,
        &["get", "sa", "default", "-n", "shop", "-o", "jsonpath={.metadata.uid}"],
    );
    assert!(!uid.is_empty() && whoami.contains(&uid), "uid {uid}: {whoami}");

    // RBAC: nothing until a RoleBinding grants it.
    let denied = fails(&k, &[&t, "get", "pods", "-n", "shop"]);
    assert!(
        denied.contains(
            "Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:shop:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\""
        ),
        "{denied}"
    );
    ok(
        &k,
        &[
            "create",
            "rolebinding",
            "shop-view",
            "-n",
            "shop",
            "--serviceaccount=shop:default",
            "--clusterrole=view",
        ],
    );
    let allowed = ok(&k, &[&t, "get", "pods", "-n", "shop"]);
    assert_eq!(allowed, "", "no pods, and no error");
    let elsewhere = fails(&k, &[&t, "get", "pods", "-n", "default"]);
    assert!(elsewhere.contains("Forbidden"), "{elsewhere}");
    let cannot_write = fails(&k, &[&t, "create", "configmap", "c", "-n", "shop"]);
    assert!(
        cannot_write.contains(
            "configmaps is forbidden: User \"system:serviceaccount:shop:default\" cannot create resource \"configmaps\""
        ),
        "{cannot_write}"
    );

    // Tokens that do not check out: 401.
    let now = chrono::Utc::now().timestamp();
    let cluster_key = ServiceAccountTokens::load_or_create(dir.path()).expect("the cluster's sa.key");
    let other_dir = tempfile::tempdir().expect("temp dir");
    let other_key = ServiceAccountTokens::load_or_create(other_dir.path()).expect("another key");
    let claims =
        |from: i64, secs: i64| Claims::new("shop", "default", uid.trim(), vec![API_AUDIENCE.into()], from, secs);
    let expired = cluster_key.issue(&claims(now - 7200, 600)).expect("sign");
    let foreign = other_key.issue(&claims(now, 3600)).expect("sign");
    let vault = ok(&k, &["create", "token", "default", "-n", "shop", "--audience", "vault"]);
    for bad in [expired.as_str(), foreign.as_str(), "garbage", "a.b.c", vault.trim()] {
        let refused = fails(&k, &[&format!("--token={bad}"), "get", "pods", "-n", "shop"]);
        assert!(refused.contains(UNAUTHORIZED), "{bad}: {refused}");
    }
    // The same claims signed with the cluster key do log in (so the above failed for the key).
    let good = cluster_key.issue(&claims(now, 3600)).expect("sign");
    ok(&k, &[&format!("--token={good}"), "get", "pods", "-n", "shop"]);

    // Deleting the account revokes its tokens, even after the controller makes a new `default`.
    ok(&k, &["delete", "sa", "default", "-n", "shop"]);
    let refused = fails(&k, &[&t, "get", "pods", "-n", "shop"]);
    assert!(refused.contains(UNAUTHORIZED), "{refused}");
    let new_uid = wait_for(30, "a new shop/default", || {
        let o = k.run(&["get", "sa", "default", "-n", "shop", "-o", "jsonpath={.metadata.uid}"]);
        let u = String::from_utf8_lossy(&o.stdout).to_string();
        (o.status.success() && !u.is_empty()).then_some(u)
    });
    assert_ne!(new_uid, uid);
    let still_refused = fails(&k, &[&t, "get", "pods", "-n", "shop"]);
    assert!(still_refused.contains(UNAUTHORIZED), "{still_refused}");
    let fresh = ok(&k, &["create", "token", "default", "-n", "shop"]);
    ok(&k, &[&format!("--token={}", fresh.trim()), "get", "pods", "-n", "shop"]);
}
