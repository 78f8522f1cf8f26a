//! Every enforcement backend against its real tool: nftables, iptables +
//! ipset and fail2ban inside a network namespace that only the test's
//! thread (and the processes it starts) lives in, so the host's firewall is
//! never touched (without the namespace the tests do not run); the command
//! backend with small scripts. Each backend goes through the same
//! reconcile scenario: add, idempotence, stray and missing elements, a
//! wiped firewall, and real connections that are dropped or let through.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;

use crate::util;
use crate::util::{Connect, connect_from, require_root, require_tool, run_ok};
use ipnet::IpNet;
use nolist::config::{ArgvTemplate, CommandSpec, Duration, Fail2banSpec};
use nolist::enforce::command::Commands;
use nolist::enforce::fail2ban::Fail2ban;
use nolist::enforce::ipset::Ipset;
use nolist::enforce::nft::Nft;
use nolist::enforce::{Enforcer, Target, reconcile};

fn target(net: &str, remaining: u64) -> Target {
    Target {
        net: net.parse().unwrap(),
        remaining,
    }
}

fn set(v: Vec<IpNet>) -> BTreeSet<String> {
    v.iter().map(ToString::to_string).collect()
}

fn strings(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// What the firewall holds, asked of the firewall itself (not of what the
/// backend believes).
fn fresh_read(backend: &mut dyn Enforcer) -> Vec<IpNet> {
    if let Some(cache) = backend.cache() {
        cache.forget();
    }
    backend.read().unwrap().unwrap()
}

/// The bans every scenario starts with.
fn desired() -> Vec<Target> {
    vec![
        target("198.18.0.9/32", 3600),
        target("198.18.5.0/24", 600),
        target("2001:db8::bad/128", 60),
    ]
}

const DESIRED: [&str; 3] = ["198.18.0.9/32", "198.18.5.0/24", "2001:db8::bad/128"];

/// How a backend's firewall is changed behind nolist's back.
struct OutOfBand<'a> {
    /// Adds 198.18.9.66 to the firewall.
    add_stray: &'a dyn Fn(),
    /// Removes 2001:db8::bad from the firewall.
    remove_one: &'a dyn Fn(),
    /// Wipes the firewall (a flush, a firewall reload, a restarted fail2ban).
    wipe: &'a dyn Fn(),
    /// A wipe takes nolist's part of the firewall with it (it is rebuilt).
    wipe_rebuilds: bool,
}

/// The shared scenario; in a namespace with a listener on 198.18.0.1:25,
/// `blocked` is what a banned source gets (dropped or refused).
fn scenario(backend: &mut dyn Enforcer, oob: &OutOfBand<'_>, traffic: Option<Connect>) {
    backend.check().unwrap();
    let report = reconcile(backend, &desired()).unwrap();
    assert_eq!((report.added, report.removed), (3, 0), "{report:?}");
    assert_eq!(set(fresh_read(backend)), strings(&DESIRED));
    let again = reconcile(backend, &desired()).unwrap();
    assert_eq!(
        (again.added, again.removed),
        (0, 0),
        "idempotent: {again:?}"
    );

    if let Some(blocked) = traffic {
        let decoy: SocketAddr = "198.18.0.1:25".parse().unwrap();
        let banned: IpAddr = "198.18.0.9".parse().unwrap();
        let in_banned_net: IpAddr = "198.18.5.77".parse().unwrap();
        let innocent: IpAddr = "198.18.0.50".parse().unwrap();
        assert_eq!(connect_from(banned, decoy), blocked, "banned host");
        assert_eq!(
            connect_from(in_banned_net, decoy),
            blocked,
            "banned network"
        );
        assert_eq!(
            connect_from(innocent, decoy),
            Connect::Open,
            "innocent host"
        );
    }

    (oob.add_stray)();
    (oob.remove_one)();
    let report = reconcile(backend, &desired()).unwrap();
    assert_eq!((report.added, report.removed), (1, 1), "{report:?}");
    assert_eq!(set(fresh_read(backend)), strings(&DESIRED));

    (oob.wipe)();
    let report = reconcile(backend, &desired()).unwrap();
    assert_eq!(report.rebuilt, oob.wipe_rebuilds, "{report:?}");
    assert_eq!(report.added, 3, "{report:?}");
    assert_eq!(set(fresh_read(backend)), strings(&DESIRED));
    if let Some(blocked) = traffic {
        let decoy: SocketAddr = "198.18.0.1:25".parse().unwrap();
        assert_eq!(
            connect_from("198.18.0.9".parse().unwrap(), decoy),
            blocked,
            "blocked again after the rebuild"
        );
    }

    // Lifting every ban empties the firewall.
    let report = reconcile(backend, &[]).unwrap();
    assert_eq!((report.added, report.removed), (0, 3), "{report:?}");
    assert!(fresh_read(backend).is_empty());
}

/// A backend that can tell how long the firewall holds each element renews
/// an extended ban in place (one transaction), instead of letting the
/// firewall drop it at the old timeout and adding it again.
fn renews_extended_bans(backend: &mut dyn Enforcer) {
    let host: IpNet = "198.18.0.9/32".parse().unwrap();
    let net: IpNet = "198.18.5.0/24".parse().unwrap();
    let short = [target("198.18.0.9/32", 600), target("198.18.5.0/24", 600)];
    reconcile(backend, &short).unwrap();
    let longer = [target("198.18.0.9/32", 7200), target("198.18.5.0/24", 5400)];
    let report = reconcile(backend, &longer).unwrap();
    assert_eq!(
        (report.added, report.removed, report.renewed),
        (0, 0, 2),
        "{report:?}"
    );
    // What the firewall itself now says.
    assert_eq!(
        set(fresh_read(backend)),
        strings(&["198.18.0.9/32", "198.18.5.0/24"])
    );
    let (h, n) = (
        backend.timeouts().unwrap().remaining(&host).unwrap(),
        backend.timeouts().unwrap().remaining(&net).unwrap(),
    );
    assert!(h > 7000 && h <= 7200, "host timeout {h}");
    assert!(n > 5200 && n <= 5400, "network timeout {n}");
    let again = reconcile(backend, &longer).unwrap();
    assert_eq!(again.renewed, 0, "renewed once: {again:?}");
    reconcile(backend, &[]).unwrap();
    assert!(fresh_read(backend).is_empty());
}

/// Enters a private namespace with the test addresses on `lo` and a
/// listener on the decoy address; `None` after a loud skip.
fn netns_with_listener(tools: &[(&str, &str)]) -> Option<TcpListener> {
    for (tool, package) in tools.iter().chain(&[("ip", "iproute2")]) {
        require_tool(tool, package)?;
    }
    if !require_root("a network namespace and a firewall") {
        return None;
    }
    util::enter_private_netns();
    for a in [
        "198.18.0.1/32",
        "198.18.0.9/32",
        "198.18.5.77/32",
        "198.18.0.50/32",
    ] {
        util::add_lo_address(a);
    }
    Some(TcpListener::bind("198.18.0.1:25").expect("listen on the decoy address"))
}

#[test]
fn nftables_backend_reconciles_and_drops() {
    let Some(_listener) = netns_with_listener(&[("nft", "nftables")]) else {
        return;
    };
    run_ok("nft", &["add", "table", "inet", "other"]);
    run_ok("nft", &["add", "chain", "inet", "other", "keep"]);
    let nft = |cmd: &str| {
        run_ok("nft", &cmd.split_whitespace().collect::<Vec<_>>());
    };
    // The ruleset generation moves with every transaction, anyone's.
    let g0 = nolist::enforce::netlink::generation().expect("netlink generation");
    nft("add chain inet other keep2");
    assert_eq!(
        nolist::enforce::netlink::generation().unwrap(),
        g0.wrapping_add(1)
    );
    // A table of the older layout (one interval set per family) is replaced.
    nft("add table inet nolist");
    nft("add set inet nolist banned4 { type ipv4_addr ; flags interval, timeout ; }");
    let mut backend = Nft::new(vec![25]);
    backend.check().unwrap();
    assert!(
        run_ok("nft", &["list", "table", "inet", "nolist"]).contains("set banned4_nets"),
        "recreated in the new layout"
    );
    scenario(
        &mut backend,
        &OutOfBand {
            add_stray: &|| nft("add element inet nolist banned4 { 198.18.9.66 timeout 60s }"),
            remove_one: &|| nft("delete element inet nolist banned6 { 2001:db8::bad }"),
            wipe: &|| nft("delete table inet nolist"),
            wipe_rebuilds: true,
        },
        Some(Connect::Dropped),
    );
    let ruleset = run_ok("nft", &["list", "table", "inet", "nolist"]);
    assert!(
        ruleset.contains("tcp dport 25 ct state new ip saddr @banned4 drop"),
        "{ruleset}"
    );

    // A flushed chain, and an element nolist did not write (an address in
    // the networks' set), are noticed and the table is recreated.
    reconcile(&mut backend, &desired()).unwrap();
    nft("flush chain inet nolist input");
    let report = reconcile(&mut backend, &desired()).unwrap();
    assert!(report.rebuilt, "{report:?}");
    assert_eq!(
        connect_from(
            "198.18.0.9".parse().unwrap(),
            "198.18.0.1:25".parse().unwrap()
        ),
        Connect::Dropped
    );
    nft("add element inet nolist banned4_nets { 198.18.9.77 timeout 60s }");
    let report = reconcile(&mut backend, &desired()).unwrap();
    assert!(report.rebuilt, "{report:?}");
    assert_eq!(set(fresh_read(&mut backend)), strings(&DESIRED));

    renews_extended_bans(&mut backend);

    // Bans expire in the kernel: a short one is gone after its timeout,
    // as the kernel itself says.
    reconcile(&mut backend, &[target("198.18.0.7/32", 1)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(fresh_read(&mut backend).is_empty());

    // Another table was never touched.
    assert!(run_ok("nft", &["list", "tables"]).contains("table inet other"));
}

#[test]
fn nftables_counts_refused_connections_in_refuse_mode() {
    let Some(listener) = netns_with_listener(&[("nft", "nftables")]) else {
        return;
    };
    // Refuse mode: nothing listens on the decoy.
    drop(listener);
    let decoy: SocketAddr = "198.18.0.1:25".parse().unwrap();
    let mut backend =
        Nft::new(vec![25]).with_evidence(vec![decoy], std::time::Duration::from_secs(600));
    backend.check().unwrap();
    let bot: IpAddr = "198.18.0.9".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(
            connect_from(bot, decoy),
            Connect::Refused,
            "a reset, never a timeout"
        );
    }
    assert_eq!(
        connect_from("198.18.0.50".parse().unwrap(), decoy),
        Connect::Refused
    );
    let mut seen = backend.evidence().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![(bot, 3), ("198.18.0.50".parse().unwrap(), 1)],
        "one count per connection attempt"
    );
    // A banned bot is dropped before it is counted.
    reconcile(&mut backend, &[target("198.18.0.9/32", 600)]).unwrap();
    assert_eq!(connect_from(bot, decoy), Connect::Dropped);
    let after: Vec<(IpAddr, u64)> = backend.evidence().unwrap();
    assert!(after.contains(&(bot, 3)), "{after:?}");
    // A wiped table comes back with the evidence rules.
    run_ok("nft", &["flush", "ruleset"]);
    let report = reconcile(&mut backend, &[target("198.18.0.9/32", 600)]).unwrap();
    assert!(report.rebuilt);
    assert_eq!(
        connect_from("198.18.0.50".parse().unwrap(), decoy),
        Connect::Refused
    );
    assert_eq!(
        backend.evidence().unwrap(),
        vec![("198.18.0.50".parse().unwrap(), 1)]
    );
}

#[test]
fn iptables_backend_reconciles_and_drops() {
    let Some(_listener) = netns_with_listener(&[
        ("ipset", "ipset"),
        ("iptables-save", "iptables"),
        ("ip6tables-restore", "iptables"),
    ]) else {
        return;
    };
    // Someone else's rule and set, which must survive.
    run_ok(
        "iptables",
        &["-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "ACCEPT"],
    );
    run_ok("ipset", &["create", "other", "hash:ip"]);
    let mut backend = Ipset::new(vec![25]);
    scenario(
        &mut backend,
        &OutOfBand {
            add_stray: &|| {
                run_ok("ipset", &["add", "nolist4", "198.18.9.66", "timeout", "60"]);
            },
            remove_one: &|| {
                run_ok("ipset", &["del", "nolist6", "2001:db8::bad"]);
            },
            // A firewall reload: every chain flushed and removed.
            wipe: &|| {
                for tool in ["iptables", "ip6tables"] {
                    run_ok(tool, &["-F"]);
                    run_ok(tool, &["-X"]);
                }
            },
            wipe_rebuilds: true,
        },
        Some(Connect::Dropped),
    );
    let rules = run_ok("iptables-save", &["-t", "filter"]);
    assert!(rules.contains("-A INPUT -j NOLIST"), "{rules}");
    assert_eq!(rules.matches("-A INPUT -j NOLIST").count(), 1, "{rules}");
    assert!(run_ok("ipset", &["list", "-n"]).contains("other"));
    renews_extended_bans(&mut backend);

    // Bans expire in the kernel.
    reconcile(&mut backend, &[target("198.18.0.7/32", 1)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(fresh_read(&mut backend).is_empty());
}

#[test]
fn fail2ban_backend_reconciles_through_a_real_jail() {
    let Some(_listener) = netns_with_listener(&[("iptables", "iptables")]) else {
        return;
    };
    let Some(server) = util::fail2ban::Fail2ban::start() else {
        return;
    };
    let mut backend = Fail2ban::new(&Fail2banSpec {
        jail: "nolist".into(),
        socket: Some(server.socket()),
        client: "fail2ban-client".into(),
    });
    let client = |args: &[&str]| {
        assert!(server.client(args).is_some(), "fail2ban-client {args:?}");
    };
    scenario(
        &mut backend,
        &OutOfBand {
            add_stray: &|| client(&["set", "nolist", "banip", "198.18.9.66"]),
            remove_one: &|| client(&["set", "nolist", "unbanip", "2001:db8::bad"]),
            wipe: &|| client(&["unban", "--all"]),
            wipe_rebuilds: false,
        },
        // fail2ban's iptables action rejects.
        Some(Connect::Refused),
    );
    // A jail that does not exist is a clear start-up error.
    let mut wrong = Fail2ban::new(&Fail2banSpec {
        jail: "nosuchjail".into(),
        socket: Some(server.socket()),
        client: "fail2ban-client".into(),
    });
    let e = wrong.check().unwrap_err().to_string();
    assert!(e.contains("nosuchjail"), "{e}");
}

/// Scripts that keep "the firewall" in a file, and log every call.
fn scripts(dir: &Path) -> (CommandSpec, CommandSpec) {
    let d = dir.display();
    let write = |name: &str, body: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -eu\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path.display().to_string()
    };
    let ban = write(
        "ban",
        &format!(
            "echo \"ban $1 $2\" >> {d}/calls\ngrep -qxF \"$1\" {d}/state 2>/dev/null || echo \"$1\" >> {d}/state"
        ),
    );
    let unban = write(
        "unban",
        &format!(
            "echo \"unban $1\" >> {d}/calls\ntouch {d}/state\ngrep -vxF \"$1\" {d}/state > {d}/state.new || true\nmv {d}/state.new {d}/state"
        ),
    );
    let list = write("list", &format!("touch {d}/state\ncat {d}/state"));
    let argv = |v: &[&str]| ArgvTemplate(v.iter().map(|s| (*s).to_owned()).collect());
    let with_list = CommandSpec {
        ban: argv(&[&ban, "{ip}", "{seconds}"]),
        unban: argv(&[&unban, "{ip}"]),
        list: Some(argv(&[&list])),
        timeout: Duration::from_secs(10),
    };
    let without = CommandSpec {
        list: None,
        ..with_list.clone()
    };
    (with_list, without)
}

fn calls(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
    std::fs::remove_file(dir.join("calls")).ok();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn command_backend_with_a_list_command_reconciles_like_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (spec, _) = scripts(&d);
    let state = d.join("state");
    let mut backend = Commands::new(spec);
    let edit = |f: &dyn Fn(String) -> String| {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        std::fs::write(&state, f(text)).unwrap();
    };
    scenario(
        &mut backend,
        &OutOfBand {
            add_stray: &|| edit(&|t| t + "198.18.9.66\n"),
            remove_one: &|| edit(&|t| t.replace("2001:db8::bad\n", "")),
            wipe: &|| edit(&|_| String::new()),
            wipe_rebuilds: false,
        },
        None,
    );
    let log = calls(&d);
    assert!(log.contains(&"ban 198.18.5.0/24 600".to_owned()), "{log:?}");
    assert!(log.contains(&"unban 198.18.9.66".to_owned()), "{log:?}");
    assert!(
        backend.write_only().is_none(),
        "read back, nothing to remember"
    );
}

#[test]
fn command_backend_without_list_remembers_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (_, spec) = scripts(&d);
    let mut first = Commands::new(spec.clone());
    first.check().unwrap();
    reconcile(
        &mut first,
        &[target("198.18.0.9/32", 600), target("198.18.0.10/32", 600)],
    )
    .unwrap();
    assert_eq!(calls(&d), ["ban 198.18.0.9 600", "ban 198.18.0.10 600"]);
    // Nothing changed: no call.
    let r = reconcile(
        &mut first,
        &[target("198.18.0.9/32", 590), target("198.18.0.10/32", 590)],
    )
    .unwrap();
    assert_eq!((r.added, r.removed), (0, 0));
    assert!(calls(&d).is_empty());
    let applied = first.write_only().unwrap().applied();

    // After a restart: what is still banned is applied again (the firewall
    // may have lost it), what expired meanwhile is lifted.
    let mut second = Commands::new(spec);
    second.write_only().unwrap().restore_applied(applied);
    reconcile(
        &mut second,
        &[target("198.18.0.10/32", 300), target("198.18.0.11/32", 300)],
    )
    .unwrap();
    let mut log = calls(&d);
    log.sort();
    assert_eq!(
        log,
        [
            "ban 198.18.0.10 300",
            "ban 198.18.0.11 300",
            "unban 198.18.0.9"
        ]
    );
    assert_eq!(
        set(second.write_only().unwrap().applied()),
        strings(&["198.18.0.10/32", "198.18.0.11/32"])
    );
}

#[test]
fn command_backend_failures_are_retried_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fail = d.join("fail");
    std::fs::write(
        &fail,
        "#!/bin/sh\necho \"no firewall for $1\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let argv = |v: &[&str]| ArgvTemplate(v.iter().map(|s| (*s).to_owned()).collect());
    let f = fail.display().to_string();
    let mut backend = Commands::new(CommandSpec {
        ban: argv(&[&f, "{ip}"]),
        unban: argv(&[&f, "{ip}"]),
        list: None,
        timeout: Duration::from_secs(10),
    });
    let e = reconcile(
        &mut backend,
        &[target("198.18.0.9/32", 60), target("198.18.0.10/32", 60)],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no firewall for 198.18.0.9"), "{e}");
    assert!(e.contains("1 more failed"), "{e}");
    // Nothing was applied, so the next reconcile tries both again.
    assert!(backend.write_only().unwrap().applied().is_empty());
    let e = reconcile(&mut backend, &[target("198.18.0.9/32", 60)]).unwrap_err();
    assert!(e.to_string().contains("198.18.0.9"), "{e}");
    // A program that is not there fails the start-up check.
    let mut missing = Commands::new(CommandSpec {
        ban: argv(&["/nonexistent/ban", "{ip}"]),
        unban: argv(&[&f, "{ip}"]),
        list: None,
        timeout: Duration::from_secs(10),
    });
    assert!(missing.check().is_err());
}

#[test]
fn netlink_writes_set_elements_in_one_transaction() {
    use nolist::enforce::netlink::{SetChange, Verb, apply};
    let Some(_listener) = netns_with_listener(&[("nft", "nftables")]) else {
        return;
    };
    Nft::new(vec![25]).check().unwrap();
    let hosts: Vec<(IpAddr, u64)> = (0..3000u32)
        .map(|i| (IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 600))
        .collect();
    let v6: IpAddr = "2001:db8::9".parse().unwrap();
    apply(
        "nolist",
        &[
            SetChange {
                set: "banned4",
                verb: Verb::Add,
                elements: hosts.clone().into(),
            },
            SetChange {
                set: "banned6",
                verb: Verb::Add,
                elements: vec![(v6, 60)].into(),
            },
        ],
    )
    .unwrap();
    let listed = |set: &str| {
        nolist::enforce::nft::parse_elements(
            run_ok("nft", &["-j", "list", "set", "inet", "nolist", set]).as_bytes(),
        )
        .unwrap()
    };
    let four = listed("banned4");
    assert_eq!(four.len(), 3000);
    assert!(
        four.iter()
            .all(|l| l.expires.is_some_and(|s| s > 590 && s <= 600)),
        "timeouts set"
    );
    assert_eq!(listed("banned6")[0].net.to_string(), "2001:db8::9/128");
    // A batch with one bad part changes nothing: the new element is not added.
    let err = apply(
        "nolist",
        &[
            SetChange {
                set: "banned4",
                verb: Verb::Add,
                elements: vec![("198.18.7.7".parse().unwrap(), 60)].into(),
            },
            SetChange {
                set: "banned4",
                verb: Verb::Delete,
                elements: vec![("198.18.99.99".parse().unwrap(), 0)].into(),
            },
        ],
    )
    .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(
        listed("banned4").len(),
        3000,
        "nothing of the failed batch applied"
    );
    // Deletes.
    apply(
        "nolist",
        &[SetChange {
            set: "banned4",
            verb: Verb::Delete,
            elements: hosts[..1000].into(),
        }],
    )
    .unwrap();
    assert_eq!(listed("banned4").len(), 2000);
    // Banned by netlink is dropped like banned by nft.
    apply(
        "nolist",
        &[SetChange {
            set: "banned4",
            verb: Verb::Add,
            elements: vec![("198.18.0.9".parse().unwrap(), 60)].into(),
        }],
    )
    .unwrap();
    assert_eq!(
        connect_from(
            "198.18.0.9".parse().unwrap(),
            "198.18.0.1:25".parse().unwrap()
        ),
        Connect::Dropped
    );
}
