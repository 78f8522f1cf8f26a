//! Separate "hosts" on one machine: named network namespaces (`ip netns
//! add`), each with its own interfaces, routes and nftables ruleset, joined
//! by veth pairs to a bridge in a namespace of their own, `core`. Core is
//! the switch and the rest of the internet at once: it holds the bridge's
//! address (a server the hosts share, e.g. Redis, listens there) and the
//! clients' addresses (on its `lo`, whole /24s), and routes each host's
//! service addresses (decoy, MX) to the host. Every host's default route
//! goes to core, so the hosts answer every client and reach core's servers.
//!
//! Nothing is ever created in the namespace the test started in: every
//! `ip` command names its namespace (`ip -n`), and the test's thread moves
//! into core for the lab's life. A process starts inside a host either with
//! `ip netns exec` ([`Lab::exec`]) or with the calling thread moved into the
//! host while it spawns ([`Lab::within`]): the helpers that spawn their own
//! children (Postfix, `nolist run`) then need no change, since a process
//! inherits the namespace of the thread that starts it. Dropping the lab
//! moves the thread back and deletes every namespace, also on panic; the
//! namespaces of a test process that died without dropping its lab are
//! removed by the next lab (their names carry the process id).
//!
//! ```ignore
//! let Some(mut lab) = Lab::new("198.18.5.1/24", &["198.18.1.0/24"]) else { return };
//! lab.add_host("a", "198.18.5.10", &["198.18.0.1"]);
//! lab.within("a", || Postfix::start_real_mx(...));   // runs in a
//! lab.exec("a", "nft", &["list", "ruleset"]);        // a's ruleset
//! lab.set_link("a", false);                          // a is cut off
//! ```

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

use super::{require_root, require_tool};

/// The namespace of the switch, the shared server and the clients.
pub const CORE: &str = "core";
/// Where named namespaces are mounted (`ip netns`).
const NETNS_DIR: &str = "/run/netns";
/// Every lab's namespaces are named `nolist-PID-TAG-HOST`.
const NAME_PREFIX: &str = "nolist-";

/// A set of hosts; dropping it deletes them.
pub struct Lab {
    /// `nolist-PID-TAG`: unique per lab.
    prefix: String,
    /// The bridge's address on core, without its prefix length.
    gateway: String,
    /// Its prefix length (the hosts' addresses use the same).
    prefix_len: String,
    /// The namespaces made so far (host names), core first.
    hosts: Vec<String>,
    /// The thread's namespace before the lab, to go back to.
    home: File,
}

impl Lab {
    /// Makes core with the bridge at `bridge` (e.g. `198.18.5.1/24`) and
    /// `clients` (networks, e.g. `198.18.1.0/24`) on its `lo`, and moves
    /// the calling thread into it. `None` after a loud skip without `ip`
    /// or root (a failure under `CI=true`).
    pub fn new(bridge: &str, clients: &[&str]) -> Option<Lab> {
        require_tool("ip", "iproute2")?;
        if !require_root("network namespaces for separate hosts") {
            return None;
        }
        remove_stale();
        let (gateway, prefix_len) = bridge.split_once('/').expect("bridge as ADDR/LEN");
        let home = File::open("/proc/thread-self/ns/net").expect("the thread's namespace");
        let mut lab = Lab {
            prefix: format!("{NAME_PREFIX}{}-{:04x}", std::process::id(), tag()),
            gateway: gateway.to_owned(),
            prefix_len: prefix_len.to_owned(),
            hosts: Vec::new(),
            home,
        };
        lab.namespace(CORE);
        lab.ip(CORE, &["link", "add", "br0", "type", "bridge"]);
        lab.ip(CORE, &["addr", "add", bridge, "dev", "br0"]);
        lab.ip(CORE, &["link", "set", "br0", "up"]);
        for net in clients {
            lab.ip(CORE, &["addr", "add", net, "dev", "lo"]);
        }
        enter(&lab.handle(CORE));
        Some(lab)
    }

    /// The namespace name of `host`.
    pub fn name(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Adds `host` (a short name: its veth on core is `v-HOST`) with
    /// `addr` on the bridge and `services` (single addresses) on its `lo`,
    /// routed to it from core.
    pub fn add_host(&mut self, host: &str, addr: &str, services: &[&str]) {
        self.namespace(host);
        let veth = veth(host);
        let ns = self.name(host);
        self.ip(
            CORE,
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        self.ip(CORE, &["link", "set", &veth, "master", "br0", "up"]);
        let cidr = format!("{addr}/{}", self.prefix_len);
        self.ip(host, &["addr", "add", &cidr, "dev", "eth0"]);
        self.ip(host, &["link", "set", "eth0", "up"]);
        self.ip(host, &["route", "add", "default", "via", &self.gateway]);
        for service in services {
            self.ip(
                host,
                &["addr", "add", &format!("{service}/32"), "dev", "lo"],
            );
            self.ip(
                CORE,
                &["route", "add", &format!("{service}/32"), "via", addr],
            );
        }
    }

    /// Plugs `host`'s cable into the bridge, or pulls it (`up` false): the
    /// host keeps running but nothing reaches it or leaves it.
    pub fn set_link(&self, host: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        self.ip(CORE, &["link", "set", &veth(host), state]);
    }

    /// Runs `program args` inside `host` (`ip netns exec`) and returns its
    /// output.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name(host), program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {host} {program}: {e}"))
    }

    /// Runs `f` with the calling thread inside `host`: every process `f`
    /// starts lives there, and every socket it opens. The thread is back in
    /// core afterwards, also when `f` panics.
    pub fn within<T>(&self, host: &str, f: impl FnOnce() -> T) -> T {
        let back = BackTo(self.handle(CORE));
        enter(&self.handle(host));
        let out = f();
        drop(back);
        out
    }

    /// `ip netns add`, with `lo` up; the lab deletes it when dropped.
    fn namespace(&mut self, host: &str) {
        let ns = self.name(host);
        run_ip(&["netns", "add", &ns]);
        self.hosts.push(host.to_owned());
        self.ip(host, &["link", "set", "lo", "up"]);
    }

    /// `ip -n HOST args`; panics with ip's message on failure.
    fn ip(&self, host: &str, args: &[&str]) {
        let ns = self.name(host);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run_ip(&all);
    }

    fn handle(&self, host: &str) -> File {
        let path = format!("{NETNS_DIR}/{}", self.name(host));
        File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        enter(&self.home);
        for host in self.hosts.iter().rev() {
            delete(&self.name(host));
        }
    }
}

/// Moves the calling thread back into a namespace when dropped.
struct BackTo(File);

impl Drop for BackTo {
    fn drop(&mut self) {
        enter(&self.0);
    }
}

/// Moves the calling thread into the network namespace `ns` (a handle of
/// `/run/netns/NAME` or `/proc/.../ns/net`). Only this thread moves.
fn enter(ns: &File) {
    // SAFETY: setns on a valid descriptor changes only the calling
    // thread's network namespace.
    let ok = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
    assert!(
        ok,
        "setns: {}: the test must not go on in the wrong namespace",
        std::io::Error::last_os_error()
    );
}

/// The veth end of `host` on core.
fn veth(host: &str) -> String {
    let name = format!("v-{host}");
    assert!(
        name.len() <= 15,
        "an interface name has at most 15 bytes: {name}"
    );
    name
}

/// Sixteen bits that differ between labs of one process.
fn tag() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos as u16) ^ NEXT.fetch_add(0x9e37, Ordering::Relaxed)
}

fn run_ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delete(ns: &str) {
    let out = Command::new("ip").args(["netns", "del", ns]).output();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("warning: ip netns del {ns} failed: {out:?}");
    }
}

/// Deletes the namespaces of labs whose process is gone (killed before it
/// could drop them).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let pid = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            delete(&name);
        }
    }
}
