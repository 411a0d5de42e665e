//! # Manifests: from a YAML or JSON file to API objects
//!
//! `kubectl apply -f app.yaml` starts by *decoding* the file into objects, before any request
//! is sent. A manifest file is either
//! - **YAML**, possibly several *documents* separated by lines of `---` (empty documents
//!   are skipped), or
//! - **JSON**: one object, or several objects one after another.
//!
//! Either way, an object of `kind: List` (or any `...List` kind with `items`) stands for
//! its items. Each object must be a mapping with `apiVersion` and `kind`; whether that kind
//! exists is for the API server (here the caller, via the registry) to say.
//!
//! Kubernetes reads YAML by converting it to JSON first (`sigs.k8s.io/yaml`), so objects are
//! JSON values here too. Like that converter we follow YAML 1.1 habits where manifests rely
//! on them: `0644` is an octal number (420), `yes`/`on` are booleans.
//!
//! ## Hostile input
//! A manifest can come from anywhere, and the API server parses request bodies with the
//! same code. So parsing has hard limits, enforced *while* parsing (serde-saphyr's
//! `Budget` and alias limits), never after the damage is done:
//! - at most [`MAX_MANIFEST_BYTES`] (3 MiB, the API server's request body limit);
//! - nesting depth at most [`MAX_DEPTH`] (a file of 100 000 `[` is refused, without
//!   recursing 100 000 times and overflowing the stack);
//! - YAML aliases may not expand to more than [`MAX_ALIAS_REPLAY_EVENTS`] nodes (the
//!   "billion laughs" attack: nine nested anchors of ten aliases each would expand to 10⁹
//!   strings);
//! - invalid UTF-8 and NUL bytes (binary files) are refused up front.
//!
//! Every error names the file, the document, the line and column, and shows the line with a
//! caret under the spot — the things a learner needs to fix the file.

use std::fmt;

use serde_json::Value;

use super::status::ApiError;

/// The largest manifest or request body accepted: 3 MiB, as kube-apiserver's limit on
/// request bodies.
pub const MAX_MANIFEST_BYTES: usize = 3 * 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 100;
/// The most nodes YAML aliases may expand to in one document.
pub const MAX_ALIAS_REPLAY_EVENTS: usize = 100_000;
/// The most YAML documents in one file.
pub const MAX_DOCUMENTS: usize = 10_000;

/// One object read from a manifest file, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The object, exactly as written (unknown fields kept).
    pub object: Value,
    /// The file path, or `-` for standard input.
    pub source: String,
    /// Which document of the file (1-based). Items of a `List` share their document's number.
    pub document: usize,
    /// The line (1-based) where the document's content starts.
    pub line: usize,
}

/// What went wrong while reading a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestErrorKind {
    /// Not valid YAML or JSON (includes tab indentation).
    Syntax,
    /// Not UTF-8 text, or binary content.
    NotText,
    /// A document that is not a mapping (`- a`, `42`).
    NotAnObject,
    /// An object without `apiVersion` or `kind`, or with non-string ones.
    MissingField,
    /// No objects at all (empty file, only comments).
    Empty,
    /// Larger than [`MAX_MANIFEST_BYTES`].
    TooLarge,
    /// A parsing limit was hit (nesting depth, alias expansion, node count).
    Limit,
}

/// An error in a manifest file, with its location. `Display` prints
/// `app.yaml: document 2, line 14, column 5: <problem>` followed by the line and a caret
/// (callers print `error: ` in front, as kubectl does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file path, or `-` for standard input.
    pub source: String,
    /// What kind of problem.
    pub kind: ManifestErrorKind,
    /// Which document (1-based), when known.
    pub document: Option<usize>,
    /// Line (1-based), when known.
    pub line: Option<usize>,
    /// Column (1-based), when known.
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
    /// The offending line(s) with a caret under the column, ready to print.
    pub snippet: Option<String>,
}

fn display_source(source: &str) -> &str {
    if source == "-" { "<stdin>" } else { source }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = display_source(&self.source);
        if self.kind == ManifestErrorKind::Empty {
            return write!(f, "no objects found in {src}: {}", self.message);
        }
        write!(f, "{src}: ")?;
        match (self.document, self.line, self.column) {
            (Some(d), Some(l), Some(c)) => write!(f, "document {d}, line {l}, column {c}: ")?,
            (Some(d), Some(l), None) => write!(f, "document {d} (line {l}): ")?,
            (Some(d), None, _) => write!(f, "document {d}: ")?,
            (None, Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (None, Some(l), None) => write!(f, "line {l}: ")?,
            (None, None, _) => {}
        }
        f.write_str(&self.message)?;
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

// ---------------------------------------------------------------------------------------
// Snippets
// ---------------------------------------------------------------------------------------

/// Make a line printable: control characters (other than tab) become `\u{..}` escapes,
/// and very long lines are cut around the column.
fn printable(line: &str) -> String {
    let mut out = String::new();
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The error line (and the one before, for context) with a caret under `column`.
fn snippet(text: &str, line: usize, column: usize) -> Option<String> {
    const MAX_LINE_CHARS: usize = 160;
    let lines: Vec<&str> = text.split('\n').collect();
    let target = lines.get(line.checked_sub(1)?)?;
    let target = target.strip_suffix('\r').unwrap_or(target);
    let width = line.to_string().len();
    let mut out = String::new();
    if line >= 2
        && let Some(prev) = lines.get(line - 2)
    {
        let prev = prev.strip_suffix('\r').unwrap_or(prev);
        if !prev.trim().is_empty() {
            let shown: String = printable(prev).chars().take(MAX_LINE_CHARS).collect();
            out.push_str(&format!("  {:>width$} | {}\n", line - 1, shown));
        }
    }
    // Cut long lines so that the column stays visible.
    let chars: Vec<char> = target.chars().collect();
    let col0 = column.saturating_sub(1).min(chars.len());
    let start = col0.saturating_sub(MAX_LINE_CHARS / 2);
    let end = (start + MAX_LINE_CHARS).min(chars.len());
    let visible: String = chars[start..end].iter().collect();
    let prefix = if start > 0 { "..." } else { "" };
    out.push_str(&format!("  {line:>width$} | {prefix}{}\n", printable(&visible)));
    // Copy tabs so that the caret lines up in a terminal.
    let mut pad: String = prefix.chars().map(|_| ' ').collect();
    for c in &chars[start..col0] {
        if *c == '\t' {
            pad.push('\t');
        } else if c.is_control() {
            pad.extend(c.escape_default().map(|_| ' '));
        } else {
            pad.push(' ');
        }
    }
    out.push_str(&format!("  {:>width$} | {pad}^", ""));
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Splitting a YAML stream into documents
// ---------------------------------------------------------------------------------------

/// One YAML document of a stream: its text and the line (1-based) where that text starts.
struct Chunk<'a> {
    text: &'a str,
    first_line: usize,
}

fn is_marker(line: &str, marker: &str) -> bool {
    let line = line.trim_end_matches(['\n', '\r']);
    match line.strip_prefix(marker) {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t']),
        None => false,
    }
}

/// Lines that hold nothing: blank, comments, directives (`%YAML 1.2`).
fn is_filler(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || line.starts_with('%')
}

/// Split at document markers. In YAML a line starting with `---` or `...` at column 1 is
/// always a document boundary (it may not appear inside a document, not even in a block
/// scalar), so this split is exact.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize; // byte offset of the current chunk
    let mut start_line = 1usize;
    let mut has_content = false;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let next = offset + line.len();
        if is_marker(line, "---") {
            if has_content {
                chunks.push(Chunk {
                    text: &text[start..offset],
                    first_line: start_line,
                });
                start = offset;
                start_line = line_no;
            }
            // The marker line itself may carry content (`--- {a: 1}`); it belongs to the
            // new document either way.
            has_content = true;
        } else if is_marker(line, "...") {
            chunks.push(Chunk {
                text: &text[start..next],
                first_line: start_line,
            });
            start = next;
            start_line = line_no + 1;
            has_content = false;
        } else if !is_filler(line) {
            has_content = true;
        }
        offset = next;
    }
    if start < text.len() || chunks.is_empty() {
        chunks.push(Chunk {
            text: &text[start..],
            first_line: start_line,
        });
    }
    chunks
}

/// The first line of the chunk with content other than the bare `---` marker.
fn content_line(chunk: &Chunk<'_>) -> usize {
    for (i, line) in chunk.text.lines().enumerate() {
        let bare_marker = is_marker(line, "---") && line.trim_end() == "---";
        if !is_filler(line) && !bare_marker {
            return chunk.first_line + i;
        }
    }
    chunk.first_line
}

// ---------------------------------------------------------------------------------------
// YAML parsing with budgets
// ---------------------------------------------------------------------------------------

fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_nodes = 2_000_000;
    budget.max_events = 4_000_000;
    budget.max_reader_input_bytes = Some(MAX_MANIFEST_BYTES);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY_EVENTS;
    options.with_snippet = false;
    // `mode: 0644` means 420, as in Kubernetes' YAML reader.
    options.legacy_octal_numbers = true;
    options
}

/// A located parse problem, before the file name and document number are attached.
struct Located {
    kind: ManifestErrorKind,
    line: Option<usize>,
    column: Option<usize>,
    message: String,
}

/// The problem behind a serde-saphyr error, in words for a learner.
fn describe_yaml_error(err: &serde_saphyr::Error) -> (ManifestErrorKind, String) {
    use serde_saphyr::budget::BudgetBreach;
    use serde_saphyr::{Error, MessageFormatter, UserMessageFormatter};
    let mut inner = err.without_snippet();
    while let Error::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    match inner {
        Error::Budget { breach, .. } => {
            let msg = match breach {
                BudgetBreach::Depth { .. } => format!(
                    "nesting is too deep: mappings and lists may be nested at most {MAX_DEPTH} levels"
                ),
                BudgetBreach::Aliases { .. }
                | BudgetBreach::AliasAnchorRatio { .. }
                | BudgetBreach::RecordedAnchorEvents { .. }
                | BudgetBreach::RecordedAnchorBytes { .. } => {
                    "too many YAML aliases (*name): this looks like an alias bomb (\"billion laughs\"), refusing to expand it".to_string()
                }
                BudgetBreach::Documents { .. } => {
                    format!("too many YAML documents (at most {MAX_DOCUMENTS})")
                }
                other => format!("the document is too large or too complex ({other:?})"),
            };
            (ManifestErrorKind::Limit, msg)
        }
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasExpansionLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => (
            ManifestErrorKind::Limit,
            format!(
                "YAML aliases (*name) expand to more than {MAX_ALIAS_REPLAY_EVENTS} nodes: this looks like an alias bomb (\"billion laughs\"), refusing to expand it"
            ),
        ),
        other => {
            let text = UserMessageFormatter.format_message(other).into_owned();
            let kind = if text.contains("recursion limit") || text.contains("nesting") {
                ManifestErrorKind::Limit
            } else {
                ManifestErrorKind::Syntax
            };
            let text = if text.contains("recursion limit") {
                format!("nesting is too deep: mappings and lists may be nested at most {MAX_DEPTH} levels ({text})")
            } else {
                text
            };
            (kind, text)
        }
    }
}

fn parse_yaml_chunk(chunk: &Chunk<'_>) -> Result<Value, Located> {
    serde_saphyr::from_str_with_options::<Value>(chunk.text, yaml_options()).map_err(|err| {
        let (kind, mut message) = describe_yaml_error(&err);
        let loc = err.location().filter(|l| l.line() > 0);
        let line = loc.map(|l| chunk.first_line + l.line() as usize - 1);
        let column = loc.map(|l| l.column().max(1) as usize);
        // The most common beginner mistake gets a direct hint.
        if let Some(l) = line {
            let src_line = chunk.text.lines().nth(l - chunk.first_line).unwrap_or_default();
            let indent: String = src_line.chars().take_while(|c| c.is_whitespace()).collect();
            if indent.contains('\t') || message.contains("tab") {
                message.push_str(" (YAML does not allow tabs for indentation; indent with spaces)");
            }
        }
        Located {
            kind,
            line,
            column,
            message,
        }
    })
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn describe_json_error(err: &serde_json::Error) -> Located {
    let msg = err.to_string();
    // serde_json appends " at line L column C"; keep only the words.
    let words = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    let (kind, words) = if words.contains("recursion limit") {
        (
            ManifestErrorKind::Limit,
            "nesting is too deep: JSON objects and arrays may be nested at most 128 levels".to_string(),
        )
    } else {
        (ManifestErrorKind::Syntax, format!("invalid JSON: {words}"))
    };
    Located {
        kind,
        line: (err.line() > 0).then_some(err.line()),
        column: (err.line() > 0).then_some(err.column().max(1)),
        message: words,
    }
}

/// A stream of JSON values (kubectl accepts several objects one after another).
fn parse_json_stream(text: &str) -> Result<Vec<(Value, usize)>, Located> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let before = stream.byte_offset();
        match stream.next() {
            None => break,
            Some(Ok(v)) => {
                let skipped = text[before..].len() - text[before..].trim_start().len();
                out.push((v, line_of_offset(text, before + skipped)));
            }
            Some(Err(e)) => return Err(describe_json_error(&e)),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------

fn type_word(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Check that `v` looks like an API object: a mapping with string `apiVersion` and `kind`.
fn check_object(v: &Value, what: &str) -> Result<(), (ManifestErrorKind, String)> {
    let Some(map) = v.as_object() else {
        return Err((
            ManifestErrorKind::NotAnObject,
            format!(
                "{what} is {}, but a Kubernetes object must be a mapping with apiVersion, kind and metadata (for example \"apiVersion: v1\" / \"kind: Pod\")",
                type_word(v)
            ),
        ));
    };
    for field in ["apiVersion", "kind"] {
        match map.get(field) {
            None | Some(Value::Null) => {
                let example = if field == "kind" {
                    "\"kind: Deployment\""
                } else {
                    "\"apiVersion: apps/v1\""
                };
                return Err((
                    ManifestErrorKind::MissingField,
                    format!(
                        "{what} has no \"{field}\" field; every Kubernetes object needs apiVersion and kind (for example {example})"
                    ),
                ));
            }
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(other) => {
                return Err((
                    ManifestErrorKind::MissingField,
                    format!(
                        "{what} has a \"{field}\" that is {}, expected a non-empty string",
                        type_word(other)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Is this object a list to expand (`kind: List`, or any `...List` with an `items` array)?
fn is_list(v: &Value) -> bool {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    kind == "List" || (kind.ends_with("List") && v.get("items").is_some_and(Value::is_array))
}

fn is_text_ok(source: &str, text: &[u8]) -> Result<(), ManifestError> {
    let base = |kind, line, column, message: String, snippet| ManifestError {
        source: source.to_string(),
        kind,
        document: None,
        line,
        column,
        message,
        snippet,
    };
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(base(
            ManifestErrorKind::TooLarge,
            None,
            None,
            format!(
                "the file is {} bytes; the limit is {} bytes (3 MiB, the API server's request size limit)",
                text.len(),
                MAX_MANIFEST_BYTES
            ),
            None,
        ));
    }
    if let Err(e) = std::str::from_utf8(text) {
        let valid = &text[..e.valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&valid[line_start..]).chars().count() + 1;
        let byte = text.get(e.valid_up_to()).copied().unwrap_or(0);
        return Err(base(
            ManifestErrorKind::NotText,
            Some(line),
            Some(column),
            format!(
                "the file is not UTF-8 text (byte 0x{byte:02x}); is it a binary file? Manifests must be YAML or JSON in UTF-8"
            ),
            None,
        ));
    }
    if let Some(pos) = text.iter().position(|&b| b == 0) {
        let line = line_of_offset(&String::from_utf8_lossy(text), pos);
        return Err(base(
            ManifestErrorKind::NotText,
            Some(line),
            None,
            "the file contains NUL bytes; is it a binary file? Manifests must be YAML or JSON text".to_string(),
            None,
        ));
    }
    Ok(())
}

/// A document's value plus where it is, before List expansion.
struct Doc {
    value: Value,
    document: usize,
    line: usize,
}

fn parse_documents(source: &str, text: &str) -> Result<Vec<Doc>, ManifestError> {
    let err_at = |kind, document: Option<usize>, line: Option<usize>, column: Option<usize>, message: String| {
        let snip = match (line, column) {
            (Some(l), Some(c)) => snippet(text, l, c),
            _ => None,
        };
        ManifestError {
            source: source.to_string(),
            kind,
            document,
            line,
            column,
            message,
            snippet: snip,
        }
    };

    // JSON when the first thing is '{' (as kubectl decides); fall back to YAML for flow-style
    // YAML such as `{apiVersion: v1, kind: Pod}`.
    if text.trim_start().starts_with('{') {
        match parse_json_stream(text) {
            Ok(values) => {
                return Ok(values
                    .into_iter()
                    .enumerate()
                    .map(|(i, (value, line))| Doc {
                        value,
                        document: i + 1,
                        line,
                    })
                    .collect());
            }
            Err(json_err) => {
                let chunks = split_documents(text);
                if let Ok(docs) = parse_yaml_chunks(&chunks) {
                    return Ok(docs);
                }
                // Not YAML either: report the JSON error (the author probably meant JSON).
                return Err(err_at(
                    json_err.kind,
                    None,
                    json_err.line,
                    json_err.column,
                    json_err.message,
                ));
            }
        }
    }
    let chunks = split_documents(text);
    if chunks.len() > MAX_DOCUMENTS {
        return Err(err_at(
            ManifestErrorKind::Limit,
            None,
            None,
            None,
            format!("too many YAML documents (at most {MAX_DOCUMENTS})"),
        ));
    }
    parse_yaml_chunks(&chunks)
        .map_err(|(doc, located)| err_at(located.kind, Some(doc), located.line, located.column, located.message))
}

fn parse_yaml_chunks(chunks: &[Chunk<'_>]) -> Result<Vec<Doc>, (usize, Located)> {
    let mut docs = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let value = parse_yaml_chunk(chunk).map_err(|l| (i + 1, l))?;
        docs.push(Doc {
            value,
            document: i + 1,
            line: content_line(chunk),
        });
    }
    Ok(docs)
}

/// Parse a manifest file (`source` is its path, or `-` for stdin) into objects, in order.
///
/// Accepts multi-document YAML (empty documents skipped) and JSON (one or several objects);
/// `List` objects are expanded into their items. All or nothing: on any error nothing is
/// returned. Unknown kinds are *not* an error here; the caller asks the registry.
pub fn parse_manifests(source: &str, text: &[u8]) -> Result<Vec<Manifest>, ManifestError> {
    is_text_ok(source, text)?;
    let text = std::str::from_utf8(text).unwrap_or_default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let docs = parse_documents(source, text)?;
    let mut out = Vec::new();
    for doc in docs {
        if doc.value.is_null() {
            continue; // empty document, or only comments
        }
        let fail = |(kind, message): (ManifestErrorKind, String)| ManifestError {
            source: source.to_string(),
            kind,
            document: Some(doc.document),
            line: Some(doc.line),
            column: None,
            message,
            snippet: None,
        };
        check_object(&doc.value, "the object").map_err(fail)?;
        if is_list(&doc.value) {
            let items = match doc.value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(other) => {
                    return Err(fail((
                        ManifestErrorKind::NotAnObject,
                        format!(
                            "the List's \"items\" is {}, expected a list of objects",
                            type_word(other)
                        ),
                    )));
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                check_object(&item, &format!("items[{i}] of the List")).map_err(fail)?;
                out.push(Manifest {
                    object: item,
                    source: source.to_string(),
                    document: doc.document,
                    line: doc.line,
                });
            }
        } else {
            out.push(Manifest {
                object: doc.value,
                source: source.to_string(),
                document: doc.document,
                line: doc.line,
            });
        }
    }
    if out.is_empty() {
        return Err(ManifestError {
            source: source.to_string(),
            kind: ManifestErrorKind::Empty,
            document: None,
            line: None,
            column: None,
            message: "the file is empty or holds only comments; expected at least one object with apiVersion and kind"
                .to_string(),
            snippet: None,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------

/// Media types whose bodies are JSON.
const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
];
/// Media types whose bodies are YAML.
const YAML_TYPES: &[&str] = &["application/yaml", "application/apply-patch+yaml"];

/// Parse an API request body according to its `Content-Type`.
///
/// - `application/json`, `application/merge-patch+json`,
///   `application/strategic-merge-patch+json`: a JSON object;
/// - `application/json-patch+json`: a JSON array of operations;
/// - `application/yaml`, `application/apply-patch+yaml` (server-side apply): one YAML
///   document holding a mapping;
/// - no `Content-Type`: treated as JSON.
///
/// Parameters such as `; charset=utf-8` are ignored. Errors: `413` above
/// [`MAX_MANIFEST_BYTES`], `415` for other media types, `400 BadRequest` naming line and
/// column for malformed bodies, over-deep nesting and alias bombs.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::too_large(MAX_MANIFEST_BYTES));
    }
    let media = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".to_string());
    let is_json = JSON_TYPES.contains(&media.as_str());
    let is_yaml = YAML_TYPES.contains(&media.as_str());
    if !is_json && !is_yaml {
        return Err(ApiError::unsupported_media_type(&media));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let value = if is_json {
        serde_json::from_str::<Value>(text).map_err(|e| {
            let l = describe_json_error(&e);
            let at = match (l.line, l.column) {
                (Some(line), Some(col)) => format!(" at line {line}, column {col}"),
                _ => String::new(),
            };
            ApiError::bad_request(format!("error decoding the request body ({media}){at}: {}", l.message))
        })?
    } else {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let chunks: Vec<Chunk<'_>> = split_documents(text)
            .into_iter()
            .filter(|c| {
                !c.text
                    .lines()
                    .all(|l| is_filler(l) || l.trim() == "---" || l.trim() == "...")
            })
            .collect();
        if chunks.len() > 1 {
            return Err(ApiError::bad_request(format!(
                "the request body ({media}) holds {} YAML documents; send exactly one object (the second starts at line {})",
                chunks.len(),
                chunks[1].first_line
            )));
        }
        match chunks.first() {
            None => Value::Null,
            Some(chunk) => parse_yaml_chunk(chunk).map_err(|l| {
                let at = match (l.line, l.column) {
                    (Some(line), Some(col)) => format!(" at line {line}, column {col}"),
                    _ => String::new(),
                };
                ApiError::bad_request(format!(
                    "error decoding the request body ({media}) as YAML{at}: {}",
                    l.message
                ))
            })?,
        }
    };
    let expect_array = media == "application/json-patch+json";
    let shape_ok = if expect_array {
        value.is_array()
    } else {
        value.is_object()
    };
    if !shape_ok {
        return Err(ApiError::bad_request(format!(
            "the request body ({media}) is {}, expected {}",
            type_word(&value),
            if expect_array {
                "a JSON array of patch operations"
            } else {
                "an object (a mapping with apiVersion, kind and metadata)"
            }
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Vec<Manifest> {
        parse_manifests("app.yaml", text.as_bytes()).expect("should parse")
    }

    fn err(text: &[u8]) -> ManifestError {
        parse_manifests("app.yaml", text).expect_err("should fail")
    }

    #[test]
    fn multi_document_yaml() {
        let text = "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\n# only a comment\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    x: \"yes\"\nspec:\n  replicas: 3\n  custom: {mode: 0644, on: yes}\n";
        let ms = ok(text);
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].object["kind"], "Namespace");
        assert_eq!((ms[0].document, ms[0].line), (1, 3));
        assert_eq!(ms[1].object["kind"], "Deployment");
        assert_eq!((ms[1].document, ms[1].line), (4, 11));
        assert_eq!(ms[1].source, "app.yaml");
        assert_eq!(ms[1].object["spec"]["replicas"], 3);
        assert_eq!(ms[1].object["metadata"]["annotations"]["x"], "yes");
        assert_eq!(ms[1].object["spec"]["custom"]["mode"], 420, "0644 is octal");
        assert_eq!(ms[1].object["spec"]["custom"]["on"], true);
    }

    #[test]
    fn field_order_and_unknown_fields_are_kept() {
        let ms = ok("kind: Pod\napiVersion: v1\nzeta: 1\nalpha: {nested: [1, 2]}\n");
        let keys: Vec<&String> = ms[0].object.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["kind", "apiVersion", "zeta", "alpha"]);
    }

    #[test]
    fn document_end_markers_and_inline_documents() {
        let ms = ok("apiVersion: v1\nkind: A\n...\napiVersion: v1\nkind: B\n--- {apiVersion: v1, kind: C}\n");
        let kinds: Vec<&str> = ms.iter().filter_map(|m| m.object["kind"].as_str()).collect();
        assert_eq!(kinds, ["A", "B", "C"]);
        assert_eq!(ms[2].line, 6);
        assert_eq!(ms[2].document, 3);
    }

    #[test]
    fn json_object_and_stream() {
        let ms = ok("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"p\"}}");
        assert_eq!(ms.len(), 1);
        assert_eq!((ms[0].document, ms[0].line), (1, 1));
        let ms = ok("{\"apiVersion\":\"v1\",\"kind\":\"A\"}\n\n{\"apiVersion\":\"v1\",\"kind\":\"B\"}\n");
        assert_eq!(ms.len(), 2);
        assert_eq!((ms[1].document, ms[1].line), (2, 3));
        // Flow-style YAML that starts with '{' still works.
        let ms = ok("{apiVersion: v1, kind: Pod}");
        assert_eq!(ms[0].object["kind"], "Pod");
    }

    #[test]
    fn lists_expand_to_items() {
        let ms = ok(
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: A}\n- {apiVersion: v1, kind: B}\n---\napiVersion: v1\nkind: C\n",
        );
        let kinds: Vec<&str> = ms.iter().filter_map(|m| m.object["kind"].as_str()).collect();
        assert_eq!(kinds, ["A", "B", "C"]);
        assert_eq!(ms[1].document, 1);
        let ms =
            ok("{\"apiVersion\":\"v1\",\"kind\":\"PodList\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}]}");
        assert_eq!(ms[0].object["kind"], "Pod");
        let e = err(b"apiVersion: v1\nkind: List\nitems:\n- {kind: A}\n");
        assert_eq!(e.kind, ManifestErrorKind::MissingField);
        assert!(e.message.contains("items[0] of the List has no \"apiVersion\""), "{e}");
        let e = err(b"apiVersion: v1\nkind: List\nitems: {}\n");
        assert_eq!(e.kind, ManifestErrorKind::NotAnObject);
    }

    #[test]
    fn syntax_error_names_document_line_column_with_snippet() {
        let text = "apiVersion: v1\nkind: A\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n bad: 1\n";
        let e = err(text.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert_eq!(e.document, Some(2));
        assert_eq!(e.line, Some(8));
        assert!(e.column.is_some());
        let shown = e.to_string();
        assert!(shown.starts_with("app.yaml: document 2, line 8, column "), "{shown}");
        assert!(
            shown.contains("   8 |  bad: 1") || shown.contains("  8 |  bad: 1"),
            "{shown}"
        );
        assert!(shown.contains("^"), "{shown}");
        assert!(shown.contains("  7 |   name: x"), "{shown}");
    }

    #[test]
    fn unclosed_quote_and_bad_flow() {
        let e = err(b"apiVersion: v1\nkind: \"Pod\nmetadata: {}\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert_eq!(e.document, Some(1));
        assert!(e.line.is_some());
        let e = err(b"apiVersion: v1\nkind: Pod\nitems: [1, 2\nother: 3\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = err(b"apiVersion: v1\nkind: Pod\nkind: Service\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn tab_indentation_gets_a_hint() {
        let e = err(b"apiVersion: v1\nkind: Pod\nmetadata:\n\tname: x\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert_eq!(e.line, Some(4));
        let shown = e.to_string();
        assert!(shown.contains("indent with spaces"), "{shown}");
        assert!(shown.contains("\tname: x"), "{shown}");
    }

    #[test]
    fn documents_that_are_not_mappings() {
        let e = err(b"- a\n- b\n");
        assert_eq!(e.kind, ManifestErrorKind::NotAnObject);
        assert_eq!((e.document, e.line), (Some(1), Some(1)));
        assert!(
            e.to_string().starts_with(
                "app.yaml: document 1 (line 1): the object is a list, but a Kubernetes object must be a mapping"
            ),
            "{e}"
        );
        let e = err(b"apiVersion: v1\nkind: A\n---\n42\n");
        assert_eq!(e.kind, ManifestErrorKind::NotAnObject);
        assert_eq!((e.document, e.line), (Some(2), Some(4)));
        assert!(e.message.contains("is a number"), "{e}");
        let e = err(b"\"just a string\"\n");
        assert_eq!(e.kind, ManifestErrorKind::NotAnObject);
        let e = err(b"[1, 2]");
        assert_eq!(e.kind, ManifestErrorKind::NotAnObject);
    }

    #[test]
    fn missing_api_version_or_kind() {
        let e = err(b"apiVersion: v1\nmetadata:\n  name: x\n");
        assert_eq!(e.kind, ManifestErrorKind::MissingField);
        assert_eq!(
            e.to_string(),
            "app.yaml: document 1 (line 1): the object has no \"kind\" field; every Kubernetes object needs apiVersion and kind (for example \"kind: Deployment\")"
        );
        let e = err(b"# c\nkind: Pod\n");
        assert!(
            e.to_string()
                .starts_with("app.yaml: document 1 (line 2): the object has no \"apiVersion\" field"),
            "{e}"
        );
        let e = err(b"apiVersion: v1\nkind: 5\n");
        assert!(e.message.contains("\"kind\" that is a number"), "{e}");
        let e = err(b"apiVersion: v1\nkind: \"\"\n");
        assert_eq!(e.kind, ManifestErrorKind::MissingField);
    }

    #[test]
    fn unknown_kind_is_not_an_error_here() {
        let ms = ok("apiVersion: example.com/v1\nkind: Widget\n");
        assert_eq!(ms[0].object["kind"], "Widget");
    }

    #[test]
    fn all_or_nothing() {
        let e = err(b"apiVersion: v1\nkind: A\n---\napiVersion: v1\n");
        assert_eq!(e.document, Some(2));
    }

    #[test]
    fn binary_garbage_and_invalid_utf8() {
        let e = err(b"apiVersion: v1\nkind: \xff\xfe\n");
        assert_eq!(e.kind, ManifestErrorKind::NotText);
        assert_eq!((e.line, e.column), (Some(2), Some(7)));
        assert!(e.to_string().contains("not UTF-8 text (byte 0xff)"), "{e}");
        let e = err(b"\x7fELF\x02\x01\x01\x00\x00\x00");
        assert_eq!(e.kind, ManifestErrorKind::NotText);
        assert!(e.message.contains("NUL bytes"), "{e}");
        // Control characters that are valid UTF-8 are a YAML syntax error, shown escaped.
        let e = err(b"apiVersion: v1\nkind: \x01\x02\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert!(e.to_string().contains("\\u{1}"), "{e}");
    }

    #[test]
    fn empty_and_comment_only_files() {
        for text in [
            "",
            "\n\n",
            "# just a comment\n# another\n",
            "---\n---\n",
            "---\n# c\n...\n",
        ] {
            let e = err(text.as_bytes());
            assert_eq!(e.kind, ManifestErrorKind::Empty, "{text:?}");
            assert!(e.to_string().starts_with("no objects found in app.yaml"), "{e}");
        }
        let e = parse_manifests("-", b"").expect_err("empty");
        assert!(e.to_string().starts_with("no objects found in <stdin>"), "{e}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        let e = err(text.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Limit);
        assert!(e.message.contains("alias bomb"), "{e}");
        assert_eq!(e.document, Some(1));
        // Modest alias use is fine.
        let ms = ok("apiVersion: v1\nkind: ConfigMap\nbase: &b {x: 1}\ncopy: *b\n");
        assert_eq!(ms[0].object["copy"], json!({"x": 1}));
    }

    #[test]
    fn deep_nesting_is_refused_without_stack_overflow() {
        let deep_flow = "[".repeat(100_000);
        let e = err(deep_flow.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Limit, "{e}");
        assert!(e.message.contains("nesting is too deep"), "{e}");

        // Block style: `- - - - ... x` opens 100 000 nested sequences on one line.
        let deep_block = format!("apiVersion: v1\nkind: Pod\nx: \n  {}x\n", "- ".repeat(100_000));
        let e = err(deep_block.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Limit, "{e}");
        assert_eq!(e.line, Some(4), "{e}");

        let mut nested_maps = String::new();
        for i in 0..200usize {
            nested_maps.push_str(&" ".repeat(i));
            nested_maps.push_str("a:\n");
        }
        let e = err(nested_maps.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Limit, "{e}");

        let deep_json = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"x\":{}}}",
            "[".repeat(100_000)
        );
        let e = err(deep_json.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::Limit, "{e}");
    }

    #[test]
    fn huge_files_are_refused() {
        let mut text = String::from("apiVersion: v1\nkind: ConfigMap\ndata:\n  big: \"");
        text.push_str(&"x".repeat(MAX_MANIFEST_BYTES));
        text.push_str("\"\n");
        let e = err(text.as_bytes());
        assert_eq!(e.kind, ManifestErrorKind::TooLarge);
        assert!(e.to_string().contains("limit is 3145728 bytes"), "{e}");
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let e = err(b"{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"Pod\"\n  \"metadata\": {}\n}\n");
        assert_eq!(e.kind, ManifestErrorKind::Syntax);
        assert_eq!(e.line, Some(4));
        let shown = e.to_string();
        assert!(
            shown.starts_with("app.yaml: line 4, column 3: invalid JSON: expected `,` or `}`"),
            "{shown}"
        );
        assert!(shown.contains('^'), "{shown}");
    }

    #[test]
    fn crlf_line_endings() {
        let ms = ok("apiVersion: v1\r\nkind: A\r\n---\r\napiVersion: v1\r\nkind: B\r\n");
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[1].line, 4);
    }

    #[test]
    fn body_json_and_yaml() {
        let v = parse_body(Some("application/json"), br#"{"apiVersion":"v1","kind":"Pod"}"#).expect("json");
        assert_eq!(v["kind"], "Pod");
        let v = parse_body(Some("application/json; charset=utf-8"), br#"{"a":1}"#).expect("params");
        assert_eq!(v["a"], 1);
        let v = parse_body(None, br#"{"a":1}"#).expect("no content type");
        assert_eq!(v["a"], 1);
        for ct in ["application/merge-patch+json", "application/strategic-merge-patch+json"] {
            parse_body(Some(ct), br#"{"spec":{"replicas":3}}"#).expect(ct);
        }
        let v =
            parse_body(Some("application/json-patch+json"), br#"[{"op":"remove","path":"/a"}]"#).expect("json patch");
        assert!(v.is_array());
        let e = parse_body(Some("application/json-patch+json"), br#"{"op":"x"}"#).expect_err("not array");
        assert_eq!(e.code, 400);
        let v = parse_body(
            Some("application/yaml"),
            b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n",
        )
        .expect("yaml");
        assert_eq!(v["metadata"]["name"], "p");
        let v = parse_body(
            Some("application/apply-patch+yaml"),
            b"---\napiVersion: v1\nkind: Pod\n",
        )
        .expect("apply yaml");
        assert_eq!(v["kind"], "Pod");
    }

    #[test]
    fn body_errors() {
        let e = parse_body(Some("application/json"), b"{\"a\": 1,\n \"b\": }").expect_err("bad json");
        assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
        assert!(e.message.contains("at line 2, column"), "{}", e.message);
        let e = parse_body(Some("application/yaml"), b"a: 1\n b: 2\n").expect_err("bad yaml");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("at line 2, column 3"), "{}", e.message);
        let e = parse_body(Some("application/yaml"), b"a: 1\n---\nb: 2\n").expect_err("two docs");
        assert!(e.message.contains("2 YAML documents"), "{}", e.message);
        let e = parse_body(Some("application/json"), b"[1]").expect_err("array");
        assert!(e.message.contains("expected an object"), "{}", e.message);
        let e = parse_body(Some("application/yaml"), b"").expect_err("empty yaml");
        assert_eq!(e.code, 400);
        let e = parse_body(Some("application/json"), b"").expect_err("empty json");
        assert_eq!(e.code, 400);
        let e = parse_body(Some("text/plain"), b"{}").expect_err("media type");
        assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
        let e = parse_body(Some("application/vnd.kubernetes.protobuf"), b"{}").expect_err("protobuf");
        assert_eq!(e.code, 415);
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let e = parse_body(Some("application/json"), &big).expect_err("too large");
        assert_eq!((e.code, e.reason.as_str()), (413, "RequestEntityTooLarge"));
        let e = parse_body(Some("application/json"), b"{\"a\": \"\xff\"}").expect_err("utf8");
        assert_eq!(e.code, 400);
    }

    #[test]
    fn body_limits() {
        let deep = format!("{{\"a\":{}}}", "[".repeat(100_000));
        let e = parse_body(Some("application/json"), deep.as_bytes()).expect_err("deep json");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("nesting is too deep"), "{}", e.message);
        let deep = format!("a: {}", "[".repeat(100_000));
        let e = parse_body(Some("application/yaml"), deep.as_bytes()).expect_err("deep yaml");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("nesting is too deep"), "{}", e.message);
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
        let e = parse_body(Some("application/yaml"), bomb.as_bytes()).expect_err("bomb");
        assert_eq!(e.code, 400);
        assert!(e.message.contains("alias bomb"), "{}", e.message);
    }

    #[test]
    fn snippet_marks_the_column() {
        let s = snippet("a: 1\nbb: [x\n", 2, 5).expect("snippet");
        assert_eq!(s, "  1 | a: 1\n  2 | bb: [x\n    |     ^");
        let s = snippet("\tx: 1\n", 1, 2).expect("snippet");
        assert_eq!(s, "  1 | \tx: 1\n    | \t^");
        assert!(snippet("a\n", 5, 1).is_none());
        let long = format!("k: {}", "v".repeat(1000));
        let s = snippet(&long, 1, 900).expect("snippet");
        assert!(s.lines().all(|l| l.chars().count() < 200), "{s}");
    }
}
