//! `nolist init` end to end: real Postfix configuration directories
//! written by the test, the config it writes compared with golden files
//! under `tests/it/snapshots/init/` (regenerate with `UPDATE_GOLDEN=1`),
//! each planned by `nolist plan`; errors, overwrite protection, the
//! fail2ban jail, and live DNS from a `nolist serve` on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::serve::Server;
use crate::util::{nolist, root};

/// The hand-wired decoy most nolisting guides describe: a second smtpd on
/// the decoy address with a pcre map answering 450 to everyone.
const CLASSIC_MAIN: &str = "\
# main.cf of the real MX
myhostname = mx2.example.org
mydomain = example.org
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
relay_domains = shop.example
inet_interfaces = 127.0.0.1, 192.0.2.20, [2001:db8::20]
maillog_file = /var/log/postfix.log
";
const CLASSIC_MASTER: &str = "\
smtp      inet  n       -       y       -       -       smtpd
192.0.2.10:smtp inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/decoy
  -o smtpd_client_restrictions=pcre:/etc/postfix/decoy_450.pcre
  -o smtpd_delay_reject=yes
pickup    unix  n       -       y       60      1       pickup
";
const DECOY_PCRE: &str = "/./ 450 4.7.1 Service temporarily unavailable, try again later\n";

/// A Postfix with no decoy, on every address, logging through syslog.
const PLAIN_MAIN: &str = "\
myhostname = mail.example.net
mydestination = $myhostname, localhost, example.net
virtual_alias_domains = shop.example
";
const PLAIN_MASTER: &str = "smtp inet n - y - - smtpd\nsubmission inet n - y - - smtpd\n  -o syslog_name=postfix/submission\n";

/// Tabs, runs of spaces, `{ }` overrides, a `-o key = value` (which
/// Postfix does not take as a setting) and continuation lines of tabs; the decoy on IPv6, its map a regexp one
/// answering 451, its syslog name built from a `$variable`.
const SPACING_MAIN: &str = "myhostname=mx2.example.com\nmydestination =\n\texample.com,\n    $myhostname\ninet_interfaces = 192.0.2.20\n  [2001:db8::20]\ndecoy_name = postfix/trap\n";
const SPACING_MASTER: &str = "\
# decoy on IPv6
[2001:db8::10]:25\tinet\tn\t-\tn\t-\t-\tsmtpd
\t-o { syslog_name = $decoy_name }
        -o {smtpd_recipient_restrictions = regexp:decoy.regexp}
  -o smtpd_helo_restrictions = defer
smtp\t\tinet   n -   y   -   -   smtpd
";
const DECOY_REGEXP: &str = "# everyone\n/^/ 451 4.3.0 Try again later\n";

/// Writes `files` into a new Postfix directory.
fn postfix_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn classic() -> tempfile::TempDir {
    postfix_dir(&[
        ("main.cf", CLASSIC_MAIN),
        ("master.cf", CLASSIC_MASTER),
        ("decoy_450.pcre", DECOY_PCRE),
    ])
}

/// Runs `nolist init ARGS` (no fail2ban directory unless given); exit
/// code, stdout, stderr.
fn init(args: &[&str]) -> (i32, String, String) {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = nolist();
    cmd.arg("init").args(args);
    if !args.contains(&"--fail2ban") {
        cmd.arg("--fail2ban").arg(empty.path());
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` equals the golden file `name` (with the Postfix directory's
/// temporary path written as `/etc/postfix`); `UPDATE_GOLDEN=1` rewrites it.
fn assert_golden(name: &str, text: &str, dir: &Path) {
    let text = text.replace(dir.to_str().unwrap(), "/etc/postfix");
    let path = root().join("tests/it/snapshots/init").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        want,
        text,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

/// `nolist plan -c` on `text` succeeds without an error finding.
fn assert_plans(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("nolist.yaml");
    std::fs::write(&config, text).unwrap();
    let out = nolist().args(["plan", "-c"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "plan failed:\n{stderr}\n{text}");
    assert!(!stderr.contains("error"), "{stderr}");
}

/// Every file under `dir` with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
                out.insert(path, Vec::new());
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn classic_decoy_gives_the_golden_config_and_writes_only_out() {
    let dir = classic();
    let before = tree(dir.path());
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("nolist.yaml");
    let (code, stdout, stderr) = init(&[
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--no-dns",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "", "with --out nothing goes to stdout");
    assert_eq!(
        tree(dir.path()),
        before,
        "init changed the Postfix directory"
    );
    let entries: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "init left more than --out behind");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_golden("classic.yaml", &text, dir.path());
    assert_plans(&text);
    for step in [
        "nolist plan -c",
        "nolist verify -c",
        "nolist run -c",
        "DNS:",
        "master.cf line 2",
        "can keep running",
        "refuse",
    ] {
        assert!(stderr.contains(step), "next steps lack {step:?}:\n{stderr}");
    }
}

#[test]
fn postfix_without_a_decoy_gives_the_golden_config() {
    let dir = postfix_dir(&[("main.cf", PLAIN_MAIN), ("master.cf", PLAIN_MASTER)]);
    let (code, stdout, stderr) =
        init(&["--from-postfix", dir.path().to_str().unwrap(), "--no-dns"]);
    assert_eq!(code, 0, "{stderr}");
    assert_golden("no-decoy.yaml", &stdout, dir.path());
    assert_plans(&stdout);
    assert!(stdout.contains("# CHECK: no decoy found"), "{stdout}");
    assert!(stderr.contains("Save the config above"), "{stderr}");
}

#[test]
fn unusual_spacing_and_continuation_lines_give_the_golden_config() {
    let dir = postfix_dir(&[
        ("main.cf", SPACING_MAIN),
        ("master.cf", SPACING_MASTER),
        ("decoy.regexp", DECOY_REGEXP),
    ]);
    let (code, stdout, stderr) =
        init(&["--from-postfix", dir.path().to_str().unwrap(), "--no-dns"]);
    assert_eq!(code, 0, "{stderr}");
    assert_golden("spacing.yaml", &stdout, dir.path());
    assert_plans(&stdout);
    assert!(
        stdout.contains("decoy_syslog_name: postfix/trap"),
        "{stdout}"
    );
    assert!(stdout.contains("ipv6: [\"2001:db8::10\"]"), "{stdout}");
}

#[test]
fn missing_or_unreadable_directory_is_a_clear_error() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("postfix");
    let (code, stdout, stderr) = init(&["--from-postfix", missing.to_str().unwrap(), "--no-dns"]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    // main.cf that cannot be read (a directory: unreadable even for root).
    let dir = postfix_dir(&[("master.cf", CLASSIC_MASTER)]);
    std::fs::create_dir(dir.path().join("main.cf")).unwrap();
    let out = parent.path().join("out.yaml");
    let (code, _, stderr) = init(&[
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--no-dns",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}/main.cf", dir.path().display())),
        "{stderr}"
    );
    assert!(!out.exists(), "a failed init wrote --out");
}

#[test]
fn an_existing_out_is_kept_unless_forced() {
    let dir = classic();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("nolist.yaml");
    std::fs::write(&out, "mine\n").unwrap();
    let args = [
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--no-dns",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, _, stderr) = init(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine\n");
    let (code, _, stderr) = init(&[&args[..], &["--force"]].concat());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::read_to_string(&out)
            .unwrap()
            .contains("decoy_syslog_name")
    );
}

#[test]
fn domains_come_from_the_flags_or_are_asked_for() {
    let dir = classic();
    let (code, stdout, stderr) = init(&[
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--no-dns",
        "--domain",
        "Bücher.example",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("- name: xn--bcher-kva.example"), "{stdout}");
    assert!(!stdout.contains("shop.example"), "{stdout}");
    assert_plans(&stdout);
    let (code, _, stderr) = init(&["--no-dns"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--domain"), "{stderr}");
    let (code, stdout, stderr) = init(&["--no-dns", "--domain", "bad..example"]);
    assert_eq!((code, stdout.as_str()), (2, ""), "{stderr}");
    assert!(stderr.contains("--domain \"bad..example\""), "{stderr}");
}

#[test]
fn a_fail2ban_jail_on_the_decoys_lines_is_named_in_the_next_steps() {
    let dir = classic();
    let f2b = postfix_dir(&[
        (
            "jail.conf",
            "[DEFAULT]\nenabled = false\n[sshd]\nenabled = true\n[mail-trap]\nfilter = mail-trap\n",
        ),
        (
            "jail.local",
            "[mail-trap]\nenabled = true\nlogpath = /var/log/mail.log\n",
        ),
    ]);
    std::fs::create_dir(f2b.path().join("filter.d")).unwrap();
    std::fs::write(
        f2b.path().join("filter.d/mail-trap.conf"),
        "[Definition]\nfailregex = ^.*postfix/decoy/smtpd\\[\\d+\\]: NOQUEUE: reject: .*\\[<HOST>\\]\n",
    )
    .unwrap();
    let (code, _, stderr) = init(&[
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--no-dns",
        "--fail2ban",
        f2b.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("disable jail mail-trap once `nolist run` enforces"),
        "{stderr}"
    );
    assert!(!stderr.contains("jail sshd"), "{stderr}");
}

/// The zones live DNS serves in the DNS test: the decoy where Postfix has
/// it, the real MX on another address than Postfix listens on; shop.example
/// has no MX at all.
const LIVE: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 5, ipv4: [192.0.2.10] }
    real:
      - { host: mx2.example.org, preference: 50, ipv4: [192.0.2.21] }
dns:
  soa: { mname: ns1.example.org, rname: hostmaster.example.org }
  ns: [{ host: ns1.example.org, ipv4: [192.0.2.53] }]
";

#[test]
fn live_dns_fills_the_layout_and_disagreements_are_reported() {
    let zones = tempfile::tempdir().unwrap();
    let config = zones.path().join("live.yaml");
    std::fs::write(&config, LIVE).unwrap();
    let server = Server::start(&config);
    let ns = server.addr("udp", false).to_string();
    let dir = classic();
    let (code, stdout, stderr) = init(&[
        "--from-postfix",
        dir.path().to_str().unwrap(),
        "--nameserver",
        &ns,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_golden("live-dns.yaml", &stdout, dir.path());
    assert_plans(&stdout);
    assert!(
        stderr.contains("live DNS disagrees: example.org: mx2.example.org does not resolve to the real MTA's address 192.0.2.20"),
        "{stderr}"
    );
    assert!(
        stderr.contains("live DNS disagrees: shop.example: live DNS: "),
        "{stderr}"
    );
    assert!(
        stdout.contains("host: mx01.example.org\n      preference: 5\n"),
        "{stdout}"
    );

    // Without a decoy service, the lowest MX that Postfix does not listen
    // on (inet_interfaces excludes it) is taken as the decoy.
    let plain = postfix_dir(&[
        (
            "main.cf",
            "myhostname = mx2.example.org\nmydestination = example.org\ninet_interfaces = 192.0.2.21\n",
        ),
        ("master.cf", "smtp inet n - y - - smtpd\n"),
    ]);
    let (code, stdout, stderr) = init(&[
        "--from-postfix",
        plain.path().to_str().unwrap(),
        "--nameserver",
        &ns,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("the decoy: the lowest MX, on addresses the real MTA does not listen on"),
        "{stdout}"
    );
    assert!(stdout.contains("host: mx01.example.org"), "{stdout}");
    assert!(!stderr.contains("disagrees"), "{stderr}");
    assert_plans(&stdout);
}

/// The fenced blocks of `docs/init.md` whose info string starts with
/// `kind`, each with the word after it (`cf main.cf`) or "".
fn doc_blocks(kind: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("docs/init.md")).unwrap();
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        if words.next() == Some(kind) {
            let name = words.next().unwrap_or("").to_owned();
            out.push((name, body.join("\n") + "\n"));
        }
    }
    out
}

/// docs/init.md's example is real: its Postfix files, written to a
/// directory, give the config and the next steps it shows.
#[test]
fn the_documented_example_is_real_output() {
    let files = doc_blocks("cf");
    assert_eq!(
        files.len(),
        3,
        "docs/init.md shows main.cf, master.cf and a table"
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let docs = std::fs::read_to_string(root().join("docs/init.md")).unwrap();
    assert!(docs.contains("`nolist init --from-postfix /etc/postfix --no-dns`"));
    let (code, stdout, stderr) =
        init(&["--from-postfix", dir.path().to_str().unwrap(), "--no-dns"]);
    assert_eq!(code, 0, "{stderr}");
    let stdout = stdout.replace(dir.path().to_str().unwrap(), "/etc/postfix");
    let yaml = doc_blocks("yaml");
    assert_eq!(yaml[0].1, stdout, "docs/init.md shows another config");
    assert_plans(&stdout);
    let steps = doc_blocks("text");
    assert!(
        steps.iter().any(|(_, t)| *t == stderr),
        "docs/init.md shows other next steps than:\n{stderr}"
    );
}

/// The parsers read `main.cf` and `master.cf` as Postfix does: the values
/// `postconf -x -h` expands and the `-o` overrides `postconf -P` lists.
#[test]
fn parsers_agree_with_postconf() {
    let Some(postconf) = crate::util::require_tool("postconf", "postfix") else {
        return;
    };
    // inet_interfaces left out: postconf insists on local addresses.
    let main = SPACING_MAIN.replace("inet_interfaces = 192.0.2.20\n  [2001:db8::20]\n", "")
        + "mydomain = example.com\nrelay_domains = $mydomain, ${decoy_name}x\n";
    let master = format!("{SPACING_MASTER}{CLASSIC_MASTER}");
    let dir = postfix_dir(&[("main.cf", &main), ("master.cf", &master)]);
    let conf = dir.path().to_str().unwrap();
    let parsed = nolist::init::postfix::MainCf::parse(&main);
    for key in ["mydestination", "relay_domains", "myhostname"] {
        let want = crate::util::run_ok(postconf.to_str().unwrap(), &["-c", conf, "-x", "-h", key]);
        assert_eq!(parsed.get(key).unwrap(), want.trim_end(), "{key}");
    }
    let want = crate::util::run_ok(postconf.to_str().unwrap(), &["-c", conf, "-P"]);
    let mut want: Vec<String> = want.lines().map(str::to_owned).collect();
    let mut got: Vec<String> = nolist::init::postfix::parse_master(&master)
        .iter()
        .flat_map(|s| {
            s.overrides
                .iter()
                .map(move |(k, v)| format!("{}/{}/{k} = {v}", s.service, s.kind))
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}
