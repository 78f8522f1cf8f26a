//! `nolist bans` and `nolist status` against a state store in a temp dir.

use crate::util;
use crate::util::{nolist, read_example};
use predicates::prelude::*;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = read_example("classic.yaml").replace(
        "state_dir: /var/lib/nolist",
        &format!("state_dir: {}", dir.join("state").display()),
    );
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn add_list_remove_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    nolist()
        .args([
            "bans",
            "-c",
            c,
            "add",
            "203.0.113.9",
            "--for",
            "2h",
            "--reason",
            "seen in the logs",
        ])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("banned 203.0.113.9/32 until "));
    nolist()
        .args(["bans", "-c", c, "add", "2001:db8:bad::/48"])
        .assert()
        .success();
    let out = nolist()
        .args(["bans", "-c", c, "list", "--format", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["203.0.113.9/32", "2001:db8:bad::/48"]);
    assert_eq!(list[0]["source"], "manual");
    assert_eq!(list[0]["reason"], "seen in the logs");
    nolist()
        .args(["bans", "-c", c, "remove", "203.0.113.9"])
        .assert()
        .success();
    nolist()
        .args(["bans", "-c", c, "remove", "203.0.113.9"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not banned"));
    let out = nolist()
        .args(["status", "-c", c, "--format", "json"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["active_bans"], 1);
    assert_eq!(status["decisions"], 3);
    assert_eq!(status["recent"][0]["action"], "unban");
}

#[test]
fn invalid_targets_and_missing_config_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    for bad in [
        "203.0.113.300",
        "198.51.100.7/24",
        "example.org",
        "10.0.0.0/33",
    ] {
        nolist()
            .args(["bans", "-c", c, "add", bad])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("invalid CIDR"));
    }
    for everything in ["0.0.0.0/0", "::/0"] {
        nolist()
            .args(["bans", "-c", c, "add", everything])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("every address"));
    }
    nolist()
        .args(["bans", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-c FILE"));
    nolist()
        .args(["bans", "-c", c, "add", "203.0.113.9", "--for", "soon"])
        .assert()
        .code(2);
}

#[test]
fn reading_a_missing_store_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    let state = dir.path().join("state");
    for args in [
        &["bans", "-c", c, "list"][..],
        &["bans", "-c", c, "remove", "203.0.113.9"],
        &["status", "-c", c],
    ] {
        nolist()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "no nolist store at {}",
                state.join("nolist.db").display()
            )));
    }
    assert!(!state.exists(), "a read created the state directory");

    // --state-dir points every command at another store, as `run --state-dir` does.
    let other = dir.path().join("other");
    let o = other.to_str().unwrap();
    nolist()
        .args(["bans", "-c", c, "--state-dir", o, "add", "203.0.113.9"])
        .assert()
        .success();
    nolist()
        .args(["bans", "-c", c, "list", "--state-dir", o])
        .assert()
        .success()
        .stdout(predicate::str::contains("203.0.113.9/32"));
    nolist()
        .args(["status", "-c", c, "--state-dir", o])
        .assert()
        .success()
        .stdout(predicate::str::contains("bans in force: 1 (1 manual)"));
    assert!(other.join("nolist.db").exists() && !state.exists());
}

/// A ban by hand, written through the library as the daemon would.
fn manual(target: &str, since: i64, until: i64) -> nolist::store::BanRecord {
    nolist::store::BanRecord {
        target: nolist::store::parse_target(target).unwrap(),
        since,
        until,
        reason: "by hand".into(),
        hits: 0,
        offence: 1,
        source: nolist::store::Source::Manual,
    }
}

/// Regression: `bans list` and `status` opened the store for writing, so a
/// user with read access got "attempt to write a readonly database" (and a
/// read-only mount failed). Here the user `nobody` reads a root-owned store
/// in a directory it cannot write: at rest, and while a writer holds it open
/// with commits still in its WAL.
#[test]
fn a_user_who_may_only_read_the_store_can_list_and_see_status() {
    use std::os::unix::fs::PermissionsExt;
    if !util::require_root("running nolist as the user nobody") {
        return;
    }
    let Some(setpriv) = util::require_tool("setpriv", "util-linux") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = dir.path().join("state");
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let as_nobody = |args: &[&str]| {
        std::process::Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nolist"))
            .args(args)
            .output()
            .unwrap()
    };
    let c = cfg.to_str().unwrap();
    nolist()
        .args(["bans", "-c", c, "add", "203.0.113.9"])
        .assert()
        .success();
    mode(dir.path(), 0o755);
    mode(&cfg, 0o644);
    mode(&state, 0o555);
    mode(&state.join("nolist.db"), 0o444);
    let check = |bans: usize| {
        let out = as_nobody(&["bans", "-c", c, "list", "--format", "json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "bans list: {stderr}");
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), bans, "{list}");
        let out = as_nobody(&["status", "-c", c]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("bans in force: {bans} ")),
            "{stdout}"
        );
    };
    check(1);
    let mut names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["nolist.db"], "a reader left files behind");
    // The daemon, say, has it open and committed a ban not yet checkpointed.
    mode(&state, 0o755);
    let mut writer = nolist::store::Store::open(&state).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    writer
        .add_ban(&manual("203.0.113.10", now, now + 3600))
        .unwrap();
    mode(&state, 0o555);
    assert!(state.join("nolist.db-wal").exists());
    check(2);
    mode(&state, 0o755);
}

/// Regression: `bans list` on a 0-byte `nolist.db` wrote a full schema into
/// it. Every command but `bans add` says it is no store and changes nothing.
#[test]
fn an_empty_store_file_is_no_store_and_stays_empty() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let file = state.join("nolist.db");
    std::fs::write(&file, b"").unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    for args in [
        &["bans", "-c", c, "list"][..],
        &["bans", "-c", c, "remove", "203.0.113.9"],
        &["status", "-c", c],
    ] {
        nolist()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(format!(
                "{} is not a nolist store",
                file.display()
            )));
    }
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.len(), meta.modified().unwrap()), (0, mtime));
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1, "side files");
}

/// Regression: `::ffff:1.2.3.4` was stored as an IPv6 /128, which no IPv4
/// client (the way the kernel and nolist see it) ever matches.
#[test]
fn ipv4_mapped_targets_are_banned_as_ipv4() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    for (mapped, stored) in [
        ("::ffff:203.0.113.9", "203.0.113.9/32"),
        ("::ffff:203.0.113.0/120", "203.0.113.0/24"),
    ] {
        nolist()
            .args(["bans", "-c", c, "add", mapped])
            .assert()
            .success()
            .stdout(predicate::str::starts_with(format!(
                "banned {stored} until "
            )));
        nolist()
            .args(["bans", "-c", c, "remove", mapped])
            .assert()
            .success()
            .stdout(format!("unbanned {stored}\n"));
    }
}

/// A manual ban that covers a planned MX address, loopback, a `bans.ignore`
/// or `bans.allow` network, or more than a /8 (/32 for IPv6) is refused
/// with its reasons, storing nothing; `--force` bans it with a warning.
#[test]
fn risky_manual_bans_need_force() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    for (target, reason) in [
        (
            "192.0.2.20",
            "it covers the planned MX address 192.0.2.20 of example.org",
        ),
        (
            "192.0.2.0/24",
            "it covers the planned MX address 192.0.2.10 of example.org",
        ),
        ("127.0.0.1", "it covers loopback (127.0.0.0/8)"),
        ("::1", "it covers loopback (::1/128)"),
        (
            "198.51.100.7",
            "it overlaps 198.51.100.0/24 in bans.allow.networks",
        ),
        ("10.0.0.0/7", "it is wider than /8"),
        ("2001:db8::/31", "it is wider than /32"),
    ] {
        nolist()
            .args(["bans", "-c", c, "add", target])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(reason))
            .stderr(predicate::str::contains("add --force to ban it anyway"));
    }
    assert!(
        !dir.path().join("state").exists(),
        "a refused ban stored something"
    );
    nolist()
        .args(["bans", "-c", c, "add", "--force", "10.0.0.0/7"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "warning: banning 10.0.0.0/7 although it is wider than /8",
        ));
    nolist()
        .args(["bans", "-c", c, "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("10.0.0.0/7"));
}

/// Regression: a ban of centuries printed its end in a year beyond 9999
/// (`until 219250468-12-04…`). `--for` stops at 10 years, and a store
/// written before that cap still lists valid RFC 3339 times.
#[test]
fn ban_ends_stay_printable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let c = cfg.to_str().unwrap();
    for long in ["3651d", "600000000y"] {
        nolist()
            .args(["bans", "-c", c, "add", "203.0.113.9", "--for", long])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--for"));
    }
    nolist()
        .args(["bans", "-c", c, "add", "203.0.113.9", "--for", "11y"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at most 3650d"));
    assert!(!dir.path().join("state").exists());
    nolist()
        .args(["bans", "-c", c, "add", "203.0.113.9", "--for", "3650d"])
        .assert()
        .success();
    let mut store = nolist::store::Store::open(&dir.path().join("state")).unwrap();
    store
        .add_ban(&manual("203.0.113.10", i64::MIN, i64::MAX))
        .unwrap();
    drop(store);
    nolist()
        .args(["bans", "-c", c, "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "203.0.113.10/32                             until 9999-12-31T23:59:59Z",
        ));
    let out = nolist()
        .args(["bans", "-c", c, "list", "--format", "json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for ban in list.as_array().unwrap() {
        for key in ["since", "until"] {
            let t = ban[key].as_str().unwrap();
            assert!(
                t.len() == 20 && t.as_bytes()[4] == b'-' && t.ends_with('Z'),
                "{key} {t}"
            );
        }
    }
    assert_eq!(list[1]["since"], "0000-01-01T00:00:00Z");
    nolist()
        .args(["status", "-c", c])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "0000-01-01T00:00:00Z ban   203.0.113.10/32",
        ));
}
