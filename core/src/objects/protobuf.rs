//! # Kubernetes' protobuf encoding (mirrors apimachinery's `runtime/serializer/protobuf`)
//!
//! Besides JSON and YAML, every built-in Kubernetes kind has a binary encoding, and the
//! typed clients of client-go (and so `kubectl create`, `kubectl run`, `kubectl expose`)
//! prefer it: they send `Content-Type: application/vnd.kubernetes.protobuf` and
//! `Accept: application/vnd.kubernetes.protobuf,application/json`. A body looks like this:
//!
//! ```text
//! 6b 38 73 00                 the magic "k8s\0": "this is a Kubernetes protobuf object"
//! runtime.Unknown {           a protobuf message that wraps the object:
//!   typeMeta { apiVersion: "v1", kind: "ConfigMap" }
//!   raw: <the ConfigMap as a protobuf message, k8s.io.api.core.v1.ConfigMap>
//!   contentEncoding: "", contentType: ""
//! }
//! ```
//!
//! The schemas are Kubernetes' own `generated.proto` files, vendored under `core/proto/`
//! and compiled at build time by `protox` (a protobuf compiler in Rust, no `protoc`).
//! kulisse has no Rust structs for them: a [`prost_reflect::DynamicMessage`] walks any
//! message by its descriptor, so one converter serves every kind, and a new kind needs
//! only its `.proto` file.
//!
//! Objects are raw JSON inside kulisse, so this module turns protobuf into exactly the JSON
//! the Go API server would write after decoding it into its Go structs, and back:
//!
//! - field names are the JSON names (go-to-protobuf names fields after their JSON tag);
//! - `int64` stays a JSON number, `bytes` become base64 strings, maps get sorted keys;
//! - some messages have a JSON form of their own: `Time` and `MicroTime` (RFC 3339),
//!   `Duration` (`"1h0m0s"`), `IntOrString` (a number or a string), `Quantity`
//!   (`"500m"`), `RawExtension` and `FieldsV1` (embedded JSON);
//! - a Go struct embedded with `json:",inline"` (a Volume's `VolumeSource`, a Probe's
//!   handler) is a field of its own in protobuf, but its fields sit in the parent in JSON;
//! - Go's protobuf code writes every non-pointer scalar, even when it is zero (an empty
//!   `namespace`, `generation: 0`), while Go's JSON drops zero values marked `omitempty`.
//!   Which fields keep a zero in JSON (pointers such as `replicas`, and fields without
//!   `omitempty`) and which are inlined cannot be read from the `.proto` files, so
//!   `core/proto/go-fields.txt` lists them; `core/proto/gofields/` is the small Go program
//!   that reads them from the Go types by reflection.
//!
//! JSON fields that the schema does not know cannot be carried in protobuf; they are left
//! out of a protobuf answer (the stored object keeps them).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use base64::Engine;
use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value as Pb,
};
use serde_json::{Map, Number, Value};

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How deep `RawExtension`s holding protobuf may nest inside each other.
const MAX_EMBEDDED_DEPTH: usize = 4;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Why a body could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtobufError(pub String);

fn err(message: impl Into<String>) -> ProtobufError {
    ProtobufError(message.into())
}

/// The descriptors of every vendored Kubernetes message, compiled by `build.rs`.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/k8s-descriptors.bin"))[..])
            .expect("the descriptor set is compiled from the vendored protos by build.rs")
    })
}

/// What Go's JSON encoding does with one field, beyond the `.proto` file.
#[derive(Default, Clone, Copy)]
struct GoField {
    inline: bool,
    keep_zero: bool,
}

fn go_fields() -> &'static HashMap<&'static str, GoField> {
    static FIELDS: OnceLock<HashMap<&'static str, GoField>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut map: HashMap<&'static str, GoField> = HashMap::new();
        for line in include_str!("../../proto/go-fields.txt").lines() {
            let Some((field, rule)) = line.split_once(' ') else {
                continue;
            };
            let entry = map.entry(field).or_default();
            match rule {
                "inline" => entry.inline = true,
                "keepzero" => entry.keep_zero = true,
                _ => {}
            }
        }
        map
    })
}

fn go_field(msg: &MessageDescriptor, field: &FieldDescriptor) -> GoField {
    let key = format!("{}.{}", msg.full_name(), field.name());
    go_fields().get(key.as_str()).copied().unwrap_or_default()
}

/// The protobuf message of an `apiVersion` and `kind`, if the vendored schemas have it:
/// `v1 Pod` → `k8s.io.api.core.v1.Pod`, `apps/v1 Deployment` → `k8s.io.api.apps.v1.Deployment`,
/// `coordination.k8s.io/v1 Lease` → `k8s.io.api.coordination.v1.Lease`, and the kinds of
/// `meta/v1` (`Status`, `DeleteOptions`, `WatchEvent`) under any version `v1`.
pub fn message_for(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = super::registry::split_api_version(api_version);
    let short_group = match group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    let typed = format!("k8s.io.api.{short_group}.{version}.{kind}");
    pool().get_message_by_name(&typed).or_else(|| {
        (version == "v1" && matches!(group, "" | "meta.k8s.io"))
            .then(|| pool().get_message_by_name(&format!("{META}.{kind}")))
            .flatten()
    })
}

/// Can this object be written in protobuf? (Its kind has a schema; `Table` has none.)
pub fn has_schema(obj: &Value) -> bool {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    message_for(s("apiVersion"), s("kind")).is_some()
}

/// Does the OpenAPI schema `name` (`io.k8s.api.core.v1.Pod`) have a protobuf message
/// (`k8s.io.api.core.v1.Pod`)? What the OpenAPI documents advertise follows from it.
pub fn has_openapi_message(name: &str) -> bool {
    name.strip_prefix("io.k8s.")
        .is_some_and(|rest| pool().get_message_by_name(&format!("k8s.io.{rest}")).is_some())
}

// ---------------------------------------------------------------------------------------
// protobuf → JSON
// ---------------------------------------------------------------------------------------

/// Decode a whole body: the magic, the `runtime.Unknown` envelope, and the object in it.
/// The result carries `apiVersion` and `kind` first, as a JSON body would.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_at(body, 0)
}

fn decode_at(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_EMBEDDED_DEPTH {
        return Err(err("protobuf objects are nested too deeply"));
    }
    let rest = body.strip_prefix(&MAGIC[..]).ok_or_else(|| {
        err("the body is not Kubernetes protobuf: it must start with the 4 bytes \"k8s\\x00\" followed by a runtime.Unknown message")
    })?;
    let unknown_desc = pool()
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .expect("runtime.Unknown is vendored");
    let unknown = DynamicMessage::decode(unknown_desc, rest)
        .map_err(|e| err(format!("the runtime.Unknown envelope is malformed: {e}")))?;
    let text = |m: &DynamicMessage, name: &str| {
        m.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned())
        .ok_or_else(|| err("the runtime.Unknown envelope has no typeMeta (apiVersion and kind)"))?;
    let (api_version, kind) = (text(&type_meta, "apiVersion"), text(&type_meta, "kind"));
    let encoding = text(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(err(format!("the content encoding {encoding:?} is not supported")));
    }
    let content_type = text(&unknown, "contentType");
    if !content_type.is_empty() && content_type != MEDIA_TYPE {
        return Err(err(format!(
            "the embedded content type {content_type:?} is not supported"
        )));
    }
    let desc = message_for(&api_version, &kind).ok_or_else(|| {
        err(format!(
            "no protobuf schema for kind {kind:?} in apiVersion {api_version:?}"
        ))
    })?;
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let msg = DynamicMessage::decode(desc, raw)
        .map_err(|e| err(format!("the {kind} in the body is malformed protobuf: {e}")))?;
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind));
    out.insert("apiVersion".into(), Value::String(api_version));
    if let Some(Value::Object(fields)) = message_to_json(&msg, depth)? {
        out.extend(fields);
    }
    Ok(Value::Object(out))
}

/// One message as JSON; `None` when Go would leave it out (a zero `Time`).
fn message_to_json(msg: &DynamicMessage, depth: usize) -> Result<Option<Value>, ProtobufError> {
    let desc = msg.descriptor();
    let name = desc.full_name();
    if let Some(special) = special_to_json(name, msg, depth)? {
        return Ok(special);
    }
    let mut out = Map::new();
    for (field, value) in msg.fields() {
        let go = go_field(&desc, &field);
        if go.inline {
            if let Some(Value::Object(inner)) = value
                .as_message()
                .map(|m| message_to_json(m, depth))
                .transpose()?
                .flatten()
            {
                out.extend(inner);
            }
            continue;
        }
        if !go.keep_zero && !field.is_list() && !field.is_map() && is_zero_scalar(value) {
            continue;
        }
        if let Some(json) = field_to_json(value, depth)? {
            out.insert(field.name().to_string(), json);
        }
    }
    Ok(Some(Value::Object(out)))
}

fn is_zero_scalar(value: &Pb) -> bool {
    match value {
        Pb::Bool(b) => !b,
        Pb::I32(n) => *n == 0,
        Pb::I64(n) => *n == 0,
        Pb::U32(n) => *n == 0,
        Pb::U64(n) => *n == 0,
        Pb::F32(n) => *n == 0.0,
        Pb::F64(n) => *n == 0.0,
        Pb::String(s) => s.is_empty(),
        Pb::Bytes(b) => b.is_empty(),
        Pb::EnumNumber(n) => *n == 0,
        Pb::Message(_) | Pb::List(_) | Pb::Map(_) => false,
    }
}

fn field_to_json(value: &Pb, depth: usize) -> Result<Option<Value>, ProtobufError> {
    match value {
        Pb::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(scalar_or_message(item, depth)?.unwrap_or(Value::Null));
            }
            Ok(Some(Value::Array(out)))
        }
        Pb::Map(entries) => {
            let mut sorted = BTreeMap::new();
            for (key, item) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                sorted.insert(key, scalar_or_message(item, depth)?.unwrap_or(Value::Null));
            }
            Ok(Some(Value::Object(sorted.into_iter().collect())))
        }
        other => scalar_or_message(other, depth),
    }
}

fn scalar_or_message(value: &Pb, depth: usize) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match value {
        Pb::Bool(b) => Value::Bool(*b),
        Pb::I32(n) => Value::from(*n),
        Pb::I64(n) => Value::from(*n),
        Pb::U32(n) => Value::from(*n),
        Pb::U64(n) => Value::from(*n),
        Pb::EnumNumber(n) => Value::from(*n),
        Pb::F32(n) => Number::from_f64(f64::from(*n)).map_or(Value::Null, Value::Number),
        Pb::F64(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Pb::String(s) => Value::String(s.clone()),
        Pb::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Pb::Message(m) => return message_to_json(m, depth),
        Pb::List(_) | Pb::Map(_) => return Err(err("a list or map nested directly in a list")),
    }))
}

/// The messages whose JSON form is not an object of their fields. `Ok(None)`: not special.
fn special_to_json(name: &str, msg: &DynamicMessage, depth: usize) -> Result<Option<Option<Value>>, ProtobufError> {
    let int = |field: &str| {
        msg.get_field_by_name(field)
            .and_then(|v| v.as_i64().or(v.as_i32().map(i64::from)))
    };
    let bytes = |field: &str| msg.get_field_by_name(field).and_then(|v| v.as_bytes().cloned());
    let out = match name.strip_prefix("k8s.io.apimachinery.pkg.") {
        Some("apis.meta.v1.Time") | Some("apis.meta.v1.MicroTime") => {
            if !msg.has_field_by_name("seconds") && !msg.has_field_by_name("nanos") {
                None
            } else {
                let micro = name.ends_with("MicroTime");
                let (secs, nanos) = (int("seconds").unwrap_or(0), int("nanos").unwrap_or(0));
                Some(Value::String(format_time(secs, nanos, micro)?))
            }
        }
        Some("apis.meta.v1.Duration") => Some(Value::String(format_duration(int("duration").unwrap_or(0)))),
        Some("util.intstr.IntOrString") => Some(match int("type").unwrap_or(0) {
            1 => Value::String(
                msg.get_field_by_name("strVal")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            ),
            _ => Value::from(int("intVal").unwrap_or(0)),
        }),
        Some("api.resource.Quantity") => Some(Value::String(
            msg.get_field_by_name("string")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        )),
        Some("runtime.RawExtension") => embedded_to_json(&bytes("raw").unwrap_or_default(), depth)?,
        Some("apis.meta.v1.FieldsV1") => embedded_to_json(&bytes("Raw").unwrap_or_default(), depth)?,
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// The bytes of a `RawExtension` or `FieldsV1`: JSON, or a nested protobuf object.
fn embedded_to_json(raw: &[u8], depth: usize) -> Result<Option<Value>, ProtobufError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if raw.starts_with(MAGIC) {
        return decode_at(raw, depth + 1).map(Some);
    }
    serde_json::from_slice(raw).map(Some).map_err(|e| {
        err(format!(
            "an embedded object is neither JSON nor Kubernetes protobuf: {e}"
        ))
    })
}

fn format_time(secs: i64, nanos: i64, micro: bool) -> Result<String, ProtobufError> {
    let nanos = u32::try_from(nanos).ok().filter(|n| *n < 1_000_000_000);
    let t = nanos
        .and_then(|n| chrono::DateTime::from_timestamp(secs, n))
        .ok_or_else(|| err(format!("the time {secs}s {nanos:?}ns is out of range")))?;
    Ok(if micro {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |value: u64, unit: u64| {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let s = format!("{whole}.{rest:0digits$}");
            s.trim_end_matches('0').to_string()
        }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
    let s = frac(n % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn parse_duration(text: &str) -> Result<i64, ProtobufError> {
    let bad = || err(format!("{text:?} is not a duration such as \"1h30m\" or \"90s\""));
    let (neg, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}

// ---------------------------------------------------------------------------------------
// JSON → protobuf
// ---------------------------------------------------------------------------------------

/// Encode an object (with `apiVersion` and `kind`) as a whole protobuf body: the magic and
/// a `runtime.Unknown` holding the object.
pub fn encode(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (s("apiVersion"), s("kind"));
    let desc = message_for(api_version, kind).ok_or_else(|| {
        err(format!(
            "no protobuf schema for kind {kind:?} in apiVersion {api_version:?}"
        ))
    })?;
    let map = obj.as_object().ok_or_else(|| err("the object is not a JSON object"))?;
    let raw = json_to_message(&desc, map)?.encode_to_vec();
    Ok(envelope(api_version, kind, raw))
}

/// `k8s\0` + `runtime.Unknown{typeMeta{apiVersion, kind}, raw}`.
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown_desc = pool()
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .expect("runtime.Unknown is vendored");
    let type_meta_desc = pool()
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.TypeMeta")
        .expect("runtime.TypeMeta is vendored");
    let mut type_meta = DynamicMessage::new(type_meta_desc);
    type_meta.set_field_by_name("apiVersion", Pb::String(api_version.into()));
    type_meta.set_field_by_name("kind", Pb::String(kind.into()));
    let mut unknown = DynamicMessage::new(unknown_desc);
    unknown.set_field_by_name("typeMeta", Pb::Message(type_meta));
    unknown.set_field_by_name("raw", Pb::Bytes(raw.into()));
    unknown.set_field_by_name("contentEncoding", Pb::String(String::new()));
    unknown.set_field_by_name("contentType", Pb::String(String::new()));
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

fn json_to_message(desc: &MessageDescriptor, obj: &Map<String, Value>) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    for field in desc.fields() {
        let go = go_field(desc, &field);
        if go.inline {
            let Kind::Message(inner) = field.kind() else { continue };
            let sub: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| inner.get_field_by_name(k).is_some() || inlined_in(&inner, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !sub.is_empty() {
                msg.set_field(&field, Pb::Message(json_to_message(&inner, &sub)?));
            }
            continue;
        }
        match obj.get(field.name()) {
            None | Some(Value::Null) => {}
            Some(value) => {
                let pb = field_from_json(&field, value).map_err(|e| err(format!("{}: {}", field.name(), e.0)))?;
                msg.try_set_field(&field, pb)
                    .map_err(|e| err(format!("{}: {e}", field.name())))?;
            }
        }
    }
    Ok(msg)
}

/// Does an inline field of `desc` (one level down) know the JSON key?
fn inlined_in(desc: &MessageDescriptor, key: &str) -> bool {
    desc.fields().any(|f| {
        go_field(desc, &f).inline && matches!(f.kind(), Kind::Message(m) if m.get_field_by_name(key).is_some())
    })
}

fn field_from_json(field: &FieldDescriptor, value: &Value) -> Result<Pb, ProtobufError> {
    let kind = field.kind();
    if field.is_map() {
        let Kind::Message(entry) = &kind else {
            return Err(err("a map without an entry type"));
        };
        let value_kind = entry.map_entry_value_field().kind();
        let object = value.as_object().ok_or_else(|| err("expected an object"))?;
        let mut out = HashMap::new();
        for (k, v) in object {
            if !v.is_null() {
                out.insert(MapKey::String(k.clone()), value_from_json(&value_kind, v)?);
            }
        }
        return Ok(Pb::Map(out));
    }
    if field.is_list() {
        let items = value.as_array().ok_or_else(|| err("expected a list"))?;
        let out: Result<Vec<Pb>, ProtobufError> = items.iter().map(|v| value_from_json(&kind, v)).collect();
        return Ok(Pb::List(out?));
    }
    value_from_json(&kind, value)
}

fn value_from_json(kind: &Kind, value: &Value) -> Result<Pb, ProtobufError> {
    let int = || {
        value
            .as_i64()
            .ok_or_else(|| err(format!("expected an integer, got {value}")))
    };
    Ok(match kind {
        Kind::Bool => Pb::Bool(value.as_bool().ok_or_else(|| err("expected true or false"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Pb::I32(i32::try_from(int()?).map_err(|_| err(format!("{value} does not fit in 32 bits")))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            Pb::U32(u32::try_from(int()?).map_err(|_| err(format!("{value} does not fit in 32 bits")))?)
        }
        Kind::Uint64 | Kind::Fixed64 => Pb::U64(value.as_u64().ok_or_else(|| err("expected a natural number"))?),
        Kind::Float => Pb::F32(value.as_f64().ok_or_else(|| err("expected a number"))? as f32),
        Kind::Double => Pb::F64(value.as_f64().ok_or_else(|| err("expected a number"))?),
        Kind::String => Pb::String(
            value
                .as_str()
                .ok_or_else(|| err(format!("expected a string, got {value}")))?
                .into(),
        ),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(|| err("expected a base64 string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| err(format!("not valid base64: {e}")))?;
            Pb::Bytes(bytes.into())
        }
        Kind::Enum(_) => Pb::EnumNumber(i32::try_from(int()?).map_err(|_| err("enum out of range"))?),
        Kind::Message(desc) => Pb::Message(message_from_json(desc, value)?),
    })
}

fn message_from_json(desc: &MessageDescriptor, value: &Value) -> Result<DynamicMessage, ProtobufError> {
    let mut msg = DynamicMessage::new(desc.clone());
    let mut set = |name: &str, v: Pb| msg.set_field_by_name(name, v);
    match desc.full_name().strip_prefix("k8s.io.apimachinery.pkg.") {
        Some("apis.meta.v1.Time") | Some("apis.meta.v1.MicroTime") => {
            let text = value.as_str().ok_or_else(|| err("expected an RFC 3339 time"))?;
            let t = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| err(format!("{text:?} is not an RFC 3339 time: {e}")))?;
            set("seconds", Pb::I64(t.timestamp()));
            set("nanos", Pb::I32(t.timestamp_subsec_nanos() as i32));
        }
        Some("apis.meta.v1.Duration") => {
            let text = value.as_str().ok_or_else(|| err("expected a duration string"))?;
            set("duration", Pb::I64(parse_duration(text)?));
        }
        Some("util.intstr.IntOrString") => match value {
            Value::String(s) => {
                set("type", Pb::I64(1));
                set("strVal", Pb::String(s.clone()));
            }
            _ => {
                let n = value.as_i64().and_then(|n| i32::try_from(n).ok());
                set("type", Pb::I64(0));
                set(
                    "intVal",
                    Pb::I32(n.ok_or_else(|| err("expected an integer or a string"))?),
                );
            }
        },
        Some("api.resource.Quantity") => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(err("expected a quantity such as \"500m\" or \"1Gi\"")),
            };
            set("string", Pb::String(text));
        }
        Some("runtime.RawExtension") => set("raw", Pb::Bytes(serde_json::to_vec(value).unwrap_or_default().into())),
        Some("apis.meta.v1.FieldsV1") => set("Raw", Pb::Bytes(serde_json::to_vec(value).unwrap_or_default().into())),
        _ => {
            let object = value
                .as_object()
                .ok_or_else(|| err(format!("expected an object, got {value}")))?;
            return json_to_message(desc, object);
        }
    }
    Ok(msg)
}

#[cfg(test)]
mod tests;
