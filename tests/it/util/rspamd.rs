//! A private rspamd for a test: the package's own `/etc/rspamd/rspamd.conf`
//! with every variable directory (`LOCAL_CONFDIR`, `DBDIR`, `RUNDIR`,
//! `LOGDIR`) in a temporary directory, so the test's `local.d/` files are
//! what an operator would write in `/etc/rspamd/local.d/`, and nothing of
//! the system's rspamd (its service, its databases) is used. It runs in
//! the foreground as a child of the test, as root (`-i`: it is the test's
//! own instance), its scanner on a free port of 127.0.0.1, the controller
//! and the proxy off. Dropping the handle stops it and kills whatever is
//! left of it (found by a variable in the process environment).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nsd::free_port;
use super::{require_root, require_tool};

/// The environment variable that marks an instance's processes.
const MARK: &str = "NOLIST_TEST_RSPAMD";

/// Test-only speed-ups: the URL matcher built from a two-line TLD list
/// instead of the 9,600 public suffixes (that takes 30 s and more on a
/// loaded machine), and no Hyperscan compilation.
const FAST_START: &str = "disable_hyperscan = true;\nurl_tld = \"$LOCAL_CONFDIR/tld.dat\";\n";

/// A running rspamd; dropping it stops the instance.
pub struct Rspamd {
    child: Child,
    dir: tempfile::TempDir,
    rspamc: PathBuf,
    /// Where its scanner (worker "normal") listens.
    pub addr: SocketAddr,
}

impl Rspamd {
    /// Starts rspamd with `local_d` (file name under `local.d/`, content)
    /// added to the instance's own files, and waits (at most 30 s) until
    /// it scans. `options.inc` in `local_d` is prepended to the instance's
    /// speed-ups. `None` after a loud skip when rspamd or rspamc is not
    /// installed or the test is not root (a failure under `CI=true`).
    pub fn start(local_d: &[(&str, &str)]) -> Option<Rspamd> {
        let rspamd = require_tool("rspamd", "rspamd")?;
        let rspamc = require_tool("rspamc", "rspamd")?;
        if !require_root("a private rspamd reads the package's configuration") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for sub in ["local.d", "db", "run", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        std::fs::write(root.join("tld.dat"), "org\nnet\n").expect("tld.dat");
        let ip = Ipv4Addr::LOCALHOST;
        let addr = SocketAddr::from((ip, free_port(&[ip])));
        let options = local_d
            .iter()
            .find(|(name, _)| *name == "options.inc")
            .map_or("", |(_, text)| text);
        let mut files = vec![
            ("options.inc", format!("{options}\n{FAST_START}")),
            ("worker-normal.inc", format!("bind_socket = \"{addr}\";\n")),
            ("worker-controller.inc", "enabled = false;\n".to_owned()),
            ("worker-proxy.inc", "enabled = false;\n".to_owned()),
        ];
        for (name, text) in local_d.iter().filter(|(n, _)| *n != "options.inc") {
            files.push((name, (*text).to_owned()));
        }
        for (name, text) in files {
            std::fs::write(root.join("local.d").join(name), text).expect("local.d file");
        }
        let out = std::fs::File::create(root.join("rspamd.out")).expect("rspamd.out");
        let mut command = Command::new(rspamd);
        command.args(["-f", "-i", "-c", "/etc/rspamd/rspamd.conf"]);
        for (var, sub) in [
            ("LOCAL_CONFDIR", ""),
            ("DBDIR", "db"),
            ("RUNDIR", "run"),
            ("LOGDIR", "log"),
        ] {
            command
                .arg("--var")
                .arg(format!("{var}={}", root.join(sub).display()));
        }
        let child = command
            .env(MARK, root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn rspamd");
        let mut server = Rspamd {
            child,
            dir,
            rspamc,
            addr,
        };
        server.wait_ready();
        Some(server)
    }

    /// `rspamc -h ADDR --ip IP symbols` on `message`: its output.
    pub fn symbols(&self, ip: &str, message: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(&self.rspamc)
            .args([
                "-h",
                &self.addr.to_string(),
                "-t",
                "10",
                "--ip",
                ip,
                "symbols",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rspamc");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(message.as_bytes())
            .expect("write the message");
        let out = child.wait_with_output().expect("rspamc");
        assert!(
            out.status.success(),
            "rspamc failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What rspamd printed, then the tail of its log.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        let log = read("log/rspamd.log").unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{}{}",
            read("rspamd.out").unwrap_or_default(),
            tail.join("\n")
        )
    }

    /// Waits (at most 30 s) until the scanner accepts connections (the
    /// main process binds before its workers start; a scan then waits
    /// for them); panics with the log when rspamd exits first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rspamd exited ({status}):\n{}", self.log());
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rspamd did not listen within 30 s:\n{}", self.log());
    }

    /// Every live process of this instance (main, workers, helpers).
    fn pids(&self) -> Vec<u32> {
        instance_pids(self.dir.path())
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
        // Workers leave after the main process; kill what is still there
        // after a grace period.
        super::reap(|| self.pids());
    }
}

/// Processes whose environment carries `NOLIST_TEST_RSPAMD=<dir>`.
fn instance_pids(dir: &Path) -> Vec<u32> {
    let needle = format!("{MARK}={}", dir.display());
    super::pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
    })
}
