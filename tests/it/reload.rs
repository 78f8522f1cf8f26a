//! `nolist run` while it runs: SIGHUP reloads the responder, the ban
//! policy, the listen addresses and the served zones, a broken config
//! keeps the running one, `/metrics` counts what happened, and
//! `--verify-dns` refuses to start when live DNS disagrees with the plan.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::util;
use crate::util::serve::Server;

/// A config on loopback: the responder, DNS and metrics on free ports,
/// enforcement off (the host's firewall is not ours).
fn config(reply: &str, listen: &[&str], ttl: u32) -> String {
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "\
domains:
  - name: example.org
    ttl: {ttl}
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [127.0.0.2] }}
responder:
  mode: rcpt-450
  listen: [{}]
  reply: \"{reply}\"
bans:
  enforce: {{ backend: none }}
dns:
  serve: {{ listen: [\"127.0.0.1:0\"] }}
  soa: {{ mname: ns1.example.net, rname: hostmaster@example.org, serial: 7 }}
  ns: [ns1.example.net]
metrics:
  listen: \"127.0.0.1:0\"
",
        listen.join(", ")
    )
}

/// The reply to RCPT from the decoy at `addr`.
fn rcpt_reply(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let mut read = |r: &mut BufReader<TcpStream>| {
        // One reply, possibly multi-line; its last line.
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_owned();
            }
        }
    };
    read(&mut r);
    for cmd in [
        "EHLO probe.example",
        "MAIL FROM:<a@b.example>",
        "RCPT TO:<u@example.org>",
    ] {
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let reply = read(&mut r);
        if cmd.starts_with("RCPT") {
            let _ = s.write_all(b"QUIT\r\n");
            return reply;
        }
    }
    unreachable!()
}

fn dig_soa_and_ttl(dig: &Path, server: SocketAddr) -> String {
    util::dig(dig, server, &["+noall", "+answer", "example.org", "MX"])
}

/// Every `listening on smtp ADDR` the server logged.
fn smtp_listeners(server: &Server) -> Vec<SocketAddr> {
    server
        .log_text()
        .lines()
        .filter_map(|l| l.split("listening on smtp ").nth(1))
        .filter_map(|a| a.split_whitespace().next()?.parse().ok())
        .collect()
}

fn reload(server: &Server, count: usize) {
    server.signal("HUP");
    let done = || {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("reloaded /") || l.contains("reload failed"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while done() < count && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(done() >= count, "no reload result:\n{}", server.log_text());
}

#[test]
fn sighup_reloads_what_it_can_and_keeps_the_old_config_when_the_new_one_is_bad() {
    let Some(dig) = util::require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(&cfg, config("4.7.1 first reply", &["127.0.0.1:0"], 3600)).unwrap();
    // smtp, udp, tcp, metrics
    let mut server = Server::start_with("run", &cfg, &[], 4).unwrap_or_else(|log| panic!("{log}"));
    let smtp = server.addr("smtp", false);
    let metrics = server.addr("metrics", false);
    let dns = server.addr("udp", false);
    assert_eq!(rcpt_reply(smtp), "450 4.7.1 first reply");
    assert!(dig_soa_and_ttl(&dig, dns).contains("3600"));

    // A good config: new reply, new TTL (and so a new serial), one more
    // listen address.
    std::fs::write(
        &cfg,
        config("4.7.1 second reply", &["127.0.0.1:0", "127.0.0.3:0"], 600),
    )
    .unwrap();
    reload(&server, 1);
    assert_eq!(
        rcpt_reply(smtp),
        "450 4.7.1 second reply",
        "{}",
        server.log_text()
    );
    let answer = dig_soa_and_ttl(&dig, dns);
    assert!(answer.contains("\t600\t"), "{answer}");
    assert!(server.wait_for_log("listening on smtp 127.0.0.3:", Duration::from_secs(5)));
    let added = smtp_listeners(&server)
        .into_iter()
        .find(|a| a.ip().to_string() == "127.0.0.3")
        .expect("the added listener");
    assert_eq!(rcpt_reply(added), "450 4.7.1 second reply");

    // A config with a syntax error: the running one stays, the log says why and where.
    std::fs::write(&cfg, "domains: [\n").unwrap();
    reload(&server, 2);
    let log = server.log_text();
    assert!(
        log.contains("reload failed, still running the previous config"),
        "{log}"
    );
    assert!(
        log.contains("nolist.yaml:"),
        "the error names the file: {log}"
    );
    assert_eq!(rcpt_reply(smtp), "450 4.7.1 second reply");
    assert_eq!(rcpt_reply(added), "450 4.7.1 second reply");

    // A config whose address cannot be bound: nothing of it is applied.
    std::fs::write(
        &cfg,
        config("4.7.1 third reply", &["127.0.0.1:0", "192.0.2.77:25"], 60),
    )
    .unwrap();
    reload(&server, 3);
    assert!(
        server.log_text().contains("192.0.2.77:25"),
        "{}",
        server.log_text()
    );
    assert_eq!(rcpt_reply(smtp), "450 4.7.1 second reply");
    assert!(dig_soa_and_ttl(&dig, dns).contains("\t600\t"));

    // Dropping an address closes it; restart-only keys are named.
    let moved = config("4.7.1 fourth reply", &["127.0.0.1:0"], 600)
        .replace(
            "metrics:\n  listen: \"127.0.0.1:0\"\n",
            "metrics:\n  listen: \"127.0.0.1:1\"\n",
        )
        .replace("  mode: rcpt-450\n", "  mode: rcpt-450\n  threads: 3\n");
    std::fs::write(&cfg, moved).unwrap();
    reload(&server, 4);
    assert!(server.wait_for_log(
        "stopped listening on smtp 127.0.0.3:0",
        Duration::from_secs(5)
    ));
    assert!(server.wait_for_log(
        "reload: metrics changed; restart nolist to apply that",
        Duration::from_secs(5)
    ));
    assert!(server.wait_for_log(
        "reload: responder.threads changed; restart nolist to apply that",
        Duration::from_secs(5)
    ));
    assert_eq!(rcpt_reply(smtp), "450 4.7.1 fourth reply");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        TcpStream::connect_timeout(&added, Duration::from_secs(1)).is_err(),
        "the dropped address no longer accepts"
    );

    // The metrics saw all of it.
    let (status, body) = util::http_get(metrics, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let sessions = util::sample(
        &body,
        "nolist_smtp_sessions_total{stage=\"rcpt\",end=\"quit\"}",
    )
    .unwrap_or_else(|| panic!("no session count:\n{body}"));
    assert!(sessions >= 6.0, "{body}");
    assert_eq!(
        util::sample(&body, "nolist_reloads_total{result=\"ok\"}"),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        util::sample(&body, "nolist_reloads_total{result=\"failed\"}"),
        Some(2.0),
        "{body}"
    );
    assert!(
        util::sample(&body, "nolist_dns_queries_total{proto=\"udp\"}").unwrap_or(0.0) >= 3.0,
        "{body}"
    );
    // dig's SOA questions, answered.
    assert!(
        util::sample(
            &body,
            "nolist_dns_responses_total{proto=\"udp\",rcode=\"noerror\"}"
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{body}"
    );
    assert!(body.contains("# HELP nolist_smtp_sessions_total"), "{body}");
    assert_eq!(util::http_get(metrics, "/").0, "HTTP/1.1 404 Not Found");
    // Junk and an oversized request get an answer or a close, never a hang.
    let mut junk = TcpStream::connect(metrics).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    junk.write_all(&[b'x'; 9000]).unwrap();
    let mut reply = String::new();
    let _ = junk.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply}"
    );
    assert_eq!(util::http_get(metrics, "/metrics").0, "HTTP/1.1 200 OK");

    server.signal("TERM");
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn verify_dns_refuses_to_start_against_live_dns_that_disagrees() {
    let dir = tempfile::tempdir().unwrap();
    // What is really served.
    let live = dir.path().join("live.yaml");
    std::fs::write(&live, config("4.7.1 x", &["127.0.0.1:0"], 3600)).unwrap();
    let dns = Server::start(&live);
    let ns = dns.addr("udp", false).to_string();
    let run = |yaml: &str| {
        let cfg = dir.path().join("run.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        Server::start_with("run", &cfg, &["--verify-dns", "--nameserver", &ns], 4)
    };
    // The same plan: it starts.
    let server =
        run(&config("4.7.1 x", &["127.0.0.1:0"], 3600)).unwrap_or_else(|log| panic!("{log}"));
    assert!(
        server.log_text().contains("live DNS matches the plan"),
        "{}",
        server.log_text()
    );
    drop(server);
    // A plan whose decoy address is not the one live DNS gives.
    let other = config("4.7.1 x", &["127.0.0.1:0"], 3600)
        .replace("ipv4: [127.0.0.1] }", "ipv4: [127.0.0.9] }");
    let cfg = dir.path().join("run.yaml");
    std::fs::write(&cfg, other).unwrap();
    let out = util::nolist()
        .args([
            "run",
            "-c",
            cfg.to_str().unwrap(),
            "--verify-dns",
            "--nameserver",
            &ns,
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("live DNS does not match the plan; not starting"),
        "{stderr}"
    );
    assert!(
        stderr.contains("mx-address"),
        "the failing check is shown: {stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "no state touched before the check"
    );
}

#[test]
fn every_metric_is_exported_from_the_first_scrape_without_enforcement() {
    // Backend none, nothing happened yet: every series a dashboard reads
    // is there, counters at 0 and the bans in force counted from the store.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(&cfg, config("450 4.7.1 try later", &["127.0.0.1:0"], 300)).unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let added = util::nolist()
        .args([
            "bans",
            "-c",
            cfg.to_str().unwrap(),
            "--state-dir",
            state,
            "add",
            "192.0.2.77",
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let server = Server::start_with("run", &cfg, &["--state-dir", state], 4)
        .unwrap_or_else(|log| panic!("{log}"));
    let (_, body) = util::http_get(server.addr("metrics", false), "/metrics");
    for name in nolist::metrics::ALWAYS {
        assert!(
            body.lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{'])),
            "{name} missing from the first scrape:\n{body}"
        );
    }
    for series in [
        "nolist_firewall_changes_total{op=\"add\"}",
        "nolist_enforcement_errors_total",
        "nolist_smtp_events_dropped_total",
        "nolist_decoy_hits_total{source=\"log\"}",
    ] {
        assert_eq!(util::sample(&body, series), Some(0.0), "{series}:\n{body}");
    }
    assert_eq!(
        util::sample(&body, "nolist_bans_active"),
        Some(1.0),
        "the ban added before the start:\n{body}"
    );
}
