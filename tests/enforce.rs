//! The nftables backend against a real `nft`, inside a network namespace
//! that only this test's thread (and the processes it starts) lives in.
//! The host's ruleset is never touched: without the namespace, the test
//! does not run.

mod util;

use std::process::Command;

use ipnet::IpNet;
use nolist::enforce::Target;
use nolist::enforce::nft::Nft;

/// Moves the calling thread into a fresh network namespace.
fn private_netns() -> bool {
    // SAFETY: unshare only changes the calling thread's namespaces.
    unsafe { libc::unshare(libc::CLONE_NEWNET) == 0 }
}

fn nft(args: &str) -> String {
    let out = Command::new("nft")
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn target(net: &str, remaining: u64) -> Target {
    Target {
        net: net.parse().unwrap(),
        remaining,
    }
}

fn sorted(mut v: Vec<IpNet>) -> Vec<String> {
    v.sort();
    v.iter().map(ToString::to_string).collect()
}

#[test]
fn reconcile_adds_removes_rebuilds_and_touches_no_other_table() {
    if util::require_tool("nft", "nftables").is_none() {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root"
        );
        eprintln!("\n*** SKIPPED: needs root for a network namespace ***\n");
        return;
    }
    assert!(
        private_netns(),
        "unshare(CLONE_NEWNET) failed: refusing to touch the host ruleset"
    );
    nft("add table inet other");
    nft("add chain inet other keep");

    let backend = Nft::new(vec![25]);
    backend.check().unwrap();
    let desired = [
        target("203.0.113.9/32", 3600),
        target("198.51.100.0/24", 600),
        target("2001:db8::bad/128", 60),
    ];
    let report = backend.reconcile(&desired).unwrap();
    assert_eq!((report.added, report.removed), (3, 0));
    assert_eq!(
        sorted(backend.read().unwrap().unwrap()),
        ["198.51.100.0/24", "203.0.113.9/32", "2001:db8::bad/128"]
    );
    let ruleset = nft("list table inet nolist");
    assert!(
        ruleset.contains("tcp dport 25 ct state new ip saddr @banned4 drop"),
        "{ruleset}"
    );
    // Idempotent.
    assert_eq!(backend.reconcile(&desired).unwrap().added, 0);

    // A stray element is removed; a missing one re-added.
    nft("add element inet nolist banned4 { 192.0.2.66 timeout 60s }");
    nft("delete element inet nolist banned6 { 2001:db8::bad }");
    let report = backend.reconcile(&desired).unwrap();
    assert_eq!((report.added, report.removed), (1, 1));

    // A wiped table is rebuilt.
    nft("delete table inet nolist");
    let report = backend.reconcile(&desired).unwrap();
    assert!(report.rebuilt);
    assert_eq!(report.added, 3);

    // Bans expire in the kernel: a short one is gone after its timeout.
    backend.reconcile(&[target("203.0.113.7/32", 1)]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(sorted(backend.read().unwrap().unwrap()).is_empty());

    // Another table was never touched.
    assert!(nft("list tables").contains("table inet other"));
}
