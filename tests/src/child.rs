//! # Tests that need a fresh process
//!
//! OpenTelemetry installs process-wide state (a global tracer provider, a propagator), and a
//! test of "spans are flushed when the process exits" needs a process that exits. Such tests
//! re-run their own test binary as a child that executes only one test, with an environment
//! variable naming the job it should do. The child reports back through `stdout` lines of the
//! form `KULISSE_TEST_OUTPUT key=value` ([`emit`]), which the parent reads with
//! [`output_value`].

use std::collections::BTreeMap;
use std::time::Duration;

/// The prefix of a child's report lines.
pub const OUTPUT_MARKER: &str = "KULISSE_TEST_OUTPUT ";

/// How long a child may run.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// What a child printed.
pub struct ChildOutput {
    pub stdout: String,
    pub stderr: String,
}

/// A multi-threaded runtime for the parent side (receivers, fixtures).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the test")
}

/// Run this test binary again as a child that executes only `test`, with `job_env=job`.
/// The child starts from a clean OpenTelemetry environment (`OTEL_*`, `KULISSE_TRACE*`
/// removed, except the names in `keep`), plus `env`. It must exit successfully.
pub fn run_child(
    rt: &tokio::runtime::Runtime,
    job_env: &str,
    test: &str,
    job: &str,
    keep: &[&str],
    env: &[(&str, String)],
) -> ChildOutput {
    let exe = std::env::current_exe().expect("the path of this test binary");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(job_env, job)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, _)| k.starts_with("OTEL_") || k.starts_with("KULISSE_TRACE"))
    {
        if !keep.contains(&name.as_str()) {
            cmd.env_remove(name);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let output = rt
        .block_on(async { tokio::time::timeout(CHILD_TIMEOUT, cmd.output()).await })
        .unwrap_or_else(|_| panic!("child {job:?} of {test} did not finish within {CHILD_TIMEOUT:?}"))
        .expect("running the child test process");
    let out = ChildOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        output.status.success(),
        "child {job:?} of {test} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        out.stdout,
        out.stderr
    );
    out
}

/// The value of a child's `KULISSE_TEST_OUTPUT key=value` line.
pub fn output_value(out: &ChildOutput, key: &str) -> String {
    let values: BTreeMap<&str, &str> = out
        .stdout
        .lines()
        // The test harness may print "test NAME ... " on the same line first.
        .filter_map(|line| line.find(OUTPUT_MARKER).map(|at| &line[at + OUTPUT_MARKER.len()..]))
        .filter_map(|kv| kv.split_once('='))
        .collect();
    values.get(key).map(|v| v.to_string()).unwrap_or_else(|| {
        panic!(
            "the child printed no {key:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.stdout, out.stderr
        )
    })
}

/// In a child: the job named by `job_env`, if this process is one.
pub fn child_job(job_env: &str) -> Option<String> {
    std::env::var(job_env).ok().filter(|v| !v.is_empty())
}

/// In a child: report `key=value` to the parent.
pub fn emit(key: &str, value: impl std::fmt::Display) {
    println!("{OUTPUT_MARKER}{key}={value}");
}
