//! `nolist plan` end to end through the built binary: examples, golden
//! zones, output snapshots, exit codes and what goes to stdout vs stderr.

use std::path::Path;

use crate::util;
use crate::util::{examples, named_checkzone, nolist, require_tool, root};
use predicates::prelude::*;

/// A config with one lint error (decoy preference above the real MX).
const BAD_LAYOUT: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 30, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
";

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout_of(args: &[&str]) -> String {
    let out = nolist()
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn every_example_parses_and_plans_cleanly_in_every_format() {
    let examples = examples();
    assert!(
        examples.len() >= 3,
        "examples/ should hold at least three configs"
    );
    for example in examples {
        nolist::config::load(&example).unwrap_or_else(|e| panic!("{e}"));
        for format in ["zone", "json", "nsupdate"] {
            nolist()
                .args(["plan", "-c"])
                .arg(&example)
                .args(["--format", format])
                .assert()
                .success()
                .stderr(predicate::str::contains("error").not());
        }
    }
}

/// zones/ holds `nolist plan --out zones` of every example, byte for byte.
#[test]
fn golden_zones_match_a_fresh_plan() {
    let fresh = tempfile::tempdir().unwrap();
    let mut domains = 0;
    for example in examples() {
        domains += nolist::config::load(&example).unwrap().domains.len();
        nolist()
            .args(["plan", "-c"])
            .arg(&example)
            .arg("--out")
            .arg(fresh.path())
            .assert()
            .success();
    }
    let list = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        list(fresh.path()).len(),
        domains,
        "two examples plan the same domain"
    );
    let golden = root().join("zones");
    assert_eq!(
        list(&golden),
        list(fresh.path()),
        "zones/ and the examples disagree: regenerate with `for f in examples/*.yaml; do cargo run -- plan -c $f --out zones; done`"
    );
    for name in list(&golden) {
        let want = std::fs::read_to_string(golden.join(&name)).unwrap();
        let got = std::fs::read_to_string(fresh.path().join(&name)).unwrap();
        assert_eq!(want, got, "zones/{name} is stale: regenerate it");
    }
}

#[test]
fn golden_zones_pass_named_checkzone() {
    let Some(tool) = require_tool("named-checkzone", "bind9-utils") else {
        return;
    };
    for entry in std::fs::read_dir(root().join("zones")).unwrap() {
        let path = entry.unwrap().path();
        let origin = path.file_stem().unwrap().to_string_lossy().into_owned();
        named_checkzone(&tool, &origin, &path);
    }
}

/// Without dns.soa/dns.ns the output is a fragment; with a SOA and NS put
/// in front of it, it is a zone BIND accepts.
#[test]
fn fragment_is_marked_and_loads_under_a_soa() {
    let dir = tempfile::tempdir().unwrap();
    let classic = util::read_example("classic.yaml");
    let without_dns = classic.split("\ndns:").next().unwrap();
    let cfg = write_config(dir.path(), without_dns);
    let text = stdout_of(&["plan", "-c", cfg.to_str().unwrap()]);
    assert!(text.contains("; FRAGMENT"), "{text}");
    assert!(!text.contains("SOA") || text.contains("no SOA"), "{text}");
    let Some(tool) = require_tool("named-checkzone", "bind9-utils") else {
        return;
    };
    let zone = dir.path().join("example.org.zone");
    std::fs::write(
        &zone,
        format!(
            "$TTL 3600\nexample.org. IN SOA ns1.example.net. hostmaster.example.org. 1 3600 900 1209600 3600\n\
             example.org. IN NS ns1.example.net.\n{text}"
        ),
    )
    .unwrap();
    named_checkzone(&tool, "example.org", &zone);
}

#[test]
fn zone_output_snapshot() {
    insta::assert_snapshot!(stdout_of(&["plan", "-c", "examples/sandwich.yaml"]));
}

#[test]
fn json_output_snapshot() {
    insta::assert_snapshot!(stdout_of(&[
        "plan",
        "-c",
        "examples/multi-domain.yaml",
        "--format",
        "json"
    ]));
}

#[test]
fn nsupdate_output_snapshot() {
    insta::assert_snapshot!(stdout_of(&[
        "plan",
        "-c",
        "examples/sandwich.yaml",
        "--format",
        "nsupdate"
    ]));
}

#[test]
fn nsupdate_replaces_only_owned_records_in_one_send_per_zone() {
    let text = stdout_of(&[
        "plan",
        "-c",
        "examples/multi-domain.yaml",
        "--format",
        "nsupdate",
    ]);
    assert_eq!(text.matches("\nsend\n").count(), 3, "{text}");
    assert_eq!(text.matches("\nzone ").count(), 3, "{text}");
    // Hosts outside a zone are never touched from it; SOA and NS never.
    let org = text
        .split("zone shop.example.")
        .nth(1)
        .unwrap()
        .split("send")
        .next()
        .unwrap();
    assert!(!org.contains("mail.example.net. IN A"), "{org}");
    assert!(!text.contains(" SOA") && !text.contains(" NS "), "{text}");
}

#[test]
fn output_is_reproducible() {
    for format in ["zone", "json", "nsupdate"] {
        let args = [
            "plan",
            "-c",
            "examples/multi-domain.yaml",
            "--format",
            format,
        ];
        assert_eq!(stdout_of(&args), stdout_of(&args), "{format}");
    }
}

#[test]
fn domain_filter_accepts_unicode_and_rejects_unknown() {
    let text = stdout_of(&[
        "plan",
        "-c",
        "examples/multi-domain.yaml",
        "--domain",
        "BÜCHER.example",
    ]);
    assert!(text.contains("$ORIGIN xn--bcher-kva.example."), "{text}");
    assert!(!text.contains("$ORIGIN example.net."), "{text}");
    nolist()
        .args([
            "plan",
            "-c",
            "examples/multi-domain.yaml",
            "--domain",
            "example.de",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("example.de is not configured"));
}

#[test]
fn exit_1_on_lint_errors_with_findings_on_stderr_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), BAD_LAYOUT);
    let out_dir = dir.path().join("zones");
    for extra in [
        &[][..],
        &["--format", "nsupdate"][..],
        &["--out", out_dir.to_str().unwrap()][..],
    ] {
        nolist()
            .args(["plan", "-c", cfg.to_str().unwrap()])
            .args(extra)
            .assert()
            .code(1)
            .stdout("")
            .stderr(predicate::str::contains(
                "nolist.yaml:3:12: error[decoy-not-lowest]: example.org: decoy mx01.example.org. has preference 30",
            ));
    }
    assert!(
        !out_dir.exists(),
        "nothing may be written when the plan has errors"
    );
    // JSON is still printed, so tools can read the findings.
    let out = nolist()
        .args(["plan", "-c", cfg.to_str().unwrap(), "--format", "json"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["findings"][0]["id"], "decoy-not-lowest");
    assert_eq!(doc["findings"][0]["line"], 3);
}

#[test]
fn exit_0_on_warnings_only() {
    nolist()
        .args(["plan", "-c", "examples/sandwich.yaml"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "examples/sandwich.yaml: warning[responder-not-refuse]",
        ));
}

#[test]
fn exit_2_on_config_errors_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &BAD_LAYOUT.replace("192.0.2.20", "192.0.2.256"));
    nolist()
        .args(["plan", "-c", cfg.to_str().unwrap()])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains(
            "nolist.yaml:5:58: invalid IPv4 address",
        ));
    nolist()
        .args(["plan", "-c", "does/not/exist.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "does/not/exist.yaml: cannot read the configuration",
        ));
}

#[test]
fn exit_2_on_usage_errors() {
    nolist().args(["plan"]).assert().code(2);
    nolist()
        .args(["plan", "-c", "examples/classic.yaml", "--format", "bind"])
        .assert()
        .code(2);
    nolist().args(["frobnicate"]).assert().code(2);
    nolist()
        .args([
            "plan",
            "-c",
            "examples/classic.yaml",
            "--format",
            "json",
            "--out",
            "x",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--out writes zone files"));
    nolist().args(["--help"]).assert().success();
    nolist().args(["--version"]).assert().success();
}
