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
