//! The decoy responder through `nolist run`: real clients (`swaks`, raw
//! sockets) in every mode, the limits, the session events, and abuse.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::require_tool;
use crate::util::serve::Server;

fn config(dir: &Path, mode: &str, extra: &str) -> PathBuf {
    let text = format!(
        "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
responder:
  mode: {mode}
  listen: [\"127.0.0.1:0\"]
{extra}bans: {{ enforce: {{ backend: none }} }}
"
    );
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start(dir: &Path, mode: &str, extra: &str) -> (Server, SocketAddr) {
    let server = Server::start_with("run", &config(dir, mode, extra), &[], 1)
        .unwrap_or_else(|log| panic!("nolist run did not start:\n{log}"));
    let addr = server.addr("smtp", false);
    (server, addr)
}

/// The reply codes swaks saw, in order, for a dialogue up to RCPT.
fn swaks_codes(tool: &Path, addr: SocketAddr) -> Vec<String> {
    let out = Command::new(tool)
        .args([
            "--server",
            &addr.to_string(),
            "--to",
            "user@example.org",
            "--from",
            "bot@spam.example",
        ])
        .args([
            "--helo",
            "bot.example",
            "--quit-after",
            "RCPT",
            "--timeout",
            "5",
        ])
        .output()
        .expect("swaks");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("<-") || l.starts_with("<**"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|c| c.len() == 3 || c.len() > 3 && &c[3..4] == " ")
        .map(|c| c[..3].to_owned())
        .collect()
}

/// Final reply codes only (multi-line continuation lines dropped).
fn finals(codes: &[String]) -> Vec<&str> {
    codes.iter().map(String::as_str).collect()
}

#[test]
fn swaks_against_every_mode() {
    let Some(tool) = require_tool("swaks", "swaks") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(dir.path(), "rcpt-450", "");
    // banner, EHLO (last line), MAIL, RCPT, QUIT
    let codes = swaks_codes(&tool, addr);
    assert_eq!(
        finals(&codes),
        ["220", "250", "250", "450", "221"],
        "{codes:?}"
    );
    assert!(server.wait_for_log("decoy session", Duration::from_secs(5)));
    let log = server.log_text();
    assert!(
        log.contains("stage=Rcpt")
            && log.contains("helo=\"bot.example\"")
            && log.contains("mail_from=\"bot@spam.example\"")
            && log.contains("rcpt=\"user@example.org\""),
        "{log}"
    );
    drop(server);
    for (mode, code) in [("greet-421", "421"), ("greet-450", "450")] {
        let (server, addr) = start(dir.path(), mode, "");
        let codes = swaks_codes(&tool, addr);
        assert_eq!(
            codes.first().map(String::as_str),
            Some(code),
            "{mode}: {codes:?}"
        );
        assert!(
            !codes.iter().any(|c| c.starts_with('2')),
            "{mode}: {codes:?}"
        );
        drop(server);
    }
}

#[test]
fn refuse_mode_binds_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "refuse", "");
    let mut server = Server::start_with("run", &cfg, &[], 0).unwrap();
    assert!(
        server.wait_for_log("responder mode refuse", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    assert!(!server.log_text().contains("listening on smtp"));
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A decoy address that is not on this host.
    let cfg = config(dir.path(), "rcpt-450", "")
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", "192.0.2.10:2525");
    std::fs::write(&cfg, text).unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let out = util::nolist()
        .args(["run", "-c", &cfg, "--state-dir", state])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("192.0.2.10:2525") && err.contains("configured on this host"),
        "{err}"
    );
    // Lint errors stop the daemon before it binds anything.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("preference: 10", "preference: 30");
    std::fs::write(&cfg, text).unwrap();
    let out = util::nolist()
        .args(["run", "-c", &cfg, "--state-dir", state])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !dir.path().join("state").exists(),
        "nothing may be written before start-up succeeds"
    );
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until a final reply line (`NNN `) arrives; returns everything read.
fn read_reply(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
        out.push(byte[0]);
        if byte[0] == b'\n' {
            let text = String::from_utf8_lossy(&out);
            let last = text.lines().last().unwrap_or("");
            if last.len() >= 4 && &last[3..4] == " " {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A full probe from `source` (a loopback address): banner, EHLO, MAIL, RCPT codes.
fn probe(addr: SocketAddr) -> Vec<String> {
    let mut s = connect(addr);
    let mut codes = vec![read_reply(&mut s)];
    for cmd in [
        "EHLO probe.example\r\n",
        "MAIL FROM:<>\r\n",
        "RCPT TO:<postmaster@example.org>\r\n",
        "QUIT\r\n",
    ] {
        s.write_all(cmd.as_bytes()).unwrap();
        codes.push(read_reply(&mut s));
    }
    codes
        .iter()
        .map(|r| {
            r.lines()
                .last()
                .unwrap_or("")
                .get(..3)
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn connection_limits_answer_421() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start(
        dir.path(),
        "rcpt-450",
        "  max_connections: 4\n  max_per_ip: 3\n",
    );
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for s in &mut held {
        assert!(read_reply(s).starts_with("220 "));
    }
    // The fourth from the same address is over the per-IP limit.
    let mut extra = connect(addr);
    assert!(read_reply(&mut extra).starts_with("421 "), "per-IP limit");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(probe(addr), ["220", "250", "250", "450", "221"]);
}

/// A connection from the loopback address `source`.
fn connect_from(source: impl Into<std::net::IpAddr>, addr: SocketAddr) -> TcpStream {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Regression: the per-client limit counted IPv6 clients per /128, so one
/// network opened as many sessions as it liked. It counts them per network
/// of the ban policy's IPv6 size (a /56 here), in a private network
/// namespace whose `lo` carries a few documentation addresses.
#[test]
fn ipv6_clients_share_the_limit_of_their_network() {
    if !util::require_root("extra IPv6 addresses on lo, in a private network namespace") {
        return;
    }
    util::enter_private_netns();
    let addrs = [
        "2001:db8:1:2::a",
        "2001:db8:1:2::b",
        "2001:db8:1:3::a",
        "2001:db8:2::a",
    ];
    for a in addrs {
        util::run_ok(
            "ip",
            &["addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nolist.yaml");
    std::fs::write(
        &path,
        "domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv6: [\"::1\"] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
responder: { mode: rcpt-450, listen: [\"[::1]:0\"], max_per_ip: 2 }
bans: { networks: { ipv6: 56 }, enforce: { backend: none } }
",
    )
    .unwrap();
    let server = Server::start_with("run", &path, &[], 1)
        .unwrap_or_else(|log| panic!("nolist run did not start:\n{log}"));
    let addr = server.addr("smtp", true);
    let from = |a: &str| connect_from(a.parse::<std::net::IpAddr>().unwrap(), addr);
    let mut held = vec![from(addrs[0]), from(addrs[1])];
    for s in &mut held {
        assert!(read_reply(s).starts_with("220 "));
    }
    // Another address, another /64, the same /56: over the limit.
    assert!(
        read_reply(&mut from(addrs[2])).starts_with("421 "),
        "same /56"
    );
    // Another /56 is another client.
    assert!(
        read_reply(&mut from(addrs[3])).starts_with("220 "),
        "other /56"
    );
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn several_threads_share_the_port_the_limits_and_the_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(
        dir.path(),
        "rcpt-450",
        "  threads: 3\n  max_connections: 5\n  max_per_ip: 2\n",
    );
    let smtp: Vec<String> = thread_names(server.pid())
        .into_iter()
        .filter(|n| n.starts_with("nolist-smtp-"))
        .collect();
    assert_eq!(smtp, ["nolist-smtp-0", "nolist-smtp-1", "nolist-smtp-2"]);
    // Each connection comes from a new port, so the kernel spreads them
    // over the three sockets: every one of them is served (a socket nobody
    // accepted on would leave its share hanging until the read timeout).
    for _ in 0..30 {
        assert_eq!(probe(addr), ["220", "250", "250", "450", "221"]);
    }
    // The limits are the responder's, not each thread's: two sessions per
    // address and five in all, wherever they landed.
    let mut held = Vec::new();
    for last in [1, 1, 2, 2, 3] {
        let mut s = connect_from([127, 0, 0, last], addr);
        assert!(read_reply(&mut s).starts_with("220 "));
        held.push(s);
    }
    for (last, why) in [(1, "per-IP limit"), (4, "max_connections")] {
        let mut over = connect_from([127, 0, 0, last], addr);
        assert!(
            read_reply(&mut over).starts_with("421 "),
            "{why} across threads"
        );
    }
    // SIGTERM reaches the sessions on every thread.
    server.signal("TERM");
    for s in &mut held {
        assert!(read_reply(s).starts_with("421 4.3.2"));
    }
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn abuse_leaves_it_up_bounded_and_answering() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr) = start(
        dir.path(),
        "rcpt-450",
        "  max_per_ip: 5000\n  max_line: 1024\n  idle_timeout: 60s\n",
    );
    let before = rss_kib(server.pid());
    // Hundreds of idle connections (bounded by this test's own file limit).
    let idle: Vec<TcpStream> = (0..800)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Garbage bytes, a 1 MiB line without CRLF, a TLS ClientHello, pipelining,
    // a half-closed socket, and a client that never reads.
    let mut garbage = connect(addr);
    let _ = garbage.write_all(
        &(0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut long = connect(addr);
    let _ = long.write_all(&vec![b'x'; 1 << 20]);
    let mut tls = connect(addr);
    let _ = tls.write_all(&[
        0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x0a, 0x0d, 0x0a,
    ]);
    let mut pipelined = connect(addr);
    pipelined
        .write_all(
            &b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n".repeat(50),
        )
        .unwrap();
    let mut half = connect(addr);
    half.write_all(b"HELO half\r\n").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut deaf = connect(addr);
    let _ = deaf.write_all(&b"NOOP\r\n".repeat(10_000));

    // The pipelined client gets at most the command budget, never a 2xx to RCPT/DATA.
    let mut transcript = String::new();
    let _ = pipelined.read_to_string(&mut transcript);
    assert!(
        transcript.lines().last().unwrap_or("").starts_with("421"),
        "{transcript}"
    );
    assert!(!transcript.contains("354"), "{transcript}");
    // The 1 MiB line was cut off with 421.
    let mut reply = String::new();
    let _ = long.read_to_string(&mut reply);
    assert!(reply.contains("421 4.7.0 Line too long"), "{reply}");

    // Still answering, and memory did not grow with the abuse.
    assert_eq!(probe(addr), ["220", "250", "250", "450", "221"]);
    let after = rss_kib(server.pid());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB with {} idle connections",
        idle.len()
    );
    drop(idle);
    let started = Instant::now();
    assert_eq!(probe(addr), ["220", "250", "250", "450", "221"]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigterm_tells_open_sessions_421() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, addr) = start(dir.path(), "rcpt-450", "");
    let mut s = connect(addr);
    assert!(read_reply(&mut s).starts_with("220 "));
    server.signal("TERM");
    assert!(read_reply(&mut s).starts_with("421 4.3.2"));
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn probe_reports_the_decoy_dialogue_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start(dir.path(), "rcpt-450", "");
    let out = util::nolist()
        .args([
            "probe",
            &addr.to_string(),
            "--format",
            "json",
            "--rcpt",
            "user@example.org",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "nolist.probe/1");
    let p = &doc["probes"][0];
    assert_eq!(
        (
            p["outcome"].as_str(),
            p["banner"].as_u64(),
            p["rcpt"].as_u64()
        ),
        (Some("completed"), Some(220), Some(450))
    );
    assert_eq!(p["starttls"], false);
    let sent: Vec<&str> = p["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["dir"] == "sent")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        sent,
        [
            "EHLO nolist-probe.invalid",
            "MAIL FROM:<>",
            "RCPT TO:<user@example.org>",
            "QUIT"
        ]
    );
    // Nothing listening: refused, exit 1, transcript says so.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = free.local_addr().unwrap();
    drop(free);
    let out = util::nolist()
        .args(["probe", &closed.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Connection refused"));
}

/// Regression: the per-session log line went to stderr synchronously, so a
/// stderr pipe nobody reads stalled the responder after ~64 KiB of logs.
/// Logging must never block the decoy.
#[test]
fn a_stalled_stderr_never_stalls_the_responder() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(dir.path(), "rcpt-450", "")
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nolist"))
        .args(["run", "-c", &cfg, "--state-dir"])
        .arg(dir.path().join("state"))
        .env("NOLIST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped()) // never read
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        TcpStream::connect(addr).is_ok()
    });
    assert!(up, "nolist run did not come up");
    // Far more log output than a pipe buffer holds.
    for _ in 0..1500 {
        let mut s = connect(addr);
        assert!(
            read_reply(&mut s).starts_with("220 "),
            "the decoy stopped answering"
        );
        s.write_all(b"QUIT\r\n").unwrap();
        let _ = read_reply(&mut s);
    }
    assert_eq!(probe(addr), ["220", "250", "250", "450", "221"]);
    let _ = child.kill();
    let _ = child.wait();
}
