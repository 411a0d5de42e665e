//! The map of kulisse, rendered from the catalogue.
//!
//! A learner meets kulisse from four sides: a step of the road an `apply` travels (the
//! "station"), a span name in a trace, a file of the code and a chapter of the book. Each
//! side needs a table that leads to the others, and tables kept by hand drift apart. So they
//! are written once, in [`crate::catalogue`], and rendered here as Markdown:
//!
//! | table | where it appears |
//! |---|---|
//! | [`stations_table`]: station → spans, files, component, chapter | ARCHITECTURE.md |
//! | [`chapters_table`]: chapter → station, component | `book/src/introduction.md` |
//! | [`modules_table`]: file → station, chapter | `book/src/going-further.md` |
//! | [`reading_list`]: the files of one station, in reading order | the end of each road chapter |
//! | [`glossary`]: every stage, span and attribute | `book/src/glossary.md` |
//! | [`doc_line`]: station, chapter and span prefixes of a component | the first `//!` line of its module |
//!
//! In those files a rendered table sits between the markers `<!-- BEGIN generated:NAME -->`
//! and `<!-- END generated:NAME -->`. [`blocks`] lists every such block; `tests/tests/map.rs`
//! checks that each one equals its rendering and, with `KULISSE_MAP_BLESS=1`, rewrites them
//! ([`splice`]). Kubernetes has no such map in one place: its component docs, the API
//! server's span names and the code are documented separately, which is what this module
//! spares a reader of kulisse.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::catalogue::{self, ATTRIBUTES, CHAPTERS, SPANS, STAGE_KEY, STAGE_SERVICES, STATIONS, SpanInfo, Station};

/// The files whose `//!` module doc opens with their [`doc_line`]: one per component.
pub const COMPONENT_DOCS: &[&str] = &[
    "cli/src/commands/apply.rs",
    "core/src/apiserver/mod.rs",
    "core/src/controllers/mod.rs",
    "core/src/scheduler/mod.rs",
    "core/src/kubelet/mod.rs",
    "core/src/proxy/mod.rs",
];

/// One generated block: the file it lives in (relative to the repository root), its name in
/// the markers, and its rendered content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub file: String,
    pub name: &'static str,
    pub body: String,
}

/// Every generated block of the repository.
pub fn blocks() -> Vec<Block> {
    let mut out = vec![
        block("ARCHITECTURE.md", "stations", stations_table()),
        block("book/src/introduction.md", "chapters", chapters_table()),
        block("book/src/going-further.md", "modules", modules_table()),
        block("book/src/glossary.md", "glossary", glossary()),
    ];
    for station in STATIONS {
        out.push(block(
            &format!("book/src/{}", station.chapter),
            "reading",
            reading_list(station),
        ));
    }
    out
}

fn block(file: &str, name: &'static str, body: String) -> Block {
    Block {
        file: file.to_string(),
        name,
        body,
    }
}

/// The marker that opens the block `name`.
pub fn begin_marker(name: &str) -> String {
    format!("<!-- BEGIN generated:{name} -->")
}

/// The marker that closes the block `name`.
pub fn end_marker(name: &str) -> String {
    format!("<!-- END generated:{name} -->")
}

/// The content between the markers of the block `name` in `text`, without the line breaks
/// that end the opening marker's line and start the closing marker's.
pub fn block_in<'a>(text: &'a str, name: &str) -> Result<&'a str, String> {
    let (start, stop) = block_range(text, name)?;
    let inner = &text[start..stop];
    Ok(inner
        .strip_prefix('\n')
        .and_then(|i| i.strip_suffix('\n'))
        .unwrap_or(""))
}

/// `text` with the content of the block `name` replaced by `body` (which has no line break at
/// its end).
pub fn splice(text: &str, name: &str, body: &str) -> Result<String, String> {
    let (start, stop) = block_range(text, name)?;
    let body = if body.is_empty() {
        String::new()
    } else {
        format!("{body}\n")
    };
    Ok(format!("{}\n{body}{}", &text[..start], &text[stop..]))
}

/// Where the text between the two markers of `name` starts and stops.
fn block_range(text: &str, name: &str) -> Result<(usize, usize), String> {
    let (begin, end) = (begin_marker(name), end_marker(name));
    let found = |marker: &str| {
        let mut hits = text.match_indices(marker);
        match (hits.next(), hits.next()) {
            (Some((at, _)), None) => Ok(at),
            (None, _) => Err(format!("no line {marker}")),
            (Some(_), Some(_)) => Err(format!("{marker} appears twice")),
        }
    };
    let start = found(&begin)? + begin.len();
    let stop = found(&end)?;
    if stop < start {
        return Err(format!("{end} comes before {begin}"));
    }
    let inner = &text[start..stop];
    if !inner.starts_with('\n') || !inner.ends_with('\n') {
        return Err(format!("{begin} and {end} must stand on lines of their own"));
    }
    Ok((start, stop))
}

/// `①` for 1, ..., `⑳` for 20.
pub fn circled(number: u8) -> String {
    match number {
        1..=20 => char::from_u32(0x245F + u32::from(number))
            .map(String::from)
            .unwrap_or_default(),
        _ => number.to_string(),
    }
}

/// The spans of a station, in catalogue order.
pub fn spans_of(station: &Station) -> Vec<&'static SpanInfo> {
    SPANS.iter().filter(|s| s.station == station.number).collect()
}

/// The chapter's number in the book (1 for the first numbered chapter) and its title.
fn numbered(file: &str) -> (usize, &'static str) {
    CHAPTERS
        .iter()
        .position(|c| c.file == file)
        .map(|i| (i + 1, CHAPTERS[i].title))
        .unwrap_or((0, "?"))
}

fn code_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let listed: Vec<String> = items.into_iter().map(|s| format!("`{s}`")).collect();
    if listed.is_empty() {
        "—".to_string()
    } else {
        listed.join(", ")
    }
}

/// A table cell: no line breaks, no unescaped `|`.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// ARCHITECTURE.md's table: each station with its spans, files, component and chapter.
pub fn stations_table() -> String {
    let mut out = String::from(
        "| # | station (the seed's step) | span names | files, in reading order | Kubernetes component | chapter |\n\
         |---|---|---|---|---|---|\n",
    );
    for station in STATIONS {
        let (n, title) = numbered(station.chapter);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | [{n}. {title}](book/src/{}) |",
            circled(station.number),
            cell(station.step),
            code_list(spans_of(station).iter().map(|s| s.name)),
            code_list(station.modules.iter().map(|m| m.path)),
            cell(station.component),
            station.chapter
        );
    }
    out
}

/// The introduction's table: each chapter with its station and component.
pub fn chapters_table() -> String {
    let mut out = String::from(
        "| chapter | station | what you will see | Kubernetes component |\n\
         |---------|---------|-------------------|----------------------|\n",
    );
    for (i, chapter) in CHAPTERS.iter().enumerate() {
        let stations: Vec<String> = STATIONS
            .iter()
            .filter(|s| s.chapter == chapter.file)
            .map(|s| circled(s.number))
            .collect();
        let _ = writeln!(
            out,
            "| [{}]({}) | {} | {} | {} |",
            i + 1,
            chapter.file,
            if stations.is_empty() {
                "—".to_string()
            } else {
                stations.join(" ")
            },
            cell(chapter.about),
            cell(chapter.component)
        );
    }
    out
}

/// "Going further"'s table: every file of the road with its station and chapter.
pub fn modules_table() -> String {
    let mut out = String::from("| file | what you find there | station | chapter |\n|---|---|---|---|\n");
    for station in STATIONS {
        let (n, _) = numbered(station.chapter);
        for module in station.modules {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | [{n}]({}) |",
                module.path,
                cell(module.what),
                circled(station.number),
                station.chapter
            );
        }
    }
    out
}

/// The files of one station, in reading order, as a numbered list; a file that emits spans
/// names them.
pub fn reading_list(station: &Station) -> String {
    let mut out = String::new();
    for (i, module) in station.modules.iter().enumerate() {
        let emitted: Vec<&str> = SPANS
            .iter()
            .filter(|s| s.station == station.number && s.modules.contains(&module.path))
            .map(|s| s.name)
            .collect();
        let _ = write!(out, "{}. `{}`: {}", i + 1, module.path, module.what);
        if !emitted.is_empty() {
            let _ = write!(out, " (spans {})", code_list(emitted));
        }
        out.push('\n');
    }
    out
}

/// The glossary appendix: the stages, every span and every attribute.
pub fn glossary() -> String {
    let mut out = String::from(
        "## Stages\n\n\
         Every span carries the attribute `kulisse.stage`: the component that emitted it. The \
         stage also picks the `service.name` the span reports under.\n\n\
         | stage | station | reports as |\n|---|---|---|\n",
    );
    for (stage, service) in STAGE_SERVICES {
        let stations: Vec<String> = STATIONS
            .iter()
            .filter(|s| s.stages.contains(stage))
            .map(|s| circled(s.number))
            .collect();
        let _ = writeln!(out, "| `{stage}` | {} | `{service}` |", stations.join(" "));
    }
    out.push_str(
        "\n## Spans\n\n\
         In the order of the road; each span names the files that emit it and the chapter that \
         explains it.\n\n\
         | span | station | what it measures | emitted in | chapter |\n|---|---|---|---|---|\n",
    );
    let mut spans: Vec<&SpanInfo> = SPANS.iter().collect();
    spans.sort_by_key(|s| s.station);
    for span in spans {
        let (n, _) = numbered(span.chapter);
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | [{n}]({}) |",
            span.name,
            circled(span.station),
            cell(span.what),
            code_list(span.modules.iter().copied()),
            span.chapter
        );
    }
    out.push_str(
        "\n## Attributes\n\n\
         Sorted by key; `otel.*` keys are read by the OpenTelemetry bridge.\n\n\
         | attribute | meaning | carried by |\n|---|---|---|\n",
    );
    for attr in ATTRIBUTES {
        let carried = if attr.key == STAGE_KEY {
            "every span".to_string()
        } else {
            code_list(
                SPANS
                    .iter()
                    .filter(|s| s.attributes.contains(&attr.key))
                    .map(|s| s.name),
            )
        };
        let _ = writeln!(out, "| `{}` | {} | {carried} |", attr.key, cell(attr.meaning));
    }
    out
}

/// The first line of a component's `//!` module doc (without the `//! `): its station(s),
/// chapter(s) and span prefixes. `None` for a file no station names.
///
/// For a `mod.rs`, the component is its whole directory.
pub fn doc_line(path: &str) -> Option<String> {
    let scope = match path.strip_suffix("mod.rs") {
        Some(dir) => dir,
        None => path,
    };
    let inside = |p: &str| p == path || (scope.ends_with('/') && p.starts_with(scope));
    let spans: Vec<&SpanInfo> = SPANS.iter().filter(|s| s.modules.iter().any(|m| inside(m))).collect();
    let numbers: BTreeSet<u8> = STATIONS
        .iter()
        .filter(|s| s.modules.iter().any(|m| inside(m.path)))
        .map(|s| s.number)
        .chain(spans.iter().map(|s| s.station))
        .collect();
    if numbers.is_empty() {
        return None;
    }
    let stations: Vec<&Station> = numbers.iter().filter_map(|n| catalogue::station(*n)).collect();
    let and = |items: Vec<String>| match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => items.join(""),
    };
    let plural = if stations.len() > 1 { "s" } else { "" };
    let numbers = and(stations.iter().map(|s| circled(s.number)).collect());
    let chapters = and(stations
        .iter()
        .map(|s| format!("\"{}\" (book/src/{})", numbered(s.chapter).1, s.chapter))
        .collect());
    let mut prefixes: Vec<&str> = Vec::new();
    for span in &spans {
        if !prefixes.contains(&span.stage) {
            prefixes.push(span.stage);
        }
    }
    let prefixes: Vec<String> = prefixes.iter().map(|p| format!("`{p}.*`")).collect();
    Some(format!(
        "Station{plural} {numbers} · chapter{plural} {chapters} · spans {}",
        prefixes.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_named_block() {
        let text = "a\n<!-- BEGIN generated:x -->\nold\n<!-- END generated:x -->\nb\n";
        assert_eq!(block_in(text, "x"), Ok("old"));
        let new = splice(text, "x", "new\nlines").expect("splice");
        assert_eq!(
            new,
            "a\n<!-- BEGIN generated:x -->\nnew\nlines\n<!-- END generated:x -->\nb\n"
        );
        assert!(block_in(text, "y").is_err());
        assert!(block_in("<!-- END generated:x --><!-- BEGIN generated:x -->", "x").is_err());
        assert!(block_in("<!-- BEGIN generated:x -->x<!-- END generated:x -->", "x").is_err());
        let empty = "<!-- BEGIN generated:x -->\n<!-- END generated:x -->\n";
        assert_eq!(block_in(empty, "x"), Ok(""));
        assert_eq!(
            splice(empty, "x", "row").as_deref(),
            Ok("<!-- BEGIN generated:x -->\nrow\n<!-- END generated:x -->\n")
        );
    }

    #[test]
    fn circled_numbers() {
        assert_eq!(circled(1), "①");
        assert_eq!(circled(4), "④");
        assert_eq!(circled(7), "⑦");
        assert_eq!(circled(30), "30");
    }

    #[test]
    fn doc_lines_name_station_chapter_and_prefixes() {
        assert_eq!(
            doc_line("core/src/scheduler/mod.rs").as_deref(),
            Some("Station ④ · chapter \"The scheduler\" (book/src/scheduler.md) · spans `scheduler.*`")
        );
        let apiserver = doc_line("core/src/apiserver/mod.rs").expect("the API server is on the road");
        assert!(apiserver.starts_with("Stations ① and ② · chapters "), "{apiserver}");
        assert!(apiserver.ends_with("spans `apiserver.*`, `store.*`"), "{apiserver}");
        assert_eq!(doc_line("README.md"), None);
    }

    #[test]
    fn every_table_has_a_row_per_entry() {
        let rows = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| -"))
                .count()
        };
        assert_eq!(rows(&stations_table()), STATIONS.len() + 1);
        assert_eq!(rows(&chapters_table()), CHAPTERS.len() + 1);
        let modules: usize = STATIONS.iter().map(|s| s.modules.len()).sum();
        assert_eq!(rows(&modules_table()), modules + 1);
        let glossary = glossary();
        for span in SPANS {
            assert!(glossary.contains(&format!("| `{}` |", span.name)), "{}", span.name);
        }
        for attr in ATTRIBUTES {
            assert!(glossary.contains(&format!("| `{}` |", attr.key)), "{}", attr.key);
        }
        let names: Vec<&str> = blocks().iter().map(|b| b.name).collect();
        assert_eq!(names.iter().filter(|n| **n == "reading").count(), STATIONS.len());
    }
}
