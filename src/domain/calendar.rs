//! Dates and times as text, from the integer forms the stream carries (days and
//! microseconds since 1970-01-01), in the ISO form PostgreSQL and Snowflake read, with
//! years before 1 written as PostgreSQL writes them (`0044-03-15 BC`).

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

#[cfg(test)]
mod tests {
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
