//! `nolist run` with the ban engine: it follows an MTA log, bans the bot,
//! spares the real sender, records everything in the store, and resumes
//! from its checkpoint after a restart.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::nolist;
use crate::util::serve::Server;

fn stamp() -> String {
    nolist::watch::time::rfc3339(nolist::clock::unix_now())
}

fn reject(ip: &str) -> String {
    format!(
        "{} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
        stamp()
    )
}

fn delivery(ip: &str) -> String {
    format!(
        "{} mx2 postfix/smtpd[10]: 3F2A1B2C3D: client=mail.example.net[{ip}]\n",
        stamp()
    )
}

fn append(log: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn wait_until(mut ok: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

#[test]
fn bans_the_bot_from_the_log_spares_the_real_sender_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let state = dir.path().join("state");
    std::fs::write(&log, "").unwrap();
    let cfg = run_config(dir.path(), &log);
    let args = ["--state-dir", state.to_str().unwrap()];
    let mut server = Server::start_with("run", &cfg, &args, 0).unwrap();
    assert!(
        server.wait_for_log("following", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );

    // A bot, and a real sender whose network delivers through the real MX.
    append(&log, &reject("203.0.113.9").repeat(3));
    append(
        &log,
        &(reject("198.51.100.7").repeat(3) + &delivery("198.51.100.8")),
    );
    assert!(
        wait_until(
            || util::banned(&cfg).contains(&"203.0.113.9/32".to_owned()),
            Duration::from_secs(15)
        ),
        "bot not banned:\n{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        util::banned(&cfg),
        ["203.0.113.9/32"],
        "only the bot is banned"
    );

    // Lifted by hand while the daemon runs: the engine notices (within its
    // store sync) and judges the client afresh, as a repeat offender.
    nolist()
        .args(["bans", "-c", cfg.to_str().unwrap(), "remove", "203.0.113.9"])
        .assert()
        .success();
    assert!(
        server.wait_for_log("ban lifted by hand", Duration::from_secs(15)),
        "{}",
        server.log_text()
    );
    append(&log, &reject("203.0.113.9").repeat(3));
    assert!(
        wait_until(
            || util::banned(&cfg).contains(&"203.0.113.9/32".to_owned()),
            Duration::from_secs(15)
        ),
        "not banned again after a manual unban:\n{}",
        server.log_text()
    );

    // Two hits, a restart, one more hit: resuming exactly means 1 hit after
    // the restart (no ban); re-reading the log would count 5 and ban.
    append(&log, &reject("203.0.113.50").repeat(2));
    std::thread::sleep(Duration::from_secs(2));
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log_text()
    );
    let size = std::fs::metadata(&log).unwrap().len();
    let out = nolist()
        .args(["status", "-c", cfg.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checkpoint: serde_json::Value =
        serde_json::from_str(status["checkpoints"][0]["state"].as_str().unwrap()).unwrap();
    assert_eq!(
        checkpoint["offset"].as_u64(),
        Some(size),
        "checkpoint at the end of the log"
    );

    let server = Server::start_with("run", &cfg, &args, 0).unwrap();
    assert!(server.wait_for_log("following", Duration::from_secs(10)));
    append(&log, &reject("203.0.113.50"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        util::banned(&cfg),
        ["203.0.113.9/32"],
        "{}",
        server.log_text()
    );
    // The restored ban is known to the engine: a delivery from its /24 lifts it.
    append(&log, &delivery("203.0.113.77"));
    assert!(
        wait_until(|| util::banned(&cfg).is_empty(), Duration::from_secs(10)),
        "delivery did not lift the restored ban:\n{}",
        server.log_text()
    );
}

/// `nolist run` also serves the planned zones when `dns.serve` is set.
#[test]
fn run_serves_dns_when_configured() {
    let Some(dig) = util::require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    let text = util::read_example("sandwich.yaml")
        .replace("mode: greet-421", "mode: refuse")
        .replace(
            "listen: [\"127.0.0.1:5353\", \"[::1]:5353\"]",
            "listen: [\"127.0.0.1:0\"]",
        )
        .replace(
            "base_zone: base/",
            &format!("base_zone: {}/examples/base/", util::root().display()),
        )
        .replace("bans:\n", "bans:\n  enforce: { backend: none }\n");
    std::fs::write(&cfg, text).unwrap();
    let server = Server::start_with("run", &cfg, &[], 2).unwrap_or_else(|log| panic!("{log}"));
    let udp = server.addr("udp", false);
    let mx = util::dig_lines(&dig, udp, &["+short", "example.com", "MX"]);
    assert_eq!(
        mx,
        [
            "10 mx01.example.com.",
            "20 mx02.example.com.",
            "30 mx03.example.com.",
            "90 mx99.example.com."
        ]
    );
}

/// Writes a `run` config following `log` (grace 1 s, bans of an hour).
fn run_config(dir: &Path, log: &Path) -> std::path::PathBuf {
    let cfg = dir.join("nolist.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: {}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
responder: {{ mode: refuse }}
mta: {{ logs: [{}], format: postfix }}
bans: {{ maxretry: 3, findtime: 1h, grace: 1s, bantime: 1h, enforce: {{ backend: none }} }}
",
            dir.join("state").display(),
            log.display()
        ),
    )
    .unwrap();
    cfg
}

/// A log line from the future (an RFC 3339 stamp in 2099, or a classic
/// `Jan  2` stamp appended to a December log) neither expires the bans in
/// force nor keeps new ones from being decided: the engine's time is the
/// wall clock, and the line counts as now.
#[test]
fn a_log_line_from_the_future_moves_no_ban() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = run_config(dir.path(), &log);
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let server = Server::start_with("run", &cfg, &args, 0).unwrap();
    assert!(
        server.wait_for_log("following", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    append(&log, &reject("203.0.113.9").repeat(3));
    assert!(
        wait_until(
            || util::banned(&cfg).contains(&"203.0.113.9/32".to_owned()),
            Duration::from_secs(15)
        ),
        "bot not banned:\n{}",
        server.log_text()
    );

    // One line from 2099, and one classic stamp of next January (whichever
    // year the guess picks, never beyond a day or two ahead).
    append(
        &log,
        "2099-01-01T00:00:00+00:00 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[198.51.100.66]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
    );
    append(
        &log,
        "Jan  2 00:00:06 mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[198.51.100.67]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
    );
    assert!(
        server.wait_for_log("stamped in the future", Duration::from_secs(10)),
        "the 2099 line is not reported:\n{}",
        server.log_text()
    );
    // A new bot after the jump is still banned, and the first ban holds.
    append(&log, &reject("203.0.113.10").repeat(3));
    assert!(
        wait_until(
            || util::banned(&cfg).contains(&"203.0.113.10/32".to_owned()),
            Duration::from_secs(15)
        ),
        "no ban after a line from the future:\n{}",
        server.log_text()
    );
    let bans = util::banned(&cfg);
    assert!(
        bans.contains(&"203.0.113.9/32".to_owned()),
        "{bans:?}\n{}",
        server.log_text()
    );
    assert!(
        !server.log_text().contains("ban expired"),
        "{}",
        server.log_text()
    );
    // The future line counted once (as now), not as a ban of its own.
    assert!(
        !bans.iter().any(|b| b.starts_with("198.51.100.")),
        "{bans:?}"
    );
}
