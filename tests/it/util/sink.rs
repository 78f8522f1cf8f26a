//! Postfix's `smtp-sink` (Debian package `postfix`) as a throwaway SMTP peer
//! for the tests: by default it answers `220`, `250` to EHLO (no STARTTLS),
//! `250` to MAIL and to every RCPT, and throws mail away. Options such as
//! `-f RCPT -B "550 ..."` make it hard-reject a command. It runs in the
//! foreground on one loopback address and port, as `nobody` when the test
//! runs as root (smtp-sink insists), and is killed when the handle drops.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

/// A running `smtp-sink`; dropping it kills the process.
pub struct Sink {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Sink {
    /// Starts `smtp-sink ARGS addr 16` and waits (at most 10 s) until it
    /// sends a banner. `None` after a loud skip when `smtp-sink` is not
    /// installed (a failure under `CI=true`).
    pub fn start(addr: SocketAddr, args: &[&str]) -> Option<Sink> {
        let tool = require_tool("smtp-sink", "postfix")?;
        let mut cmd = Command::new(tool);
        if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0) {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(args)
            .arg(addr.to_string())
            .arg("16")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        let mut sink = Sink { child, addr };
        sink.wait_ready();
        Some(sink)
    }

    /// Polls until a connection gets a reply line (at most 10 s).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("smtp-sink on {} exited early ({status})", self.addr);
            }
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.len() >= 3 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("smtp-sink on {} did not answer within 10 s", self.addr);
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
