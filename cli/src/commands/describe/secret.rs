//! kubectl's `SecretDescriber`: the type, then each key's size, never its value.

use std::fmt::Write as _;

use serde_json::Value;

use super::s;

pub(super) fn describe(out: &mut String, obj: &Value) {
    let _ = writeln!(out, "\nType:  {}\n\nData\n====", s(obj, "/type"));
    for (key, size) in kulisse_core::objects::secret::data_sizes(obj) {
        let _ = writeln!(out, "{key}:  {size} bytes");
    }
}
