//! The Debian package's parts that can be checked without installing it
//! (scripts/deb-check builds, lints, installs and purges the package): the
//! man pages `nolist manpages` writes are valid roff, the completion
//! scripts parse in their shells, the shipped config is harmless and
//! valid, and the shipped units keep the example unit's hardening.

use std::collections::BTreeMap;
use std::path::Path;

use clap::CommandFactory;

use crate::util::{self, nolist, root};

/// Every page `nolist manpages --out DIR` writes: one per visible command
/// of the clap tree (`nolist-bans-add.1`), and `nolist.yaml.5`.
#[test]
fn manpages_writes_a_page_per_command_and_the_config_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    nolist()
        .args(["manpages", "--out"])
        .arg(&out)
        .assert()
        .success();
    let mut want = vec!["nolist.yaml.5".to_owned()];
    let mut cmd = nolist::cli::Cli::command();
    cmd.build();
    let mut stack = vec![cmd];
    while let Some(cmd) = stack.pop() {
        want.push(format!(
            "{}.1",
            cmd.get_display_name().unwrap_or(cmd.get_name())
        ));
        let visible = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help");
        stack.extend(visible.cloned());
    }
    want.sort();
    let mut got: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(got.contains(&"nolist-bans-add.1".to_owned()));
}

/// groff renders every page without a warning (`-ww`: all warnings on),
/// so `man` shows what the page says.
#[test]
fn every_man_page_is_valid_roff() {
    let Some(groff) = util::require_tool("groff", "groff-base") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    nolist()
        .args(["manpages", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let mut pages = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new(&groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "groff on {}: {stderr}",
            path.display()
        );
        pages += 1;
    }
    assert!(pages > 10, "only {pages} pages");
}

/// Each completion script parses in its shell (`-n`: read, do not run)
/// and completes every visible subcommand.
#[test]
fn completion_scripts_parse_in_their_shells() {
    for (shell, package) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let Some(program) = util::require_tool(shell, package) else {
            continue;
        };
        let out = nolist().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "completions {shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for sub in ["plan", "run", "bans", "export", "completions"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
        assert!(
            !script.contains("manpages"),
            "{shell} offers the hidden manpages"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("nolist.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let check = std::process::Command::new(program)
            .arg("-n")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "{shell} -n: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn completions_refuses_an_unknown_shell() {
    nolist()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("invalid value 'tcsh'"));
}

/// The page generator is for the package build, not for users.
#[test]
fn manpages_is_hidden_from_help() {
    let help = nolist().arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("completions"), "{help}");
    assert!(!help.contains("manpages"), "{help}");
}

/// /etc/nolist/nolist.yaml as shipped plans without a lint error and does
/// nothing until edited: no responder listens, no log is read, nothing is
/// enforced, no DNS or metrics endpoint is served, no fleet is joined.
#[test]
fn the_packaged_config_is_valid_and_harmless() {
    let path = root().join("packaging/deb/nolist.yaml");
    let out = nolist().arg("plan").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plan: {stderr}");
    assert!(!stderr.contains("error"), "plan: {stderr}");

    let config = nolist::config::load(&path).unwrap();
    assert_eq!(config.responder.mode, nolist::config::Mode::Refuse);
    assert!(!config.responder.refuse_evidence);
    assert!(config.mta.logs.is_empty());
    assert_eq!(config.bans.enforce.backend, nolist::config::Backend::None);
    assert!(
        config
            .dns
            .serve
            .as_ref()
            .is_none_or(|s| s.listen.is_empty())
    );
    assert!(config.dns.dnsbl.is_none());
    assert!(config.metrics.is_none() && config.fleet.is_none() && config.provider.is_none());
    assert_eq!(config.state_dir, Path::new("/var/lib/nolist"));
}

/// The `[Service]` keys of a unit file (the last value of a repeated key).
fn service_keys(path: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The packaged units run the packaged binary on the conffile with the
/// example unit's hardening: nolist.service the same [Service] section
/// but for the paths, nolist-serve.service the same sandbox with fewer
/// capabilities (no firewall) and no watchdog (serve does not notify).
#[test]
fn the_packaged_units_keep_the_example_units_hardening() {
    let example = service_keys(&root().join("examples/systemd/nolist.service"));
    let run = service_keys(&root().join("packaging/deb/nolist.service"));
    let serve = service_keys(&root().join("packaging/deb/nolist-serve.service"));
    assert_eq!(
        run["ExecStart"],
        "/usr/bin/nolist run -c /etc/nolist/nolist.yaml"
    );
    assert_eq!(
        serve["ExecStart"],
        "/usr/bin/nolist serve -c /etc/nolist/nolist.yaml"
    );
    let without_exec = |keys: &BTreeMap<String, String>| {
        let mut keys = keys.clone();
        keys.remove("ExecStart");
        keys
    };
    assert_eq!(without_exec(&run), without_exec(&example));
    for key in [
        "StateDirectory",
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "DynamicUser",
        "LimitNOFILE",
        "Restart",
        "ExecReload",
    ] {
        assert_eq!(
            serve.get(key),
            example.get(key),
            "nolist-serve.service {key}"
        );
    }
    assert_eq!(serve["StateDirectory"], "nolist");
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        assert_eq!(
            serve[key], "CAP_NET_BIND_SERVICE",
            "nolist-serve.service {key}"
        );
    }
    assert!(!serve.contains_key("WatchdogSec") && serve["Type"] != "notify");
}
