//! Output formats shared by the commands: kubectl-style tables, JSON,
//! YAML, and error messages in kubectl's words.

use kulisse_core::client::ClientError;
use serde_json::Value;

use crate::format::Format;

/// Render a server-printed `Table` the way kubectl does: upper-case headers, columns
/// separated by three spaces, no borders. `wide` shows the priority-1 columns too;
/// `namespace_column` prepends NAMESPACE (for `-A`).
pub fn render_table(table: &Value, wide: bool, namespace_column: bool, no_headers: bool) -> String {
    let defs = table
        .get("columnDefinitions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if namespace_column {
        header.push("NAMESPACE".into());
    }
    for i in &shown {
        header.push(
            defs[*i]
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_uppercase(),
        );
    }
    if !no_headers {
        rows.push(header);
    }
    for row in table.get("rows").and_then(Value::as_array).into_iter().flatten() {
        let cells = row.get("cells").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        if namespace_column {
            out.push(
                row.pointer("/object/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for i in &shown {
            out.push(cell_text(cells.get(*i).unwrap_or(&Value::Null)));
        }
        rows.push(out);
    }
    // kubectl's tab writer: three spaces between columns, each at least six wide.
    crate::format::columns_text(&rows).trim_end_matches('\n').to_string()
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// JSON with kubectl's four-space indentation.
pub fn json(value: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if value.serialize(&mut ser).is_err() {
        return value.to_string();
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// YAML, as `-o yaml` prints it.
pub fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# could not render YAML: {e}\n{}", json(value)))
}

/// `doc` (one object, or a [`list`]) as the printers that print whole documents print it:
/// `json`, `yaml` and `jsonpath=...`. `None` for the printers that print rows (the table,
/// `name`, `custom-columns`).
pub fn document(format: &Format, doc: &Value) -> Option<String> {
    match format {
        Format::Json => Some(format!("{}\n", json(doc))),
        Format::Yaml => Some(yaml(doc)),
        Format::JsonPath(t) => Some(t.render(doc)),
        Format::Table { .. } | Format::Name | Format::CustomColumns(_) => None,
    }
}

/// Several objects as one document, the `List` kubectl's `get -o json|yaml` prints for
/// more than one object (or for a query that could return more than one).
pub fn list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})
}

/// Drop `metadata.managedFields`, as kubectl's `-o json|yaml` does unless
/// `--show-managed-fields`: server-side apply's bookkeeping, long and rarely what you look for.
pub fn hide_managed_fields(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
}

/// An error kubectl prints as it is, without its `error: ` prefix (several errors of one
/// command, one per line; explain's unknown resource).
#[derive(Debug)]
pub struct Bare(pub String);

impl std::fmt::Display for Bare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Bare {}

/// An error in kubectl's words: `Error from server (NotFound): pods "x" not found`.
pub fn error_text(err: &anyhow::Error) -> String {
    if let Some(Bare(text)) = err.downcast_ref::<Bare>() {
        return text.clone();
    }
    if let Some(ClientError::Api(api)) = err.downcast_ref::<ClientError>() {
        return format!("Error from server ({}): {}", api.reason, api.message);
    }
    let chain: Vec<String> = err.chain().map(|e| e.to_string()).collect();
    format!("error: {}", chain.join(": "))
}
