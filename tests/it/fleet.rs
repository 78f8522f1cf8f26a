//! The fleet with real components on one machine: a private `redis-server`
//! and several `nolist run` nodes in a private network namespace. Node
//! `mxa` runs the decoy responder (rcpt-450 on 198.18.0.1:25); `mxb` and
//! `mxc` follow MTA logs that the test writes (Postfix lines) and are the
//! fleet's MTA nodes. Enforcement is `none`: each node's bans are read back
//! from its own store (`nolist bans list`); the firewalls of separate hosts
//! are `netns_fleet`'s business.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::redis::{RedisOptions, RedisServer};
use crate::util::serve::Server;
use crate::util::{self, nolist, require_root, require_tool};

const DECOY: &str = "198.18.0.1:25";
const PASSWORD: &str = "fleet-secret";
/// Long enough for a node's poll, short enough for a test.
const GRACE: &str = "3s";
/// Every wait for the fleet to agree is bounded by this.
const AGREE: Duration = Duration::from_secs(40);

/// Enters a private network namespace with the addresses the tests use.
fn netns() -> Option<()> {
    require_tool("ip", "iproute2")?;
    if !require_root("a network namespace for the fleet's addresses") {
        return None;
    }
    util::enter_private_netns();
    let clients = (1..=9).flat_map(|i| {
        [
            format!("198.18.1.{i}"),
            format!("198.18.2.{i}"),
            format!("198.18.3.{i}"),
        ]
    });
    for a in ["198.18.0.1".to_owned(), "198.18.5.1".to_owned()]
        .into_iter()
        .chain(clients)
    {
        util::add_lo_address(&format!("{a}/32"));
    }
    Some(())
}

/// One node: its config, store and log, and its process while it runs.
struct Node {
    name: &'static str,
    cfg: PathBuf,
    state: PathBuf,
    log: Option<PathBuf>,
    server: Option<Server>,
}

impl Node {
    /// A node of the fleet at `url`; an MTA node follows `dir/NAME.log`.
    fn new(dir: &Path, name: &'static str, url: &str, mta: bool, extra: &str) -> Node {
        let log = mta.then(|| dir.join(format!("{name}.log")));
        if let Some(log) = &log {
            std::fs::write(log, "").unwrap();
        }
        let state = dir.join(format!("{name}.state"));
        let cfg = dir.join(format!("{name}.yaml"));
        let (mode, listen) = if name == "mxa" {
            ("rcpt-450", format!("[\"{DECOY}\"]"))
        } else {
            ("refuse", "[]".to_owned())
        };
        let logs = log
            .as_ref()
            .map(|l| format!("mta: {{ logs: [\"{}\"] }}\n", l.display()))
            .unwrap_or_default();
        std::fs::write(
            &cfg,
            format!(
                "\
state_dir: {state}
domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [198.18.0.1] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [198.18.0.2] }}
responder: {{ mode: {mode}, listen: {listen}, max_per_ip: 100 }}
{logs}bans:
  grace: {GRACE}
  enforce: {{ backend: none }}
  allow: {{ networks: [198.18.3.0/24] }}
fleet:
  url: {url}
  node: {name}
  password_file: {password}
  mta_nodes: [mxb, mxc]
  silent_after: 5s
{extra}",
                state = state.display(),
                password = dir.join("fleet.password").display(),
            ),
        )
        .unwrap();
        Node {
            name,
            cfg,
            state,
            log,
            server: None,
        }
    }

    fn start(&mut self) {
        let listeners = usize::from(self.name == "mxa");
        let args = ["--state-dir", self.state.to_str().unwrap()];
        let server = Server::start_with("run", &self.cfg, &args, listeners)
            .unwrap_or_else(|log| panic!("{} did not start:\n{log}", self.name));
        assert!(
            server.wait_for_log("fleet: sharing evidence", Duration::from_secs(10)),
            "{}",
            server.log_text()
        );
        self.server = Some(server);
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal("TERM");
            assert_eq!(
                s.wait_exit(Duration::from_secs(20)),
                Some(0),
                "{}",
                s.log_text()
            );
        }
    }

    /// SIGKILL, as a crash.
    fn kill9(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.signal("KILL");
            s.wait_exit(Duration::from_secs(10));
        }
    }

    fn log_text(&self) -> String {
        self.server
            .as_ref()
            .map_or_else(|| "(not running)".into(), Server::log_text)
    }

    /// The targets banned in this node's store.
    fn bans(&self) -> Vec<String> {
        util::banned(&self.cfg)
    }

    fn nolist_bans(&self, args: &[&str]) -> String {
        let out = nolist()
            .args(["bans", "-c", self.cfg.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Appends a delivery of `ip` through this node's real MTA, now.
    fn delivery(&self, ip: &str) {
        let stamp = nolist::watch::time::rfc3339(nolist::clock::unix_now());
        let line = format!(
            "{stamp} {} postfix/smtpd[10]: 3F2A1B2C3D: client=mail.example.net[{ip}]\n",
            self.name
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.log.as_ref().expect("an MTA node"))
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    }
}

/// The fleet: its engine and nodes.
struct Fleet {
    dir: tempfile::TempDir,
    redis: RedisServer,
    nodes: Vec<Node>,
}

impl Fleet {
    /// A started fleet of mxa (decoy), mxb and mxc (MTA nodes).
    fn start(opts: RedisOptions, extra: &str) -> Option<Fleet> {
        netns()?;
        // Off loopback, Redis serves only clients that authenticate.
        let redis = RedisServer::start(RedisOptions {
            bind: Some("198.18.5.1".parse().unwrap()),
            password: Some(PASSWORD.into()),
            ..opts
        })?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.password"), format!("{PASSWORD}\n")).unwrap();
        // With ACL users, the nodes are the `nolist` user; with TLS, they
        // trust the server's private CA.
        let url = if redis_users(&redis) {
            redis.url_as("nolist")
        } else {
            redis.url()
        };
        let mut extra = extra.to_owned();
        if redis.url().starts_with("rediss://") {
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, redis.ca_pem()).unwrap();
            extra.push_str(&format!("  ca_file: {}\n", ca.display()));
        }
        let extra = extra.as_str();
        let mut nodes: Vec<Node> = [("mxa", false), ("mxb", true), ("mxc", true)]
            .into_iter()
            .map(|(name, mta)| Node::new(dir.path(), name, &url, mta, extra))
            .collect();
        for n in &mut nodes {
            n.start();
        }
        Some(Fleet { dir, redis, nodes })
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!("--- {} ---\n{}\n", n.name, n.log_text()));
        }
        out + "--- redis ---\n" + &self.redis.log()
    }

    /// Waits until every running node has `target` banned (or, with
    /// `banned` false, none has).
    fn wait_everywhere(&self, target: &str, banned: bool) {
        util::wait_until(
            &format!("{target} banned={banned} on every node"),
            AGREE,
            || {
                self.nodes
                    .iter()
                    .filter(|n| n.server.is_some())
                    .all(|n| n.bans().contains(&target.to_owned()) == banned)
            },
            &|| self.logs(),
        );
    }

    fn banned_anywhere(&self, target: &str) -> bool {
        self.nodes
            .iter()
            .any(|n| n.bans().contains(&target.to_owned()))
    }
}

/// Whether the server has the `nolist` ACL user.
fn redis_users(redis: &RedisServer) -> bool {
    matches!(redis.command(&["ACL", "LIST"]), redis::Value::Array(users) if users.len() > 1)
}

/// One decoy session from `source`: banner, EHLO, MAIL, RCPT (answered
/// 450), QUIT.
fn hit(source: &str) {
    let source: IpAddr = source.parse().unwrap();
    let decoy: SocketAddr = DECOY.parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source, 0).into()).unwrap();
    s.connect_timeout(&decoy.into(), Duration::from_secs(2))
        .unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"EHLO bot.example\r\nMAIL FROM:<a@bot.example>\r\nRCPT TO:<u@example.org>\r\nQUIT\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.contains("450"), "the decoy answered {reply:?}");
}

fn hits(source: &str, n: usize) {
    for _ in 0..n {
        hit(source);
    }
}

/// Longer than grace plus a poll and a publish: a ban would have been made.
fn past_grace() {
    std::thread::sleep(Duration::from_secs(8));
}

#[test]
fn a_bot_is_banned_everywhere_a_delivering_sender_nowhere_and_manual_bans_travel() {
    let Some(mut fleet) = Fleet::start(RedisOptions::default(), "") else {
        return;
    };
    // A real sender: three decoy hits, then its network delivers through mxb.
    hits("198.18.2.7", 3);
    fleet.node("mxb").delivery("198.18.2.8");
    // A bot.
    hits("198.18.1.9", 3);
    fleet.wait_everywhere("198.18.1.9/32", true);
    past_grace();
    assert!(!fleet.banned_anywhere("198.18.2.7/32"), "{}", fleet.logs());

    // By hand on mxc: a network ban reaches the others; a ban of a network
    // mxa's (and everyone's) allow list covers is refused everywhere else.
    fleet
        .node("mxc")
        .nolist_bans(&["add", "203.0.113.0/24", "--for", "1h"]);
    fleet.wait_everywhere("203.0.113.0/24", true);
    fleet
        .node("mxc")
        .nolist_bans(&["add", "198.18.3.7", "--for", "1h", "--force"]);
    util::wait_until(
        "mxa to refuse the allowed network's ban",
        AGREE,
        || fleet.nodes[0].log_text().contains("refused a ban"),
        &|| fleet.logs(),
    );
    assert!(!fleet.nodes[0].bans().contains(&"198.18.3.7/32".to_owned()));
    // And an unban by hand on mxb lifts the bot everywhere.
    fleet.node("mxb").nolist_bans(&["remove", "198.18.1.9"]);
    fleet.wait_everywhere("198.18.1.9/32", false);

    // `status` shows the fleet.
    let out = nolist()
        .args([
            "status",
            "-c",
            fleet.nodes[0].cfg.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = status["fleet"]["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["node"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(nodes, ["mxa", "mxb", "mxc"], "{status:#}");
}

#[test]
fn a_silent_mta_node_holds_back_new_bans_until_it_is_back() {
    let Some(mut fleet) = Fleet::start(RedisOptions::default(), "") else {
        return;
    };
    fleet.node("mxb").stop();
    hits("198.18.1.4", 3);
    past_grace();
    assert!(!fleet.banned_anywhere("198.18.1.4/32"), "{}", fleet.logs());
    util::wait_until(
        "mxa to call mxb silent",
        AGREE,
        || fleet.nodes[0].log_text().contains("MTA node is silent"),
        &|| fleet.logs(),
    );
    fleet.node("mxb").start();
    fleet.wait_everywhere("198.18.1.4/32", true);
}

#[test]
fn the_engine_lost_in_a_burst_loses_no_delivery_and_the_fleet_converges() {
    let Some(mut fleet) = Fleet::start(
        RedisOptions {
            aof: true,
            ..RedisOptions::default()
        },
        "",
    ) else {
        return;
    };
    // A burst: a sender's hits and delivery, bots' hits; the engine is
    // killed in the middle and comes back with its data.
    hits("198.18.2.1", 2);
    fleet.node("mxc").delivery("198.18.2.2");
    fleet.redis.kill9();
    hits("198.18.2.1", 1);
    hits("198.18.1.1", 3);
    fleet.node("mxb").delivery("198.18.2.4");
    fleet.redis.restart();
    hits("198.18.2.4", 3);
    fleet.wait_everywhere("198.18.1.1/32", true);
    // Then it comes back with nothing at all: the nodes publish their
    // state again and bootstrap; a new bot is still banned everywhere.
    fleet.redis.restart_empty();
    hits("198.18.1.2", 3);
    fleet.wait_everywhere("198.18.1.2/32", true);
    fleet.wait_everywhere("198.18.1.1/32", true);
    past_grace();
    for sender in ["198.18.2.1/32", "198.18.2.4/32"] {
        assert!(
            !fleet.banned_anywhere(sender),
            "{sender}:\n{}",
            fleet.logs()
        );
    }
    // A node that joins now learns both bans from the compacted state.
    let url = fleet.redis.url();
    let mut fresh = Node::new(fleet.dir.path(), "mxd", &url, false, "");
    fresh.start();
    fleet.nodes.push(fresh);
    fleet.wait_everywhere("198.18.1.1/32", true);
    fleet.wait_everywhere("198.18.1.2/32", true);
}

#[test]
fn a_killed_node_catches_up_from_its_cursor() {
    let Some(mut fleet) = Fleet::start(RedisOptions::default(), "") else {
        return;
    };
    // Once every node follows the log (it has a cursor), mxc crashes.
    hits("198.18.1.5", 3);
    fleet.wait_everywhere("198.18.1.5/32", true);
    fleet.node("mxc").kill9();
    // mxc is an MTA node: without its watermark nobody bans the next bot.
    hits("198.18.1.6", 3);
    past_grace();
    assert!(!fleet.banned_anywhere("198.18.1.6/32"), "{}", fleet.logs());
    // Back, it reads on from its cursor: its watermark moves, and the ban
    // follows everywhere, mxc's own store included.
    fleet.node("mxc").start();
    fleet.wait_everywhere("198.18.1.6/32", true);
    assert!(
        !fleet.nodes[2].log_text().contains("bootstrapped"),
        "a restart follows on from the cursor:\n{}",
        fleet.nodes[2].log_text()
    );
}

#[test]
fn hostile_entries_in_the_shared_log_are_skipped_never_a_ban() {
    let Some(fleet) = Fleet::start(RedisOptions::default(), "") else {
        return;
    };
    let stream = "{nolist}:events";
    let huge = format!(
        r#"{{"v":1,"node":"evil","seq":1,"kind":"hit","ip":"{}"}}"#,
        "9".repeat(100_000)
    );
    for payload in [
        "not json",
        r#"{"v":9,"node":"evil","seq":1,"kind":"ban","target":"198.18.1.8/32","until":4102444800,"source":"engine"}"#,
        r#"{"v":1,"node":"evil","seq":2,"kind":"ban","target":"0.0.0.0/0","until":4102444800,"source":"manual"}"#,
        r#"{"v":1,"node":"evil","seq":3,"kind":"ban","target":"127.0.0.1/32","until":4102444800,"source":"engine"}"#,
        r#"{"v":1,"node":"evil","seq":4,"kind":"ban","target":"198.18.1.8/32","until":99999999999,"source":"engine"}"#,
        huge.as_str(),
    ] {
        fleet.redis.command(&["XADD", stream, "*", "p", payload]);
    }
    fleet
        .redis
        .command(&["XADD", stream, "*", "w", "soon", "n", "mxb"]);
    fleet.redis.command(&["XADD", stream, "*", "junk", "1"]);
    util::wait_until(
        "the nodes to skip the hostile entries",
        AGREE,
        || {
            fleet
                .nodes
                .iter()
                .all(|n| n.log_text().contains("skipped an entry of the shared log"))
        },
        &|| fleet.logs(),
    );
    // Still running, nothing banned, and a real bot is still banned.
    hits("198.18.1.3", 3);
    fleet.wait_everywhere("198.18.1.3/32", true);
    for n in &fleet.nodes {
        assert_eq!(n.bans(), ["198.18.1.3/32"], "{}", n.log_text());
    }
}

#[test]
fn tls_and_an_acl_user_limited_to_the_fleet_keys_carry_the_fleet() {
    let user = format!(
        "nolist on >{PASSWORD} resetkeys ~{{nolist}}:* resetchannels -@all {}",
        nolist::fleet::redis::ACL_COMMANDS
    );
    let Some(fleet) = Fleet::start(
        RedisOptions {
            tls: true,
            users: vec![user],
            ..RedisOptions::default()
        },
        "",
    ) else {
        return;
    };
    hits("198.18.1.2", 3);
    fleet.wait_everywhere("198.18.1.2/32", true);
    assert!(
        !fleet.logs().contains(PASSWORD),
        "the password is never printed"
    );
}
