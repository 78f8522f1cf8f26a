//! `nolist serve` with many zones: reloads free what they replace (memory
//! stays flat across ten of them) and log one line each.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::serve::Server;

/// Zones in the test: enough that a snapshot kept per reload would show in
/// the RSS (about 10 MB each), few enough to stay quick in a debug build.
const ZONES: usize = 2000;
const RELOADS: usize = 10;

/// A config with `n` classic domains (like `bench/gen-config.py`).
fn config(n: usize) -> String {
    let mut yaml = String::from("domains:\n");
    for i in 1..=n {
        let (hi, lo) = (i >> 8, i & 0xff);
        yaml.push_str(&format!(
            "  - name: d{i:06}.example
    decoy: {{ host: mx01.d{i:06}.example, preference: 10, ipv4: [198.18.{hi}.{lo}] }}
    real:
      - {{ host: mx02.d{i:06}.example, preference: 20, ipv4: [198.19.{hi}.{lo}] }}
"
        ));
    }
    yaml.push_str(
        "dns:
  soa: { mname: ns1.example.net, rname: hostmaster@example.net, serial: 1 }
  ns: [ns1.example.net, ns2.example.net]
",
    );
    yaml
}

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Waits (bounded) until `n` log lines contain `needle`.
fn wait_for_lines(server: &Server, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let count = server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        if count >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{n} × {needle:?} not logged:\n{}", server.log_text());
}

#[test]
fn ten_reloads_of_many_zones_keep_memory_flat_and_log_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(&cfg, config(ZONES)).unwrap();
    let server = Server::start(Path::new(&cfg));
    let summary = format!("reloaded {ZONES} zones (0 changed) in ");

    let mut after_first = 0;
    for i in 1..=RELOADS {
        server.signal("HUP");
        wait_for_lines(&server, &summary, i);
        if i == 1 {
            after_first = rss_kib(server.pid());
        }
    }
    let after_last = rss_kib(server.pid());
    // Generous: one snapshot of 2,000 zones kept per reload would add
    // tens of MB over nine reloads; allocator noise is far below 8 MiB.
    assert!(
        after_last <= after_first + 8 * 1024,
        "RSS grew from {after_first} KiB after reload 1 to {after_last} KiB after reload {RELOADS}"
    );

    // One line at the default level per reload (and one for the start),
    // not one per zone.
    let log = server.log.lock().unwrap().clone();
    let zone_lines = log.iter().filter(|l| l.contains(".example.")).count();
    assert_eq!(
        zone_lines,
        0,
        "per-zone lines at info level:\n{}",
        log.join("\n")
    );
    assert!(
        log.iter()
            .any(|l| l.contains(&format!("serving {ZONES} zones"))),
        "{}",
        log.join("\n")
    );
    assert!(log.len() <= 1 + 4 + RELOADS, "{}", log.join("\n"));
}
