//! `nolist replay` over a Postfix log with a classic decoy: who is banned,
//! who is not, and what the JSON says.

mod util;

use util::{nolist, root};

#[test]
fn replay_bans_the_bot_spares_the_real_sender_and_lifts_on_delivery() {
    let log = root().join("tests/data/postfix-decoy.log");
    // The year of syslog stamps comes from the file's mtime: pin it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mail.log");
    std::fs::copy(&log, &copy).unwrap();
    let pinned = std::fs::File::options().write(true).open(&copy).unwrap();
    pinned
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_870_000))
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
