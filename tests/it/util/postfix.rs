//! A real Postfix set up as the classic hand-made nolisting decoy: a second
//! `smtpd` on its own loopback address whose `smtpd_client_restrictions` is
//! a pcre map answering `450 4.7.1 ...`. Postfix's default
//! `smtpd_delay_reject = yes` delays that reject until RCPT, so a client
//! gets the full dialogue (banner, EHLO, MAIL) and then `450` at every RCPT.
//!
//! The instance is private to the test and leaves the system's
//! `/etc/postfix` alone: its own `-c` config directory (mode 755, owned by
//! root), queue and data directories in a temporary directory, chroot off,
//! `maillog_file` under a directory listed in `maillog_file_prefixes` (with
//! a `postlog` service), no peer-name lookups (nothing leaves loopback), no
//! delivery of any kind. It runs in the foreground (`postfix start-fg`) as a
//! child of the test, so the test reaps it; dropping the handle runs
//! `postfix stop`, waits (bounded), and kills whatever is left of the
//! instance (found by `MAIL_CONFIG` in the process environment).
//!
//! `bench/responder` writes the same configuration in bash.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nsd::free_port;
use super::{require_tool, skip};

/// The reply text of the pcre map (after the code).
pub const DECOY_REPLY: &str = "4.7.1 Service temporarily unavailable, try again later";

/// A running Postfix decoy; dropping it stops the instance.
pub struct Postfix {
    child: Child,
    dir: tempfile::TempDir,
    postfix: PathBuf,
    /// Where the decoy `smtpd` listens.
    pub addr: SocketAddr,
}

impl Postfix {
    /// Starts the classic decoy on `ip` (a loopback address) and a free
    /// port, and waits (at most 20 s) for its `220` banner. `None` after a
    /// loud skip when Postfix or its pcre map support is not installed (a
    /// failure under `CI=true`).
    pub fn start_decoy(ip: Ipv4Addr) -> Option<Postfix> {
        let postfix = require_tool("postfix", "postfix")?;
        if !Path::new("/usr/lib/postfix/postfix-pcre.so").is_file() {
            return skip(
                "Postfix pcre maps are not installed (Debian package postfix-pcre); run scripts/test as root to install them",
            );
        }
        if !super::require_root("a private Postfix instance runs as user postfix") {
            return None;
        }
        let mut last_error = String::new();
        // A port can be taken between free_port() and master's bind: retry.
        for _ in 0..3 {
            let addr = SocketAddr::from((ip, free_port(&[ip])));
            match Postfix::start_at(&postfix, addr, &Role::Decoy) {
                Ok(p) => return Some(p),
                Err(e) => last_error = e,
            }
        }
        panic!("postfix did not start:\n{last_error}");
    }

    /// Starts a real MX on `addr` (inside a network namespace the test
    /// made, for port 25) that accepts mail for `domain` from anyone and
    /// discards it after the queue: it logs every accepted message as
    /// `QUEUEID: client=NAME[IP]`, the line nolist counts as a delivery.
    /// `None` after a loud skip when Postfix is not installed or not root.
    pub fn start_real_mx(addr: SocketAddr, domain: &str) -> Option<Postfix> {
        let postfix = require_tool("postfix", "postfix")?;
        if !super::require_root("a private Postfix instance runs as user postfix") {
            return None;
        }
        let role = Role::RealMx {
            domain: domain.to_owned(),
            postscreen: None,
        };
        Some(Postfix::start_at(&postfix, addr, &role).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts the real MX of [`Postfix::start_real_mx`] with `main_cf`
    /// (the `postscreen_*` lines) added to its main.cf and `master_cf`
    /// (`postscreen` on `addr` in front of `smtpd`, `dnsblog`, ...; no
    /// chroot) in place of its smtpd line. Its DNSBL lookups (`dnsblog`)
    /// ask the nameservers of `/etc/resolv.conf`: the caller gives the
    /// test its own first (`util::mountns`). `None` after a loud skip as
    /// for the real MX.
    pub fn start_postscreen(
        addr: SocketAddr,
        domain: &str,
        main_cf: &str,
        master_cf: &str,
    ) -> Option<Postfix> {
        let postfix = require_tool("postfix", "postfix")?;
        if !super::require_root("a private Postfix instance runs as user postfix") {
            return None;
        }
        let role = Role::RealMx {
            domain: domain.to_owned(),
            postscreen: Some(Postscreen {
                main_cf: main_cf.to_owned(),
                master_cf: master_cf.to_owned(),
            }),
        };
        Some(Postfix::start_at(&postfix, addr, &role).unwrap_or_else(|e| panic!("{e}")))
    }

    /// The mail log (`maillog_file`).
    pub fn maillog(&self) -> PathBuf {
        self.dir.path().join("log/postfix.log")
    }

    /// `postfix logrotate`: the mail log is renamed with a time-stamp
    /// suffix and a new one is started.
    pub fn logrotate(&self) {
        let ok = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.config_dir())
            .arg("logrotate")
            .stdin(Stdio::null())
            .status()
            .expect("postfix logrotate")
            .success();
        assert!(ok, "postfix logrotate failed:\n{}", self.log());
    }

    fn start_at(postfix: &Path, addr: SocketAddr, role: &Role) -> Result<Postfix, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        for sub in ["etc", "spool", "data", "log"] {
            std::fs::create_dir(root.join(sub)).expect("mkdir");
        }
        // The postfix user must traverse the tree; Postfix insists on a
        // root-owned config directory that others cannot write.
        for d in [root.to_path_buf(), root.join("etc"), root.join("log")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(root.join("data"))
            .status()
            .expect("chown");
        assert!(chown.success(), "chown postfix {}/data", root.display());
        let etc = root.join("etc");
        std::fs::write(etc.join("main.cf"), main_cf(root, role)).expect("main.cf");
        std::fs::write(etc.join("master.cf"), master_cf(root, addr, role)).expect("master.cf");
        std::fs::write(etc.join("decoy.pcre"), format!("/./ 450 {DECOY_REPLY}\n"))
            .expect("decoy.pcre");
        let out = std::fs::File::create(root.join("start-fg.out")).expect("start-fg.out");
        let child = Command::new(postfix)
            .arg("-c")
            .arg(&etc)
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn postfix start-fg");
        let mut server = Postfix {
            child,
            dir,
            postfix: postfix.to_owned(),
            addr,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls for the `220` banner (at most 20 s); on failure returns the
    /// start output and the mail log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "postfix start-fg exited ({status}):\n{}",
                    self.log()
                ));
            }
            // postscreen's teaser banner is `220-`.
            if banner(self.addr).is_some_and(|b| b.starts_with("220")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "postfix did not answer within 20 s:\n{}",
            self.log()
        ))
    }

    /// The instance's config directory (`postfix -c` argument).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// What `postfix start-fg` printed, then the mail log so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read("start-fg.out").unwrap_or_default(),
            read("log/postfix.log").unwrap_or_default()
        )
    }

    /// Every live process of this instance (master and its daemons).
    pub fn pids(&self) -> Vec<u32> {
        instance_pids(&self.config_dir())
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Daemons outlive master by a moment; anything still there after
        // a grace period is killed.
        super::reap(|| self.pids());
    }
}

/// What an instance is for.
enum Role {
    /// The classic decoy: `450` at every RCPT.
    Decoy,
    /// A real MX for `domain` that accepts and then discards, with
    /// `postscreen` in front of it when its main.cf lines are given.
    RealMx {
        domain: String,
        postscreen: Option<Postscreen>,
    },
}

/// The lines that put `postscreen` in front of a real MX's `smtpd`.
struct Postscreen {
    main_cf: String,
    master_cf: String,
}

fn main_cf(root: &Path, role: &Role) -> String {
    let r = root.display();
    let role_cf = match role {
        Role::Decoy => "\
# The classic nolisting decoy (see tests/it/util/postfix.rs).
myhostname = mx01.example.org
# Nothing is local, nothing is relayed, nothing is ever delivered.
relay_domains =
default_transport = error:decoy never delivers
local_transport = error:decoy never delivers
"
        .to_owned(),
        Role::RealMx { domain, postscreen } => format!(
            "\
# A real MX for {domain} that accepts from anyone and discards after the queue.
myhostname = mx02.{domain}
relay_domains = {domain}
default_transport = discard:accepted by the test MX
relay_transport = discard:accepted by the test MX
local_transport = discard:accepted by the test MX
{}",
            postscreen.as_ref().map_or("", |p| p.main_cf.as_str())
        ),
    };
    format!(
        "{role_cf}compatibility_level = 3.6
queue_directory = {r}/spool
data_directory = {r}/data
mail_owner = postfix
setgid_group = postdrop
mydomain = example.org
myorigin = $myhostname
# master.cf names the listen address; this one must exist on an interface.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks =
local_recipient_maps =
alias_maps =
alias_database =
smtpd_relay_restrictions = reject_unauth_destination
# Logging without syslog.
maillog_file = {r}/log/postfix.log
maillog_file_prefixes = {r}/log
# All test load comes from one address; no reverse DNS (stay on loopback).
smtpd_client_connection_count_limit = 0
smtpd_peername_lookup = no
smtpd_banner = $myhostname ESMTP
default_process_limit = 500
biff = no
"
    )
}

fn master_cf(root: &Path, addr: SocketAddr, role: &Role) -> String {
    let r = root.display();
    let smtpd = match role {
        Role::Decoy => format!(
            "{addr} inet n - n - - smtpd\n  -o smtpd_client_restrictions=pcre:{r}/etc/decoy.pcre\n"
        ),
        Role::RealMx {
            postscreen: None, ..
        } => format!("{addr} inet n - n - - smtpd\n"),
        Role::RealMx {
            postscreen: Some(p),
            ..
        } => p.master_cf.clone(),
    };
    format!(
        "# service type private unpriv chroot wakeup maxproc command
{smtpd}{SERVICES}"
    )
}

/// The services every private Postfix of the tests runs besides its smtpd
/// (chroot off everywhere); `smtp` and `relay` for one that sends.
pub const SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// The first reply line at `addr`, if it answers within 2 s.
fn banner(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).ok()?;
    let _ = s.write_all(b"QUIT\r\n");
    Some(line)
}

/// Processes whose environment says `MAIL_CONFIG=<config_dir>`: Postfix's
/// master and every daemon it starts inherit it from `postfix -c`.
pub fn instance_pids(config_dir: &Path) -> Vec<u32> {
    let needle = format!("MAIL_CONFIG={}", config_dir.display());
    super::pids_where(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == needle.as_bytes()))
    })
}
