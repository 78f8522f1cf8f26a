//! NSD as an independent authoritative server for the tests: started by hand
//! in the foreground (`nsd -d`) on a loopback address and a free port, with
//! its own config, zone files, pid file and log in a temporary directory; no
//! chroot, no privilege drop, no rate limiting. Stopped (SIGTERM, then
//! SIGKILL) when the handle is dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

/// A running NSD; dropping it stops the server.
pub struct Nsd {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
}

/// A port that is free for UDP and TCP on every one of `ips` right now.
pub fn free_port(ips: &[Ipv4Addr]) -> u16 {
    for _ in 0..100 {
        let Ok(probe) = UdpSocket::bind((ips[0], 0)) else {
            continue;
        };
        let Ok(port) = probe.local_addr().map(|a| a.port()) else {
            continue;
        };
        let free = ips.iter().all(|ip| {
            let udp = if *ip == ips[0] {
                true
            } else {
                UdpSocket::bind((*ip, port)).is_ok()
            };
            udp && TcpListener::bind((*ip, port)).is_ok()
        });
        if free {
            return port;
        }
    }
    panic!("no free port on {ips:?} after 100 tries");
}

impl Nsd {
    /// Serves `zones` (origin without the dot, master-file text) on
    /// 127.0.0.1 and a free port. `None` after a loud skip when `nsd` is
    /// not installed (a failure under `CI=true`).
    pub fn start(zones: &[(&str, &str)]) -> Option<Nsd> {
        let ip = Ipv4Addr::LOCALHOST;
        Nsd::start_at(SocketAddr::from((ip, free_port(&[ip]))), zones)
    }

    /// Like [`Nsd::start`], on a given loopback address and port.
    pub fn start_at(addr: SocketAddr, zones: &[(&str, &str)]) -> Option<Nsd> {
        let nsd = require_tool("nsd", "nsd")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n  ip-address: {ip}@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  \
             zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  \
             logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\n  rrl-ratelimit: 0\n  \
             reuseport: no\n  hide-version: yes\nremote-control:\n  control-enable: no\n",
            ip = addr.ip(),
            port = addr.port(),
        );
        for (origin, text) in zones {
            std::fs::write(dir.path().join(format!("{origin}.zone")), text).expect("zone file");
            conf.push_str(&format!(
                "zone:\n  name: {origin}\n  zonefile: {origin}.zone\n"
            ));
        }
        let conf_path = dir.path().join("nsd.conf");
        std::fs::write(&conf_path, conf).expect("nsd.conf");
        let child = Command::new(nsd)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsd");
        let mut server = Nsd { child, dir, addr };
        server.wait_ready(zones.first().map_or(".", |z| z.0));
        Some(server)
    }

    /// Polls with a SOA query until NSD answers NOERROR (at most 10 s).
    fn wait_ready(&mut self, zone: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nsd exited early ({status}):\n{}", self.log());
            }
            if soa_answered(self.addr, zone) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nsd did not answer within 10 s:\n{}", self.log());
    }

    /// NSD's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nsd.log")).unwrap_or_default()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        // SIGTERM lets NSD stop its server and xfrd children; SIGKILL if it hangs.
        super::stop_child(&mut self.child);
    }
}

/// True when `addr` answers a UDP SOA query for `zone` with NOERROR.
pub fn soa_answered(addr: SocketAddr, zone: &str) -> bool {
    let Ok(sock) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
    let mut query = vec![0x4e, 0x4c, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in zone
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 6, 0, 1]);
    if sock.send_to(&query, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x4e, 0x4c] && buf[3] & 0x0f == 0)
}
