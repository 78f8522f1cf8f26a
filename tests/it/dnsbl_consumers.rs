//! The DNSBL (docs/dnsbl.md) as its real consumers use it, with the
//! configuration lines of the docs' "Using it from Postfix postscreen and
//! rspamd": a Postfix whose `postscreen` refuses the clients `nolist run`
//! banned from their decoy hits, and rspamd's `rbl` module scoring the
//! clients `nolist bans add` listed. Each test runs in a network namespace
//! of its own; the Postfix one also gets its own `/etc/resolv.conf` (a
//! mount namespace), since Postfix's resolver takes no port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util;
use crate::util::mountns::PrivateResolvConf;
use crate::util::postfix::Postfix;
use crate::util::rspamd::Rspamd;
use crate::util::serve::Server;
use crate::util::{require_root, require_tool, wait_until};

const ZONE: &str = "bl.example.net";
/// The address of nolist's DNS server in the docs' snippets.
const DOC_DNS: &str = "192.0.2.53:53";

/// The fenced block that follows the first line containing `label` in
/// docs/dnsbl.md: the configuration the docs give, run here verbatim.
fn doc_block(label: &str) -> String {
    let doc = std::fs::read_to_string(util::root().join("docs/dnsbl.md")).expect("docs/dnsbl.md");
    let after = doc
        .split_once(label)
        .unwrap_or_else(|| panic!("docs/dnsbl.md has no {label:?}"))
        .1;
    let block = after
        .split_once("\n```\n")
        .expect("a fenced block after the label")
        .1;
    let end = block.find("```").expect("the block's end");
    block[..end].to_owned()
}

/// The inline code of docs/dnsbl.md that starts with `start` (a backtick
/// and its first characters), without the backticks.
fn doc_inline(start: &str) -> String {
    let doc = std::fs::read_to_string(util::root().join("docs/dnsbl.md")).expect("docs/dnsbl.md");
    let code = doc
        .split_once(start)
        .unwrap_or_else(|| panic!("docs/dnsbl.md has no {start:?}"))
        .1;
    let end = code.find('`').expect("the closing backtick");
    format!("{}{}\n", &start[1..], &code[..end])
}

/// Whether nolist at `server` lists `ip` (an A record for its name).
fn listed(dig: &Path, server: SocketAddr, ip: &str) -> bool {
    let name = format!(
        "{}.{ZONE}",
        nolist::dnsbl::name::reversed(ip.parse().unwrap())
    );
    !util::dig(dig, server, &[&name, "A", "+short"])
        .trim()
        .is_empty()
}

/// A nolist config for the DNSBL in `dir` (state in `dir/state`) with
/// `soa_minimum`, `dns_listen` and the top-level keys `extra`.
fn config(dir: &Path, soa_minimum: u32, dns_listen: &str, extra: &str) -> PathBuf {
    let path = dir.join("nolist.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {state}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [198.18.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [198.18.0.2] }}
dns:
  soa: {{ mname: ns1.example.net, rname: hostmaster@example.net, minimum: {soa_minimum} }}
  ns: [ns1.example.net, ns2.example.net]
  serve: {{ listen: [\"{dns_listen}\"] }}
  dnsbl:
    zone: {ZONE}
    ttl: 2s
{extra}",
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

// --- Postfix postscreen -------------------------------------------------

const DECOY: &str = "198.18.0.1";
const MX: &str = "198.18.0.2";
const DNS: &str = "198.18.0.53";
/// Hits the decoy, gets banned, later unbanned.
const BOT: &str = "198.18.1.9";
/// Never banned by the engine (banned by hand at the end).
const SENDER: &str = "198.18.1.7";
/// The TTL of nolist's NXDOMAIN: how long postscreen keeps a pass here.
const SOA_MINIMUM: u32 = 2;

/// Test timings added to the docs' main.cf lines: a short pregreet wait
/// (each connection waits it out), and a pass remembered for as little
/// as the DNS answer says (at least 1 s; at most the default 1 h).
const POSTSCREEN_TIMINGS: &str = "\
postscreen_greet_wait = 1s
postscreen_dnsbl_min_ttl = 1s
";

/// Waits (at most 5 s) for `needle` in the mail log: postscreen's lines
/// reach it through `postlogd`, a moment after the client saw the reply.
fn logged(mx: &Postfix, needle: &str, log: &dyn Fn() -> String) {
    wait_until(
        &format!("{needle:?} in the mail log"),
        Duration::from_secs(5),
        || mx.log().contains(needle),
        log,
    );
}

/// The docs' master.cf lines with the `smtp` service on `addr`.
fn master_cf(addr: &str) -> String {
    doc_block("In `master.cf`")
        .lines()
        .map(|line| match line.strip_prefix("smtp ") {
            Some(rest) => format!("{addr} {rest}\n"),
            None => format!("{line}\n"),
        })
        .collect()
}

/// A bot that hit the decoy is refused by the real MX's postscreen, a
/// sender is not; the bot gets in once unbanned, and the sender, banned
/// after its pass, is refused once the pass (the NXDOMAIN's TTL) is over.
#[test]
fn postscreen_refuses_a_banned_client_and_lets_it_in_once_unbanned() {
    let (Some(_), Some(dig), Some(_)) = (
        require_tool("swaks", "swaks"),
        require_tool("dig", "bind9-dnsutils"),
        require_tool("ip", "iproute2"),
    ) else {
        return;
    };
    if !require_root("network and mount namespaces, a private Postfix") {
        return;
    }
    util::enter_private_netns();
    for a in [DECOY, MX, DNS, BOT, SENDER] {
        util::add_lo_address(&format!("{a}/32"));
    }
    let _resolv = PrivateResolvConf::enter(DNS.parse().unwrap());
    let main_cf = format!("{}{POSTSCREEN_TIMINGS}", doc_block("In `main.cf`"));
    let mx_at = format!("{MX}:25");
    let Some(mx) = Postfix::start_postscreen(
        mx_at.parse().unwrap(),
        "example.org",
        &main_cf,
        &master_cf(&mx_at),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        SOA_MINIMUM,
        &format!("{DNS}:53"),
        &format!(
            "responder: {{ mode: rcpt-450 }}
mta: {{ logs: [\"{}\"], format: postfix }}
bans: {{ maxretry: 3, findtime: 1h, grace: 1s, bantime: 1h, enforce: {{ backend: none }} }}
",
            mx.maillog().display()
        ),
    );
    let state = dir.path().join("state");
    let server = Server::start_with("run", &cfg, &["--state-dir", state.to_str().unwrap()], 3)
        .unwrap_or_else(|log| panic!("{log}"));
    let log = || format!("{}\n--- postfix ---\n{}", server.log_text(), mx.log());
    let dns: SocketAddr = format!("{DNS}:53").parse().unwrap();
    let decoy = format!("{DECOY}:25");

    // The bot: three dialogues with the decoy, each answered 450, no
    // delivery; nolist bans it and lists it.
    for _ in 0..3 {
        let t = util::swaks(BOT, &decoy, false, 10);
        assert!(t.contains("<** 450"), "{t}\n{}", log());
    }
    wait_until(
        "the bot listed",
        Duration::from_secs(20),
        || listed(&dig, dns, BOT),
        &log,
    );
    let refused = util::swaks(BOT, &mx_at, true, 10);
    assert!(
        refused.contains(&format!(
            "<** 550 5.7.1 Service unavailable; client [{BOT}] blocked using {ZONE}"
        )) && !refused.contains("queued"),
        "{refused}\n{}",
        log()
    );
    logged(&mx, &format!("DNSBL rank 3 for [{BOT}]:"), &log);

    // A sender never banned: postscreen passes it and the message is queued.
    let sent = util::swaks(SENDER, &mx_at, true, 10);
    assert!(
        sent.contains("<-  250 2.0.0 Ok: queued"),
        "{sent}\n{}",
        log()
    );
    logged(&mx, &format!("PASS NEW [{SENDER}]:"), &log);
    assert!(
        !util::banned(&cfg).contains(&SENDER.to_owned()),
        "{}",
        log()
    );
    let passed = Instant::now();

    // The ban lifted: postscreen remembers no refusal, so it asks again
    // at the bot's next connection, gets the NXDOMAIN and lets it through
    // (no caching resolver sits between them here).
    util::bans_ok(&cfg, &["remove", BOT]);
    wait_until(
        "the bot unlisted",
        Duration::from_secs(10),
        || !listed(&dig, dns, BOT),
        &log,
    );
    let sent = util::swaks(BOT, &mx_at, true, 10);
    assert!(
        sent.contains("<-  250 2.0.0 Ok: queued"),
        "{sent}\n{}",
        log()
    );
    logged(&mx, &format!("PASS NEW [{BOT}]:"), &log);

    // The sender banned after its pass: postscreen keeps the pass for the
    // NXDOMAIN's TTL (SOA_MINIMUM; postscreen_dnsbl_max_ttl is 1 h), then
    // asks again and refuses it.
    util::bans_ok(&cfg, &["add", SENDER]);
    wait_until(
        "the sender listed",
        Duration::from_secs(10),
        || listed(&dig, dns, SENDER),
        &log,
    );
    std::thread::sleep(
        Duration::from_secs(u64::from(SOA_MINIMUM) + 1).saturating_sub(passed.elapsed()),
    );
    let refused = util::swaks(SENDER, &mx_at, true, 10);
    assert!(
        refused.contains("<** 550 5.7.1 Service unavailable"),
        "{refused}\n{}",
        log()
    );
    logged(&mx, &format!("DNSBL rank 3 for [{SENDER}]:"), &log);
}

// --- rspamd ---------------------------------------------------------------

/// A small message; what rspamd's `rbl` module looks at is the `--ip`.
const MESSAGE: &str = "From: someone@sender.example\r\nTo: user@example.org\r\nSubject: hello\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@sender.example>\r\n\r\nHello.\r\n";

/// rspamd's `rbl` module, configured as the docs say, scores a message
/// from a listed address, network member or IPv6 address with the
/// symbol, one from an address never listed not, and stops once the ban
/// is lifted.
#[test]
fn rspamd_scores_a_banned_client_with_the_configured_symbol() {
    let (Some(dig), Some(_)) = (
        require_tool("dig", "bind9-dnsutils"),
        require_tool("ip", "iproute2"),
    ) else {
        return;
    };
    if !require_root("a network namespace, a private rspamd") {
        return;
    }
    util::enter_private_netns();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), SOA_MINIMUM, "127.0.0.1:0", "");
    for target in ["198.51.100.7", "203.0.113.0/24", "2001:db8::7"] {
        util::bans_ok(&cfg, &["add", target]);
    }
    let server = Server::start_with("serve", &cfg, &[], 2).unwrap_or_else(|log| panic!("{log}"));
    let dns = server.addr("udp", false);
    wait_until(
        "the bans listed",
        Duration::from_secs(10),
        || listed(&dig, dns, "2001:db8::7"),
        &|| server.log_text(),
    );
    let options = doc_inline("`dns { nameserver").replace(DOC_DNS, &dns.to_string());
    let Some(rspamd) = Rspamd::start(&[
        ("options.inc", &options),
        ("rbl.conf", &doc_block("`/etc/rspamd/local.d/rbl.conf`")),
        (
            "rbl_group.conf",
            &doc_block("`/etc/rspamd/local.d/rbl_group.conf`"),
        ),
    ]) else {
        return;
    };
    let log = || format!("{}\n--- rspamd ---\n{}", server.log_text(), rspamd.log());
    let symbol = "Symbol: NOLIST_DNSBL (6.00)";
    for ip in ["198.51.100.7", "203.0.113.200", "2001:db8::7"] {
        let out = rspamd.symbols(ip, MESSAGE);
        assert!(out.contains(symbol), "{ip}: {out}\n{}", log());
    }
    for ip in ["198.51.100.8", "203.0.114.1", "2001:db8::8"] {
        let out = rspamd.symbols(ip, MESSAGE);
        assert!(out.contains("Symbol: "), "{ip}: scanned: {out}");
        assert!(!out.contains("NOLIST_DNSBL"), "{ip}: {out}\n{}", log());
    }
    // Lifted: no longer scored (rspamd keeps no answers of its own).
    util::bans_ok(&cfg, &["remove", "198.51.100.7"]);
    wait_until(
        "198.51.100.7 unlisted",
        Duration::from_secs(10),
        || !listed(&dig, dns, "198.51.100.7"),
        &log,
    );
    let out = rspamd.symbols("198.51.100.7", MESSAGE);
    assert!(!out.contains("NOLIST_DNSBL"), "{out}\n{}", log());
}
