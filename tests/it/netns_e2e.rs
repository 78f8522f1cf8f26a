//! `nolist run` end to end, each test in a network namespace of its own
//! (the test's thread enters it, and every process it starts lives there):
//! the decoy on 198.18.0.1:25, a real Postfix as the secondary on
//! 198.18.0.2:25, bots and real senders on further addresses of `lo`, and
//! nolist's nftables table. Nothing here touches the host's network or
//! ruleset.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util;
use crate::util::postfix::Postfix;
use crate::util::serve::Server;
use crate::util::{Connect, connect_from, require_root, require_tool, wait_until};

const DECOY: &str = "198.18.0.1:25";

/// Enters a fresh namespace with `addrs` on `lo`; `None` after a loud skip.
fn netns(tools: &[(&str, &str)], addrs: &[&str]) -> Option<()> {
    for (tool, package) in tools
        .iter()
        .chain(&[("ip", "iproute2"), ("nft", "nftables")])
    {
        require_tool(tool, package)?;
    }
    if !require_root("a network namespace and nftables") {
        return None;
    }
    util::enter_private_netns();
    for a in addrs {
        util::add_lo_address(&format!("{a}/32"));
    }
    Some(())
}

fn config(dir: &Path, mode: &str, log: &Path, grace: &str) -> std::path::PathBuf {
    let cfg = dir.join("nolist.yaml");
    std::fs::write(
        &cfg,
        format!(
            "\
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [198.18.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [198.18.0.2] }}
responder:
  mode: {mode}
mta: {{ logs: [\"{}\"], format: postfix }}
bans:
  maxretry: 3
  findtime: 1h
  grace: {grace}
  bantime: 1h
  ignore: []
  enforce: {{ backend: nftables, ports: [25] }}
metrics: {{ listen: \"127.0.0.1:0\" }}
",
            log.display()
        ),
    )
    .unwrap();
    cfg
}

/// The addresses in nolist's IPv4 ban set.
fn banned() -> Vec<String> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", "nolist", "banned4"])
        .output()
        .unwrap();
    nolist::enforce::nft::parse_set(&out.stdout)
        .unwrap_or_default()
        .iter()
        .map(nolist::enforce::element)
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn bots_are_dropped_and_senders_delivering_through_a_real_postfix_never_are() {
    let addrs = [
        "198.18.0.1",
        "198.18.0.2",
        "198.18.0.9",
        "198.18.1.7",
        "198.18.2.7",
        "198.18.3.9",
    ];
    if netns(&[("swaks", "swaks")], &addrs).is_none() {
        return;
    }
    let Some(mx) = Postfix::start_real_mx("198.18.0.2:25".parse().unwrap(), "example.org") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Grace covers the real sender's delivery, Postfix's log line and a
    // poll (30 s, the least `grace-too-short` allows with a firewall).
    let cfg = config(dir.path(), "rcpt-450", &mx.maillog(), "30s");
    let state = dir.path().join("state");
    let server = Server::start_with("run", &cfg, &["--state-dir", state.to_str().unwrap()], 1)
        .unwrap_or_else(|log| panic!("{log}"));
    let log = || format!("{}\n--- postfix ---\n{}", server.log_text(), mx.log());
    let decoy: SocketAddr = DECOY.parse().unwrap();

    // A real sender: three decoy hits (say, three queue runs), then the
    // message goes through the real MX within grace.
    for _ in 0..3 {
        assert!(
            util::swaks("198.18.1.7", DECOY, false, 5).contains("<** 450"),
            "{}",
            log()
        );
    }
    let sent = util::swaks("198.18.1.7", "198.18.0.2:25", true, 5);
    assert!(
        sent.contains("<-  250 2.0.0 Ok: queued"),
        "{sent}\n{}",
        log()
    );
    // A bot: three dialogues up to RCPT, each answered 450, no delivery.
    for _ in 0..3 {
        assert!(util::swaks("198.18.0.9", DECOY, false, 5).contains("<** 450"));
    }
    wait_until(
        "the bot's ban",
        Duration::from_secs(60),
        || banned().contains(&"198.18.0.9".to_owned()),
        &log,
    );
    assert_eq!(
        connect_from(ip("198.18.0.9"), decoy),
        Connect::Dropped,
        "the bot's next SYN"
    );
    assert_eq!(connect_from(ip("198.18.1.7"), decoy), Connect::Open);
    assert!(!banned().contains(&"198.18.1.7".to_owned()), "{}", log());
    assert!(
        server.log_text().contains("ip=198.18.0.9"),
        "the decision is logged: {}",
        log()
    );
    // The ban reached nftables by following the store's history (only the
    // changed ban read), not by reading every ban and the whole set back.
    assert!(
        server
            .log_text()
            .lines()
            .any(|l| l.contains("firewall reconciled") && l.contains("followed=1")),
        "{}",
        log()
    );
    let body = metrics(server.addr("metrics", false));
    let sample =
        |name: &str| util::sample(&body, name).unwrap_or_else(|| panic!("{name}:\n{body}"));
    assert!(sample("nolist_enforcement_reconciles_total{kind=\"followed\"}") >= 1.0);
    assert!(sample("nolist_enforcement_reconciles_total{kind=\"full\"}") >= 1.0);
    assert!(sample("nolist_enforcement_reconcile_seconds{kind=\"full\"}") > 0.0);
    // The real sender's delivery line was read within seconds of Postfix
    // writing it.
    let lag = format!(
        "nolist_log_lag_seconds{{log=\"{}\"}}",
        mx.maillog().display()
    );
    assert!((0.0..60.0).contains(&sample(&lag)), "{body}");

    // The real MX's log is rotated while nolist runs: a delivery in the
    // new file still clears its sender, banned only if the rotation were missed.
    mx.logrotate();
    for _ in 0..3 {
        util::swaks("198.18.2.7", DECOY, false, 5);
        util::swaks("198.18.3.9", DECOY, false, 5);
    }
    let sent = util::swaks("198.18.2.7", "198.18.0.2:25", true, 5);
    assert!(sent.contains("queued"), "{sent}");
    wait_until(
        "the second bot's ban",
        Duration::from_secs(60),
        || banned().contains(&"198.18.3.9".to_owned()),
        &log,
    );
    assert!(!banned().contains(&"198.18.2.7".to_owned()), "{}", log());
    assert!(server.log_text().contains("log rotated"), "{}", log());

    // A wiped ruleset is rebuilt from the store within a reconcile.
    util::run_ok("nft", &["flush", "ruleset"]);
    wait_until(
        "the rebuild",
        Duration::from_secs(10),
        || banned().len() == 2,
        &log,
    );
    assert_eq!(connect_from(ip("198.18.0.9"), decoy), Connect::Dropped);

    server.signal("TERM");
    let mut server = server;
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log_text()
    );
}

fn reject_line(ip: &str) -> String {
    format!(
        "{} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
        nolist::watch::time::rfc3339(nolist::clock::unix_now())
    )
}

fn append(log: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The single addresses banned in the store (the bans of the engine).
fn store_bans(state: &Path) -> Vec<String> {
    let Ok(db) = rusqlite::Connection::open(state.join("nolist.db")) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT target FROM bans") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| {
            rows.filter_map(Result::ok)
                .map(|t| t.trim_end_matches("/32").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The bans in force in the store, after checking that the history holds
/// exactly one ban decision for each (nothing decided twice).
fn bans_decided_once(state: &Path) -> usize {
    let db = rusqlite::Connection::open(state.join("nolist.db")).unwrap();
    let count = |sql: &str| -> usize {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap())
            .unwrap()
    };
    let in_force = count("SELECT count(*) FROM bans");
    assert_eq!(
        count("SELECT count(*) FROM history WHERE action = 'ban'"),
        in_force,
        "every ban decided once"
    );
    in_force
}

#[test]
fn kill_9_mid_burst_loses_no_ban_and_counts_no_line_twice() {
    if netns(&[], &["198.18.0.1", "198.18.0.2"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    // grace 0: a ban is decided with the line that completes it, and so
    // committed with that line's checkpoint. Only without a firewall
    // (`grace-too-short`): the bans are read from the store.
    let cfg = config(dir.path(), "refuse", &log, "0s");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("backend: nftables", "backend: none")).unwrap();
    let state = dir.path().join("state");
    let banned = || store_bans(&state);
    let args = ["--state-dir", state.to_str().unwrap()];
    let start = || {
        let s = Server::start_with("run", &cfg, &args, 0).unwrap_or_else(|l| panic!("{l}"));
        assert!(
            s.wait_for_log("following", Duration::from_secs(10)),
            "{}",
            s.log_text()
        );
        s
    };
    let mut first = start();
    // A burst: 300 bots, three hits each, written in 30 pieces over 3 s;
    // the daemon is killed as soon as its first bans are decided, while the
    // rest is still being written.
    let bots: Vec<String> = (0..300)
        .map(|i| format!("198.19.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let writer = {
        let log = log.clone();
        let bots = bots.clone();
        std::thread::spawn(move || {
            for piece in bots.chunks(10) {
                let text: String = (0..3)
                    .flat_map(|_| piece.iter().map(|b| reject_line(b)))
                    .collect();
                append(&log, &text);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    wait_until(
        "the first decisions",
        Duration::from_secs(20),
        || first.log_text().contains("decision"),
        &|| first.log_text(),
    );
    first.signal("KILL");
    assert_eq!(
        first.wait_exit(Duration::from_secs(10)),
        None,
        "killed by a signal, no exit code"
    );
    let before = first.log_text().matches("decision").count();
    drop(first);
    writer.join().unwrap();
    assert!(
        before < 300,
        "the kill came in the middle of the burst ({before} decided)"
    );

    // Restart: every ban decided before the kill is in the store, and none
    // is decided twice. Hits that were read (their
    // checkpoint committed) but had not made a ban yet are lost by design,
    // so every bot comes back three more times: the banned ones are
    // ignored, the others are banned now.
    let second = start();
    let again: String = (0..3)
        .flat_map(|_| bots.iter().map(|b| reject_line(b)))
        .collect();
    append(&log, &again);
    wait_until(
        "300 bans in the store",
        Duration::from_secs(30),
        || banned().len() == 300,
        &|| second.log_text(),
    );
    assert_eq!(bans_decided_once(&state), 300);

    // Two hits, recorded; then a kill and a restart; then one more hit.
    // The two are never read again, so the three never add up to a ban.
    append(&log, &reject_line("198.18.7.7").repeat(2));
    wait_until(
        "the checkpoint",
        Duration::from_secs(10),
        || {
            let db = rusqlite::Connection::open(state.join("nolist.db")).unwrap();
            let size: Option<String> = db
                .query_row("SELECT state FROM checkpoints", [], |r| r.get(0))
                .ok();
            let len = std::fs::metadata(&log).unwrap().len();
            size.is_some_and(|s| s.contains(&format!("\"offset\":{len}")))
        },
        &|| second.log_text(),
    );
    second.signal("KILL");
    drop(second);
    let third = start();
    append(&log, &reject_line("198.18.7.7"));
    // A bot after the restart is banned: the log is being followed.
    append(&log, &reject_line("198.18.8.8").repeat(3));
    wait_until(
        "the new bot's ban",
        Duration::from_secs(15),
        || banned().contains(&"198.18.8.8".to_owned()),
        &|| third.log_text(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !banned().contains(&"198.18.7.7".to_owned()),
        "{}",
        third.log_text()
    );
    assert_eq!(bans_decided_once(&state), 301);
}

#[test]
fn refuse_mode_resets_and_turns_the_refused_connections_into_bans() {
    if netns(&[], &["198.18.0.1", "198.18.0.9", "198.18.0.50"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = config(dir.path(), "refuse\n  refuse_evidence: true", &log, "30s");
    let state = dir.path().join("state");
    let server = Server::start_with("run", &cfg, &["--state-dir", state.to_str().unwrap()], 0)
        .unwrap_or_else(|l| panic!("{l}"));
    wait_until(
        "enforcement",
        Duration::from_secs(10),
        || server.log_text().contains("enforcing bans"),
        &|| server.log_text(),
    );
    let decoy: SocketAddr = DECOY.parse().unwrap();
    // The probe sees a reset, at once.
    let out = util::nolist()
        .args(["probe", DECOY, "--format", "json"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let (code, json) = util::exit_and_json(&out);
    assert_eq!(code, 1);
    assert_eq!(json["probes"][0]["outcome"], "refused", "{json}");
    // A bot's three connection attempts become three hits and a ban.
    for _ in 0..3 {
        assert_eq!(connect_from(ip("198.18.0.9"), decoy), Connect::Refused);
    }
    assert_eq!(connect_from(ip("198.18.0.50"), decoy), Connect::Refused);
    wait_until(
        "the bot's ban",
        Duration::from_secs(60),
        || banned().contains(&"198.18.0.9".to_owned()),
        &|| server.log_text(),
    );
    assert_eq!(connect_from(ip("198.18.0.9"), decoy), Connect::Dropped);
    // One attempt is not enough.
    assert!(!banned().contains(&"198.18.0.50".to_owned()));
    assert_eq!(connect_from(ip("198.18.0.50"), decoy), Connect::Refused);
}

/// `nolist run` of `config(dir, mode, …)` (grace 30 s, nftables) with the
/// state in `dir`, once it enforces (after `listeners` listener lines);
/// also the config and log paths.
fn run_enforcing(
    dir: &Path,
    mode: &str,
    listeners: usize,
) -> (Server, std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = config(dir, mode, &log, "30s");
    let state = dir.join("state");
    let server = Server::start_with(
        "run",
        &cfg,
        &["--state-dir", state.to_str().unwrap()],
        listeners,
    )
    .unwrap_or_else(|l| panic!("{l}"));
    assert!(
        server.wait_for_log("enforcing bans", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    (server, cfg, log)
}

/// Refuse mode: three connections from `bot` are reset, counted, and ban it.
fn three_refusals_ban(server: &Server, bot: &str) {
    let decoy: SocketAddr = DECOY.parse().unwrap();
    for _ in 0..3 {
        assert_eq!(connect_from(ip(bot), decoy), Connect::Refused);
    }
    wait_until(
        "the bot's ban",
        Duration::from_secs(60),
        || banned().contains(&bot.to_owned()),
        &|| server.log_text(),
    );
}

/// A reload from a listening mode into refuse mode with refuse evidence
/// starts reading the firewall's counts (the reading thread starts only
/// when a config first asks for it).
#[test]
fn a_reload_into_refuse_mode_turns_the_refused_connections_into_bans() {
    if netns(&[], &["198.18.0.1", "198.18.0.9"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, _, log) = run_enforcing(dir.path(), "rcpt-450", 0);
    config(dir.path(), "refuse\n  refuse_evidence: true", &log, "30s");
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded /", Duration::from_secs(70)),
        "{}",
        server.log_text()
    );
    three_refusals_ban(&server, "198.18.0.9");
}

#[test]
fn sighup_rewrites_the_firewall_rules_and_a_broken_config_leaves_them() {
    if netns(&[], &["198.18.0.1", "198.18.0.2"]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, cfg, _) = run_enforcing(dir.path(), "rcpt-450", 1);
    let rules = || util::run_ok("nft", &["list", "chain", "inet", "nolist", "input"]);
    assert!(!rules().contains("587"), "{}", rules());
    let reloads = |n: usize| {
        wait_until(
            "the reload",
            Duration::from_secs(70),
            || {
                let log = server.log_text();
                log.matches("reloaded /").count() + log.matches("reload failed").count() >= n
            },
            &|| server.log_text(),
        );
    };
    // Other ports: the rules are rewritten on the enforcement thread.
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("ports: [25]", "ports: [25, 587]")).unwrap();
    server.signal("HUP");
    reloads(1);
    assert!(
        rules().contains("tcp dport { 25, 587 }"),
        "{}\n{}",
        rules(),
        server.log_text()
    );
    // A broken config: the rules stay as they are.
    std::fs::write(&cfg, "domains: [\n").unwrap();
    server.signal("HUP");
    reloads(2);
    assert!(
        server.log_text().contains("reload failed"),
        "{}",
        server.log_text()
    );
    assert!(rules().contains("tcp dport { 25, 587 }"), "{}", rules());
}

/// The networks in nolist's IPv4 let-through set, with the seconds until
/// the kernel drops each.
fn passes() -> Vec<(String, Option<u64>)> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", "nolist", "pass4"])
        .output()
        .unwrap();
    nolist::enforce::nft::parse_elements(&out.stdout)
        .unwrap_or_default()
        .iter()
        .map(|l| (l.net.to_string(), l.expires))
        .collect()
}

/// A delivery attempt from `source` to the decoy up to RCPT with the
/// envelope `from` -> user@example.org: the reply codes, greeting first.
fn smtp_codes(source: &str, decoy: SocketAddr, from: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(ip(source), 0).into()).unwrap();
    s.connect_timeout(&decoy.into(), Duration::from_secs(5))
        .unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut reply = || {
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 && line.as_bytes().get(3) == Some(&b'-') {
            line.clear();
        }
        line.get(..3).unwrap_or("").to_owned()
    };
    let mut codes = vec![reply()];
    for cmd in [
        "EHLO mta.sender.example".to_owned(),
        format!("MAIL FROM:<{from}>"),
        "RCPT TO:<user@example.org>".to_owned(),
        "QUIT".to_owned(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        codes.push(reply());
    }
    codes
}

fn metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_retrying_mta_gets_a_reset_from_the_decoy_through_the_nftables_let_through() {
    const MTA: &str = "198.18.1.7";
    const NEIGHBOUR: &str = "198.18.1.8";
    const OTHER: &str = "198.18.2.9";
    if netns(&[], &["198.18.0.1", MTA, NEIGHBOUR, OTHER]).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = config(dir.path(), "rcpt-450", &log, "30s");
    let enforce = "  enforce: { backend: nftables, ports: [25] }\n";
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        enforce,
        &format!("{enforce}  retry: {{ min_delay: 1s, max_delay: 1h }}\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let start = || {
        let s = Server::start_with("run", &cfg, &args, 2).unwrap_or_else(|l| panic!("{l}"));
        assert!(
            s.wait_for_log(
                "retry-exempt networks get a TCP reset",
                Duration::from_secs(10)
            ),
            "{}",
            s.log_text()
        );
        s
    };
    let first = start();
    let log = || first.log_text();
    let decoy: SocketAddr = DECOY.parse().unwrap();
    let in_set = || passes().iter().any(|(n, _)| n == "198.18.1.0/24");

    // The same envelope twice, more than min_delay apart (in whole
    // seconds, which is how the engine counts): a retrying MTA.
    let envelope = "news@sender.example";
    assert_eq!(
        smtp_codes(MTA, decoy, envelope),
        ["220", "250", "250", "450", "221"]
    );
    assert!(passes().is_empty(), "{:?}", passes());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(smtp_codes(MTA, decoy, envelope)[3], "450");
    wait_until(
        "the network in the let-through set",
        Duration::from_secs(15),
        in_set,
        &log,
    );
    // Its network is reset by the kernel before the responder sees it;
    // another client still gets the decoy's banner.
    assert_eq!(connect_from(ip(MTA), decoy), Connect::Refused, "{}", log());
    assert_eq!(
        connect_from(ip(NEIGHBOUR), decoy),
        Connect::Refused,
        "the whole /24"
    );
    assert_eq!(smtp_codes(OTHER, decoy, "bot@spam.example")[0], "220");
    // The element's timeout is the exemption's remaining time: `remember`
    // (30 days) after the retry.
    let expires = passes()[0].1.expect("a timeout");
    let remember = 30 * 86_400;
    assert!(
        (remember - 60..=remember).contains(&expires),
        "{expires} {:?}",
        passes()
    );
    // Counted and logged once the batch is in (the set may show it first).
    let counted = || {
        metrics(first.addr("metrics", false)).contains("nolist_pass_changes_total{op=\"add\"} 1")
    };
    wait_until("the change counted", Duration::from_secs(5), counted, &log);
    assert!(
        first.wait_for_log("let-through reconciled", Duration::from_secs(5)),
        "{}",
        log()
    );

    // A wiped ruleset: the let-through is rebuilt with the bans.
    util::run_ok("nft", &["flush", "ruleset"]);
    wait_until(
        "the let-through rebuilt",
        Duration::from_secs(15),
        in_set,
        &log,
    );
    assert_eq!(connect_from(ip(MTA), decoy), Connect::Refused, "{}", log());

    // kill -9, and the ruleset wiped while nolist is down: the exemption
    // comes back from the store at start.
    first.signal("KILL");
    let mut first = first;
    assert_eq!(first.wait_exit(Duration::from_secs(10)), None);
    drop(first);
    util::run_ok("nft", &["flush", "ruleset"]);
    let second = start();
    wait_until(
        "the let-through restored from the store",
        Duration::from_secs(15),
        in_set,
        &|| second.log_text(),
    );
    assert_eq!(
        connect_from(ip(MTA), decoy),
        Connect::Refused,
        "{}",
        second.log_text()
    );
    assert_eq!(smtp_codes(OTHER, decoy, "bot2@spam.example")[0], "220");
}
