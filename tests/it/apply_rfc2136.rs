//! `nolist diff` and `nolist apply` against BIND 9 `named` as the zone's
//! primary, through RFC 2136 UPDATE signed with a TSIG key made by
//! `tsig-keygen`: a wrong key is a clear error and changes nothing; the
//! right key (from the BIND key file, or from the environment) applies the
//! whole change set and `dig` confirms it.
#![cfg(feature = "providers")]

use std::path::{Path, PathBuf};

use crate::util;
use crate::util::named::{KEY_NAME, Named, key_secret, tsig_keygen};
use crate::util::require_tool;

const ZONE: &str = "\
$ORIGIN example.org.
$TTL 3600
@ IN SOA ns1.example.org. hostmaster.example.org. 2026010101 3600 900 1209600 3600
  IN NS ns1.example.org.
ns1 IN A 192.0.2.53
@ 300 IN MX 10 mx02.example.org.
www IN A 192.0.2.80
";

fn config(dir: &Path, provider: &str, ttl: u32) -> PathBuf {
    let text = format!(
        "provider:\n{provider}domains:\n  - name: example.org\n    ttl: {ttl}\n    \
         decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10], ipv6: [\"2001:db8::10\"] }}\n    \
         real:\n      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}\n"
    );
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn key_file_provider(named: &Named, key: &Path) -> String {
    format!(
        "  kind: rfc2136\n  server: \"{}\"\n  key_file: {}\n  timeout: 5s\n",
        named.addr,
        key.display()
    )
}

use crate::util::run_config as run;

/// The answer lines, with their whitespace normalised.
fn dig(tool: &Path, named: &Named, name: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        util::dig_lines(tool, named.addr, &["+noall", "+answer", name, rtype])
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
    lines.sort();
    lines
}

#[test]
fn update_with_tsig_wrong_key_then_right_keys() {
    let Some(named) = Named::start(&[("example.org", ZONE)]) else {
        return;
    };
    let Some(dig_tool) = require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mx_before = dig(&dig_tool, &named, "example.org", "MX");
    assert_eq!(mx_before, ["example.org. 300 IN MX 10 mx02.example.org."]);

    // A key with the right name and another secret.
    let wrong = dir.path().join("wrong.key");
    tsig_keygen(KEY_NAME, &wrong).unwrap();
    let cfg = config(dir.path(), &key_file_provider(&named, &wrong), 600);
    // Reading needs no key: the drift shows.
    let (code, out, err) = run(&["diff"], &cfg, &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out,
        "example.org (rfc2136): 6 changes\n\
         - example.org. MX 10 mx02.example.org.\n\
         + example.org. MX 10 mx01.example.org.\n\
         + example.org. MX 20 mx02.example.org.\n\
         + mx01.example.org. A 192.0.2.10\n\
         + mx01.example.org. AAAA 2001:db8::10\n\
         + mx02.example.org. A 192.0.2.20\n"
    );
    let (code, _, err) = run(&["apply", "--yes"], &cfg, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("example.org: FAILED: credentials rejected by rfc2136")
            && err.contains("did not accept TSIG key \"nolist-update\""),
        "{err}"
    );
    assert!(err.contains("6 of 6 record changes not applied"), "{err}");
    assert_eq!(dig(&dig_tool, &named, "example.org", "MX"), mx_before);
    assert!(dig(&dig_tool, &named, "mx01.example.org", "A").is_empty());

    // The right key, from named's BIND key file: one UPDATE applies everything.
    let cfg = config(
        dir.path(),
        &key_file_provider(&named, &named.key_file()),
        600,
    );
    let (code, _, err) = run(&["apply", "--yes"], &cfg, &[]);
    assert_eq!(code, 0, "{err}\n{}", named.log());
    assert!(
        err.contains("example.org: applied 6 record changes; in sync"),
        "{err}"
    );
    assert_eq!(
        dig(&dig_tool, &named, "example.org", "MX"),
        [
            "example.org. 600 IN MX 10 mx01.example.org.",
            "example.org. 600 IN MX 20 mx02.example.org."
        ]
    );
    assert_eq!(
        dig(&dig_tool, &named, "mx01.example.org", "AAAA"),
        ["mx01.example.org. 600 IN AAAA 2001:db8::10"]
    );
    assert_eq!(
        dig(&dig_tool, &named, "www.example.org", "A"),
        ["www.example.org. 3600 IN A 192.0.2.80"]
    );
    assert_eq!(
        dig(&dig_tool, &named, "ns1.example.org", "A"),
        ["ns1.example.org. 3600 IN A 192.0.2.53"]
    );

    // The same key from the environment; a TTL change in the plan.
    let secret = key_secret(&named.key_file());
    let env_provider = format!(
        "  kind: rfc2136\n  server: \"{}\"\n  key_name: {KEY_NAME}\n  key_algorithm: hmac-sha256\n  \
         key_secret_env: NOLIST_TEST_TSIG\n",
        named.addr
    );
    let cfg = config(dir.path(), &env_provider, 300);
    let (code, out, err) = run(&["apply", "--yes"], &cfg, &[("NOLIST_TEST_TSIG", &secret)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("~ mx02.example.org. A 192.0.2.20 (600 → 300)"),
        "{out}"
    );
    let (code, out, _) = run(&["diff"], &cfg, &[("NOLIST_TEST_TSIG", &secret)]);
    assert_eq!(
        (code, out.as_str()),
        (0, "example.org (rfc2136): in sync\n")
    );
    assert_eq!(
        dig(&dig_tool, &named, "mx02.example.org", "A"),
        ["mx02.example.org. 300 IN A 192.0.2.20"]
    );
}

#[test]
fn a_zone_the_server_does_not_serve_is_missing() {
    let Some(named) = Named::start(&[("example.org", ZONE)]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &key_file_provider(&named, &named.key_file()),
        600,
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("example.org", "example.net");
    std::fs::write(&cfg, text).unwrap();
    let (code, out, _) = run(&["diff"], &cfg, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("example.net (rfc2136): error: zone example.net. not found at rfc2136"),
        "{out}"
    );
}
