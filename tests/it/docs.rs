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

/// Every repository path ARCHITECTURE.md names exists: in code spans
/// (`src/daemon/writer.rs`, `crates/durable/`, `tests/it/*.rs`) and link
/// targets, outside fenced blocks. A map that names moved code misleads.
#[test]
fn architecture_names_only_paths_that_exist() {
    let root = root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for (number, line) in outside_fences(&text) {
        let words = code_spans(line)
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(|w| doc_path(w, root));
        for path in words.chain(link_targets(line)) {
            checked += 1;
            if !root.join(&path).exists() {
                missing.push(format!("ARCHITECTURE.md:{number}: {path}"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the parser broken?"
    );
    assert!(
        missing.is_empty(),
        "paths that do not exist:\n{}",
        missing.join("\n")
    );
}

/// What the path check takes for a path, and what it leaves alone.
#[test]
fn the_path_check_reads_paths_not_look_alikes() {
    let root = root();
    let cases = [
        ("src/daemon/writer.rs", Some("src/daemon/writer.rs")),
        ("lib.rs", Some("lib.rs")),
        ("crates/durable/", Some("crates/durable/")),
        ("bench/run", Some("bench/run")),
        ("examples/*.yaml;", Some("examples/")),
        ("(src/store/serials.rs),", Some("src/store/serials.rs")),
        ("examples/classic.yaml:3:5:", Some("examples/classic.yaml")),
        ("A/AAAA", None),
        ("nolist.plan/1", None),
        ("192.0.2.0/24", None),
        ("2001:db8::/32", None),
        ("/etc/resolv.conf", None),
        ("https://example.org/x.md", None),
        ("crate::store::Store", None),
        ("providers/tests/{a,b}.rs", None),
        ("tests/it/<name>.rs", None),
        ("STATE_DIR/serials.json", None),
        ("$f", None),
        ("--out", None),
    ];
    for (word, want) in cases {
        assert_eq!(doc_path(word, root).as_deref(), want, "{word}");
    }
    let line = "see `a b/c.rs` and [x](docs/y.md#z) or ``d`e``";
    assert_eq!(code_spans(line), ["a b/c.rs", "d`e"]);
    assert_eq!(link_targets(line), ["docs/y.md"]);
}

/// `(line number, line)` outside fenced code blocks.
fn outside_fences(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The contents of the code spans of `line` (a run of N backticks closes
/// at the next run of exactly N).
fn code_spans(line: &str) -> Vec<&str> {
    let b = line.as_bytes();
    let run = |at: usize| b[at..].iter().take_while(|&&c| c == b'`').count();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run(i);
        let start = i + n;
        let mut j = start;
        let mut closed = None;
        while j < b.len() {
            if b[j] == b'`' {
                let m = run(j);
                if m == n {
                    closed = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        let Some(end) = closed else { break };
        out.push(&line[start..end]);
        i = end + n;
    }
    out
}

/// Markdown link targets of `line` that are repository paths (no URL, no
/// anchor-only link), without their `#anchor`.
fn link_targets(line: &str) -> Vec<String> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            let target = rest[..rest.find([')', ' '])?].split('#').next()?;
            let url = target.contains(':') || target.starts_with('/');
            (!target.is_empty() && !url).then(|| target.to_owned())
        })
        .collect()
}

/// The repository path `word` names, if it names one: a word ending in
/// `.rs`, `.md`, `.toml`, `.yaml` or `/`, or with a `/` after a top-level
/// entry of the repository. Not paths: URLs, absolute paths, Rust paths,
/// patterns (`{…}`, `<…>`, `$x`), ALL-CAPS placeholders, flags. A glob is
/// checked by its directory, a `file:line:col` by its file.
fn doc_path(word: &str, root: &std::path::Path) -> Option<String> {
    const TRIM: &[char] = &['"', '\'', '.', ',', ';', ':', '!', '?', '(', ')', '[', ']'];
    let mut word = word.trim_matches(TRIM);
    // A position suffix: `:12` or `:12:5`.
    while let Some((head, tail)) = word.rsplit_once(':') {
        if tail.is_empty() || !tail.bytes().all(|c| c.is_ascii_digit()) {
            break;
        }
        word = head;
    }
    let word = word.trim_matches(TRIM);
    let scheme = word.split_once(':').is_some_and(|(s, _)| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+.-".contains(&c))
    });
    if word.is_empty() || scheme || word.starts_with(['/', '~', '-']) || word.contains("::") {
        return None;
    }
    if word.contains(['{', '}', '<', '>', '$']) {
        return None;
    }
    let parts: Vec<&str> = word.split('/').filter(|p| !p.is_empty()).collect();
    let placeholder = |p: &str| {
        p.len() > 1
            && p.starts_with(|c: char| c.is_ascii_uppercase())
            && p.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
    };
    if parts.is_empty() || parts.iter().any(|p| placeholder(p)) {
        return None;
    }
    if word.contains(['*', '?', '[']) {
        let dir: Vec<&str> = parts
            .iter()
            .take_while(|p| !p.contains(['*', '?', '[']))
            .copied()
            .collect();
        return (!dir.is_empty()).then(|| format!("{}/", dir.join("/")));
    }
    let file = [".rs", ".md", ".toml", ".yaml", ".yml", "/"]
        .iter()
        .any(|e| word.ends_with(e));
    if file || (word.contains('/') && root.join(parts[0]).exists()) {
        return Some(word.to_owned());
    }
    None
}
