//! A private `redis-server` for the tests: started in the foreground on a
//! loopback address and a free port, with its config, data and log in a
//! temporary directory; never a system service. It can be killed with
//! SIGKILL and started again on the same port and directory, with its data
//! (what the append-only file holds) or without. Killed when dropped.
//!
//! ```ignore
//! let Some(mut server) = RedisServer::start(RedisOptions::default()) else { return };
//! let url = server.url();            // redis://127.0.0.1:PORT/0
//! server.freeze();                   // hung: SIGSTOP (thaw: SIGCONT)
//! server.kill9();                    // as a crash
//! server.restart();                  // same port and dir, data as the AOF kept it
//! server.restart_empty();            // same port, no data
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{require_tool, run_ok};

/// How a server is set up.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// Where it listens (default 127.0.0.1); the port is a free one.
    pub bind: Option<IpAddr>,
    /// An append-only file written at every command (`appendfsync
    /// always`), so that a restart after `kill9` keeps every acknowledged
    /// write; without it a restart is always empty.
    pub aof: bool,
    /// `requirepass`: the default user's password.
    pub password: Option<String>,
    /// ACL users, each the rule of a `user` line, e.g.
    /// `nolist on >pw ~{p}:* -@all +ping`.
    pub users: Vec<String>,
    /// TLS only (no plain port), with a certificate for the bind address
    /// signed by a CA made for this server ([`RedisServer::ca_pem`]).
    pub tls: bool,
}

/// A running private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    program: PathBuf,
    dir: tempfile::TempDir,
    opts: RedisOptions,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server set up by `opts` and waits (at most 10 s) until it
    /// answers PING. `None` after a loud skip when `redis-server` (or, for
    /// TLS, `openssl`) is not installed; a failure under `CI=true`.
    pub fn start(opts: RedisOptions) -> Option<RedisServer> {
        let program = require_tool("redis-server", "redis-server")?;
        if opts.tls {
            require_tool("openssl", "openssl")?;
        }
        let ip = opts.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = RedisServer {
            child: None,
            program,
            dir,
            opts,
            addr: SocketAddr::new(ip, port),
        };
        if server.opts.tls {
            make_certificates(server.dir.path(), ip);
        }
        server.write_config();
        server.launch();
        Some(server)
    }

    /// `redis://IP:PORT/0` (`rediss://` with TLS), without user.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}/0", self.addr)
    }

    /// Like [`RedisServer::url`], with `user` in it.
    pub fn url_as(&self, user: &str) -> String {
        self.url().replacen("://", &format!("://{user}@"), 1)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed its certificate (TLS only).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.crt")).expect("ca.crt (a TLS server?)")
    }

    /// Runs one command as the default user and returns its answer.
    pub fn command(&self, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let mut conn = self.admin().expect("connect to redis-server");
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGSTOP: connections stay open and nothing answers,
    /// as with a hung server or a network that drops everything.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, which: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        run_ok("kill", &[which, &pid.to_string()]);
    }

    /// Kills it if it runs, then starts it again on the same port and
    /// directory: it comes back with what its append-only file holds
    /// ([`RedisOptions::aof`]), or empty without one.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Kills it if it runs, removes its data, and starts it again on the
    /// same port: an engine that lost everything.
    pub fn restart_empty(&mut self) {
        self.kill9();
        for data in ["appendonlydir", "dump.rdb"] {
            let path = self.dir.path().join(data);
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        self.launch();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let (ip, port) = (self.addr.ip(), self.addr.port());
        let mut conf = format!(
            "bind {ip}\nsave \"\"\ndir \"{d}\"\nlogfile \"{d}/redis.log\"\ndaemonize no\n\
             appendonly {}\nappendfsync always\n",
            if self.opts.aof { "yes" } else { "no" }
        );
        if self.opts.tls {
            conf.push_str(&format!(
                "port 0\ntls-port {port}\ntls-cert-file \"{d}/server.crt\"\n\
                 tls-key-file \"{d}/server.key\"\ntls-ca-cert-file \"{d}/ca.crt\"\n\
                 tls-auth-clients no\n"
            ));
        } else {
            conf.push_str(&format!("port {port}\n"));
        }
        if let Some(pw) = &self.opts.password {
            conf.push_str(&format!("requirepass \"{pw}\"\n"));
        }
        for user in &self.opts.users {
            conf.push_str(&format!("user {user}\n"));
        }
        std::fs::write(self.dir.path().join("redis.conf"), conf).expect("redis.conf");
    }

    fn launch(&mut self) {
        let child = Command::new(&self.program)
            .arg(self.dir.path().join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls with PING until it answers PONG (at most 10 s; a server still
    /// loading its data answers LOADING, and is waited for).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited early ({status}):\n{}", self.log());
            }
            let pong = self
                .admin()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok_and(|p| p == "PONG") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer PING within 10 s:\n{}",
            self.log()
        );
    }

    /// A plain (blocking) connection as the default user.
    fn admin(&self) -> redis::RedisResult<redis::Connection> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url())?;
        if let Some(pw) = &self.opts.password {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
        let client = if self.opts.tls {
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(self.ca_pem()),
                },
            )?
        } else {
            redis::Client::open(info)?
        };
        client.get_connection_with_timeout(Duration::from_secs(2))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL works on a frozen server too.
        self.kill9();
    }
}

/// A CA (`ca.crt`) and a server certificate for `ip` signed by it
/// (`server.crt`, `server.key`) in `dir`, by the openssl command.
fn make_certificates(dir: &Path, ip: IpAddr) {
    let p = |name: &str| dir.join(name).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=nolist test CA"];
    ca.extend(ec);
    let (ca_key, ca_crt) = (p("ca.key"), p("ca.crt"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_crt]);
    ca.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run_ok("openssl", &ca);
    let (key, csr, crt) = (p("server.key"), p("server.csr"), p("server.crt"));
    let mut req = vec!["req", "-subj", "/CN=nolist test redis"];
    req.extend(ec);
    req.extend(["-keyout", &key, "-out", &csr]);
    run_ok("openssl", &req);
    let ext = p("server.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("server.ext");
    let serial = p("ca.srl");
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAserial",
            &serial,
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
    // redis-server reads its key as whoever runs the test: keep it private.
    run_ok("chmod", &["600", &key, &ca_key]);
}
