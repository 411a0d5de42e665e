//! # Timestamps as the API writes them (mirrors apimachinery's `metav1.Time` and `MicroTime`)
//!
//! Every time in a Kubernetes object is a string in RFC 3339, always in UTC (`Z`). Two
//! precisions exist, and which one a field uses is part of the API:
//!
//! - `metav1.Time` (`creationTimestamp`, `deletionTimestamp`, condition transition times,
//!   container `startedAt`, event timestamps): whole **seconds**, `2025-01-02T03:04:05Z`.
//! - `metav1.MicroTime` (a Lease's `renewTime`/`acquireTime`, `events.k8s.io` `eventTime`):
//!   **microseconds**, `2025-01-02T03:04:05.123456Z`.
//!
//! Log lines (`kubectl logs --timestamps`) carry nanoseconds. This module is the one place
//! kulisse formats a timestamp; every component calls it, so no two places can disagree.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// A time as `metav1.Time` writes it (`2025-01-02T03:04:05Z`).
pub fn time(t: impl Into<DateTime<Utc>>) -> String {
    t.into().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Now, as `metav1.Time`.
pub fn now() -> String {
    time(Utc::now())
}

/// A time as `metav1.MicroTime` writes it (`2025-01-02T03:04:05.123456Z`).
pub fn micro_time(t: impl Into<DateTime<Utc>>) -> String {
    t.into().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Now, as `metav1.MicroTime` (a Lease's `renewTime`).
pub fn micro_now() -> String {
    micro_time(Utc::now())
}

/// A timestamp as the kubelet writes it in front of log lines (`...05.123456789Z`).
pub fn log_timestamp(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_precision_has_its_own_shape() {
        let t = DateTime::parse_from_rfc3339("2025-01-02T03:04:05.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(t), "2025-01-02T03:04:05Z");
        assert_eq!(micro_time(t), "2025-01-02T03:04:05.123456Z");
        assert_eq!(log_timestamp(SystemTime::from(t)), "2025-01-02T03:04:05.123456789Z");
        assert_eq!(time(SystemTime::from(t)), "2025-01-02T03:04:05Z");
    }
}
