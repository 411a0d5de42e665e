//! # Quantities (mirrors `k8s.io/apimachinery/pkg/api/resource.Quantity`)
//!
//! Kubernetes writes amounts of resources as **quantities**: short strings such as
//! `cpu: 250m` or `memory: 512Mi`. The grammar is
//!
//! ```text
//! <quantity> ::= <sign>? <number> <suffix>
//! <number>   ::= 12 | 12.5 | 12. | .5
//! <suffix>   ::= <binary> | <decimal> | <exponent>
//! <binary>   ::= Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
//! <decimal>  ::= n | u | m | "" | k | M | G | T | P | E (powers of 1000; m = milli)
//! <exponent> ::= e<int> | E<int>                     (1e3 = 1000)
//! ```
//!
//! so `1Gi` is 1 073 741 824 and `1G` is 1 000 000 000 (capitalisation matters: `1M` is a
//! million, `1m` a thousandth). The scheduler and the kubelet never compute with the text:
//! they turn CPU into integer **millicores** ([`Quantity::milli_value`], as Go's
//! `MilliValue()`) and memory into integer **bytes** ([`Quantity::value`], as `Value()`).
//! Both round *up* (away from zero), as Kubernetes does: `0.1m` of CPU is 1 millicore, `0.5`
//! bytes is 1 byte. No floating point is involved, so `0.1 + 0.2` is exactly `300m`.
//!
//! In JSON a quantity is usually a string, but a bare number (`cpu: 2` in YAML) is accepted
//! too, as Kubernetes accepts it: see [`parse_value`].

use std::fmt;

use serde_json::Value;

/// A parsed quantity: `sign * digits * 10^exp10 * 1024^exp1024`, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// The digits of the number, without the decimal point.
    digits: u128,
    /// Power of ten (the decimal point, a decimal suffix and an exponent together).
    exp10: i32,
    /// Power of 1024 (a binary suffix: Ki = 1, ..., Ei = 6).
    exp1024: u32,
}

/// Why a text is not a quantity. The message names the text and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantity {text:?} is not valid: {reason} (expected a number with an optional suffix, like 100m, 0.5, 2, 1e3, 512Mi or 1Gi)"
)]
pub struct QuantityError {
    pub text: String,
    pub reason: String,
}

fn error(text: &str, reason: impl Into<String>) -> QuantityError {
    QuantityError {
        text: text.to_string(),
        reason: reason.into(),
    }
}

/// More significant digits than this cannot be held exactly (Kubernetes itself keeps at
/// most about 18 digits in its fast path).
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parse a quantity as Kubernetes does (`ParseQuantity`).
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        if text.is_empty() {
            return Err(error(text, "it is empty"));
        }
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        if let Some(&c) = bytes.first()
            && (c == b'+' || c == b'-')
        {
            negative = c == b'-';
            pos = 1;
        }
        // The number: digits, optional '.', digits.
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let int_part = &text[int_start..pos];
        let mut frac_part = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let frac_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            frac_part = &text[frac_start..pos];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(error(text, "it does not start with a number"));
        }
        let suffix = &text[pos..];
        let (suffix_exp10, exp1024) = parse_suffix(text, suffix)?;

        // Digits without leading zeros (and trailing zeros of the fraction, which add nothing).
        let frac_trimmed = frac_part.trim_end_matches('0');
        let all: String = format!("{int_part}{frac_trimmed}");
        let significant = all.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return Err(error(text, format!("it has more than {MAX_DIGITS} significant digits")));
        }
        let digits: u128 = if significant.is_empty() {
            0
        } else {
            significant
                .parse()
                .map_err(|_| error(text, "its number could not be read"))?
        };
        let frac_len = i32::try_from(frac_trimmed.len()).map_err(|_| error(text, "its number is too long"))?;
        let exp10 = suffix_exp10
            .checked_sub(frac_len)
            .ok_or_else(|| error(text, "its exponent is out of range"))?;
        Ok(Quantity {
            negative: negative && digits != 0,
            digits,
            exp10,
            exp1024,
        })
    }

    /// The value scaled by `10^scale` and rounded up (away from zero), as an `i64`; `None`
    /// if it does not fit.
    fn scaled(&self, scale: i32) -> Option<i64> {
        if self.digits == 0 {
            return Some(0);
        }
        let mut n: u128 = self.digits;
        for _ in 0..self.exp1024 {
            n = n.checked_mul(1024)?;
        }
        let k = self.exp10.checked_add(scale)?;
        let magnitude: u128 = if k >= 0 {
            let p = 10u128.checked_pow(u32::try_from(k).ok()?)?;
            n.checked_mul(p)?
        } else {
            let d = u32::try_from(-(k as i64)).ok()?;
            match 10u128.checked_pow(d) {
                Some(p) => n.div_ceil(p),
                // 10^d exceeds any u128: a non-zero value rounds up to 1.
                None => 1,
            }
        };
        let m = i64::try_from(magnitude).ok()?;
        Some(if self.negative { -m } else { m })
    }

    /// The value in thousandths, rounded up (Go's `MilliValue()`): CPU in millicores.
    /// `None` if it does not fit in an `i64`.
    pub fn milli_value(&self) -> Option<i64> {
        self.scaled(3)
    }

    /// The value as a whole number, rounded up (Go's `Value()`): memory in bytes, pod counts.
    /// `None` if it does not fit in an `i64`.
    pub fn value(&self) -> Option<i64> {
        self.scaled(0)
    }

    /// True for negative quantities (requests must not be negative).
    pub fn is_negative(&self) -> bool {
        self.negative
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// The suffix's power of ten and power of 1024.
fn parse_suffix(text: &str, suffix: &str) -> Result<(i32, u32), QuantityError> {
    let r = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        s if s.starts_with(['e', 'E']) => {
            let exp = &s[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(error(
                    text,
                    format!("the exponent {s:?} is not e followed by a whole number"),
                ));
            }
            let e: i32 = exp
                .parse()
                .map_err(|_| error(text, format!("the exponent {s:?} is out of range")))?;
            if !(-1000..=1000).contains(&e) {
                return Err(error(text, format!("the exponent {s:?} is out of range")));
            }
            (e, 0)
        }
        s => {
            let hint = match s.to_ascii_lowercase().as_str() {
                "ki" | "mi" | "gi" | "ti" | "pi" | "ei" => " (binary suffixes are written Ki, Mi, Gi, Ti, Pi, Ei)",
                "kb" | "mb" | "gb" | "tb" | "b" => " (Kubernetes writes bytes without a B: 512Mi or 512M)",
                _ => "",
            };
            return Err(error(
                text,
                format!(
                    "unknown suffix {s:?}; allowed are n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent like e3{hint}"
                ),
            ));
        }
    };
    Ok(r)
}

/// A quantity from a JSON value: a string (`"500m"`) or a bare number (`2`, `0.5`).
pub fn parse_value(v: &Value) -> Result<Quantity, QuantityError> {
    match v {
        Value::String(s) => Quantity::parse(s),
        Value::Number(n) => Quantity::parse(&n.to_string()),
        other => Err(error(&other.to_string(), "it is neither a string nor a number")),
    }
}

/// Millicores of a CPU quantity in JSON (`"250m"` → 250, `2` → 2000).
pub fn cpu_millis(v: &Value) -> Result<i64, QuantityError> {
    let q = parse_value(v)?;
    q.milli_value().ok_or_else(|| error(&v.to_string(), "it is too large"))
}

/// Whole units of a quantity in JSON, rounded up: bytes of memory (`"1Gi"` → 1073741824),
/// a pod count (`"110"` → 110).
pub fn whole_units(v: &Value) -> Result<i64, QuantityError> {
    let q = parse_value(v)?;
    q.value().ok_or_else(|| error(&v.to_string(), "it is too large"))
}

/// Millicores back as Kubernetes writes them: `2` for 2000, `250m` for 250.
pub fn format_millis(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Bytes back as a quantity: the largest binary suffix that divides exactly (`512Mi`,
/// `1Gi`), else the plain number.
pub fn format_bytes(bytes: i64) -> String {
    const SUFFIXES: [(&str, i64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    if bytes != 0 {
        for (suffix, unit) in SUFFIXES {
            if bytes % unit == 0 {
                return format!("{}{suffix}", bytes / unit);
            }
        }
    }
    bytes.to_string()
}

impl fmt::Display for Quantity {
    /// A canonical spelling: whole units when exact, else millis, else nanos (rounded up).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.value(), self.milli_value()) {
            (Some(v), Some(m)) if v.checked_mul(1000) == Some(m) => write!(f, "{v}"),
            (_, Some(m)) if self.scaled(9).is_none_or(|n| m.checked_mul(1_000_000) == Some(n)) => write!(f, "{m}m"),
            _ => match self.scaled(9) {
                Some(n) => write!(f, "{n}n"),
                None => write!(
                    f,
                    "{}{}e{}{}",
                    if self.negative { "-" } else { "" },
                    self.digits,
                    self.exp10,
                    if self.exp1024 > 0 {
                        format!("*1024^{}", self.exp1024)
                    } else {
                        String::new()
                    }
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).unwrap().milli_value().unwrap()
    }
    fn units(s: &str) -> i64 {
        Quantity::parse(s).unwrap().value().unwrap()
    }

    /// Found by the fuzzer: near `i64::MAX` millis, whole units times 1000 saturated to the
    /// same number, so the quantity printed as rounded units (and read back as another).
    #[test]
    fn a_quantity_near_the_limit_prints_as_what_it_is() {
        let q = Quantity::parse("09223372036854775806.4m").unwrap();
        let again = Quantity::parse(&q.to_string()).unwrap();
        assert_eq!(again.milli_value(), q.milli_value(), "printed as {q}");
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("0.5"), 500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("5."), 5000);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("+2"), 2000);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("0.0"), 0);
        assert_eq!(milli("250000u"), 250);
        assert_eq!(milli("1n"), 1, "rounds up to a whole millicore");
        assert_eq!(milli("0.0001"), 1, "rounds up to a whole millicore");
        assert_eq!(milli("0.30000000000000004"), 301, "as Kubernetes does");
        assert_eq!(milli("-100m"), -100);
        assert_eq!(milli("-0.0001"), -1, "rounds away from zero");
    }

    #[test]
    fn memory_forms() {
        assert_eq!(units("1Ki"), 1024);
        assert_eq!(units("512Mi"), 512 * 1024 * 1024);
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1.5Gi"), 3 << 29);
        assert_eq!(units("1Ti"), 1 << 40);
        assert_eq!(units("1Pi"), 1 << 50);
        assert_eq!(units("1Ei"), 1 << 60);
        assert_eq!(units("0.9Gi"), 966_367_642, "0.9Gi is 966367641.6 bytes, rounded up");
        assert_eq!(units("1k"), 1000);
        assert_eq!(units("1M"), 1_000_000);
        assert_eq!(units("1G"), 1_000_000_000);
        assert_eq!(units("1T"), 1_000_000_000_000);
        assert_eq!(units("1P"), 1_000_000_000_000_000);
        assert_eq!(units("1E"), 1_000_000_000_000_000_000, "a lone E is the exa suffix");
        assert_eq!(units("128974848"), 128_974_848);
        assert_eq!(units("129e6"), 129_000_000);
        assert_eq!(units("123Mi"), 128_974_848);
        assert_eq!(units("100m"), 1, "a tenth of a byte rounds up to one");
        assert_eq!(units("110"), 110);
    }

    #[test]
    fn exponents() {
        assert_eq!(units("1e3"), 1000);
        assert_eq!(units("1E3"), 1000);
        assert_eq!(units("1e+3"), 1000);
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(milli("25e-2"), 250);
        assert_eq!(milli("1e-100"), 1, "tiny positive values round up");
        assert_eq!(units("0e999"), 0);
    }

    #[test]
    fn json_numbers_are_quantities_too() {
        assert_eq!(cpu_millis(&json!(2)).unwrap(), 2000);
        assert_eq!(cpu_millis(&json!(0.25)).unwrap(), 250);
        assert_eq!(cpu_millis(&json!("250m")).unwrap(), 250);
        assert_eq!(whole_units(&json!("64Mi")).unwrap(), 64 << 20);
        assert!(cpu_millis(&json!(true)).is_err());
        assert!(cpu_millis(&json!(null)).is_err());
    }

    #[test]
    fn invalid_text_gives_a_clear_error() {
        for bad in [
            "",
            "m",
            "Mi",
            ".",
            "+",
            "1.2.3",
            "1 Gi",
            " 1",
            "1gi",
            "1GB",
            "1KB",
            "abc",
            "1e",
            "1e1.5",
            "1ee",
            "1Gii",
            "1x",
            "--1",
            "1e99999999999",
        ] {
            let err = Quantity::parse(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("expected a number"), "{msg}");
        }
        let msg = Quantity::parse("1gi").unwrap_err().to_string();
        assert!(msg.contains("Ki, Mi, Gi"), "{msg}");
        let msg = Quantity::parse("1GB").unwrap_err().to_string();
        assert!(msg.contains("without a B"), "{msg}");
    }

    #[test]
    fn too_large_values_are_none_not_a_panic() {
        let q = Quantity::parse("100Ei").unwrap();
        assert_eq!(q.value(), None);
        assert_eq!(Quantity::parse("9e18").unwrap().milli_value(), None);
        assert_eq!(Quantity::parse("1e1000").unwrap().value(), None);
        assert!(
            whole_units(&json!("100Ei"))
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
        assert!(Quantity::parse(&"9".repeat(40)).is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_millis(2000), "2");
        assert_eq!(format_millis(250), "250m");
        assert_eq!(format_millis(1500), "1500m");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(0), "0");
        assert_eq!(Quantity::parse("1.5").unwrap().to_string(), "1500m");
        assert_eq!(Quantity::parse("2").unwrap().to_string(), "2");
        assert_eq!(Quantity::parse("1k").unwrap().to_string(), "1000");
        assert_eq!(Quantity::parse("1n").unwrap().to_string(), "1n");
    }
}
