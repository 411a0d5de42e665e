//! # Readiness (mirrors kube-apiserver's `/readyz` and its health checks)
//!
//! A load balancer, a kubeadm join or `kulisse up` itself asks "may I send you requests
//! now?" with `GET /readyz`. kube-apiserver answers by running a list of named **checks**
//! and answering `ok` only when every one passes:
//!
//! - `ping`: the server answers at all (always passes when you get an answer);
//! - `etcd`: the store answers a small read within a short timeout (with `--store etcd`
//!   this is the real etcd; kulisse's embedded store is checked the same way under the name
//!   `embedded-store`);
//! - `shutdown`: the server is not shutting down (a server that is draining is alive, but
//!   should get no new work).
//!
//! `GET /readyz?verbose` lists every check, as upstream prints them:
//!
//! ```text
//! [+]ping ok
//! [-]etcd failed: reason withheld
//! [+]shutdown ok
//! readyz check failed
//! ```
//!
//! The endpoint needs no token, so, as upstream, it never says *why* a check failed
//! ("reason withheld"); the reason goes to the server's log. A failed check answers
//! `500` with the verbose list (upstream's status code for a failed health check);
//! `?exclude=etcd` skips a check. `/healthz` and `/livez` only say the process is alive.
//!
//! kulisse differs in having three checks where upstream has a dozen (post-start hooks,
//! informer sync, ...): kulisse has no such start-up stages to wait for.

use std::collections::HashSet;
use std::time::Duration;

use http::{Response, StatusCode};

use super::{ApiServer, Body, Ctx, text_response};

/// How long the store may take to answer the readiness read (upstream's
/// `--etcd-healthcheck-timeout`, 2 s by default).
pub const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outcome of one named check: `Err` holds the reason for the log.
struct Check {
    name: &'static str,
    result: Result<(), String>,
}

/// Run the readiness checks of `server`; an `excluded` check is not run at all (as
/// upstream), so `?exclude=etcd` answers at once even while etcd hangs.
async fn run_checks(server: &ApiServer, stopping: bool, excluded: &HashSet<String>) -> Vec<Check> {
    let store = server.storage.store();
    let store_name = match store.name() {
        "etcd" => "etcd",
        _ => "embedded-store",
    };
    let store_result = if excluded.contains(store_name) {
        Ok(())
    } else {
        store_check(store.as_ref()).await
    };
    vec![
        Check {
            name: "ping",
            result: Ok(()),
        },
        Check {
            name: store_name,
            result: store_result,
        },
        Check {
            name: "shutdown",
            result: if stopping {
                Err("the server is shutting down".into())
            } else {
                Ok(())
            },
        },
    ]
}

/// The store answers a small read within [`STORE_CHECK_TIMEOUT`].
async fn store_check(store: &dyn crate::store::Store) -> Result<(), String> {
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, store.ready()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {STORE_CHECK_TIMEOUT:?}")),
    }
}

/// `GET /readyz` (`?verbose`, `?exclude=<check>`).
pub async fn readyz(server: &ApiServer, ctx: &Ctx<'_>, stop: &tokio::sync::watch::Receiver<bool>) -> Response<Body> {
    let stopping = *stop.borrow();
    let excluded = excluded_checks(ctx);
    let checks = run_checks(server, stopping, &excluded).await;
    let verbose = ctx.query.contains_key("verbose");
    let (text, failed) = render("readyz", &checks, &excluded);
    if !failed.is_empty() {
        let reasons: Vec<String> = checks
            .iter()
            .filter(|c| failed.contains(&c.name))
            .map(|c| {
                format!(
                    "[-]{} failed: {}",
                    c.name,
                    c.result.as_ref().err().map_or("", String::as_str)
                )
            })
            .collect();
        tracing::warn!("readyz check failed: {}", reasons.join("; "));
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, text);
    }
    if verbose {
        text_response(StatusCode::OK, text)
    } else {
        text_response(StatusCode::OK, "ok")
    }
}

/// The check named in `?exclude=` (upstream lets the parameter repeat; kulisse's query
/// map keeps one value).
fn excluded_checks(ctx: &Ctx<'_>) -> HashSet<String> {
    ctx.param("exclude").map(str::to_string).into_iter().collect()
}

/// Upstream's text: one `[+]name ok` / `[-]name failed: reason withheld` line per check,
/// then `<endpoint> check passed` or `<endpoint> check failed`. Returns the text and the
/// names of the failed checks.
fn render(endpoint: &str, checks: &[Check], excluded: &HashSet<String>) -> (String, Vec<&'static str>) {
    let mut out = String::new();
    let mut failed = Vec::new();
    for c in checks {
        if excluded.contains(c.name) {
            out.push_str(&format!("[+]{} excluded: ok\n", c.name));
        } else if c.result.is_ok() {
            out.push_str(&format!("[+]{} ok\n", c.name));
        } else {
            out.push_str(&format!("[-]{} failed: reason withheld\n", c.name));
            failed.push(c.name);
        }
    }
    let unknown: Vec<String> = {
        let mut u: Vec<&String> = excluded
            .iter()
            .filter(|e| !checks.iter().any(|c| c.name == e.as_str()))
            .collect();
        u.sort();
        u.into_iter().map(|e| format!("{e:?}")).collect()
    };
    if !unknown.is_empty() {
        out.push_str(&format!(
            "warn: some health checks cannot be excluded: no matches for {}\n",
            unknown.join(",")
        ));
    }
    if failed.is_empty() {
        out.push_str(&format!("{endpoint} check passed\n"));
    } else {
        out.push_str(&format!("{endpoint} check failed"));
    }
    (out, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, ok: bool) -> Check {
        Check {
            name,
            result: if ok { Ok(()) } else { Err("connection refused".into()) },
        }
    }

    #[test]
    fn verbose_text_follows_upstream() {
        let checks = [check("ping", true), check("etcd", false), check("shutdown", true)];
        let (text, failed) = render("readyz", &checks, &HashSet::new());
        assert_eq!(
            text,
            "[+]ping ok\n[-]etcd failed: reason withheld\n[+]shutdown ok\nreadyz check failed"
        );
        assert_eq!(failed, ["etcd"]);
        let excluded: HashSet<String> = ["etcd".to_string(), "nope".to_string()].into();
        let (text, failed) = render("readyz", &checks, &excluded);
        assert!(failed.is_empty());
        assert_eq!(
            text,
            "[+]ping ok\n[+]etcd excluded: ok\n[+]shutdown ok\nwarn: some health checks cannot be excluded: no matches for \"nope\"\nreadyz check passed\n"
        );
    }
}
