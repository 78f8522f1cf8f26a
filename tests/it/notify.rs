//! `nolist run` tells systemd when it is ready and when it stops, through
//! `$NOTIFY_SOCKET`, and pets the watchdog when asked to.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn ready_watchdog_and_stopping_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(
        &cfg,
        "domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
responder: { mode: rcpt-450, listen: [\"127.0.0.1:0\"] }
bans: { enforce: { backend: none } }
",
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nolist"))
        .args(["run", "-c"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        let n = sock.recv(&mut buf).expect("a notification in time");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(seen[0].starts_with("READY=1"), "{seen:?}");
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING in time");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert!(child.wait().unwrap().success());
}
