//! The documentation's examples are real: each documented command is run and
//! its output compared with what the docs show.

mod util;

use util::{nolist, root};

/// The fenced blocks of `lang` in a Markdown file, each preceded by the
/// closest backticked `nolist …` command above it.
fn documented_runs(file: &str, lang: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let mut runs = Vec::new();
    let mut command = None;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(start) = line.find("`nolist ") {
            let rest = &line[start + 1..];
            command = rest.find('`').map(|end| rest[..end].to_owned());
        }
        if line.trim() == format!("```{lang}") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            if let Some(cmd) = command.take() {
                runs.push((cmd, body.join("\n") + "\n"));
            }
        }
    }
    runs
}

#[test]
fn plan_json_doc_example_is_real_output() {
    let runs = documented_runs("docs/plan-json.md", "json");
    assert!(
        !runs.is_empty(),
        "docs/plan-json.md shows no command + JSON example"
    );
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
