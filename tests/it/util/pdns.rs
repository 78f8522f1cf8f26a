//! PowerDNS Authoritative for the tests: `pdns_server` with the gsqlite3
//! backend and its HTTP API, started by hand in the foreground on
//! 127.0.0.1 and free ports, with its own config directory, database and
//! socket directory in a temporary directory; zones are created with
//! `pdnsutil` before it starts. Stopped (SIGTERM, then SIGKILL) on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nsd::free_port;
use super::require_tool;

/// The gsqlite3 backend module (Debian package pdns-backend-sqlite3).
const BACKEND: &str = "/usr/lib/x86_64-linux-gnu/pdns/libgsqlite3backend.so";
/// Its schema.
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";

/// A running PowerDNS; dropping it stops the server.
pub struct Pdns {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it answers DNS (UDP and TCP).
    pub dns: SocketAddr,
    /// The webserver with the API.
    pub api: SocketAddr,
    /// The API key.
    pub key: String,
}

impl Pdns {
    /// Creates `zones` (with an SOA and one NS) and starts the server.
    /// `None` after a loud skip when PowerDNS is not installed (a failure
    /// under `CI=true`).
    pub fn start(zones: &[&str]) -> Option<Pdns> {
        let server = require_tool("pdns_server", "pdns-server")?;
        let pdnsutil = require_tool("pdnsutil", "pdns-server")?;
        // An absolute name: require_tool checks the file itself.
        require_tool(BACKEND, "pdns-backend-sqlite3")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let db = d.join("pdns.sqlite3");
        let schema = std::fs::read_to_string(SCHEMA).expect("gsqlite3 schema");
        rusqlite::Connection::open(&db)
            .and_then(|c| c.execute_batch(&schema))
            .expect("create the PowerDNS database");
        let ip = Ipv4Addr::LOCALHOST;
        let dns = SocketAddr::from((ip, free_port(&[ip])));
        let api = SocketAddr::from((ip, free_port(&[ip])));
        let key = "nolist-test-api-key".to_owned();
        let conf = format!(
            "launch=gsqlite3\ngsqlite3-database={db}\nlocal-address={ip}\nlocal-port={dport}\n\
             socket-dir={d}\napi=yes\napi-key={key}\nwebserver=yes\nwebserver-address={ip}\n\
             webserver-port={aport}\nwebserver-allow-from=127.0.0.0/8\ndaemon=no\nguardian=no\n\
             disable-syslog=yes\nzone-cache-refresh-interval=0\nsetuid=\nsetgid=\nloglevel=4\n",
            db = db.display(),
            dport = dns.port(),
            d = d.display(),
            aport = api.port(),
        );
        std::fs::write(d.join("pdns.conf"), conf).expect("pdns.conf");
        for zone in zones {
            let out = Command::new(&pdnsutil)
                .arg(format!("--config-dir={}", d.display()))
                .args(["create-zone", zone, "ns1.example.net"])
                .output()
                .expect("run pdnsutil");
            assert!(
                out.status.success(),
                "pdnsutil create-zone {zone}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let log = std::fs::File::create(d.join("pdns.log")).expect("log file");
        let child = Command::new(server)
            .arg(format!("--config-dir={}", d.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start pdns_server");
        let mut pdns = Pdns {
            child,
            dir,
            dns,
            api,
            key,
        };
        pdns.wait_ready();
        Some(pdns)
    }

    /// Polls the API until it answers 200 (at most 10 s).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pdns_server exited early ({status}):\n{}", self.log());
            }
            if let Some((200, _)) = self.try_request("GET", "/api/v1/servers/localhost", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "pdns_server's API did not answer within 10 s:\n{}",
            self.log()
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// One API request with the right key; panics when it cannot be sent.
    /// Returns the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer from the API"))
    }

    /// A minimal HTTP/1.1 exchange (`Connection: close`), enough for the API.
    fn try_request(&self, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.api, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.api,
            self.key,
            body.len()
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((status, body.to_owned()))
    }
}

impl Drop for Pdns {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
    }
}
