//! `nolist diff` and `nolist apply` end to end with the `zonefile`
//! provider: a git-managed zone file whose other records must survive byte
//! for byte, checked by `named-checkzone`; exit codes, the guard, the
//! confirmation, and a partial failure across domains.
#![cfg(feature = "providers")]

use std::path::{Path, PathBuf};

use crate::util;
use crate::util::{named_checkzone, nolist, require_tool};

/// The user's zone: SOA, NS, web and SPF records nolist must not touch,
/// and an old MX set that nolist replaces.
const ZONE: &str = "\
; example.org: maintained by hand and by nolist
$ORIGIN example.org.
$TTL 3600
@\tIN SOA ns1.example.net. hostmaster.example.org. (
\t\t2026010101 ; serial
\t\t3600 900 1209600 3600 )
\tIN NS ns1.example.net.
\tIN NS ns2.example.net.
@ 300 IN MX 10 mail.example.org.
mail 300 IN A 192.0.2.25
www   IN A 192.0.2.80   ; the web server
      IN AAAA 2001:db8::80
@     IN TXT \"v=spf1 mx -all\"
";

fn config(dir: &Path, zones: &Path, domains: &[&str]) -> PathBuf {
    let mut text = format!(
        "provider: {{ kind: zonefile, dir: {} }}\ndomains:\n",
        zones.display()
    );
    for d in domains {
        text.push_str(&format!(
            "  - name: {d}\n    decoy: {{ host: mx01.{d}, preference: 10, ipv4: [192.0.2.10], ipv6: [\"2001:db8::10\"] }}\n    \
             real:\n      - {{ host: mail.{d}, preference: 20, ipv4: [192.0.2.25] }}\n"
        ));
    }
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    zone: PathBuf,
}

fn setup(domains: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    let zone = zones.join("example.org.zone");
    std::fs::write(&zone, ZONE).unwrap();
    let config = config(dir.path(), &zones, domains);
    Setup {
        _dir: dir,
        config,
        zone,
    }
}

fn run(args: &[&str], config: &Path) -> (i32, String, String) {
    util::run_config(args, config, &[])
}

#[test]
fn diff_shows_the_drift_and_exits_1() {
    let s = setup(&["example.org"]);
    let (code, out, err) = run(&["diff"], &s.config);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out,
        "example.org (zonefile): 6 changes\n\
         - example.org. MX 10 mail.example.org.\n\
         + example.org. MX 10 mx01.example.org.\n\
         + example.org. MX 20 mail.example.org.\n\
         ~ mail.example.org. A 192.0.2.25 (300 → 3600)\n\
         + mx01.example.org. A 192.0.2.10\n\
         + mx01.example.org. AAAA 2001:db8::10\n"
    );
}

#[test]
fn apply_makes_it_in_sync_keeps_other_records_and_passes_named_checkzone() {
    let s = setup(&["example.org"]);
    let (code, out, err) = run(&["apply", "--yes"], &s.config);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("example.org: applied"), "{err}");
    let after = std::fs::read_to_string(&s.zone).unwrap();
    // Every line that is not an owned record is still there, in order.
    let kept: Vec<&str> = ZONE
        .lines()
        .filter(|l| !l.contains(" MX ") && !l.starts_with("mail "))
        .map(|l| {
            if l.contains("2026010101") {
                "\t\t2026010102 ; serial"
            } else {
                l
            }
        })
        .collect();
    let mut rest = after.lines();
    for line in &kept {
        assert!(
            rest.any(|l| l == *line),
            "lost or reordered {line:?}:\n{after}"
        );
    }
    let (code, out, _) = run(&["diff"], &s.config);
    assert_eq!(
        (code, out.as_str()),
        (0, "example.org (zonefile): in sync\n")
    );
    if let Some(tool) = require_tool("named-checkzone", "bind9-utils") {
        named_checkzone(&tool, "example.org", &s.zone);
    }
    // A second apply changes nothing, not even the serial.
    let (code, _, err) = run(&["apply", "--yes"], &s.config);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("nothing to apply"), "{err}");
    assert_eq!(std::fs::read_to_string(&s.zone).unwrap(), after);
}

#[test]
fn diff_json_lists_each_record() {
    let s = setup(&["example.org"]);
    let out = nolist()
        .args(["diff", "--format", "json", "-c"])
        .arg(&s.config)
        .output()
        .unwrap();
    let (code, v) = util::exit_and_json(&out);
    assert_eq!(code, 1);
    assert_eq!(v["schema"], "nolist.diff/1");
    assert_eq!(v["in_sync"], false);
    let d = &v["domains"][0];
    assert_eq!(
        (&d["domain"], &d["provider"], &d["status"]),
        (&"example.org".into(), &"zonefile".into(), &"drift".into())
    );
    assert_eq!(d["changes"].as_array().unwrap().len(), 6);
    assert_eq!(
        d["changes"][3],
        serde_json::json!({"op": "ttl", "name": "mail.example.org.", "type": "A", "data": "192.0.2.25", "ttl": 3600, "old_ttl": 300})
    );
}

#[test]
fn apply_refuses_without_yes_when_stdin_is_not_a_terminal() {
    let s = setup(&["example.org"]);
    let (code, out, err) = run(&["apply"], &s.config);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(out.contains("6 changes"), "the diff is shown first: {out}");
    assert_eq!(std::fs::read_to_string(&s.zone).unwrap(), ZONE);
}

#[test]
fn apply_refuses_change_sets_over_the_guard() {
    let s = setup(&["example.org"]);
    let (code, _, err) = run(&["apply", "--yes", "--max-changes", "5"], &s.config);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("6 record changes exceed --max-changes 5"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&s.zone).unwrap(), ZONE);
    let (code, _, err) = run(&["apply", "--yes", "--max-changes", "6"], &s.config);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn partial_failure_is_reported_per_domain() {
    // example.net's zone file does not exist: it fails, example.org is applied.
    let s = setup(&["example.net", "example.org"]);
    let (code, out, err) = run(&["diff"], &s.config);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("example.net (zonefile): error: zone example.net. not found at zonefile"),
        "{out}"
    );
    let (code, _, err) = run(&["apply", "--yes"], &s.config);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("example.org: applied 6 record changes; in sync"),
        "{err}"
    );
    let (code, out, _) = run(&["diff", "--domain", "example.org"], &s.config);
    assert_eq!(
        (code, out.as_str()),
        (0, "example.org (zonefile): in sync\n")
    );
}

#[test]
fn a_domain_without_provider_or_unknown_domain_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "domains:\n  - name: example.org\n    decoy: { host: mx01.example.org, preference: 10 }\n    real: [{ host: mx02.example.org, preference: 20 }]\n",
    )
    .unwrap();
    let (code, _, err) = run(&["diff"], &path);
    assert_eq!(code, 2);
    assert!(err.contains("domain example.org has no provider"), "{err}");
    let s = setup(&["example.org"]);
    let (code, _, err) = run(&["diff", "--domain", "example.com"], &s.config);
    assert_eq!(code, 2);
    assert!(err.contains("not configured"), "{err}");
}

#[test]
fn a_domain_provider_overrides_the_top_level_one() {
    let s = setup(&["example.org"]);
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "    real:",
        "    provider: { kind: zonefile, dir: elsewhere }\n    real:",
    );
    std::fs::write(&s.config, text).unwrap();
    let (code, out, _) = run(&["diff"], &s.config);
    assert_eq!(code, 2);
    // `dir` is relative to the config file's directory.
    let expected = s
        .config
        .parent()
        .unwrap()
        .join("elsewhere/example.org.zone");
    assert!(out.contains(&expected.display().to_string()), "{out}");
}

/// Every config in examples/providers/ parses.
#[test]
fn provider_examples_parse() {
    let dir = util::root().join("examples/providers");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let cfg = nolist::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(cfg.provider.is_some() || cfg.domains.iter().any(|d| d.provider.is_some()));
            n += 1;
        }
    }
    assert!(n >= 1, "no examples in {}", dir.display());
}

/// On a terminal `apply` asks; `n` applies nothing (exit 1), `y` applies.
/// `script` (util-linux) gives the command a pseudo-terminal.
#[test]
fn apply_asks_on_a_terminal() {
    let Some(script) = require_tool("script", "bsdutils") else {
        return;
    };
    let s = setup(&["example.org"]);
    let bin = assert_cmd::cargo::cargo_bin("nolist");
    let command = format!("{} apply -c {}", bin.display(), s.config.display());
    let answer = |text: &str| {
        let mut child = std::process::Command::new(&script)
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = answer("n\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Apply 6 record changes to 1 domain? [y/N]"),
        "{out}"
    );
    assert!(out.contains("not applied"), "{out}");
    assert_eq!(std::fs::read_to_string(&s.zone).unwrap(), ZONE);
    let (code, out) = answer("y\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("example.org: applied 6 record changes; in sync"),
        "{out}"
    );
}
