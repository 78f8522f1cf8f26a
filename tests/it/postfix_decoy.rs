//! nolist's `rcpt-450` responder against the classic hand-made decoy it
//! replaces (a real Postfix `smtpd` with a pcre `smtpd_client_restrictions`
//! map answering `450`, see `util::postfix`): the same swaks dialogues get
//! the same reply class at every stage from both.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use crate::util;
use crate::util::postfix::Postfix;
use crate::util::require_tool;
use crate::util::serve::Server;

/// What a dialogue looked like to the client: each stage (`banner`, then
/// the verb of every command sent, in order) with the class (first digit)
/// of its final reply line, and swaks' exit code.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    stages: Vec<(String, char)>,
    exit: Option<i32>,
}

/// Runs swaks with `args` against `addr` and pairs commands with replies
/// (pipelined commands are answered in order).
fn swaks(tool: &Path, addr: SocketAddr, args: &[&str]) -> (Transcript, String) {
    let out = Command::new(tool)
        .args(["--server", &addr.to_string(), "--timeout", "10"])
        .args(["--helo", "bot.example", "--from", "bot@spam.example"])
        .args(args)
        .output()
        .expect("run swaks");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut sent = vec!["banner".to_owned()];
    let mut classes = Vec::new();
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix(" -> ") {
            let verb = cmd
                .split([' ', ':'])
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            sent.push(verb);
        } else if let Some(reply) = line
            .strip_prefix("<- ")
            .or_else(|| line.strip_prefix("<** "))
        {
            let reply = reply.trim_start();
            // Final line of a (possibly multi-line) reply: "NNN " or "NNN".
            let code = reply
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()));
            let last = reply.len() == 3 || reply.as_bytes().get(3) == Some(&b' ');
            if let (Some(code), true) = (code, last) {
                classes.push(code.chars().next().unwrap_or('?'));
            }
        }
    }
    let n = sent.len().max(classes.len());
    let stages = (0..n)
        .map(|i| {
            (
                sent.get(i).cloned().unwrap_or_else(|| "unsolicited".into()),
                classes.get(i).copied().unwrap_or('-'),
            )
        })
        .collect();
    let transcript = Transcript {
        stages,
        exit: out.status.code(),
    };
    (
        transcript,
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

fn nolist_rcpt_450(dir: &Path) -> Server {
    let config = dir.join("nolist.yaml");
    std::fs::write(
        &config,
        "domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [127.0.0.1] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
responder:
  mode: rcpt-450
  listen: [\"127.0.0.1:0\"]
bans: { enforce: { backend: none } }
",
    )
    .unwrap();
    Server::start_with("run", &config, &[], 1)
        .unwrap_or_else(|log| panic!("nolist run did not start:\n{log}"))
}

/// One swaks dialogue and the stages and classes both decoys must give.
struct Dialogue {
    name: &'static str,
    args: &'static [&'static str],
    expected: &'static [(&'static str, char)],
}

/// The dialogues.
const DIALOGUES: &[Dialogue] = &[
    Dialogue {
        name: "EHLO, quit after RCPT (swaks --quit-after RCPT)",
        args: &["--to", "user@example.org", "--quit-after", "RCPT"],
        expected: &[
            ("banner", '2'),
            ("EHLO", '2'),
            ("MAIL", '2'),
            ("RCPT", '4'),
            ("QUIT", '2'),
        ],
    },
    Dialogue {
        name: "pipelined MAIL, RCPT, DATA (swaks --pipeline)",
        args: &["--to", "user@example.org", "--pipeline"],
        expected: &[
            ("banner", '2'),
            ("EHLO", '2'),
            ("MAIL", '2'),
            ("RCPT", '4'),
            ("DATA", '5'),
            ("QUIT", '2'),
        ],
    },
    Dialogue {
        name: "HELO (swaks --protocol SMTP), full run",
        args: &["--to", "user@example.org", "--protocol", "SMTP"],
        expected: &[
            ("banner", '2'),
            ("HELO", '2'),
            ("MAIL", '2'),
            ("RCPT", '4'),
            ("QUIT", '2'),
        ],
    },
    Dialogue {
        name: "two recipients, null sender",
        args: &[
            "--to",
            "user@example.org,postmaster@example.org",
            "--from",
            "<>",
            "--quit-after",
            "RCPT",
        ],
        expected: &[
            ("banner", '2'),
            ("EHLO", '2'),
            ("MAIL", '2'),
            ("RCPT", '4'),
            ("RCPT", '4'),
            ("QUIT", '2'),
        ],
    },
    Dialogue {
        name: "quit after MAIL",
        args: &["--to", "user@example.org", "--quit-after", "FROM"],
        expected: &[("banner", '2'), ("EHLO", '2'), ("MAIL", '2'), ("QUIT", '2')],
    },
];

#[test]
fn rcpt_450_matches_the_classic_postfix_decoy_at_every_stage() {
    let Some(tool) = require_tool("swaks", "swaks") else {
        return;
    };
    // The classic decoy is "a second smtpd on another address": 127.0.0.2.
    let Some(postfix) = Postfix::start_decoy(Ipv4Addr::new(127, 0, 0, 2)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nolist = nolist_rcpt_450(dir.path());
    let ours = nolist.addr("smtp", false);
    for Dialogue {
        name,
        args,
        expected,
    } in DIALOGUES
    {
        let (theirs, their_text) = swaks(&tool, postfix.addr, args);
        let (mine, my_text) = swaks(&tool, ours, args);
        let context = format!(
            "dialogue: {name}\n--- Postfix decoy at {}:\n{their_text}\n--- nolist at {ours}:\n{my_text}\n--- Postfix log:\n{}",
            postfix.addr,
            postfix.log()
        );
        let expected: Vec<(String, char)> = expected
            .iter()
            .map(|(s, c)| ((*s).to_owned(), *c))
            .collect();
        // The peer first: if Postfix does not behave as the classic decoy,
        // the comparison means nothing.
        assert_eq!(theirs.stages, expected, "Postfix decoy\n{context}");
        assert_eq!(
            mine.stages, theirs.stages,
            "reply classes differ\n{context}"
        );
        assert_eq!(mine.exit, theirs.exit, "swaks exit codes differ\n{context}");
        // Both give the same enhanced status code at RCPT.
        for text in [&their_text, &my_text] {
            if expected.iter().any(|(s, _)| s == "RCPT") {
                assert!(text.contains("450 4.7.1 "), "{context}");
            }
        }
    }
}

#[test]
fn the_postfix_harness_leaves_nothing_running() {
    let Some(postfix) = Postfix::start_decoy(Ipv4Addr::new(127, 0, 0, 2)) else {
        return;
    };
    let config_dir = postfix.config_dir();
    let addr = postfix.addr;
    let running = postfix.pids();
    assert!(running.len() >= 2, "master and its daemons: {running:?}");
    drop(postfix);
    assert_eq!(util::postfix::instance_pids(&config_dir), Vec::<u32>::new());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "{addr} still accepts connections"
    );
}
