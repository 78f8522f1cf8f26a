//! Retry recognition through `nolist run` with the responder in `rcpt-450`,
//! in a network namespace of the test's own (clients on addresses of `lo`
//! that are not loopback, which is never banned and so never judged): an
//! OpenSMTPD-like sender that retries the same envelope is recognised,
//! never banned, and let through with a `421` greeting, also after a
//! `kill -9`; a bot that resends faster than `min_delay` is banned.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::util;
use crate::util::serve::Server;
use crate::util::{require_root, require_tool, wait_until};

const DECOY: &str = "198.18.0.1";
const MTA: &str = "198.18.1.7";
const MTA_NEIGHBOUR: &str = "198.18.1.8";
const BOT: &str = "198.18.2.9";

/// Enters a fresh namespace with the test's addresses on `lo`; `None`
/// after a loud skip.
fn netns() -> Option<()> {
    require_tool("ip", "iproute2")?;
    if !require_root("a network namespace") {
        return None;
    }
    util::enter_private_netns();
    for a in [DECOY, MTA, MTA_NEIGHBOUR, BOT] {
        util::add_lo_address(&format!("{a}/32"));
    }
    Some(())
}

/// A connection from `source` to `target`.
fn connect(source: &str, target: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0).into())
        .unwrap();
    s.connect_timeout(&target.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One reply (the last line of a multi-line one); empty at EOF.
fn reply(r: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return line;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    }
}

/// A delivery attempt from `source` with the envelope `from` → the
/// nolisted domain, up to RCPT: the replies, starting with the greeting.
/// A greeting other than 220 ends it.
fn attempt(source: &str, decoy: SocketAddr, from: &str) -> Vec<String> {
    let s = connect(source, decoy);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut out = vec![reply(&mut r)];
    if !out[0].starts_with("220") {
        out.push(reply(&mut r)); // EOF expected
        return out;
    }
    for cmd in [
        "EHLO mta.sender.example".to_owned(),
        format!("MAIL FROM:<{from}>"),
        "RCPT TO:<user@example.org>".to_owned(),
        "QUIT".to_owned(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        out.push(reply(&mut r));
    }
    out
}

fn codes(replies: &[String]) -> Vec<&str> {
    replies.iter().map(|r| r.get(..3).unwrap_or("")).collect()
}

fn nolist_json(args: &[&str], cfg: &Path, state: &Path) -> serde_json::Value {
    let out = util::nolist()
        .args(args)
        .arg("-c")
        .arg(cfg)
        .arg("--state-dir")
        .arg(state)
        .args(["--format", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn banned(cfg: &Path, state: &Path) -> Vec<String> {
    nolist_json(&["bans", "list"], cfg, state)
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["target"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    text
}

#[test]
fn a_retrying_mta_is_let_through_with_421_and_never_banned_even_after_kill_9() {
    if netns().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = dir.path().join("nolist.yaml");
    // maxretry 1: one decoy hit and the grace make a ban. No firewall, so
    // a 10 s grace passes the lints.
    std::fs::write(
        &cfg,
        format!(
            "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [{DECOY}] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [198.18.0.2] }}
responder:
  mode: rcpt-450
  listen: [\"{DECOY}:0\"]
metrics: {{ listen: \"127.0.0.1:0\" }}
bans:
  maxretry: 1
  grace: 10s
  retry: {{ min_delay: 2s, max_delay: 1h }}
  enforce: {{ backend: none }}
"
        ),
    )
    .unwrap();
    let args = ["--state-dir", state.to_str().unwrap()];
    let start = || Server::start_with("run", &cfg, &args, 2).unwrap_or_else(|l| panic!("{l}"));
    let first = start();
    let decoy = first.addr("smtp", false);
    let log = || first.log_text();
    let mta_banned = || {
        banned(&cfg, &state)
            .iter()
            .any(|t| t.starts_with("198.18.1."))
    };

    // OpenSMTPD after a 450 at RCPT: the same envelope again, later.
    let envelope = "news@sender.example";
    assert_eq!(
        codes(&attempt(MTA, decoy, envelope)),
        ["220", "250", "250", "450", "221"]
    );
    // A bot resends its envelope faster than min_delay (2 s).
    for _ in 0..3 {
        assert_eq!(codes(&attempt(BOT, decoy, "bot@spam.example"))[3], "450");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(!mta_banned(), "{}", log());
    assert_eq!(
        codes(&attempt(MTA, decoy, envelope)),
        ["220", "250", "250", "450", "221"],
        "the retry itself is still a decoy session"
    );
    wait_until(
        "the retry decision",
        Duration::from_secs(10),
        || log().contains("action=RetryExempt ip=198.18.1.7"),
        &log,
    );
    // From the next connection on, the whole network gets 421 at the
    // greeting and is closed: it tries the next MX.
    for source in [MTA, MTA_NEIGHBOUR] {
        let replies = attempt(source, decoy, envelope);
        assert!(
            replies[0].starts_with("421 4.7.0 ") && replies[0].contains("try the next MX"),
            "{replies:?}"
        );
        assert_eq!(replies[1], "", "closed after the greeting");
    }
    // The bot is banned after the grace; the MTA never is.
    wait_until(
        "the bot's ban",
        Duration::from_secs(20),
        || banned(&cfg, &state).contains(&format!("{BOT}/32")),
        &log,
    );
    assert!(!mta_banned(), "{}", log());
    let m = metrics(first.addr("metrics", false));
    assert!(m.contains("nolist_retries_total 1"), "{m}");
    assert!(
        m.contains("nolist_smtp_sessions_total{stage=\"connect\",end=\"passed\"} 2"),
        "{m}"
    );
    // Passed connections are no decoy hits: 2 MTA sessions + 3 bot sessions.
    assert!(
        m.contains("nolist_decoy_hits_total{source=\"responder\"} 5"),
        "{m}"
    );
    let status = nolist_json(&["status"], &cfg, &state);
    assert_eq!(status["retry_exempt_networks"], 1, "{status}");
    let recent = status["recent"].as_array().cloned().unwrap_or_default();
    assert!(
        recent
            .iter()
            .any(|r| r["action"] == "retry" && r["target"] == "198.18.1.0/24"),
        "{status}"
    );

    // kill -9: the exemption is in the store and restored at start.
    first.signal("KILL");
    let mut first = first;
    assert_eq!(first.wait_exit(Duration::from_secs(10)), None);
    drop(first);
    let second = start();
    let decoy = second.addr("smtp", false);
    let replies = attempt(MTA, decoy, envelope);
    assert!(
        replies[0].starts_with("421 4.7.0 "),
        "{replies:?}\n{}",
        second.log_text()
    );
    // Another network is still served as a decoy.
    assert_eq!(codes(&attempt(BOT, decoy, "bot2@spam.example"))[0], "220");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!mta_banned(), "{}", second.log_text());
}
