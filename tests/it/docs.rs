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
    json_examples_match(doc, None, |_| {});
}

/// Runs every documented command of `doc` and compares its JSON output
/// with the doc's, both passed through `normalise` first; `swap` is the
/// address the doc shows and the real one, put in for the run and taken
/// out of the output. Returns how many examples it compared.
fn json_examples_match(
    doc: &str,
    swap: Option<(&str, &str)>,
    normalise: impl Fn(&mut serde_json::Value),
) -> usize {
    let runs = util::documented_runs(&root().join(doc));
    assert!(!runs.is_empty(), "{doc} shows no command + JSON example");
    let (shown_addr, real_addr) = swap.unwrap_or(("", ""));
    let swapped = |text: &str, from: &str, to: &str| {
        if from.is_empty() {
            text.to_owned()
        } else {
            text.replace(from, to)
        }
    };
    let parse = |text: &str| {
        let mut doc: serde_json::Value = serde_json::from_str(text).unwrap();
        normalise(&mut doc);
        doc
    };
    for (cmd, shown) in &runs {
        let args: Vec<String> = cmd
            .split_whitespace()
            .skip(1)
            .map(|a| swapped(a, shown_addr, real_addr))
            .collect();
        let out = nolist().args(&args).output().unwrap();
        let got = swapped(
            &String::from_utf8(out.stdout).unwrap(),
            real_addr,
            shown_addr,
        );
        assert_eq!(
            parse(&got),
            parse(shown),
            "`{cmd}` output differs from the docs"
        );
    }
    runs.len()
}

/// docs/probe-json.md's examples are real output: a decoy served by
/// `nolist run` in rcpt-450 mode on a free loopback port (swapped for the
/// docs' 45767, and back in the output), then nothing listening on port 1.
/// `elapsed_ms` varies: it is checked to be a number, not compared.
#[test]
fn probe_json_doc_examples_are_real_output() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nolist.yaml");
    std::fs::write(
        &cfg,
        "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
responder: { mode: rcpt-450, listen: [\"127.0.0.1:0\"] }
bans: { enforce: { backend: none } }
",
    )
    .unwrap();
    let server = crate::util::serve::Server::start_with("run", &cfg, &[], 1)
        .unwrap_or_else(|log| panic!("nolist run did not start:\n{log}"));
    let real = server.addr("smtp", false).to_string();
    let compared = json_examples_match(
        "docs/probe-json.md",
        Some(("127.0.0.1:45767", &real)),
        |doc| {
            for probe in doc["probes"].as_array_mut().expect("probes") {
                assert!(probe["elapsed_ms"].is_u64(), "{probe}");
                probe["elapsed_ms"] = 0.into();
            }
        },
    );
    assert_eq!(compared, 2, "docs/probe-json.md shows two probes");
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
        (".cargo/config.toml.", Some(".cargo/config.toml")),
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
    // A leading dot is part of a name (`.cargo/config.toml`), a trailing
    // one ends a sentence.
    const LEAD: &[char] = &['"', '\'', ',', ';', ':', '!', '?', '(', ')', '[', ']'];
    let mut word = word.trim_start_matches(LEAD).trim_end_matches(TRIM);
    // A position suffix: `:12` or `:12:5`.
    while let Some((head, tail)) = word.rsplit_once(':') {
        if tail.is_empty() || !tail.bytes().all(|c| c.is_ascii_digit()) {
            break;
        }
        word = head;
    }
    let word = word.trim_start_matches(LEAD).trim_end_matches(TRIM);
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

/// The README and every page of `docs/`, as paths relative to the root.
fn doc_files() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    docs.insert(0, "README.md".to_owned());
    docs
}

/// Every example command of the README and `docs/` (the convention is in
/// docs/testing.md, "Documentation examples") is accepted by nolist's own
/// parser, and runs here as shown unless [`EXCEPTIONS`] says why not; the
/// command before each JSON example of `docs/*-json.md` is parsed too.
#[test]
fn every_documented_command_runs() {
    let mut used = Vec::new();
    let mut problems = Vec::new();
    let mut nolist_commands = 0;
    for file in doc_files() {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        let checked = check_doc(&file, &text, &mut used);
        nolist_commands += checked.nolist;
        problems.extend(checked.problems);
        if file.ends_with("-json.md") {
            for (cmd, _) in util::documented_runs(&root().join(&file)) {
                nolist_commands += 1;
                let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
                if let Err(e) = parse(&argv) {
                    problems.push(format!("{file}: `{cmd}`: {e}"));
                }
            }
        }
    }
    for (file, command, _, _) in EXCEPTIONS {
        if !used.contains(&(*file, *command)) {
            problems.push(format!(
                "EXCEPTIONS names `{command}` in {file}, which shows no such command"
            ));
        }
    }
    assert!(
        nolist_commands >= 20,
        "only {nolist_commands} nolist commands found: is the extractor broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A doc that shows a flag nolist does not have, a program the test does
/// not know, or another exit code or output than nolist's fails; a
/// synopsis is no example, and an error on stderr is output.
#[test]
fn the_command_check_catches_wrong_examples() {
    let check = |text: &str| check_doc("bogus.md", text, &mut Vec::new());
    let bogus = check("```sh\nnolist plan -c examples/classic.yaml --bogus\n```\n");
    assert_eq!(bogus.nolist, 1);
    assert!(
        bogus.problems.len() == 1 && bogus.problems[0].contains("--bogus"),
        "{:?}",
        bogus.problems
    );
    // A daemon's command fails at the parser, before anything runs it.
    let daemon = check("```console\n$ nolist run -c nolist.yaml --bogus\n```\n");
    assert!(daemon.problems[0].contains("--bogus"), "{daemon:?}");
    let unknown = check("```sh\nnolsit plan -c examples/classic.yaml\n```\n");
    assert!(unknown.problems[0].contains("nolsit"), "{unknown:?}");
    let wrong_output = check(
        "```console\n$ nolist plan -c examples/classic.yaml --domain example.org\nnothing\n```\n",
    );
    assert!(
        wrong_output.problems[0].contains("output differs"),
        "{wrong_output:?}"
    );
    let wrong_exit =
        check("```console\n$ nolist plan -c examples/classic.yaml    # exits 2\n```\n");
    assert!(wrong_exit.problems[0].contains("exit"), "{wrong_exit:?}");
    let good = check(concat!(
        "```text\nnolist plan -c FILE [--bogus]\n```\n",
        "```sh\n# a comment\nTZ=UTC nolist plan -c nolist.yaml   # the walk's config\n```\n",
        "```console\n$ nolist plan -c examples/classic.yaml --domain example.net  # exits 2\n",
        "nolist: --domain: example.net is not configured in examples/classic.yaml\n```\n",
    ));
    assert_eq!(good.nolist, 2, "{good:?}");
    assert!(good.problems.is_empty(), "{good:?}");
}

#[test]
fn example_lines_split_like_a_shell() {
    fn split(line: &str) -> Result<(Vec<String>, Option<&str>), String> {
        split_words(line).map(|(w, c)| (w, c.map(|at| line[at + 1..].trim())))
    }
    assert_eq!(
        split(r#"nolist bans add 192.0.2.0/25 --reason "spam run" # exits 2"#),
        Ok((
            [
                "nolist",
                "bans",
                "add",
                "192.0.2.0/25",
                "--reason",
                "spam run"
            ]
            .map(str::to_owned)
            .to_vec(),
            Some("exits 2")
        ))
    );
    assert_eq!(
        split(r"a 'b c'd e\ f x#y"),
        Ok((
            ["a", "b cd", "e f", "x#y"].map(str::to_owned).to_vec(),
            None
        ))
    );
    for bad in ["a | b", "a > f", "a; b", "a && b", "echo $(x)", "a 'open"] {
        assert!(split(bad).is_err(), "{bad}");
    }
}

/// How much of a documented `nolist` command the test checks, when not all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// Parsed only: it needs what the test cannot have.
    ParseOnly,
    /// Run; its output compared with every run of digits made one `0`.
    NumbersVary,
    /// Run; only its exit code checked.
    ExitOnly,
}

/// The documented commands the test does not run and compare in full:
/// `(file, command as shown, check, why)`. Every entry must match a
/// command, so the list shrinks with the docs.
const EXCEPTIONS: &[(&str, &str, Check, &str)] = &[
    (
        "docs/packaging.md",
        "nolist plan -c /etc/nolist/nolist.yaml",
        Check::ParseOnly,
        "the installed conffile: scripts/deb-check plans it after `dpkg -i`, tests/it/packaging.rs plans the packaged copy",
    ),
    (
        "docs/packaging.md",
        "nolist verify -c /etc/nolist/nolist.yaml",
        Check::ParseOnly,
        "the installed conffile, against live DNS",
    ),
    (
        "README.md",
        "nolist init --from-postfix /etc/postfix --out nolist.yaml",
        Check::ParseOnly,
        "reads the host's Postfix, fail2ban and live DNS (tests/it/init.rs runs init on Postfix files it writes)",
    ),
    (
        "docs/init.md",
        "nolist init --from-postfix /etc/postfix --out nolist.yaml",
        Check::ParseOnly,
        "the same",
    ),
    (
        "README.md",
        "nolist verify -c nolist.yaml --dns-only",
        Check::ParseOnly,
        "asks live DNS for example.org",
    ),
    (
        "README.md",
        "nolist verify -c nolist.yaml",
        Check::ParseOnly,
        "asks live DNS and talks SMTP to the MX hosts",
    ),
    (
        "README.md",
        "nolist replay -c nolist.yaml /var/log/mail.log.1 /var/log/mail.log",
        Check::ParseOnly,
        "reads the host's mail logs (docs/replay.md's example runs on tests/data)",
    ),
    (
        "README.md",
        "nolist run -c nolist.yaml",
        Check::ParseOnly,
        "the daemon: it runs until stopped, as root, and changes the host's firewall",
    ),
    (
        "README.md",
        "nolist status -c nolist.yaml",
        Check::ParseOnly,
        "reads the state store that `nolist run` creates (docs/bans.md's example runs)",
    ),
    (
        "README.md",
        "nolist bans -c nolist.yaml list",
        Check::ParseOnly,
        "the same",
    ),
    (
        "docs/serve.md",
        "cargo run --release -- serve -c examples/sandwich.yaml",
        Check::ParseOnly,
        "serves until stopped (tests/it/serve.rs runs serve)",
    ),
    (
        "docs/verify.md",
        "nolist verify -c examples/classic.yaml --dns-only --nameserver 127.0.0.1:5353",
        Check::ParseOnly,
        "needs a name server on 127.0.0.1:5353; verify::docs_verify_text_example_is_real_output runs it against NSD",
    ),
    (
        "docs/probe.md",
        "nolist probe 127.0.0.1:45767",
        Check::ParseOnly,
        "needs a decoy on that port (tests/it/responder.rs probes one)",
    ),
    (
        "docs/probe.md",
        "nolist probe 127.0.0.1:1",
        Check::NumbersVary,
        "the dialogue's duration in milliseconds",
    ),
    (
        "docs/replay.md",
        "TZ=UTC nolist replay -c examples/classic.yaml tests/data/postfix-decoy.log",
        Check::NumbersVary,
        "the summary ends with the replay's duration and rate",
    ),
    (
        "docs/replay.md",
        "TZ=UTC nolist replay -c examples/classic.yaml tests/data/postfix-decoy.log --format json",
        Check::NumbersVary,
        "the same",
    ),
    (
        "docs/bans.md",
        r#"nolist bans -c nolist.yaml add 192.0.2.128/25 --for 2h --reason "spam run""#,
        Check::NumbersVary,
        "the ban ends two hours from now",
    ),
    (
        "docs/dnsbl.md",
        r#"nolist bans -c nolist.yaml add 198.51.100.0/24 --reason "spam run""#,
        Check::NumbersVary,
        "the ban ends a day from now",
    ),
    (
        "docs/bans.md",
        "nolist bans -c nolist.yaml list",
        Check::ExitOnly,
        "it shows a ban that `run` decided from a log beside the manual one; the test's store holds only the manual one",
    ),
    (
        "docs/bans.md",
        "nolist status -c nolist.yaml",
        Check::ExitOnly,
        "the same, and that log's checkpoint",
    ),
];

/// Programs other than nolist that the docs show, skipped by name.
const EXTERNAL: &[(&str, &str)] = &[
    (
        "cargo",
        "builds and installs nolist; the test runs the build under test",
    ),
    ("scripts/test", "the test suite itself"),
    (
        "scripts/deb",
        "builds the Debian package; scripts/deb-check builds, installs and checks it in CI",
    ),
    ("sudo", "installs on the host"),
    ("dig", "asks a running `nolist serve`"),
    ("systemctl", "changes the host's services"),
    ("postfix", "changes the host's Postfix"),
    ("postconf", "reads the host's Postfix"),
    ("fail2ban-client", "changes the host's fail2ban"),
    ("nft", "changes the host's firewall"),
    ("nsupdate", "changes a live zone"),
];

/// A command shown in the docs, and what they say it does.
#[derive(Debug)]
struct Example {
    /// `file:line`, for messages.
    at: String,
    /// The command as shown, without `$ ` and its comment.
    shown: String,
    /// `NAME=value` assignments before the program.
    env: Vec<(String, String)>,
    /// The program and its arguments (`cargo run -- ARGS` is `nolist ARGS`).
    argv: Vec<String>,
    /// The exit code its comment gives (`# exits N`), else 0.
    exit: i32,
    /// The output a `console` block shows after it.
    output: Option<String>,
}

/// What [`check_doc`] found.
#[derive(Debug, Default)]
struct Checked {
    /// `nolist` commands parsed (and maybe run).
    nolist: usize,
    problems: Vec<String>,
}

/// Parses, and runs unless [`EXCEPTIONS`] says otherwise, every example of
/// `text` (the doc `file`, relative to the root), each file's in order in a
/// workspace of its own; adds the exceptions it met to `used`.
fn check_doc(file: &str, text: &str, used: &mut Vec<(&'static str, &'static str)>) -> Checked {
    let mut checked = Checked::default();
    let examples = match examples(file, text) {
        Ok(examples) => examples,
        Err(e) => {
            checked.problems.push(e);
            return checked;
        }
    };
    let mut workspace = None;
    for ex in examples {
        let program = ex.argv[0].as_str();
        if program != "nolist" {
            if !EXTERNAL.iter().any(|(name, _)| *name == program) {
                checked.problems.push(format!(
                    "{}: `{}`: `{program}` is neither nolist nor a program listed in EXTERNAL",
                    ex.at, ex.shown
                ));
            }
            continue;
        }
        checked.nolist += 1;
        if let Err(e) = parse(&ex.argv) {
            checked
                .problems
                .push(format!("{}: `{}`: {e}", ex.at, ex.shown));
            continue;
        }
        let exception = EXCEPTIONS
            .iter()
            .find(|(f, command, _, _)| *f == file && *command == ex.shown);
        if let Some((f, command, _, _)) = exception {
            used.push((*f, *command));
        }
        let check = exception.map(|(_, _, check, _)| *check);
        // Built without DNS providers, diff and apply exit 2 by design.
        let without_providers = !cfg!(feature = "providers")
            && matches!(ex.argv.get(1).map(String::as_str), Some("diff" | "apply"));
        if check == Some(Check::ParseOnly) || without_providers {
            continue;
        }
        let dir = workspace.get_or_insert_with(workspace_dir);
        if let Err(e) = run_example(&ex, dir.path(), check) {
            checked
                .problems
                .push(format!("{}: `{}`: {e}", ex.at, ex.shown));
        }
    }
    checked
}

/// Runs one example in `dir`; says how it differed from the docs.
fn run_example(ex: &Example, dir: &std::path::Path, check: Option<Check>) -> Result<(), String> {
    let out = util::nolist()
        .current_dir(dir)
        .envs(ex.env.iter().map(|(k, v)| (k, v)))
        .args(&ex.argv[1..])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(ex.exit) {
        return Err(format!(
            "exit {:?}, the docs say {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status.code(),
            ex.exit
        ));
    }
    let Some(shown) = &ex.output else {
        return Ok(());
    };
    let got = format!("{stdout}{stderr}");
    let (got, shown) = match check {
        Some(Check::ExitOnly) => return Ok(()),
        Some(Check::NumbersVary) => (numbers_as_zero(&got), numbers_as_zero(shown)),
        _ => (got, shown.clone()),
    };
    if got != shown {
        return Err(format!(
            "output differs from the docs\nshown:\n{shown}\nprinted:\n{got}"
        ));
    }
    Ok(())
}

/// `text` with every run of ASCII digits replaced by one `0`.
fn numbers_as_zero(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = false;
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !digits {
            out.push('0');
        }
        digits = c.is_ascii_digit();
    }
    out
}

/// Parses `argv` (`nolist ARGS`) with nolist's own clap definition.
fn parse(argv: &[String]) -> Result<(), String> {
    use clap::Parser;
    match nolist::cli::Cli::try_parse_from(argv) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_owned()),
    }
}

/// A temporary directory like the one the docs' commands run in: copies of
/// `examples/` and `tests/data/` (modification times kept: `replay` takes
/// the year of syslog stamps from them) and `nolist.yaml`, the config of
/// docs/init.md's example, keeping its state in the directory.
fn workspace_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples"), &dir.path().join("examples"));
    copy_tree(&root().join("tests/data"), &dir.path().join("tests/data"));
    let init = std::fs::read_to_string(root().join("docs/init.md")).unwrap();
    let start = init.find("```yaml\n").expect("docs/init.md shows a config") + 8;
    let config = &init[start..start + init[start..].find("```").unwrap()];
    let state = format!("state_dir: {}\n", dir.path().join("state").display());
    let config = config.replace("state_dir: /var/lib/nolist\n", &state);
    assert!(
        config.contains(&state),
        "docs/init.md's config has no state_dir"
    );
    std::fs::write(dir.path().join("nolist.yaml"), config).unwrap();
    dir
}

/// Copies the files under `from` to `to`, with their modification times.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let modified = entry.metadata().unwrap().modified().unwrap();
            let file = std::fs::File::options().write(true).open(&target).unwrap();
            file.set_modified(modified).unwrap();
        }
    }
}

/// The example commands of the markdown `text` of `file`: the lines of
/// `sh` blocks, and the `$ ` lines of `console` blocks with the output
/// after them (docs/testing.md, "Documentation examples").
fn examples(file: &str, text: &str) -> Result<Vec<Example>, String> {
    let mut out: Vec<Example> = Vec::new();
    // The open fence's info string, and whether its block has a command yet.
    let mut block: Option<(&str, bool)> = None;
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            block = match block {
                None => Some((info.trim(), false)),
                Some(_) => None,
            };
            continue;
        }
        let Some((info, started)) = &mut block else {
            continue;
        };
        let command = match *info {
            "sh" if !trimmed.is_empty() && !trimmed.starts_with('#') => Some(trimmed),
            "console" => line.strip_prefix("$ "),
            _ => None,
        };
        if let Some(command) = command {
            out.push(example(&at, command, *info == "console")?);
            *started = true;
        } else if *info == "console" {
            let shown = out
                .last_mut()
                .and_then(|ex| ex.output.as_mut())
                .filter(|_| *started)
                .ok_or_else(|| format!("{at}: console output before any `$ ` command"))?;
            shown.push_str(line);
            shown.push('\n');
        }
    }
    Ok(out)
}

/// One command line: its words, leading `NAME=value`s, `# exits N`.
fn example(at: &str, line: &str, console: bool) -> Result<Example, String> {
    let (words, hash) = split_words(line).map_err(|e| format!("{at}: {e}"))?;
    let comment = hash.map(|at| line[at + 1..].trim());
    let exit = match comment.and_then(|c| c.strip_prefix("exits ")) {
        Some(n) => n
            .trim()
            .parse()
            .map_err(|_| format!("{at}: `# exits {n}` needs a number"))?,
        None => 0,
    };
    let mut words = words.into_iter().peekable();
    let mut env = Vec::new();
    while let Some(word) = words.next_if(|w| is_assignment(w)) {
        let (name, value) = word.split_once('=').unwrap();
        env.push((name.to_owned(), value.to_owned()));
    }
    let mut argv: Vec<String> = words.collect();
    if argv.is_empty() {
        return Err(format!("{at}: no command in `{line}`"));
    }
    if argv[0] == "cargo"
        && argv.get(1).is_some_and(|w| w == "run")
        && let Some(dashes) = argv.iter().position(|w| w == "--")
    {
        argv = std::iter::once("nolist".to_owned())
            .chain(argv.drain(dashes + 1..))
            .collect();
    }
    let shown = hash.map_or(line, |at| &line[..at]);
    Ok(Example {
        at: at.to_owned(),
        shown: shown.trim().to_owned(),
        env,
        argv,
        exit,
        output: console.then(String::new),
    })
}

/// `NAME=value` with a shell variable name.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    })
}

/// Splits a command line into words as a shell does for a simple command
/// (quotes, backslashes), and returns where its comment starts (a `#` that
/// starts a word). Pipes, redirections, lists and substitutions are
/// errors: the docs show one plain command a line.
fn split_words(line: &str) -> Result<(Vec<String>, Option<usize>), String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' | '\t' => {
                words.extend(word.take());
            }
            '#' if word.is_none() => return Ok((words, Some(i))),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => w.push(c),
                        None => return Err(format!("unclosed ' in `{line}`")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\'))
                            if chars.peek().is_some_and(|(_, n)| "\"\\$`".contains(*n)) =>
                        {
                            w.push(chars.next().unwrap().1);
                        }
                        Some((_, '$' | '`')) => {
                            return Err(format!("substitution in `{line}`"));
                        }
                        Some((_, c)) => w.push(c),
                        None => return Err(format!("unclosed \" in `{line}`")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some((_, c)) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("trailing \\ in `{line}`")),
            },
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => {
                return Err(format!("`{c}` in `{line}`: show one plain command a line"));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok((words, None))
}

/// Every relative link of the README, ARCHITECTURE.md and `docs/` names a
/// file that exists and, with a `#fragment`, a heading of it.
#[test]
fn every_doc_link_resolves() {
    let mut files = doc_files();
    files.push("ARCHITECTURE.md".to_owned());
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let dir = std::path::Path::new(file).parent().unwrap();
        for (number, line) in outside_fences(&text) {
            for target in links(line) {
                checked += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
                let path = if path.is_empty() {
                    std::path::PathBuf::from(file)
                } else {
                    normalize(&dir.join(path))
                };
                let full = root().join(&path);
                let ok = full.exists()
                    && (fragment.is_empty()
                        || std::fs::read_to_string(&full)
                            .is_ok_and(|t| anchors(&t).iter().any(|a| a == fragment)));
                if !ok {
                    broken.push(format!("{file}:{number}: {target}"));
                }
            }
        }
    }
    assert!(
        checked > 80,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_github_s() {
    let text = "# `nolist bans` and `nolist status`\n## Export: `nolist bans export`\n\
                ```sh\n# not a heading\n```\n### Lints\n## Lints\n## How senders fall back\n";
    assert_eq!(
        anchors(text),
        [
            "nolist-bans-and-nolist-status",
            "export-nolist-bans-export",
            "lints",
            "lints-1",
            "how-senders-fall-back"
        ]
    );
    assert_eq!(
        links("see [a](docs/b.md#c), [d](#e) and [f](https://x.example/g)"),
        ["docs/b.md#c", "#e"]
    );
}

/// The link targets of `line` that are not URLs, fragments kept.
fn links(line: &str) -> Vec<String> {
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            let target = &rest[..rest.find([')', ' '])?];
            let url = target.contains(':') || target.starts_with('/');
            (!target.is_empty() && !url).then(|| target.to_owned())
        })
        .collect()
}

/// The fragments GitHub gives the headings of a markdown text: lower case,
/// punctuation dropped, spaces as `-`, a repeated one numbered.
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    for (_, line) in outside_fences(text) {
        let hashes = line.bytes().take_while(|&c| c == b'#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug: String = line[hashes..]
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let seen = bases.iter().filter(|b| **b == slug).count();
        out.push(if seen == 0 {
            slug.clone()
        } else {
            format!("{slug}-{seen}")
        });
        bases.push(slug);
    }
    out
}

/// `path` with its `..` and `.` components resolved (a link from
/// `docs/x.md` to `../README.md` is `README.md`).
fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
