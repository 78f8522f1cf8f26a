//! Time for the ban engine, and the rules that keep a log line from moving it.
//!
//! A log line's stamp is text that anything able to write to the log (or to
//! syslog) controls. If the engine took its "now" from the latest stamp, one
//! line dated 2099 would expire every ban at once and keep new bans from
//! ever coming due. So:
//!
//! - In `nolist run`, the engine's now is the wall clock ([`unix_now`]) and
//!   nothing else; the engine never moves backwards, so a host clock stepped
//!   back holds it until the wall clock catches up.
//! - Evidence from a log is dated by its stamp, but a stamp from the future
//!   counts as now ([`evidence_time`]). Up to [`MAX_SKEW`] ahead is ordinary
//!   clock skew between the writer and us; beyond that the line is
//!   *suspicious*: counted in `/metrics` and logged once per log.
//! - In `nolist replay`, there is no wall clock to trust for the log's own
//!   time, so [`LogClock`] derives a monotone one from the stamps. A stamp
//!   later than the log file's last change (its mtime, or now when that is
//!   earlier) counts as that time, and one more than [`MAX_SKEW`] later is
//!   suspicious and counts as the clock's now, which it does not move.
//! - The syslog year guess (`watch::time`) never places a line more than
//!   [`YEAR_AHEAD`] after its reference time: a line that would be further
//!   ahead is last year's.

use std::time::{SystemTime, UNIX_EPOCH};

/// How far a stamp may be ahead of the reference clock before it is
/// suspicious (clock skew between the log's writer and this host).
pub const MAX_SKEW: i64 = 300;

/// How far ahead of its reference time the syslog year guess may place a
/// stamp (stamps are local time, up to 14 h off UTC, and the year turns in
/// every zone on a different instant).
pub const YEAR_AHEAD: i64 = 2 * 86_400;

/// Unix seconds now (the wall clock).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A piece of evidence's time, as the engine may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dated {
    /// The stamp, or `now` when the stamp is later.
    pub at: i64,
    /// The stamp was more than [`MAX_SKEW`] ahead of `now`.
    pub suspicious: bool,
}

/// The time of evidence stamped `at`, read at `now`: never later than `now`.
pub fn evidence_time(at: i64, now: i64) -> Dated {
    Dated {
        at: at.min(now),
        suspicious: at > now.saturating_add(MAX_SKEW),
    }
}

/// The clock of a replayed log: the latest stamp seen, each stamp first
/// limited to what the log's age allows ([`evidence_time`] against the
/// log's reference time). It never goes backwards.
#[derive(Clone, Copy, Debug)]
pub struct LogClock {
    limit: i64,
    now: Option<i64>,
    suspicious: u64,
}

impl LogClock {
    /// A clock for a log last changed at `reference` (Unix seconds).
    pub fn new(reference: i64) -> LogClock {
        LogClock {
            limit: reference,
            now: None,
            suspicious: 0,
        }
    }

    /// A file's reference time: its mtime, or `wall` when that is earlier
    /// (a file dated in the future).
    pub fn reference(mtime: Option<i64>, wall: i64) -> i64 {
        mtime.map_or(wall, |m| m.min(wall))
    }

    /// A new log file (replays read several): its own reference time, the
    /// clock kept.
    pub fn next_file(&mut self, reference: i64) {
        self.limit = reference;
    }

    /// Takes a stamp and returns its usable time. A stamp up to
    /// [`MAX_SKEW`] after the log's reference time counts as the reference
    /// time; one further ahead is suspicious and counts as the clock's
    /// now, which it does not move (as in `run`, where it counts as now).
    pub fn observe(&mut self, at: i64) -> i64 {
        let dated = evidence_time(at, self.limit);
        if dated.suspicious {
            self.suspicious += 1;
            return *self.now.get_or_insert(self.limit);
        }
        self.now = Some(self.now.map_or(dated.at, |n| n.max(dated.at)));
        dated.at
    }

    /// The clock: the latest usable stamp so far.
    pub fn now(&self) -> Option<i64> {
        self.now
    }

    /// Stamps that were more than [`MAX_SKEW`] after their log's reference time.
    pub fn suspicious(&self) -> u64 {
        self.suspicious
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_from_the_future_counts_as_now() {
        let now = 1_800_000_000;
        assert_eq!(
            evidence_time(now - 10, now),
            Dated {
                at: now - 10,
                suspicious: false
            }
        );
        // Within the skew: now, not suspicious.
        assert_eq!(
            evidence_time(now + MAX_SKEW, now),
            Dated {
                at: now,
                suspicious: false
            }
        );
        // 2099: now, and suspicious.
        assert_eq!(
            evidence_time(4_070_908_800, now),
            Dated {
                at: now,
                suspicious: true
            }
        );
        assert!(!evidence_time(i64::MAX, i64::MAX).suspicious);
    }

    #[test]
    fn a_log_clock_is_monotone_and_bounded_by_its_reference() {
        let end = 1_800_000_000;
        let mut c = LogClock::new(LogClock::reference(Some(end), end + 100));
        assert_eq!(c.observe(end - 100), end - 100);
        // A line that jumps backwards keeps its own time; the clock stays.
        assert_eq!(c.observe(end - 500), end - 500);
        assert_eq!(c.now(), Some(end - 100));
        // A line from 2099 counts as the clock's now, and leaves it there.
        assert_eq!(c.observe(4_070_908_800), end - 100);
        assert_eq!((c.now(), c.suspicious()), (Some(end - 100), 1));
        // Within the skew after the reference: the reference.
        assert_eq!(c.observe(end + MAX_SKEW), end);
        assert_eq!((c.now(), c.suspicious()), (Some(end), 1));
        // A file dated in the future is limited by the wall clock.
        assert_eq!(LogClock::reference(Some(end + 1_000), end), end);
        assert_eq!(LogClock::reference(None, end), end);
    }

    /// `run` follows a log live, moving the parser's reference to the wall
    /// clock before each read (`daemon::tail_loop`): across the repeated
    /// autumn hour (Europe/Berlin, 2026-10-25) each line is read as the
    /// instant it was written, and so is the first line read after a
    /// restart in the second pass.
    #[test]
    fn run_reads_the_repeated_autumn_hour_live() {
        use crate::config::MtaFormat;
        use crate::watch::time::{Tz, Utc};
        use crate::watch::{DecoySpec, LineParser};
        let hit = |local: &str| {
            format!(
                "Oct 25 {local} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>"
            )
        };
        let utc = |h, mi| Utc::to_unix(2026, 10, 25, h, mi, 0);
        let parser = || {
            let zone = Box::new(Tz::named("Europe/Berlin").unwrap());
            LineParser::with_zone(MtaFormat::Postfix, &DecoySpec::default(), 0, zone)
        };
        // (local stamp, the instant it was written = the wall clock).
        let lines = [
            ("02:10:00", utc(0, 10)),
            ("02:50:00", utc(0, 50)),
            ("02:05:00", utc(1, 5)),
            ("02:40:00", utc(1, 40)),
            ("03:10:00", utc(2, 10)),
        ];
        let mut live = parser();
        for (local, wall) in lines {
            live.set_reference(wall + 1);
            let at = live.parse(hit(local).as_bytes()).unwrap().at;
            assert_eq!(evidence_time(at, wall + 1).at, wall, "{local}");
        }
        // Restarted at 01:30 UTC (02:30 CET, second pass): the first line
        // read is 02:20 CET, not 02:20 CEST an hour earlier.
        let mut restarted = parser();
        restarted.set_reference(utc(1, 30));
        assert_eq!(
            restarted.parse(hit("02:20:00").as_bytes()).unwrap().at,
            utc(1, 20)
        );
    }
}
