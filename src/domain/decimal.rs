//! Exact decimals (`numeric`) in the forms Kafka Connect and Debezium give them, chosen by
//! Debezium's `decimal.handling.mode` ([`DecimalMode`]):
//!
//! - `precise` (Debezium's default): a `numeric(p,s)` value is Connect's
//!   `org.apache.kafka.connect.data.Decimal`, the unscaled integer's minimal two's-complement
//!   big-endian bytes ([`unscaled_bytes`]; base64 in JSON) with the scale in the schema; an
//!   unconstrained `numeric` (or one with a negative scale) is
//!   `io.debezium.data.VariableScaleDecimal`, a struct of the value's own scale
//!   ([`scale_of`]) and its unscaled bytes. PostgreSQL's text keeps a value's display scale
//!   (`1.50` has scale 2), as Java's `BigDecimal` of the same text does, so the bytes equal
//!   Debezium's.
//! - `double`: a float64 (`NaN` and `±Infinity` as JSON strings, as for `float8`).
//! - `string`: the exact text, tidemark's native form.
//!
//! `NaN` and `±Infinity` have no Decimal form. Debezium's precise mode cannot write them;
//! tidemark writes `null`, logs a warning and counts it in [`VALUES_NULLED`]
//! ([`note_nulled`]), so one value never stops the pipeline; the `string` and `double`
//! modes keep them.

use num_bigint::BigInt;
use serde::{Deserialize, Serialize};

/// Counter, label `column`: values written as null because the chosen encoding cannot hold
/// them (`NaN` and `±Infinity` of a `numeric` as a Decimal).
pub const VALUES_NULLED: &str = "tidemark_values_nulled_total";

/// Debezium's `decimal.handling.mode`: how `numeric` values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecimalMode {
    /// Connect `Decimal` for `numeric(p,s)`, `VariableScaleDecimal` for `numeric`.
    #[default]
    Precise,
    /// A float64 (inexact).
    Double,
    /// The exact decimal text.
    String,
}

/// Decimal text that has no unscaled form at the scale asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecimalError {
    /// `NaN`, `Infinity` or `-Infinity`.
    #[error("{0:?} has no decimal form (NaN and infinities)")]
    NotFinite(String),
    /// Not decimal text at all.
    #[error("{0:?} is not decimal text")]
    Malformed(String),
    /// More fraction digits than the scale.
    #[error("{text:?} has more than {scale} fraction digits")]
    TooManyDigits {
        /// The text.
        text: String,
        /// The scale asked.
        scale: u32,
    },
}

/// Whether `text` is one of `numeric`'s special values (`NaN`, `Infinity`, `-Infinity`).
pub fn is_special(text: &str) -> bool {
    matches!(text, "NaN" | "Infinity" | "-Infinity")
}

/// The number of fraction digits of decimal text (its display scale): 2 for `1.50`.
pub fn scale_of(text: &str) -> u32 {
    text.split_once('.')
        .map_or(0, |(_, fraction)| fraction.len() as u32)
}

/// Decimal text without the trailing zeros of its fraction (`1.50` is `1.5`, `2.00` is
/// `2`, `100` stays), the form in which Debezium writes a `VariableScaleDecimal`.
pub fn trim_scale(text: &str) -> &str {
    if !text.contains('.') {
        return text;
    }
    text.trim_end_matches('0').trim_end_matches('.')
}

/// The unscaled integer of decimal text at `scale`, as its minimal two's-complement
/// big-endian bytes (Connect's and Avro's decimal bytes): `12.34` at scale 2 is 1234,
/// `[0x04, 0xd2]`.
pub fn unscaled_bytes(text: &str, scale: u32) -> Result<Vec<u8>, DecimalError> {
    if is_special(text) {
        return Err(DecimalError::NotFinite(text.to_owned()));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
    {
        return Err(DecimalError::Malformed(text.to_owned()));
    }
    let scale_digits = scale as usize;
    if fraction.len() > scale_digits {
        return Err(DecimalError::TooManyDigits {
            text: text.to_owned(),
            scale,
        });
    }
    let mut unscaled = String::with_capacity(whole.len() + scale_digits + 1);
    if negative {
        unscaled.push('-');
    }
    unscaled.push_str(if whole.is_empty() { "0" } else { whole });
    unscaled.push_str(fraction);
    unscaled.extend(std::iter::repeat_n('0', scale_digits - fraction.len()));
    let number: BigInt = unscaled
        .parse()
        .map_err(|_| DecimalError::Malformed(text.to_owned()))?;
    Ok(number.to_signed_bytes_be())
}

/// Exact decimal text of an unscaled integer at `scale` (the inverse of
/// [`unscaled_bytes`]); a negative scale appends zeros.
pub fn text_of_unscaled(unscaled: &BigInt, scale: i32) -> String {
    let digits = unscaled.magnitude().to_string();
    let sign = if unscaled.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    if scale <= 0 {
        let zeros = if digits == "0" {
            0
        } else {
            scale.unsigned_abs()
        };
        return format!("{sign}{digits}{}", "0".repeat(zeros as usize));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Notes a special value of `column` written as null: a warning and [`VALUES_NULLED`].
pub fn note_nulled(column: &str, text: &str) {
    metrics::counter!(VALUES_NULLED, "column" => column.to_owned()).increment(1);
    tracing::warn!(
        column,
        value = text,
        "a numeric value a decimal cannot hold (NaN, ±Infinity) is written as null; set decimal_handling_mode = \"string\" (or make the column unconstrained numeric in Avro) to keep it"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_drops_the_fractions_trailing_zeros_only() {
        for (text, trimmed) in [
            ("1.50", "1.5"),
            ("2.00", "2"),
            ("100", "100"),
            ("0.0", "0"),
            ("-0.50", "-0.5"),
            ("10.01", "10.01"),
        ] {
            assert_eq!(trim_scale(text), trimmed, "{text}");
        }
    }

    #[test]
    fn decimal_text_round_trips_through_unscaled_bytes() {
        for (text, scale, bytes) in [
            ("12.34", 2, vec![0x04, 0xd2]),
            ("-12.34", 2, vec![0xfb, 0x2e]),
            ("0.00", 2, vec![0x00]),
            ("1.5", 2, vec![0x00, 0x96]),
            ("127", 0, vec![0x7f]),
            ("128", 0, vec![0x00, 0x80]),
        ] {
            assert_eq!(unscaled_bytes(text, scale), Ok(bytes.clone()), "{text}");
            let back = text_of_unscaled(&BigInt::from_signed_bytes_be(&bytes), scale as i32);
            let padded = format!("{text:0<width$}", width = text.len());
            assert_eq!(
                back.trim_end_matches('0'),
                padded.trim_end_matches('0'),
                "{text}"
            );
        }
        assert_eq!(text_of_unscaled(&BigInt::from(-5), 3), "-0.005");
        assert_eq!(text_of_unscaled(&BigInt::from(12), -2), "1200");
        assert_eq!(text_of_unscaled(&BigInt::from(0), -2), "0");
    }

    #[test]
    fn special_and_malformed_text_is_refused() {
        assert!(matches!(
            unscaled_bytes("NaN", 2),
            Err(DecimalError::NotFinite(_))
        ));
        assert!(matches!(
            unscaled_bytes("-Infinity", 0),
            Err(DecimalError::NotFinite(_))
        ));
        assert!(matches!(
            unscaled_bytes("1e5", 0),
            Err(DecimalError::Malformed(_))
        ));
        assert!(matches!(
            unscaled_bytes("1.234", 2),
            Err(DecimalError::TooManyDigits { .. })
        ));
    }

    #[test]
    fn display_scale_is_the_fraction_digits() {
        assert_eq!(scale_of("1.50"), 2);
        assert_eq!(scale_of("-7"), 0);
        assert_eq!(scale_of("0.000001"), 6);
    }
}
