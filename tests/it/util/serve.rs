//! Runs a long-lived `nolist` command (`serve`, `run`) as a child process
//! on free loopback ports, reads its "listening on" lines, and stops it on
//! drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `nolist serve`.
pub struct Server {
    child: Child,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The private state directory of a `run`, held so that it lives as
    /// long as the process and is removed on drop.
    _state: Option<tempfile::TempDir>,
    lines: mpsc::Receiver<String>,
    /// `(proto, addr)` of each listener, e.g. `("udp", 127.0.0.1:5353)`.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl Server {
    /// Starts `nolist serve -c config` on `127.0.0.1:0` and `[::1]:0` and
    /// waits (at most 20 s) until every listener is reported.
    pub fn start(config: &Path) -> Server {
        Server::start_with(
            "serve",
            config,
            &["--listen", "127.0.0.1:0", "--listen", "[::1]:0"],
            4,
        )
        .unwrap_or_else(|log| panic!("nolist serve did not start:\n{log}"))
    }

    /// Starts `nolist SUBCOMMAND -c config ARGS` with `NOLIST_LOG=info` and
    /// waits for `expect` listener lines; on early exit returns the log.
    pub fn start_with(
        subcommand: &str,
        config: &Path,
        args: &[&str],
        expect: usize,
    ) -> Result<Server, String> {
        Server::start_logging(subcommand, config, args, expect, Some("info"))
    }

    /// Like [`Server::start_with`], with `NOLIST_LOG` set to `log`, or
    /// unset (the default filter) for `None`.
    pub fn start_logging(
        subcommand: &str,
        config: &Path,
        args: &[&str],
        expect: usize,
        log: Option<&str>,
    ) -> Result<Server, String> {
        // `run` keeps state: give it a private directory, never the system's.
        let state = (subcommand == "run" && !args.contains(&"--state-dir"))
            .then(|| tempfile::tempdir().expect("state dir"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_nolist"));
        command.arg(subcommand).arg("-c").arg(config).args(args);
        if let Some(dir) = &state {
            command.arg("--state-dir").arg(dir.path());
        }
        match log {
            Some(filter) => command.env("NOLIST_LOG", filter),
            None => command.env_remove("NOLIST_LOG"),
        };
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nolist");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            log,
            _state: state,
            lines,
            listeners: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.listeners.len() < expect {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let mut words = rest.split_whitespace();
                        let proto = words.next().expect("proto");
                        let addr = words.next().expect("addr").parse().expect("addr");
                        server.listeners.push((proto.to_owned(), addr));
                    }
                }
                Err(_) => return Err(server.log_text()),
            }
        }
        Ok(server)
    }

    /// The address of the first `proto` listener on IPv4 (`v6` false) or IPv6.
    pub fn addr(&self, proto: &str, v6: bool) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(p, a)| p == proto && a.is_ipv6() == v6)
            .map(|(_, a)| *a)
            .expect("listener")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "HUP") to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The log so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
