//! The DNSBL (`dns.dnsbl`, docs/dnsbl.md) end to end: `dig` asks `nolist
//! serve` (bans written by `nolist bans add`) and `nolist run` (a ban
//! decided from decoy hits) over loopback, and `rbldnsd` serving the export
//! answers like `nolist`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util;
use crate::util::nolist;
use crate::util::serve::Server;

const ZONE: &str = "bl.example.net";

/// A config with the DNSBL, its state in `dir/state`, `extra` appended
/// (top-level keys).
fn config(dir: &Path, dnsbl_extra: &str, extra: &str) -> PathBuf {
    let path = dir.join("nolist.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: {state}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
dns:
  soa: {{ mname: ns1.example.net, rname: hostmaster@example.net, minimum: 120 }}
  ns: [ns1.example.net, ns2.example.net]
  serve: {{ listen: [\"127.0.0.1:0\"] }}
  dnsbl:
    zone: {ZONE}
    answer: 127.0.0.5
    ttl: 5m
    txt: \"{{ip}}: {{hits}} decoy hits, ban {{offence}}\"
{dnsbl_extra}{extra}",
            state = dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// The query name of `ip` in the zone.
fn name(ip: &str) -> String {
    format!(
        "{}.{ZONE}",
        nolist::dnsbl::name::reversed(ip.parse().unwrap())
    )
}

/// One answer of `dig`: its status and its answer and authority sections.
#[derive(Debug)]
struct Answer {
    status: String,
    answer: Vec<String>,
    authority: Vec<String>,
}

fn ask(dig: &Path, server: SocketAddr, qname: &str, qtype: &str, tcp: bool) -> Answer {
    let mut args = vec![
        qname,
        qtype,
        "+norec",
        "+noall",
        "+comments",
        "+answer",
        "+authority",
    ];
    if tcp {
        args.push("+tcp");
    }
    let text = util::dig(dig, server, &args);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO-ANSWER")
        .to_owned();
    let mut answer = Vec::new();
    let mut authority = Vec::new();
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(";; ") {
            section = rest;
        } else if !line.is_empty() && !line.starts_with(';') {
            let record = line.split_whitespace().collect::<Vec<_>>().join(" ");
            match section {
                s if s.starts_with("ANSWER") => answer.push(record),
                s if s.starts_with("AUTHORITY") => authority.push(record),
                _ => {}
            }
        }
    }
    Answer {
        status,
        answer,
        authority,
    }
}

/// The A records (`+short`) of `ip` in the zone.
fn listed_as(dig: &Path, server: SocketAddr, ip: &str) -> Vec<String> {
    let mut lines: Vec<String> = util::dig(dig, server, &[&name(ip), "A", "+short"])
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn wait_listed(dig: &Path, server: SocketAddr, ip: &str, listed: bool, log: &dyn Fn() -> String) {
    util::wait_until(
        &format!("{ip} {}listed", if listed { "" } else { "un" }),
        Duration::from_secs(10),
        || listed_as(dig, server, ip).is_empty() != listed,
        log,
    );
}

#[track_caller]
fn assert_listed(a: &Answer, what: &str) {
    assert_eq!(a.status, "NOERROR", "{what}: {a:?}");
    assert_eq!(a.answer.len(), 1, "{what}: {a:?}");
    assert!(a.answer[0].ends_with("IN A 127.0.0.5"), "{what}: {a:?}");
}

#[track_caller]
fn assert_negative(a: &Answer, status: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {a:?}");
    assert!(a.answer.is_empty(), "{what}: {a:?}");
    assert_eq!(a.authority.len(), 1, "{what}: {a:?}");
    assert!(
        a.authority[0].starts_with(&format!(
            "{ZONE}. 120 IN SOA ns1.example.net. hostmaster.example.net."
        )),
        "{what}: the SOA, with the SOA minimum as TTL: {a:?}"
    );
}

#[test]
fn serve_answers_rfc_5782_from_the_state_store() {
    let Some(dig) = util::require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", "");
    // No store yet: an empty list (and a message), the test entry listed.
    let server = Server::start_with("serve", &cfg, &[], 2).unwrap_or_else(|log| panic!("{log}"));
    let udp = server.addr("udp", false);
    let tcp = server.addr("tcp", false);
    assert!(
        server.wait_for_log("no state store yet", Duration::from_secs(5)),
        "{}",
        server.log_text()
    );
    assert_listed(
        &ask(&dig, udp, &name("127.0.0.2"), "A", false),
        "test entry",
    );
    util::bans_ok(&cfg, &["add", "192.0.2.77"]);
    util::bans_ok(&cfg, &["add", "198.51.100.0/24"]);
    util::bans_ok(&cfg, &["add", "2001:db8::7"]);
    util::bans_ok(&cfg, &["add", "2001:db8:5:6::/64"]);
    let log = || server.log_text();
    wait_listed(&dig, udp, "2001:db8:5:6::1", true, &log);
    for tcp_too in [false, true] {
        let at = if tcp_too { tcp } else { udp };
        for ip in [
            "192.0.2.77",
            "198.51.100.0",
            "198.51.100.255",
            "2001:db8::7",
            "2001:db8:5:6:ffff:ffff:ffff:ffff",
            "::ffff:192.0.2.77",
            "127.0.0.2",
            "::ffff:7f00:2",
        ] {
            assert_listed(&ask(&dig, at, &name(ip), "A", tcp_too), ip);
        }
        for ip in [
            "192.0.2.78",
            "198.51.101.0",
            "2001:db8::8",
            "2001:db8:5:7::1",
            "127.0.0.1",
            "::ffff:7f00:1",
        ] {
            assert_negative(&ask(&dig, at, &name(ip), "A", tcp_too), "NXDOMAIN", ip);
        }
        for garbage in [
            format!("www.{ZONE}"),
            format!("256.2.0.192.{ZONE}"),
            format!("1.77.2.0.192.{ZONE}"),
            format!("077.2.0.192.{ZONE}"),
            format!("x-y.1.{ZONE}"),
        ] {
            assert_negative(&ask(&dig, at, &garbage, "A", tcp_too), "NXDOMAIN", &garbage);
        }
        for qtype in ["MX", "AAAA", "NS"] {
            assert_negative(
                &ask(&dig, at, &name("192.0.2.77"), qtype, tcp_too),
                "NOERROR",
                qtype,
            );
        }
        // An empty non-terminal above the addresses.
        assert_negative(
            &ask(&dig, at, &format!("2.0.192.{ZONE}"), "A", tcp_too),
            "NOERROR",
            "partial",
        );
    }
    let txt = ask(&dig, udp, &name("192.0.2.77"), "TXT", false);
    assert_eq!(txt.answer.len(), 1, "{txt:?}");
    assert!(
        txt.answer[0].ends_with("IN TXT \"192.0.2.77: 0 decoy hits, ban 1\""),
        "{txt:?}"
    );
    let soa = ask(&dig, udp, ZONE, "SOA", false);
    assert_eq!(soa.status, "NOERROR");
    assert!(soa.answer[0].contains("IN SOA ns1.example.net."), "{soa:?}");
    let ns = ask(&dig, udp, ZONE, "NS", false);
    assert_eq!(ns.answer.len(), 2, "{ns:?}");
    // A transfer of the blocklist is refused.
    let axfr = util::dig(&dig, tcp, &[ZONE, "AXFR"]);
    assert!(
        !axfr.contains("IN\tA\t127.0.0.5") && !axfr.contains("IN A"),
        "{axfr}"
    );
    // Lifted by hand: gone within a poll, though the same question was
    // just answered (blocklist answers never come from the answer cache).
    assert_eq!(listed_as(&dig, udp, "192.0.2.77"), ["127.0.0.5"]);
    util::bans_ok(&cfg, &["remove", "192.0.2.77"]);
    wait_listed(&dig, udp, "192.0.2.77", false, &log);
    assert_listed(
        &ask(&dig, udp, &name("198.51.100.9"), "A", false),
        "still listed",
    );
}

fn reject(ip: &str) -> String {
    format!(
        "{} mx1 postfix/decoy/smtpd[9]: NOQUEUE: reject: RCPT from unknown[{ip}]: 450 4.7.1 Try later; from=<a@b.example> to=<u@example.org> proto=ESMTP helo=<x>\n",
        nolist::watch::time::rfc3339(nolist::clock::unix_now())
    )
}

#[test]
fn run_lists_a_decided_ban_at_once_and_unlists_a_removed_one() {
    let Some(dig) = util::require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    std::fs::write(&log, "").unwrap();
    let cfg = config(
        dir.path(),
        "    publish: [engine]\n",
        &format!(
            "responder: {{ mode: refuse }}
mta: {{ logs: [{}], format: postfix }}
bans: {{ maxretry: 3, findtime: 1h, grace: 1s, bantime: 1h, enforce: {{ backend: none }} }}
metrics: {{ listen: \"127.0.0.1:0\" }}
",
            log.display()
        ),
    );
    let state = dir.path().join("state");
    let server = Server::start_with("run", &cfg, &["--state-dir", state.to_str().unwrap()], 3)
        .unwrap_or_else(|l| panic!("{l}"));
    let udp = server.addr("udp", false);
    let text = || server.log_text();
    // Manual bans are not published here.
    util::bans_ok(&cfg, &["add", "198.51.100.1"]);
    std::fs::write(&log, reject("203.0.113.9").repeat(3)).unwrap();
    wait_listed(&dig, udp, "203.0.113.9", true, &text);
    let txt = ask(&dig, udp, &name("203.0.113.9"), "TXT", false);
    assert!(
        txt.answer[0].contains("203.0.113.9: 3 decoy hits, ban 1"),
        "{txt:?}"
    );
    assert_negative(
        &ask(&dig, udp, &name("198.51.100.1"), "A", false),
        "NXDOMAIN",
        "manual",
    );
    // What /metrics says of it, before the removal.
    let (_, body) = util::http_get(server.addr("metrics", false), "/metrics");
    let count = |answer: &str| {
        util::sample(
            &body,
            &format!("nolist_dnsbl_queries_total{{answer=\"{answer}\"}}"),
        )
    };
    assert!(count("records").is_some_and(|n| n >= 2.0), "{body}");
    assert!(count("nxdomain").is_some_and(|n| n >= 1.0), "{body}");
    assert_eq!(
        util::sample(&body, "nolist_dnsbl_listed"),
        Some(1.0),
        "{body}"
    );
    util::bans_ok(&cfg, &["remove", "203.0.113.9"]);
    wait_listed(&dig, udp, "203.0.113.9", false, &text);
}

/// A running rbldnsd, stopped on drop.
struct Rbldnsd {
    child: Child,
    addr: SocketAddr,
}

impl Rbldnsd {
    fn start(tool: &Path, dir: &Path, file: &str) -> Rbldnsd {
        // rbldnsd drops root for `-u`; the files must be readable then.
        for (path, mode) in [(dir, 0o755), (&dir.join(file), 0o644)] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let ip = Ipv4Addr::LOCALHOST;
        let addr = SocketAddr::from((ip, util::nsd::free_port(&[ip])));
        let mut command = Command::new(tool);
        command.args(["-n", "-b", &format!("{ip}/{}", addr.port())]);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg("-w")
            .arg(dir)
            .arg(format!("{ZONE}:combined:{file}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rbldnsd");
        Rbldnsd { child, addr }
    }
}

impl Drop for Rbldnsd {
    fn drop(&mut self) {
        util::stop_child(&mut self.child);
    }
}

#[test]
fn rbldnsd_serves_the_export_like_nolist() {
    let (Some(dig), Some(rbldnsd)) = (
        util::require_tool("dig", "bind9-dnsutils"),
        util::require_tool("rbldnsd", "rbldnsd"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", "");
    for target in [
        "192.0.2.77",
        "192.0.2.200",
        "198.51.100.0/24",
        "10.9.0.0/16",
        "2001:db8::7",
        "2001:db8:5:6::/64",
    ] {
        util::bans_ok(&cfg, &["add", target, "--force"]);
    }
    let file = dir.path().join("bl.rbl");
    util::bans_ok(
        &cfg,
        &[
            "export",
            "--format",
            "rbldnsd",
            "--out",
            file.to_str().unwrap(),
        ],
    );
    let server = Server::start_with("serve", &cfg, &[], 2).unwrap_or_else(|log| panic!("{log}"));
    let nolist_at = server.addr("udp", false);
    let log = || server.log_text();
    wait_listed(&dig, nolist_at, "2001:db8::7", true, &log);
    let rbl = Rbldnsd::start(&rbldnsd, dir.path(), "bl.rbl");
    util::wait_until(
        "rbldnsd answering",
        Duration::from_secs(10),
        || !listed_as(&dig, rbl.addr, "127.0.0.2").is_empty(),
        &|| String::new(),
    );
    let sample = [
        "192.0.2.77",
        "192.0.2.78",
        "192.0.2.200",
        "198.51.100.1",
        "198.51.100.255",
        "198.51.101.1",
        "10.9.255.1",
        "10.10.0.1",
        "127.0.0.2",
        "127.0.0.1",
        "2001:db8::7",
        "2001:db8::8",
        "2001:db8:5:6:1:2:3:4",
        "2001:db8:5:7::1",
        "::ffff:7f00:2",
        "::ffff:7f00:1",
    ];
    let mut listed = 0;
    for ip in sample {
        let ours = listed_as(&dig, nolist_at, ip);
        assert_eq!(ours, listed_as(&dig, rbl.addr, ip), "{ip}");
        listed += usize::from(!ours.is_empty());
    }
    assert_eq!(listed, 9, "the sample has listed and unlisted addresses");
}

#[test]
fn export_plain_and_json_and_the_documented_example() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "    publish: [manual]\n", "");
    util::bans_ok(&cfg, &["add", "192.0.2.77", "--for", "2h"]);
    util::bans_ok(&cfg, &["add", "2001:db8:5:6::/64"]);
    let out = dir.path().join("bans.txt");
    util::bans_ok(
        &cfg,
        &[
            "export",
            "--format",
            "plain",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "192.0.2.77\n2001:db8:5:6::/64\n"
    );
    let json = nolist()
        .args([
            "bans",
            "-c",
            cfg.to_str().unwrap(),
            "export",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let (code, real) = util::exit_and_json(&json);
    assert_eq!(code, 0);
    let now = nolist::clock::unix_now();
    let first = &real["bans"][0];
    assert_eq!(first["target"], "192.0.2.77");
    let until = first["until_unix"].as_i64().unwrap();
    assert!((now + 7190..=now + 7210).contains(&until), "{first}");
    // The documented example has the real document's shape.
    let doc = std::fs::read_to_string(util::root().join("docs/dnsbl.md")).unwrap();
    let example = doc
        .split("```json\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let example: serde_json::Value = serde_json::from_str(example).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&example), keys(&real));
    assert_eq!(keys(&example["bans"][0]), keys(first));
    assert_eq!(example["format"], real["format"]);
}

#[test]
fn the_documented_config_parses() {
    let doc = std::fs::read_to_string(util::root().join("docs/dnsbl.md")).unwrap();
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let text = format!(
        "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
{yaml}"
    );
    let config =
        nolist::config::parse(&text, Path::new("docs/dnsbl.md")).unwrap_or_else(|e| panic!("{e}"));
    let bl = config.dns.dnsbl.expect("dns.dnsbl");
    assert_eq!(bl.zone.as_str(), ZONE);
    assert!(bl.engine && bl.manual && bl.txt.is_some());
}

/// SIGHUP applies `dns.dnsbl`: added, it is served; another `publish`
/// rereads the bans.
#[test]
fn a_reload_adds_the_dnsbl_and_changes_what_it_publishes() {
    let Some(dig) = util::require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "", "");
    let full = std::fs::read_to_string(&cfg).unwrap();
    let without = full.split("  dnsbl:\n").next().unwrap().to_owned();
    util::bans_ok(&cfg, &["add", "192.0.2.77"]);
    std::fs::write(&cfg, &without).unwrap();
    let server = Server::start_with("serve", &cfg, &[], 2).unwrap_or_else(|log| panic!("{log}"));
    let udp = server.addr("udp", false);
    let log = || server.log_text();
    assert_eq!(
        ask(&dig, udp, &name("192.0.2.77"), "A", false).status,
        "REFUSED"
    );
    std::fs::write(&cfg, &full).unwrap();
    server.signal("HUP");
    wait_listed(&dig, udp, "192.0.2.77", true, &log);
    std::fs::write(&cfg, format!("{full}    publish: [engine]\n")).unwrap();
    server.signal("HUP");
    wait_listed(&dig, udp, "192.0.2.77", false, &log);
}
