//! The book is tested like code.
//!
//! - Every ```` ```console ```` block of every chapter runs against a real cluster, and its
//!   output must match what the book shows (one test per chapter; the grammar and the
//!   conventions are in `kulisse_tests::book`). So is every console block of `README.md`.
//! - Every span name the book mentions (`apiserver.compare`) is one kulisse emits.
//! - Every `kulisse` command and flag the prose mentions exists.
//! - Every relative link and image resolves (mdbook 0.5 does not check them).
//! - The sample traces shipped with the book parse as OTLP JSON.
//!
//! Build the binary first (`cargo build -p kulisse`; scripts/test.sh does).

use std::collections::BTreeSet;
use std::process::Command;

use kulisse_tests::book::{self, Session};
use kulisse_tests::cluster::kulisse_bin;

fn run_chapter(file: &str) {
    run_file(Session::new(file), &format!("book/src/{file}"));
}

fn run_file(mut session: Session, file: &str) {
    match session.run_chapter() {
        Ok(report) => {
            eprintln!(
                "{file}: {} block(s), {} command(s) matched{}",
                report.blocks,
                report.commands,
                report
                    .skipped
                    .map(|s| format!("; SKIPPED the rest: {s}"))
                    .unwrap_or_default()
            );
        }
        Err(e) => panic!(
            "{e}\n\n=== the cluster's log (stderr) ===\n{}\n=== background jobs ===\n{}",
            tail(&session.cluster_log(), 60),
            tail(&session.job_logs(), 80)
        ),
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One test per chapter: `chapter!(test_name, "file.md")`.
macro_rules! chapters {
    ($($name:ident => $file:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_chapter($file);
            }
        )*
        const TESTED: &[&str] = &[$($file),*];
    };
}

chapters! {
    console_introduction => "introduction.md",
    console_01_planes => "planes.md",
    console_02_setting_up => "setting-up.md",
    console_02a_primer => "primer.md",
    console_03_apply => "apply.md",
    console_04_store => "store.md",
    console_05_controllers => "controllers.md",
    console_06_scheduler => "scheduler.md",
    console_07_kubelet => "kubelet.md",
    console_08_proxy => "proxy.md",
    console_09_traces => "traces.md",
    console_09a_step => "step.md",
    console_09b_security => "security.md",
    console_10_failure_labs => "failure-labs.md",
    console_10a_masters => "masters.md",
    console_10b_scaling => "scaling.md",
    console_11_going_further => "going-further.md",
    console_appendix_answers => "answers.md",
    console_appendix_testing => "testing.md",
    console_appendix_glossary => "glossary.md",
}

/// The README's console blocks follow the book's grammar and are run the same way.
#[test]
fn console_readme() {
    run_file(Session::for_file("README.md"), "README.md");
}

fn book_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(book::book_src())
        .expect("book/src")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    files.sort();
    files
}

fn read(file: &str) -> String {
    std::fs::read_to_string(book::book_src().join(file)).unwrap_or_else(|e| panic!("book/src/{file}: {e}"))
}

#[test]
fn every_chapter_is_in_the_summary_and_has_a_console_test() {
    let summary: BTreeSet<String> = book::summary_chapters().into_iter().collect();
    let tested: BTreeSet<String> = TESTED.iter().map(|s| s.to_string()).collect();
    for file in book_files().into_iter().filter(|f| f != "SUMMARY.md") {
        assert!(
            summary.contains(&file),
            "book/src/{file} is not in SUMMARY.md (mdbook would not show it)"
        );
    }
    assert_eq!(
        summary, tested,
        "SUMMARY.md's chapters and the per-chapter tests in tests/tests/book.rs differ"
    );
}

#[test]
fn span_names_in_the_book_are_in_the_catalogue() {
    let mut checked = 0;
    let mut unknown = Vec::new();
    for file in book_files() {
        for word in book::span_like_words(&read(&file)) {
            checked += 1;
            if kulisse_traces::catalogue::span_info(&word).is_none() {
                unknown.push(format!("book/src/{file}: `{word}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the book names spans kulisse does not emit (see traces/src/catalogue.rs):\n{}",
        unknown.join("\n")
    );
    assert!(
        checked > 20,
        "the book should name the spans it explains; found only {checked}"
    );
}

/// `kulisse X Y --help`: Some(help text) if that command exists.
fn help_of(path: &[&str]) -> Option<String> {
    let out = Command::new(kulisse_bin())
        .args(path)
        .arg("--help")
        .output()
        .expect("run kulisse --help");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn kulisse_commands_and_flags_in_the_prose_exist() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in book_files() {
        for code in book::inline_code(&read(&file)) {
            let words: Vec<&str> = code.split_whitespace().collect();
            if words.first() != Some(&"kulisse") || words.len() < 2 {
                continue;
            }
            checked += 1;
            // Walk down the subcommands as far as they go.
            let mut path: Vec<&str> = Vec::new();
            let mut help = help_of(&[]).expect("kulisse --help works");
            for w in &words[1..] {
                if w.starts_with('-') {
                    break;
                }
                if subcommands(&help).iter().any(|s| s == w) {
                    path.push(w);
                    match help_of(&path) {
                        Some(h) => help = h,
                        None => {
                            problems.push(format!("book/src/{file}: `{code}`: `kulisse {}` fails", path.join(" ")));
                            break;
                        }
                    }
                } else if path.is_empty() {
                    problems.push(format!("book/src/{file}: `{code}`: `{w}` is not a kulisse command"));
                    break;
                } else {
                    // An argument (a kind, a name, a trace id).
                }
            }
            // After `--` the words are the command `kulisse exec` runs, not kulisse's flags.
            for w in words[1..].iter().take_while(|w| **w != "--") {
                let flag = w.split('=').next().unwrap_or(w);
                let known = if let Some(long) = flag.strip_prefix("--") {
                    let f = format!("--{long}");
                    !long.is_empty()
                        && help
                            .match_indices(&f)
                            .any(|(at, _)| !help[at + f.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-'))
                } else if flag.starts_with('-') && flag.len() == 2 {
                    help.contains(&format!("{flag},")) || help.contains(&format!("{flag} "))
                } else {
                    true
                };
                if !known {
                    problems.push(format!(
                        "book/src/{file}: `{code}`: `kulisse {}` has no flag {flag}",
                        path.join(" ")
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the book mentions commands or flags that do not exist:\n{}",
        problems.join("\n")
    );
    assert!(
        checked > 10,
        "expected the prose to mention kulisse commands; found {checked}"
    );
}

#[test]
fn relative_links_and_images_resolve() {
    let src = book::book_src();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in book_files() {
        for link in book::links(&read(&file)) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (target, fragment) = match link.split_once('#') {
                Some((t, f)) => (t, Some(f)),
                None => (link.as_str(), None),
            };
            let target_file = if target.is_empty() {
                file.clone()
            } else {
                target.to_string()
            };
            let path = src.join(&target_file);
            if !path.exists() {
                problems.push(format!(
                    "book/src/{file}: link `{link}`: {} does not exist",
                    path.display()
                ));
                continue;
            }
            if let Some(fragment) = fragment
                && target_file.ends_with(".md")
            {
                let ids = book::heading_ids(&std::fs::read_to_string(&path).unwrap_or_default());
                if !ids.iter().any(|id| id == fragment) {
                    problems.push(format!(
                        "book/src/{file}: link `{link}`: no heading with id `{fragment}` in {target_file} (it has {ids:?})"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "broken links in the book:\n{}",
        problems.join("\n")
    );
    assert!(
        checked > 10,
        "the chapters link to each other; found only {checked} links"
    );
}

#[test]
fn shipped_traces_parse_as_otlp_json() {
    let dir = book::book_src().join("traces");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "book/src/traces/ should hold sample traces (scripts/book-assets.sh)"
    );
    for path in files {
        let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let data: opentelemetry_proto::tonic::trace::v1::TracesData =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{} is not OTLP JSON: {e}", path.display()));
        let spans: Vec<_> = data
            .resource_spans
            .iter()
            .flat_map(|r| r.scope_spans.iter())
            .flat_map(|s| s.spans.iter())
            .collect();
        assert!(!spans.is_empty(), "{} holds no spans", path.display());
        for span in &spans {
            assert!(
                kulisse_traces::catalogue::span_info(&span.name).is_some(),
                "{}: span {:?} is not in the catalogue",
                path.display(),
                span.name
            );
            assert_eq!(span.trace_id.len(), 16, "{}: a trace id is 16 bytes", path.display());
        }
        let roots = spans.iter().filter(|s| s.parent_span_id.is_empty()).count();
        assert!(roots >= 1, "{}: a trace has a root span", path.display());
    }
}
