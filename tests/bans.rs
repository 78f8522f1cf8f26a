//! `nolist bans` and `nolist status` against a state store in a temp dir.

mod util;

use predicates::prelude::*;
use util::{nolist, read_example};

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
