//! Real sender MTAs (Postfix, Exim 4, OpenSMTPD) delivering to a nolisted
//! domain from inside a network namespace: each one has a private
//! configuration, binds its outgoing connections to its own address, and
//! finds the MX hosts itself through the system resolver, which
//! [`private_resolver`] points at `nolist run`'s DNS listener (a bind mount
//! over `/etc/resolv.conf` in a private mount namespace: nothing on the host
//! changes). A message is handed to the sender (SMTP to its local listener,
//! or `exim -odi`), and from there on the sender alone decides where it
//! goes: a real MX lookup, the decoy first, and its own fallback.
//!
//! Exim and OpenSMTPD conflict with the `postfix` package the other tests
//! need, so they are unpacked, not installed: `scripts/unpack-exim` and
//! `scripts/unpack-opensmtpd` (see there). Dropping a sender stops it and
//! every process it started.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::postfix::instance_pids;
use super::{require_root, require_tool, skip};

/// Where `scripts/unpack-exim` puts the Exim binary.
const EXIM_BINARY: &str = "/var/cache/nolist-test/exim/usr/sbin/exim4";
/// Where `scripts/unpack-opensmtpd` puts OpenSMTPD.
const OPENSMTPD_ROOT: &str = "/var/cache/nolist-test/opensmtpd";

/// Which sender MTA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Postfix,
    Exim,
    OpenSmtpd,
}

impl Kind {
    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Postfix => "postfix",
            Kind::Exim => "exim",
            Kind::OpenSmtpd => "opensmtpd",
        }
    }

    /// Whether it is there (installed or unpacked) and the test can run
    /// it; a loud skip otherwise (a failure under `CI=true`).
    pub fn available(self) -> bool {
        if !require_root("private MTA instances and mount namespaces") {
            return false;
        }
        match self {
            Kind::Postfix => require_tool("postfix", "postfix").is_some(),
            Kind::Exim => {
                Path::new(&exim_binary()).is_file()
                    || skip::<()>(&format!(
                        "Exim is not unpacked at {} (Debian package exim4-daemon-light); run scripts/test as root to unpack it",
                        exim_binary().display()
                    ))
                    .is_some()
            }
            Kind::OpenSmtpd => {
                let smtpctl = opensmtpd_root().join("usr/sbin/smtpctl");
                let setgid = std::fs::metadata(&smtpctl)
                    .is_ok_and(|m| m.permissions().mode() & 0o2000 != 0);
                opensmtpd_root().join("usr/sbin/smtpd").is_file()
                    && setgid
                    && Path::new("/var/spool/smtpd").is_dir()
                    && Path::new("/var/lib/opensmtpd/empty").is_dir()
                    || skip::<()>(&format!(
                        "OpenSMTPD is not unpacked at {} (Debian package opensmtpd); run scripts/test as root to unpack it",
                        opensmtpd_root().display()
                    ))
                    .is_some()
            }
        }
    }
}

fn exim_binary() -> PathBuf {
    std::env::var_os("NOLIST_EXIM").map_or_else(|| PathBuf::from(EXIM_BINARY), PathBuf::from)
}

fn opensmtpd_root() -> PathBuf {
    std::env::var_os("NOLIST_OPENSMTPD_ROOT")
        .map_or_else(|| PathBuf::from(OPENSMTPD_ROOT), PathBuf::from)
}

/// Moves the calling thread (and what it starts from now on) into a private
/// mount namespace whose `/etc/resolv.conf` names `nameserver` only, and
/// whose `/run` is an empty tmpfs (OpenSMTPD's control socket is compiled in
/// as `/var/run/smtpd.sock`). Nothing propagates back to the host. The
/// returned directory holds the file and must outlive the namespace's use.
pub fn private_resolver(nameserver: &str) -> tempfile::TempDir {
    // SAFETY: unshare only changes the calling thread's namespaces.
    let ok = unsafe { libc::unshare(libc::CLONE_NEWNS) == 0 };
    assert!(
        ok,
        "unshare(CLONE_NEWNS): {}",
        std::io::Error::last_os_error()
    );
    mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE);
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("resolv.conf");
    // One server, short timeouts: a lost answer costs seconds, not minutes.
    std::fs::write(
        &conf,
        format!("nameserver {nameserver}\noptions timeout:2 attempts:3\n"),
    )
    .expect("resolv.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    mount(
        Some(conf.to_str().expect("utf-8 path")),
        "/etc/resolv.conf",
        None,
        libc::MS_BIND,
    );
    mount(Some("tmpfs"), "/run", Some("tmpfs"), 0);
    dir
}

/// `mount(2)`; panics with the error.
fn mount(source: Option<&str>, target: &str, fstype: Option<&str>, flags: libc::c_ulong) {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let source = source.map(c);
    let fstype = fstype.map(c);
    let target_c = c(target);
    // SAFETY: every pointer is a valid C string or null, alive for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount {target}: {}", std::io::Error::last_os_error());
}

/// A running sender MTA; dropping it stops it.
pub struct Sender {
    pub kind: Kind,
    /// The address its outgoing connections come from.
    pub source: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// The port of the senders' local submission listener (inside the test's
/// namespace, so fixed).
const SUBMIT_PORT: u16 = 2525;

impl Sender {
    /// Starts `kind` with outgoing connections from `source`. Call inside
    /// the test's network and mount namespaces.
    pub fn start(kind: Kind, source: &str) -> Sender {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut sender = Sender {
            kind,
            source: source.to_owned(),
            dir,
            child: None,
        };
        match kind {
            Kind::Postfix => sender.start_postfix(),
            Kind::Exim => sender.write_exim_config(),
            Kind::OpenSmtpd => sender.start_opensmtpd(),
        }
        sender
    }

    /// Hands a message from `from` to `to` to the sender; it delivers it on
    /// its own. Panics if the sender does not take it.
    pub fn submit(&self, from: &str, to: &str, subject: &str) {
        match self.kind {
            Kind::Postfix | Kind::OpenSmtpd => {
                let addr: SocketAddr = ([127, 0, 0, 1], SUBMIT_PORT).into();
                smtp_submit(addr, from, to, subject).unwrap_or_else(|e| {
                    panic!(
                        "{} did not take the message: {e}\n{}",
                        self.kind.name(),
                        self.log()
                    )
                });
            }
            Kind::Exim => self.exim_submit(from, to, subject),
        }
    }

    /// The sender's own log so far.
    pub fn log(&self) -> String {
        let name = match self.kind {
            Kind::Postfix => "log/postfix.log",
            Kind::Exim => "log/mainlog",
            Kind::OpenSmtpd => "smtpd.log",
        };
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// `smtpctl schedule all` (OpenSMTPD only): every queued message is
    /// retried now.
    pub fn schedule_all(&self) {
        assert_eq!(self.kind, Kind::OpenSmtpd);
        let out = Command::new(opensmtpd_root().join("usr/sbin/smtpctl"))
            .args(["schedule", "all"])
            .output()
            .expect("run smtpctl");
        assert!(
            out.status.success(),
            "smtpctl schedule all: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn start_postfix(&mut self) {
        let root = self.dir.path();
        for sub in ["etc", "spool", "data", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        for d in [root.join("etc"), root.join("log")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        run(Command::new("chown").arg("postfix").arg(root.join("data")));
        let r = root.display();
        let main_cf = format!(
            "\
# A sender: relays what 127.0.0.1 submits, to the MX hosts DNS names.
compatibility_level = 3.6
queue_directory = {r}/spool
data_directory = {r}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.postfix-sender.example
mydomain = postfix-sender.example
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_bind_address = {source}
smtp_connect_timeout = 10s
maillog_file = {r}/log/postfix.log
maillog_file_prefixes = {r}/log
smtpd_peername_lookup = no
biff = no
",
            source = self.source
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).expect("main.cf");
        std::fs::write(
            root.join("etc/master.cf"),
            format!(
                "127.0.0.1:{SUBMIT_PORT} inet n - n - - smtpd\n{}",
                super::postfix::SERVICES
            ),
        )
        .expect("master.cf");
        let out = std::fs::File::create(root.join("start-fg.out")).expect("start-fg.out");
        let child = Command::new("postfix")
            .arg("-c")
            .arg(root.join("etc"))
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn postfix start-fg");
        self.child = Some(child);
        self.wait_listening();
    }

    fn write_exim_config(&mut self) {
        let root = self.dir.path();
        for sub in ["spool", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        run(Command::new("chown")
            .arg("Debian-exim:")
            .arg(root.join("spool"))
            .arg(root.join("log")));
        // local_interfaces: only 127.0.0.1 is "this host", so the MX hosts
        // on other addresses of `lo` are remote ones. The retry rule is
        // Exim's usual first interval.
        let config = format!(
            "primary_hostname = mta.exim-sender.example
exim_path = {binary}
spool_directory = {r}/spool
log_file_path = {r}/log/%slog
log_selector = +all
local_interfaces = 127.0.0.1
keep_environment =
timezone = UTC
host_lookup =
rfc1413_hosts =
begin routers
dnslookup:
  driver = dnslookup
  domains = *
  transport = remote_smtp
  no_more
begin transports
remote_smtp:
  driver = smtp
  interface = {source}
begin retry
* * F,15m,15m
",
            binary = exim_binary().display(),
            r = root.display(),
            source = self.source,
        );
        let conf = root.join("exim.conf");
        std::fs::write(&conf, config).expect("exim.conf");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    /// `exim -odi`: Exim takes the message and delivers it before it exits.
    fn exim_submit(&self, from: &str, to: &str, subject: &str) {
        let mut child = Command::new(exim_binary())
            .arg("-C")
            .arg(self.dir.path().join("exim.conf"))
            .args(["-odi", "-f", from, to])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run exim");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("Subject: {subject}\n\nbody\n").as_bytes())
            .expect("write message");
        drop(stdin);
        let out = wait_output(child, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "exim: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn start_opensmtpd(&mut self) {
        let root = self.dir.path();
        // The queue: a private directory over the compiled-in path (in this
        // thread's mount namespace only); smtpd makes its subdirectories.
        let queue = root.join("queue");
        std::fs::create_dir(&queue).expect("mkdir");
        std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o711)).expect("chmod");
        mount(
            Some(queue.to_str().expect("utf-8")),
            "/var/spool/smtpd",
            None,
            libc::MS_BIND,
        );
        let conf = root.join("smtpd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen on 127.0.0.1 port {SUBMIT_PORT}\n\
                 action \"out\" relay src {source} helo mta.opensmtpd-sender.example\n\
                 match from local for any action \"out\"\n",
                source = self.source
            ),
        )
        .expect("smtpd.conf");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let log = std::fs::File::create(root.join("smtpd.log")).expect("smtpd.log");
        // -d: foreground, logging to stderr; -v: every attempt, with its host.
        let child = Command::new(opensmtpd_root().join("usr/sbin/smtpd"))
            .args(["-d", "-v", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn smtpd");
        self.child = Some(child);
        self.wait_listening();
    }

    /// Waits (at most 20 s) for the submission listener's `220`.
    fn wait_listening(&mut self) {
        let addr: SocketAddr = ([127, 0, 0, 1], SUBMIT_PORT).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited ({status}):\n{}{}",
                    self.kind.name(),
                    self.start_output(),
                    self.log()
                );
            }
            if greeting(addr).is_some_and(|g| g.starts_with("220")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within 20 s:\n{}{}",
                self.kind.name(),
                self.start_output(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("start-fg.out")).unwrap_or_default()
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if self.kind == Kind::Postfix {
            let _ = Command::new("postfix")
                .arg("-c")
                .arg(self.dir.path().join("etc"))
                .arg("stop")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut child) = self.child.take() {
            // OpenSMTPD's processes (-d keeps them children of the first)
            // leave when it does; any still there after 5 s are killed.
            let children = children_of(child.id());
            super::stop_child(&mut child);
            let deadline = Instant::now() + Duration::from_secs(5);
            while children.iter().any(|&p| alive(p)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            for pid in children.into_iter().filter(|&p| alive(p)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        if self.kind == Kind::Postfix {
            // Daemons outlive master by a moment; then they are killed.
            let etc = self.dir.path().join("etc");
            let deadline = Instant::now() + Duration::from_secs(5);
            while !instance_pids(&etc).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            for pid in instance_pids(&etc) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        // Exim's deliveries ran in the foreground (-odi): nothing to stop.
        if self.kind == Kind::OpenSmtpd {
            // SAFETY: a valid C string, alive for the call.
            let target = std::ffi::CString::new("/var/spool/smtpd").expect("no NUL");
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    super::pids_where(|p| {
        // `PID (comm) STATE PPID ...`; comm may hold spaces, not ')'.
        std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
    })
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Runs `cmd`; panics unless it succeeds.
fn run(cmd: &mut Command) {
    let ok = cmd.status().expect("run command").success();
    assert!(ok, "{cmd:?} failed");
}

/// Waits at most `timeout` for `child`, killing it after that.
fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("wait")
}

/// The greeting at `addr`, if it answers within 2 s.
fn greeting(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).ok()?;
    let _ = s.write_all(b"QUIT\r\n");
    Some(line)
}

/// One message over SMTP to a sender's local listener.
fn smtp_submit(addr: SocketAddr, from: &str, to: &str, subject: &str) -> Result<(), String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut w = s;
    let expect = |code: &str, r: &mut BufReader<TcpStream>| -> Result<(), String> {
        let reply = reply(r);
        if reply.starts_with(code) {
            Ok(())
        } else {
            Err(format!("expected {code}, got {reply:?}"))
        }
    };
    expect("220", &mut r)?;
    let steps = [
        ("EHLO submitter.test".to_owned(), "250"),
        (format!("MAIL FROM:<{from}>"), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_owned(), "354"),
        (
            format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nbody\r\n."),
            "250",
        ),
        ("QUIT".to_owned(), "221"),
    ];
    for (line, code) in steps {
        w.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        expect(code, &mut r)?;
    }
    Ok(())
}

/// One SMTP reply (its last line); empty at EOF.
pub fn reply(r: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return line;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    }
}
