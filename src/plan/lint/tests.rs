//! One test per lint: the layout that triggers it, and the nearest layout
//! that does not.

use std::path::Path;

use super::*;
use crate::config;

/// A clean classic layout on a real-looking domain with public addresses.
const CLEAN: &str = "\
domains:
  - name: mail-domain.de
    decoy: { host: mx01.mail-domain.de, preference: 10, ipv4: [9.9.9.10] }
    real:
      - { host: mx02.mail-domain.de, preference: 20, ipv4: [9.9.9.20] }
";

fn findings(yaml: &str) -> Vec<Finding> {
    let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    lint(&cfg)
}

fn ids(yaml: &str) -> Vec<&'static str> {
    findings(yaml).iter().map(|f| f.id).collect()
}

#[track_caller]
fn fires(yaml: &str, lint: Lint) -> Finding {
    let all = findings(yaml);
    let f = all
        .iter()
        .find(|f| f.id == lint.id)
        .unwrap_or_else(|| panic!("{} did not fire; got {all:?}", lint.id))
        .clone();
    assert_eq!(f.severity, lint.severity);
    f
}

#[test]
fn clean_layout_has_no_findings() {
    assert_eq!(ids(CLEAN), Vec::<&str>::new());
}

#[test]
fn decoy_not_lowest() {
    let f = fires(
        &CLEAN.replace("preference: 10", "preference: 20"),
        DECOY_NOT_LOWEST,
    );
    assert_eq!(
        f.at,
        Some(config::Loc {
            line: 3,
            column: 12
        })
    );
    assert_eq!(f.domain.unwrap().as_str(), "mail-domain.de");
    fires(
        &CLEAN.replace("preference: 10", "preference: 30"),
        DECOY_NOT_LOWEST,
    );
}

const SANDWICH: &str =
    "    tail_decoy: { host: mx99.mail-domain.de, preference: 90, ipv4: [9.9.9.11] }\n";

fn sandwich(tail_pref: u16) -> String {
    format!(
        "{}{}",
        CLEAN.replace("    decoy:", "    layout: sandwich\n    decoy:"),
        SANDWICH.replace("90", &tail_pref.to_string())
    )
}

#[test]
fn tail_not_highest() {
    assert!(ids(&sandwich(90)).is_empty());
    fires(&sandwich(20), TAIL_NOT_HIGHEST);
    fires(&sandwich(15), TAIL_NOT_HIGHEST);
}

#[test]
fn decoy_shares_host() {
    fires(
        &CLEAN.replace("host: mx01.mail-domain.de", "host: mx02.mail-domain.de"),
        DECOY_SHARES_HOST,
    );
}

#[test]
fn decoy_shares_address() {
    let f = fires(&CLEAN.replace("9.9.9.10", "9.9.9.20"), DECOY_SHARES_ADDRESS);
    assert!(f.message.contains("9.9.9.20"), "{}", f.message);
    // The tail decoy is checked too.
    fires(
        &sandwich(90).replace("9.9.9.11", "9.9.9.20"),
        DECOY_SHARES_ADDRESS,
    );
}

#[test]
fn mx_ip_literal() {
    for lit in ["9.9.9.30", "\"[9.9.9.30]\"", "\"2001:4860::1\""] {
        fires(
            &CLEAN.replace("host: mx02.mail-domain.de", &format!("host: {lit}")),
            MX_IP_LITERAL,
        );
    }
}

#[test]
fn null_mx_mixed() {
    fires(
        &CLEAN.replace("host: mx02.mail-domain.de", "host: \".\""),
        NULL_MX_MIXED,
    );
}

#[test]
fn duplicate_mx() {
    let twice = CLEAN.replace(
        "    real:\n",
        "    real:\n      - { host: mx02.mail-domain.de, preference: 30, ipv4: [9.9.9.20] }\n",
    );
    fires(&twice, DUPLICATE_MX);
    // One decoy at both ends of a sandwich is a valid layout.
    let same_decoy = sandwich(90)
        .replace("mx99.mail-domain.de", "mx01.mail-domain.de")
        .replace("9.9.9.11", "9.9.9.10");
    assert!(ids(&same_decoy).is_empty(), "{:?}", ids(&same_decoy));
}

#[test]
fn host_address_conflict() {
    let second = "  - name: other-domain.de
    decoy: { host: mx01.mail-domain.de, preference: 10, ipv4: [9.9.9.99] }
    real:
      - { host: mx02.mail-domain.de, preference: 20 }
";
    let f = fires(&format!("{CLEAN}{second}"), HOST_ADDRESS_CONFLICT);
    assert_eq!(f.domain.unwrap().as_str(), "other-domain.de");
    let agreeing = second.replace("9.9.9.99", "9.9.9.10");
    assert!(ids(&format!("{CLEAN}{agreeing}")).is_empty());
}

#[test]
fn decoy_missing_family() {
    let v6_real = CLEAN.replace(
        "ipv4: [9.9.9.20]",
        "ipv4: [9.9.9.20], ipv6: [\"2620:fe::20\"]",
    );
    let f = fires(&v6_real, DECOY_MISSING_FAMILY);
    assert!(f.message.contains("IPv6"), "{}", f.message);
    let both = v6_real.replace(
        "ipv4: [9.9.9.10]",
        "ipv4: [9.9.9.10], ipv6: [\"2620:fe::10\"]",
    );
    assert!(ids(&both).is_empty());
    // A decoy whose addresses the config does not state (outside the zone) is not judged.
    let external = v6_real.replace(
        "{ host: mx01.mail-domain.de, preference: 10, ipv4: [9.9.9.10] }",
        "{ host: decoy.provider.net, preference: 10 }",
    );
    assert!(!ids(&external).contains(&DECOY_MISSING_FAMILY.id));
}

#[test]
fn responder_not_refuse() {
    for mode in ["greet-421", "greet-450", "rcpt-450"] {
        let f = fires(
            &format!("{CLEAN}responder: {{ mode: {mode} }}\n"),
            RESPONDER_NOT_REFUSE,
        );
        assert!(f.domain.is_none() && f.message.contains(mode));
        // Every family that does not fall back from the mode is named, and
        // what retry recognition does about it.
        assert!(f.message.contains("stock qmail"), "{}", f.message);
        assert_eq!(
            f.message.contains("OpenSMTPD"),
            mode == "rcpt-450",
            "{}",
            f.message
        );
        assert!(f.message.contains("one retry interval"), "{}", f.message);
        // The default backend, nftables, resets a retrying sender: every
        // family falls back. Without it stock qmail's mail waits.
        assert!(
            f.message
                .contains("let-through answers its next attempt with a TCP reset")
                && !f.message.contains("waits in its queue"),
            "{}",
            f.message
        );
        let without = fires(
            &format!(
                "{CLEAN}responder: {{ mode: {mode} }}\nbans: {{ enforce: {{ backend: none }} }}\n"
            ),
            RESPONDER_NOT_REFUSE,
        );
        assert!(
            without
                .message
                .contains("stock qmail falls back only from a TCP reset")
                && without.message.contains("waits in its queue"),
            "{}",
            without.message
        );
        let off = fires(
            &format!(
                "{CLEAN}responder: {{ mode: {mode} }}\nbans: {{ retry: {{ enabled: false }} }}\n"
            ),
            RESPONDER_NOT_REFUSE,
        );
        assert!(
            off.message.contains("retry recognition off")
                && off.message.contains("nothing limits the damage"),
            "{}",
            off.message
        );
    }
    assert!(ids(&format!("{CLEAN}responder: {{ mode: refuse }}\n")).is_empty());
}

#[test]
fn grace_too_short() {
    for grace in ["0s", "2s", "29s"] {
        let f = fires(
            &format!("{CLEAN}bans: {{ grace: {grace} }}\n"),
            GRACE_TOO_SHORT,
        );
        assert!(f.message.contains("below 30s"), "{}", f.message);
        assert_eq!(f.severity, Severity::Error);
    }
    assert!(ids(&format!("{CLEAN}bans: {{ grace: 30s }}\n")).is_empty());
    // Without enforcement a ban blocks nothing: the fallback lifts it.
    assert!(
        ids(&format!(
            "{CLEAN}bans: {{ grace: 1s, enforce: {{ backend: none }} }}\n"
        ))
        .is_empty()
    );
}

#[test]
fn enforce_table_unused() {
    let command = "command: { ban: [/bin/true, \"{ip}\"], unban: [/bin/true, \"{ip}\"] }";
    let f = fires(
        &format!("{CLEAN}bans:\n  enforce: {{ backend: nftables, {command} }}\n"),
        ENFORCE_TABLE_UNUSED,
    );
    assert!(f.domain.is_none());
    assert_eq!(
        f.message,
        "bans.enforce.command is set but bans.enforce.backend is nftables: it is ignored (set `backend: command`, or remove the table)"
    );
    let f = fires(
        &format!("{CLEAN}bans:\n  enforce: {{ fail2ban: {{ jail: nolist }} }}\n"),
        ENFORCE_TABLE_UNUSED,
    );
    assert!(
        f.message.starts_with("bans.enforce.fail2ban is set"),
        "{}",
        f.message
    );
    for fine in [
        format!("bans:\n  enforce: {{ backend: command, {command} }}\n"),
        "bans:\n  enforce: { backend: fail2ban, fail2ban: { jail: nolist } }\n".to_owned(),
        "bans:\n  enforce: { backend: iptables }\n".to_owned(),
    ] {
        assert!(ids(&format!("{CLEAN}{fine}")).is_empty(), "{fine}");
    }
}

#[test]
fn non_public_address() {
    for addr in [
        "192.0.2.10",
        "10.1.2.3",
        "127.0.0.1",
        "198.18.0.1",
        "100.64.0.1",
    ] {
        fires(&CLEAN.replace("9.9.9.10", addr), NON_PUBLIC_ADDRESS);
    }
    for addr in [
        "2001:db8::1",
        "fd00::1",
        "fe80::1",
        "::1",
        "::ffff:10.0.0.1",
    ] {
        fires(
            &CLEAN.replace(
                "ipv4: [9.9.9.20]",
                &format!("ipv4: [9.9.9.20], ipv6: [\"{addr}\"]"),
            ),
            NON_PUBLIC_ADDRESS,
        );
    }
    // Example domains may use documentation addresses.
    let example = CLEAN
        .replace("mail-domain.de", "example.org")
        .replace("9.9.9.", "192.0.2.");
    assert!(ids(&example).is_empty(), "{:?}", ids(&example));
}

#[test]
fn host_without_address() {
    fires(
        &CLEAN.replace(", ipv4: [9.9.9.20]", ""),
        HOST_WITHOUT_ADDRESS,
    );
    // Outside the zone nolist owns no address records, so none are expected.
    let external = CLEAN.replace(
        "{ host: mx02.mail-domain.de, preference: 20, ipv4: [9.9.9.20] }",
        "{ host: mx.provider.net, preference: 20 }",
    );
    assert!(ids(&external).is_empty(), "{:?}", ids(&external));
}

#[test]
fn ns_without_address() {
    let dns = "dns:\n  soa: { mname: ns1.mail-domain.de, rname: hostmaster@mail-domain.de }\n";
    fires(
        &format!("{CLEAN}{dns}  ns: [ns1.mail-domain.de, ns.provider.net]\n"),
        NS_WITHOUT_ADDRESS,
    );
    let glued = format!("{CLEAN}{dns}  ns: [{{ host: ns1.mail-domain.de, ipv4: [9.9.9.53] }}]\n");
    assert!(ids(&glued).is_empty(), "{:?}", ids(&glued));
}

#[test]
fn ttl_low_and_high() {
    let with_ttl = |ttl: &str| CLEAN.replace("    decoy:", &format!("    ttl: {ttl}\n    decoy:"));
    fires(&with_ttl("60"), TTL_LOW);
    fires(&with_ttl("30d"), TTL_HIGH);
    assert!(ids(&with_ttl("300")).is_empty());
    assert!(ids(&with_ttl("1w")).is_empty());
}

#[test]
fn errors_sort_before_warnings() {
    let yaml = format!(
        "{}responder: {{ mode: rcpt-450 }}\n",
        CLEAN.replace("preference: 10", "preference: 20")
    );
    let sev: Vec<Severity> = findings(&yaml).iter().map(|f| f.severity).collect();
    assert_eq!(sev, vec![Severity::Error, Severity::Warning]);
}

#[test]
fn public_address_classification() {
    for a in ["9.9.9.9", "2620:fe::fe", "1.1.1.1"] {
        assert!(is_public(&a.parse().unwrap()), "{a}");
    }
    for a in [
        "0.1.2.3",
        "255.255.255.255",
        "240.0.0.1",
        "224.0.0.1",
        "3fff::1",
        "ff02::1",
    ] {
        assert!(!is_public(&a.parse().unwrap()), "{a}");
    }
}

#[test]
fn every_lint_is_documented_in_docs_plan() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/plan.md"))
        .expect("docs/plan.md");
    for lint in LINTS {
        assert!(
            docs.contains(&format!("`{}`", lint.id)),
            "{} missing from docs/plan.md's lint table",
            lint.id
        );
    }
}

/// `CLEAN` with a DNSBL zone `zone` (and a TTL).
fn with_dnsbl(zone: &str, extra: &str) -> String {
    format!(
        "{CLEAN}dns:
  soa: {{ mname: ns1.dns-host.de, rname: h@mail-domain.de }}
  ns: [ns1.dns-host.de]
  dnsbl: {{ zone: {zone}{extra} }}
"
    )
}

#[test]
fn a_dnsbl_outside_the_mail_domains_is_clean() {
    assert!(ids(&with_dnsbl("bl.dns-host.de", "")).is_empty());
}

#[test]
fn dnsbl_shadows_records() {
    let f = fires(&with_dnsbl("mail-domain.de", ""), DNSBL_SHADOWS);
    assert!(
        f.message.contains("would answer the blocklist's NXDOMAIN"),
        "{}",
        f.message
    );
    assert!(
        findings(&with_dnsbl("de", ""))
            .iter()
            .any(|f| f.id == DNSBL_SHADOWS.id
                && f.domain.as_ref().map(Name::as_str) == Some("mail-domain.de"))
    );
    let f = fires(&with_dnsbl("mx01.mail-domain.de", ""), DNSBL_SHADOWS);
    assert!(
        f.message.contains("MX host mx01.mail-domain.de"),
        "{}",
        f.message
    );
    let f = fires(&with_dnsbl("dns-host.de", ""), DNSBL_SHADOWS);
    assert!(
        f.message.contains("name server ns1.dns-host.de"),
        "{}",
        f.message
    );
}

#[test]
fn dnsbl_inside_mail_domain() {
    let f = fires(
        &with_dnsbl("bl.mail-domain.de", ""),
        DNSBL_INSIDE_MAIL_DOMAIN,
    );
    assert_eq!(
        f.at,
        Some(Loc {
            line: 9,
            column: 10
        })
    );
    assert!(!ids(&with_dnsbl("bl.mail-domain.de", "")).contains(&DNSBL_SHADOWS.id));
}

#[test]
fn dnsbl_ttl_over_bantime() {
    let yaml = |ttl: &str| {
        format!(
            "{}bans: {{ bantime: 1h }}\n",
            with_dnsbl("bl.dns-host.de", ttl)
        )
    };
    let f = fires(&yaml(", ttl: 2h"), DNSBL_TTL_OVER_BANTIME);
    assert!(
        f.message
            .contains("7200 s, longer than bans.bantime (3600 s)"),
        "{}",
        f.message
    );
    assert!(ids(&yaml(", ttl: 1h")).is_empty());
    assert!(ids(&yaml("")).is_empty());
}
