//! # Validation: the API server's last word before an object is stored
//!
//! Every create and update passes through *validation* in the API server
//! (`pkg/apis/*/validation` in kube-apiserver, built on `k8s.io/apimachinery`'s
//! `util/validation`). Nothing invalid ever reaches etcd, so controllers can trust what they
//! read. When validation fails, the client gets `422 Unprocessable Entity` with reason
//! `Invalid` and one *cause* per broken field:
//!
//! ```text
//! The Deployment "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0
//! ```
//!
//! Each cause is a **field error** (`field.Error` in Go) with:
//! - a **field path** written the way you would address it in the object:
//!   `spec.template.spec.containers[0].image`, `data[my key]`;
//! - a **type** (`Required value`, `Invalid value`, `Unsupported value`, `Duplicate value`,
//!   `Forbidden`, `Too long`) whose machine form is the cause's `reason`
//!   (`FieldValueRequired`, `FieldValueInvalid`, ...);
//! - the **bad value** (strings in quotes, numbers bare, maps and lists as JSON), and a
//!   **detail** explaining the rule.
//!
//! The messages here are Kubernetes' own (for instance the famous
//! `a lowercase RFC 1123 subdomain must consist of ...`), so they can be searched for.
//!
//! ## Two layers
//! 1. **Type check.** Objects are kept as raw JSON so unknown fields survive. To find fields
//!    of the wrong JSON type (`replicas: "three"`), the object is decoded into the typed
//!    `k8s-openapi` struct with `serde_path_to_error`, which reports *where* decoding failed.
//!    The real kube-apiserver answers a built-in type with a wrongly typed field with
//!    `400 BadRequest` and Go's decoder text (`json: cannot unmarshal string into Go struct
//!    field DeploymentSpec.spec.replicas of type int32`); for custom resources it answers
//!    `422` with `spec.replicas in body must be of type integer: "string"`. kulisse uses the
//!    second, clearer form for every kind, so the learner sees the field path.
//! 2. **Semantic rules**: names, labels, selectors, ports, replica counts... the rules
//!    kube-apiserver applies for each kind.
//!
//! [`validate_update`] adds the rules that compare old and new object (immutable fields).
//!
//! Validation runs *after* defaulting ([`super::defaults`]), as in the API server; fields
//! that defaulting always fills (such as a port's `protocol`) are only checked when present.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::registry::ResourceInfo;
use super::status::{ApiError, StatusCause};

/// The kind of a field error, as `field.ErrorType` in apimachinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    /// A value that was looked up is missing (`Not found`).
    NotFound,
    /// A required value is missing or empty (`Required value`).
    Required,
    /// A value that must be unique appears twice (`Duplicate value`).
    Duplicate,
    /// A malformed or out-of-range value (`Invalid value`).
    Invalid,
    /// A value not in the list of accepted values (`Unsupported value`).
    NotSupported,
    /// A value that is well-formed but not allowed here (`Forbidden`).
    Forbidden,
    /// A value longer than allowed (`Too long`).
    TooLong,
    /// A list with more items than allowed (`Too many`).
    TooMany,
    /// A value of the wrong JSON type (`Invalid value`, reason `FieldValueTypeInvalid`).
    TypeInvalid,
}

impl FieldErrorType {
    /// The machine-readable cause type (`metav1.CauseType`), e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "FieldValueNotFound",
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The human-readable words, e.g. `Required value`.
    pub fn text(self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::Required => "Required value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::Invalid | FieldErrorType::TypeInvalid => "Invalid value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
        }
    }
}

/// One broken field (apimachinery's `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub error_type: FieldErrorType,
    /// The field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    /// The offending value, already rendered as Kubernetes prints it (see [`go_value`]);
    /// `None` when the type does not print a value (`Required`, `Forbidden`, `Too long`).
    pub bad_value: Option<String>,
    /// The rule that was broken, e.g. `must be greater than or equal to 0`.
    pub detail: String,
}

impl FieldError {
    /// `Required value` (with an optional detail).
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Required,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Invalid,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: detail.into(),
        }
    }

    /// `Invalid value: "<value>": <detail>` for a string value.
    pub fn invalid_str(field: impl Into<String>, value: &str, detail: impl Into<String>) -> FieldError {
        FieldError::invalid(field, &Value::from(value), detail)
    }

    /// `Unsupported value: "<value>": supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> FieldError {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        FieldError {
            error_type: FieldErrorType::NotSupported,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Duplicate,
            field: field.into(),
            bad_value: Some(go_value(value)),
            detail: String::new(),
        }
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            error_type: FieldErrorType::Forbidden,
            field: field.into(),
            bad_value: None,
            detail: detail.into(),
        }
    }

    /// `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
        FieldError {
            error_type: FieldErrorType::TooLong,
            field: field.into(),
            bad_value: None,
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `Too many: 101: must have at most 100 items` (apimachinery's `field.TooMany`).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> FieldError {
        FieldError {
            error_type: FieldErrorType::TooMany,
            field: field.into(),
            bad_value: Some(actual.to_string()),
            detail: format!("must have at most {max} items"),
        }
    }

    /// The message without the field, as Go's `ErrorBody()`: `Invalid value: -1: must be
    /// greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut s = self.error_type.text().to_string();
        if let Some(v) = &self.bad_value {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// This error as a `Status` cause.
    pub fn to_cause(&self) -> StatusCause {
        StatusCause {
            reason: self.error_type.reason().to_string(),
            message: self.body(),
            field: self.field.clone(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Render a value as Kubernetes prints a bad value: strings quoted (`"web"`), numbers and
/// booleans bare (`-1`, `true`), maps and lists as JSON with sorted keys
/// (`{"app":"web"}`), null as `null`.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => serde_json::to_string(&sorted(other)).unwrap_or_else(|_| "<unprintable>".into()),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                if let Some(val) = m.get(k) {
                    out.insert(k.clone(), sorted(val));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Quote a string as Go's `%q` does (close enough: JSON escaping).
fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

// ---------------------------------------------------------------------------------------
// Name and label rules (k8s.io/apimachinery/pkg/util/validation)
// ---------------------------------------------------------------------------------------

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_MAP_KEY_ERR: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const PERCENT_FMT: &str = "[0-9]+%";
const PERCENT_ERR: &str = "a valid percent string must be a numeric string followed by an ending '%'";

/// The detail Kubernetes writes for a negative count.
pub const IS_NEGATIVE_ERROR_MSG: &str = "must be greater than or equal to 0";
/// apimachinery's `isNotPositiveErrorMsg`.
pub const IS_NOT_POSITIVE_ERROR_MSG: &str = "must be greater than zero";
/// The detail Kubernetes writes when an immutable field changes.
pub const FIELD_IMMUTABLE_ERROR_MSG: &str = "field is immutable";
/// The valid range of `nodePort`s (kube-apiserver's default `--service-node-port-range`).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;

/// apimachinery's `RegexError`: the message, examples and the regex used.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(e);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns1123_label(s: &str) -> bool {
    let first_last_ok = s.chars().next().is_some_and(is_lower_alnum) && s.chars().last().is_some_and(is_lower_alnum);
    first_last_ok && s.chars().all(|c| is_lower_alnum(c) || c == '-')
}

fn matches_qualified_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.chars().next().is_some_and(alnum)
        && s.chars().last().is_some_and(alnum)
        && s.chars().all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
}

/// Errors for a DNS-1123 label (Namespace names, container names): at most 63 characters,
/// lowercase alphanumerics and `-`, starting and ending alphanumeric. Empty = valid.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        errs.push(regex_error(
            DNS1123_LABEL_ERR,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// Errors for a DNS-1123 subdomain (most object names): at most 253 characters, dot-separated
/// DNS-1123 labels.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Errors for a DNS-1035 label (Service names): like a DNS-1123 label but must start with a
/// letter, because a Service name becomes a DNS name and an environment variable prefix.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !(matches_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Errors for a qualified name (label and annotation keys): `[prefix/]name`, where the
/// optional prefix is a DNS subdomain and the name has at most 63 characters.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let examples = ["MyName", "my.name", "123-abc"];
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &examples)
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &examples)
        ));
    }
    errs
}

/// Errors for a label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`, starting and
/// ending alphanumeric.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Errors for a named port (`http`, `metrics`): at most 15 characters, lowercase
/// alphanumerics and single hyphens, at least one letter.
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if port.is_empty() || !port.chars().all(|c| is_lower_alnum(c) || c == '-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    } else if !port.chars().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens (-)".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen (-)".into());
    }
    errs
}

/// Errors for a port number: 1..=65535.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".into()]
    }
}

/// Errors for a ConfigMap data key (it becomes a file name when mounted).
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        errs.push(regex_error(
            CONFIG_MAP_KEY_ERR,
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".into());
    } else if value == ".." {
        errs.push("must not be '..'".into());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

// ---------------------------------------------------------------------------------------
// Small helpers over raw JSON
// ---------------------------------------------------------------------------------------

type Errs = Vec<FieldError>;

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| m.get(k)).filter(|v| !v.is_null())
}

fn get_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    get(v, k).and_then(Value::as_str)
}

fn get_arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn str_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `ValidateNonnegativeField`: the field, if an integer, must be ≥ 0.
fn nonnegative(obj: &Value, k: &str, path: &str, errs: &mut Errs) {
    if let Some(n) = get(obj, k).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            child(path, k),
            &Value::from(n),
            IS_NEGATIVE_ERROR_MSG,
        ));
    }
}

fn one_of(obj: &Value, k: &str, path: &str, supported: &[&str], errs: &mut Errs) {
    if let Some(s) = get_str(obj, k)
        && !supported.contains(&s)
    {
        errs.push(FieldError::not_supported(child(path, k), &Value::from(s), supported));
    }
}

// ---------------------------------------------------------------------------------------
// Object metadata
// ---------------------------------------------------------------------------------------

/// Which name rule a kind uses for `metadata.name`.
fn name_rule(info: &ResourceInfo) -> fn(&str) -> Vec<String> {
    match (info.group, info.kind) {
        ("", "Namespace") => is_dns1123_label,
        ("", "Service") => is_dns1035_label,
        _ => is_dns1123_subdomain,
    }
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
pub fn validate_labels(labels: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            for msg in is_qualified_name(k) {
                errs.push(FieldError::invalid_str(path, k, msg));
            }
            if let Some(s) = v.as_str() {
                for msg in is_valid_label_value(s) {
                    errs.push(FieldError::invalid_str(path, s, msg));
                }
            }
        }
    }
    errs
}

fn validate_metadata(info: &ResourceInfo, obj: &Value, errs: &mut Errs) {
    let meta = get(obj, "metadata").unwrap_or(&Value::Null);
    let name_fn = name_rule(info);
    let name = get_str(meta, "name").unwrap_or("");
    let generate_name = get_str(meta, "generateName").unwrap_or("");
    if name.is_empty() && generate_name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if !name.is_empty() {
        for msg in name_fn(name) {
            errs.push(FieldError::invalid_str("metadata.name", name, msg));
        }
    }
    if !generate_name.is_empty() {
        // A prefix may end in '-' (the API server appends random characters).
        let masked = match generate_name.strip_suffix('-') {
            Some(p) => format!("{p}a"),
            None => generate_name.to_string(),
        };
        for msg in name_fn(&masked) {
            errs.push(FieldError::invalid_str("metadata.generateName", generate_name, msg));
        }
    }
    if info.namespaced
        && let Some(ns) = get_str(meta, "namespace")
        && !ns.is_empty()
    {
        for msg in is_dns1123_label(ns) {
            errs.push(FieldError::invalid_str("metadata.namespace", ns, msg));
        }
    }
    if let Some(labels) = get(meta, "labels") {
        errs.extend(validate_labels(labels, "metadata.labels"));
    }
    if let Some(annotations) = get(meta, "annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            for msg in is_qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid_str("metadata.annotations", k, msg));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
        if total > TOTAL_ANNOTATION_SIZE_LIMIT {
            errs.push(FieldError::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT,
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Label selectors (metav1.LabelSelector)
// ---------------------------------------------------------------------------------------

fn validate_label_selector(sel: &Value, path: &str, errs: &mut Errs) {
    if let Some(ml) = get(sel, "matchLabels") {
        errs.extend(validate_labels(ml, &child(path, "matchLabels")));
    }
    let exprs_path = child(path, "matchExpressions");
    for (i, expr) in get_arr(sel, "matchExpressions").iter().enumerate() {
        let p = index(&exprs_path, i);
        let values = get_arr(expr, "values");
        match get_str(expr, "operator") {
            Some("In") | Some("NotIn") => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            Some("Exists") | Some("DoesNotExist") => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => {
                errs.push(FieldError::invalid_str(
                    child(&p, "operator"),
                    other.unwrap_or(""),
                    "not a valid selector operator",
                ));
            }
        }
        let k = get_str(expr, "key").unwrap_or("");
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid_str(child(&p, "key"), k, msg));
        }
        for (j, v) in values.iter().enumerate() {
            if let Some(s) = v.as_str() {
                for msg in is_valid_label_value(s) {
                    errs.push(FieldError::invalid_str(index(&child(&p, "values"), j), s, msg));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pods and pod templates
// ---------------------------------------------------------------------------------------

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn validate_container_ports(ports: &[Value], path: &str, errs: &mut Errs) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        if let Some(name) = get_str(port, "name")
            && !name.is_empty()
        {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid_str(child(&p, "name"), name, msg));
                }
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), &Value::from(name)));
            }
        }
        match get(port, "containerPort").and_then(Value::as_i64) {
            None | Some(0) => {
                if get(port, "containerPort").is_none_or(|v| v.is_i64() || v.is_u64()) {
                    errs.push(FieldError::required(child(&p, "containerPort"), ""));
                }
            }
            Some(n) => {
                for msg in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&p, "containerPort"), &Value::from(n), msg));
                }
            }
        }
        if let Some(n) = get(port, "hostPort").and_then(Value::as_i64)
            && n != 0
        {
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(&p, "hostPort"), &Value::from(n), msg));
            }
        }
        one_of(port, "protocol", &p, PROTOCOLS, errs);
    }
}

fn validate_containers(containers: &[Value], path: &str, names: &mut HashSet<String>, errs: &mut Errs) {
    for (i, c) in containers.iter().enumerate() {
        let p = index(path, i);
        match get(c, "name") {
            None => errs.push(FieldError::required(child(&p, "name"), "")),
            Some(Value::String(name)) if name.is_empty() => errs.push(FieldError::required(child(&p, "name"), "")),
            Some(Value::String(name)) => {
                let msgs = is_dns1123_label(name);
                if msgs.is_empty() && !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(child(&p, "name"), &Value::from(name.as_str())));
                }
                for msg in msgs {
                    errs.push(FieldError::invalid_str(child(&p, "name"), name, msg));
                }
            }
            Some(_) => {} // wrong type: the type check reports it
        }
        match get(c, "image") {
            None => errs.push(FieldError::required(child(&p, "image"), "")),
            Some(Value::String(s)) if s.trim().is_empty() => errs.push(FieldError::required(child(&p, "image"), "")),
            Some(_) => {}
        }
        one_of(c, "imagePullPolicy", &p, &["Always", "IfNotPresent", "Never"], errs);
        one_of(
            c,
            "terminationMessagePolicy",
            &p,
            &["FallbackToLogsOnError", "File"],
            errs,
        );
        validate_container_ports(get_arr(c, "ports"), &child(&p, "ports"), errs);
    }
}

/// Rules for a `PodSpec` at `path` (`spec` for a Pod, `spec.template.spec` for a template).
fn validate_pod_spec(spec: &Value, path: &str, in_template: bool, errs: &mut Errs) {
    let containers = get_arr(spec, "containers");
    let containers_field = get(spec, "containers");
    if containers.is_empty() && containers_field.is_none_or(Value::is_array) {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    let mut names = HashSet::new();
    validate_containers(containers, &child(path, "containers"), &mut names, errs);
    validate_containers(
        get_arr(spec, "initContainers"),
        &child(path, "initContainers"),
        &mut names,
        errs,
    );
    if let Some(rp) = get_str(spec, "restartPolicy") {
        if in_template {
            if rp != "Always" {
                errs.push(FieldError::not_supported(
                    child(path, "restartPolicy"),
                    &Value::from(rp),
                    &["Always"],
                ));
            }
        } else {
            one_of(spec, "restartPolicy", path, &["Always", "OnFailure", "Never"], errs);
        }
    }
    one_of(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        errs,
    );
    nonnegative(spec, "terminationGracePeriodSeconds", path, errs);
    if let Some(ads) = get(spec, "activeDeadlineSeconds") {
        if in_template {
            errs.push(FieldError::forbidden(
                child(path, "activeDeadlineSeconds"),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        } else if ads.as_i64().is_some_and(|n| n <= 0) {
            errs.push(FieldError::invalid(
                child(path, "activeDeadlineSeconds"),
                ads,
                "must be greater than 0",
            ));
        }
    }
    if let Some(node) = get_str(spec, "nodeName")
        && !node.is_empty()
    {
        for msg in is_dns1123_subdomain(node) {
            errs.push(FieldError::invalid_str(child(path, "nodeName"), node, msg));
        }
    }
    validate_topology_spread_constraints(
        get_arr(spec, "topologySpreadConstraints"),
        &child(path, "topologySpreadConstraints"),
        errs,
    );
}

/// `spec.topologySpreadConstraints` (upstream's `validateTopologySpreadConstraints`).
fn validate_topology_spread_constraints(constraints: &[Value], path: &str, errs: &mut Errs) {
    const ACTIONS: &[&str] = &["DoNotSchedule", "ScheduleAnyway"];
    const POLICIES: &[&str] = &["Honor", "Ignore"];
    for (i, c) in constraints.iter().enumerate() {
        let p = index(path, i);
        let max_skew = get(c, "maxSkew").and_then(Value::as_i64).unwrap_or(0);
        if max_skew <= 0 {
            errs.push(FieldError::invalid(
                child(&p, "maxSkew"),
                &Value::from(max_skew),
                IS_NOT_POSITIVE_ERROR_MSG,
            ));
        }
        let key = get_str(c, "topologyKey").unwrap_or("");
        if key.is_empty() {
            errs.push(FieldError::required(child(&p, "topologyKey"), "can not be empty"));
        }
        let action = get_str(c, "whenUnsatisfiable").unwrap_or("");
        if !ACTIONS.contains(&action) {
            errs.push(FieldError::not_supported(
                child(&p, "whenUnsatisfiable"),
                &Value::from(action),
                ACTIONS,
            ));
        }
        let same_pair = |o: &Value| {
            get_str(o, "topologyKey").unwrap_or("") == key && get_str(o, "whenUnsatisfiable").unwrap_or("") == action
        };
        if constraints[i + 1..].iter().any(same_pair) {
            errs.push(FieldError::duplicate(
                child(&p, "{topologyKey, whenUnsatisfiable}"),
                &Value::from(format!("{{{key}, {action}}}")),
            ));
        }
        if let Some(md) = get(c, "minDomains") {
            if md.as_i64().is_some_and(|n| n <= 0) {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    IS_NOT_POSITIVE_ERROR_MSG,
                ));
            }
            if action != "DoNotSchedule" {
                errs.push(FieldError::invalid(
                    child(&p, "minDomains"),
                    md,
                    format!("can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"),
                ));
            }
        }
        one_of(c, "nodeAffinityPolicy", &p, POLICIES, errs);
        one_of(c, "nodeTaintsPolicy", &p, POLICIES, errs);
        let selector = get(c, "labelSelector");
        validate_match_label_keys(
            get_arr(c, "matchLabelKeys"),
            selector,
            &child(&p, "matchLabelKeys"),
            errs,
        );
        if let Some(sel) = selector {
            validate_label_selector(sel, &child(&p, "labelSelector"), errs);
        }
    }
}

/// `matchLabelKeys`: label names, only next to a `labelSelector`, none of its keys.
fn validate_match_label_keys(keys: &[Value], selector: Option<&Value>, path: &str, errs: &mut Errs) {
    if keys.is_empty() {
        return;
    }
    let Some(selector) = selector else {
        errs.push(FieldError::forbidden(
            path,
            "must not be specified when labelSelector is not set",
        ));
        return;
    };
    let mut selector_keys: HashSet<&str> = HashSet::new();
    if let Some(ml) = get(selector, "matchLabels").and_then(Value::as_object) {
        selector_keys.extend(ml.keys().map(String::as_str));
    }
    selector_keys.extend(
        get_arr(selector, "matchExpressions")
            .iter()
            .filter_map(|e| get_str(e, "key")),
    );
    for (i, k) in keys.iter().enumerate() {
        let k = k.as_str().unwrap_or("");
        for msg in is_qualified_name(k) {
            errs.push(FieldError::invalid_str(index(path, i), k, msg));
        }
        if selector_keys.contains(k) {
            errs.push(FieldError::invalid_str(
                index(path, i),
                k,
                "exists in both matchLabelKeys and labelSelector",
            ));
        }
    }
}

/// Rules shared by Deployment and ReplicaSet: replicas, selector, template.
fn validate_replicated_spec(spec: &Value, kind_word: &str, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    let selector = get(spec, "selector");
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => {
            validate_label_selector(sel, "spec.selector", errs);
            let n = get(sel, "matchLabels").and_then(Value::as_object).map_or(0, Map::len)
                + get_arr(sel, "matchExpressions").len();
            if n == 0 {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    format!("empty selector is invalid for {kind_word}"),
                ));
            }
        }
    }
    let template = get(spec, "template");
    let Some(template) = template else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    let template_meta = get(template, "metadata").unwrap_or(&Value::Null);
    let labels_value = get(template_meta, "labels");
    if let Some(sel) = selector {
        let labels = str_map(labels_value);
        let n = get(sel, "matchLabels").and_then(Value::as_object).map_or(0, Map::len)
            + get_arr(sel, "matchExpressions").len();
        if n > 0 && !super::match_label_selector(sel, &labels) {
            let shown = labels_value.cloned().unwrap_or(Value::Null);
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &shown,
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(labels) = labels_value {
        errs.extend(validate_labels(labels, "spec.template.metadata.labels"));
    }
    let pod_spec = get(template, "spec").unwrap_or(&Value::Null);
    validate_pod_spec(pod_spec, "spec.template.spec", true, errs);
}

/// `ValidatePositiveIntOrPercent` plus the percentage bound for `maxUnavailable`.
fn int_or_percent(v: &Value, path: &str, errs: &mut Errs) -> Option<i64> {
    match v {
        Value::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()));
            match digits {
                Some(d) => d.parse::<i64>().ok(),
                None => {
                    errs.push(FieldError::invalid(
                        path,
                        v,
                        regex_error(PERCENT_ERR, PERCENT_FMT, &["1%", "93%"]),
                    ));
                    None
                }
            }
        }
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n < 0 {
                errs.push(FieldError::invalid(path, v, IS_NEGATIVE_ERROR_MSG));
            }
            Some(n)
        }
        _ => None,
    }
}

fn validate_deployment(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    validate_replicated_spec(spec, "deployment", errs);
    if let Some(strategy) = get(spec, "strategy") {
        match get_str(strategy, "type") {
            Some("Recreate") => {
                if get(strategy, "rollingUpdate").is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(ru) = get(strategy, "rollingUpdate") {
                    let p = "spec.strategy.rollingUpdate";
                    let mu =
                        get(ru, "maxUnavailable").map(|v| (v, int_or_percent(v, &child(p, "maxUnavailable"), errs)));
                    let ms = get(ru, "maxSurge").map(|v| int_or_percent(v, &child(p, "maxSurge"), errs));
                    if let (Some((mu_v, Some(0))), Some(Some(0))) = (mu, ms) {
                        errs.push(FieldError::invalid(
                            child(p, "maxUnavailable"),
                            mu_v,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                    if let Some((mu_v @ Value::String(_), Some(pct))) = mu
                        && pct > 100
                    {
                        errs.push(FieldError::invalid(
                            child(p, "maxUnavailable"),
                            mu_v,
                            "must not be greater than 100%",
                        ));
                    }
                }
            }
            Some(_) => errs.push(FieldError::not_supported(
                "spec.strategy",
                strategy,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    if let Some(pds) = get(spec, "progressDeadlineSeconds").and_then(Value::as_i64) {
        if pds < 0 {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pds),
                IS_NEGATIVE_ERROR_MSG,
            ));
        } else if pds <= get(spec, "minReadySeconds").and_then(Value::as_i64).unwrap_or(0) {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pds),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Services, Endpoints, Events, ConfigMaps, Leases
// ---------------------------------------------------------------------------------------

fn validate_service(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    let svc_type = get_str(spec, "type").unwrap_or("ClusterIP");
    let headless = get_str(spec, "clusterIP") == Some("None");
    let ports = get_arr(spec, "ports");
    if ports.is_empty() && !headless && svc_type != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    let require_name = ports.len() > 1;
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("spec.ports", i);
        match get_str(port, "name").unwrap_or("") {
            "" => {
                if require_name {
                    errs.push(FieldError::required(child(&p, "name"), ""));
                }
            }
            name => {
                for msg in is_dns1123_label(name) {
                    errs.push(FieldError::invalid_str(child(&p, "name"), name, msg));
                }
                if !names.insert(name.to_string()) {
                    errs.push(FieldError::duplicate(child(&p, "name"), &Value::from(name)));
                }
            }
        }
        let port_num = get(port, "port").and_then(Value::as_i64);
        if let Some(n) = port_num {
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(&p, "port"), &Value::from(n), msg));
            }
        } else if get(port, "port").is_none() {
            errs.push(FieldError::required(child(&p, "port"), ""));
        }
        one_of(port, "protocol", &p, PROTOCOLS, errs);
        match get(port, "targetPort") {
            Some(Value::Number(n)) => {
                if let Some(n) = n.as_i64() {
                    // 0 means "not set" (defaulting copies `port`).
                    if n != 0 {
                        for msg in is_valid_port_num(n) {
                            errs.push(FieldError::invalid(child(&p, "targetPort"), &Value::from(n), msg));
                        }
                    }
                }
            }
            Some(Value::String(s)) if !s.is_empty() => {
                for msg in is_valid_port_name(s) {
                    errs.push(FieldError::invalid_str(child(&p, "targetPort"), s, msg));
                }
            }
            _ => {}
        }
        if let Some(np) = get(port, "nodePort").and_then(Value::as_i64)
            && np != 0
        {
            if svc_type == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    child(&p, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !NODE_PORT_RANGE.contains(&np) {
                errs.push(FieldError::invalid(
                    child(&p, "nodePort"),
                    &Value::from(np),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
        }
        if let Some(n) = port_num {
            let protocol = get_str(port, "protocol").unwrap_or("TCP");
            if !seen.insert((n, protocol.to_string())) {
                let mut key = Map::new();
                key.insert("port".into(), Value::from(n));
                key.insert("protocol".into(), Value::from(protocol));
                errs.push(FieldError::duplicate(p.clone(), &Value::Object(key)));
            }
        }
    }
    one_of(
        spec,
        "type",
        "spec",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        errs,
    );
    one_of(spec, "sessionAffinity", "spec", &["ClientIP", "None"], errs);
    if svc_type == "ExternalName" && get_str(spec, "externalName").is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    if let Some(ip) = get_str(spec, "clusterIP")
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<IpAddr>().is_err()
    {
        errs.push(FieldError::invalid_str(
            "spec.clusterIP",
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(sel) = get(spec, "selector") {
        errs.extend(validate_labels(sel, "spec.selector"));
    }
}

fn validate_endpoints(obj: &Value, errs: &mut Errs) {
    for (i, subset) in get_arr(obj, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        for list in ["addresses", "notReadyAddresses"] {
            for (j, addr) in get_arr(subset, list).iter().enumerate() {
                let ap = index(&child(&sp, list), j);
                match get_str(addr, "ip") {
                    None | Some("") => errs.push(FieldError::required(child(&ap, "ip"), "")),
                    Some(ip) if ip.parse::<IpAddr>().is_err() => errs.push(FieldError::invalid_str(
                        child(&ap, "ip"),
                        ip,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )),
                    Some(_) => {}
                }
            }
        }
        for (k, port) in get_arr(subset, "ports").iter().enumerate() {
            let pp = index(&child(&sp, "ports"), k);
            if let Some(n) = get(port, "port").and_then(Value::as_i64) {
                for msg in is_valid_port_num(n) {
                    errs.push(FieldError::invalid(child(&pp, "port"), &Value::from(n), msg));
                }
            }
            one_of(port, "protocol", &pp, PROTOCOLS, errs);
        }
    }
}

/// At most this many endpoints in one EndpointSlice, and addresses in one endpoint.
const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_ENDPOINT_ADDRESSES: usize = 100;

/// `discovery.k8s.io/v1` EndpointSlice (upstream's `ValidateEndpointSlice`).
fn validate_endpoint_slice(obj: &Value, errs: &mut Errs) {
    let address_type = get_str(obj, "addressType");
    match address_type {
        None | Some("") => errs.push(FieldError::required("addressType", "")),
        Some(_) => one_of(obj, "addressType", "", &["FQDN", "IPv4", "IPv6"], errs),
    }
    let endpoints = get_arr(obj, "endpoints");
    if endpoints.len() > MAX_SLICE_ENDPOINTS {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), MAX_SLICE_ENDPOINTS));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let path = index("endpoints", i);
        let addresses = get_arr(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                child(&path, "addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > MAX_ENDPOINT_ADDRESSES {
            errs.push(FieldError::too_many(
                child(&path, "addresses"),
                addresses.len(),
                MAX_ENDPOINT_ADDRESSES,
            ));
        }
        for (j, addr) in addresses.iter().enumerate() {
            let ap = index(&child(&path, "addresses"), j);
            let text = addr.as_str().unwrap_or("");
            let bad = match address_type {
                Some("IPv4") => text
                    .parse::<std::net::Ipv4Addr>()
                    .is_err()
                    .then_some("must be a valid IPv4 address"),
                Some("IPv6") => text
                    .parse::<std::net::Ipv6Addr>()
                    .is_err()
                    .then_some("must be a valid IPv6 address"),
                _ => None,
            };
            if let Some(msg) = bad {
                errs.push(FieldError::invalid_str(ap, text, msg));
            }
        }
        if let Some(node) = get_str(ep, "nodeName") {
            for msg in is_dns1123_subdomain(node) {
                errs.push(FieldError::invalid_str(child(&path, "nodeName"), node, msg));
            }
        }
        if let Some(host) = get_str(ep, "hostname") {
            for msg in is_dns1123_label(host) {
                errs.push(FieldError::invalid_str(child(&path, "hostname"), host, msg));
            }
        }
    }
    validate_slice_ports(get_arr(obj, "ports"), errs);
}

fn validate_slice_ports(ports: &[Value], errs: &mut Errs) {
    let mut names = HashSet::new();
    for (k, port) in ports.iter().enumerate() {
        let pp = index("ports", k);
        let name = get_str(port, "name").unwrap_or("");
        if !name.is_empty() {
            for msg in is_valid_port_name(name) {
                errs.push(FieldError::invalid_str(child(&pp, "name"), name, msg));
            }
        }
        if !names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&pp, "name"), &Value::from(name)));
        }
        if let Some(n) = get(port, "port").and_then(Value::as_i64) {
            for msg in is_valid_port_num(n) {
                errs.push(FieldError::invalid(child(&pp, "port"), &Value::from(n), msg));
            }
        }
        one_of(port, "protocol", &pp, PROTOCOLS, errs);
    }
}

fn validate_event(obj: &Value, errs: &mut Errs) {
    match get(obj, "involvedObject") {
        None => errs.push(FieldError::required("involvedObject", "")),
        Some(io) => {
            let ev_ns = get(obj, "metadata").and_then(|m| get_str(m, "namespace"));
            if let (Some(ev_ns), Some(io_ns)) = (ev_ns, get_str(io, "namespace"))
                && !ev_ns.is_empty()
                && !io_ns.is_empty()
                && ev_ns != io_ns
            {
                errs.push(FieldError::invalid_str(
                    "involvedObject.namespace",
                    io_ns,
                    "does not match event.namespace",
                ));
            }
        }
    }
}

fn validate_config_map(obj: &Value, errs: &mut Errs) {
    let mut total = 0usize;
    let data_keys: BTreeSet<&str> = get(obj, "data")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for field in ["data", "binaryData"] {
        if let Some(m) = get(obj, field).and_then(Value::as_object) {
            for (k, v) in m {
                for msg in is_config_map_key(k) {
                    errs.push(FieldError::invalid_str(key(field, k), k, msg));
                }
                if field == "binaryData" && data_keys.contains(k.as_str()) {
                    errs.push(FieldError::invalid_str(
                        key("data", k),
                        k,
                        "duplicate of key present in binaryData",
                    ));
                }
                total += k.len() + v.as_str().map_or(0, str::len);
            }
        }
    }
    const MAX_CONFIG_MAP_SIZE: usize = 1024 * 1024;
    if total > MAX_CONFIG_MAP_SIZE {
        errs.push(FieldError::too_long("data", MAX_CONFIG_MAP_SIZE));
    }
}

fn validate_lease(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec").unwrap_or(&Value::Null);
    if let Some(n) = get(spec, "leaseDurationSeconds").and_then(Value::as_i64)
        && n <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &Value::from(n),
            "must be greater than 0",
        ));
    }
    nonnegative(spec, "leaseTransitions", "spec", errs);
}

// ---------------------------------------------------------------------------------------
// Type check through k8s-openapi
// ---------------------------------------------------------------------------------------

/// The OpenAPI type name for serde's "expected ..." text.
fn openapi_type(expected: &str) -> String {
    let e = expected.trim();
    let ints = [
        "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "isize", "usize",
    ];
    if ints.contains(&e) || e.contains("integer") {
        "integer".into()
    } else if ["f32", "f64", "a number", "a float"].contains(&e) {
        "number".into()
    } else if e == "IntOrString" {
        "integer or string".into()
    } else if ["Quantity"].contains(&e) {
        "string or number".into()
    } else if e.contains("string") || e == "Time" || e == "MicroTime" || e == "char" {
        "string".into()
    } else if e.contains("bool") {
        "boolean".into()
    } else if e.contains("sequence") || e.contains("array") || e.contains("list") {
        "array".into()
    } else if e.contains("map") || e.starts_with(|c: char| c.is_ascii_uppercase()) {
        "object".into()
    } else {
        e.to_string()
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn value_at<'a>(root: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    let mut cur = root;
    for seg in path.iter() {
        cur = match seg {
            Segment::Seq { index } => cur.as_array()?.get(*index)?,
            Segment::Map { key } => cur.as_object()?.get(key)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn path_string(path: &serde_path_to_error::Path) -> String {
    if path.iter().next().is_none() {
        String::new()
    } else {
        path.to_string()
    }
}

/// Decode `obj` into `T` and turn the first decoding failure into a field error.
fn type_check_as<T: DeserializeOwned>(obj: &Value) -> Option<FieldError> {
    let err = serde_path_to_error::deserialize::<_, T>(obj).err()?;
    let path = err.path().clone();
    let field = path_string(&path);
    let msg = err.into_inner().to_string();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        return Some(FieldError::required(child(&field, name), ""));
    }
    let bad = value_at(obj, &path).cloned().unwrap_or(Value::Null);
    if msg.starts_with("invalid type:") {
        let expected = msg.rsplit_once(", expected ").map_or("", |(_, e)| e);
        let shown = if field.is_empty() { "the object" } else { field.as_str() };
        return Some(FieldError {
            error_type: FieldErrorType::TypeInvalid,
            field: field.clone(),
            bad_value: Some(truncate(go_value(&bad), 120)),
            detail: format!(
                "{shown} in body must be of type {}: \"{}\"",
                openapi_type(expected),
                json_type(&bad)
            ),
        });
    }
    // "invalid value", "invalid length", number out of range, bad base64 or timestamp...
    let detail = if msg.ends_with("expected i32") {
        "must be a 32-bit integer (between -2147483648 and 2147483647)".to_string()
    } else if msg.ends_with("expected i64") {
        "must be a 64-bit integer".to_string()
    } else {
        msg
    };
    Some(FieldError {
        error_type: FieldErrorType::Invalid,
        field,
        bad_value: Some(truncate(go_value(&bad), 120)),
        detail,
    })
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn type_check(info: &ResourceInfo, obj: &Value) -> Option<FieldError> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    match (info.group, info.kind) {
        ("", "Pod") => type_check_as::<core::Pod>(obj),
        ("", "Service") => type_check_as::<core::Service>(obj),
        ("", "Namespace") => type_check_as::<core::Namespace>(obj),
        ("", "Node") => type_check_as::<core::Node>(obj),
        ("", "Endpoints") => type_check_as::<core::Endpoints>(obj),
        ("discovery.k8s.io", "EndpointSlice") => type_check_as::<k8s_openapi::api::discovery::v1::EndpointSlice>(obj),
        ("", "Event") => type_check_as::<core::Event>(obj),
        ("", "ConfigMap") => type_check_as::<core::ConfigMap>(obj),
        ("", "Secret") => type_check_as::<core::Secret>(obj),
        ("apps", "Deployment") => type_check_as::<apps::Deployment>(obj),
        ("apps", "ReplicaSet") => type_check_as::<apps::ReplicaSet>(obj),
        ("coordination.k8s.io", "Lease") => type_check_as::<coord::Lease>(obj),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

fn object_name(obj: &Value) -> String {
    get(obj, "metadata")
        .and_then(|m| get_str(m, "name").or_else(|| get_str(m, "generateName")))
        .unwrap_or("")
        .to_string()
}

fn finish(info: &ResourceInfo, obj: &Value, errs: Errs) -> Result<(), ApiError> {
    if errs.is_empty() {
        return Ok(());
    }
    let causes = errs.iter().map(FieldError::to_cause).collect();
    Err(ApiError::invalid(info, &object_name(obj), causes))
}

/// Collect every field error of `obj` as a `info.kind` (without turning them into an
/// [`ApiError`]); [`validate`] is this plus the `422 Invalid` wrapping.
pub fn field_errors(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Errs::new();
    if !obj.is_object() {
        errs.push(FieldError {
            error_type: FieldErrorType::TypeInvalid,
            field: String::new(),
            bad_value: Some(truncate(go_value(obj), 120)),
            detail: format!(
                "the object must be of type object (a {} with apiVersion, kind and metadata): \"{}\"",
                info.kind,
                json_type(obj)
            ),
        });
        return errs;
    }
    let api_version = info.api_version();
    match get(obj, "apiVersion") {
        None => errs.push(FieldError::required("apiVersion", format!("must be \"{api_version}\""))),
        Some(v) if v.as_str() != Some(api_version.as_str()) => errs.push(FieldError::invalid(
            "apiVersion",
            v,
            format!("must be \"{api_version}\" for kind {}", info.kind),
        )),
        Some(_) => {}
    }
    match get(obj, "kind") {
        None => errs.push(FieldError::required("kind", format!("must be \"{}\"", info.kind))),
        Some(v) if v.as_str() != Some(info.kind) => {
            errs.push(FieldError::invalid("kind", v, format!("must be \"{}\"", info.kind)))
        }
        Some(_) => {}
    }
    validate_metadata(info, obj, &mut errs);
    // A `spec` of the wrong type is reported once, by the type check below, instead of as a
    // cascade of "Required value" for everything inside it.
    let spec_is_odd = get(obj, "spec").is_some_and(|s| !s.is_object());
    match (info.group, info.kind) {
        _ if spec_is_odd => {}
        ("", "Pod") => {
            let spec = get(obj, "spec").unwrap_or(&Value::Null);
            validate_pod_spec(spec, "spec", false, &mut errs);
        }
        ("apps", "Deployment") => validate_deployment(obj, &mut errs),
        ("apps", "ReplicaSet") => {
            let spec = get(obj, "spec").unwrap_or(&Value::Null);
            validate_replicated_spec(spec, "deployment", &mut errs);
        }
        ("", "Service") => validate_service(obj, &mut errs),
        ("", "Endpoints") => validate_endpoints(obj, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => validate_endpoint_slice(obj, &mut errs),
        ("", "Event") => validate_event(obj, &mut errs),
        ("", "ConfigMap") => validate_config_map(obj, &mut errs),
        ("", "Secret") => errs.extend(super::secret::validate(obj)),
        ("coordination.k8s.io", "Lease") => validate_lease(obj, &mut errs),
        _ => {}
    }
    // The typed decoder rejects a wrong apiVersion/kind itself; only type-check when those
    // are right, and skip a cause that a semantic rule already reported for the same field.
    let header_ok = !errs.iter().any(|e| e.field == "apiVersion" || e.field == "kind");
    if header_ok
        && let Some(type_err) = type_check(info, obj)
        && !errs.iter().any(|e| e.field == type_err.field)
    {
        errs.push(type_err);
    }
    errs
}

/// Validate an object about to be created (or the new version of an update) as a
/// `info.kind`. On failure: `422 Invalid` with one cause per problem, e.g.
/// `Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than
/// or equal to 0`.
///
/// `apiVersion` and `kind` must be present and match `info` (the API server fills them from
/// the URL first if it wants to accept bodies without them).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    finish(info, obj, field_errors(info, obj))
}

fn immutable(old: Option<&Value>, new: Option<&Value>, path: &str, errs: &mut Errs) {
    if old != new {
        errs.push(FieldError::invalid(
            path,
            new.unwrap_or(&Value::Null),
            FIELD_IMMUTABLE_ERROR_MSG,
        ));
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| get(cur, k))
}

/// Validate an update: the rules of [`validate`] for `new`, plus the fields that may not
/// change once set:
/// - `metadata.name`, `metadata.namespace` (and `metadata.uid` when both carry one);
/// - Deployment and ReplicaSet `spec.selector` (`field is immutable`: a controller's
///   selector decides which Pods it owns, changing it would orphan them);
/// - Service `spec.clusterIP` once allocated (an empty or missing new value is accepted:
///   the API server carries the old one over);
/// - ConfigMap `data`/`binaryData` when the old ConfigMap is `immutable: true`, and
///   `immutable` itself cannot be switched off;
/// - Pod `spec`, except container images, `activeDeadlineSeconds`, added tolerations and
///   setting `nodeName` when it was empty. (Real Kubernetes binds through the
///   `pods/binding` subresource; kulisse also accepts a bind by update.)
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    let mut errs = field_errors(info, new);
    for k in ["name", "namespace"] {
        let o = at(old, &["metadata", k]);
        let n = at(new, &["metadata", k]);
        if o.is_some() && n.is_some() {
            immutable(o, n, &format!("metadata.{k}"), &mut errs);
        }
    }
    let (ou, nu) = (at(old, &["metadata", "uid"]), at(new, &["metadata", "uid"]));
    if ou.is_some() && nu.is_some() {
        immutable(ou, nu, "metadata.uid", &mut errs);
    }
    match (info.group, info.kind) {
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            immutable(
                at(old, &["spec", "selector"]),
                at(new, &["spec", "selector"]),
                "spec.selector",
                &mut errs,
            );
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            immutable(
                at(old, &["addressType"]),
                at(new, &["addressType"]),
                "addressType",
                &mut errs,
            );
        }
        ("", "Service") => {
            let o = at(old, &["spec", "clusterIP"]).and_then(Value::as_str).unwrap_or("");
            let n = at(new, &["spec", "clusterIP"]).and_then(Value::as_str).unwrap_or("");
            if !o.is_empty() && !n.is_empty() && o != n {
                errs.push(FieldError::invalid_str("spec.clusterIP", n, FIELD_IMMUTABLE_ERROR_MSG));
            }
        }
        ("", "ConfigMap") if get(old, "immutable").and_then(Value::as_bool) == Some(true) => {
            if get(new, "immutable").and_then(Value::as_bool) != Some(true) {
                errs.push(FieldError::forbidden(
                    "immutable",
                    "field is immutable when `immutable` is set",
                ));
            }
            for field in ["data", "binaryData"] {
                if get(old, field) != get(new, field) {
                    errs.push(FieldError::forbidden(
                        field,
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
        }
        ("", "Pod") => validate_pod_spec_update(old, new, &mut errs),
        ("", "Secret") => errs.extend(super::secret::validate_update(old, new)),
        _ => {}
    }
    finish(info, new, errs)
}

fn validate_pod_spec_update(old: &Value, new: &Value, errs: &mut Errs) {
    let (Some(old_spec), Some(new_spec)) = (get(old, "spec"), get(new, "spec")) else {
        return;
    };
    // Copy the mutable parts of the new spec onto the old one; what remains must be equal.
    let mut masked = new_spec.clone();
    if let Some(m) = masked.as_object_mut() {
        for list in ["containers", "initContainers"] {
            let old_list = get_arr(old_spec, list);
            if let Some(Value::Array(items)) = m.get_mut(list) {
                for (i, item) in items.iter_mut().enumerate() {
                    let old_image = old_list.get(i).and_then(|c| get(c, "image")).cloned();
                    if let (Some(obj), Some(img)) = (item.as_object_mut(), old_image) {
                        obj.insert("image".into(), img);
                    }
                }
            }
        }
        for k in ["activeDeadlineSeconds", "tolerations"] {
            match get(old_spec, k) {
                Some(v) => m.insert(k.to_string(), v.clone()),
                None => m.remove(k),
            };
        }
        if get_str(old_spec, "nodeName").is_none_or(str::is_empty) {
            match get(old_spec, "nodeName") {
                Some(v) => m.insert("nodeName".to_string(), v.clone()),
                None => m.remove("nodeName"),
            };
        }
    }
    let strip_nulls = |v: &Value| -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }
    };
    if strip_nulls(&masked) != strip_nulls(old_spec) {
        errs.push(FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::registry::by_gvk;
    use serde_json::json;

    fn info(api_version: &str, kind: &str) -> &'static ResourceInfo {
        by_gvk(api_version, kind).expect("known kind")
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
                }
            }
        })
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        })
    }

    fn service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        })
    }

    /// Validate and return (message, causes as "field: body").
    fn errors(api_version: &str, kind: &str, obj: &Value) -> (String, Vec<String>) {
        let err = validate(info(api_version, kind), obj).expect_err("should be invalid");
        assert_eq!(err.code, 422);
        assert_eq!(err.reason, "Invalid");
        let causes = err
            .details
            .as_ref()
            .map(|d| d.causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect())
            .unwrap_or_default();
        (err.message, causes)
    }

    fn has(causes: &[String], needle: &str) -> bool {
        causes.iter().any(|c| c.contains(needle))
    }

    #[test]
    fn valid_objects_pass() {
        validate(info("apps/v1", "Deployment"), &deployment()).expect("deployment");
        validate(info("v1", "Pod"), &pod()).expect("pod");
        validate(info("v1", "Service"), &service()).expect("service");
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        validate(info("apps/v1", "ReplicaSet"), &rs).expect("replicaset");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
        validate(info("v1", "Namespace"), &ns).expect("namespace");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1.local"}});
        validate(info("v1", "Node"), &node).expect("node");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"app.properties": "a=b", "KEY_NAME": "x"}});
        validate(info("v1", "ConfigMap"), &cm).expect("configmap");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}});
        validate(info("coordination.k8s.io/v1", "Lease"), &lease).expect("lease");
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Scheduled"});
        validate(info("v1", "Event"), &ev).expect("event");
        let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "127.0.0.5"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]});
        validate(info("v1", "Endpoints"), &ep).expect("endpoints");
    }

    #[test]
    fn unknown_fields_are_not_errors() {
        let mut d = deployment();
        d["spec"]["someFutureField"] = json!({"x": 1});
        d["metadata"]["x-extra"] = json!(true);
        validate(info("apps/v1", "Deployment"), &d).expect("unknown fields are kept, not rejected");
    }

    #[test]
    fn negative_replicas_message_as_kubernetes() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        let (msg, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            msg,
            "Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(causes.len(), 1);
        let err = validate(info("apps/v1", "Deployment"), &d).expect_err("invalid");
        let cause = &err.details.expect("details").causes[0];
        assert_eq!(cause.reason, "FieldValueInvalid");
        assert_eq!(cause.field, "spec.replicas");
    }

    #[test]
    fn wrong_json_type_names_the_field() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!("three");
        let (msg, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec.replicas: Invalid value: \"three\": spec.replicas in body must be of type integer: \"string\""]
        );
        assert!(msg.starts_with("Deployment.apps \"web\" is invalid: spec.replicas: "));
        let err = validate(info("apps/v1", "Deployment"), &d).expect_err("invalid");
        assert_eq!(err.details.expect("details").causes[0].reason, "FieldValueTypeInvalid");

        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(42);
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec![
                "spec.template.spec.containers[0].image: Invalid value: 42: spec.template.spec.containers[0].image in body must be of type string: \"integer\""
            ]
        );

        let mut p = pod();
        p["metadata"]["labels"] = json!({"app": 1});
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(
                &causes,
                "metadata.labels.app: Invalid value: 1: metadata.labels.app in body must be of type string: \"integer\""
            ),
            "{causes:?}"
        );

        let mut p = pod();
        p["spec"]["containers"] = json!({"name": "c"});
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(&causes, "spec.containers in body must be of type array: \"object\""),
            "{causes:?}"
        );
    }

    #[test]
    fn out_of_range_and_odd_spec() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(99_999_999_999i64);
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec![
                "spec.replicas: Invalid value: 99999999999: must be a 32-bit integer (between -2147483648 and 2147483647)"
            ]
        );
        let mut d = deployment();
        d["spec"] = json!("nope");
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec: Invalid value: \"nope\": spec in body must be of type object: \"string\""]
        );
        let mut d = deployment();
        d["metadata"]["creationTimestamp"] = json!("yesterday");
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert!(
            has(&causes, "metadata.creationTimestamp: Invalid value: \"yesterday\""),
            "{causes:?}"
        );
    }

    #[test]
    fn missing_required_typed_field_is_required_value() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "targetPort": 80}]}});
        let (_, causes) = errors("v1", "Service", &svc);
        assert_eq!(causes, vec!["spec.ports[0].port: Required value"]);
    }

    #[test]
    fn api_version_and_kind_must_match() {
        let mut d = deployment();
        d["apiVersion"] = json!("v1");
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["apiVersion: Invalid value: \"v1\": must be \"apps/v1\" for kind Deployment"]
        );
        let mut d = deployment();
        d["kind"] = json!("Pod");
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(causes, vec!["kind: Invalid value: \"Pod\": must be \"Deployment\""]);
        let mut d = deployment();
        d.as_object_mut().map(|m| m.remove("kind"));
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(causes, vec!["kind: Required value: must be \"Deployment\""]);
    }

    #[test]
    fn non_object_is_rejected() {
        let (_, causes) = errors("v1", "Pod", &json!([1, 2]));
        assert_eq!(causes.len(), 1);
        assert!(causes[0].contains("must be of type object"), "{causes:?}");
    }

    #[test]
    fn name_required_and_subdomain_rules() {
        let mut p = pod();
        p["metadata"].as_object_mut().map(|m| m.remove("name"));
        let (msg, _) = errors("v1", "Pod", &p);
        assert_eq!(
            msg,
            "Pod \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        // generateName alone is fine.
        p["metadata"]["generateName"] = json!("web-");
        validate(info("v1", "Pod"), &p).expect("generateName");

        let mut p = pod();
        p["metadata"]["name"] = json!("Web_1");
        let (msg, _) = errors("v1", "Pod", &p);
        assert_eq!(
            msg,
            "Pod \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        for ok in ["a", "a.b", "web-1", "1web", "a-b.c-d"] {
            assert!(is_dns1123_subdomain(ok).is_empty(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", ".a", "a.", "A", "a_b", "a b"] {
            assert!(!is_dns1123_subdomain(bad).is_empty(), "{bad}");
        }
        let long = "a".repeat(254);
        assert_eq!(is_dns1123_subdomain(&long), vec!["must be no more than 253 characters"]);
        assert!(is_dns1123_subdomain(&"a".repeat(253)).is_empty());
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team.a"}});
        let (msg, _) = errors("v1", "Namespace", &ns);
        assert_eq!(
            msg,
            "Namespace \"team.a\" is invalid: metadata.name: Invalid value: \"team.a\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        let long = "a".repeat(64);
        assert_eq!(is_dns1123_label(&long), vec!["must be no more than 63 characters"]);
        assert!(is_dns1123_label(&"a".repeat(63)).is_empty());
    }

    #[test]
    fn service_names_are_dns1035_labels() {
        let mut s = service();
        s["metadata"]["name"] = json!("1web");
        let (_, causes) = errors("v1", "Service", &s);
        assert_eq!(
            causes,
            vec![
                "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        let mut s = service();
        s["metadata"]["name"] = json!("web.a");
        errors("v1", "Service", &s);
    }

    #[test]
    fn namespace_field_checked_for_namespaced_kinds() {
        let mut p = pod();
        p["metadata"]["namespace"] = json!("Bad_NS");
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(&causes, "metadata.namespace: Invalid value: \"Bad_NS\""),
            "{causes:?}"
        );
    }

    #[test]
    fn label_keys_and_values() {
        let mut p = pod();
        p["metadata"]["labels"] = json!({"bad key": "ok", "app": "bad value!", "example.com/x": "y", "a/b/c": "z"});
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(
                &causes,
                "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of"
            ),
            "{causes:?}"
        );
        assert!(!has(&causes, "example.com/x"), "{causes:?}");
        assert_eq!(causes.len(), 3, "{causes:?}");

        assert!(is_valid_label_value("").is_empty());
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(is_qualified_name("/x"), vec!["prefix part must be non-empty"]);
        assert!(is_qualified_name("x/").contains(&"name part must be non-empty".to_string()));
        assert!(is_qualified_name(&"a".repeat(64))[0].starts_with("name part must be no more than 63"));
        assert!(is_qualified_name("Bad_Prefix/x")[0].starts_with("prefix part a lowercase RFC 1123 subdomain"));
    }

    #[test]
    fn selector_required_and_must_match_template() {
        let mut d = deployment();
        d["spec"].as_object_mut().map(|m| m.remove("selector"));
        let (msg, _) = errors("apps/v1", "Deployment", &d);
        assert_eq!(msg, "Deployment.apps \"web\" is invalid: spec.selector: Required value");

        let mut d = deployment();
        d["spec"]["selector"]["matchLabels"] = json!({"app": "x"});
        let (msg, _) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            msg,
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`"
        );

        let mut d = deployment();
        d["spec"]["selector"] = json!({});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );

        let mut d = deployment();
        d["spec"]["selector"] = json!({"matchExpressions": [
            {"key": "app", "operator": "In"},
            {"key": "tier", "operator": "Exists", "values": ["x"]},
            {"key": "x", "operator": "Near", "values": ["y"]}
        ]});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert!(
            has(
                &causes,
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.selector.matchExpressions[2].operator: Invalid value: \"Near\": not a valid selector operator"
            ),
            "{causes:?}"
        );
    }

    #[test]
    fn containers_required_with_name_and_image() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"] = json!([]);
        let (msg, _) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            msg,
            "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"
        );
        let mut p = pod();
        p["spec"]["containers"] =
            json!([{}, {"name": "c", "image": "x"}, {"name": "c", "image": "y"}, {"name": "Bad_Name", "image": " "}]);
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(has(&causes, "spec.containers[0].name: Required value"), "{causes:?}");
        assert!(has(&causes, "spec.containers[0].image: Required value"), "{causes:?}");
        assert!(
            has(&causes, "spec.containers[2].name: Duplicate value: \"c\""),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[3].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"
            ),
            "{causes:?}"
        );
        assert!(has(&causes, "spec.containers[3].image: Required value"), "{causes:?}");
        let mut p = pod();
        p["spec"].as_object_mut().map(|m| m.remove("containers"));
        let (_, causes) = errors("v1", "Pod", &p);
        assert_eq!(causes, vec!["spec.containers: Required value"]);
    }

    #[test]
    fn container_ports() {
        let mut p = pod();
        p["spec"]["containers"][0]["ports"] = json!([
            {"containerPort": 0},
            {"containerPort": 70000},
            {"containerPort": 80, "name": "http", "protocol": "HTTP"},
            {"containerPort": 81, "name": "http"},
            {"containerPort": 82, "name": "Bad--"},
            {"containerPort": 83, "hostPort": -1}
        ]);
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(&causes, "spec.containers[0].ports[0].containerPort: Required value"),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\""
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.containers[0].ports[3].name: Duplicate value: \"http\""),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[0].ports[4].name: Invalid value: \"Bad--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[0].ports[4].name: Invalid value: \"Bad--\": must not contain consecutive hyphens (-)"
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.containers[0].ports[5].hostPort: Invalid value: -1"),
            "{causes:?}"
        );
        assert_eq!(
            is_valid_port_name("8080"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a-very-long-port-name"),
            vec!["must be no more than 15 characters"]
        );
        assert_eq!(
            is_valid_port_name("-a"),
            vec!["must not begin or end with a hyphen (-)"]
        );
    }

    #[test]
    fn topology_spread_constraints_are_validated_as_upstream() {
        let mut p = pod();
        p["spec"]["topologySpreadConstraints"] = json!([
            {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Sometimes", "minDomains": 2,
             "nodeAffinityPolicy": "Maybe", "matchLabelKeys": ["app"]},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Near"}]},
             "matchLabelKeys": ["app", "bad key"]},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 0},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
        ]);
        let (_, causes) = errors("v1", "Pod", &p);
        let c = "spec.topologySpreadConstraints";
        for want in [
            format!("{c}[0].maxSkew: Invalid value: 0: must be greater than zero"),
            format!("{c}[0].topologyKey: Required value: can not be empty"),
            format!(
                "{c}[0].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
            ),
            format!(
                "{c}[0].minDomains: Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not Sometimes"
            ),
            format!("{c}[0].nodeAffinityPolicy: Unsupported value: \"Maybe\": supported values: \"Honor\", \"Ignore\""),
            format!("{c}[0].matchLabelKeys: Forbidden: must not be specified when labelSelector is not set"),
            format!("{c}[1].{{topologyKey, whenUnsatisfiable}}: Duplicate value: \"{{zone, ScheduleAnyway}}\""),
            format!(
                "{c}[1].matchLabelKeys[0]: Invalid value: \"app\": exists in both matchLabelKeys and labelSelector"
            ),
            format!(
                "{c}[1].labelSelector.matchExpressions[0].operator: Invalid value: \"Near\": not a valid selector operator"
            ),
            format!("{c}[2].minDomains: Invalid value: 0: must be greater than zero"),
        ] {
            assert!(has(&causes, &want), "missing {want:?} in {causes:?}");
        }
        assert!(
            causes
                .iter()
                .any(|x| x.starts_with(&format!("{c}[1].matchLabelKeys[1]: Invalid value: \"bad key\""))),
            "{causes:?}"
        );
        assert!(!causes.iter().any(|x| x.starts_with(&format!("{c}[3]"))), "{causes:?}");

        // a valid one passes, in a Deployment's template too
        let mut d = deployment();
        d["spec"]["template"]["spec"]["topologySpreadConstraints"] = json!([{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "minDomains": 3, "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash"],
            "nodeAffinityPolicy": "Honor", "nodeTaintsPolicy": "Ignore"}]);
        validate(info("apps/v1", "Deployment"), &d).expect("valid");
        d["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["maxSkew"] = json!(-1);
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            ["spec.template.spec.topologySpreadConstraints[0].maxSkew: Invalid value: -1: must be greater than zero"]
        );
    }

    #[test]
    fn pod_enums_and_template_restart_policy() {
        let mut p = pod();
        p["spec"]["restartPolicy"] = json!("Sometimes");
        p["spec"]["dnsPolicy"] = json!("Google");
        p["spec"]["containers"][0]["imagePullPolicy"] = json!("Maybe");
        let (_, causes) = errors("v1", "Pod", &p);
        assert!(
            has(
                &causes,
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.dnsPolicy: Unsupported value: \"Google\""),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\""
            ),
            "{causes:?}"
        );

        let mut d = deployment();
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]
        );
    }

    #[test]
    fn deployment_strategy_rules() {
        let mut d = deployment();
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"]
        );

        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25", "maxUnavailable": "150%"}});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert!(
            has(
                &causes,
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"25\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"
            ),
            "{causes:?}"
        );

        d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
        );

        d["spec"]["strategy"] = json!({"type": "BlueGreen"});
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(
            causes,
            vec![
                "spec.strategy: Unsupported value: {\"type\":\"BlueGreen\"}: supported values: \"Recreate\", \"RollingUpdate\""
            ]
        );

        let mut d = deployment();
        d["spec"]["revisionHistoryLimit"] = json!(-2);
        d["spec"]["minReadySeconds"] = json!(10);
        d["spec"]["progressDeadlineSeconds"] = json!(5);
        let (_, causes) = errors("apps/v1", "Deployment", &d);
        assert!(
            has(
                &causes,
                "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds"
            ),
            "{causes:?}"
        );
    }

    #[test]
    fn service_port_rules() {
        let mut s = service();
        s["spec"]["ports"] = json!([
            {"name": "http", "port": 0, "targetPort": 70000},
            {"name": "http", "port": 443, "targetPort": "Bad_Name", "nodePort": 30001},
            {"port": 8080, "protocol": "ICMP"}
        ]);
        let (_, causes) = errors("v1", "Service", &s);
        assert!(
            has(
                &causes,
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.ports[1].name: Duplicate value: \"http\""),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.ports[1].targetPort: Invalid value: \"Bad_Name\": must contain only alpha-numeric characters"
            ),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "spec.ports[1].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
            ),
            "{causes:?}"
        );
        assert!(has(&causes, "spec.ports[2].name: Required value"), "{causes:?}");
        assert!(
            has(&causes, "spec.ports[2].protocol: Unsupported value: \"ICMP\""),
            "{causes:?}"
        );

        let mut s = service();
        s["spec"]["type"] = json!("NodePort");
        s["spec"]["ports"][0]["nodePort"] = json!(80);
        let (_, causes) = errors("v1", "Service", &s);
        assert_eq!(
            causes,
            vec![
                "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
            ]
        );
        s["spec"]["ports"][0]["nodePort"] = json!(30080);
        validate(info("v1", "Service"), &s).expect("nodePort in range");

        let mut s = service();
        s["spec"]["ports"] = json!([]);
        let (_, causes) = errors("v1", "Service", &s);
        assert_eq!(causes, vec!["spec.ports: Required value"]);
        s["spec"]["clusterIP"] = json!("None");
        validate(info("v1", "Service"), &s).expect("headless service without ports");

        let mut s = service();
        s["spec"]["ports"] = json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]);
        let (_, causes) = errors("v1", "Service", &s);
        assert_eq!(
            causes,
            vec!["spec.ports[1]: Duplicate value: {\"port\":80,\"protocol\":\"TCP\"}"]
        );

        let mut s = service();
        s["spec"]["type"] = json!("Magic");
        s["spec"]["clusterIP"] = json!("not-an-ip");
        s["spec"]["selector"] = json!({"app": "bad value!"});
        let (_, causes) = errors("v1", "Service", &s);
        assert!(
            has(
                &causes,
                "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.clusterIP: Invalid value: \"not-an-ip\""),
            "{causes:?}"
        );
        assert!(
            has(&causes, "spec.selector: Invalid value: \"bad value!\""),
            "{causes:?}"
        );
    }

    #[test]
    fn event_needs_involved_object() {
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}});
        let (_, causes) = errors("v1", "Event", &ev);
        assert_eq!(causes, vec!["involvedObject: Required value"]);
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}});
        let (_, causes) = errors("v1", "Event", &ev);
        assert_eq!(
            causes,
            vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
        );
    }

    #[test]
    fn config_map_keys() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"bad key": "x", "..x": "y", "ok": "z"}, "binaryData": {"ok": "aGk="}});
        let (_, causes) = errors("v1", "ConfigMap", &cm);
        assert!(
            has(
                &causes,
                "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
            ),
            "{causes:?}"
        );
        assert!(
            has(&causes, "data[..x]: Invalid value: \"..x\": must not start with '..'"),
            "{causes:?}"
        );
        assert!(
            has(
                &causes,
                "data[ok]: Invalid value: \"ok\": duplicate of key present in binaryData"
            ),
            "{causes:?}"
        );
        assert_eq!(is_config_map_key("."), vec!["must not be '.'"]);
        let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"big": "x".repeat(1024 * 1024 + 1)}});
        let (_, causes) = errors("v1", "ConfigMap", &big);
        assert_eq!(causes, vec!["data: Too long: may not be more than 1048576 bytes"]);
        let bad_b64 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "binaryData": {"k": "%%%"}});
        let (_, causes) = errors("v1", "ConfigMap", &bad_b64);
        assert!(has(&causes, "binaryData.k: Invalid value: \"%%%\""), "{causes:?}");
    }

    #[test]
    fn endpoints_and_lease_rules() {
        let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "nope"}, {}], "ports": [{"port": 0}]}]});
        let (_, causes) = errors("v1", "Endpoints", &ep);
        assert!(
            has(&causes, "subsets[0].addresses[0].ip: Invalid value: \"nope\""),
            "{causes:?}"
        );
        assert!(has(&causes, "subsets[0].addresses[1].ip: Required value"), "{causes:?}");
        assert!(has(&causes, "subsets[0].ports[0].port: Invalid value: 0"), "{causes:?}");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}});
        let (_, causes) = errors("coordination.k8s.io/v1", "Lease", &lease);
        assert_eq!(
            causes,
            vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
        );
    }

    #[test]
    fn several_causes_are_bracketed() {
        let mut d = deployment();
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .map(|m| m.remove("image"));
        let (msg, causes) = errors("apps/v1", "Deployment", &d);
        assert_eq!(causes.len(), 2);
        assert_eq!(
            msg,
            "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.spec.containers[0].image: Required value]"
        );
    }

    #[test]
    fn update_selector_is_immutable() {
        let old = deployment();
        let mut new = deployment();
        new["spec"]["selector"] = json!({"matchLabels": {"app": "web2"}});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web2"});
        let err = validate_update(info("apps/v1", "Deployment"), &old, &new).expect_err("immutable");
        assert_eq!(
            err.message,
            "Deployment.apps \"web\" is invalid: spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web2\"}}: field is immutable"
        );
        let mut same = deployment();
        same["spec"]["replicas"] = json!(5);
        validate_update(info("apps/v1", "Deployment"), &old, &same).expect("replicas may change");
        let mut renamed = deployment();
        renamed["metadata"]["name"] = json!("other");
        let err = validate_update(info("apps/v1", "Deployment"), &old, &renamed).expect_err("name");
        assert!(
            err.message
                .contains("metadata.name: Invalid value: \"other\": field is immutable")
        );
    }

    #[test]
    fn update_service_cluster_ip_is_immutable_once_set() {
        let mut old = service();
        old["spec"]["clusterIP"] = json!("10.96.0.10");
        let mut new = service();
        new["spec"]["clusterIP"] = json!("10.96.0.11");
        let err = validate_update(info("v1", "Service"), &old, &new).expect_err("immutable");
        assert_eq!(
            err.message,
            "Service \"web\" is invalid: spec.clusterIP: Invalid value: \"10.96.0.11\": field is immutable"
        );
        validate_update(info("v1", "Service"), &old, &service()).expect("omitted clusterIP is carried over");
        validate_update(info("v1", "Service"), &service(), &new).expect("first allocation");
    }

    #[test]
    fn update_immutable_config_map() {
        let mut old = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"a": "1"}, "immutable": true});
        let mut new = old.clone();
        new["data"]["a"] = json!("2");
        let err = validate_update(info("v1", "ConfigMap"), &old, &new).expect_err("immutable");
        assert!(
            err.message
                .contains("data: Forbidden: field is immutable when `immutable` is set")
        );
        old["immutable"] = json!(false);
        validate_update(info("v1", "ConfigMap"), &old, &new).expect("mutable config map");
    }

    #[test]
    fn update_pod_spec_mostly_immutable() {
        let old = pod();
        let mut new = pod();
        new["spec"]["containers"][0]["image"] = json!("busybox:1.36");
        new["spec"]["nodeName"] = json!("node-1");
        validate_update(info("v1", "Pod"), &old, &new).expect("image and binding may change");
        let mut bound = new.clone();
        bound["spec"]["nodeName"] = json!("node-2");
        let err = validate_update(info("v1", "Pod"), &new, &bound).expect_err("rebinding");
        assert!(
            err.message
                .contains("spec: Forbidden: pod updates may not change fields")
        );
        let mut new = pod();
        new["spec"]["containers"][0]["name"] = json!("d");
        validate_update(info("v1", "Pod"), &old, &new).expect_err("container name");
    }

    #[test]
    fn go_value_rendering() {
        assert_eq!(go_value(&json!("a\"b")), "\"a\\\"b\"");
        assert_eq!(go_value(&json!(-1)), "-1");
        assert_eq!(go_value(&json!(true)), "true");
        assert_eq!(go_value(&Value::Null), "null");
        assert_eq!(go_value(&json!({"b": 1, "a": [2]})), "{\"a\":[2],\"b\":1}");
    }
}
