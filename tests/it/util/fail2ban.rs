//! A private fail2ban server for the fail2ban backend's tests: its own
//! config directory, socket, pid file and log in a temporary directory, an
//! in-memory database, and one jail `nolist` whose action is fail2ban's own
//! `iptables-multiport` on port 25 (its nftables actions cannot hold
//! networks: their sets have no `interval` flag). Start it only inside a network
//! namespace the test made (its action changes the firewall). It runs in
//! the foreground as the test's child and is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::require_tool;

/// A running fail2ban server.
pub struct Fail2ban {
    child: Child,
    dir: tempfile::TempDir,
}

impl Fail2ban {
    /// Starts the server and waits (at most 20 s) until it answers `ping`.
    /// `None` after a loud skip when fail2ban is not installed.
    pub fn start() -> Option<Fail2ban> {
        let server = require_tool("fail2ban-server", "fail2ban")?;
        require_tool("fail2ban-client", "fail2ban")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir(root.join("action.d")).expect("action.d");
        std::fs::create_dir(root.join("filter.d")).expect("filter.d");
        for action in ["iptables.conf", "iptables-multiport.conf"] {
            std::fs::copy(
                Path::new("/etc/fail2ban/action.d").join(action),
                root.join("action.d").join(action),
            )
            .expect("copy fail2ban action");
        }
        let r = root.display();
        std::fs::write(
            root.join("fail2ban.conf"),
            format!(
                "[Definition]\nloglevel = INFO\nlogtarget = {r}/fail2ban.log\nsocket = {r}/fail2ban.sock\npidfile = {r}/fail2ban.pid\ndbfile = :memory:\ndbpurgeage = 1d\n"
            ),
        )
        .expect("fail2ban.conf");
        std::fs::write(
            root.join("jail.conf"),
            "[nolist]\nenabled = true\nfilter =\nlogpath = /dev/null\nbackend = polling\n\
             bantime = 1d\naction = iptables-multiport[name=nolist, port=\"25\", protocol=tcp]\n",
        )
        .expect("jail.conf");
        let child = Command::new(server)
            .args(["-f", "-x", "-c"])
            .arg(root)
            .arg("-s")
            .arg(root.join("fail2ban.sock"))
            .arg("-p")
            .arg(root.join("fail2ban.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn fail2ban-server");
        let f2b = Fail2ban { child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if f2b.client(&["ping"]).is_some() {
                return Some(f2b);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "fail2ban-server did not start:\n{}",
            std::fs::read_to_string(f2b.dir.path().join("fail2ban.log")).unwrap_or_default()
        );
    }

    /// The server's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("fail2ban.sock")
    }

    /// Runs `fail2ban-client -s SOCKET ARGS`; its stdout when it succeeds.
    pub fn client(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("fail2ban-client")
            .arg("-s")
            .arg(self.socket())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
