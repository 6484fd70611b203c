//! Local wall-clock time, as fedmsg's Python tools read it (`time.localtime`):
//! the year of a `msg_id`, `fedmsg-tail`'s timestamps.
//!
//! The standard library has no time zones; libc's `localtime_r` applies the
//! system's (`TZ`, `/etc/localtime`) exactly as Python does.

use std::time::{SystemTime, UNIX_EPOCH};

/// A broken-down local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Full year, e.g. 2025.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
    /// Hour, 0–23.
    pub hour: u32,
    /// Minute, 0–59.
    pub minute: u32,
    /// Second, 0–60 (leap second).
    pub second: u32,
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the epoch, now (0 if the clock is before 1970).
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Seconds since the epoch, now, with the fraction (0 if the clock is
/// before 1970): what fedmsg's `time.time()` gives.
pub fn now_epoch_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The local time of `epoch` seconds, or `None` when libc cannot represent
/// it (out of range).
pub fn local(epoch: i64) -> Option<LocalTime> {
    // time_t is 32 bits on some targets: the conversion is not always a no-op.
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = epoch.try_into().ok()?;
    // SAFETY: `tm` is plain old data that localtime_r fully initialises on
    // success; both pointers are valid for the duration of the call, and
    // localtime_r (unlike localtime) touches no shared static buffer.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        tm
    };
    Some(LocalTime {
        year: tm.tm_year.checked_add(1900)?,
        month: u32::try_from(tm.tm_mon + 1).ok()?,
        day: u32::try_from(tm.tm_mday).ok()?,
        hour: u32::try_from(tm.tm_hour).ok()?,
        minute: u32::try_from(tm.tm_min).ok()?,
        second: u32::try_from(tm.tm_sec).ok()?,
        weekday: u32::try_from(tm.tm_wday).ok()?,
    })
}

/// The current local year (for `msg_id`s); falls back to the UTC year if
/// libc fails.
pub fn current_year() -> i32 {
    let now = now_epoch();
    local(now).map_or_else(|| utc_year(now), |t| t.year)
}

/// The UTC year of `epoch` (civil calendar), used only as a fallback.
fn utc_year(epoch: i64) -> i32 {
    // Howard Hinnant's days-to-civil algorithm, year part only.
    let days = epoch.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400 + i64::from(mp >= 10);
    i32::try_from(year).unwrap_or(i32::MAX)
}

impl LocalTime {
    /// Python's `time.ctime` layout: `Tue Nov  4 13:05:09 2025`.
    pub fn ctime(&self) -> String {
        format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {}",
            WEEKDAYS.get(self.weekday as usize).unwrap_or(&"???"),
            MONTHS
                .get(self.month.saturating_sub(1) as usize)
                .unwrap_or(&"???"),
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.year
        )
    }

    /// `2025-11-04 13:05:09`, the layout of fedmsg's log lines.
    pub fn iso(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_year_matches_known_dates() {
        assert_eq!(utc_year(0), 1970);
        assert_eq!(utc_year(1_393_878_837), 2014);
        assert_eq!(utc_year(951_782_400), 2000); // 2000-02-29
        assert_eq!(utc_year(-1), 1969);
    }

    #[test]
    fn ctime_pads_the_day_with_a_space() {
        let t = LocalTime {
            year: 2025,
            month: 11,
            day: 4,
            hour: 3,
            minute: 5,
            second: 9,
            weekday: 2,
        };
        assert_eq!(t.ctime(), "Tue Nov  4 03:05:09 2025");
        assert_eq!(t.iso(), "2025-11-04 03:05:09");
    }

    #[test]
    fn local_time_of_now_is_plausible() {
        let now = local(now_epoch()).expect("localtime works");
        assert!(now.year >= 2024, "{now:?}");
        assert!((1..=12).contains(&now.month));
        assert_eq!(current_year(), now.year);
    }
}
