//! Shared helpers for the integration tests: running the built binary and
//! finding the system tools a test needs.

pub mod exim;
pub mod fail2ban;
pub mod hosts;
pub mod mountns;
#[cfg(feature = "providers")]
pub mod named;
pub mod nsd;
#[cfg(feature = "providers")]
pub mod pdns;
pub mod postfix;
pub mod redis;
pub mod rspamd;
pub mod senders;
pub mod serve;
pub mod sink;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A `nolist` command from the build under test, run from the project root.
pub fn nolist() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("nolist").expect("nolist binary");
    cmd.current_dir(root());
    cmd
}

/// Runs `nolist ARGS -c CONFIG` with `env` added; returns the exit code,
/// stdout and stderr.
#[cfg(feature = "providers")]
pub fn run_config(args: &[&str], config: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = nolist();
    cmd.args(args).arg("-c").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run nolist");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every `examples/*.yaml`, sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// Stops a server the test started: SIGTERM, then SIGKILL when it has not
/// exited within 5 s.
pub fn stop_child(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(std::process::Stdio::null())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The path of system tool `name`, or `None` after a loud skip message.
/// Under `CI=true` a missing tool is a test failure, never a skip.
pub fn require_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "`{name}` is not installed (Debian package {package}); run scripts/test as root to install it"
        );
        if in_ci() {
            panic!("CI=true: {msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }
    found
}

/// Whether this is a CI run (`CI` set to anything but empty, `0` or
/// `false`): then a missing prerequisite fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A loud skip for a missing prerequisite, or a failure under `CI=true`.
pub fn skip<T>(msg: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true: {msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// True when the test runs as root; otherwise a loud skip (a failure under
/// `CI=true`). `why` says what needs root.
pub fn require_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip::<()>(&format!("needs root ({why})"));
    false
}

/// Moves the calling thread (and the processes it starts from now on) into
/// a fresh network namespace with `lo` up, so nothing the test does can
/// touch the host's network or firewall. Panics if that fails: a test that
/// changes the firewall must never fall back to the host's.
pub fn enter_private_netns() {
    // SAFETY: unshare only changes the calling thread's namespaces.
    let ok = unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 };
    assert!(
        ok,
        "unshare(CLONE_NEWNET) failed: refusing to touch the host's network"
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run ip");
    assert!(up.success(), "ip link set lo up");
}

/// Adds `addr` (e.g. `198.18.0.9/32`) to `lo` in the current namespace.
pub fn add_lo_address(addr: &str) {
    let ok = Command::new("ip")
        .args(["addr", "add", addr, "dev", "lo"])
        .status()
        .expect("run ip")
        .success();
    assert!(ok, "ip addr add {addr} dev lo");
}

/// Runs `program args` and returns its stdout; panics with stderr on failure.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a TCP connection attempt from one local address to another got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed.
    Open,
    /// Refused (RST, or an ICMP reject).
    Refused,
    /// No answer within the timeout (dropped).
    Dropped,
}

/// Connects from `source` (an address on `lo`) to `target`, waiting at most 1.5 s.
pub fn connect_from(source: std::net::IpAddr, target: std::net::SocketAddr) -> Connect {
    let domain = socket2::Domain::for_address(target);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).expect("socket");
    s.bind(&std::net::SocketAddr::new(source, 0).into())
        .expect("bind source");
    match s.connect_timeout(&target.into(), std::time::Duration::from_millis(1500)) {
        Ok(()) => Connect::Open,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Connect::Refused,
        Err(e)
            if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            Connect::Dropped
        }
        Err(e) => panic!("connect {source} -> {target}: {e}"),
    }
}

/// `dig @SERVER -p PORT +time=2 +tries=1 ARGS…` with the `dig` at `tool`;
/// its stdout.
pub fn dig(tool: &Path, server: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new(tool)
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of [`dig`]'s output, sorted.
pub fn dig_lines(tool: &Path, server: std::net::SocketAddr, args: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = dig(tool, server, args).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Runs `named-checkzone ORIGIN FILE`; panics with its output unless it accepts the zone.
pub fn named_checkzone(tool: &Path, origin: &str, file: &Path) {
    let out = Command::new(tool)
        .args(["-k", "fail", "-n", "fail", origin])
        .arg(file)
        .output()
        .expect("run named-checkzone");
    assert!(
        out.status.success(),
        "named-checkzone rejected {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text of `examples/NAME`.
pub fn read_example(name: &str) -> String {
    std::fs::read_to_string(root().join("examples").join(name)).expect("example")
}

/// The fenced ```` ```json ```` blocks of a Markdown file, each with the
/// closest backticked `nolist …` command above it: documented runs whose
/// output the tests compare with the real one.
pub fn documented_runs(file: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(file).expect("doc file");
    let mut runs = Vec::new();
    let mut command = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(start) = line.find("`nolist ") {
            let rest = &line[start + 1..];
            command = rest.find('`').map(|end| rest[..end].to_owned());
        }
        if line.trim() == "```json" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            if let Some(cmd) = command.take() {
                runs.push((cmd, body.join("\n") + "\n"));
            }
        }
    }
    runs
}

/// The exit code and JSON stdout of a finished command; panics with both
/// streams when stdout is not JSON.
pub fn exit_and_json(out: &std::process::Output) -> (i32, serde_json::Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

/// Waits until `ok`, checking every 100 ms; fails the test with `what` and
/// `log()` when `timeout` passes first.
pub fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    mut ok: impl FnMut() -> bool,
    log: &dyn Fn() -> String,
) {
    let deadline = std::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The processes of this machine (numeric entries of `/proc`) for which
/// `keep` holds.
pub fn pids_where(keep: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| keep(p))
        .collect()
}

/// The targets banned in the store of `cfg` (`nolist bans list`); panics
/// when the command fails.
pub fn banned(cfg: &Path) -> Vec<String> {
    let out = nolist()
        .args([
            "bans",
            "-c",
            cfg.to_str().unwrap(),
            "list",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bans list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|b| b["target"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET path` from the metrics endpoint: (status line, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
        .expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample `name{labels}` (or `name` alone) in a scrape.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `nolist bans -c CFG ARGS`, which must succeed.
pub fn bans_ok(cfg: &Path, args: &[&str]) {
    let out = nolist()
        .arg("bans")
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bans {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One swaks dialogue from `source` to `server` (`ADDR:PORT`): up to RCPT,
/// or a whole message; at most `timeout` seconds per step. Its transcript.
pub fn swaks(source: &str, server: &str, whole_message: bool, timeout: u32) -> String {
    let mut cmd = Command::new("swaks");
    let timeout = timeout.to_string();
    cmd.args([
        "--server",
        server,
        "--local-interface",
        source,
        "--to",
        "user@example.org",
        "--from",
        "someone@sender.example",
        "--timeout",
        &timeout,
    ]);
    if !whole_message {
        cmd.args(["--quit-after", "RCPT"]);
    }
    let out = cmd.output().expect("run swaks");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to 5 s for the processes `pids` lists to leave (a daemon's
/// children outlive its main process by a moment), then kills what is left.
pub fn reap(pids: impl Fn() -> Vec<u32>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = pids();
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() >= deadline {
            for pid in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
