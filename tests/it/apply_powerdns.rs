//! `nolist diff` and `nolist apply` against a real PowerDNS Authoritative
//! server (gsqlite3 backend, HTTP API on loopback): apply, then no drift and
//! `dig` sees the records; an out-of-band change through the API shows up as
//! exactly that drift; a second apply is a no-op; records nolist does not
//! own survive; bad credentials and a missing zone are clear errors.
#![cfg(feature = "providers")]

use std::path::{Path, PathBuf};

use crate::util;
use crate::util::pdns::Pdns;
use crate::util::{nolist, require_tool};

const KEY_VAR: &str = "NOLIST_TEST_PDNS_KEY";

fn config(dir: &Path, pdns: &Pdns, domains: &[&str]) -> PathBuf {
    let mut text = format!(
        "provider:\n  kind: powerdns\n  url: \"{}\"\n  server_id: localhost\n  api_key_env: {KEY_VAR}\n  \
         timeout: 5s\n  retries: 1\ndomains:\n",
        pdns.url()
    );
    for d in domains {
        text.push_str(&format!(
            "  - name: {d}\n    ttl: 600\n    decoy: {{ host: mx01.{d}, preference: 10, ipv4: [192.0.2.10], ipv6: [\"2001:db8::10\"] }}\n    \
             real:\n      - {{ host: mx02.{d}, preference: 20, ipv4: [192.0.2.20] }}\n"
        ));
    }
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], config: &Path, key: &str) -> (i32, String, String) {
    util::run_config(args, config, &[(KEY_VAR, key)])
}

fn dig(tool: &Path, pdns: &Pdns, name: &str, rtype: &str) -> Vec<String> {
    util::dig_lines(tool, pdns.dns, &["+short", name, rtype])
}

#[test]
fn apply_diff_dig_out_of_band_drift_and_idempotence() {
    let Some(pdns) = Pdns::start(&["example.org"]) else {
        return;
    };
    let Some(dig_tool) = require_tool("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pdns, &["example.org"]);
    let zone = "/api/v1/servers/localhost/zones/example.org.";
    // A record of the user's that nolist must leave alone, and an old MX.
    let (status, body) = pdns.request(
        "PATCH",
        zone,
        Some(
            r#"{"rrsets": [
            {"name": "www.example.org.", "type": "A", "ttl": 60, "changetype": "REPLACE",
             "records": [{"content": "192.0.2.80", "disabled": false}]},
            {"name": "example.org.", "type": "MX", "ttl": 300, "changetype": "REPLACE",
             "records": [{"content": "10 mx02.example.org.", "disabled": false}]}]}"#,
        ),
    );
    assert_eq!(status, 204, "{body}");

    let (code, out, err) = run(&["diff"], &cfg, &pdns.key);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        out,
        "example.org (powerdns): 6 changes\n\
         - example.org. MX 10 mx02.example.org.\n\
         + example.org. MX 10 mx01.example.org.\n\
         + example.org. MX 20 mx02.example.org.\n\
         + mx01.example.org. A 192.0.2.10\n\
         + mx01.example.org. AAAA 2001:db8::10\n\
         + mx02.example.org. A 192.0.2.20\n"
    );

    let (code, out, err) = run(&["apply", "--yes"], &cfg, &pdns.key);
    assert_eq!(code, 0, "{out}{err}\n{}", pdns.log());
    assert!(
        err.contains("example.org: applied 6 record changes; in sync"),
        "{err}"
    );
    let (code, out, _) = run(&["diff"], &cfg, &pdns.key);
    assert_eq!(
        (code, out.as_str()),
        (0, "example.org (powerdns): in sync\n")
    );

    assert_eq!(
        dig(&dig_tool, &pdns, "example.org", "MX"),
        ["10 mx01.example.org.", "20 mx02.example.org."]
    );
    assert_eq!(
        dig(&dig_tool, &pdns, "mx01.example.org", "A"),
        ["192.0.2.10"]
    );
    assert_eq!(
        dig(&dig_tool, &pdns, "mx01.example.org", "AAAA"),
        ["2001:db8::10"]
    );
    assert_eq!(
        dig(&dig_tool, &pdns, "www.example.org", "A"),
        ["192.0.2.80"]
    );
    assert_eq!(
        dig(&dig_tool, &pdns, "example.org", "NS"),
        ["ns1.example.net."]
    );

    // Someone changes the zone through the API: one extra MX and a TTL.
    let (status, body) = pdns.request(
        "PATCH",
        zone,
        Some(
            r#"{"rrsets": [
            {"name": "example.org.", "type": "MX", "ttl": 600, "changetype": "REPLACE",
             "records": [{"content": "10 mx01.example.org.", "disabled": false},
                         {"content": "20 mx02.example.org.", "disabled": false},
                         {"content": "5 rogue.example.net.", "disabled": false}]},
            {"name": "mx02.example.org.", "type": "A", "ttl": 60, "changetype": "REPLACE",
             "records": [{"content": "192.0.2.20", "disabled": false}]}]}"#,
        ),
    );
    assert_eq!(status, 204, "{body}");
    let (code, out, _) = run(&["diff"], &cfg, &pdns.key);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "example.org (powerdns): 2 changes\n\
         - example.org. MX 5 rogue.example.net.\n\
         ~ mx02.example.org. A 192.0.2.20 (60 → 600)\n"
    );
    let (code, _, err) = run(&["apply", "--yes"], &cfg, &pdns.key);
    assert_eq!(code, 0, "{err}");
    // Applying again changes nothing: no request is even made.
    let (_, before) = pdns.request("GET", zone, None);
    let (code, out, err) = run(&["apply", "--yes"], &cfg, &pdns.key);
    assert_eq!(
        (code, out.as_str()),
        (0, "example.org (powerdns): in sync\n"),
        "{err}"
    );
    assert!(err.contains("nothing to apply"), "{err}");
    let (_, after) = pdns.request("GET", zone, None);
    assert_eq!(before, after);
    assert_eq!(
        dig(&dig_tool, &pdns, "www.example.org", "A"),
        ["192.0.2.80"]
    );
}

#[test]
fn wrong_key_and_missing_zone_are_clear_errors() {
    let Some(pdns) = Pdns::start(&["example.org"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pdns, &["example.org", "example.net"]);
    let (code, out, _) = run(&["diff"], &cfg, "wrong-key");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("example.org (powerdns): error: credentials rejected by powerdns:")
            && out.contains("HTTP 401"),
        "{out}"
    );
    let (code, out, _) = run(&["diff"], &cfg, &pdns.key);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("example.org (powerdns): 5 changes"), "{out}");
    assert!(
        out.contains("example.net (powerdns): error: zone example.net. not found at powerdns:"),
        "{out}"
    );
    // apply brings example.org in sync and reports example.net.
    let (code, _, err) = run(&["apply", "--yes"], &cfg, &pdns.key);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("example.org: applied 5 record changes; in sync"),
        "{err}"
    );
    // An API key that is not set at all: exit 2 before anything is read.
    let out = nolist()
        .args(["diff", "-c"])
        .arg(&cfg)
        .env_remove(KEY_VAR)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(KEY_VAR));
}
