//! Config loading: every error path names the line and column, and every
//! table rejects unknown keys.

use std::path::Path;

use super::*;

const MINIMAL: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }
";

fn ok(yaml: &str) -> Config {
    parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Parses `yaml`, expects an error, and returns `(line, column, message)`.
fn err(yaml: &str) -> (u32, u32, String) {
    match parse(yaml, Path::new("t.yaml")) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(ConfigError::Invalid {
            path,
            line,
            column,
            message,
        }) => {
            assert_eq!(path, "t.yaml");
            (line, column, message)
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[track_caller]
fn assert_err(yaml: &str, line: u32, column: u32, needle: &str) {
    let (l, c, m) = err(yaml);
    assert_eq!((l, c), (line, column), "position of {m:?}");
    assert!(m.contains(needle), "{m:?} does not mention {needle:?}");
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = ok(MINIMAL);
    assert_eq!(c.state_dir, Path::new("/var/lib/nolist"));
    let d = &c.domains[0];
    assert_eq!(d.ttl, 3600);
    assert_eq!(d.layout, Layout::Classic);
    assert_eq!(d.at, Loc { line: 2, column: 5 });
    assert_eq!(d.decoy.at.line, 3);
    assert_eq!(c.responder.mode, Mode::Refuse);
    assert_eq!(c.bans.maxretry, 3);
    assert_eq!(c.bans.grace.as_secs(), 600);
    assert_eq!(c.bans.bantime.as_secs(), 86_400);
    assert_eq!((c.bans.networks.ipv4.0, c.bans.networks.ipv6.0), (24, 64));
    assert_eq!(c.bans.enforce.ports, vec![25]);
    assert!(c.dns.soa.is_none() && c.dns.ns.is_empty());
}

#[test]
fn durations_ttls_and_names_are_normalised() {
    let c = ok(&format!(
        "{MINIMAL}bans: {{ findtime: 90m, grace: 30, bantime: 1w }}\n\
         dns:\n  soa: {{ mname: NS1.Example.NET., rname: first.last@example.org, refresh: 2h }}\n  \
         ns: [ns1.example.net]\n"
    ));
    assert_eq!(c.bans.findtime.as_secs(), 5400);
    assert_eq!(c.bans.grace.as_secs(), 30);
    assert_eq!(c.bans.bantime.as_secs(), 7 * 86_400);
    let soa = c.dns.soa.unwrap();
    assert_eq!(soa.mname.to_string(), "ns1.example.net.");
    assert_eq!(soa.rname, "first\\.last.example.org.");
    assert_eq!((soa.serial, soa.refresh, soa.retry), (1, 7200, 900));
    let c = ok(&MINIMAL.replace("name: example.org", "name: Bücher.Example.\n    ttl: 2h"));
    assert_eq!(c.domains[0].name.as_str(), "xn--bcher-kva.example");
    assert_eq!(c.domains[0].ttl, 7200);
}

#[test]
fn wrong_type() {
    assert_err(
        &MINIMAL.replace("preference: 10", "preference: ten"),
        3,
        50,
        "",
    );
    assert_err(&format!("{MINIMAL}bans: {{ maxretry: [1] }}\n"), 6, 19, "");
    assert_err("domains: example.org\n", 1, 10, "");
}

#[test]
fn preference_out_of_range() {
    assert_err(
        &MINIMAL.replace("preference: 10", "preference: 70000"),
        3,
        50,
        "",
    );
}

#[test]
fn invalid_ip() {
    assert_err(&MINIMAL.replace("192.0.2.10", "192.0.2.300"), 3, 61, "IPv4");
    // An IPv6 address in the ipv4 list is the wrong family.
    assert_err(
        &MINIMAL.replace("192.0.2.10", "\"2001:db8::1\""),
        3,
        61,
        "IPv4",
    );
    assert_err(
        &MINIMAL.replace("ipv4: [192.0.2.20]", "ipv6: [2001:db8::zz]"),
        5,
        58,
        "IPv6",
    );
    assert_err(
        &format!("{MINIMAL}responder: {{ listen: [192.0.2.10] }}\n"),
        6,
        23,
        "socket address",
    );
}

#[test]
fn zero_limits_are_rejected() {
    for key in ["max_connections", "max_per_ip", "max_line", "max_commands"] {
        assert_err(
            &format!("{MINIMAL}responder:\n  {key}: 0\n"),
            7,
            3,
            "nonzero",
        );
    }
}

#[test]
fn responder_threads_are_bounded() {
    assert_eq!(ok(MINIMAL).responder.threads.0, 1);
    let c = ok(&format!("{MINIMAL}responder:\n  threads: 4\n"));
    assert_eq!(c.responder.threads.0, 4);
    for bad in ["0", "65", "-1"] {
        assert_err(
            &format!("{MINIMAL}responder:\n  threads: {bad}\n"),
            7,
            12,
            "",
        );
    }
    let (_, _, m) = err(&format!("{MINIMAL}responder:\n  threads: 65\n"));
    assert!(
        m.contains("responder threads must be 1 to 64, not 65"),
        "{m}"
    );
}

#[test]
fn duplicate_address() {
    assert_err(
        &MINIMAL.replace("[192.0.2.10]", "[192.0.2.10, 192.0.2.10]"),
        3,
        73,
        "listed twice",
    );
}

#[test]
fn invalid_cidr() {
    assert_err(
        &format!("{MINIMAL}bans:\n  ignore: [10.0.0.0/33]\n"),
        7,
        12,
        "invalid CIDR",
    );
    assert_err(
        &format!("{MINIMAL}bans:\n  ignore: [\"192.0.2.7/24\"]\n"),
        7,
        12,
        "host bits",
    );
    assert_err(
        &format!("{MINIMAL}bans:\n  networks: {{ ipv4: 33 }}\n"),
        7,
        21,
        "prefix length",
    );
}

#[test]
fn invalid_duration() {
    assert_err(
        &format!("{MINIMAL}bans:\n  grace: 10 parsecs\n"),
        7,
        10,
        "invalid duration",
    );
    assert_err(&format!("{MINIMAL}bans:\n  grace: -5\n"), 7, 10, "negative");
    assert_err(
        &MINIMAL.replace("name: example.org", "name: example.org\n    ttl: 100y"),
        3,
        10,
        "RFC 2181",
    );
}

#[test]
fn invalid_names() {
    assert_err(
        &MINIMAL.replace("name: example.org", "name: exa_mple.org"),
        2,
        11,
        "not a valid host name",
    );
    assert_err(
        &MINIMAL.replace("host: mx02.example.org", "host: \"mx 02.example.org\""),
        5,
        17,
        "not a valid host name",
    );
}

#[test]
fn unknown_enum_value() {
    assert_err(
        &format!("{MINIMAL}responder: {{ mode: reject-550 }}\n"),
        6,
        20,
        "unknown variant",
    );
    assert_err(
        &MINIMAL.replace(
            "name: example.org",
            "name: example.org\n    layout: pyramid",
        ),
        3,
        13,
        "unknown variant",
    );
}

#[test]
fn duplicate_domain() {
    let yaml = format!("{MINIMAL}{}", &MINIMAL["domains:\n".len()..]).replace(
        "- name: example.org\n    decoy: { host: mx01",
        "- name: EXAMPLE.org.\n    decoy: { host: mx01",
    );
    let (l, c, m) = err(&yaml);
    assert_eq!((l, c), (6, 11), "{m}");
    assert!(
        m.contains("duplicate domain example.org") && m.contains("line 2"),
        "{m}"
    );
}

/// Regression: a duplicate key read `duplicate mapping key: dns, set
/// DuplicateKeyPolicy in Options if acceptable`, advice about the parser's
/// options; the message names the key and both places instead.
#[test]
fn duplicate_key() {
    let (line, column, message) = err(&MINIMAL.replace(
        "name: example.org",
        "name: example.org\n    name: example.net",
    ));
    assert_eq!(
        (line, column, message.as_str()),
        (3, 5, "duplicate key \"name\" (first at line 2, column 5)")
    );
    for (yaml, at, first) in [
        // Top level, a section written twice.
        (
            format!("dns: {{}}\n{MINIMAL}dns: {{}}\n"),
            (7, 1),
            "line 1, column 1",
        ),
        // Inside a flow mapping, quoted the second time.
        (
            format!("{MINIMAL}bans:\n  escalation: {{factor: 2, \"factor\": 3}}\n"),
            (7, 27),
            "line 7, column 16",
        ),
        // Nested block mappings: the same key in a sibling mapping is no duplicate.
        (
            format!(
                "{MINIMAL}bans:\n  allow: {{ refresh: 1d }}\n  networks:\n    ipv4: 24\n    ipv6: 64\n    ipv4: 16\n"
            ),
            (11, 5),
            "line 9, column 5",
        ),
    ] {
        let (line, column, message) = err(&yaml);
        assert_eq!((line, column), at, "{message}");
        assert!(message.starts_with("duplicate key"), "{message}");
        assert!(
            message.ends_with(&format!("(first at {first})")),
            "{message}"
        );
        assert!(!message.contains("Options"), "{message}");
    }
}

/// Regression: `bantime` and `escalation.max` had no bound, and a ban of
/// centuries printed its end in a year beyond 9999.
#[test]
fn ban_lengths_are_capped_at_ten_years() {
    assert_err(
        &format!("{MINIMAL}bans:\n  bantime: 11y\n"),
        7,
        12,
        "at most 3650d",
    );
    assert_err(
        &format!("{MINIMAL}bans:\n  escalation: {{ max: 1000000000000 }}\n"),
        7,
        22,
        "longest ban",
    );
    let c = ok(&format!(
        "{MINIMAL}bans:\n  bantime: 3650d\n  escalation: {{ max: 3650d }}\n"
    ));
    assert_eq!(c.bans.bantime, value::MAX_BAN);
}

#[test]
fn missing_required_keys() {
    assert_err("state_dir: /tmp\n", 1, 1, "missing field `domains`");
    assert_err("domains: []\n", 1, 10, "`domains` is empty");
    assert_err(
        &MINIMAL.replace(
            "    real:\n      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }\n",
            "    real: []\n",
        ),
        4,
        11,
        "`real` is empty",
    );
}

#[test]
fn layout_and_tail_decoy_must_agree() {
    assert_err(
        &MINIMAL.replace(
            "name: example.org",
            "name: example.org\n    layout: sandwich",
        ),
        2,
        5,
        "needs a `tail_decoy`",
    );
    assert_err(
        &format!("{MINIMAL}    tail_decoy: {{ host: mx9.example.org, preference: 90 }}\n"),
        6,
        17,
        "only used with `layout: sandwich`",
    );
}

#[test]
fn soa_and_ns_come_together() {
    assert_err(
        &format!("{MINIMAL}dns:\n  soa: {{ mname: ns1.example.net, rname: h@example.org }}\n"),
        7,
        8,
        "needs `dns.ns`",
    );
    assert_err(
        &format!("{MINIMAL}dns:\n  ns: [ns1.example.net]\n"),
        7,
        7,
        "needs `dns.soa`",
    );
    assert_err(
        &format!(
            "{MINIMAL}dns:\n  soa: {{ mname: ns1.example.net, rname: h@example.org }}\n  ns: []\n"
        ),
        8,
        7,
        "`dns.ns` is empty",
    );
    assert_err(
        &format!(
            "{MINIMAL}dns:\n  soa: {{ mname: ns1.example.net, rname: \"a b@example.org\" }}\n  ns: [ns1.example.net]\n"
        ),
        7,
        41,
        "invalid `rname`",
    );
}

#[test]
fn empty_and_blank_files() {
    for text in ["", "\n\n   \n"] {
        assert_err(text, 1, 1, "empty");
    }
    // Only comments counts as empty too.
    assert_err("# nothing here\n\n  # nor here\n", 1, 1, "empty");
}

#[test]
fn yaml_syntax_error() {
    let (l, _, _) = err("domains:\n  - name: [unclosed\n");
    assert!(l >= 2);
}

#[test]
fn non_utf8_file_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"domains:\n  - name: b\xfccher.example\n").unwrap();
    match load(&path) {
        Err(ConfigError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            assert_eq!((line, column), (2, 12));
            assert!(message.contains("UTF-8"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("nope.yaml"), "{e}");
    // A directory is unreadable as a file.
    assert!(matches!(
        load(dir.path()).unwrap_err(),
        ConfigError::Read { .. }
    ));
}

/// A config that opens every table in block style. Each `#BOGUS` marker is
/// where an unknown key is injected (at the marked line's indentation); the test proves every table rejects it.
const EVERY_TABLE: &str = "\
state_dir: /tmp/nolist #BOGUS
domains:
  - name: example.org #BOGUS
    layout: sandwich
    decoy:
      host: mx01.example.org #BOGUS
      preference: 10
    real:
      - host: mx02.example.org #BOGUS
        preference: 20
    tail_decoy:
      host: mx99.example.org #BOGUS
      preference: 90
    provider:
      kind: zonefile #BOGUS
      dir: zones
provider:
  kind: zonefile #BOGUS
  dir: /srv/zones
responder:
  mode: refuse #BOGUS
mta:
  logs: [/var/log/mail.log] #BOGUS
bans:
  maxretry: 3 #BOGUS
  escalation:
    factor: 2 #BOGUS
  allow:
    spf: [gmail.com] #BOGUS
  networks:
    ipv4: 24 #BOGUS
  enforce:
    backend: none #BOGUS
    command:
      ban: [/bin/true, \"{ip}\"] #BOGUS
      unban: [/bin/true]
    fail2ban:
      jail: nolist #BOGUS
dns:
  serve:
    listen: [\"127.0.0.1:5353\"] #BOGUS
  soa:
    mname: ns1.example.net #BOGUS
    rname: hostmaster@example.org
  ns:
    - host: ns1.example.net #BOGUS
    - ns2.example.net
  #BOGUS
metrics:
  listen: \"127.0.0.1:9425\" #BOGUS
";

#[test]
fn every_table_rejects_unknown_keys() {
    let plain: String = EVERY_TABLE
        .lines()
        .map(|l| l.split(" #BOGUS").next().unwrap_or(l))
        .filter(|l| !l.trim_start().starts_with("#BOGUS"))
        .map(|l| format!("{l}\n"))
        .collect();
    ok(&plain);
    let marked: Vec<usize> = EVERY_TABLE
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("#BOGUS"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(marked.len(), 21, "one marker per table");
    for &target in &marked {
        let mut expected_line = 0;
        let mut text = String::new();
        for (i, line) in EVERY_TABLE.lines().enumerate() {
            let content = line.split_once("#BOGUS").map_or(line, |(c, _)| c);
            if !content.trim().is_empty() {
                text.push_str(content.trim_end());
                text.push('\n');
            }
            if i == target {
                // The new key goes at the column of the line's own key.
                let lead = content.len() - content.trim_start().len();
                let indent = lead
                    + if content.trim_start().starts_with("- ") {
                        2
                    } else {
                        0
                    };
                text.push_str(&format!("{}bogus_key: 1\n", " ".repeat(indent)));
                expected_line = text.lines().count();
            }
        }
        let (l, _, m) = err(&text);
        assert!(
            m.contains("unknown field `bogus_key`"),
            "table at line {}: {m}\n{text}",
            target + 1
        );
        assert_eq!(l as usize, expected_line, "{m}\n{text}");
    }
}

#[test]
fn hostile_input_never_panics() {
    let samples = [
        "domains: &a [*a]\n",
        "domains:\n  - name: !!binary aGVsbG8=\n",
        "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
        "domains:\n  - name: \0\n",
        "- - - - - - - - - - - - - - - -",
        "domains:\n  - <<: {name: example.org}\n",
    ];
    for s in samples {
        let _ = parse(s, Path::new("t.yaml"));
    }
    let deep = "[".repeat(10_000);
    assert!(parse(&deep, Path::new("t.yaml")).is_err());
}

/// serde-saphyr's default budget (250,000 nodes) stopped at 8,332 domains.
#[test]
fn regression_large_configs_fit_the_yaml_budget() {
    let mut text = String::from("domains:\n");
    for i in 0..12_000 {
        text.push_str(&format!(
            "  - name: d{i}.example\n    decoy: {{ host: mx01.d{i}.example, preference: 10, ipv4: [192.0.2.1] }}\n    \
             real:\n      - {{ host: mx02.d{i}.example, preference: 20, ipv4: [192.0.2.2] }}\n"
        ));
    }
    assert_eq!(ok(&text).domains.len(), 12_000);
}

#[test]
fn multiple_documents_are_rejected() {
    let (_, _, m) = err(&format!("{MINIMAL}---\n{MINIMAL}"));
    assert!(!m.is_empty());
}

#[test]
fn enforcement_backends_are_checked_where_they_are_written() {
    let with = |enforce: &str| format!("{MINIMAL}bans:\n  enforce:\n{enforce}");
    // `backend: command` needs its commands.
    let (l, _, m) = err(&with("    backend: command\n"));
    assert!(m.contains("needs `command:"), "{m}");
    assert_eq!(l, 8, "the table's first key: {m}");
    assert_err(
        &with(
            "    backend: command\n    command:\n      ban: [ban, \"{ip}\"]\n      unban: [/sbin/unban, \"{ip}\"]\n",
        ),
        10,
        12,
        "absolute path",
    );
    assert_err(
        &with(
            "    backend: command\n    command:\n      ban: [/sbin/ban, \"{ip}\", \"{secs}\"]\n      unban: [/sbin/unban, \"{ip}\"]\n",
        ),
        10,
        12,
        "unknown placeholder in \"{secs}\"",
    );
    assert_err(
        &with("    backend: command\n    command:\n      ban: []\n      unban: [/sbin/unban]\n"),
        10,
        12,
        "at least the program",
    );
    let (l, _, m) = err(&with("    ports: []\n"));
    assert!(m.contains("1 to 15 TCP ports"), "{m}");
    assert_eq!(l, 8, "{m}");
    let c = ok(&with(
        "    backend: command\n    command:\n      ban: [/sbin/ban, \"--ip={ip}\", \"{seconds}\"]\n      unban: [/sbin/unban, \"{ip}\"]\n      timeout: 3s\n",
    ));
    let spec = c.bans.enforce.command.unwrap();
    assert_eq!(
        spec.ban.render("198.18.0.9", "60"),
        ["/sbin/ban", "--ip=198.18.0.9", "60"]
    );
    assert_eq!(spec.timeout.as_secs(), 3);
    assert!(spec.list.is_none());
    let (_, _, m) = err(&with(
        "    backend: command\n    command:\n      ban: [/sbin/ban]\n      unban: [/sbin/unban]\n      timeout: 0s\n",
    ));
    assert!(m.contains("must be more than 0"), "{m}");
    assert_eq!(
        ok(&with("    ports: [587, 25, 587]\n")).bans.enforce.ports,
        [25, 587]
    );
    let c = ok(&with(
        "    backend: fail2ban\n    fail2ban: { jail: postfix-nolist, socket: /run/f2b.sock }\n",
    ));
    assert_eq!(c.bans.enforce.fail2ban.jail, "postfix-nolist");
    assert_eq!(c.bans.enforce.fail2ban.client, "fail2ban-client");
}

#[test]
fn provider_tables_resolve_and_override() {
    let c = ok(&format!(
        "provider: {{ kind: zonefile, dir: /srv/zones }}\n{}",
        MINIMAL.replace(
            "    real:",
            "    provider: { kind: zonefile, dir: mine }\n    real:"
        )
    ));
    let top = c.provider.as_ref().unwrap();
    assert_eq!(
        top.at,
        Loc {
            line: 1,
            column: 19
        }
    );
    let own = c.provider_for(&c.domains[0]).unwrap();
    assert_eq!(
        own.settings,
        provider::Settings::Zonefile { dir: "mine".into() }
    );
    let c = ok(&format!(
        "provider: {{ kind: zonefile, dir: /srv/zones }}\n{MINIMAL}"
    ));
    assert_eq!(c.provider_for(&c.domains[0]), c.provider.as_ref());
}

#[test]
fn provider_errors_name_their_position() {
    assert_err(
        &format!("{MINIMAL}provider: {{ kind: route53 }}\n"),
        6,
        19,
        "unknown provider kind `route53`, expected one of zonefile",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: zonefile\n"),
        7,
        9,
        "provider kind `zonefile` needs `dir`",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: zonefile\n  dir: z\n  api_key: x\n"),
        9,
        3,
        "unknown field `api_key`",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: powerdns\n  api_key_env: K\n  dir: z\n"),
        9,
        8,
        "`dir` is not a key of provider kind `powerdns` (its keys: url, server_id,",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: powerdns\n"),
        7,
        9,
        "needs `api_key_env` (an environment variable) or `api_key_file` (a file)",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: powerdns\n  api_key_env: K\n  api_key_file: k\n"),
        9,
        17,
        "not both",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: powerdns\n  api_key_env: K\n  url: ftp://x\n"),
        9,
        8,
        "must start with http:// or https://",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: powerdns\n  api_key_env: K\n  timeout: soon\n"),
        9,
        12,
        "invalid duration",
    );
}

#[test]
fn powerdns_defaults_and_secrets_by_name_only() {
    let c = ok(&format!(
        "{MINIMAL}provider: {{ kind: powerdns, api_key_file: secrets/pdns.key, timeout: 5s }}\n"
    ));
    assert_eq!(
        c.provider.unwrap().settings,
        provider::Settings::PowerDns {
            api: provider::Api {
                url: None,
                secret: provider::Secret::File("secrets/pdns.key".into()),
                timeout: Some(std::time::Duration::from_secs(5)),
                retries: None,
            },
            server_id: "localhost".into(),
        }
    );
}

#[test]
fn rfc2136_keys_from_a_file_or_the_environment() {
    let c = ok(&format!(
        "{MINIMAL}provider: {{ kind: rfc2136, server: \"127.0.0.1:53\", key_file: keys/nolist.key }}\n"
    ));
    assert_eq!(
        c.provider.unwrap().settings,
        provider::Settings::Rfc2136 {
            server: "127.0.0.1:53".parse().unwrap(),
            key: provider::TsigKey::File("keys/nolist.key".into()),
            timeout: std::time::Duration::from_secs(10),
        }
    );
    let c = ok(&format!(
        "{MINIMAL}provider: {{ kind: rfc2136, server: \"[::1]:5353\", key_name: k, key_algorithm: hmac-sha512, key_secret_env: TSIG }}\n"
    ));
    let provider::Settings::Rfc2136 { key, .. } = c.provider.unwrap().settings else {
        panic!("rfc2136")
    };
    assert_eq!(
        key,
        provider::TsigKey::Env {
            name: "k".into(),
            algorithm: provider::TsigAlgorithm::HmacSha512,
            secret_env: "TSIG".into()
        }
    );
    let base = format!("{MINIMAL}provider:\n  kind: rfc2136\n  server: \"127.0.0.1:53\"\n");
    assert_err(
        &base,
        7,
        9,
        "needs `key_file` (a BIND key file), or `key_name` and `key_secret_env`",
    );
    assert_err(&format!("{base}  key_name: k\n"), 9, 13, "go together");
    assert_err(
        &format!("{base}  key_file: f\n  key_name: k\n"),
        10,
        13,
        "not both",
    );
    assert_err(
        &format!("{base}  key_name: k\n  key_secret_env: T\n  key_algorithm: hmac-md5\n"),
        11,
        18,
        "unknown TSIG algorithm `hmac-md5`",
    );
    assert_err(
        &format!("{MINIMAL}provider:\n  kind: rfc2136\n  server: 127.0.0.1\n"),
        8,
        11,
        "socket address",
    );
    assert_err(
        &format!("{base}  key_file: f\n  retries: 2\n"),
        10,
        12,
        "`retries` is not a key of provider kind `rfc2136`",
    );
}

#[test]
fn cloud_providers_take_a_token_and_their_own_keys() {
    let c = ok(&format!(
        "{MINIMAL}provider: {{ kind: cloudflare, token_env: CF_API_TOKEN, zone_id: abc123 }}\n"
    ));
    assert_eq!(
        c.provider.unwrap().settings,
        provider::Settings::Cloudflare {
            api: provider::Api {
                url: None,
                secret: provider::Secret::Env("CF_API_TOKEN".into()),
                timeout: None,
                retries: None,
            },
            zone_id: Some("abc123".into()),
        }
    );
    for kind in ["desec", "hetzner"] {
        let c = ok(&format!(
            "{MINIMAL}provider: {{ kind: {kind}, token_file: t, url: \"http://127.0.0.1:9/\", retries: 0 }}\n"
        ));
        let settings = c.provider.unwrap().settings;
        assert_eq!(settings.kind().as_str(), kind);
        let (provider::Settings::Desec { api } | provider::Settings::Hetzner { api }) = settings
        else {
            panic!("{settings:?}")
        };
        assert_eq!(
            (api.url.as_deref(), api.retries),
            (Some("http://127.0.0.1:9/"), Some(0))
        );
        assert_err(
            &format!("{MINIMAL}provider: {{ kind: {kind}, token_env: T, zone_id: z }}\n"),
            6,
            44 + kind.len() as u32,
            "`zone_id` is not a key of provider kind",
        );
    }
    assert_err(
        &format!("{MINIMAL}provider: {{ kind: cloudflare }}\n"),
        6,
        19,
        "needs `token_env` (an environment variable) or `token_file` (a file)",
    );
}

#[test]
fn retry_recognition_keys() {
    let c = ok(MINIMAL);
    assert_eq!(c.bans.retry, Retry::default());
    assert!(c.bans.retry.enabled);
    assert_eq!(
        (
            c.bans.retry.min_delay.as_secs(),
            c.bans.retry.max_delay.as_secs()
        ),
        (60, 86_400)
    );
    let with = |retry: &str| format!("{MINIMAL}bans:\n  retry:\n{retry}");
    let c = ok(&with(
        "    min_delay: 1s\n    max_delay: 2h\n    enabled: false\n",
    ));
    assert_eq!(
        c.bans.retry,
        Retry {
            enabled: false,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(7200)
        }
    );
    let (l, c, m) = err(&with("    min_delay: 1d\n    max_delay: 1h\n"));
    assert!(m.contains("must be shorter than `max_delay`"), "{m}");
    assert_eq!((l, c), (8, 5), "{m}");
    let (_, _, m) = err(&with("    min_delay: 1h\n    max_delay: 1h\n"));
    assert!(m.contains("must be shorter"), "{m}");
    let (_, _, m) = err(&with("    min_delay: 0s\n"));
    assert!(m.contains("at least 1s"), "{m}");
    assert_err(&with("    min_dealy: 2m\n"), 8, 5, "min_dealy");
}

/// A file over the YAML parser's safety budget (here: two documents where
/// one is allowed) is refused in the user's terms, at its position.
#[test]
fn a_document_over_the_parser_budget_says_so() {
    // One document per config file: a second one is over the budget.
    let yaml = "domains: []\n---\ndomains: []\n";
    let err = parse(yaml, Path::new("deep.yaml")).unwrap_err().to_string();
    assert!(
        err.contains("the file exceeds the YAML parser's safety limits (budget breached"),
        "{err}"
    );
    assert!(err.starts_with("deep.yaml:"), "{err}");
}

#[test]
fn the_fleet_section_gets_documented_defaults_and_checks_its_nodes() {
    assert_eq!(ok(MINIMAL).fleet, None);
    let c = ok(&format!(
        "{MINIMAL}mta: {{ logs: [/var/log/mail.log] }}
fleet:
  url: redis://nolist@198.18.5.1:6379/0
  node: mx2
  password_env: NOLIST_FLEET_PASSWORD
  mta_nodes: [mx2, mx3]
"
    ));
    let f = c.fleet.unwrap();
    assert_eq!(f.url, "redis://nolist@198.18.5.1:6379/0");
    assert_eq!(f.node.as_str(), "mx2");
    assert!(f.is_mta_node());
    assert_eq!(
        f.password,
        Some(provider::Secret::Env("NOLIST_FLEET_PASSWORD".into()))
    );
    assert_eq!(f.prefix, "nolist");
    assert_eq!((f.keep.as_secs(), f.max_events), (3600, 1_000_000));
    assert_eq!(f.silent_after.as_secs(), 120);
    assert_eq!(f.on_silent_mta, OnSilentMta::Wait);
    let fleet = |body: &str| format!("{MINIMAL}fleet:\n{body}");
    assert_err(
        &fleet("  url: redis://:secret@h/0\n  node: mx1\n"),
        7,
        8,
        "must not contain a password",
    );
    assert_err(
        &fleet("  url: http://h\n  node: mx1\n"),
        7,
        8,
        "redis:// or rediss://",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: MX1\n"),
        8,
        9,
        "not a node name",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  mta_nodes: [mx1]\n"),
        8,
        9,
        "follows no MTA log",
    );
    assert_err(
        &format!(
            "{MINIMAL}mta: {{ logs: [/l] }}\nfleet:\n  url: redis://h\n  node: mx1\n  mta_nodes: [mx2]\n"
        ),
        9,
        9,
        "not in fleet.mta_nodes",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  mta_nodes: [mx2, mx2]\n"),
        9,
        20,
        "twice",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  password_env: P\n  password_file: /p\n"),
        10,
        18,
        "not both",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  keep: 30s\n"),
        9,
        9,
        "at least 1m",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  max_events: 10\n"),
        9,
        15,
        "at least 1000",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  prefix: \"a b\"\n"),
        9,
        11,
        "fleet.prefix",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  bogus: 1\n"),
        9,
        3,
        "unknown field",
    );
    assert_err(
        &fleet("  url: redis://h\n  node: mx1\n  on_silent_mta: ban\n"),
        9,
        18,
        "unknown variant",
    );
}

#[test]
fn the_fleet_docs_list_every_key_and_their_example_parses() {
    let docs = include_str!("../../docs/fleet.md");
    for key in [
        "url",
        "node",
        "password_env",
        "password_file",
        "ca_file",
        "mta_nodes",
        "prefix",
        "keep",
        "max_events",
        "silent_after",
        "on_silent_mta",
    ] {
        assert!(
            docs.contains(&format!("| `fleet.{key}` |")),
            "docs/fleet.md lacks fleet.{key}"
        );
    }
    let example = docs
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .unwrap();
    // The example's MTA nodes are other hosts: this one follows no log.
    let c = ok(&format!("{MINIMAL}{example}"));
    assert_eq!(c.fleet.unwrap().mta_nodes.len(), 2);
}
