//! Real senders against a nolisted domain, each scenario in a network and
//! mount namespace of its own (see `tests/it/util/senders.rs`): `nolist run`
//! serves the MX records (decoy `mx01` at preference 10 on 198.18.0.1, its
//! responder; real `mx02` at 20 on 198.18.0.2, a real Postfix whose log
//! `run` watches) on 198.18.0.53:53, the system resolver of the namespace.
//! Postfix, Exim 4 and OpenSMTPD send two messages each, in every responder
//! mode, from their own /24, with `maxretry: 1`: the messages must arrive
//! at mx2, the sender's log must show the decoy tried first, and the sender
//! must never be banned. Bots that never retry, or resend faster than
//! `min_delay`, are banned in every mode.
//!
//! The listening modes run without a firewall (`backend: none`, where a
//! recognised retry is let through with a `421` greeting); `refuse` runs
//! with the `nftables` backend and `refuse_evidence`, the only way it sees
//! anything (and so the only way a sender could be banned in that mode).

use std::io::{BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use crate::util;
use crate::util::postfix::Postfix;
use crate::util::senders::{Kind, Sender, reply};
use crate::util::serve::Server;
use crate::util::{Connect, connect_from, require_root, require_tool, wait_until};

const DECOY: &str = "198.18.0.1";
const MX2: &str = "198.18.0.2";
const DNS: &str = "198.18.0.53";
const MODES: [&str; 4] = ["refuse", "greet-421", "greet-450", "rcpt-450"];
/// `bans.grace` without a firewall: long enough for any fallback measured
/// (OpenSMTPD: ~2 s), short enough for the test.
const GRACE: Duration = Duration::from_secs(10);
/// `bans.grace` with `nftables`: the least `grace-too-short` allows.
const GRACE_NFT: Duration = Duration::from_secs(30);

/// One scenario's world: the namespaces, mx2 and `nolist run`.
struct World {
    _resolver: tempfile::TempDir,
    mx: Postfix,
    nolist: Server,
    dir: tempfile::TempDir,
    grace: Duration,
}

impl World {
    /// Enters fresh namespaces with the decoy, mx2, the DNS listener and
    /// `clients` on `lo`, and starts mx2 and `nolist run` in `mode`
    /// (with the nftables backend in `refuse`, without a firewall else).
    fn enter(mode: &str, clients: &[&str], grace: Duration) -> World {
        World::enter_with(mode, clients, grace, mode == "refuse")
    }

    /// As [`World::enter`], with the nftables backend when `nftables`.
    fn enter_with(mode: &str, clients: &[&str], grace: Duration, nftables: bool) -> World {
        util::enter_private_netns();
        for a in [DECOY, MX2, DNS].iter().chain(clients) {
            util::add_lo_address(&format!("{a}/32"));
        }
        let resolver = util::senders::private_resolver(DNS);
        let mx = Postfix::start_real_mx(SocketAddr::new(ip(MX2), 25), "example.org")
            .expect("postfix (checked before)");
        let dir = tempfile::tempdir().unwrap();
        let refuse = mode == "refuse";
        let grace = if nftables {
            grace.max(GRACE_NFT)
        } else {
            grace
        };
        let evidence = if refuse {
            "\n  refuse_evidence: true"
        } else {
            ""
        };
        let backend = if nftables {
            "nftables, ports: [25]"
        } else {
            "none"
        };
        let cfg = dir.path().join("nolist.yaml");
        std::fs::write(
            &cfg,
            format!(
                "\
domains:
  - name: example.org
    ttl: 5m
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [{DECOY}] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [{MX2}] }}
responder:
  mode: {mode}{evidence}
mta: {{ logs: [\"{log}\"], format: postfix }}
bans:
  maxretry: 1
  findtime: 1h
  grace: {grace}s
  bantime: 1h
  retry: {{ min_delay: 2s, max_delay: 1h }}
  enforce: {{ backend: {backend} }}
dns:
  soa: {{ mname: ns1.example.org, rname: hostmaster@example.org, serial: 1 }}
  ns:
    - {{ host: ns1.example.org, ipv4: [{DNS}] }}
  serve:
    listen: [\"{DNS}:53\"]
",
                log = mx.maillog().display(),
                grace = grace.as_secs(),
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        // DNS over UDP and TCP, and the responder unless it refuses.
        let listeners = if refuse { 2 } else { 3 };
        let nolist = Server::start_with(
            "run",
            &cfg,
            &["--state-dir", state.to_str().unwrap()],
            listeners,
        )
        .unwrap_or_else(|l| panic!("nolist run did not start:\n{l}"));
        if nftables {
            assert!(
                nolist.wait_for_log("enforcing bans", Duration::from_secs(10)),
                "{}",
                nolist.log_text()
            );
        }
        World {
            _resolver: resolver,
            mx,
            nolist,
            dir,
            grace,
        }
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join("nolist.yaml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `nolist ARGS --format json` on this world's config and state.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = util::nolist()
            .args(args)
            .arg("-c")
            .arg(self.cfg())
            .arg("--state-dir")
            .arg(self.state())
            .args(["--format", "json"])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "nolist {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The targets of `nolist bans list`.
    fn banned(&self) -> Vec<String> {
        self.json(&["bans", "list"])
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| b["target"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_banned(&self, client: &str) -> bool {
        self.banned().contains(&format!("{client}/32"))
    }

    /// Messages mx2 accepted from `client`.
    fn arrivals(&self, client: &str) -> usize {
        let needle = format!("[{client}]");
        std::fs::read_to_string(self.mx.maillog())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(": client=") && l.contains(&needle))
            .count()
    }

    /// nolist's and mx2's logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- nolist ---\n{}\n--- mx2 ---\n{}\n--- bans ---\n{:?}",
            self.nolist.log_text(),
            self.mx.log(),
            self.banned()
        )
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether the common prerequisites are there; loud skips otherwise.
fn prerequisites() -> bool {
    require_tool("ip", "iproute2").is_some()
        && require_tool("nft", "nftables").is_some()
        && require_tool("postfix", "postfix").is_some()
        && require_root("network and mount namespaces")
}

/// Runs `scenario(mode)` for every mode, each in a thread (and so in
/// namespaces) of its own, at the same time; fails with every failure.
fn in_every_mode(scenario: fn(&str)) {
    let threads: Vec<_> = MODES
        .iter()
        .map(|&mode| (mode, std::thread::spawn(move || scenario(mode))))
        .collect();
    let failed: Vec<String> = threads
        .into_iter()
        .filter_map(|(mode, t)| {
            t.join().err().map(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                format!("=== mode {mode} ===\n{msg}")
            })
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

/// The address each sender sends from, each in its own /24.
fn source(kind: Kind) -> &'static str {
    match kind {
        Kind::Postfix => "198.18.1.7",
        Kind::Exim => "198.18.2.7",
        Kind::OpenSmtpd => "198.18.3.7",
    }
}

/// Two messages from `kind` in `mode`: both arrive at mx2, the sender's log
/// names the decoy before mx2, and the sender is never banned.
fn sender_delivers(kind: Kind, mode: &str) {
    let source = source(kind);
    // OpenSMTPD's retry in `rcpt-450` comes after its idle session with
    // the decoy closed (about 10 s) and min_delay: a longer grace.
    let grace = if kind == Kind::OpenSmtpd && mode == "rcpt-450" {
        GRACE_NFT
    } else {
        GRACE
    };
    let world = World::enter(mode, &[source], grace);
    let sender = Sender::start(kind, source);
    let log = || {
        format!(
            "--- {} ---\n{}\n{}",
            kind.name(),
            sender.log(),
            world.logs()
        )
    };
    let from = format!("news@{}.example", kind.name());
    for i in 1..=2 {
        sender.submit(&from, "user@example.org", &format!("message {i}"));
    }
    if kind == Kind::OpenSmtpd && mode == "rcpt-450" {
        opensmtpd_retry_is_recognised(&world, &sender);
    }
    wait_until(
        "two messages at mx2",
        Duration::from_secs(60),
        || world.arrivals(source) >= 2,
        &log,
    );
    // The receiver counts an arrival before the sender logs its delivery.
    wait_until(
        "the sender to log its delivery to mx2",
        Duration::from_secs(30),
        || sender.log().contains(MX2),
        &log,
    );
    let text = sender.log();
    let first = |needle: &str| text.lines().position(|l| l.contains(needle));
    let decoy = first(DECOY).unwrap_or_else(|| panic!("the decoy was never tried:\n{}", log()));
    let mx2 = first(MX2).unwrap_or_else(|| panic!("mx2 is not in the log:\n{}", log()));
    assert!(decoy < mx2, "mx2 before the decoy:\n{}", log());
    // The last possible ban is the grace after the last decoy hit, which
    // came before the arrival.
    std::thread::sleep(world.grace + Duration::from_secs(2));
    assert!(!world.is_banned(source), "{}", log());
    assert!(
        !world
            .nolist
            .log_text()
            .contains(&format!("action=Ban ip={source}")),
        "{}",
        log()
    );
}

/// OpenSMTPD after a `450` at RCPT keeps the message for the same decoy.
/// Its retry, forced after `min_delay`, is recognised; the next forced
/// attempt gets the `421` greeting and goes to mx2.
/// Whether a sender's log shows the responder's `421` greeting (the reply
/// itself: a bare "421" can be a process id in OpenSMTPD's debug log).
fn got_421(log: &str) -> bool {
    log.contains("421 4.7.0")
}

fn opensmtpd_retry_is_recognised(world: &World, sender: &Sender) {
    opensmtpd_retries(world, sender);
    // The next attempt gets 421 at the greeting and falls back.
    std::thread::sleep(Duration::from_secs(1));
    sender.schedule_all();
    wait_until(
        "the 421 greeting",
        Duration::from_secs(20),
        || got_421(&sender.log()),
        &|| format!("--- opensmtpd ---\n{}\n{}", sender.log(), world.logs()),
    );
}

/// OpenSMTPD's first session with the decoy (450 at RCPT), then its retry,
/// forced after `min_delay`, recognised as a retry.
fn opensmtpd_retries(world: &World, sender: &Sender) {
    let source = sender.source.as_str();
    let log = || format!("--- opensmtpd ---\n{}\n{}", sender.log(), world.logs());
    // OpenSMTPD keeps its connection to the decoy open after the 450 and
    // sends its next envelopes (even a forced retry) through it; a retry
    // is a new session, as after its real 400 s delay. So: its first
    // session must have ended (the responder logs it then).
    let session = format!("decoy session client={source}:");
    let sessions = || world.nolist.log_text().matches(&session).count();
    wait_until(
        "the end of its first session with the decoy",
        Duration::from_secs(30),
        || sessions() >= 1,
        &log,
    );
    assert!(sender.log().contains("450 4.7.1"), "{}", log());
    // It does not fall back by itself.
    assert_eq!(world.arrivals(source), 0, "{}", log());
    std::thread::sleep(Duration::from_millis(2500)); // min_delay: 2 s
    sender.schedule_all();
    wait_until(
        "the retry exemption",
        Duration::from_secs(30),
        || {
            world
                .nolist
                .log_text()
                .contains(&format!("action=RetryExempt ip={source}"))
        },
        &log,
    );
    let status = world.json(&["status"]);
    assert_eq!(status["retry_exempt_networks"], 1, "{status}\n{}", log());
}

/// With the nftables backend, OpenSMTPD's next attempt after its
/// recognised retry gets a TCP reset from the decoy (the let-through: the
/// responder never sees it), falls back to mx2 and delivers; it is never
/// banned.
#[test]
fn opensmtpd_in_rcpt_450_gets_a_reset_after_its_retry_with_nftables() {
    if !(prerequisites() && Kind::OpenSmtpd.available()) {
        return;
    }
    let kind = Kind::OpenSmtpd;
    let source = source(kind);
    let world = World::enter_with("rcpt-450", &[source], GRACE_NFT, true);
    let sender = Sender::start(kind, source);
    let log = || format!("--- opensmtpd ---\n{}\n{}", sender.log(), world.logs());
    sender.submit("news@opensmtpd.example", "user@example.org", "message 1");
    opensmtpd_retries(&world, &sender);
    assert!(
        world
            .nolist
            .wait_for_log("let-through reconciled", Duration::from_secs(20)),
        "{}",
        log()
    );
    let session = format!("decoy session client={source}:");
    let sessions = || world.nolist.log_text().matches(&session).count();
    let before = sessions();
    sender.schedule_all();
    wait_until(
        "the message at mx2",
        Duration::from_secs(60),
        || world.arrivals(source) >= 1,
        &log,
    );
    assert_eq!(sessions(), before, "the responder saw it again:\n{}", log());
    assert!(!got_421(&sender.log()), "{}", log());
    assert!(!world.is_banned(source), "{}", log());
}

#[test]
fn postfix_falls_back_to_the_real_mx_in_every_mode_and_is_never_banned() {
    if prerequisites() && Kind::Postfix.available() {
        in_every_mode(|mode| sender_delivers(Kind::Postfix, mode));
    }
}

#[test]
fn exim_falls_back_to_the_real_mx_in_every_mode_and_is_never_banned() {
    if prerequisites() && Kind::Exim.available() {
        in_every_mode(|mode| sender_delivers(Kind::Exim, mode));
    }
}

#[test]
fn opensmtpd_falls_back_or_is_let_through_after_its_retry_in_every_mode() {
    if prerequisites() && Kind::OpenSmtpd.available() {
        in_every_mode(|mode| sender_delivers(Kind::OpenSmtpd, mode));
    }
}

const ONE_SHOT_BOT: &str = "198.18.9.9";
const FAST_BOT: &str = "198.18.8.8";

/// One bot session from `source` in `mode` with `rcpt` as the recipient:
/// up to RCPT (or the greeting, or the refused SYN), never a retry.
fn bot_session(source: &str, mode: &str, rcpt: &str) {
    let decoy = SocketAddr::new(ip(DECOY), 25);
    if mode == "refuse" {
        assert_eq!(connect_from(ip(source), decoy), Connect::Refused);
        return;
    }
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(ip(source), 0).into()).unwrap();
    s.connect_timeout(&decoy.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let greeting = reply(&mut r);
    if let Some(code) = mode.strip_prefix("greet-") {
        assert!(greeting.starts_with(code), "{greeting}");
        return;
    }
    assert!(greeting.starts_with("220"), "{greeting}");
    for (cmd, code) in [
        ("EHLO bot.example".to_owned(), "250"),
        ("MAIL FROM:<bot@spam.example>".to_owned(), "250"),
        (format!("RCPT TO:<{rcpt}>"), "450"),
        ("QUIT".to_owned(), "221"),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let got = reply(&mut r);
        assert!(got.starts_with(code), "{cmd}: {got}");
    }
}

/// A bot that sends once per recipient and one that resends the same
/// envelope every 200 ms (faster than `min_delay`, 2 s) are both banned,
/// and neither is taken for a retrying MTA.
fn bots_are_banned(mode: &str) {
    let world = World::enter(mode, &[ONE_SHOT_BOT, FAST_BOT], GRACE);
    let log = || world.logs();
    for i in 1..=3 {
        bot_session(ONE_SHOT_BOT, mode, &format!("user{i}@example.org"));
    }
    for _ in 0..4 {
        bot_session(FAST_BOT, mode, "user@example.org");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(
        "both bans",
        world.grace + Duration::from_secs(20),
        || world.is_banned(ONE_SHOT_BOT) && world.is_banned(FAST_BOT),
        &log,
    );
    assert!(
        !world.nolist.log_text().contains("RetryExempt"),
        "{}",
        log()
    );
    assert_eq!(
        world.json(&["status"])["retry_exempt_networks"],
        0,
        "{}",
        log()
    );
}

#[test]
fn bots_that_never_retry_or_resend_too_fast_are_banned_in_every_mode() {
    if prerequisites() {
        in_every_mode(bots_are_banned);
    }
}
