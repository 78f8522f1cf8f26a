//! Log time stamps: formats, years, time zones and their folds and gaps.

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
        parse_exim(b"2026-11-28 12:00:01 1abc", &Utc, 0),
        Some((utc, 19))
    );
    assert_eq!(
        parse_exim(b"2026-11-28 12:00:01.250 1abc", &Utc, 0).unwrap(),
        (utc, 23)
    );
    assert_eq!(
        parse_exim(b"2026-11-28 13:00:01 +0100 1abc", &Utc, 0).unwrap(),
        (utc, 25)
    );
    assert_eq!(parse_exim(b"2026-11-31 12:00:01 1abc", &Utc, 0), None);
}

fn syslog(line: &str, reference: i64) -> Option<i64> {
    parse_syslog(line.as_bytes(), reference, &Utc, reference).map(|(t, _)| t)
}

#[test]
fn syslog_year_across_new_year() {
    // Read on 2027-01-02: December lines are from 2026, January from 2027.
    let now = Utc::to_unix(2027, 1, 2, 0, 0, 0);
    let dec = syslog("Dec 31 23:59:59 mx postfix/smtpd[1]: x", now).unwrap();
    let jan = syslog("Jan  1 00:00:01 mx postfix/smtpd[1]: x", now).unwrap();
    assert_eq!(dec, Utc::to_unix(2026, 12, 31, 23, 59, 59));
    assert_eq!(jan, Utc::to_unix(2027, 1, 1, 0, 0, 1));
    assert_eq!(jan - dec, 2);
    // Read live a moment before midnight, a line stamped just after it
    // (the writer's clock a little ahead) is next year's.
    let eve = Utc::to_unix(2026, 12, 31, 23, 59, 58);
    assert_eq!(
        syslog("Jan  1 00:00:01 mx x", eve),
        Some(Utc::to_unix(2027, 1, 1, 0, 0, 1))
    );
    // A log entirely in this year stays in it.
    let now = Utc::to_unix(2026, 11, 28, 12, 0, 0);
    assert_eq!(syslog("Nov 28 12:00:01 mx x", now), Some(1_795_867_201));
    assert!(syslog("Foo 28 12:00:01", now).is_none());
    assert!(syslog("Nov 32 12:00:01", now).is_none());
    assert!(syslog("Nov 31 12:00:01", now).is_none());
}

#[test]
fn syslog_year_never_puts_a_line_far_into_the_future() {
    // The reproductions: read on 2026-12-03, a "Jan  2" line
    // appended to a December log, and a stray "Jun 15" line, are this
    // year's (in the past), not next year's.
    let now = Utc::to_unix(2026, 12, 3, 15, 0, 0);
    assert_eq!(
        syslog("Jan  2 00:00:06 mx x", now),
        Some(Utc::to_unix(2026, 1, 2, 0, 0, 6))
    );
    assert_eq!(
        syslog("Jun 15 10:00:00 mx x", now),
        Some(Utc::to_unix(2026, 6, 15, 10, 0, 0))
    );
    // At most YEAR_AHEAD ahead, for any stamp and reference.
    for reference in [now, Utc::to_unix(2026, 12, 31, 23, 0, 0), 0] {
        for (m, &name) in MONTHS.iter().enumerate() {
            for d in [1, 15, 28] {
                let line = format!("{} {d:2} 23:59:59 mx x", std::str::from_utf8(name).unwrap());
                let t = syslog(&line, reference).unwrap();
                assert!(
                    t <= reference + YEAR_AHEAD,
                    "{line} at {reference} (month {m})"
                );
                assert!(t > reference + YEAR_AHEAD - 366 * 86_400 - 86_400, "{line}");
            }
        }
    }
    // Feb 29 read in 2027 is 2024's.
    let now = Utc::to_unix(2027, 3, 1, 0, 0, 0);
    assert_eq!(
        syslog("Feb 29 12:00:00 mx x", now),
        Some(Utc::to_unix(2024, 2, 29, 12, 0, 0))
    );
}

/// Reads `lines` (`Mmm dd HH:MM:SS`) in order in `zone`, each fold
/// resolved by the line before, as a parser does.
fn read_in(zone: &dyn Zone, lines: &[&str], reference: i64) -> Vec<i64> {
    let mut prev = None;
    lines
        .iter()
        .map(|l| {
            let (t, _) = parse_syslog(l.as_bytes(), reference, zone, prev.unwrap_or(reference))
                .unwrap_or_else(|| panic!("{l}"));
            prev = Some(t);
            t
        })
        .collect()
}

#[test]
fn the_repeated_autumn_hour_reads_in_log_order() {
    // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET, so
    // 02:00-02:59 happens twice (first at +02:00, then at +01:00).
    let berlin = Tz::named("Europe/Berlin").unwrap();
    assert_eq!(
        berlin.instants(2026, 10, 25, 2, 30, 0),
        Some((
            Utc::to_unix(2026, 10, 25, 0, 30, 0),
            Utc::to_unix(2026, 10, 25, 1, 30, 0)
        ))
    );
    let reference = Utc::to_unix(2026, 10, 26, 0, 0, 0);
    let lines = [
        "Oct 25 01:59:00 mx x",
        "Oct 25 02:15:00 mx x", // first pass (CEST)
        "Oct 25 02:59:59 mx x",
        "Oct 25 02:00:00 mx x", // second pass (CET)
        "Oct 25 02:15:00 mx x",
        "Oct 25 03:00:00 mx x",
    ];
    let utc = |h, mi, s| Utc::to_unix(2026, 10, 25, h, mi, s);
    assert_eq!(
        read_in(&berlin, &lines, reference),
        [
            Utc::to_unix(2026, 10, 24, 23, 59, 0),
            utc(0, 15, 0),
            utc(0, 59, 59),
            utc(1, 0, 0),
            utc(1, 15, 0),
            utc(2, 0, 0),
        ]
    );
}

#[test]
fn a_half_hour_shift_is_exact_to_the_minute() {
    // Australia/Lord_Howe, 2026-04-05: 02:00 at +11:00 becomes 01:30 at
    // +10:30, so 01:30-01:59 happens twice, half an hour apart. (An
    // hour-keyed cache read the second pass with the first offset.)
    let lord_howe = Tz::named("Australia/Lord_Howe").unwrap();
    let reference = Utc::to_unix(2026, 4, 6, 0, 0, 0);
    let lines = [
        "Apr  5 01:29:00 mx x",
        "Apr  5 01:45:00 mx x",
        "Apr  5 01:59:59 mx x",
        "Apr  5 01:30:00 mx x",
        "Apr  5 01:45:00 mx x",
        "Apr  5 02:00:00 mx x",
    ];
    let utc = |h, mi, s| Utc::to_unix(2026, 4, 4, h, mi, s);
    assert_eq!(
        read_in(&lord_howe, &lines, reference),
        [
            utc(14, 29, 0),
            utc(14, 45, 0),
            utc(14, 59, 59),
            utc(15, 0, 0),
            utc(15, 15, 0),
            utc(15, 30, 0),
        ]
    );
}

#[test]
fn the_skipped_spring_hour_reads_after_the_gap() {
    // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; a stamp
    // of 02:30 (from a writer in another zone) is read as 03:30 CEST.
    let berlin = Tz::named("Europe/Berlin").unwrap();
    let t = Utc::to_unix(2026, 3, 29, 1, 30, 0);
    assert_eq!(berlin.instants(2026, 3, 29, 2, 30, 0), Some((t, t)));
    assert_eq!(berlin.instants(2026, 2, 30, 2, 30, 0), None);
}
