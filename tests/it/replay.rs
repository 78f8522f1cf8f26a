//! `nolist replay` over a Postfix log with a classic decoy: who is banned,
//! who is not, and what the JSON says.

use crate::util::{nolist, root};

#[test]
fn replay_bans_the_bot_spares_the_real_sender_and_lifts_on_delivery() {
    let log = root().join("tests/data/postfix-decoy.log");
    // The year of syslog stamps comes from the file's mtime, and no line
    // counts as later than it: pin it a minute after the last line.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mail.log");
    std::fs::copy(&log, &copy).unwrap();
    let pinned = std::fs::File::options().write(true).open(&copy).unwrap();
    pinned
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_870_860))
        .unwrap();
    drop(pinned);
    let out = nolist()
        .args(["replay", "-c", "examples/classic.yaml", "--format", "json"])
        .arg(&copy)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions: Vec<(String, String, String)> = lines
        .iter()
        .filter(|v| v.get("action").is_some())
        .map(|v| {
            (
                v["action"].as_str().unwrap().to_owned(),
                v["ip"].as_str().unwrap().to_owned(),
                v["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            (
                "ban".into(),
                "203.0.113.9".into(),
                "2026-11-28T12:10:01Z".into()
            ),
            (
                "ban".into(),
                "192.0.2.200".into(),
                "2026-11-28T12:50:00Z".into()
            ),
            (
                "unban".into(),
                "203.0.113.9".into(),
                "2026-11-28T13:00:00Z".into()
            ),
        ],
        "the real sender 198.51.100.7 (its /24 delivered) is never banned; the HELO/sender addresses are never taken"
    );
    let ban = &lines[0];
    assert_eq!(ban["until"], "2026-11-29T12:10:01Z");
    assert_eq!(ban["hits"], 3);
    assert_eq!(ban["first_hit"], "2026-11-28T12:00:01Z");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["lines"], 13);
    assert_eq!(summary["decoy_hits"], 9);
    assert_eq!(summary["deliveries"], 2);
    assert_eq!(
        (summary["bans"].as_u64(), summary["unbans"].as_u64()),
        (Some(2), Some(1))
    );
}

#[test]
fn replay_text_and_errors() {
    let out = nolist()
        .args([
            "replay",
            "-c",
            "examples/classic.yaml",
            "tests/data/postfix-decoy.log",
        ])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(" ban   203.0.113.9 "), "{text}");
    assert!(text.contains("13 lines in 1 file(s)"), "{text}");
    let out = nolist()
        .args(["replay", "-c", "examples/classic.yaml", "no/such.log"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such.log"));
    nolist()
        .args(["replay", "-c", "examples/classic.yaml"])
        .assert()
        .code(2);
}

/// Unix seconds of a UTC date and time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> u64 {
    let days = nolist::watch::time::days_from_civil(y, mo, d);
    u64::try_from(days * 86_400).unwrap() + u64::from(h * 3600 + mi * 60 + s)
}

/// Replays `lines` as a log last changed at `mtime` with `config`
/// (examples/classic.yaml when `None`), TZ=UTC; returns the decisions
/// (action, ip, at) and the summary.
fn replay_log(
    lines: &[String],
    mtime: u64,
    config: Option<&str>,
) -> (Vec<(String, String, String)>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, lines.concat()).unwrap();
    let f = std::fs::File::options().write(true).open(&log).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime))
        .unwrap();
    drop(f);
    let cfg = match config {
        Some(text) => {
            let path = dir.path().join("nolist.yaml");
            std::fs::write(&path, text).unwrap();
            path
        }
        None => root().join("examples/classic.yaml"),
    };
    let out = nolist()
        .args(["replay", "--format", "json", "-c"])
        .arg(&cfg)
        .arg(&log)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decisions = docs
        .iter()
        .filter(|v| v.get("action").is_some())
        .map(|v| {
            (
                v["action"].as_str().unwrap().to_owned(),
                v["ip"].as_str().unwrap().to_owned(),
                v["at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (decisions, docs.last().unwrap()["summary"].clone())
}

/// A decoy hit, each with an envelope of its own: a bot that never
/// retries (the same envelope back after a minute would be a retrying MTA).
fn hit(stamp: &str, ip: &str) -> String {
    static SENT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{stamp} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<a@b.example> to=<u{n}@example.org> proto=ESMTP helo=<x>\n"
    )
}

fn ban(ip: &str, at: &str) -> (String, String, String) {
    ("ban".into(), ip.into(), at.into())
}

/// A stray `Jun 15` line in a December log is last June's, not next June's,
/// and a line stamped 2099 counts as the end of the log: neither expires
/// the bans of the log (the bug: every ban expired at once).
#[test]
fn replay_lines_from_the_future_expire_nothing() {
    let mut lines = vec![
        hit("Dec  1 12:00:01", "203.0.113.9"),
        hit("Dec  1 12:00:05", "203.0.113.9"),
        hit("Dec  1 12:00:09", "203.0.113.9"),
        "Jun 15 10:00:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
        "2099-01-01T00:00:00+00:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
        hit("Dec  1 12:30:00", "192.0.2.200"),
        hit("Dec  1 12:30:01", "192.0.2.200"),
        hit("Dec  1 12:30:02", "192.0.2.200"),
    ];
    lines.push("Dec  1 13:00:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into());
    let (decisions, summary) = replay_log(&lines, utc(2026, 12, 1, 13, 0, 30), None);
    assert_eq!(
        decisions,
        [
            ban("203.0.113.9", "2026-12-01T12:10:01Z"),
            ban("192.0.2.200", "2026-12-01T12:40:00Z"),
        ]
    );
    assert_eq!(summary["last"], "2026-12-01T13:00:00Z", "{summary}");
    assert_eq!(summary["future_lines"], 1, "{summary}");
}

/// Lines that jump backwards are evidence at their own time; the log's
/// clock does not go back, so no decision is dated before an earlier one.
#[test]
fn replay_a_log_that_jumps_backwards() {
    let lines = [
        hit("Dec  1 12:00:01", "203.0.113.9"),
        hit("Dec  1 12:00:02", "203.0.113.9"),
        hit("Dec  1 12:00:03", "203.0.113.9"),
        hit("Dec  1 12:20:00", "203.0.113.50"),
        // An hour back (a writer with a wrong clock), then on again.
        hit("Dec  1 11:20:01", "203.0.113.50"),
        hit("Dec  1 11:20:02", "203.0.113.50"),
        "Dec  1 12:30:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
    ];
    let (decisions, _) = replay_log(&lines, utc(2026, 12, 1, 12, 31, 0), None);
    assert_eq!(
        decisions,
        [
            ban("203.0.113.9", "2026-12-01T12:10:01Z"),
            // Its window opened with the 12:20:00 hit (in log order), and
            // grace counts from there, not from the older stamps.
            ban("203.0.113.50", "2026-12-01T12:30:00Z"),
        ]
    );
}

/// Classic stamps across New Year, read on New Year's Day: December is
/// last year's, January this year's, and a ban spans the turn. (The
/// file's mtime must be in the past: a later one counts as now.)
#[test]
fn replay_across_new_year_with_classic_stamps() {
    let lines = [
        hit("Dec 31 23:59:50", "203.0.113.9"),
        hit("Dec 31 23:59:55", "203.0.113.9"),
        hit("Jan  1 00:00:05", "203.0.113.9"),
        "Jan  1 00:30:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
    ];
    let (decisions, summary) = replay_log(&lines, utc(2026, 1, 1, 0, 30, 1), None);
    assert_eq!(decisions, [ban("203.0.113.9", "2026-01-01T00:09:50Z")]);
    assert_eq!(summary["first"], "2025-12-31T23:59:50Z");
}

/// `mta.timezone`: local stamps in the repeated autumn hour read in log
/// order (Europe/Berlin, 2026-10-25: 02:00-02:59 first at +02:00, then
/// at +01:00).
#[test]
fn replay_reads_the_repeated_autumn_hour_in_order() {
    let text = std::fs::read_to_string(root().join("examples/classic.yaml"))
        .unwrap()
        .replace(
            "  format: postfix",
            "  timezone: Europe/Berlin\n  format: postfix",
        );
    assert!(text.contains("timezone: Europe/Berlin"));
    let lines = [
        hit("Oct 25 02:50:00", "203.0.113.9"), // 00:50 UTC
        "Oct 25 02:59:59 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
        hit("Oct 25 02:10:00", "203.0.113.9"), // 01:10 UTC
        hit("Oct 25 02:20:00", "203.0.113.9"), // 01:20 UTC
        "Oct 25 03:00:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]\n".into(),
    ];
    let (decisions, summary) = replay_log(&lines, utc(2026, 10, 25, 2, 0, 1), Some(&text));
    assert_eq!(decisions, [ban("203.0.113.9", "2026-10-25T01:20:00Z")]);
    assert_eq!(summary["last"], "2026-10-25T02:00:00Z");
    assert_eq!(summary["future_lines"], 0);
}

/// Replay reads lines as `run` does: a line over 64 KiB is dropped and
/// counted, never taken as evidence (here three hits padded past the cap
/// would have banned 203.0.113.77), and memory stays bounded by the cap.
#[test]
fn replay_drops_overlong_lines_as_run_does() {
    let pad = "x".repeat(70 * 1024);
    let mut lines: Vec<String> = (0..3)
        .map(|k| {
            hit(&format!("Dec  1 12:00:0{k}"), "203.0.113.77")
                .replace("helo=<x>", &format!("helo=<{pad}>"))
        })
        .collect();
    lines.push(hit("Dec  1 12:00:05", "203.0.113.9"));
    // The last line has no newline: a whole file's last line still counts.
    lines.push("Dec  1 12:30:00 mx2 postfix/smtpd[10]: connect from x[192.0.2.1]".into());
    let (decisions, summary) = replay_log(&lines, utc(2026, 12, 1, 12, 31, 0), None);
    assert!(decisions.is_empty(), "{decisions:?}");
    assert_eq!(summary["overlong_lines"], 3, "{summary}");
    assert_eq!(summary["lines"], 2, "{summary}");
    assert_eq!(summary["decoy_hits"], 1, "{summary}");
    assert_eq!(summary["last"], "2026-12-01T12:30:00Z", "{summary}");
}

/// An OpenSMTPD-like sender at a classic Postfix decoy: after the 450 at
/// RCPT it retries the same envelope after 400 s, then after 1,200 s
/// more. Its retry is recognised and it is never banned; a bot resending
/// its envelope every 10 s is banned and never exempt.
#[test]
fn replay_recognises_a_retrying_mta_and_never_bans_it() {
    let t0 = utc(2026, 11, 28, 12, 0, 0);
    let stamp = |secs: u64| nolist::watch::time::rfc3339(i64::try_from(t0 + secs).unwrap());
    let reject = |secs: u64, ip: &str, from: &str| {
        format!(
            "{} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<{from}> to=<u@example.org> proto=ESMTP helo=<h>\n",
            stamp(secs)
        )
    };
    let mut lines = Vec::new();
    for secs in [0, 400, 1600] {
        lines.push(reject(secs, "198.18.5.25", "news@sender.example"));
    }
    for k in 0..30 {
        lines.push(reject(10 * k, "203.0.113.9", "bot@spam.example"));
    }
    lines.sort();
    let (decisions, summary) = replay_log(&lines, t0 + 3600, None);
    assert_eq!(
        decisions,
        [
            (
                "retry_exempt".into(),
                "198.18.5.25".into(),
                "2026-11-28T12:06:40Z".into()
            ),
            ban("203.0.113.9", "2026-11-28T12:10:00Z"),
        ]
    );
    assert_eq!(summary["retries"], 1, "{summary}");
    assert_eq!(summary["bans"], 1, "{summary}");
    // The text format says `retry`, with the network it exempts.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, lines.concat()).unwrap();
    let f = std::fs::File::options().write(true).open(&log).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t0 + 3600))
        .unwrap();
    drop(f);
    let out = nolist()
        .args(["replay", "-c", "examples/classic.yaml"])
        .arg(&log)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("2026-11-28T12:06:40Z retry 198.18.5.25 ")
            && text.contains("network 198.18.5.0/24 exempt from bans")
            && text.contains("1 bans, 0 unbans, 1 retries"),
        "{text}"
    );
    // With retry recognition off, the same log bans it.
    let config = std::fs::read_to_string(root().join("examples/classic.yaml"))
        .unwrap()
        .replace("retry: { enabled: true,", "retry: { enabled: false,");
    assert!(config.contains("enabled: false"));
    let (decisions, _) = replay_log(&lines, t0 + 3600, Some(&config));
    assert!(
        decisions.contains(&ban("198.18.5.25", "2026-11-28T12:26:40Z")),
        "{decisions:?}"
    );
}
