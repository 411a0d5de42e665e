//! # The book is a test: running its `console` blocks
//!
//! The book (`book/src/*.md`) shows commands and the output they print. Output that a book
//! only *claims* drifts away from the product; so `tests/tests/book.rs` runs every
//! ```` ```console ```` block of every chapter against a real cluster (the real `kulisse`
//! binary, as a reader would run it) and compares what comes out with what the book shows.
//! This is the idea of Rust's doctests and of `trycmd`, applied to a walkthrough. The
//! repository's `README.md` goes through the same machinery ([`Session::for_file`]).
//!
//! ## The grammar of a console block
//!
//! ```text
//! $ kulisse get pods                    ← a command: a line that starts with "$ "
//! NAME                   READY   STATUS    RESTARTS   AGE
//! web-6dc9c4df99-[..]    1/1     Running   0          [..]
//! ...                                   ← any number of lines (zero or more)
//! $ kulisse get deploy web -o json | grep '"replicas"'
//! ```
//!
//! - A line starting with `$ ` is a command; the lines after it, up to the next command,
//!   are its expected output (stdout and stderr together, in the order they were printed).
//!   A command ending in ` \` continues on the next line; a command with a here-document
//!   (`<<EOF` or `<<'EOF'`) takes the lines up to the terminator as its input.
//! - `[..]` inside a line matches any text within that line (also none).
//! - A line that is exactly `...` matches any number of lines, also none.
//! - A run of spaces matches a run of one or more spaces, so a table whose columns move
//!   because a name or an age is longer still matches. Trailing spaces and trailing empty
//!   lines are ignored.
//! - Every command must exit with status 0. A book that shows a failure says so the way a
//!   reader would check it: `$ kulisse get pod nope || echo "exit status $?"`.
//!
//! ## How commands run
//!
//! Each chapter runs in a fresh sandbox: its own temporary directory, its own ports and its
//! own cluster; the working directory is the repository root (so `examples/web.yaml` is
//! found), and `kulisse` on `PATH` is the binary under test.
//!
//! - Commands run one by one with `bash -c`, with `KULISSE_KUBECONFIG` pointing at the
//!   chapter's cluster (as if the reader had done chapter 2's `export`).
//! - **Paths and ports are sandboxed.** Every `/tmp/` in a command becomes the chapter's
//!   temporary directory, and the well-known ports (6443, 2379, 2380, 6444, and Jaeger's
//!   4317, 4318, 16686, 16685) become free ports; in the output the harness maps them back,
//!   so the book shows what a reader sees. A file of `examples/` that names such a port
//!   (Jaeger's `examples/jaeger.yaml`) is read from a copy with the free ports.
//! - **`kulisse up ...`** (in the foreground) is started by the harness itself: it stops the
//!   cluster that runs (a reader presses Ctrl-C), starts the new one with the block's
//!   arguments (`--data-dir` is required; `--listen` becomes a free port), compares its
//!   banner (everything up to `Press Ctrl-C to stop.`) and keeps it running for the rest of
//!   the chapter. When a chapter runs a `kulisse` command before any `kulisse up`, the
//!   harness first starts the cluster of chapter 2, `kulisse up --data-dir /tmp/kulisse`.
//! - **A trailing ` &`** runs a command in the background, as a shell job numbered as bash
//!   numbers them (one more than the highest job still running).
//!   Its expected output lines (if any) are awaited: the harness waits until the job has
//!   printed lines that match them (what follows is not checked). That is how a block waits
//!   for a component to start.
//! - **`kill [-SIGNAL] %N`** signals background job N (default `TERM`; `-9`/`-KILL`,
//!   `-STOP`, `-CONT`, `-INT` too) and, for a signal that ends it, waits until it is gone.
//! - **`export NAME=VALUE`** changes the environment of the following commands.
//! - A block that runs `podman`, `kubectl`, `etcd`, `etcdctl`, `busybox` or `jaeger` needs that
//!   program: when it is missing the rest of the chapter is skipped with a loud message,
//!   except with `CI=true`, where a missing program fails the test.
//! - Nothing is timed: a command that has not finished after [`COMMAND_TIMEOUT`] is a hang
//!   and fails the test. Waiting for the cluster is the book's job, with the commands a
//!   reader would use (`kulisse rollout status`, `until ...; do sleep 1; done`).
//!
//! With `KULISSE_BOOK_SHOW=1` every command's real output is printed while the test runs,
//! which is handy when writing a chapter.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

use crate::cluster::kulisse_bin;
use crate::etcd::find_binary;

/// How long one foreground command may run before the harness calls it hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a background job may take to print the lines the book expects from it, and
/// `kulisse up` to print its banner (the same wait as the tests' clusters).
pub use crate::cluster::START_TIMEOUT;
/// Ports a book may name that the harness replaces by free ones (API server, etcd client
/// and peer, the second API server of the failure labs' control-plane-down lab, and Jaeger's:
/// OTLP over gRPC and HTTP, its query service over HTTP and gRPC).
pub const WELL_KNOWN_PORTS: &[u16] = &[6443, 2379, 2380, 6444, 4317, 4318, 16686, 16685];
/// Programs a block may need, and how to install them.
pub const TOOLS: &[(&str, &str)] = &[
    ("podman", "apt-get install podman"),
    ("kubectl", "apt-get install kubectl"),
    ("etcd", "apt-get install etcd-server"),
    ("etcdctl", "apt-get install etcd-client"),
    ("haproxy", "apt-get install haproxy"),
    ("busybox", "apt-get install busybox-static"),
    ("jaeger", crate::jaeger::INSTALL_HINT),
];

/// The repository root (the parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository root")
        .to_path_buf()
}

/// `book/src`.
pub fn book_src() -> PathBuf {
    repo_root().join("book").join("src")
}

/// The chapter files named in `SUMMARY.md`, in reading order (relative to `book/src`).
pub fn summary_chapters() -> Vec<String> {
    let summary = std::fs::read_to_string(book_src().join("SUMMARY.md")).expect("book/src/SUMMARY.md");
    links(&summary)
        .into_iter()
        .filter(|l| !l.contains("://") && l.ends_with(".md"))
        .collect()
}

/// One command of a console block and the output the book shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookCommand {
    /// The line of the `$ ` in the Markdown file (1-based).
    pub line: usize,
    /// The command, continuation lines and here-documents included.
    pub text: String,
    /// The expected output lines.
    pub expected: Vec<String>,
}

/// One ```` ```console ```` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleBlock {
    /// The line of the opening fence (1-based).
    pub line: usize,
    pub commands: Vec<BookCommand>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The console blocks of a Markdown text, in order.
pub fn console_blocks(markdown: &str) -> Result<Vec<ConsoleBlock>, String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (event, range) in Parser::new(markdown).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info)))
                if info.split([' ', ',']).next() == Some("console") =>
            {
                current = Some((line_of(markdown, range.start), String::new()));
            }
            Event::Text(text) => {
                if let Some((_, body)) = current.as_mut() {
                    body.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((line, body)) = current.take() {
                    blocks.push(ConsoleBlock {
                        line,
                        commands: parse_commands(&body, line + 1)?,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(blocks)
}

/// The here-document terminator of a command line (`<<EOF`, `<<'EOF'`, `<<"EOF"`), if any.
fn heredoc_terminator(line: &str) -> Option<String> {
    let rest = &line[line.find("<<")? + 2..];
    let rest = rest.trim_start_matches('-').trim_start();
    let word: String = rest
        .trim_start_matches(['\'', '"'])
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// Splits a console block's body into commands and their expected output.
pub fn parse_commands(body: &str, first_line: usize) -> Result<Vec<BookCommand>, String> {
    let lines: Vec<&str> = body.lines().collect();
    let mut commands: Vec<BookCommand> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(cmd) = line.strip_prefix("$ ") {
            let start = first_line + i;
            let mut text = cmd.to_string();
            // `\` at the end: the command goes on (bash joins the lines itself).
            while text.ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                text.push('\n');
                text.push_str(lines[i]);
            }
            if let Some(end) = heredoc_terminator(&text) {
                loop {
                    i += 1;
                    let Some(l) = lines.get(i) else {
                        return Err(format!(
                            "line {start}: the here-document is not closed by a line `{end}`"
                        ));
                    };
                    text.push('\n');
                    text.push_str(l);
                    if l.trim() == end {
                        break;
                    }
                }
            }
            commands.push(BookCommand {
                line: start,
                text,
                expected: Vec::new(),
            });
        } else if let Some(last) = commands.last_mut() {
            last.expected.push(line.to_string());
        } else if !line.trim().is_empty() {
            return Err(format!(
                "line {}: a console block must start with a command (`$ ...`), found {line:?}",
                first_line + i
            ));
        }
        i += 1;
    }
    for c in &mut commands {
        while c.expected.last().is_some_and(|l| l.trim().is_empty()) {
            c.expected.pop();
        }
    }
    Ok(commands)
}

// ------------------------------------------------------------------------------------------
// Matching
// ------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Piece {
    Text(char),
    Any,
    Spaces,
}

fn pieces(pattern: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("[..]") {
            out.push(Piece::Any);
            rest = r;
        } else if c == ' ' {
            if out.last() != Some(&Piece::Spaces) {
                out.push(Piece::Spaces);
            }
            rest = &rest[1..];
        } else {
            out.push(Piece::Text(c));
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Whether one output line matches one expected line (see the module docs for `[..]` and
/// spaces). Trailing whitespace is ignored on both.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let p = pieces(pattern.trim_end());
    let s: Vec<char> = line.trim_end().chars().collect();
    // can[i][j]: pieces[i..] match s[j..]
    let mut can = vec![vec![false; s.len() + 1]; p.len() + 1];
    can[p.len()][s.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=s.len()).rev() {
            can[i][j] = match p[i] {
                Piece::Text(c) => j < s.len() && s[j] == c && can[i + 1][j + 1],
                Piece::Any => can[i + 1][j] || (j < s.len() && can[i][j + 1]),
                Piece::Spaces => j < s.len() && s[j] == ' ' && (can[i + 1][j + 1] || can[i][j + 1]),
            };
        }
    }
    can[0][0]
}

/// Whether the output lines match the expected lines, `...` lines included.
pub fn lines_match(expected: &[String], actual: &[String]) -> bool {
    let (n, m) = (expected.len(), actual.len());
    let mut can = vec![vec![false; m + 1]; n + 1];
    can[n][m] = true;
    for i in (0..n).rev() {
        for j in (0..=m).rev() {
            can[i][j] = if expected[i].trim() == "..." {
                can[i + 1][j] || (j < m && can[i][j + 1])
            } else {
                j < m && line_matches(&expected[i], &actual[j]) && can[i + 1][j + 1]
            };
        }
    }
    can[0][0]
}

/// Output as lines, trailing whitespace and trailing empty lines dropped.
pub fn output_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_string()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

// ------------------------------------------------------------------------------------------
// Other things the book tests look for
// ------------------------------------------------------------------------------------------

/// Every link and image target of a Markdown text (also `src="..."` of raw HTML images).
pub fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                out.push(dest_url.to_string())
            }
            Event::Html(html) | Event::InlineHtml(html) => {
                let mut rest: &str = &html;
                while let Some(at) = rest.find("src=\"") {
                    rest = &rest[at + 5..];
                    if let Some(end) = rest.find('"') {
                        out.push(rest[..end].to_string());
                        rest = &rest[end..];
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The inline code spans of the prose (not code blocks), e.g. `apiserver.compare`.
pub fn inline_code(markdown: &str) -> Vec<String> {
    Parser::new(markdown)
        .filter_map(|e| match e {
            Event::Code(c) => Some(c.to_string()),
            _ => None,
        })
        .collect()
}

/// File extensions that make a `<stage>.<ext>` word a file name, not a span name
/// (`store.redb`, `apiserver.crt`).
pub const FILE_EXTENSIONS: &[&str] = &[
    "crt", "key", "redb", "json", "yaml", "yml", "svg", "md", "rs", "sh", "toml", "log",
];

/// Inline code that looks like a span name: `<stage>.<step>` with a known stage (and a step
/// that is neither a file extension nor the rest of an attribute key such as
/// `controller.name`, see `catalogue::ATTRIBUTES`).
pub fn span_like_words(markdown: &str) -> Vec<String> {
    inline_code(markdown)
        .into_iter()
        .filter(|w| {
            let Some((stage, step)) = w.split_once('.') else {
                return false;
            };
            kulisse_traces::catalogue::is_stage(stage)
                && !step.is_empty()
                && step.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && !FILE_EXTENSIONS.contains(&step)
                && (kulisse_traces::catalogue::span_info(w).is_some()
                    || kulisse_traces::catalogue::attribute(w).is_none())
        })
        .collect()
}

/// The heading ids mdbook gives a Markdown file (`## Reading a trace` → `reading-a-trace`).
pub fn heading_ids(markdown: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut in_heading: Option<String> = None;
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::Heading { .. }) => in_heading = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(h) = in_heading.as_mut() {
                    h.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(h) = in_heading.take() {
                    let id: String = h
                        .trim()
                        .to_lowercase()
                        .chars()
                        .filter_map(|c| {
                            if c.is_alphanumeric() || c == '_' || c == '-' {
                                Some(c)
                            } else if c.is_whitespace() {
                                Some('-')
                            } else {
                                None
                            }
                        })
                        .collect();
                    ids.push(id);
                }
            }
            _ => {}
        }
    }
    ids
}

// ------------------------------------------------------------------------------------------
// Running a chapter
// ------------------------------------------------------------------------------------------

struct Job {
    child: Child,
    text: String,
    log: PathBuf,
}

/// The sandbox one chapter runs in; see the module docs. Everything it started is stopped
/// when it is dropped.
pub struct Session {
    /// The Markdown file, relative to the repository root (`book/src/apply.md`).
    chapter: String,
    tmp: tempfile::TempDir,
    env: BTreeMap<String, String>,
    ports: Vec<(u16, u16)>,
    cluster: Option<Child>,
    cluster_stderr: Option<PathBuf>,
    /// The CA certificate of a cluster with podman nodes (its cluster id), and its podman socket.
    cluster_podman: Option<PathBuf>,
    cluster_podman_socket: Option<String>,
    jobs: Vec<Option<Job>>,
    failures: Vec<String>,
    show: bool,
    started: usize,
}

/// What running a chapter did.
#[derive(Debug, Default)]
pub struct ChapterReport {
    /// Commands run and compared.
    pub commands: usize,
    /// Console blocks run.
    pub blocks: usize,
    /// Why the rest of the chapter was skipped (a missing program outside CI).
    pub skipped: Option<String>,
}

impl Session {
    /// A fresh sandbox for the chapter file `chapter` (relative to `book/src`).
    pub fn new(chapter: &str) -> Session {
        Session::for_file(&format!("book/src/{chapter}"))
    }

    /// A fresh sandbox for any Markdown file of the repository, `file` relative to its root
    /// (`README.md`): its console blocks follow the book's grammar and run the same way.
    pub fn for_file(file: &str) -> Session {
        let tmp = tempfile::Builder::new()
            .prefix("kulisse-book-")
            .tempdir()
            .expect("a temporary directory");
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        std::os::unix::fs::symlink(kulisse_bin(), bin.join("kulisse")).expect("link the kulisse binary");
        std::fs::create_dir_all(tmp.path().join("logs")).expect("logs dir");
        let mut env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| !k.starts_with("OTEL_") && !k.starts_with("KULISSE_"))
            .collect();
        let mut path = env.get("PATH").cloned().unwrap_or_default();
        // A reader who installed Jaeger with Go has Go's binary directory on PATH.
        if let Some(dir) = crate::jaeger::find_jaeger().as_deref().and_then(Path::parent) {
            path = format!("{path}:{}", dir.display());
        }
        env.insert("PATH".into(), format!("{}:{path}", bin.display()));
        env.insert("KULISSE_BIN".into(), kulisse_bin().display().to_string());
        // A chapter may hold these for minutes before a command binds one: they come from the
        // tests' band, where neither the cluster's connections nor its own ports can land.
        let ports = WELL_KNOWN_PORTS.iter().map(|p| (*p, crate::free_port())).collect();
        Session {
            chapter: file.to_string(),
            tmp,
            env,
            ports,
            cluster: None,
            cluster_stderr: None,
            cluster_podman: None,
            cluster_podman_socket: None,
            jobs: Vec::new(),
            failures: Vec::new(),
            show: std::env::var("KULISSE_BOOK_SHOW").is_ok_and(|v| !v.is_empty() && v != "0"),
            started: 0,
        }
    }

    fn tmp(&self) -> String {
        self.tmp.path().display().to_string()
    }

    /// A command (or path) as the book writes it → as the sandbox runs it.
    pub fn to_real(&self, text: &str) -> String {
        let mut s = text.replace("/tmp/", &format!("{}/", self.tmp()));
        for (book, real) in &self.ports {
            s = replace_port(&s, *book, *real);
        }
        self.sandbox_examples(&s)
    }

    /// A file of `examples/` that names a well-known port (`jaeger --config
    /// examples/jaeger.yaml`) is read from a copy in the sandbox with the sandbox's ports.
    fn sandbox_examples(&self, text: &str) -> String {
        let mut out = text.to_string();
        let mut names: Vec<String> = text
            .match_indices("examples/")
            .map(|(at, m)| {
                text[at + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                    .collect()
            })
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let Ok(content) = std::fs::read_to_string(repo_root().join("examples").join(&name)) else {
                continue;
            };
            let mut copy = content.clone();
            for (book, real) in &self.ports {
                copy = replace_port(&copy, *book, *real);
            }
            if copy == content {
                continue;
            }
            let dir = self.tmp.path().join("examples");
            let path = dir.join(&name);
            if std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, copy))
                .is_ok()
            {
                out = out.replace(&format!("examples/{name}"), &path.display().to_string());
            }
        }
        out
    }

    /// Output as the sandbox printed it → as a reader's machine would print it.
    pub fn to_book(&self, text: &str) -> String {
        let mut s = text.replace(&format!("{}/", self.tmp()), "/tmp/");
        for (book, real) in &self.ports {
            s = replace_port(&s, *real, *book);
        }
        s
    }

    fn fail(&mut self, line: usize, cmd: &str, what: String) {
        let msg = format!(
            "{}:{line}: `{}`\n{what}",
            self.chapter,
            cmd.lines().next().unwrap_or("")
        );
        eprintln!("{msg}\n");
        self.failures.push(msg);
    }

    /// Runs every console block of the chapter, in order. Returns an error that lists every
    /// command whose output did not match (with both outputs), or that failed.
    pub fn run_chapter(&mut self) -> Result<ChapterReport, String> {
        let path = repo_root().join(&self.chapter);
        let markdown = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let blocks = console_blocks(&markdown).map_err(|e| format!("{}: {e}", self.chapter))?;
        let mut report = ChapterReport::default();
        'blocks: for block in &blocks {
            for c in &block.commands {
                if let Some((tool, package)) = needed_tool(&c.text) {
                    let msg = format!(
                        "{}:{}: this block runs `{tool}`, which is not installed ({package})",
                        self.chapter, block.line
                    );
                    crate::require::skip_or_fail(&format!("{msg} (the rest of the chapter)"))?;
                    report.skipped = Some(msg);
                    break 'blocks;
                }
            }
            report.blocks += 1;
            for c in &block.commands {
                report.commands += 1;
                // The chapter's cluster: the one chapter 2 starts, unless the chapter starts
                // its own before its first `kulisse` command.
                if self.cluster.is_none()
                    && !is_kulisse_up(&c.text)
                    && commands_run(&c.text).iter().any(|p| p == "kulisse")
                {
                    let (_, err) = self.start_cluster("kulisse up --data-dir /tmp/kulisse");
                    if let Some(err) = err {
                        return Err(format!("{}: the chapter's cluster did not start: {err}", self.chapter));
                    }
                }
                self.run_command(c);
            }
        }
        if self.failures.is_empty() {
            Ok(report)
        } else {
            Err(format!(
                "{} command(s) of {} did not give the output the book shows:\n\n{}",
                self.failures.len(),
                self.chapter,
                self.failures.join("\n\n")
            ))
        }
    }

    fn run_command(&mut self, c: &BookCommand) {
        let text = c.text.trim();
        if self.show {
            eprintln!("[book {}:{}] $ {text}", self.chapter, c.line);
        }
        if is_kulisse_up(text) {
            let (actual, err) = self.start_cluster(text);
            self.compare(c, &actual);
            if let Some(err) = err {
                self.fail(c.line, text, err);
            }
        } else if let Some(rest) = text.strip_prefix("export ") {
            self.export(c, rest);
        } else if text.starts_with("kill ") && text.contains('%') {
            self.kill(c, text);
        } else if let Some(cmd) = text.strip_suffix('&').filter(|t| !t.ends_with('&')) {
            self.background(c, cmd.trim());
        } else {
            self.foreground(c, text);
        }
    }

    fn compare(&mut self, c: &BookCommand, actual: &str) {
        let actual = self.to_book(actual);
        let lines = output_lines(&actual);
        if self.show {
            eprintln!("{actual}");
        }
        if !lines_match(&c.expected, &lines) {
            self.fail(
                c.line,
                &c.text,
                format!(
                    "--- the book shows ---\n{}\n--- the command printed ---\n{}",
                    c.expected.join("\n"),
                    lines.join("\n")
                ),
            );
        }
    }

    fn bash(&self, script: &str) -> Process {
        let mut p = Process::new("bash");
        p.arg("-c")
            .arg(script)
            .current_dir(repo_root())
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .process_group(0);
        p
    }

    fn foreground(&mut self, c: &BookCommand, text: &str) {
        let script = format!("exec 2>&1\n{}", self.to_real(text));
        let mut p = self.bash(&script);
        p.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = match p.spawn() {
            Ok(child) => child,
            Err(e) => return self.fail(c.line, text, format!("could not run bash: {e}")),
        };
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() > deadline => {
                    signal_group(child.id(), "KILL");
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break None,
            }
        };
        // Something the command left in the background may hold the pipe open: do not wait
        // for it forever.
        let out = join_with_timeout(reader, Duration::from_secs(10)).unwrap_or_default();
        let out = String::from_utf8_lossy(&out).into_owned();
        match status {
            None => self.fail(
                c.line,
                text,
                format!(
                    "did not finish within {COMMAND_TIMEOUT:?} (a hang); it printed:\n{}",
                    self.to_book(&out)
                ),
            ),
            Some(s) if !s.success() => self.fail(
                c.line,
                text,
                format!(
                    "exited with {s}; a failing command must be shown as `... || echo \"exit status $?\"`. It printed:\n{}",
                    self.to_book(&out)
                ),
            ),
            Some(_) => self.compare(c, &out),
        }
    }

    fn export(&mut self, c: &BookCommand, rest: &str) {
        let names: Vec<String> = rest
            .split_whitespace()
            .filter_map(|w| w.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let script = format!("export {}\nenv -0", self.to_real(rest));
        let mut p = self.bash(&script);
        let out = match p.stdout(Stdio::piped()).stderr(Stdio::piped()).output() {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr).into_owned();
                return self.fail(c.line, &c.text, format!("export failed: {err}"));
            }
            Err(e) => return self.fail(c.line, &c.text, format!("could not run bash: {e}")),
        };
        for entry in out.stdout.split(|b| *b == 0) {
            let entry = String::from_utf8_lossy(entry);
            if let Some((k, v)) = entry.split_once('=')
                && names.iter().any(|n| n == k)
            {
                self.env.insert(k.to_string(), v.to_string());
            }
        }
        self.compare(c, "");
    }

    fn background(&mut self, c: &BookCommand, cmd: &str) {
        self.started += 1;
        let log = self.tmp.path().join("logs").join(format!("job-{}.log", self.started));
        let file = match std::fs::File::create(&log) {
            Ok(f) => f,
            Err(e) => return self.fail(c.line, cmd, format!("cannot create a log: {e}")),
        };
        let file2 = file.try_clone().expect("dup log file");
        let mut p = self.bash(&self.to_real(cmd));
        p.stdout(file).stderr(file2);
        let child = match p.spawn() {
            Ok(child) => child,
            Err(e) => return self.fail(c.line, cmd, format!("could not run bash: {e}")),
        };
        // Job numbers as bash gives them: one more than the highest job still running (so
        // after every job ended, the next one is %1 again).
        while let Some(last) = self.jobs.last_mut() {
            let running = last
                .as_mut()
                .is_some_and(|job| matches!(job.child.try_wait(), Ok(None)));
            if running {
                break;
            }
            self.jobs.pop();
        }
        self.jobs.push(Some(Job {
            child,
            text: cmd.to_string(),
            log: log.clone(),
        }));
        if c.expected.is_empty() {
            return;
        }
        // Wait until the job printed what the book expects from it.
        let mut expected = c.expected.clone();
        expected.push("...".into());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.to_book(&std::fs::read_to_string(&log).unwrap_or_default());
            let lines = output_lines(&text);
            if lines_match(&expected, &lines) {
                if self.show {
                    eprintln!("{text}");
                }
                return;
            }
            let exited = self
                .jobs
                .last_mut()
                .and_then(Option::as_mut)
                .is_some_and(|j| matches!(j.child.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                let why = if exited { "the job ended" } else { "timed out" };
                return self.fail(
                    c.line,
                    cmd,
                    format!(
                        "background job: {why} before printing what the book shows\n--- the book shows ---\n{}\n--- the job printed ---\n{}",
                        c.expected.join("\n"),
                        lines.join("\n")
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self, c: &BookCommand, text: &str) {
        let mut signal = "TERM".to_string();
        let mut targets = Vec::new();
        for word in text.split_whitespace().skip(1) {
            if let Some(n) = word.strip_prefix('%') {
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 && n <= self.jobs.len() => targets.push(n),
                    _ => return self.fail(c.line, text, format!("there is no job {word}")),
                }
            } else if let Some(sig) = word.strip_prefix('-') {
                signal = match sig {
                    "9" => "KILL".to_string(),
                    "15" => "TERM".to_string(),
                    "2" => "INT".to_string(),
                    s => s.trim_start_matches("SIG").to_string(),
                };
            }
        }
        for n in targets {
            let Some(job) = self.jobs[n - 1].as_mut() else {
                return self.fail(c.line, text, format!("job %{n} has already ended"));
            };
            signal_group(job.child.id(), &signal);
            if matches!(signal.as_str(), "TERM" | "KILL" | "INT") {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if let Ok(Some(_)) = job.child.try_wait() {
                        break;
                    }
                    if Instant::now() > deadline {
                        signal_group(job.child.id(), "KILL");
                        let _ = job.child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                self.jobs[n - 1] = None;
            }
        }
        self.compare(c, "");
    }

    /// Stops the running cluster, then starts `kulisse up ARGS` (book form). Returns its
    /// banner (up to `Press Ctrl-C to stop.`) and an error if it did not come up.
    fn start_cluster(&mut self, text: &str) -> (String, Option<String>) {
        self.stop_cluster();
        let words: Vec<String> = self
            .to_real(text)
            .split_whitespace()
            .filter(|w| *w != "\\")
            .map(str::to_string)
            .collect();
        let (mut args, data_dir, book_port) = self.up_args(&words);
        let Some(data_dir) = data_dir else {
            return (
                String::new(),
                Some("`kulisse up` in the book must name its --data-dir".into()),
            );
        };
        args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        let stderr_log = self.tmp.path().join("logs").join(format!("up-{}.log", self.started));
        self.started += 1;
        let stderr = std::fs::File::create(&stderr_log).expect("up log");
        let mut p = Process::new(kulisse_bin());
        p.args(&args)
            .current_dir(repo_root())
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let mut child = match p.spawn() {
            Ok(c) => c,
            Err(e) => return (String::new(), Some(format!("could not start kulisse up: {e}"))),
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (banner, port, complete) = read_banner(&rx);
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        if let Some(real) = port {
            self.ports.retain(|(b, _)| *b != book_port);
            self.ports.push((book_port, real));
        }
        self.env.insert(
            "KULISSE_KUBECONFIG".into(),
            data_dir.join("kubeconfig").display().to_string(),
        );
        self.cluster = Some(child);
        self.cluster_stderr = Some(stderr_log.clone());
        if args.windows(2).any(|w| w[0] == "--runtime" && w[1] == "podman") {
            self.cluster_podman = Some(data_dir.join("ca.crt"));
            self.cluster_podman_socket = args
                .windows(2)
                .find(|w| w[0] == "--podman-socket")
                .map(|w| w[1].clone());
        }
        let err = if !complete {
            Some(format!(
                "kulisse up did not finish its banner; its log:\n{}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            ))
        } else if port.is_some() {
            self.wait_ready(&data_dir.join("kubeconfig")).err()
        } else {
            Some("kulisse up printed no API server address".into())
        };
        (banner, err)
    }

    /// The arguments of the book's `kulisse up` (after `kulisse up`, without its `--listen`),
    /// its `--data-dir`, and the port the book names for it (`--listen`, else 6443).
    fn up_args(&self, words: &[String]) -> (Vec<String>, Option<PathBuf>, u16) {
        let mut args: Vec<String> = vec!["up".to_string()];
        let mut data_dir = None;
        let mut book_port = 6443;
        let mut i = 2; // after `kulisse up`
        while i < words.len() {
            match words[i].as_str() {
                "--data-dir" if i + 1 < words.len() => {
                    data_dir = Some(PathBuf::from(&words[i + 1]));
                    args.extend([words[i].clone(), words[i + 1].clone()]);
                    i += 2;
                }
                "--listen" if i + 1 < words.len() => {
                    let real: u16 = words[i + 1]
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    book_port = self.ports.iter().find(|(_, r)| *r == real).map_or(real, |(b, _)| *b);
                    i += 2;
                }
                _ => {
                    args.push(words[i].clone());
                    i += 1;
                }
            }
        }
        (args, data_dir, book_port)
    }

    /// Waits until the new cluster answers a client (with its kubeconfig, so plain HTTP and
    /// TLS alike): `kulisse get namespaces` succeeds.
    fn wait_ready(&self, kubeconfig: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let out = Process::new(kulisse_bin())
                .args(["get", "namespaces", "--kubeconfig"])
                .arg(kubeconfig)
                .env_clear()
                .envs(&self.env)
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("the cluster did not answer within {START_TIMEOUT:?}: {last}"))
    }

    fn stop_cluster(&mut self) {
        if let Some(mut child) = self.cluster.take() {
            stop_child(&mut child, "INT");
        }
        // Podman keeps containers running without the kubelet: remove what this cluster's
        // podman nodes left (a chapter that failed halfway), by the cluster label.
        if let Some(ca_file) = self.cluster_podman.take() {
            let ca = std::fs::read_to_string(ca_file).unwrap_or_default();
            let id = kulisse_backends::runtime::podman::cluster_id_from_ca(&ca);
            let sock = self.cluster_podman_socket.take();
            remove_podman_pods(&id, sock.as_deref());
        }
    }

    /// The stderr log of the running cluster (for failure messages).
    pub fn cluster_log(&self) -> String {
        self.cluster_stderr
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The logs of the background jobs (for failure messages).
    pub fn job_logs(&self) -> String {
        self.jobs
            .iter()
            .flatten()
            .map(|j| {
                format!(
                    "--- job `{}` ---\n{}",
                    j.text,
                    std::fs::read_to_string(&j.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for job in self.jobs.iter_mut().flatten() {
            signal_group(job.child.id(), "KILL");
            let _ = job.child.wait();
        }
        self.stop_cluster();
    }
}

/// Whether a command starts a cluster in the foreground.
pub fn is_kulisse_up(text: &str) -> bool {
    let mut words = text.split_whitespace();
    words.next() == Some("kulisse") && words.next() == Some("up") && !text.trim_end().ends_with('&')
}

/// The first program of [`TOOLS`] a command runs that is not installed.
pub fn needed_tool(text: &str) -> Option<(&'static str, &'static str)> {
    commands_run(text).into_iter().find_map(|prog| {
        TOOLS
            .iter()
            .find(|(tool, _)| *tool == prog)
            .filter(|(tool, _)| find_tool(tool).is_none())
            .copied()
    })
}

/// Where a program of [`TOOLS`] is: on `PATH`; `jaeger` also in Go's binary directory,
/// where `go install` (and `scripts/install-deps.sh`) put it.
fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool == "jaeger" {
        crate::jaeger::find_jaeger()
    } else {
        find_binary(tool, &[])
    }
}

/// The programs a shell command line runs: the first word of each pipeline element.
pub fn commands_run(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at_start = true;
    let mut word = String::new();
    let flush = |word: &mut String, at_start: &mut bool, out: &mut Vec<String>| {
        if !word.is_empty() {
            if *at_start && !word.contains('=') {
                out.push(std::mem::take(word));
                *at_start = false;
            } else if *at_start {
                word.clear(); // VAR=value before the command
            } else {
                word.clear();
            }
        }
    };
    for ch in text.chars() {
        match ch {
            '|' | ';' | '&' | '(' | ')' | '\n' | '`' => {
                flush(&mut word, &mut at_start, &mut out);
                at_start = true;
            }
            c if c.is_whitespace() => flush(&mut word, &mut at_start, &mut out),
            '$' => {}
            c => word.push(c),
        }
    }
    flush(&mut word, &mut at_start, &mut out);
    out
}

/// Force-removes the podman pods of one kulisse cluster (label `kulisse.dev/cluster`).
fn remove_podman_pods(cluster_id: &str, socket: Option<&str>) {
    // The podman CLI works on the same storage as the API service (rootful or rootless
    // alike), and the service may be gone by now.
    let _ = socket;
    let ids = Process::new("podman")
        .args(["pod", "ps", "-q", "--filter"])
        .arg(format!("label=kulisse.dev/cluster={cluster_id}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let _ = Process::new("podman")
            .args(["pod", "rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn replace_port(text: &str, from: u16, to: u16) -> String {
    let needle = format!("127.0.0.1:{from}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(&needle);
        } else {
            out.push_str(&format!("127.0.0.1:{to}"));
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Process::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn stop_child(child: &mut Child, signal: &str) {
    signal_group(child.id(), signal);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_group(child.id(), "KILL");
    let _ = child.wait();
}

fn join_with_timeout<T: Send + 'static>(handle: std::thread::JoinHandle<T>, timeout: Duration) -> Option<T> {
    let deadline = Instant::now() + timeout;
    while !handle.is_finished() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    handle.join().ok()
}

/// Reads `kulisse up`'s banner from `rx` until "Press Ctrl-C to stop" (`complete`) or
/// [`START_TIMEOUT`]: the banner, and the API server's port in it.
fn read_banner(rx: &mpsc::Receiver<String>) -> (String, Option<u16>, bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut banner = String::new();
    let mut port = None;
    let mut complete = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if port.is_none()
            && let Some(at) = line.find("://127.0.0.1:")
        {
            let digits: String = line[at + 13..].chars().take_while(char::is_ascii_digit).collect();
            port = digits.parse::<u16>().ok();
        }
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Press Ctrl-C to stop") {
            complete = true;
            break;
        }
    }
    (banner, port, complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcards_within_a_line() {
        assert!(line_matches(
            "web-[..]   1/1   Running",
            "web-6dc9c4df99-x7k2p   1/1     Running"
        ));
        assert!(line_matches("done in [..]", "done in 1.2 s"));
        assert!(line_matches("a[..]b", "ab"));
        assert!(!line_matches("a[..]b", "abc"));
        assert!(!line_matches("web 1/1", "web1/1"));
        assert!(line_matches("x   ", "x"));
        assert!(line_matches(
            "│  ├─ cli.request [..]",
            "│  ├─ cli.request        cli   |▏ |  5 ms"
        ));
    }

    #[test]
    fn ellipsis_lines() {
        assert!(lines_match(&v(&["a", "...", "z"]), &v(&["a", "b", "c", "z"])));
        assert!(lines_match(&v(&["a", "...", "z"]), &v(&["a", "z"])));
        assert!(lines_match(&v(&["..."]), &v(&[])));
        assert!(!lines_match(&v(&["a", "z"]), &v(&["a", "b", "z"])));
        assert!(!lines_match(&v(&["a"]), &v(&["a", "b"])));
    }

    #[test]
    fn blocks_commands_heredocs_and_continuations() {
        let md = "Text\n\n```console\n$ kulisse get pods\nNAME\n\n$ cat <<'EOF' | kulisse apply -f -\nkind: X\nEOF\nx created\n$ kulisse up \\\n  --nodes 2\nok\n```\n\n```sh\n$ not run\n```\n";
        let blocks = console_blocks(md).unwrap();
        assert_eq!(blocks.len(), 1);
        let c = &blocks[0].commands;
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].line, 4);
        assert_eq!(c[0].expected, v(&["NAME"]));
        assert_eq!(c[1].text, "cat <<'EOF' | kulisse apply -f -\nkind: X\nEOF");
        assert_eq!(c[1].expected, v(&["x created"]));
        assert_eq!(c[2].text, "kulisse up \\\n  --nodes 2");
        assert!(is_kulisse_up(&c[2].text));
        assert!(console_blocks("```console\noops\n```\n").is_err());
    }

    #[test]
    fn programs_of_a_command_line() {
        assert_eq!(commands_run("kulisse up --store etcd"), v(&["kulisse"]));
        assert_eq!(
            commands_run("A=1 etcdctl get / | grep x && kubectl get pods"),
            v(&["etcdctl", "grep", "kubectl"])
        );
    }

    #[test]
    fn ports_are_replaced_whole() {
        assert_eq!(
            replace_port("http://127.0.0.1:6443/x", 6443, 4000),
            "http://127.0.0.1:4000/x"
        );
        assert_eq!(replace_port("127.0.0.1:64430", 6443, 4000), "127.0.0.1:64430");
    }

    #[test]
    fn heading_ids_like_mdbook() {
        assert_eq!(
            heading_ids("# Reading a trace\n## `kulisse up`: go"),
            v(&["reading-a-trace", "kulisse-up-go"])
        );
    }
}
