//! Timestamps: microseconds since the epoch (UTC) inside the crate, naive
//! UTC `DATETIME` in the database (as datanommer stored them), float epoch
//! seconds on the wire (as datagrepper returns them).

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Microseconds per second.
pub const MICROS: i64 = 1_000_000;

/// 0001-01-01T00:00:00 and 9999-12-31T23:59:59.999999: the range where the
/// SQLite text form has a four-digit year and so sorts as text.
const MIN_MICROS: i64 = -62_135_596_800 * MICROS;
const MAX_MICROS: i64 = 253_402_300_799 * MICROS + 999_999;

/// Epoch seconds (as in an envelope's `timestamp`) to microseconds, rounded;
/// `None` when not finite or outside years 1..=9999.
pub fn from_epoch_secs(secs: f64) -> Option<i64> {
    if !secs.is_finite() {
        return None;
    }
    let micros = (secs * MICROS as f64).round();
    if micros < MIN_MICROS as f64 || micros > MAX_MICROS as f64 {
        return None;
    }
    Some(micros as i64)
}

/// Microseconds to float epoch seconds (datagrepper's `timestamp`).
pub fn to_epoch_secs(micros: i64) -> f64 {
    // Both operands are exact doubles below 2^53, and IEEE division rounds
    // correctly: the result is the double nearest the exact decimal value.
    micros as f64 / MICROS as f64
}

/// The current time.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(MAX_MICROS)
}

/// Microseconds to a naive UTC datetime (PostgreSQL `TIMESTAMP`).
pub fn to_naive(micros: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(micros.clamp(MIN_MICROS, MAX_MICROS))
        .map(|d| d.naive_utc())
        .unwrap_or_default()
}

/// A naive UTC datetime to microseconds.
pub fn from_naive(dt: NaiveDateTime) -> i64 {
    dt.and_utc().timestamp_micros()
}

/// Microseconds to SQLite's stored text, `2017-09-05 20:24:35.000000`.
pub fn to_sqlite_text(micros: i64) -> String {
    use chrono::{Datelike, Timelike};
    // Written by hand: chrono's `format` interprets the format string for
    // every row, and this runs once per stored message.
    let t = to_naive(micros);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    )
}

/// SQLite's stored text back to microseconds (fraction optional, `T` or
/// space between date and time).
pub fn from_sqlite_text(text: &str) -> Option<i64> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(from_naive)
}

/// The calendar year of a time (for generated `msg_id`s).
pub fn year_of(micros: i64) -> i32 {
    use chrono::Datelike;
    to_naive(micros).year()
}

/// Parses a time given by a person: epoch seconds (`1504643075`,
/// `1504643075.5`) or ISO 8601 in UTC (`2017-09-05`, `2017-09-05T20:24`,
/// `2017-09-05 20:24:35.25`, an optional trailing `Z`).
pub fn parse_user_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return from_epoch_secs(secs).ok_or_else(|| format!("time out of range: {text}"));
    }
    let iso = text.strip_suffix('Z').unwrap_or(text).replace('T', " ");
    if let Ok(date) = NaiveDate::parse_from_str(&iso, "%Y-%m-%d") {
        if let Some(dt) = date.and_hms_opt(0, 0, 0) {
            return Ok(from_naive(dt));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(&iso, format) {
            return Ok(from_naive(dt));
        }
    }
    Err(format!(
        "not a time: `{text}` (epoch seconds or UTC YYYY-MM-DD[THH:MM[:SS[.ffffff]]])"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_round_trips_through_every_form() {
        let micros = from_epoch_secs(1504642719.23539).unwrap();
        assert_eq!(micros, 1_504_642_719_235_390);
        assert_eq!(to_epoch_secs(micros), 1504642719.23539);
        assert_eq!(to_sqlite_text(micros), "2017-09-05 20:18:39.235390");
        assert_eq!(from_sqlite_text("2017-09-05 20:18:39.235390"), Some(micros));
        assert_eq!(from_naive(to_naive(micros)), micros);
        assert_eq!(
            from_sqlite_text("2017-09-05 20:18:39"),
            Some(1_504_642_719 * MICROS)
        );
        assert_eq!(
            to_epoch_secs(1_504_643_075 * MICROS).to_string(),
            "1504643075"
        );
    }

    #[test]
    fn out_of_range_and_nonsense_are_refused() {
        assert_eq!(from_epoch_secs(f64::NAN), None);
        assert_eq!(from_epoch_secs(1e20), None);
        assert_eq!(from_epoch_secs(-1e12), None);
        assert!(from_epoch_secs(0.0).is_some());
        assert_eq!(to_sqlite_text(0), "1970-01-01 00:00:00.000000");
        assert_eq!(from_sqlite_text("yesterday"), None);
    }

    #[test]
    fn user_times() {
        assert_eq!(
            parse_user_time("1504643075").unwrap(),
            1_504_643_075 * MICROS
        );
        assert_eq!(
            parse_user_time("2017-09-05").unwrap(),
            1_504_569_600 * MICROS
        );
        assert_eq!(
            parse_user_time("2017-09-05T20:24:35Z").unwrap(),
            1_504_643_075 * MICROS
        );
        assert_eq!(
            parse_user_time("2017-09-05 20:24").unwrap(),
            1_504_643_040 * MICROS
        );
        assert_eq!(
            parse_user_time("2017-09-05T20:24:35.5").unwrap(),
            1_504_643_075 * MICROS + 500_000
        );
        assert!(parse_user_time("last tuesday").is_err());
        assert!(parse_user_time("1e30").is_err());
    }

    #[test]
    fn sqlite_text_sorts_like_time() {
        let a = to_sqlite_text(from_epoch_secs(999_999_999.9).unwrap());
        let b = to_sqlite_text(from_epoch_secs(1_000_000_000.0).unwrap());
        assert!(a < b, "{a} < {b}");
    }
}
