//! `kulisse explain TYPE[.FIELD...]` (mirrors `kubectl explain`).
//!
//! The documentation of every field lives in the server: its OpenAPI v3 documents
//! (`GET /openapi/v3` lists one per group-version, e.g. `/openapi/v3/apis/apps/v1`), whose
//! schemas carry each field's type and description. `explain pod.spec.containers` finds the
//! schema of the kind (the one tagged `x-kubernetes-group-version-kind`), walks down the
//! path, following `$ref`s to named schemas (`io.k8s.api.core.v1.Container`) and into the
//! items of arrays, and prints what it finds in kubectl's layout: KIND and VERSION, the
//! FIELD with its type, its DESCRIPTION, and the FIELDS below it.
//!
//! Where kulisse differs: no `--recursive` and no `--output=plaintext-openapiv2`; and a
//! second word, an object's name (`kulisse explain pod web-1`), asks *why* that object is
//! as it is instead ([`super::why`]), which kubectl does not have.

use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;
use http::Method;
use kulisse_core::client::Client;
use kulisse_core::objects::ResourceInfo;
use serde_json::Value;

use super::client;
use crate::{GlobalArgs, builder};

#[derive(Args, Debug)]
#[command(after_help = "Two modes:
  kulisse explain TYPE[.FIELD...]
      the documentation of a kind or field, as kubectl explain prints it
  kulisse explain TYPE NAME
      why that object is as it is (kulisse only): why a pod is on its node
      or Pending (each scheduler plugin's verdict), why a replicaset has
      its pods, why a pod is in a service's endpoints, where a rollout is

Examples:
  kulisse explain deployment.spec.strategy
  kulisse explain pod web-6dc9c4df99-x2k4p
  kulisse explain svc web")]
pub struct ExplainArgs {
    /// `TYPE` or `TYPE.FIELD.FIELD...`, e.g. `pods`, `deployment.spec.template`.
    pub path: String,
    /// An object's name: explain why it is as it is instead (pod, replicaset, service, deployment).
    pub name: Option<String>,
}

pub async fn run(global: &GlobalArgs, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.name {
        if args.path.contains('.') {
            anyhow::bail!(
                "kulisse explain {} {name}: give a kind and a name (pod web-1), or a field path alone (pod.spec)",
                args.path
            );
        }
        let info = builder::resource(&args.path).map_err(|e| crate::output::Bare(e.to_string()))?;
        return super::why::run(global, info, name).await;
    }
    let mut parts = args.path.split('.');
    let first = parts.next().unwrap_or("");
    let fields: Vec<&str> = parts.filter(|p| !p.is_empty()).collect();
    // kubectl prints this one without its usual `error: ` prefix.
    let info = builder::resource(first).map_err(|e| crate::output::Bare(e.to_string()))?;
    let client = client(global)?;
    let doc = document(&client, info).await?;
    let schemas = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow!("the server's OpenAPI document has no schemas"))?;
    let (_, root) = schemas
        .iter()
        .find(|(_, s)| is_kind(s, info))
        .ok_or_else(|| anyhow!("couldn't find resource for \"{}\"", info.group_kind()))?;
    let mut schema = resolve(&doc, root);
    let mut field: Option<(&str, String)> = None;
    for name in &fields {
        let Some(prop) = schema.pointer(&format!("/properties/{name}")) else {
            print!("{}", header(info));
            anyhow::bail!("field \"{name}\" does not exist");
        };
        field = Some((name, type_name(&doc, prop)));
        let mut next = resolve(&doc, prop);
        while next.get("type").and_then(Value::as_str) == Some("array") {
            next = resolve(&doc, next.get("items").unwrap_or(&Value::Null));
        }
        // A field that names another schema: its own description comes first, then its
        // type's (as kubectl prints both).
        if &next != prop {
            next["x-field-description"] = prop.get("description").cloned().unwrap_or(Value::Null);
        }
        schema = next;
    }
    print!("{}", page(info, field, &schema));
    Ok(ExitCode::SUCCESS)
}

/// `GROUP` (for named groups), `KIND` and `VERSION`, then a blank line.
fn header(info: &ResourceInfo) -> String {
    let mut out = String::new();
    if !info.group.is_empty() {
        out.push_str(&format!("GROUP:      {}\n", info.group));
    }
    out.push_str(&format!("KIND:       {}\nVERSION:    {}\n\n", info.kind, info.version));
    out
}

/// The OpenAPI v3 document of `info`'s group-version.
async fn document(client: &Client, info: &ResourceInfo) -> anyhow::Result<Value> {
    let index = client.json(Method::GET, "/openapi/v3", None, None).await?.0;
    let key = info.api_prefix().trim_start_matches('/').to_string();
    let url = index
        .pointer(&format!("/paths/{}/serverRelativeURL", key.replace('/', "~1")))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the server publishes no OpenAPI document for {key}"))?
        .to_string();
    Ok(client.json(Method::GET, &url, None, None).await?.0)
}

fn is_kind(schema: &Value, info: &ResourceInfo) -> bool {
    schema
        .get("x-kubernetes-group-version-kind")
        .and_then(Value::as_array)
        .is_some_and(|gvks| {
            gvks.iter()
                .any(|g| g["group"] == info.group && g["version"] == info.version && g["kind"] == info.kind)
        })
}

/// Follow `$ref` (directly or as the single entry of `allOf`) to the named schema.
fn resolve(doc: &Value, schema: &Value) -> Value {
    let reference = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str);
    match reference.and_then(|r| r.strip_prefix("#/")) {
        Some(path) => doc.pointer(&format!("/{path}")).cloned().unwrap_or(Value::Null),
        None => schema.clone(),
    }
}

/// kubectl's type words: `string`, `integer`, `[]Container`, `map[string]string`, `ObjectMeta`.
fn type_name(doc: &Value, schema: &Value) -> String {
    let reference = schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))
        .and_then(Value::as_str);
    if let Some(r) = reference {
        let resolved = resolve(doc, schema);
        if resolved.get("properties").is_none() && resolved.get("type").is_some_and(|t| t != "object") {
            return type_name(doc, &resolved);
        }
        return r.rsplit('.').next().unwrap_or(r).to_string();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!("[]{}", type_name(doc, schema.get("items").unwrap_or(&Value::Null))),
        Some("object") => match schema.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map[string]{}", type_name(doc, v)),
            _ => "Object".into(),
        },
        Some(t) => t.to_string(),
        None if schema.get("x-kubernetes-int-or-string").is_some() => "IntOrString".into(),
        None => "Object".into(),
    }
}

/// The page: KIND, VERSION, FIELD, DESCRIPTION, FIELDS.
fn page(info: &ResourceInfo, field: Option<(&str, String)>, schema: &Value) -> String {
    let mut out = header(info);
    if let Some((name, ty)) = field {
        out.push_str(&format!("FIELD: {name} <{ty}>\n\n\n"));
    }
    out.push_str("DESCRIPTION:\n");
    let descriptions = [schema.get("x-field-description"), schema.get("description")];
    for d in descriptions.into_iter().flatten().filter_map(Value::as_str) {
        out.push_str(&wrap(d, 4));
    }
    out.push_str("    \n");
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        out.push('\n');
        return out;
    };
    out.push_str("FIELDS:\n");
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut names: Vec<&String> = props.keys().collect();
    names.sort();
    for name in names {
        let prop = &props[name];
        let req = if required.contains(&name.as_str()) {
            " -required-"
        } else {
            ""
        };
        out.push_str(&format!("  {name}\t<{}>{req}\n", type_name(&Value::Null, prop)));
        if let Some(d) = prop.get("description").and_then(Value::as_str) {
            out.push_str(&wrap(d, 4));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Word-wrap `text` at 80 columns, each line indented by `indent` spaces.
fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && indent + line.len() + 1 + word.len() > 80 {
                out.push_str(&format!("{pad}{line}\n"));
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(&format!("{pad}{line}\n").trim_end_matches(' ').to_string());
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn wraps_at_eighty_columns() {
        let text = "word ".repeat(30);
        let wrapped = super::wrap(text.trim(), 4);
        assert!(
            wrapped.lines().all(|l| l.len() <= 80 && l.starts_with("    ")),
            "{wrapped}"
        );
        assert_eq!(wrapped.lines().count(), 2);
    }
}
