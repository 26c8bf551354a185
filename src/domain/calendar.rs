//! Dates and times as text, from the integer forms the stream carries (days and
//! microseconds since 1970-01-01), in the ISO form PostgreSQL and Snowflake read, with
//! years before 1 written as PostgreSQL writes them (`0044-03-15 BC`); and Debezium's forms
//! of the two types the stream carries as text: `timetz` as `ZonedTime` (UTC, `Z`) and
//! `interval` as `MicroDuration` (microseconds, a month counted as 30.4375 days).

use crate::domain::value::{
    DATE_NEG_INFINITY, DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY,
};

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; year 0 is
/// 1 BC), after Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical year numbering).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A `timestamptz` as Debezium's `io.debezium.time.ZonedTimestamp` writes it: ISO-8601 in
/// UTC with `Z`, `precision` fraction digits (the column's, 6 when unconstrained; none for
/// 0), astronomical years (`-0043` is 44 BC, `+10000` past 9999), `±infinity` as words.
pub fn zoned_timestamp_text(micros: i64, precision: u32) -> String {
    match micros {
        TIMESTAMP_POS_INFINITY => "infinity".into(),
        TIMESTAMP_NEG_INFINITY => "-infinity".into(),
        micros => {
            let (year, month, day) = civil_from_days(micros.div_euclid(86_400_000_000));
            let of_day = micros.rem_euclid(86_400_000_000);
            let seconds = of_day / 1_000_000;
            let year = if year > 9999 {
                format!("+{year}")
            } else if year < 0 {
                format!("-{:04}", -year)
            } else {
                format!("{year:04}")
            };
            let precision = precision.min(6);
            let fraction = if precision == 0 {
                String::new()
            } else {
                let digits = (of_day % 1_000_000) / 10_i64.pow(6 - precision);
                format!(".{digits:0width$}", width = precision as usize)
            };
            format!(
                "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
                seconds / 3600,
                (seconds / 60) % 60,
                seconds % 60
            )
        }
    }
}

/// Microseconds since 1970-01-01 UTC of a [`zoned_timestamp_text`] (any number of fraction
/// digits, `Z` or `+00:00`), or none if it is not one.
pub fn parse_zoned_timestamp(text: &str) -> Option<i64> {
    match text {
        "infinity" => return Some(TIMESTAMP_POS_INFINITY),
        "-infinity" => return Some(TIMESTAMP_NEG_INFINITY),
        _ => {}
    }
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let (negative, date) = match date.as_bytes().first()? {
        b'-' => (true, &date[1..]),
        b'+' => (false, &date[1..]),
        _ => (false, date),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let year = if negative { -year } else { year };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':');
    let hours: i64 = clock.next()?.parse().ok()?;
    let minutes: i64 = clock.next()?.parse().ok()?;
    let seconds: i64 = clock.next()?.parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hours > 23
        || minutes > 59
        || seconds > 60
    {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{fraction:0<6}");
        padded[..6].parse::<i64>().ok()?
    };
    let days = days_from_civil(year, month, day);
    days.checked_mul(86_400_000_000)?
        .checked_add((hours * 3600 + minutes * 60 + seconds) * 1_000_000 + micros)
}

fn date_parts(days: i64) -> (String, &'static str) {
    let (year, month, day) = civil_from_days(days);
    if year <= 0 {
        (format!("{:04}-{month:02}-{day:02}", 1 - year), " BC")
    } else {
        (format!("{year:04}-{month:02}-{day:02}"), "")
    }
}

/// A date as text; `±infinity` as `infinity`/`-infinity`.
pub fn date_text(days: i32) -> String {
    match days {
        DATE_POS_INFINITY => "infinity".into(),
        DATE_NEG_INFINITY => "-infinity".into(),
        days => {
            let (date, era) = date_parts(i64::from(days));
            format!("{date}{era}")
        }
    }
}

/// A time of day from microseconds since midnight: `HH:MM:SS.ffffff`.
pub fn time_text(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    format!(
        "{:02}:{:02}:{:02}.{fraction:06}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// A timestamp as text; `utc` appends `+00` (for `timestamptz`); `±infinity` as words.
pub fn timestamp_text(micros: i64, utc: bool) -> String {
    match micros {
        TIMESTAMP_POS_INFINITY => "infinity".into(),
        TIMESTAMP_NEG_INFINITY => "-infinity".into(),
        micros => {
            let days = micros.div_euclid(86_400_000_000);
            let (date, era) = date_parts(days);
            let time = time_text(micros.rem_euclid(86_400_000_000));
            let zone = if utc { "+00" } else { "" };
            format!("{date} {time}{zone}{era}")
        }
    }
}

/// Debezium's average month, in days (365.25 / 12), by which `MicroDuration` counts the
/// months and years of an interval.
const DAYS_PER_MONTH: f64 = 365.25 / 12.0;

/// An `interval` as Debezium's `io.debezium.time.MicroDuration`: microseconds, a month
/// counted as [`DAYS_PER_MONTH`] days, computed in Debezium's order with floating point
/// and truncated, so the result equals Debezium's. `text` is PostgreSQL's `iso_8601`
/// interval style (`P1Y2M3DT4H5M6.5S`, each part signed on its own: `P-1DT-0.000001S`);
/// none for anything else.
pub fn interval_micros(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let (mut years, mut months, mut days) = (0.0, 0.0, 0.0);
    let (mut hours, mut minutes, mut seconds) = (0.0, 0.0, 0.0);
    let mut in_time = false;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            'T' if number.is_empty() => in_time = true,
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            unit => {
                let value: f64 = number.parse().ok()?;
                number.clear();
                match (in_time, unit) {
                    (false, 'Y') => years = value,
                    (false, 'M') => months = value,
                    (false, 'W') => days += value * 7.0,
                    (false, 'D') => days += value,
                    (true, 'H') => hours = value,
                    (true, 'M') => minutes = value,
                    (true, 'S') => seconds = value,
                    _ => return None,
                }
            }
        }
    }
    if !number.is_empty() {
        return None;
    }
    let days = (years * 12.0 + months) * DAYS_PER_MONTH + days;
    let seconds = ((days * 24.0 + hours) * 60.0 + minutes) * 60.0 + seconds;
    Some((seconds * 1e6) as i64)
}

/// A `timetz` as Debezium's `io.debezium.time.ZonedTime`: the time at UTC with `Z`, the
/// seconds always and the fraction in as few digits as it needs (Java's
/// `ISO_OFFSET_TIME`): `01:02:03.5+02` is `23:02:03.5Z`. `text` is PostgreSQL's output
/// (`HH:MM:SS[.ffffff]±HH[:MM[:SS]]`); none for anything else.
pub fn zoned_time_text(text: &str) -> Option<String> {
    let split = text.rfind(['+', '-'])?;
    let (time, offset) = text.split_at(split);
    let mut parts = time.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let second = parts.next()?;
    let (whole, fraction) = second.split_once('.').unwrap_or((second, ""));
    let seconds: i64 = whole.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").parse().ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut offset_parts = offset[1..].split(':');
    let mut offset_seconds = 0;
    for scale in [3600, 60, 1] {
        if let Some(part) = offset_parts.next() {
            offset_seconds += part.parse::<i64>().ok()? * scale;
        }
    }
    let utc = (hours * 3600 + minutes * 60 + seconds - sign * offset_seconds).rem_euclid(86_400);
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}").trim_end_matches('0').to_owned()
    };
    Some(format!(
        "{:02}:{:02}:{:02}{fraction}Z",
        utc / 3600,
        (utc / 60) % 60,
        utc % 60
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn intervals_are_debeziums_micro_durations() {
        // Debezium 3.6.1 wrote 37091106500000 for '1 year 2 months 3 days 04:05:06.5'.
        assert_eq!(
            interval_micros("P1Y2M3DT4H5M6.5S"),
            Some(37_091_106_500_000)
        );
        assert_eq!(interval_micros("PT0S"), Some(0));
        assert_eq!(interval_micros("P-1DT-0.000001S"), Some(-86_400_000_001));
        assert_eq!(interval_micros("PT-0.000001S"), Some(-1));
        assert_eq!(interval_micros("P2W"), Some(14 * 86_400_000_000));
        assert_eq!(interval_micros("1 day"), None);
        assert_eq!(interval_micros("P1X"), None);
    }

    #[test]
    fn times_with_zones_are_debeziums_zoned_times() {
        // Debezium 3.6.1 wrote 23:02:03.5Z for '01:02:03.5+02'.
        assert_eq!(
            zoned_time_text("01:02:03.5+02").as_deref(),
            Some("23:02:03.5Z")
        );
        assert_eq!(zoned_time_text("13:14:15+00").as_deref(), Some("13:14:15Z"));
        assert_eq!(
            zoned_time_text("23:30:00-01:30").as_deref(),
            Some("01:00:00Z")
        );
        assert_eq!(
            zoned_time_text("00:00:00.000001+05:30").as_deref(),
            Some("18:30:00.000001Z")
        );
        assert_eq!(zoned_time_text("noon"), None);
    }
    use super::*;

    #[test]
    fn zoned_timestamps_read_as_debezium_writes_them_and_back() {
        let at = |y, mo, d, h: i64, mi: i64, s: i64, us: i64| {
            days_from_civil(y, mo, d) * 86_400_000_000 + (h * 3600 + mi * 60 + s) * 1_000_000 + us
        };
        // Debezium 3.6.1's own output for these values (timestamptz, (0), (3)).
        let cases = [
            (at(2024, 1, 2, 1, 4, 5, 0), 6, "2024-01-02T01:04:05.000000Z"),
            (at(2024, 1, 2, 1, 4, 6, 0), 0, "2024-01-02T01:04:06Z"),
            (
                at(2024, 1, 2, 1, 4, 5, 123_000),
                3,
                "2024-01-02T01:04:05.123Z",
            ),
            (at(2024, 1, 2, 3, 4, 5, 1), 6, "2024-01-02T03:04:05.000001Z"),
            (at(-43, 3, 15, 12, 0, 0, 0), 3, "-0043-03-15T12:00:00.000Z"),
            (at(10_000, 1, 1, 0, 0, 0, 0), 0, "+10000-01-01T00:00:00Z"),
            (TIMESTAMP_POS_INFINITY, 6, "infinity"),
            (TIMESTAMP_NEG_INFINITY, 0, "-infinity"),
        ];
        for (micros, precision, text) in cases {
            assert_eq!(zoned_timestamp_text(micros, precision), text);
            assert_eq!(parse_zoned_timestamp(text), Some(micros), "{text}");
        }
        for bad in [
            "",
            "2024-01-02",
            "2024-13-01T00:00:00Z",
            "2024-01-02T01:04:05",
            "x",
        ] {
            assert_eq!(parse_zoned_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_and_timestamps_match_postgres_text() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(19_723), "2024-01-01");
        assert_eq!(date_text(-719_528), "0001-01-01 BC");
        assert_eq!(date_text(i32::MAX), "infinity");
        assert_eq!(time_text(45_296_000_001), "12:34:56.000001");
        assert_eq!(
            timestamp_text(1_704_067_200_000_000, true),
            "2024-01-01 00:00:00.000000+00"
        );
        assert_eq!(timestamp_text(-1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(timestamp_text(i64::MIN, true), "-infinity");
    }
}
