//! The documentation's examples are real: each documented command is run and
//! its output compared with what the docs show.

use crate::util;
use crate::util::{nolist, root};

#[test]
fn plan_json_doc_example_is_real_output() {
    json_examples_are_real_output("docs/plan-json.md");
}

#[test]
#[cfg(feature = "providers")]
fn diff_json_doc_example_is_real_output() {
    json_examples_are_real_output("docs/diff-json.md");
}

/// Runs every documented command of `doc` and compares its JSON output.
fn json_examples_are_real_output(doc: &str) {
    let runs = util::documented_runs(&root().join(doc));
    assert!(!runs.is_empty(), "{doc} shows no command + JSON example");
    for (cmd, shown) in runs {
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let out = nolist().args(&args).output().unwrap();
        let got = String::from_utf8(out.stdout).unwrap();
        let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s);
        assert_eq!(
            parse(&got).unwrap(),
            parse(&shown).unwrap(),
            "`{cmd}` output differs from the docs"
        );
    }
}

#[test]
fn readme_quick_start_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("cargo run --release -- plan -c examples/classic.yaml"));
    assert!(readme.contains("scripts/test"));
    nolist()
        .args(["plan", "-c", "examples/classic.yaml"])
        .assert()
        .success();
}

/// Only `providers` speaks HTTP: the main crate has no HTTP client or
/// server among its own dependencies (ARCHITECTURE.md's invariant).
#[test]
fn the_main_crate_has_no_http_dependency() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    for http in ["reqwest", "hyper", "ureq", "isahc", "surf"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(http)),
            "the main crate depends on {http}; HTTP belongs in providers/"
        );
    }
    let providers = std::fs::read_to_string(root().join("providers/Cargo.toml")).unwrap();
    assert!(providers.contains("reqwest"));
}
