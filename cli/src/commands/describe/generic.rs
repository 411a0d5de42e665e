//! kubectl's `genericDescriber`, for every kind without a describer of its own: the object's
//! `spec` and `data`, as YAML.

use std::fmt::Write as _;

use serde_json::Value;

pub(super) fn describe(out: &mut String, obj: &Value) {
    for key in ["spec", "data"] {
        if let Some(v) = obj.get(key) {
            let _ = writeln!(out, "{}:", capitalise(key));
            for line in crate::output::yaml(v).lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
