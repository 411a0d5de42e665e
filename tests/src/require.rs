//! # When a test needs a program that is not installed
//!
//! Many tests drive real programs: etcd and etcdctl, podman, kubectl, python3 with the
//! official client. On a developer's machine one of them may be missing; then the test
//! cannot say anything, and it skips itself with a loud banner (so the developer notices,
//! and `scripts/install-deps.sh` installs it). In CI a skip would let a run pass without
//! testing anything, so there a missing program fails the test.
//!
//! This module is the one place that decides which of the two happens. CI systems set the
//! variable `CI` (GitHub Actions, GitLab CI and most others set `CI=true`; some use `1` or
//! `yes`): [`in_ci`] accepts `true`, `1` and `yes` in any case, and nothing else.
//! Every helper that finds a program (`etcd`, `kubectl`, `podman`, the book's runner, the
//! client tests) calls [`missing`] or [`skip_or_fail`] when it is not there.

/// Whether a value of the `CI` variable means "this is a CI run": `true`, `1` or `yes`
/// (any case, surrounding spaces ignored). Unset, empty, `false`, `0`, `no` mean no.
pub fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes")
    })
}

/// True when the environment says we are in CI (see [`means_ci`]), where a missing program
/// is a failure.
pub fn in_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

/// The decision for something a test needs and does not have; `what` says what is missing
/// and how to install it (`"etcd is not installed (apt-get install etcd-server)"`).
///
/// In CI: `Err` with the message for the failure. Elsewhere: prints a loud `SKIPPING`
/// banner on stderr and returns `Ok(())`: the caller skips the rest of its test.
pub fn skip_or_fail(what: &str) -> Result<(), String> {
    decide(std::env::var("CI").ok().as_deref(), what)
}

fn decide(ci: Option<&str>, what: &str) -> Result<(), String> {
    if means_ci(ci) {
        return Err(format!(
            "CI={} and {what}: in CI a missing program fails the test instead of skipping it",
            ci.unwrap_or_default()
        ));
    }
    eprintln!("\n==================== SKIPPING: {what} ====================\n");
    Ok(())
}

/// [`skip_or_fail`] for a test: panics in CI, else prints the banner and returns `None`,
/// so callers write `let Some(x) = find(..).or_else(|| missing("...")) else { return };`.
pub fn missing<T>(what: &str) -> Option<T> {
    if let Err(failure) = skip_or_fail(what) {
        panic!("{failure}");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_one_and_yes_in_any_case_mean_ci() {
        for v in ["true", "TRUE", "True", "1", "yes", "YES", "Yes", " true "] {
            assert!(means_ci(Some(v)), "CI={v:?} means CI");
        }
    }

    #[test]
    fn anything_else_does_not_mean_ci() {
        assert!(!means_ci(None), "unset");
        for v in ["", "0", "false", "no", "off", "2", "y", "truee", "ci"] {
            assert!(!means_ci(Some(v)), "CI={v:?} does not mean CI");
        }
    }

    #[test]
    fn a_missing_program_fails_in_ci_and_skips_elsewhere() {
        for ci in ["true", "1", "yes", "Yes"] {
            let err = decide(Some(ci), "etcd is not installed").unwrap_err();
            assert!(err.contains(&format!("CI={ci} and etcd is not installed")), "{err}");
        }
        assert_eq!(decide(None, "etcd is not installed"), Ok(()));
        assert_eq!(decide(Some("false"), "etcd is not installed"), Ok(()));
    }
}
