//! # Output formats (`-o ...`, mirrors kubectl's printer flags)
//!
//! kubectl chooses a *printer* from `-o`: the server's table (default, `wide`), the objects
//! as `json` or `yaml`, their names (`name`), a JSONPath template (`jsonpath=...`,
//! `jsonpath-file=...`), or columns the user defines (`custom-columns=NAME:.metadata.name`,
//! `custom-columns-file=...`). [`Format::parse`] turns the flag into one of those; the
//! template dialect lives in [`crate::jsonpath`].
//!
//! Where kulisse differs: there are no Go templates (`go-template`, `template`), so those
//! formats are refused with kubectl's "unable to match a printer" message.

use anyhow::{anyhow, bail};
use serde_json::Value;

use crate::jsonpath::{self, Template};

/// What `-o` asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
    JsonPath(Template),
    CustomColumns(Vec<(String, Template)>),
}

const ALLOWED: &str = "custom-columns,custom-columns-file,json,jsonpath,jsonpath-file,name,wide,yaml";

impl Format {
    /// Parse `-o`'s value (absent: the table).
    pub fn parse(flag: Option<&str>) -> anyhow::Result<Format> {
        let Some(flag) = flag else {
            return Ok(Format::Table { wide: false });
        };
        let (name, arg) = match flag.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (flag, None),
        };
        match (name, arg) {
            ("wide", None) => Ok(Format::Table { wide: true }),
            ("json", None) => Ok(Format::Json),
            ("yaml", None) => Ok(Format::Yaml),
            ("name", None) => Ok(Format::Name),
            ("jsonpath", None) | ("jsonpath-file", None) => bail!("template format specified but no template given"),
            ("jsonpath", Some(t)) => json_path(t),
            ("jsonpath-file", Some(f)) => json_path(&read(f)?),
            ("custom-columns", None) | ("custom-columns-file", None) => {
                bail!("custom-columns format specified but no custom columns given")
            }
            ("custom-columns", Some(spec)) => custom_columns(spec),
            ("custom-columns-file", Some(f)) => custom_columns_file(&read(f)?),
            _ => bail!(
                "unable to match a printer suitable for the output format \"{flag}\", allowed formats are: {ALLOWED}"
            ),
        }
    }
}

fn read(file: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(file).map_err(|e| anyhow!("error reading template {file}: {e}"))
}

fn json_path(template: &str) -> anyhow::Result<Format> {
    Template::parse(template)
        .map(Format::JsonPath)
        .map_err(|e| anyhow!("error parsing jsonpath {template}, {e}"))
}

/// kubectl's "relaxed" path: `metadata.name`, `.metadata.name` and `{.metadata.name}` mean
/// the same in a column.
fn column_template(path: &str) -> anyhow::Result<Template> {
    let path = path.trim();
    let inner = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
    let inner = if inner.starts_with('.') || inner.starts_with('$') || inner.starts_with('[') {
        inner.to_string()
    } else {
        format!(".{inner}")
    };
    Template::parse(&format!("{{{inner}}}")).map_err(|e| anyhow!("error parsing jsonpath {{{inner}}}, {e}"))
}

fn custom_columns(spec: &str) -> anyhow::Result<Format> {
    let mut columns = Vec::new();
    for part in spec.split(',') {
        let Some((header, path)) = part.split_once(':') else {
            bail!("unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>");
        };
        columns.push((header.to_string(), column_template(path)?));
    }
    Ok(Format::CustomColumns(columns))
}

/// The file form: headers on the first line, paths on the second, split at whitespace.
fn custom_columns_file(text: &str) -> anyhow::Result<Format> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let headers: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let paths: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    if headers.len() != paths.len() || headers.is_empty() {
        bail!(
            "number of variables in header and spec must match: {} headers, {} paths",
            headers.len(),
            paths.len()
        );
    }
    let mut columns = Vec::new();
    for (h, p) in headers.iter().zip(paths) {
        columns.push((h.to_string(), column_template(p)?));
    }
    Ok(Format::CustomColumns(columns))
}

/// `-o custom-columns`: one row per object; several values of a cell are joined with
/// commas, a missing one prints `<none>`.
pub fn custom_column_rows(columns: &[(String, Template)], objects: &[Value], no_headers: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !no_headers {
        rows.push(columns.iter().map(|(h, _)| h.clone()).collect());
    }
    for obj in objects {
        rows.push(
            columns
                .iter()
                .map(|(_, t)| {
                    let v: Vec<String> = t.values(obj).iter().map(jsonpath::text).collect();
                    if v.is_empty() { "<none>".into() } else { v.join(",") }
                })
                .collect(),
        );
    }
    columns_text(&rows)
}

/// Text in aligned columns as kubectl's tab writer makes them: every column but the last
/// is as wide as its widest cell plus three spaces, and at least six characters.
pub fn columns_text(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + 3).max(6);
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_and_their_errors() {
        assert_eq!(Format::parse(Some("wide")).unwrap(), Format::Table { wide: true });
        let e = Format::parse(Some("foo")).unwrap_err().to_string();
        assert!(
            e.starts_with("unable to match a printer suitable for the output format \"foo\""),
            "{e}"
        );
        let e = Format::parse(Some("jsonpath")).unwrap_err().to_string();
        assert_eq!(e, "template format specified but no template given");
        let e = Format::parse(Some("jsonpath={.a")).unwrap_err().to_string();
        assert_eq!(e, "error parsing jsonpath {.a, unclosed action");
        let e = Format::parse(Some("custom-columns=NAME")).unwrap_err().to_string();
        assert!(e.starts_with("unexpected custom-columns spec: NAME"), "{e}");
    }

    #[test]
    fn custom_columns_align_like_kubectl() {
        let Format::CustomColumns(cols) = Format::parse(Some("custom-columns=NAME:.metadata.name,N:spec.n")).unwrap()
        else {
            panic!("custom columns")
        };
        let objs = [
            json!({"metadata": {"name": "web-1"}, "spec": {"n": 2}}),
            json!({"metadata": {"name": "a"}}),
        ];
        assert_eq!(
            custom_column_rows(&cols, &objs, false),
            "NAME    N\nweb-1   2\na       <none>\n"
        );
    }
}
