//! Log timestamps: classic syslog (`Nov 28 12:00:01`, no year), RFC 3339
//! (`2026-11-28T12:00:01.123456+01:00`) and Exim's `2026-11-28 12:00:01`.
//! Times become Unix seconds; local times go through a [`Zone`].

/// Converts a local civil time to Unix seconds.
pub trait Zone {
    /// Unix seconds of local `y-m-d h:mi:s`.
    fn to_unix(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64;
}

/// Coordinated Universal Time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utc;

impl Zone for Utc {
    fn to_unix(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        days_from_civil(y, m, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s)
    }
}

/// The host's local time zone (the `TZ` environment variable or
/// /etc/localtime), as the MTA that wrote the log saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Zone for Local {
    fn to_unix(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        // SAFETY: mktime reads and normalises the struct we own.
        unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            tm.tm_year = y - 1900;
            tm.tm_mon = m as i32 - 1;
            tm.tm_mday = d as i32;
            tm.tm_hour = h as i32;
            tm.tm_min = mi as i32;
            tm.tm_sec = s as i32;
            tm.tm_isdst = -1;
            let t = libc::mktime(&mut tm);
            if t == -1 {
                Utc.to_unix(y, m, d, h, mi, s)
            } else {
                t
            }
        }
    }
}

/// A zone that remembers the last hour it converted: `mktime` is slow, and
/// log lines come in runs from the same hour. (Offsets change only on
/// whole hours in every zone with daylight saving, so the cache is exact.)
pub struct HourCache<Z> {
    zone: Z,
    key: std::cell::Cell<(i32, u32, u32, u32)>,
    base: std::cell::Cell<i64>,
}

impl<Z: Zone> HourCache<Z> {
    /// Wraps `zone`.
    pub fn new(zone: Z) -> Self {
        HourCache {
            zone,
            key: std::cell::Cell::new((0, 0, 0, 99)),
            base: std::cell::Cell::new(0),
        }
    }
}

impl<Z: Zone> Zone for HourCache<Z> {
    fn to_unix(&self, y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        if self.key.get() != (y, m, d, h) {
            self.base.set(self.zone.to_unix(y, m, d, h, 0, 0));
            self.key.set((y, m, d, h));
        }
        self.base.get() + i64::from(mi * 60 + s)
    }
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
    let base = Utc.to_unix(y, m, d, h, mi, s);
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

/// `YYYY-MM-DD HH:MM:SS[.mmm][ ±HHMM]` (Exim); local time unless a zone follows.
pub fn parse_exim(line: &[u8], zone: &dyn Zone) -> Option<(i64, usize)> {
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
        let base = Utc.to_unix(y, m, d, h, mi, s);
        let unix = if *sign == b'+' {
            base - offset
        } else {
            base + offset
        };
        return Some((unix, pos + 6));
    }
    Some((zone.to_unix(y, m, d, h, mi, s), pos))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Infers the missing year of classic syslog stamps: a log read in January
/// that starts in December belongs to last year, and a jump from December
/// to January means the year turned.
#[derive(Clone, Debug)]
pub struct YearGuess {
    year: i32,
    month: u32,
    started: bool,
}

impl YearGuess {
    /// Guessing starts from the year and month of `now` (Unix seconds).
    pub fn new(now: i64) -> YearGuess {
        let (year, month, _) = civil_from_days(now.div_euclid(86_400));
        YearGuess {
            year,
            month,
            started: false,
        }
    }

    fn year_for(&mut self, month: u32) -> i32 {
        if !self.started {
            // Entries "from the future" are last year's.
            if month > self.month {
                self.year -= 1;
            }
            self.started = true;
        } else if month + 6 <= self.month {
            self.year += 1; // December → January
        } else if month >= self.month + 6 {
            self.year -= 1; // a stray older line across New Year
        }
        self.month = month;
        self.year
    }
}

/// `Mmm dd HH:MM:SS` (day space-padded) at the start of `line`.
pub fn parse_syslog(line: &[u8], guess: &mut YearGuess, zone: &dyn Zone) -> Option<(i64, usize)> {
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
    let year = guess.year_for(month);
    Some((zone.to_unix(year, month, day, h, mi, s), 15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-1000, 0, 1, 19_000, 20_785, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_867_201), "2026-11-28T12:00:01Z");
    }

    #[test]
    fn hour_cache_matches_the_zone() {
        let cached = HourCache::new(Utc);
        for (y, m, d, h, mi, s) in [
            (2026, 11, 28, 12, 0, 1),
            (2026, 11, 28, 12, 59, 59),
            (2026, 11, 28, 13, 0, 0),
            (2027, 1, 1, 0, 0, 0),
            (2026, 11, 28, 12, 30, 0),
        ] {
            assert_eq!(
                cached.to_unix(y, m, d, h, mi, s),
                Utc.to_unix(y, m, d, h, mi, s)
            );
        }
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        let utc = 1_795_867_201;
        assert_eq!(parse_rfc3339(b"2026-11-28T12:00:01Z host"), Some((utc, 20)));
        assert_eq!(
            parse_rfc3339(b"2026-11-28T13:00:01.123456+01:00 host")
                .unwrap()
                .0,
            utc
        );
        assert_eq!(parse_rfc3339(b"2026-11-28T07:00:01-05:00").unwrap().0, utc);
        for bad in [
            &b"2026-13-28T12:00:01Z"[..],
            b"2026-11-28 12:00:01Z",
            b"2026-11-28T25:00:01Z",
            b"2026-11-28T12:00:01",
        ] {
            assert!(
                parse_rfc3339(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn exim_stamps() {
        let utc = 1_795_867_201;
        assert_eq!(
            parse_exim(b"2026-11-28 12:00:01 1abc", &Utc),
            Some((utc, 19))
        );
        assert_eq!(
            parse_exim(b"2026-11-28 12:00:01.250 1abc", &Utc).unwrap(),
            (utc, 23)
        );
        assert_eq!(
            parse_exim(b"2026-11-28 13:00:01 +0100 1abc", &Utc).unwrap(),
            (utc, 25)
        );
    }

    #[test]
    fn syslog_year_inference_and_new_year() {
        // Read on 2027-01-02: December lines are from 2026, January from 2027.
        let now = Utc.to_unix(2027, 1, 2, 0, 0, 0);
        let mut g = YearGuess::new(now);
        let dec = parse_syslog(b"Dec 31 23:59:59 mx postfix/smtpd[1]: x", &mut g, &Utc)
            .unwrap()
            .0;
        let jan = parse_syslog(b"Jan  1 00:00:01 mx postfix/smtpd[1]: x", &mut g, &Utc)
            .unwrap()
            .0;
        assert_eq!(dec, Utc.to_unix(2026, 12, 31, 23, 59, 59));
        assert_eq!(jan, Utc.to_unix(2027, 1, 1, 0, 0, 1));
        assert_eq!(jan - dec, 2);
        // A log entirely in this year stays in it.
        let mut g = YearGuess::new(Utc.to_unix(2026, 11, 28, 12, 0, 0));
        let t = parse_syslog(b"Nov 28 12:00:01 mx x", &mut g, &Utc)
            .unwrap()
            .0;
        assert_eq!(t, 1_795_867_201);
        assert!(parse_syslog(b"Foo 28 12:00:01", &mut g, &Utc).is_none());
        assert!(parse_syslog(b"Nov 32 12:00:01", &mut g, &Utc).is_none());
    }
}
