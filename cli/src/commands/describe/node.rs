//! kubectl's `NodeDescriber`: the node's conditions (Ready, pressure, ...) and its addresses.

use serde_json::Value;

use super::{conditions, field, s};

pub(super) fn describe(out: &mut String, obj: &Value) {
    conditions(out, obj);
    let addrs: Vec<String> = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|a| format!("{}: {}", s(a, "/type"), s(a, "/address")))
        .collect();
    field(out, "Addresses", if addrs.is_empty() { &[] } else { &addrs });
}
