//! # resourceVersion, resourceVersionMatch and continue (mirrors apimachinery's `ListOptions` and the API server's read rules)
//!
//! A list or a watch says *which state of the store* it wants to see. The store keeps
//! history (until it is compacted), so "the state" has a revision, and a client can ask for:
//!
//! | query                                            | a list reads ...                                     |
//! |--------------------------------------------------|------------------------------------------------------|
//! | no `resourceVersion`                             | the newest state (a quorum read: "most recent")       |
//! | `resourceVersion=0`                              | any state; kulisse gives the newest ("any")           |
//! | `resourceVersion=N&resourceVersionMatch=NotOlderThan` | a state at revision ≥ N; if the store has not reached N, it waits a moment, then `504 Timeout` "Too large resource version" |
//! | `resourceVersion=N&resourceVersionMatch=Exact`   | the state *as it was* at revision N, from the store's history; `410 Expired` once N is compacted away |
//! | `resourceVersion=N` alone                        | NotOlderThan N, or Exact N together with `limit` (the legacy rules) |
//!
//! **Paging.** With `limit=L` a list answers at most L items and a `metadata.continue`
//! token. The token carries the list's revision and the key to go on from, so every further
//! page reads *the same snapshot* (a range at that revision): objects written between pages
//! neither appear nor push others out. Once that revision is compacted the token is stale:
//! `410 Expired`, with a fresh token in the `Status` that continues at the newest state
//! (inconsistently, as the message says), as upstream does.
//!
//! **Watches** take `sendInitialEvents=true` with `resourceVersionMatch=NotOlderThan`
//! (client-go's "watch-list", KEP-3157): the current state as `ADDED` events, then a
//! `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`, then the changes
//! (see [`super::watch`]).
//!
//! **Selectors.** `labelSelector` and `fieldSelector` are list options too: [`Filter`]
//! holds them for a list or a watch and rejects a malformed one up front.
//!
//! Invalid combinations answer `422 Invalid` on the kind `ListOptions.meta.k8s.io`, with
//! upstream's words. kulisse's watch cache ([`super::cacher`]) serves watches only, so
//! lists behave like kube-apiserver's with `--watch-cache=false`: "any" is served from the store too.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use super::Ctx;
use super::storage::Storage;
use crate::objects::{self, ApiError, StatusCause, StatusDetails};
use crate::store::Revision;

/// How long a read "not older than" a revision the store has not reached waits for it.
/// Upstream's watch cache waits 3 s before it answers `Too large resource version`.
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// The annotation of the bookmark that ends the initial events of a watch-list.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The parts of `ListOptions` that pick a revision, as sent in the query.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub watch: bool,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub continue_token: Option<String>,
    pub send_initial_events: Option<bool>,
    pub allow_watch_bookmarks: bool,
}

/// Where a list reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// The newest state; with `min`, it must be at least at that revision.
    Latest { min: Option<Revision> },
    /// The state as it was at this revision.
    Exact(Revision),
}

impl ListOptions {
    /// Read the options from the query, and reject combinations upstream rejects.
    pub fn from_ctx(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        let options = ListOptions {
            watch: parse_bool(ctx, "watch")?.unwrap_or(false),
            resource_version: ctx.param("resourceVersion").map(str::to_string),
            resource_version_match: ctx.param("resourceVersionMatch").map(str::to_string),
            continue_token: ctx.param("continue").map(str::to_string),
            send_initial_events: parse_bool(ctx, "sendInitialEvents")?,
            allow_watch_bookmarks: parse_bool(ctx, "allowWatchBookmarks")?.unwrap_or(false),
        };
        let causes = options.validate();
        if causes.is_empty() {
            Ok(options)
        } else {
            Err(invalid_list_options(causes))
        }
    }

    /// apimachinery's `ValidateListOptions`: the field errors of this request.
    fn validate(&self) -> Vec<StatusCause> {
        let mut causes = Vec::new();
        let rv_match = self.resource_version_match.as_deref();
        if self.watch {
            if self.send_initial_events.is_some() && rv_match != Some("NotOlderThan") {
                causes.push(forbidden(
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if let Some(m) = rv_match {
                if self.send_initial_events.is_none() {
                    causes.push(forbidden(
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if m != "NotOlderThan" {
                    causes.push(not_supported(m, &["NotOlderThan"]));
                }
                if self.continue_token.is_some() {
                    causes.push(forbidden("resourceVersionMatch is forbidden when continue is provided"));
                }
            }
            return causes;
        }
        if let Some(m) = rv_match {
            if self.resource_version.is_none() {
                causes.push(forbidden(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if self.continue_token.is_some() {
                causes.push(forbidden("resourceVersionMatch is forbidden when continue is provided"));
            }
            if m != "Exact" && m != "NotOlderThan" {
                causes.push(not_supported(m, &["Exact", "NotOlderThan", ""]));
            }
            if m == "Exact" && self.resource_version.as_deref() == Some("0") {
                causes.push(forbidden(
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            causes.push(StatusCause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: sendInitialEvents is forbidden for list".into(),
                field: "sendInitialEvents".into(),
            });
        }
        causes
    }

    /// Where a list without a continue token reads (`paged`: the request has a `limit`).
    pub fn read_at(&self, paged: bool) -> Result<ReadAt, ApiError> {
        let Some(rv) = self.resource_version.as_deref() else {
            return Ok(ReadAt::Latest { min: None });
        };
        let rv = parse_resource_version(rv)?;
        if rv == 0 {
            return Ok(ReadAt::Latest { min: None });
        }
        Ok(match self.resource_version_match.as_deref() {
            Some("Exact") => ReadAt::Exact(rv),
            Some(_) => ReadAt::Latest { min: Some(rv) },
            // The legacy rules: a paged list at a revision is exact, an unpaged one is not older.
            None if paged => ReadAt::Exact(rv),
            None => ReadAt::Latest { min: Some(rv) },
        })
    }
}

fn parse_bool(ctx: &Ctx<'_>, name: &str) -> Result<Option<bool>, ApiError> {
    match ctx.param(name) {
        None => Ok(None),
        Some("true" | "True" | "TRUE" | "t" | "T" | "1") => Ok(Some(true)),
        Some("false" | "False" | "FALSE" | "f" | "F" | "0") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: Invalid value: {other:?}: must be a boolean (true or false)"
        ))),
    }
}

/// A `resourceVersion` as the store's revision; a malformed one is `400 BadRequest`.
pub fn parse_resource_version(rv: &str) -> Result<Revision, ApiError> {
    rv.parse::<u64>()
        .ok()
        .and_then(|v| Revision::try_from(v).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid resource version: resourceVersion: Invalid value: {rv:?}: must be a non-negative integer"
            ))
        })
}

fn forbidden(detail: &str) -> StatusCause {
    StatusCause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: "resourceVersionMatch".into(),
    }
}

fn not_supported(value: &str, supported: &[&str]) -> StatusCause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    StatusCause {
        reason: "FieldValueNotSupported".into(),
        message: format!("Unsupported value: {value:?}: supported values: {}", list.join(", ")),
        field: "resourceVersionMatch".into(),
    }
}

/// `422 Invalid` for the kind `ListOptions` of `meta.k8s.io`, as kube-apiserver answers.
fn invalid_list_options(causes: Vec<StatusCause>) -> ApiError {
    let texts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    let joined = if texts.len() == 1 {
        texts[0].clone()
    } else {
        format!("[{}]", texts.join(", "))
    };
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
    );
    err.details = Some(StatusDetails {
        name: String::new(),
        group: "meta.k8s.io".into(),
        kind: "ListOptions".into(),
        causes,
    });
    err
}

/// `504 Timeout`: the store has not reached the revision asked for (upstream's
/// `TooLargeResourceVersionError`; clients such as client-go's reflector retry).
pub fn too_large(requested: Revision, current: Revision) -> ApiError {
    let mut err = ApiError::new(
        504,
        "Timeout",
        format!("Timeout: Too large resource version: {requested}, current: {current}"),
    );
    err.details = Some(StatusDetails {
        causes: vec![StatusCause {
            reason: "ResourceVersionTooLarge".into(),
            message: "Too large resource version".into(),
            field: String::new(),
        }],
        ..StatusDetails::default()
    });
    err
}

/// Wait until the store's revision is at least `min` (a moment at most), or answer 504.
pub async fn wait_for_revision(storage: &Storage, min: Revision) -> Result<Revision, ApiError> {
    let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
    loop {
        let current = storage.current_revision().await?;
        if current >= min {
            return Ok(current);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(too_large(min, current));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A continue token: the revision of the list's snapshot (`-1`: the newest state) and the
/// key, relative to the list's prefix, where the next page starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continue {
    pub revision: Revision,
    pub start: String,
}

/// The token as upstream writes it: URL-safe base64 of `{"v":"meta.k8s.io/v1","rv":..,"start":..}`.
pub fn encode_continue(token: &Continue) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": token.revision, "start": token.start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

/// Read a continue token; anything malformed is `400 BadRequest`.
pub fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("invalid continue token: continue key is not valid: {why}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|e| bad(&e.to_string()))?;
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| bad(&e.to_string()))?;
    if raw.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad("server does not recognize this encoded version"));
    }
    let revision = raw
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|rv| *rv != 0)
        .ok_or_else(|| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
    let start = raw
        .get("start")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && !s.starts_with('/') && !s.split('/').any(|p| p == ".."))
        .ok_or_else(|| bad("encoded start key is missing or not a key under the list"))?;
    Ok(Continue {
        revision,
        start: start.to_string(),
    })
}

/// Label and field selectors of a list or watch request. The label selector is parsed once,
/// when the request arrives, and then matched against every object the request sees.
pub struct Filter {
    label: Option<objects::LabelSelector>,
    field: Option<String>,
}

impl Filter {
    /// No selector at all: every object matches.
    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.field.is_none()
    }

    pub fn from_ctx(ctx: &Ctx<'_>) -> Result<Self, ApiError> {
        let label = match ctx.param("labelSelector") {
            Some(text) => Some(
                objects::LabelSelector::parse(text)
                    .map_err(|e| ApiError::bad_request(&format!("unable to parse labelSelector {text:?}: {e}")))?,
            ),
            None => None,
        };
        let filter = Filter {
            label,
            field: ctx.param("fieldSelector").map(str::to_string),
        };
        // Reject a malformed field selector up front, with the parser's words.
        filter.matches(&json!({"metadata": {}}))?;
        Ok(filter)
    }

    /// Does `obj` pass both selectors?
    pub fn matches(&self, obj: &Value) -> Result<bool, ApiError> {
        if let Some(selector) = &self.label {
            if !selector.matches(obj) {
                return Ok(false);
            }
        }
        if let Some(sel) = &self.field {
            if !objects::field_selector_matches(sel, obj)
                .map_err(|e| ApiError::bad_request(&format!("unable to parse fieldSelector {sel:?}: {e}")))?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = Continue {
            revision: 42,
            start: "default/web-3\u{0}".into(),
        };
        assert_eq!(decode_continue(&encode_continue(&token)).expect("round trip"), token);
        for bad in [
            "",
            "!!!",
            "e30",
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MCwic3RhcnQiOiJhIn0",
        ] {
            let err = decode_continue(bad).expect_err(bad);
            assert_eq!(err.code, 400, "{bad}: {err:?}");
            assert!(err.message.starts_with("invalid continue token"), "{}", err.message);
        }
    }

    fn options(pairs: &[(&str, &str)]) -> ListOptions {
        let get = |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        ListOptions {
            watch: get("watch").is_some(),
            resource_version: get("resourceVersion"),
            resource_version_match: get("resourceVersionMatch"),
            continue_token: get("continue"),
            send_initial_events: get("sendInitialEvents").map(|v| v == "true"),
            allow_watch_bookmarks: false,
        }
    }

    fn messages(pairs: &[(&str, &str)]) -> Vec<String> {
        options(pairs)
            .validate()
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn validation_speaks_upstreams_words() {
        assert!(messages(&[("resourceVersion", "5"), ("resourceVersionMatch", "Exact")]).is_empty());
        assert_eq!(
            messages(&[("resourceVersionMatch", "NotOlderThan")]),
            ["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"]
        );
        assert_eq!(
            messages(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")]),
            ["resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""]
        );
        assert_eq!(
            messages(&[("resourceVersion", "1"), ("resourceVersionMatch", "Newest")]),
            [
                "resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\""
            ]
        );
        assert_eq!(
            messages(&[("watch", "1"), ("sendInitialEvents", "true")]),
            [
                "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
            ]
        );
        assert_eq!(
            messages(&[("watch", "1"), ("resourceVersionMatch", "NotOlderThan")]),
            [
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
            ]
        );
        assert!(
            messages(&[
                ("watch", "1"),
                ("sendInitialEvents", "true"),
                ("resourceVersionMatch", "NotOlderThan")
            ])
            .is_empty()
        );
        assert_eq!(
            messages(&[("sendInitialEvents", "true")]),
            ["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]
        );
        let err = invalid_list_options(options(&[("resourceVersionMatch", "Exact")]).validate());
        assert_eq!(err.code, 422);
        assert!(
            err.message
                .starts_with("ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden")
        );
    }

    #[test]
    fn legacy_resource_version_rules() {
        let at = |pairs: &[(&str, &str)], paged| options(pairs).read_at(paged).expect("valid");
        assert_eq!(at(&[], false), ReadAt::Latest { min: None });
        assert_eq!(at(&[("resourceVersion", "0")], true), ReadAt::Latest { min: None });
        assert_eq!(at(&[("resourceVersion", "7")], false), ReadAt::Latest { min: Some(7) });
        assert_eq!(at(&[("resourceVersion", "7")], true), ReadAt::Exact(7));
        assert_eq!(
            at(
                &[("resourceVersion", "7"), ("resourceVersionMatch", "NotOlderThan")],
                true
            ),
            ReadAt::Latest { min: Some(7) }
        );
        assert_eq!(
            at(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")], false),
            ReadAt::Exact(7)
        );
        assert_eq!(
            options(&[("resourceVersion", "x")]).read_at(false).expect_err("x").code,
            400
        );
    }
}
