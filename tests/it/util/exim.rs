//! A real Exim (Debian's `exim4-daemon-light`) receiving mail, so that the
//! parser is tested against the lines Exim itself writes.
//!
//! The package conflicts with `postfix`, which other tests use, so it is not
//! installed: `scripts/unpack-exim` unpacks its files into a cache directory
//! (`NOLIST_EXIM` names the binary; default
//! `/var/cache/nolist-test/exim/usr/sbin/exim4`). Each instance is private to
//! the test: its own `-C` configuration, spool and log directories in a
//! temporary directory, no DNS or ident lookups, messages queued and never
//! delivered. A session is `exim -bs` (SMTP over stdin, run as root) with
//! `-oMa` setting the client address Exim logs, exactly as if the client
//! had connected over TCP; no port, no network, and no daemon to stop.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{require_root, skip};

/// Where `scripts/unpack-exim` puts the binary.
const DEFAULT_BINARY: &str = "/var/cache/nolist-test/exim/usr/sbin/exim4";

/// One client's SMTP session, as Exim sees it.
pub struct Session<'a> {
    /// The client address (`-oMa`), with `.PORT` for a port.
    pub peer: &'a str,
    /// A host name Exim takes as verified (`-oMs`), if any.
    pub host_name: Option<&'a str>,
    /// The EHLO argument, sent as is.
    pub helo: &'a str,
    /// The MAIL FROM address, inside `<>`.
    pub sender: &'a str,
}

/// A private Exim configuration and its directories.
pub struct Exim {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Exim {
    /// An instance whose `log_selector` is `selector` (e.g. `+incoming_port`).
    /// It accepts any HELO (`helo_accept_junk_hosts = *`), as a server that
    /// takes junk does. `None` after a loud skip when Exim is not unpacked
    /// or the test is not root (a failure under `CI=true`).
    pub fn new(selector: &str) -> Option<Exim> {
        let binary = std::env::var_os("NOLIST_EXIM")
            .map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
        if !binary.is_file() {
            return skip(&format!(
                "Exim is not unpacked at {} (Debian package exim4-daemon-light); run scripts/test as root to unpack it",
                binary.display()
            ));
        }
        if !require_root("exim -bs -oMa needs a trusted caller") {
            return None;
        }
        let version = Command::new(&binary)
            .args(["-C", "/dev/null", "-bV"])
            .output()
            .expect("run exim -bV");
        if !version.status.success() {
            return skip(&format!(
                "{} does not run (run scripts/unpack-exim as root): {}",
                binary.display(),
                String::from_utf8_lossy(&version.stderr)
            ));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for sub in ["spool", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        let chown = Command::new("chown")
            .arg("Debian-exim:")
            .arg(root.join("spool"))
            .arg(root.join("log"))
            .status()
            .expect("chown");
        assert!(chown.success(), "chown Debian-exim {}", root.display());
        let config = format!(
            "primary_hostname = mx.nolist.test\n\
             exim_path = {binary}\n\
             spool_directory = {root}/spool\n\
             log_file_path = {root}/log/%slog\n\
             log_selector = {selector}\n\
             keep_environment =\n\
             timezone = UTC\n\
             log_timezone = true\n\
             helo_accept_junk_hosts = *\n\
             host_lookup =\n\
             rfc1413_hosts =\n\
             smtp_enforce_sync = false\n\
             queue_only = true\n\
             acl_smtp_rcpt = accept_all\n\
             begin acl\n\
             accept_all:\n  accept\n",
            binary = binary.display(),
            root = root.display(),
        );
        let conf = root.join("exim.conf");
        std::fs::write(&conf, config).expect("write exim.conf");
        // Exim wants its configuration owned by root and not writable by others.
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        Some(Exim { binary, dir })
    }

    /// Runs `session` (EHLO, MAIL, RCPT, DATA, QUIT) and returns the arrival
    /// line (`<=`) Exim logged for its message; panics if Exim did not
    /// accept the message.
    pub fn receive(&self, session: &Session) -> String {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-C")
            .arg(self.config())
            .args(["-bs", "-odq", "-oMa", session.peer])
            // No ident (`U=`): the line of a client that came over TCP.
            .args(["-oMt", ""]);
        if let Some(name) = session.host_name {
            cmd.args(["-oMs", name]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run exim -bs");
        let dialogue = format!(
            "EHLO {}\r\nMAIL FROM:<{}>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n\
             Subject: nolist test\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            session.helo, session.sender
        );
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(dialogue.as_bytes()).expect("write session");
        drop(stdin);
        let out = child.wait_with_output().expect("exim -bs");
        let replies = String::from_utf8_lossy(&out.stdout);
        let id = replies
            .lines()
            .find_map(|l| l.strip_prefix("250 OK id="))
            .unwrap_or_else(|| {
                panic!(
                    "exim did not accept the message:\n{replies}{}\nmainlog:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.mainlog()
                )
            })
            .trim()
            .to_owned();
        let needle = format!(" {id} <= ");
        self.mainlog()
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no arrival line for {id}:\n{}", self.mainlog()))
            .to_owned()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("exim.conf")
    }

    fn mainlog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/mainlog")).unwrap_or_default()
    }
}
