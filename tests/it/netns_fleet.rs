//! The fleet across separate hosts, with real firewalls and real Postfix:
//! `fleet`'s scenarios with each node on a host of its own (a network
//! namespace, see `util::hosts`), joined by a bridge on which a private
//! `redis-server` listens (198.18.5.1, in the bridge's namespace, which is
//! also where the bots and senders connect from). Every node runs `nolist
//! run` with the nftables backend in its own namespace, so its bans are
//! read back from its own kernel (`nft list set inet nolist banned4`).
//!
//! - mxa (198.18.5.10): the decoy, `rcpt-450` on 198.18.0.1:25;
//! - mxb (198.18.5.20) and mxc (198.18.5.30): each a real Postfix on
//!   198.18.0.2:25 and 198.18.0.3:25 whose log its node follows; they are
//!   the fleet's `mta_nodes`;
//! - mxd (198.18.5.40): a node that joins late, with an empty store.
//!
//! The grace is 30 s, the least `run` accepts with a firewall, so each test
//! runs several scenarios in the same grace where they do not interfere,
//! and the tests run in parallel (each lab is separate).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::hosts::{CORE, Lab};
use crate::util::postfix::Postfix;
use crate::util::redis::{RedisOptions, RedisServer};
use crate::util::serve::Server;
use crate::util::{Connect, connect_from, require_tool, wait_until};

/// The bridge, and Redis on it.
const BRIDGE: &str = "198.18.5.1/24";
const REDIS_IP: &str = "198.18.5.1";
/// Where bots and senders connect from (on the bridge namespace's `lo`):
/// one /24 per role, since a delivery clears its whole /24 and a decoy hit
/// a minute after another of the same network can look like a retry.
/// 198.18.3.0/24 is mxa's allowed network.
const CLIENTS: [&str; 6] = [
    "198.18.1.0/24",
    "198.18.2.0/24",
    "198.18.3.0/24",
    "198.18.4.0/24",
    "198.18.6.0/24",
    "198.18.7.0/24",
];
const DECOY_IP: &str = "198.18.0.1";
const MX_B: &str = "198.18.0.2";
const MX_C: &str = "198.18.0.3";
const PASSWORD: &str = "fleet-secret";
/// `bans.grace`: the least `grace-too-short` allows with a firewall.
const GRACE: Duration = Duration::from_secs(30);
/// A ban is in every firewall at most this long after it is due (the
/// watermarks' second, a poll, a publish, a read and an `nft` transaction,
/// with a wide margin for a loaded machine).
const PROPAGATION: Duration = Duration::from_secs(15);
/// Every other wait for the fleet (a manual ban, a log line) is bounded by this.
const AGREE: Duration = Duration::from_secs(30);

/// What a node does besides sharing.
#[derive(Clone, Copy)]
enum Role {
    /// The decoy responder.
    Decoy,
    /// A real Postfix on this address, whose log the node follows.
    Mta(&'static str),
    /// Nothing: it only enforces the fleet's bans.
    Plain,
}

/// One node: its host, config and store, its Postfix, its process.
struct Node {
    name: &'static str,
    host: &'static str,
    cfg: PathBuf,
    state: PathBuf,
    role: Role,
    server: Option<Server>,
    mx: Option<Postfix>,
}

impl Node {
    /// The node's config; `maillog` for an MTA node.
    fn config(&self, url: &str, password: &std::path::Path, maillog: Option<PathBuf>) -> String {
        let responder = match self.role {
            Role::Decoy => {
                format!("{{ mode: rcpt-450, listen: [\"{DECOY_IP}:25\"], max_per_ip: 100 }}")
            }
            _ => "{ mode: refuse, listen: [] }".to_owned(),
        };
        let mta = maillog
            .map(|l| format!("mta: {{ logs: [\"{}\"], format: postfix }}\n", l.display()))
            .unwrap_or_default();
        // Only the decoy node and a host that joins later allow
        // 198.18.3.0/24.
        let allow = match self.role {
            Role::Decoy | Role::Plain => "  allow: { networks: [198.18.3.0/24] }\n",
            _ => "",
        };
        format!(
            "\
state_dir: {state}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [{DECOY_IP}] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [{MX_B}] }}
      - {{ host: mx03.example.org, preference: 30, ipv4: [{MX_C}] }}
responder: {responder}
{mta}bans:
  maxretry: 3
  findtime: 1h
  grace: {grace}s
  bantime: 1h
  ignore: []
  enforce: {{ backend: nftables, ports: [25] }}
{allow}fleet:
  url: {url}
  node: {name}
  password_file: {password}
  mta_nodes: [mxb, mxc]
  silent_after: 5s
",
            state = self.state.display(),
            grace = GRACE.as_secs(),
            name = self.name,
            password = password.display(),
        )
    }

    /// Starts `nolist run` inside the node's host and waits until it shares.
    fn start(&mut self, lab: &Lab) {
        let listeners = usize::from(matches!(self.role, Role::Decoy));
        let args = ["--state-dir", self.state.to_str().unwrap()];
        let server = lab
            .within(self.host, || {
                Server::start_with("run", &self.cfg, &args, listeners)
            })
            .unwrap_or_else(|log| panic!("{} did not start:\n{log}", self.name));
        assert!(
            server.wait_for_log("fleet: sharing evidence", AGREE),
            "{}",
            server.log_text()
        );
        self.server = Some(server);
    }

    /// SIGKILL, as a crash: its nftables table stays in its kernel.
    fn kill9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal("KILL");
            s.wait_exit(Duration::from_secs(10));
        }
    }

    fn server(&self) -> &Server {
        self.server
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name))
    }

    /// How many lines of its log have every one of `words`.
    fn logged(&self, words: &[&str]) -> usize {
        self.server()
            .log_text()
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .count()
    }

    /// The elements of its ban sets in its own kernel, sorted: addresses
    /// (`banned4`) and networks (`banned4_nets`).
    fn firewall(&self, lab: &Lab) -> Vec<String> {
        let mut all = self.set(lab, "banned4");
        all.extend(self.set(lab, "banned4_nets"));
        all.sort();
        all
    }

    /// The elements of one of its ban sets (`nft -j list set` inside its
    /// host), as firewall tools write them.
    fn set(&self, lab: &Lab, set: &str) -> Vec<String> {
        let out = lab.exec(
            self.host,
            "nft",
            &["-j", "list", "set", "inet", "nolist", set],
        );
        // No table yet: nothing enforced.
        nolist::enforce::nft::parse_set(&out.stdout)
            .unwrap_or_default()
            .iter()
            .map(nolist::enforce::element)
            .collect()
    }

    /// `nolist bans -c CFG ARGS` inside the node's host.
    fn bans(&self, lab: &Lab, args: &[&str]) {
        let mut all = vec!["bans", "-c", self.cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = lab.exec(self.host, env!("CARGO_BIN_EXE_nolist"), &all);
        assert!(
            out.status.success(),
            "nolist {all:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cursor `nolist status` reports for the node, if it has one.
    fn cursor(&self, lab: &Lab) -> Option<String> {
        let cfg = self.cfg.to_str().unwrap();
        let out = lab.exec(
            self.host,
            env!("CARGO_BIN_EXE_nolist"),
            &["status", "-c", cfg, "--format", "json"],
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        status["fleet"]["cursor"].as_str().map(str::to_owned)
    }

    fn log_text(&self) -> String {
        let run = self
            .server
            .as_ref()
            .map_or_else(|| "(not running)".into(), Server::log_text);
        match &self.mx {
            Some(mx) => format!("{run}\n--- {} postfix ---\n{}", self.name, mx.log()),
            None => run,
        }
    }
}

/// The fleet on its hosts. Fields drop in order: the nodes (and their
/// Postfix), Redis, the files, and last the hosts themselves.
struct Fleet {
    nodes: Vec<Node>,
    redis: RedisServer,
    dir: tempfile::TempDir,
    lab: Lab,
}

impl Fleet {
    /// A lab with Redis on the bridge and mxa, mxb and mxc started.
    fn start(opts: RedisOptions) -> Option<Fleet> {
        for (tool, package) in [("nft", "nftables"), ("swaks", "swaks")] {
            require_tool(tool, package)?;
        }
        let lab = Lab::new(BRIDGE, &CLIENTS)?;
        // Off loopback, Redis serves only clients that authenticate.
        let redis = RedisServer::start(RedisOptions {
            bind: Some(REDIS_IP.parse().unwrap()),
            password: Some(PASSWORD.into()),
            ..opts
        })?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.password"), format!("{PASSWORD}\n")).unwrap();
        let mut fleet = Fleet {
            nodes: Vec::new(),
            redis,
            dir,
            lab,
        };
        fleet.add("mxa", "a", "198.18.5.10", Role::Decoy)?;
        fleet.add("mxb", "b", "198.18.5.20", Role::Mta(MX_B))?;
        fleet.add("mxc", "c", "198.18.5.30", Role::Mta(MX_C))?;
        Some(fleet)
    }

    /// A new host with a node on it (and its Postfix), started.
    fn add(
        &mut self,
        name: &'static str,
        host: &'static str,
        addr: &str,
        role: Role,
    ) -> Option<()> {
        let services = match role {
            Role::Decoy => vec![DECOY_IP],
            Role::Mta(mx) => vec![mx],
            Role::Plain => vec![],
        };
        self.lab.add_host(host, addr, &services);
        let mut node = Node {
            name,
            host,
            cfg: self.dir.path().join(format!("{name}.yaml")),
            state: self.dir.path().join(format!("{name}.state")),
            role,
            server: None,
            mx: None,
        };
        if let Role::Mta(mx) = role {
            let at = SocketAddr::new(mx.parse().unwrap(), 25);
            node.mx = Some(
                self.lab
                    .within(host, || Postfix::start_real_mx(at, "example.org"))?,
            );
        }
        let maillog = node.mx.as_ref().map(Postfix::maillog);
        let password = self.dir.path().join("fleet.password");
        std::fs::write(
            &node.cfg,
            node.config(&self.redis.url(), &password, maillog),
        )
        .unwrap();
        node.start(&self.lab);
        self.nodes.push(node);
        // An empty store: it follows the log once it has read the state.
        self.wait_logged(name, &["bootstrapped from the compacted state"], 0);
        Some(())
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// Every node's log (and its Postfix's), then Redis's.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} ---\n{}\n", n.name, n.log_text()));
        }
        out + "--- redis ---\n" + &self.redis.log()
    }

    /// Every node's firewall, by name.
    fn firewalls(&self) -> Vec<(&'static str, Vec<String>)> {
        self.nodes
            .iter()
            .map(|n| (n.name, n.firewall(&self.lab)))
            .collect()
    }

    /// Waits until `target` is in the firewall of every node in `names`;
    /// returns, for each, how long after `since` it was first seen there.
    fn wait_enforced(&self, target: &str, names: &[&str], since: Instant) -> Vec<Duration> {
        let set = if target.contains('/') {
            "banned4_nets"
        } else {
            "banned4"
        };
        let mut seen: Vec<Option<Duration>> = vec![None; names.len()];
        wait_until(
            &format!("{target} in the firewalls of {names:?}"),
            GRACE + PROPAGATION + AGREE,
            || {
                for (name, when) in names.iter().zip(seen.iter_mut()) {
                    if when.is_none() {
                        let node = self.nodes.iter().find(|n| n.name == *name).unwrap();
                        if node.set(&self.lab, set).iter().any(|e| e == target) {
                            *when = Some(since.elapsed());
                        }
                    }
                }
                seen.iter().all(Option::is_some)
            },
            &|| self.logs(),
        );
        seen.into_iter().map(Option::unwrap).collect()
    }

    /// Waits until more than `before` lines of `name`'s log have every
    /// one of `words`.
    fn wait_logged(&self, name: &str, words: &[&str], before: usize) {
        let node = self.nodes.iter().find(|n| n.name == name).unwrap();
        wait_until(
            &format!("{words:?} in the log of {name}"),
            AGREE,
            || node.logged(words) > before,
            &|| self.logs(),
        );
    }

    /// Fails unless no firewall holds `target`.
    fn assert_enforced_nowhere(&self, target: &str) {
        for (name, firewall) in self.firewalls() {
            assert!(
                !firewall.iter().any(|e| e == target),
                "{target} is banned on {name}:\n{}",
                self.logs()
            );
        }
    }

    /// Fails unless every node's firewall holds exactly what `expected`
    /// gives it.
    fn assert_firewalls(&self, expected: impl Fn(&str) -> Vec<&'static str>) {
        for (name, firewall) in self.firewalls() {
            let mut want: Vec<String> = expected(name).into_iter().map(str::to_owned).collect();
            want.sort();
            assert_eq!(firewall, want, "{name}'s firewall:\n{}", self.logs());
        }
    }

    /// Fails unless a connection from `source` (an address of the bridge's
    /// namespace) to `ip:25` gets `want`: the firewalls really drop.
    fn assert_connect(&self, source: &str, ip: &str, want: Connect) {
        let target = SocketAddr::new(ip.parse().unwrap(), 25);
        let got = connect_from(source.parse().unwrap(), target);
        assert_eq!(got, want, "{source} -> {target}:\n{}", self.logs());
    }

    /// A whole message from `source` through the real MX at `mx` (swaks,
    /// from the bridge's namespace), accepted.
    fn deliver(&self, source: &str, mx: &str) {
        let out = self.lab.exec(
            CORE,
            "swaks",
            &[
                "--server",
                &format!("{mx}:25"),
                "--local-interface",
                source,
                "--from",
                "someone@sender.example",
                "--to",
                "user@example.org",
                "--timeout",
                "5",
            ],
        );
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(
            transcript.contains("<-  250 2.0.0 Ok: queued"),
            "{transcript}\n{}",
            self.logs()
        );
    }

    /// SIGTERM to every running node: each exits 0 (no crash along the way).
    fn stop(&mut self) {
        let logs = self.logs();
        for n in &mut self.nodes {
            if let Some(mut s) = n.server.take() {
                s.signal("TERM");
                assert_eq!(
                    s.wait_exit(Duration::from_secs(20)),
                    Some(0),
                    "{} did not stop cleanly:\n{logs}",
                    n.name
                );
            }
        }
    }
}

/// One decoy session from `source` (an address of the bridge's namespace,
/// where the test's thread is): banner, EHLO, MAIL, RCPT (answered 450),
/// QUIT. The envelope differs per source, so that no hit looks like
/// another client's retry.
fn hit(source: &str) {
    let ip: IpAddr = source.parse().unwrap();
    let decoy = SocketAddr::new(DECOY_IP.parse().unwrap(), 25);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    s.connect_timeout(&decoy.into(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{source} -> decoy: {e}"));
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = source.replace('.', "-");
    s.write_all(
        format!(
            "EHLO bot.example\r\nMAIL FROM:<{local}@bot.example>\r\nRCPT TO:<u@example.org>\r\nQUIT\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.contains("\r\n450"), "the decoy answered {reply:?}");
}

fn hits(source: &str, n: usize) {
    for _ in 0..n {
        hit(source);
    }
}

fn secs(d: &[Duration]) -> Vec<String> {
    d.iter()
        .map(|d| format!("{:.2}s", d.as_secs_f64()))
        .collect()
}

/// Scenarios 1, 2, 6 and 7 of the issue, in one grace: hostile entries in
/// the shared log change no firewall; a bot is banned in every firewall
/// within the grace and a measured propagation; a sender that delivered
/// through mxb's Postfix is banned nowhere; manual bans made on mxc reach
/// the others, except where mxa's allow list refuses them.
#[test]
fn a_bot_is_dropped_by_every_host_a_sender_by_none_and_manual_bans_travel() {
    let Some(mut f) = Fleet::start(RedisOptions::default()) else {
        return;
    };
    // 7: bad input from the engine, before anything else is in it.
    let huge = format!(
        r#"{{"v":1,"node":"evil","seq":1,"kind":"hit","ip":"{}","at":1,"seen":"network"}}"#,
        "9".repeat(100_000)
    );
    for payload in [
        "not json",
        r#"{"v":9,"node":"evil","seq":1,"kind":"ban","target":"198.18.1.8/32","until":4102444800,"source":"engine"}"#,
        r#"{"v":1,"node":"evil","seq":2,"kind":"ban","target":"0.0.0.0/0","until":4102444800,"source":"manual"}"#,
        r#"{"v":1,"node":"evil","seq":3,"kind":"ban","target":"127.0.0.1/32","until":4102444800,"source":"engine"}"#,
        r#"{"v":1,"node":"evil","seq":4,"kind":"ban","target":"198.18.1.8/32","until":99999999999,"source":"engine"}"#,
        r#"{"v":1,"node":"evil","seq":5,"kind":"unban","target":"10.0.0.0/4"}"#,
        huge.as_str(),
    ] {
        f.redis
            .command(&["XADD", "{nolist}:events", "*", "p", payload]);
    }
    f.redis
        .command(&["XADD", "{nolist}:events", "*", "w", "soon", "n", "mxb"]);
    f.redis
        .command(&["XADD", "{nolist}:events", "*", "junk", "1"]);

    // 2: a real sender delivers through mxb's Postfix, then hits the decoy.
    f.deliver("198.18.2.7", MX_B);
    hits("198.18.2.7", 3);
    // 1: a bot.
    let bot_started = Instant::now();
    hits("198.18.1.9", 3);
    // 6: by hand on mxc, a network, and an address of mxa's allowed network.
    let mxc = &f.nodes[2];
    mxc.bans(&f.lab, &["add", "203.0.113.0/24", "--for", "1h"]);
    mxc.bans(&f.lab, &["add", "198.18.3.7", "--for", "1h"]);
    f.wait_enforced("203.0.113.0/24", &["mxa", "mxb", "mxc"], Instant::now());
    f.wait_enforced("198.18.3.7", &["mxb", "mxc"], Instant::now());
    f.wait_logged("mxa", &["refused a ban", "198.18.3.7"], 0);
    // The hostile entries came before the manual bans in the one log: every
    // node has read past them, logged them, and enforced none.
    for name in ["mxa", "mxb", "mxc"] {
        for reason in ["malformed", "version", "invalid", "too_large"] {
            let reason = format!("reason=\"{reason}\"");
            f.wait_logged(name, &["skipped an entry of the shared log", &reason], 0);
        }
    }
    f.assert_firewalls(|name| match name {
        "mxa" => vec!["203.0.113.0/24"],
        _ => vec!["198.18.3.7", "203.0.113.0/24"],
    });

    // 1: the bot, in every firewall, not before its grace.
    let seen = f.wait_enforced("198.18.1.9", &["mxa", "mxb", "mxc"], bot_started);
    let first = *seen.iter().min().unwrap();
    let last = *seen.iter().max().unwrap();
    eprintln!(
        "netns_fleet: the bot reached the firewalls of mxa, mxb, mxc {:?} after its first hit \
         (grace {}s): {:.2}s after it was due, {:.2}s from the first firewall to the last",
        secs(&seen),
        GRACE.as_secs(),
        last.saturating_sub(GRACE).as_secs_f64(),
        (last - first).as_secs_f64(),
    );
    // Times are whole seconds: a judgement can come up to 1 s early.
    assert!(
        first + Duration::from_secs(1) >= GRACE,
        "banned before its grace: {:?}\n{}",
        secs(&seen),
        f.logs()
    );
    assert!(
        last <= GRACE + PROPAGATION,
        "propagation too slow: {:?}",
        secs(&seen)
    );
    // The firewalls really drop it: at the decoy and at the real MX.
    f.assert_connect("198.18.1.9", DECOY_IP, Connect::Dropped);
    f.assert_connect("198.18.1.9", MX_B, Connect::Dropped);

    // 2: the sender's judgement was due before the bot's: never banned.
    std::thread::sleep(Duration::from_secs(3));
    f.assert_enforced_nowhere("198.18.2.7");
    f.assert_connect("198.18.2.7", MX_B, Connect::Open);
    // 6: mxa refused the allowed network's ban; mxb and mxc drop it.
    f.assert_connect("198.18.3.7", DECOY_IP, Connect::Open);
    f.assert_connect("198.18.3.7", MX_C, Connect::Dropped);
    // Exactly these, nothing of the hostile entries.
    f.assert_firewalls(|name| match name {
        "mxa" => vec!["198.18.1.9", "203.0.113.0/24"],
        _ => vec!["198.18.1.9", "198.18.3.7", "203.0.113.0/24"],
    });
    f.stop();
}

/// Scenarios 3 and 5, and the issue's lagging log: mxb cut off the bridge
/// and mxc killed with SIGKILL while a bot hits mxa: no ban anywhere. mxc
/// comes back and reads on from its cursor (a manual ban made meanwhile
/// reaches its firewall), and still no ban while mxb's watermark is
/// missing; once mxb is back the ban follows everywhere. A node that joins
/// then, with an empty store, bootstraps from the compacted state and
/// enforces every ban in force. Last, mxb's node lags behind its Postfix's
/// log (stopped with SIGSTOP) while a sender delivers through that Postfix
/// and then hits the decoy: nobody bans before mxb has read the delivery,
/// after which the bot that hit meanwhile is banned and the sender is not.
#[test]
fn an_mta_host_cut_off_crashed_or_lagging_holds_bans_back_and_a_new_host_gets_them_all() {
    let Some(mut f) = Fleet::start(RedisOptions::default()) else {
        return;
    };
    let mxc_follows = || f.nodes[2].cursor(&f.lab).is_some();
    wait_until("mxc's cursor", AGREE, mxc_follows, &|| f.logs());

    let silent_b = f.nodes[0].logged(&["MTA node is silent", "mxb"]);
    let silent_c = f.nodes[0].logged(&["MTA node is silent", "mxc"]);
    f.lab.set_link("b", false);
    f.node("mxc").kill9();
    let cut = Instant::now();
    hits("198.18.1.4", 3);
    f.nodes[0].bans(&f.lab, &["add", "203.0.113.0/24", "--for", "1h"]);
    f.wait_logged("mxa", &["MTA node is silent", "mxb"], silent_b);
    f.wait_logged("mxa", &["MTA node is silent", "mxc"], silent_c);
    std::thread::sleep((GRACE + Duration::from_secs(5)).saturating_sub(cut.elapsed()));
    f.assert_enforced_nowhere("198.18.1.4");
    f.wait_enforced("203.0.113.0/24", &["mxa"], Instant::now());

    // mxc is back: it reads what it missed from its cursor, and its
    // watermark moves again; mxb's is still missing.
    let moves = f.nodes[0].logged(&["watermark moves again", "mxc"]);
    f.nodes[2].start(&f.lab);
    f.wait_enforced("203.0.113.0/24", &["mxc"], Instant::now());
    f.wait_logged("mxa", &["watermark moves again", "mxc"], moves);
    std::thread::sleep(Duration::from_secs(3));
    f.assert_enforced_nowhere("198.18.1.4");

    // mxb is back: its watermark passes, and the ban follows everywhere.
    f.lab.set_link("b", true);
    let seen = f.wait_enforced("198.18.1.4", &["mxa", "mxb", "mxc"], Instant::now());
    eprintln!(
        "netns_fleet: after mxb's return the bot reached mxa, mxb, mxc after {:?}",
        secs(&seen)
    );
    assert!(
        f.nodes[2].logged(&["bootstrapped"]) == 0,
        "mxc followed on from its cursor:\n{}",
        f.logs()
    );

    // A new host with an empty store. The compacted state also holds an
    // engine ban of an address the new host allows (as if a node that does
    // not allow it had banned it): refused there, never enforced, not even
    // ahead of its store.
    let until = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    f.redis
        .command(&["ZADD", "{nolist}:bans", &until, "198.18.3.7/32"]);
    f.add("mxd", "d", "198.18.5.40", Role::Plain).unwrap();
    f.wait_enforced("198.18.1.4", &["mxd"], Instant::now());
    f.wait_enforced("203.0.113.0/24", &["mxd"], Instant::now());
    assert!(
        f.nodes[3].logged(&["refused a ban", "198.18.3.7"]) > 0,
        "{}",
        f.logs()
    );
    f.assert_firewalls(|_| vec!["198.18.1.4", "203.0.113.0/24"]);

    // mxb's node lags behind its Postfix's log: a delivery waits unread.
    f.nodes[1].server().signal("STOP");
    let lag = Instant::now();
    f.deliver("198.18.2.9", MX_B);
    hits("198.18.2.9", 3);
    hits("198.18.6.5", 3);
    std::thread::sleep((GRACE + Duration::from_secs(5)).saturating_sub(lag.elapsed()));
    f.assert_enforced_nowhere("198.18.6.5");
    f.nodes[1].server().signal("CONT");
    f.wait_enforced("198.18.6.5", &["mxa", "mxb", "mxc", "mxd"], Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    f.assert_enforced_nowhere("198.18.2.9");
    f.assert_firewalls(|_| vec!["198.18.1.4", "198.18.6.5", "203.0.113.0/24"]);
    f.stop();
}

/// Scenario 4: Redis killed with SIGKILL in the middle of a burst of hits
/// and deliveries and started again with its data; then once more, empty,
/// right after a delivery. No delivering sender is banned anywhere, every
/// bot is, and the firewalls end up alike.
#[test]
fn the_engine_killed_in_a_burst_loses_no_delivery_and_the_firewalls_converge() {
    let Some(mut f) = Fleet::start(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let started = Instant::now();
    hits("198.18.2.1", 2);
    f.deliver("198.18.2.1", MX_C);
    hits("198.18.1.1", 1);
    f.redis.kill9();
    hits("198.18.2.1", 1);
    hits("198.18.1.1", 2);
    f.deliver("198.18.4.1", MX_B);
    hits("198.18.4.1", 3);
    hits("198.18.1.2", 3);
    f.redis.restart();
    let all = ["mxa", "mxb", "mxc"];
    let seen = f.wait_enforced("198.18.1.1", &all, started);
    f.wait_enforced("198.18.1.2", &all, started);
    eprintln!(
        "netns_fleet: with Redis killed in the burst, the first bot reached mxa, mxb, mxc {:?} after its first hit",
        secs(&seen)
    );

    // The engine loses everything right after a delivery through mxc.
    hits("198.18.6.3", 1);
    f.deliver("198.18.7.1", MX_C);
    f.redis.restart_empty();
    let emptied = Instant::now();
    hits("198.18.6.3", 2);
    hits("198.18.7.1", 3);
    f.wait_enforced("198.18.6.3", &all, emptied);
    std::thread::sleep(Duration::from_secs(3));
    for sender in ["198.18.2.1", "198.18.4.1", "198.18.7.1"] {
        f.assert_enforced_nowhere(sender);
    }
    f.assert_firewalls(|_| vec!["198.18.1.1", "198.18.1.2", "198.18.6.3"]);
    f.stop();
}
