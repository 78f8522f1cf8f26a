//! BIND 9 `named` as a zone's primary for the tests: started by hand in the
//! foreground (`named -g`) on 127.0.0.1 and a free port, with its own
//! config, zone files, journal and key (made by `tsig-keygen`) in a
//! temporary directory, recursion off and dynamic updates allowed for the
//! key only. Stopped (SIGTERM, then SIGKILL) on drop.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nsd::{free_port, soa_answered};
use super::require_tool;

/// The name of the key `named` accepts updates from.
pub const KEY_NAME: &str = "nolist-update";

/// A running `named`; dropping it stops the server.
pub struct Named {
    child: Child,
    dir: tempfile::TempDir,
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
}

/// Writes a new `hmac-sha256` key called `name` with `tsig-keygen` to
/// `path`. `None` after a loud skip when the tool is missing.
pub fn tsig_keygen(name: &str, path: &Path) -> Option<()> {
    let keygen = require_tool("tsig-keygen", "bind9-utils")?;
    let out = Command::new(keygen)
        .args(["-a", "hmac-sha256", name])
        .output()
        .expect("run tsig-keygen");
    assert!(
        out.status.success(),
        "tsig-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(path, out.stdout).expect("key file");
    Some(())
}

/// The base64 secret in a BIND key file.
pub fn key_secret(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("key file");
    let start = text.find("secret \"").expect("a secret") + "secret \"".len();
    text[start..]
        .split('"')
        .next()
        .expect("a quoted secret")
        .to_owned()
}

impl Named {
    /// Serves `zones` (origin without the dot, master-file text) as primary,
    /// updatable with the key it generates. `None` after a loud skip when
    /// BIND is not installed (a failure under `CI=true`).
    pub fn start(zones: &[(&str, &str)]) -> Option<Named> {
        let named = require_tool("named", "bind9")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        tsig_keygen(KEY_NAME, &d.join("update.key"))?;
        let ip = Ipv4Addr::LOCALHOST;
        let addr = SocketAddr::from((ip, free_port(&[ip])));
        let mut conf = format!(
            "options {{\n  directory \"{d}\";\n  listen-on port {port} {{ {ip}; }};\n  listen-on-v6 {{ none; }};\n  \
             pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n  \
             managed-keys-directory \"{d}\";\n  recursion no;\n  dnssec-validation no;\n  \
             allow-transfer {{ none; }};\n  notify no;\n}};\ncontrols {{ }};\ninclude \"{d}/update.key\";\n",
            d = d.display(),
            port = addr.port(),
        );
        for (origin, text) in zones {
            std::fs::write(d.join(format!("{origin}.zone")), text).expect("zone file");
            conf.push_str(&format!(
                "zone \"{origin}\" {{\n  type primary;\n  file \"{d}/{origin}.zone\";\n  \
                 allow-update {{ key \"{KEY_NAME}\"; }};\n}};\n",
                d = d.display()
            ));
        }
        let conf_path = d.join("named.conf");
        std::fs::write(&conf_path, conf).expect("named.conf");
        let log = std::fs::File::create(d.join("named.log")).expect("log file");
        let child = Command::new(named)
            .args(["-g", "-n", "1", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start named");
        let mut server = Named { child, dir, addr };
        server.wait_ready(zones.first().map_or(".", |z| z.0));
        Some(server)
    }

    /// Polls with a SOA query until `named` answers NOERROR (at most 15 s).
    fn wait_ready(&mut self, zone: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("named exited early ({status}):\n{}", self.log());
            }
            if soa_answered(self.addr, zone) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("named did not answer within 15 s:\n{}", self.log());
    }

    /// `named`'s log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The key file `named` accepts updates with.
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("update.key")
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
    }
}
