//! `nolist serve` end to end: a real client (`dig`) asks the running binary
//! over UDP and TCP, IPv4 and IPv6; reloads, transfers and hostile packets.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util;
use crate::util::serve::Server;
use crate::util::{read_example, require_tool};

fn dig_tool() -> Option<PathBuf> {
    require_tool("dig", "bind9-dnsutils")
}

use crate::util::dig;

fn short(tool: &Path, server: SocketAddr, name: &str, rtype: &str, tcp: bool) -> Vec<String> {
    let mut args = vec![name, rtype, "+short"];
    if tcp {
        args.push("+tcp");
    }
    let mut lines: Vec<String> = dig(tool, server, &args)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn status(tool: &Path, server: SocketAddr, args: &[&str]) -> String {
    let text = dig(tool, server, args);
    text.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO-ANSWER")
        .to_owned()
}

fn config_in(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn answers_planned_records_over_udp_and_tcp_on_v4_and_v6() {
    let Some(tool) = dig_tool() else { return };
    let root = util::root();
    let server = Server::start(&root.join("examples/sandwich.yaml"));
    for v6 in [false, true] {
        for tcp in [false, true] {
            let addr = server.addr(if tcp { "tcp" } else { "udp" }, v6);
            assert_eq!(
                short(&tool, addr, "example.com", "MX", tcp),
                vec![
                    "10 mx01.example.com.",
                    "20 mx02.example.com.",
                    "30 mx03.example.com.",
                    "90 mx99.example.com."
                ],
                "{addr} tcp={tcp}"
            );
            assert_eq!(
                short(&tool, addr, "mx02.example.com", "A", tcp),
                vec!["192.0.2.20"]
            );
            assert_eq!(
                short(&tool, addr, "mx99.example.com", "AAAA", tcp),
                vec!["2001:db8::11"]
            );
            assert_eq!(
                short(&tool, addr, "example.com", "NS", tcp),
                vec!["ns1.example.com.", "ns2.example.net."]
            );
            assert_eq!(
                short(&tool, addr, "ns1.example.com", "A", tcp),
                vec!["192.0.2.53"]
            );
            let soa = short(&tool, addr, "example.com", "SOA", tcp);
            assert!(
                soa[0].starts_with("ns1.example.com. hostmaster.example.com. 2026112801 "),
                "{soa:?}"
            );
        }
    }
}

#[test]
fn authoritative_flags_nxdomain_nodata_and_refusals() {
    let Some(tool) = dig_tool() else { return };
    let server = Server::start(&util::root().join("examples/sandwich.yaml"));
    let udp = server.addr("udp", false);
    let tcp = server.addr("tcp", false);
    let answer = dig(&tool, udp, &["example.com", "MX"]);
    assert!(answer.contains("flags: qr aa"), "{answer}");
    // NXDOMAIN and NODATA carry the SOA in the authority section.
    let nx = dig(&tool, udp, &["nope.example.com", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("AUTHORITY SECTION:\nexample.com.") && nx.contains("SOA"),
        "{nx}"
    );
    let nodata = dig(&tool, udp, &["mx01.example.com", "TXT"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("IN\tSOA"), "{nodata}");
    // Not our zone.
    assert_eq!(status(&tool, udp, &["example.org", "MX"]), "REFUSED");
    // No transfers without an allow list, over TCP or UDP.
    let axfr = dig(&tool, tcp, &["example.com", "AXFR"]);
    assert!(
        axfr.contains("Transfer failed") && !axfr.contains("IN\tMX"),
        "{axfr}"
    );
    // ANY gets one RRset, not the whole node (RFC 8482).
    let any = dig(&tool, udp, &["example.com", "ANY"]);
    let answers = any
        .split("ANSWER: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    assert!(answers.parse::<u32>().unwrap() <= 4, "{any}");
}

#[test]
fn axfr_is_served_to_allowed_clients_only() {
    let Some(tool) = dig_tool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "state_dir: {}\n{}",
        dir.path().join("state").display(),
        read_example("sandwich.yaml")
            .replace("axfr_allow: []", "axfr_allow: [127.0.0.0/8]")
            .replace(
                "base_zone: base/",
                &format!("base_zone: {}/examples/base/", util::root().display()),
            )
    );
    let server = Server::start(&config_in(dir.path(), &cfg));
    let v4 = dig(&tool, server.addr("tcp", false), &["example.com", "AXFR"]);
    assert_eq!(v4.matches("\tIN\tSOA\t").count(), 2, "{v4}");
    assert_eq!(v4.matches("\tIN\tMX\t").count(), 4, "{v4}");
    // ::1 is not in the list.
    let v6 = dig(&tool, server.addr("tcp", true), &["example.com", "AXFR"]);
    assert!(v6.contains("Transfer failed"), "{v6}");
}

#[test]
fn update_and_notify_are_refused() {
    let Some(_) = dig_tool() else { return };
    let Some(nsupdate) = require_tool("nsupdate", "bind9-dnsutils") else {
        return;
    };
    let server = Server::start(&util::root().join("examples/sandwich.yaml"));
    let addr = server.addr("udp", false);
    let script = format!(
        "server {} {}\nzone example.com.\nupdate add evil.example.com. 60 IN A 192.0.2.66\nsend\n",
        addr.ip(),
        addr.port()
    );
    let out = Command::new(nsupdate)
        .arg("-t")
        .arg("3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("REFUSED"), "{text}");
    // NOTIFY (opcode 4), sent raw.
    let mut notify = query_packet(0x4242, "example.com", 6);
    notify[2] = 4 << 3; // opcode NOTIFY, AA off
    let reply = udp_exchange(addr, &notify).expect("a reply to NOTIFY");
    assert_eq!(reply[3] & 0x0f, 5, "NOTIFY must get REFUSED");
}

/// A minimal query packet for `name` with type `qtype`.
fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        p.push(u8::try_from(label.len()).unwrap());
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

/// One MX query over an open TCP connection (length-prefixed, RFC 1035
/// 4.2.2); the reply, or `None` when none came within `timeout`.
fn tcp_query(s: &mut std::net::TcpStream, id: u16, timeout: Duration) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(timeout)).unwrap();
    let q = query_packet(id, "example.com", 15);
    let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut reply).ok()?;
    Some(reply)
}

fn udp_exchange(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

/// The UDP answer cache: a repeated question gets the same answer with the
/// asker's own ID and spelling of the name.
#[test]
fn repeated_questions_echo_id_and_case() {
    let server = Server::start(&util::root().join("examples/sandwich.yaml"));
    let addr = server.addr("udp", false);
    let first = udp_exchange(addr, &query_packet(1, "example.com", 15)).expect("first");
    let again = query_packet(0x5a5a, "ExAmPlE.CoM", 15);
    let second = udp_exchange(addr, &again).expect("second");
    assert_eq!(&second[..2], &[0x5a, 0x5a]);
    assert_eq!(&second[12..25], &again[12..25], "question echoed as asked");
    assert_eq!(first.len(), second.len());
    assert_eq!(&first[2..12], &second[2..12], "same flags and counts");
    assert_eq!(&first[25..], &second[25..], "same records");
}

#[test]
fn hostile_packets_never_crash_it() {
    let server = Server::start(&util::root().join("examples/sandwich.yaml"));
    let addr = server.addr("udp", false);
    let good = query_packet(7, "example.com", 15);
    let mut hostile: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 5],
        vec![0xff; 12],
        good[..good.len() - 3].to_vec(),
        vec![0xab; 4096],
        vec![0x41; 9000],
    ];
    // A compression-pointer loop in the question name.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 15, 0, 1]);
    hostile.push(looped);
    // A response (QR set) must not be answered: no reflection.
    let mut response = good.clone();
    response[2] |= 0x80;
    hostile.push(response.clone());
    // Pseudo-random garbage, deterministic.
    let mut x: u32 = 0x1234_5678;
    for len in [13usize, 40, 300, 512, 1500] {
        hostile.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
    }
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in &hostile {
        sock.send_to(p, addr).unwrap();
    }
    assert!(
        udp_exchange(addr, &response).is_none(),
        "a response was answered"
    );
    // Garbage with a valid header gets FORMERR, never a crash.
    let reply = udp_exchange(addr, &good[..good.len() - 3]).expect("FORMERR reply");
    assert_eq!(reply[3] & 0x0f, 1, "FORMERR expected");
    // Still serving.
    let reply = udp_exchange(addr, &good).expect("server still answers");
    assert_eq!(&reply[..2], &7u16.to_be_bytes());
    assert_eq!(reply[3] & 0x0f, 0);
    // TCP: a connection that never sends, one that sends a huge length and stops.
    use std::io::Write;
    let tcp = server.addr("tcp", false);
    let _idle = std::net::TcpStream::connect(tcp).unwrap();
    let mut partial = std::net::TcpStream::connect(tcp).unwrap();
    partial.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    let Some(tool) = dig_tool() else { return };
    assert_eq!(
        short(&tool, tcp, "mx01.example.com", "A", true),
        vec!["192.0.2.10"]
    );
}

#[test]
fn sighup_reloads_and_bumps_the_serial_and_a_bad_config_keeps_the_old_zones() {
    let Some(tool) = dig_tool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let original = read_example("sandwich.yaml").replace(
        "base_zone: base/",
        &format!("base_zone: {}/examples/base/", util::root().display()),
    );
    let cfg = config_in(dir.path(), &original);
    let server = Server::start(&cfg);
    let udp = server.addr("udp", false);
    let serial = |tool: &Path| -> u32 {
        short(tool, udp, "example.com", "SOA", false)[0]
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(serial(&tool), 2026112801);

    // Unchanged config: same serial.
    server.signal("HUP");
    assert!(
        server.wait_for_log("reloaded 1 zone", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    assert_eq!(serial(&tool), 2026112801);

    // Changed preference: new data, serial + 1.
    std::fs::write(&cfg, original.replace("preference: 30", "preference: 40")).unwrap();
    server.signal("HUP");
    let mut ok = false;
    for _ in 0..100 {
        if serial(&tool) == 2026112802 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "serial not bumped:\n{}", server.log_text());
    assert!(
        short(&tool, udp, "example.com", "MX", false).contains(&"40 mx03.example.com.".to_owned())
    );

    // A broken config: logged, old zones stay.
    std::fs::write(&cfg, "domains: [oops\n").unwrap();
    server.signal("HUP");
    assert!(
        server.wait_for_log("reload failed", Duration::from_secs(10)),
        "{}",
        server.log_text()
    );
    assert!(
        server.log_text().contains("nolist.yaml:"),
        "{}",
        server.log_text()
    );
    assert_eq!(serial(&tool), 2026112802);
}

/// Secondaries ignore a serial that goes backwards, so with AXFR allowed
/// the served serials survive a restart (kept in the state directory).
#[test]
fn with_axfr_the_served_serial_never_goes_back_across_restarts() {
    let Some(tool) = dig_tool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let original = format!(
        "state_dir: {}\n{}",
        state.display(),
        read_example("sandwich.yaml")
            .replace("axfr_allow: []", "axfr_allow: [127.0.0.0/8]")
            .replace(
                "base_zone: base/",
                &format!("base_zone: {}/examples/base/", util::root().display()),
            )
    );
    let cfg = config_in(dir.path(), &original);
    let serial_of = |server: &Server| -> u32 {
        short(
            &tool,
            server.addr("udp", false),
            "example.com",
            "SOA",
            false,
        )[0]
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
    };
    let changed = original.replace("preference: 30", "preference: 40");
    {
        let server = Server::start(&cfg);
        assert_eq!(serial_of(&server), 2026112801);
        std::fs::write(&cfg, &changed).unwrap();
        server.signal("HUP");
        assert!(server.wait_for_log("reloaded 1 zone (1 changed)", Duration::from_secs(10)));
        assert_eq!(serial_of(&server), 2026112802);
    }
    // Same config after a restart: the bumped serial, not the configured one.
    let server = Server::start(&cfg);
    assert_eq!(serial_of(&server), 2026112802, "{}", server.log_text());
    drop(server);
    // Changed while stopped: one more.
    std::fs::write(&cfg, original.replace("preference: 30", "preference: 50")).unwrap();
    let server = Server::start(&cfg);
    assert_eq!(serial_of(&server), 2026112803, "{}", server.log_text());
    drop(server);
    // A configured serial ahead of the kept one wins.
    std::fs::write(
        &cfg,
        original
            .replace("preference: 30", "preference: 50")
            .replace("serial: 2026112801", "serial: 2026120101"),
    )
    .unwrap();
    let server = Server::start(&cfg);
    assert_eq!(serial_of(&server), 2026120101, "{}", server.log_text());
    let kept = std::fs::read_to_string(state.join("serials.json")).unwrap();
    assert!(
        kept.contains("\"example.com.\"") && kept.contains("2026120101"),
        "{kept}"
    );
    drop(server);

    // Without AXFR nothing is kept: the configured serial is served.
    let plain = dir.path().join("plain");
    let cfg = config_in(
        dir.path(),
        &original
            .replace("axfr_allow: [127.0.0.0/8]", "axfr_allow: []")
            .replace(&state.display().to_string(), &plain.display().to_string()),
    );
    let server = Server::start(&cfg);
    assert_eq!(serial_of(&server), 2026112801);
    assert!(!plain.exists());
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start(&util::root().join("examples/sandwich.yaml"));
    server.signal("TERM");
    assert_eq!(
        server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.log_text()
    );
}

#[test]
fn base_zone_records_are_served_and_conflicts_stop_the_start() {
    let Some(tool) = dig_tool() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.zone"),
        "$ORIGIN example.com.\n$TTL 300\nwww IN A 192.0.2.80\n@ IN TXT \"v=spf1 mx -all\"\n",
    )
    .unwrap();
    let cfg = read_example("sandwich.yaml")
        .replace("base_zone: base/example.com.zone", "base_zone: base.zone");
    let server = Server::start(&config_in(dir.path(), &cfg));
    let udp = server.addr("udp", false);
    assert_eq!(
        short(&tool, udp, "www.example.com", "A", false),
        vec!["192.0.2.80"]
    );
    assert_eq!(
        short(&tool, udp, "example.com", "TXT", false),
        vec!["\"v=spf1 mx -all\""]
    );
    assert_eq!(short(&tool, udp, "example.com", "MX", false).len(), 4);
    drop(server);

    std::fs::write(
        dir.path().join("base.zone"),
        "$ORIGIN example.com.\n@ 300 IN MX 5 other.example.net.\n",
    )
    .unwrap();
    let out = util::nolist()
        .args(["serve", "-c"])
        .arg(dir.path().join("nolist.yaml"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("base.zone") && err.contains("example.com. MX") && err.contains("nolist owns"),
        "{err}"
    );
}

#[test]
fn refuses_to_serve_a_plan_with_lint_errors_or_without_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_in(
        dir.path(),
        &read_example("sandwich.yaml")
            .replace("preference: 10", "preference: 95")
            .replace("base_zone: base/example.com.zone", ""),
    );
    let out = util::nolist()
        .args(["serve", "-c"])
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error[decoy-not-lowest]"));
    let out = util::nolist()
        .args(["serve", "-c", "examples/classic.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no listen address"));
}

/// A TCP connection flood fills `tcp_max_connections` and waits in the
/// backlog; UDP keeps answering, and TCP recovers when the flood ends.
#[test]
fn tcp_connection_flood_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = read_example("sandwich.yaml")
        .replace("tcp_max_connections: 256", "tcp_max_connections: 8")
        .replace("tcp_idle_timeout: 10s", "tcp_idle_timeout: 30s")
        .replace("base_zone: base/example.com.zone", "");
    let server = Server::start(&config_in(dir.path(), &cfg));
    let tcp = server.addr("tcp", false);
    let flood: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(tcp).expect("connect"))
        .collect();
    let udp = server.addr("udp", false);
    assert!(
        udp_exchange(udp, &query_packet(3, "example.com", 15)).is_some(),
        "UDP starved"
    );
    let ask = |timeout: Duration| -> Option<Vec<u8>> {
        let mut s = std::net::TcpStream::connect(tcp).ok()?;
        tcp_query(&mut s, 9, timeout)
    };
    assert!(
        ask(Duration::from_millis(300)).is_none(),
        "more than 8 connections were served"
    );
    drop(flood);
    let reply = ask(Duration::from_secs(5)).expect("TCP recovers after the flood");
    assert_eq!(&reply[..2], &9u16.to_be_bytes());
}

/// The TCP limit counts connections being served, whatever the listener:
/// an idle listener holds no slot, so with two listeners and a limit of two,
/// one listener can serve two connections at once.
#[test]
fn an_idle_listener_holds_no_tcp_slot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = read_example("sandwich.yaml")
        .replace("tcp_max_connections: 256", "tcp_max_connections: 2")
        .replace("base_zone: base/example.com.zone", "");
    let server = Server::start(&config_in(dir.path(), &cfg));
    let tcp = server.addr("tcp", false);
    let ask = |s: &mut std::net::TcpStream, id: u16| -> Option<u16> {
        let reply = tcp_query(s, id, Duration::from_secs(3))?;
        Some(u16::from_be_bytes([reply[0], reply[1]]))
    };
    let mut first = std::net::TcpStream::connect(tcp).unwrap();
    assert_eq!(ask(&mut first, 1), Some(1));
    // `first` stays open (served, idle); the [::1] listener has no client.
    let mut second = std::net::TcpStream::connect(tcp).unwrap();
    assert_eq!(
        ask(&mut second, 2),
        Some(2),
        "the second slot was held by an idle listener"
    );
    assert_eq!(ask(&mut first, 3), Some(3));
}

/// serve → verify end to end, over UDP and over TCP only.
#[test]
fn verify_passes_against_serve_over_udp_and_tcp() {
    let server = Server::start(&util::root().join("examples/sandwich.yaml"));
    for (addr, extra) in [
        (server.addr("udp", false), None),
        (server.addr("tcp", false), Some("--tcp")),
        (server.addr("udp", true), None),
        (server.addr("tcp", true), Some("--tcp")),
    ] {
        let mut cmd = util::nolist();
        cmd.args([
            "verify",
            "-c",
            "examples/sandwich.yaml",
            "--dns-only",
            "--format",
            "json",
        ])
        .args(["--nameserver", &addr.to_string()]);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let out = cmd.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{addr} {extra:?}: {report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report["ok"], true, "{report}");
    }
}
