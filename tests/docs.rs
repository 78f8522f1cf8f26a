//! The documentation's examples are real: each documented command is run and
//! its output compared with what the docs show.

mod util;

use util::{nolist, root};

#[test]
fn plan_json_doc_example_is_real_output() {
    json_examples_are_real_output("docs/plan-json.md");
}

#[test]
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
