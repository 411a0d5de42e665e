//! # One kulisse component as its own process
//!
//! The failover tests start `kulisse scheduler` or `kulisse controller-manager` as separate
//! processes, as a cluster with several masters runs them, and kill them with SIGKILL. A
//! [`Component`] keeps what the process printed on stderr (where components report, e.g.
//! `successfully acquired lease kube-system/kube-scheduler`) so a test can wait for a line,
//! and kills the process when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::kulisse_bin;

/// A running `kulisse <args> --kubeconfig <kubeconfig>`.
pub struct Component {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    /// What it was started as, for messages.
    pub name: String,
}

impl Component {
    /// Start `kulisse` with `args` against the cluster of `kubeconfig`.
    pub fn start(name: &str, kubeconfig: &Path, args: &[&str]) -> Component {
        let mut child = Command::new(kulisse_bin())
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Component {
            child: Some(child),
            lines,
            name: name.to_string(),
        }
    }

    /// Everything printed on stderr so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Whether a line containing `text` was printed.
    pub fn printed(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.contains(text))
    }

    /// Wait (at most `secs`) until a line containing `text` is printed; returns that line.
    pub fn wait_for_line(&self, secs: u64, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| l.contains(text)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {text:?} within {secs}s; it printed: {:#?}",
                self.name,
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited; its exit code if so.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten().map(|status| status.code())
    }

    /// SIGKILL: no goodbye, no lease released.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill9();
    }
}
