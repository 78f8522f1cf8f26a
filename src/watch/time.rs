//! Log timestamps: classic syslog (`Nov 28 12:00:01`, no year), RFC 3339
//! (`2026-11-28T12:00:01.123456+01:00`) and Exim's `2026-11-28 12:00:01`.
//! Times become Unix seconds; local times go through a [`Zone`].
//!
//! Local time is ambiguous twice a year where clocks change: in autumn an
//! hour repeats (a *fold*: the stamp stands for two instants), in spring an
//! hour is skipped (a *gap*: no instant has that stamp). A fold is resolved
//! by the log itself: the first of the two instants that is not before the
//! previous line (logs are written in order), or, for a log's first line,
//! not before its reference time (read live, that is now). A gap stamp (written by a writer in another
//! zone) is read with the offset from before the gap, which puts it after
//! the gap.
//!
//! The classic syslog stamp has no year; [`syslog_year`] picks the latest
//! year that does not put the stamp more than [`crate::clock::YEAR_AHEAD`]
//! after the reference time (the wall clock in `run`, the file's mtime in
//! `replay`). A line that would be further ahead is last year's.

use std::cell::Cell;

use crate::clock::{MAX_SKEW, YEAR_AHEAD};

/// Converts local civil times to Unix seconds.
pub trait Zone {
    /// The instants local `y-m-d h:mi:s` stands for, earlier first: equal
    /// unless the time is repeated (a fold). `None` when the date does not
    /// exist (Feb 30).
    fn instants(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<(i64, i64)>;
}

/// Coordinated Universal Time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utc;

impl Utc {
    /// Unix seconds of `y-m-d h:mi:s` UTC (the date is not checked).
    pub fn to_unix(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        days_from_civil(y, m, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s)
    }
}

impl Zone for Utc {
    fn instants(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<(i64, i64)> {
        valid_date(y, m, d).then(|| {
            let t = Utc::to_unix(y, m, d, h, mi, s);
            (t, t)
        })
    }
}

/// An IANA time zone (the host's, or a named one), with the instants of
/// the last minute it converted kept: log lines come in runs from the same
/// minute, and every offset change of the time zone database falls on a
/// whole minute (Australia/Lord_Howe's shifts by 30 minutes).
pub struct Tz {
    tz: jiff::tz::TimeZone,
    minute: Cell<Option<(Minute, (i64, i64))>>,
}

/// A local minute: year, month, day, hour, minute.
type Minute = (i32, u32, u32, u32, u32);

impl Tz {
    /// The host's zone: `TZ`, else /etc/localtime; UTC when neither says.
    pub fn system() -> Tz {
        Tz::new(jiff::tz::TimeZone::system())
    }

    /// A zone by its IANA name (`Europe/Berlin`).
    pub fn named(name: &str) -> Result<Tz, jiff::Error> {
        jiff::tz::TimeZone::get(name).map(Tz::new)
    }

    /// The zone to read logs in: `name` (an IANA name, checked when the
    /// config was read), else the host's.
    pub fn for_logs(name: Option<&str>) -> Tz {
        name.and_then(|n| Tz::named(n).ok())
            .unwrap_or_else(Tz::system)
    }

    fn new(tz: jiff::tz::TimeZone) -> Tz {
        Tz {
            tz,
            minute: Cell::new(None),
        }
    }

    fn minute_instants(&self, y: i32, m: u32, d: u32, h: u32, mi: u32) -> Option<(i64, i64)> {
        use jiff::tz::AmbiguousOffset;
        let dt = jiff::civil::DateTime::new(
            i16::try_from(y).ok()?,
            i8::try_from(m).ok()?,
            i8::try_from(d).ok()?,
            i8::try_from(h).ok()?,
            i8::try_from(mi).ok()?,
            0,
            0,
        )
        .ok()?;
        let civil = Utc::to_unix(y, m, d, h, mi, 0);
        let at = |offset: jiff::tz::Offset| civil - i64::from(offset.seconds());
        Some(match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => (at(offset), at(offset)),
            AmbiguousOffset::Gap { before, .. } => (at(before), at(before)),
            AmbiguousOffset::Fold { before, after } => {
                let (a, b) = (at(before), at(after));
                (a.min(b), a.max(b))
            }
        })
    }
}

impl Zone for Tz {
    fn instants(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<(i64, i64)> {
        let key = (y, m, d, h, mi);
        let base = match self.minute.get() {
            Some((k, base)) if k == key => base,
            _ => {
                let base = self.minute_instants(y, m, d, h, mi)?;
                self.minute.set(Some((key, base)));
                base
            }
        };
        let s = i64::from(s);
        Some((base.0 + s, base.1 + s))
    }
}

/// Of the instants a local stamp stands for, the first that is not before
/// `after` (the previous line: logs are written in order, give or take
/// [`MAX_SKEW`] of disorder), or the later when both are.
pub fn in_order((earlier, later): (i64, i64), after: i64) -> i64 {
    if earlier >= after.saturating_sub(MAX_SKEW) {
        earlier
    } else {
        later
    }
}

fn leap(y: i32) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    let days = match m {
        2 if leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return false,
    };
    (1..=days).contains(&d)
}

/// The year of a classic syslog stamp `month day`, read at `reference`
/// (Unix seconds): the latest year in which that day is at most
/// [`YEAR_AHEAD`] after the reference. `None` for a day no year has
/// (Nov 31), and Feb 29 goes back to the latest leap year.
pub fn syslog_year(month: u32, day: u32, reference: i64) -> Option<i32> {
    let limit = reference.saturating_add(YEAR_AHEAD).div_euclid(86_400);
    let (ly, lm, ld) = civil_from_days(limit);
    let mut y = if (month, day) > (lm, ld) { ly - 1 } else { ly };
    // Feb 29 exists every 4 years, at most 8 apart (1896 → 1904).
    for _ in 0..8 {
        if valid_date(y, month, day) {
            return Some(y);
        }
        y -= 1;
    }
    None
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of Unix day `days` (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// RFC 3339 text of Unix seconds, UTC (`2026-11-28T12:00:01Z`).
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn num(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| {
        acc.checked_mul(10)?.checked_add(u32::from(c - b'0'))
    })
}

fn hms(b: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, mi, s) = (num(&b[..2])?, num(&b[3..5])?, num(&b[6..8])?);
    (h < 24 && mi < 60 && s <= 60).then_some((h, mi, s.min(59)))
}

fn date(b: &[u8]) -> Option<(i32, u32, u32)> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (num(&b[..4])?, num(&b[5..7])?, num(&b[8..10])?);
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y as i32, m, d))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` at the start of `line`; returns
/// Unix seconds and the length consumed.
pub fn parse_rfc3339(line: &[u8]) -> Option<(i64, usize)> {
    let (y, m, d) = date(line)?;
    if !matches!(line.get(10), Some(b'T' | b't')) {
        return None;
    }
    let (h, mi, s) = hms(line.get(11..)?)?;
    let mut pos = 19;
    if line.get(pos) == Some(&b'.') {
        pos += 1;
        while line.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
    }
    let base = Utc::to_unix(y, m, d, h, mi, s);
    match line.get(pos)? {
        b'Z' | b'z' => Some((base, pos + 1)),
        sign @ (b'+' | b'-') => {
            let tz = line.get(pos + 1..pos + 6)?;
            if tz[2] != b':' {
                return None;
            }
            let offset = i64::from(num(&tz[..2])? * 3600 + num(&tz[3..5])? * 60);
            let unix = if *sign == b'+' {
                base - offset
            } else {
                base + offset
            };
            Some((unix, pos + 6))
        }
        _ => None,
    }
}

/// `YYYY-MM-DD HH:MM:SS[.mmm][ ±HHMM]` (Exim); local time unless a zone
/// follows, a repeated local time read as the instant [`in_order`] after `near`.
pub fn parse_exim(line: &[u8], zone: &dyn Zone, near: i64) -> Option<(i64, usize)> {
    let (y, m, d) = date(line)?;
    if line.get(10) != Some(&b' ') {
        return None;
    }
    let (h, mi, s) = hms(line.get(11..)?)?;
    let mut pos = 19;
    if line.get(pos) == Some(&b'.') {
        pos += 1;
        while line.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
    }
    if let (Some(b' '), Some(sign @ (b'+' | b'-'))) = (line.get(pos), line.get(pos + 1))
        && let Some(tz) = line.get(pos + 2..pos + 6).and_then(num)
        && line.get(pos + 6).is_none_or(|c| *c == b' ')
    {
        let offset = i64::from(tz / 100 * 3600 + tz % 100 * 60);
        let base = Utc::to_unix(y, m, d, h, mi, s);
        let unix = if *sign == b'+' {
            base - offset
        } else {
            base + offset
        };
        return Some((unix, pos + 6));
    }
    Some((in_order(zone.instants(y, m, d, h, mi, s)?, near), pos))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// `Mmm dd HH:MM:SS` (day space-padded) at the start of `line`, read at
/// `reference` (which picks the year, see [`syslog_year`]); a repeated
/// local time is read as the instant [`in_order`] after `near`.
pub fn parse_syslog(
    line: &[u8],
    reference: i64,
    zone: &dyn Zone,
    near: i64,
) -> Option<(i64, usize)> {
    let mon = line.get(..3)?;
    let month = MONTHS.iter().position(|m| m.as_slice() == mon)? as u32 + 1;
    if line.get(3) != Some(&b' ') {
        return None;
    }
    let day_field = line.get(4..6)?;
    let day = match day_field {
        [b' ', d] => num(&[*d])?,
        _ => num(day_field)?,
    };
    if line.get(6) != Some(&b' ') || !(1..=31).contains(&day) {
        return None;
    }
    let (h, mi, s) = hms(line.get(7..)?)?;
    let year = syslog_year(month, day, reference)?;
    Some((
        in_order(zone.instants(year, month, day, h, mi, s)?, near),
        15,
    ))
}

#[cfg(test)]
mod tests;
