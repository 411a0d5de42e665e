//! # The real kubectl against a kulisse cluster
//!
//! [`Kubectl::for_cluster`] finds the `kubectl` binary (`$KUBECTL`, else `kubectl` on the
//! `PATH`) and runs it against a [`Cluster`] with its own kubeconfig and a temporary
//! `--cache-dir` (kubectl caches discovery and OpenAPI answers there; a shared cache would
//! hide what the server answers now). Without kubectl the caller skips its test loudly,
//! and when `CI=true` the test fails instead, so CI cannot pass by skipping.
//!
//! kubectl uses the cluster's own kubeconfig: an `https://` server, the cluster CA and the
//! bearer token. (kubectl, through client-go's `clientcmd`, reads a kubeconfig's credentials
//! only when the server URL is `https://`: "only try to read the auth information if we are
//! secure". Over plain HTTP it would send no token and get `401 Unauthorized`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::cluster::{Cluster, text};

/// kubectl, set up for one cluster.
pub struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

/// The kubectl binary: `$KUBECTL`, else `kubectl` found on the `PATH`.
pub fn find_kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KUBECTL") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
}

impl Kubectl {
    /// kubectl for `cluster`, or `None` (after a loud message) when kubectl is not installed.
    /// With `CI=true` a missing kubectl panics: CI must run these tests.
    pub fn for_cluster(cluster: &Cluster) -> Option<Kubectl> {
        let Some(bin) = find_kubectl() else {
            return crate::require::missing(
                "kubectl is not installed (looked at $KUBECTL and the PATH): the kubectl tests need the real kubectl",
            );
        };
        let dir = tempfile::tempdir().expect("temp dir for kubectl");
        Some(Kubectl {
            bin,
            dir,
            kubeconfig: cluster.kubeconfig(),
        })
    }

    /// The kubeconfig kubectl uses (the cluster's).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig.clone()
    }

    /// The kubectl program (for tests that must run it through another program).
    pub fn program(&self) -> &Path {
        &self.bin
    }

    /// A directory for manifests and other files of the test.
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .arg("--request-timeout=60s")
            .args(args);
        cmd.env_remove("KUBECONFIG");
        cmd
    }

    /// Run `kubectl ARGS`, feeding `stdin` if given.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            let mut si = child.stdin.take().expect("stdin");
            si.write_all(input).expect("write kubectl's stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Run `kubectl ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    /// Run a kubectl command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Run a kubectl command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// Start `kubectl ARGS` without waiting (for `get -w`), stdout piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("start kubectl")
    }
}
