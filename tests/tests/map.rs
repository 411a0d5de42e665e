//! The one map is checked here: the span catalogue (`traces/src/catalogue.rs`) against the
//! code, the book and ARCHITECTURE.md.
//!
//! - Every generated block (`<!-- BEGIN generated:NAME -->` ... `<!-- END generated:NAME -->`)
//!   equals what `kulisse_traces::map` renders. `KULISSE_MAP_BLESS=1 cargo test -p
//!   kulisse-tests --test map` rewrites the blocks instead.
//! - Every path the catalogue names exists, and every chapter it names is in SUMMARY.md.
//! - Every span the code emits is in the catalogue, emitted by exactly the files the catalogue
//!   says, with exactly the attributes it lists; every catalogue span is emitted somewhere.
//! - Every attribute the code sets or records is explained in `ATTRIBUTES`.
//! - Each component's `//!` opens with its station, chapter and span prefixes.
//!
//! The spans are found by reading the sources: a span macro (`info_span!`, `caused_span!`, or
//! a file's own `macro_rules! x_span` wrapping one) whose first string literal looks like
//! `<stage>.<step>`. Comment lines and a file's `#[cfg(test)] mod tests` are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kulisse_tests::book;
use kulisse_traces::catalogue::{self, ATTRIBUTES, CHAPTERS, SPANS, STAGE_KEY, STATIONS};
use kulisse_traces::map;

/// The directories whose sources emit spans.
const SOURCE_DIRS: &[&str] = &["cli/src", "core/src", "backends/src", "traces/src"];

fn root() -> PathBuf {
    book::repo_root()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn generated_blocks_are_up_to_date() {
    let bless = std::env::var("KULISSE_MAP_BLESS").is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for block in map::blocks() {
        let text = files.entry(block.file.clone()).or_insert_with(|| read(&block.file));
        match map::block_in(text, block.name) {
            Ok(current) if current == block.body.trim_end_matches('\n') => {}
            Ok(_) if bless => {
                *text = map::splice(text, block.name, block.body.trim_end_matches('\n')).expect("the block was found");
            }
            Ok(current) => stale.push(format!(
                "{}: the block {:?} is stale.\n--- in the file:\n{current}\n--- rendered from the catalogue:\n{}",
                block.file, block.name, block.body
            )),
            Err(e) => stale.push(format!("{}: block {:?}: {e}", block.file, block.name)),
        }
    }
    if bless {
        for (file, text) in &files {
            std::fs::write(root().join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\n\nRun `KULISSE_MAP_BLESS=1 cargo test -p kulisse-tests --test map` to rewrite the blocks \
         from traces/src/catalogue.rs.",
        stale.join("\n\n")
    );
}

#[test]
fn every_path_the_catalogue_names_exists() {
    let mut missing = Vec::new();
    let mut check = |path: &str, whose: String| {
        let full = root().join(path);
        let ok = if path.ends_with('/') {
            full.is_dir()
        } else {
            full.is_file()
        };
        if !ok {
            missing.push(format!("{path} ({whose})"));
        }
    };
    for span in SPANS {
        for module in span.modules {
            check(module, format!("span {}", span.name));
        }
    }
    for station in STATIONS {
        for module in station.modules {
            check(module.path, format!("station {}", station.number));
        }
    }
    for file in map::COMPONENT_DOCS {
        check(file, "map::COMPONENT_DOCS".into());
    }
    assert!(
        missing.is_empty(),
        "traces/src/catalogue.rs names paths that do not exist (moved? fix the catalogue, then \
         `KULISSE_MAP_BLESS=1 cargo test -p kulisse-tests --test map`):\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_chapters_are_summarys_numbered_chapters() {
    let summary = read("book/src/SUMMARY.md");
    let numbered: Vec<(String, String)> = summary
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ["))
        .filter_map(|l| {
            let (title, rest) = l.split_once("](")?;
            Some((title.to_string(), rest.strip_suffix(')')?.to_string()))
        })
        .collect();
    let catalogue: Vec<(String, String)> = CHAPTERS
        .iter()
        .map(|c| (c.title.to_string(), c.file.to_string()))
        .collect();
    assert_eq!(
        catalogue, numbered,
        "catalogue::CHAPTERS and SUMMARY.md's numbered chapters differ"
    );
    let in_summary: BTreeSet<String> = book::summary_chapters().into_iter().collect();
    let named = SPANS
        .iter()
        .map(|s| s.chapter)
        .chain(STATIONS.iter().map(|s| s.chapter))
        .chain(["glossary.md"]);
    for chapter in named {
        assert!(in_summary.contains(chapter), "{chapter} is not in SUMMARY.md");
    }
}

#[test]
fn each_road_chapter_ends_with_reading_the_code() {
    for station in STATIONS {
        let file = format!("book/src/{}", station.chapter);
        let text = read(&file);
        let heading = text
            .find("\n## Reading the code\n")
            .unwrap_or_else(|| panic!("{file} has no section \"## Reading the code\""));
        let block = text
            .find(&map::begin_marker("reading"))
            .unwrap_or_else(|| panic!("{file} has no generated reading list"));
        assert!(
            heading < block,
            "{file}: the reading list belongs under \"## Reading the code\""
        );
        assert!(
            !text[heading + 1..].contains("\n## "),
            "{file}: \"## Reading the code\" should be the chapter's last section"
        );
    }
}

#[test]
fn component_docs_open_with_their_station() {
    let mut wrong = Vec::new();
    for file in map::COMPONENT_DOCS {
        let want = format!(
            "//! {}",
            map::doc_line(file).unwrap_or_else(|| panic!("{file} is on no station"))
        );
        let text = read(file);
        let first = text.lines().next().unwrap_or_default();
        if first != want {
            wrong.push(format!("{file}:\n  has:  {first}\n  want: {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "component docs should open with their place on the map:\n{}",
        wrong.join("\n")
    );
}

/// What the sources emit: for each span name, the files and the attribute keys of each site;
/// and every attribute key set or recorded anywhere.
#[derive(Debug, Default)]
struct Emitted {
    /// span name → file → the keys of each site in that file
    spans: BTreeMap<String, BTreeMap<String, Vec<BTreeSet<String>>>>,
    /// attribute key → files
    keys: BTreeMap<String, BTreeSet<String>>,
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn emitted() -> Emitted {
    let mut out = Emitted::default();
    for dir in SOURCE_DIRS {
        let mut files = Vec::new();
        source_files(&root().join(dir), &mut files);
        for path in files {
            let rel = path
                .strip_prefix(root())
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
            scan(&rel, &code_of(&text), &mut out);
        }
    }
    out
}

/// The code of a source file: comment lines blanked, the `#[cfg(test)] mod tests` cut off.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line == "#[cfg(test)]" && lines.peek().is_some_and(|next| next.starts_with("mod ")) {
            break;
        }
        if !line.trim_start().starts_with("//") {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `text[open..]` starts with an opening bracket; the index just past its closing one.
/// String literals are skipped.
fn closing(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (o, c) = match bytes[open] {
        b'(' => (b'(', b')'),
        b'{' => (b'{', b'}'),
        _ => return None,
    };
    let mut depth = 0;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b if b == o => depth += 1,
            b if b == c => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The top-level comma-separated parts of a macro's arguments.
fn arguments(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0;
    let mut in_string = false;
    let mut escaped = false;
    for ch in body.chars() {
        if in_string {
            escaped = !escaped && ch == '\\';
            if ch == '"' && !escaped {
                in_string = false;
            }
        } else {
            match ch {
                '"' => in_string = true,
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
        }
        parts.last_mut().expect("never empty").push(ch);
    }
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A string literal argument (`"x"`), without its quotes. A macro's own tokens may precede
/// it (`$($parent)* "controller.node_status"`).
fn literal(arg: &str) -> Option<&str> {
    let (before, text) = arg.strip_suffix('"')?.rsplit_once('"')?;
    (before.is_empty() || before.starts_with('$')).then_some(text)
}

/// The span name and attribute keys of one span macro's arguments.
fn span_call(body: &str) -> (Option<String>, BTreeSet<String>) {
    let mut name = None;
    let mut keys = BTreeSet::new();
    let mut seen_literal = false;
    for arg in arguments(body) {
        if let Some((left, right)) = arg.split_once('=')
            && !right.starts_with(['=', '>'])
            && !left.contains(['(', ':'])
        {
            let key = left.trim();
            keys.insert(literal(key).unwrap_or(key).to_string());
        } else if let Some(text) = literal(&arg)
            && !seen_literal
        {
            seen_literal = true;
            if span_like(text) {
                name = Some(text.to_string());
            }
        }
    }
    (name, keys)
}

fn span_like(text: &str) -> bool {
    text.split_once('.').is_some_and(|(stage, step)| {
        catalogue::is_stage(stage) && !step.is_empty() && step.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The identifier that ends just before `end` in `text`.
fn ident_before(text: &str, end: usize) -> &str {
    let start = text[..end]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    &text[start..end]
}

/// Every span macro call in `code`: (macro name, argument text).
fn span_calls(code: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("span!") {
        let name = ident_before(code, at + "span".len());
        let Some(open) = code[at + 5..].find(|c: char| !c.is_whitespace()).map(|i| at + 5 + i) else {
            continue;
        };
        if code.as_bytes()[open] != b'(' {
            continue; // `macro_rules! x_span {` or a mention
        }
        if let Some(close) = closing(code, open) {
            out.push((name, &code[open + 1..close - 1]));
        }
    }
    out
}

fn scan(file: &str, code: &str, out: &mut Emitted) {
    // This file's own span macros (`macro_rules! runtime_span`): the keys they add.
    let mut templates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (at, _) in code.match_indices("macro_rules!") {
        let rest = &code[at + "macro_rules!".len()..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find('{').map(|i| at + "macro_rules!".len() + i) else {
            continue;
        };
        let Some(close) = closing(code, open) else { continue };
        let keys = templates.entry(name).or_default();
        for (_, args) in span_calls(&code[open..close]) {
            keys.extend(span_call(args).1);
        }
    }
    for (mac, args) in span_calls(code) {
        let (name, mut keys) = span_call(args);
        if let Some(extra) = templates.get(mac) {
            keys.extend(extra.iter().cloned());
        }
        for key in &keys {
            out.keys.entry(key.clone()).or_default().insert(file.to_string());
        }
        if let Some(name) = name {
            out.spans
                .entry(name)
                .or_default()
                .entry(file.to_string())
                .or_default()
                .push(keys);
        }
    }
    for (at, _) in code.match_indices(".record(") {
        let rest = code[at + ".record(".len()..].trim_start();
        if let Some(key) = rest.strip_prefix('"').and_then(|r| r.split_once('"')).map(|(k, _)| k) {
            out.keys.entry(key.to_string()).or_default().insert(file.to_string());
        }
    }
}

#[test]
fn the_code_emits_exactly_the_catalogued_spans_from_the_catalogued_files() {
    let emitted = emitted();
    let mut problems = Vec::new();
    for (name, files) in &emitted.spans {
        let Some(info) = catalogue::span_info(name) else {
            problems.push(format!(
                "{name} is emitted in {:?} but is not in the catalogue",
                files.keys()
            ));
            continue;
        };
        let found: BTreeSet<&str> = files.keys().map(String::as_str).collect();
        let listed: BTreeSet<&str> = info.modules.iter().copied().collect();
        if found != listed {
            problems.push(format!(
                "{name}: the catalogue says it is emitted in {listed:?}, the code emits it in {found:?}"
            ));
        }
    }
    for info in SPANS {
        if !emitted.spans.contains_key(info.name) {
            problems.push(format!("{} is in the catalogue, but no code emits it", info.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        emitted.spans.len() > 30,
        "the scan found only {} span names",
        emitted.spans.len()
    );
}

#[test]
fn each_span_carries_exactly_the_catalogued_attributes() {
    let emitted = emitted();
    let mut problems = Vec::new();
    for info in SPANS {
        let Some(files) = emitted.spans.get(info.name) else {
            continue;
        };
        let mut found = BTreeSet::new();
        for (file, sites) in files {
            for keys in sites {
                if !keys.contains(STAGE_KEY) {
                    problems.push(format!("{file}: a {} span without {STAGE_KEY}", info.name));
                }
                found.extend(keys.iter().filter(|k| *k != STAGE_KEY).cloned());
            }
        }
        let listed: BTreeSet<String> = info.attributes.iter().map(|s| s.to_string()).collect();
        if found != listed {
            problems.push(format!(
                "{}: the code sets {:?}, the catalogue lists {:?}",
                info.name,
                found.difference(&listed).collect::<Vec<_>>(),
                listed.difference(&found).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "fix SpanInfo::attributes in traces/src/catalogue.rs (left: set by the code, not listed; \
         right: listed, not set):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_attribute_in_the_code_is_explained() {
    let emitted = emitted();
    let unexplained: Vec<String> = emitted
        .keys
        .iter()
        .filter(|(key, _)| catalogue::attribute(key).is_none())
        .map(|(key, files)| format!("{key} (set in {files:?})"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "add these to catalogue::ATTRIBUTES:\n{}",
        unexplained.join("\n")
    );
    for attr in ATTRIBUTES {
        assert!(
            emitted.keys.contains_key(attr.key),
            "no code sets {}; drop it from ATTRIBUTES",
            attr.key
        );
    }
}

#[test]
fn the_scanner_reads_span_macros() {
    let code = code_of(
        r#"
macro_rules! pod_span {
    ($name:literal) => {
        info_span!($name, "kulisse.stage" = "kubelet", "k8s.name" = Empty)
    };
}
fn f() {
    // info_span!("kubelet.commented_out", "x.y" = 1)
    let a = pod_span!("kubelet.sync_pod");
    let b = caused_span!(tp.as_deref(), "scheduler.bind", "kulisse.stage" = "scheduler", "scheduler.node" = %n, "note" = "a, (b)");
    let c = info_span!(parent: &a, "controller.reconcile", kulisse.stage = "controller");
    let d = info_span!("not a span name", "k8s.kind" = "Pod");
    b.record("scheduler.score", 3);
}
#[cfg(test)]
mod tests {
    fn g() { info_span!("proxy.only_in_tests"); }
}
"#,
    );
    let mut out = Emitted::default();
    scan("x.rs", &code, &mut out);
    let names: Vec<&str> = out.spans.keys().map(String::as_str).collect();
    assert_eq!(names, ["controller.reconcile", "kubelet.sync_pod", "scheduler.bind"]);
    let keys = |name: &str| out.spans[name]["x.rs"][0].iter().cloned().collect::<Vec<_>>();
    assert_eq!(keys("kubelet.sync_pod"), ["k8s.name", "kulisse.stage"]);
    assert_eq!(keys("scheduler.bind"), ["kulisse.stage", "note", "scheduler.node"]);
    assert_eq!(keys("controller.reconcile"), ["kulisse.stage"]);
    let all: Vec<&str> = out.keys.keys().map(String::as_str).collect();
    assert_eq!(
        all,
        [
            "k8s.kind",
            "k8s.name",
            "kulisse.stage",
            "note",
            "scheduler.node",
            "scheduler.score"
        ]
    );
}
