//! `nolist verify` against an independent authoritative server (NSD, Debian
//! package `nsd`) on loopback: the zones from `nolist plan` verify cleanly;
//! mutated zones fail exactly the check that names the mutation; NXDOMAIN,
//! REFUSED and timeouts are failures with the right words, never passes.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use crate::util;
use crate::util::nsd::{Nsd, free_port};
use crate::util::{nolist, root};
use serde_json::Value;

/// The zone `nolist plan` prints for `domain` of `config`.
fn planned_zone(config: &str, domain: &str) -> String {
    let out = nolist()
        .args(["plan", "-c", config, "--format", "zone", "--domain", domain])
        .output()
        .unwrap();
    assert!(out.status.success(), "plan failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Every planned zone of `config`, as (origin, text).
fn planned_zones(config: &str) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let out = nolist()
        .args(["plan", "-c", config, "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "plan --out failed: {out:?}");
    let mut zones: Vec<(String, String)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let origin = path.file_stem().unwrap().to_string_lossy().into_owned();
            (origin, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    zones.sort();
    zones
}

/// `zone` with `from` replaced by `to`; panics unless `from` occurs.
fn edit(zone: &str, from: &str, to: &str) -> String {
    assert!(zone.contains(from), "{from:?} not in zone:\n{zone}");
    zone.replacen(from, to, 1)
}

/// Runs `nolist verify --format json` against `ns`; returns (exit code, report).
fn verify_json(config: &str, ns: SocketAddr, extra: &[&str]) -> (i32, Value) {
    let out = nolist()
        .args(["verify", "-c", config, "--dns-only", "--format", "json"])
        .args(["--nameserver", &ns.to_string()])
        .args(extra)
        .output()
        .unwrap();
    util::exit_and_json(&out)
}

/// (id, subject) of every check with `status`.
fn with_status(report: &Value, status: &str) -> BTreeSet<(String, String)> {
    report["domains"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["checks"].as_array().unwrap())
        .filter(|c| c["status"] == status)
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["subject"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn failing(report: &Value) -> BTreeSet<(String, String)> {
    with_status(report, "fail")
}

/// The message of check (id, subject).
fn message(report: &Value, id: &str, subject: &str) -> String {
    report["domains"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["checks"].as_array().unwrap())
        .find(|c| c["id"] == id && c["subject"] == subject)
        .unwrap_or_else(|| panic!("no check {id} {subject} in {report:#}"))["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const CLASSIC: &str = "examples/classic.yaml";

/// Serves the classic example's zone after `mutate` and verifies it.
fn classic_with(mutate: impl Fn(&str) -> String) -> Option<(i32, Value)> {
    let zone = mutate(&planned_zone(CLASSIC, "example.org"));
    let nsd = Nsd::start(&[("example.org", &zone)])?;
    Some(verify_json(CLASSIC, nsd.addr, &[]))
}

#[test]
fn every_example_served_by_nsd_verifies() {
    for example in util::examples() {
        let config = example.strip_prefix(root()).unwrap().to_str().unwrap();
        let zones = planned_zones(config);
        let refs: Vec<(&str, &str)> = zones
            .iter()
            .map(|(o, t)| (o.as_str(), t.as_str()))
            .collect();
        let Some(nsd) = Nsd::start(&refs) else { return };
        let (code, report) = verify_json(config, nsd.addr, &[]);
        assert_eq!(code, 0, "{config}: {report:#}");
        assert_eq!(report["ok"], true);
        assert!(failing(&report).is_empty(), "{config}: {report:#}");
        assert_eq!(report["summary"]["fail"], 0);
        // Every planned MX host got an address check and a CNAME check.
        let passed = with_status(&report, "pass");
        for host in zones
            .iter()
            .flat_map(|(_, text)| text.lines())
            .filter(|l| l.contains("\tIN\tMX\t"))
            .filter_map(|l| l.split('\t').nth(4)?.split(' ').nth(1))
        {
            assert!(
                passed.contains(&("mx-address".into(), host.into())),
                "{config}: {host}"
            );
            assert!(
                passed.contains(&("mx-cname".into(), host.into())),
                "{config}: {host}"
            );
        }
    }
}

#[test]
fn sandwich_checks_decoy_lowest_and_tail_highest() {
    let config = "examples/sandwich.yaml";
    let zone = planned_zone(config, "example.com");
    let Some(nsd) = Nsd::start(&[("example.com", &zone)]) else {
        return;
    };
    let (code, report) = verify_json(config, nsd.addr, &[]);
    assert_eq!(code, 0, "{report:#}");
    let passed = with_status(&report, "pass");
    assert!(passed.contains(&("decoy-lowest".into(), "example.com.".into())));
    assert!(passed.contains(&("tail-highest".into(), "example.com.".into())));
    // Dual stack: AAAA is compared too.
    assert_eq!(
        message(&report, "mx-address", "mx01.example.com."),
        "A 192.0.2.10, AAAA 2001:db8::10, as planned"
    );
    drop(nsd);

    // The tail decoy moved below a real MX.
    let moved = edit(
        &zone,
        "MX\t90 mx99.example.com.",
        "MX\t25 mx99.example.com.",
    );
    let Some(nsd) = Nsd::start(&[("example.com", &moved)]) else {
        return;
    };
    let (code, report) = verify_json(config, nsd.addr, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[
            ("mx-records", "example.com."),
            ("tail-highest", "example.com.")
        ])
    );
    assert!(
        message(&report, "tail-highest", "example.com.")
            .contains("30 mx03.example.com not below the tail decoy mx99.example.com (25)"),
        "{report:#}"
    );
}

fn swapped(zone: &str) -> String {
    let z = edit(zone, "MX\t10 mx01.example.org.", "MX\t30 mx01.example.org.");
    edit(&z, "MX\t20 mx02.example.org.", "MX\t10 mx02.example.org.")
}

#[test]
fn swapped_preferences_fail_mx_records_and_decoy_lowest() {
    let Some((code, report)) = classic_with(swapped) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[
            ("mx-records", "example.org."),
            ("decoy-lowest", "example.org.")
        ])
    );
    assert_eq!(
        message(&report, "mx-records", "example.org."),
        "mx01.example.org has preference 30, planned 10; mx02.example.org has preference 10, planned 20"
    );
    assert_eq!(
        message(&report, "decoy-lowest", "example.org."),
        "10 mx02.example.org not above the decoy mx01.example.org (30): senders may try them first"
    );
}

#[test]
fn wrong_decoy_address_fails_the_decoys_mx_address() {
    let Some((code, report)) = classic_with(|z| edit(z, "IN\tA\t192.0.2.10", "IN\tA\t192.0.2.99"))
    else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[("mx-address", "mx01.example.org.")])
    );
    assert_eq!(
        message(&report, "mx-address", "mx01.example.org."),
        "resolves to A 192.0.2.99: planned A 192.0.2.10 missing; A 192.0.2.99 not planned"
    );
}

#[test]
fn real_mx_without_its_a_record_fails_its_mx_address() {
    let Some((code, report)) =
        classic_with(|z| edit(z, "mx02.example.org.\t3600\tIN\tA\t192.0.2.20\n", ""))
    else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[("mx-address", "mx02.example.org.")])
    );
    assert_eq!(
        message(&report, "mx-address", "mx02.example.org."),
        "mx02.example.org does not exist (NXDOMAIN); planned A 192.0.2.20"
    );
}

#[test]
fn extra_mx_fails_mx_extra() {
    let Some((code, report)) = classic_with(|z| {
        format!(
            "{z}example.org.\t3600\tIN\tMX\t20 backup.example.org.\n\
             backup.example.org.\t3600\tIN\tA\t192.0.2.30\n"
        )
    }) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(failing(&report), set(&[("mx-extra", "example.org.")]));
    assert!(
        message(&report, "mx-extra", "example.org.")
            .starts_with("not in the plan: 20 backup.example.org;"),
        "{report:#}"
    );
    // The unplanned host is still looked up and reported.
    assert_eq!(
        message(&report, "mx-address", "backup.example.org."),
        "resolves to A 192.0.2.30 (no addresses configured: any address will do)"
    );
}

#[test]
fn cname_mx_target_fails_mx_cname() {
    let Some((code, report)) = classic_with(|z| {
        let z = edit(
            z,
            "mx02.example.org.\t3600\tIN\tA\t192.0.2.20\n",
            "mx02.example.org.\t3600\tIN\tCNAME\tmail.example.org.\n",
        );
        format!("{z}mail.example.org.\t3600\tIN\tA\t192.0.2.20\n")
    }) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(failing(&report), set(&[("mx-cname", "mx02.example.org.")]));
    assert!(
        message(&report, "mx-cname", "mx02.example.org.")
            .starts_with("mx02.example.org is an alias (CNAME for mail.example.org)"),
        "{report:#}"
    );
}

#[test]
fn dangling_cname_target_is_an_alias_and_unresolvable() {
    let Some((code, report)) = classic_with(|z| {
        edit(
            z,
            "mx02.example.org.\t3600\tIN\tA\t192.0.2.20\n",
            "mx02.example.org.\t3600\tIN\tCNAME\tgone.example.org.\n",
        )
    }) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[
            ("mx-address", "mx02.example.org."),
            ("mx-cname", "mx02.example.org.")
        ])
    );
}

#[test]
fn cname_to_a_name_outside_the_served_zones_is_still_an_alias() {
    // NSD answers the CNAME but REFUSEs its target: the alias is still named.
    let Some((code, report)) = classic_with(|z| {
        edit(
            z,
            "mx02.example.org.\t3600\tIN\tA\t192.0.2.20\n",
            "mx02.example.org.\t3600\tIN\tCNAME\tmail.example.net.\n",
        )
    }) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[
            ("mx-address", "mx02.example.org."),
            ("mx-cname", "mx02.example.org.")
        ])
    );
    assert!(
        message(&report, "mx-cname", "mx02.example.org.")
            .starts_with("mx02.example.org is an alias (CNAME for mail.example.net)"),
        "{report:#}"
    );
    assert!(
        message(&report, "mx-address", "mx02.example.org.")
            .starts_with("A and AAAA queries: REFUSED"),
        "{report:#}"
    );
}

#[test]
fn domain_the_server_does_not_serve_is_refused_never_passed() {
    // NSD serves only example.net; the config's example.org gets REFUSED.
    let zone = planned_zone("examples/multi-domain.yaml", "example.net");
    let Some(nsd) = Nsd::start(&[("example.net", &zone)]) else {
        return;
    };
    let (code, report) = verify_json(CLASSIC, nsd.addr, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["ok"], false);
    assert_eq!(report["summary"]["pass"], 0, "{report:#}");
    assert_eq!(
        failing(&report),
        set(&[
            ("mx-lookup", "example.org."),
            ("mx-address", "mx01.example.org."),
            ("mx-address", "mx02.example.org."),
        ])
    );
    assert!(
        message(&report, "mx-lookup", "example.org.")
            .starts_with("MX query for example.org: REFUSED")
    );
    assert_eq!(report["domains"][0]["mx"], Value::Null);
}

#[test]
fn nonexistent_domain_is_nxdomain() {
    // The config's domain is a name inside example.org that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gone.yaml");
    std::fs::write(
        &config,
        "domains:\n  - name: gone.example.org\n    decoy: { host: mx01.example.org, preference: 10 }\n    \
         real: [{ host: mx02.example.org, preference: 20 }]\n",
    )
    .unwrap();
    let zone = planned_zone(CLASSIC, "example.org");
    let Some(nsd) = Nsd::start(&[("example.org", &zone)]) else {
        return;
    };
    let (code, report) = verify_json(config.to_str().unwrap(), nsd.addr, &[]);
    assert_eq!(code, 1);
    assert_eq!(failing(&report), set(&[("mx-lookup", "gone.example.org.")]));
    assert_eq!(
        message(&report, "mx-lookup", "gone.example.org."),
        "gone.example.org does not exist (NXDOMAIN)"
    );
    assert_eq!(report["domains"][0]["mx"], serde_json::json!([]));
    // The hosts outside the domain have no configured address: resolving is enough.
    assert_eq!(
        message(&report, "mx-address", "mx01.example.org."),
        "resolves to A 192.0.2.10 (no addresses configured: any address will do)"
    );
}

#[test]
fn silent_nameserver_times_out() {
    // Something is bound, and never answers, over UDP and TCP.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let _tcp = TcpListener::bind(addr).ok();
    let started = std::time::Instant::now();
    let (code, report) = verify_json(CLASSIC, addr, &["--timeout", "300ms"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["pass"], 0);
    assert_eq!(
        message(&report, "mx-lookup", "example.org."),
        "MX query for example.org: timeout (no answer from the nameserver)"
    );
    assert!(
        message(&report, "mx-address", "mx01.example.org.")
            .starts_with("A and AAAA queries: timeout"),
        "{report:#}"
    );
    assert_eq!(report["resolver"]["timeout_ms"], 300);
    assert_eq!(report["resolver"]["tries"], 2);
}

#[test]
fn text_report_is_a_table_per_domain() {
    let zones = planned_zones("examples/multi-domain.yaml");
    let refs: Vec<(&str, &str)> = zones
        .iter()
        .map(|(o, t)| (o.as_str(), t.as_str()))
        .collect();
    let Some(nsd) = Nsd::start(&refs) else { return };
    // --dns-only: the examples' MX addresses are documentation addresses
    // that no probe may be sent to (tests/it/verify_smtp.rs probes loopback).
    let out = nolist()
        .args(["verify", "-c", "examples/multi-domain.yaml", "--dns-only"])
        .args(["--nameserver", &nsd.addr.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!(
        "verifying 3 domains via nameserver {} (timeout 3s, 2 tries)\n",
        nsd.addr
    )));
    for origin in ["example.net.", "shop.example.", "xn--bcher-kva.example."] {
        assert!(
            text.contains(&format!("\n{origin} (classic)\n  STATUS  CHECK")),
            "{text}"
        );
    }
    assert!(
        text.contains("\nsummary: 3 domains, 24 checks: 24 pass, 0 warn, 0 fail\n"),
        "{text}"
    );
    // The report says SMTP was not checked, and why.
    assert!(text.contains("\nSMTP not checked (--dns-only)\n"), "{text}");
    assert!(text.ends_with("result: ok\n"));
    // shop.example's hosts live in example.net and are held to the addresses configured there.
    assert!(
        text.contains(
            "mx-address    mail.example.net.      A 198.51.100.20, AAAA 2001:db8:1::20, as planned"
        ),
        "{text}"
    );

    // --domain narrows the run.
    let out = nolist()
        .args([
            "verify",
            "-c",
            "examples/multi-domain.yaml",
            "--dns-only",
            "--domain",
            "bücher.example",
        ])
        .args(["--nameserver", &nsd.addr.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("verifying 1 domain via"), "{text}");
    assert!(text.contains("\nxn--bcher-kva.example. (classic)\n"));
    assert!(text.contains("\nSMTP not checked (--dns-only)\n"));
}

#[test]
fn authoritative_servers_are_asked_directly_and_disagreements_reported() {
    // Two NSDs on 127.0.0.1 and 127.0.0.2, same port, both named in the NS set.
    let ips = [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)];
    let port = free_port(&ips);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("auth.yaml");
    let yaml = util::read_example("classic.yaml").replace(
        "  ns: [ns1.example.net, ns2.example.net]",
        "  ns:\n    - { host: ns1.example.org, ipv4: [127.0.0.1] }\n    - { host: ns2.example.org, ipv4: [127.0.0.2] }",
    );
    std::fs::write(&config, yaml).unwrap();
    let config = config.to_str().unwrap();
    let zone = planned_zone(config, "example.org");
    let primary = SocketAddr::from((ips[0], port));
    let secondary = SocketAddr::from((ips[1], port));
    let auth = ["--authoritative", "--ns-port", &port.to_string()];

    let Some(a) = Nsd::start_at(primary, &[("example.org", &zone)]) else {
        return;
    };
    let Some(b) = Nsd::start_at(secondary, &[("example.org", &zone)]) else {
        return;
    };
    let (code, report) = verify_json(config, primary, &auth);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["authoritative"], true);
    let passed = with_status(&report, "pass");
    for expected in [
        ("ns-lookup", "example.org."),
        ("ns-records", "example.org."),
        ("ns-address", "ns1.example.org."),
        ("ns-address", "ns2.example.org."),
        ("ns-answer", &format!("ns1.example.org. {primary}")),
        ("ns-answer", &format!("ns2.example.org. {secondary}")),
        ("ns-agree", "example.org."),
    ] {
        assert!(
            passed.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?}: {report:#}"
        );
    }
    assert_eq!(
        message(&report, "ns-agree", "example.org."),
        "2 servers agree: serial 2026112801, 10 mx01.example.org, 20 mx02.example.org"
    );
    drop(b);

    // The secondary lags: newer serial on the primary, same MX set → warning only.
    let newer = edit(&zone, " 2026112801 ", " 2026112802 ");
    let Some(b) = Nsd::start_at(secondary, &[("example.org", &zone)]) else {
        return;
    };
    drop(a);
    let Some(a) = Nsd::start_at(primary, &[("example.org", &newer)]) else {
        return;
    };
    let (code, report) = verify_json(config, primary, &auth);
    assert_eq!(code, 0, "a serial lag is a warning: {report:#}");
    assert_eq!(
        with_status(&report, "warn"),
        set(&[("ns-agree", "example.org.")])
    );
    drop(b);

    // The secondary serves another MX set → failure naming both servers.
    let other = edit(
        &zone,
        "MX\t20 mx02.example.org.",
        "MX\t30 mx02.example.org.",
    );
    let Some(_b) = Nsd::start_at(secondary, &[("example.org", &other)]) else {
        return;
    };
    let (code, report) = verify_json(config, primary, &auth);
    assert_eq!(code, 1);
    assert_eq!(
        failing(&report),
        set(&[("ns-agree", "example.org.")]),
        "{report:#}"
    );
    assert_eq!(
        message(&report, "ns-agree", "example.org."),
        format!(
            "the name servers publish different MX sets ({primary}: 10 mx01.example.org, 20 mx02.example.org; \
             {secondary}: 10 mx01.example.org, 30 mx02.example.org)"
        )
    );
    drop(a);

    // A server that is gone is a failed ns-answer, not a silent skip.
    let (code, report) = verify_json(
        config,
        secondary,
        &[&auth[..], &["--timeout", "300ms"]].concat(),
    );
    assert_eq!(code, 1);
    assert!(
        failing(&report).contains(&("ns-answer".into(), format!("ns1.example.org. {primary}"))),
        "{report:#}"
    );
}

#[test]
fn usage_and_config_errors_exit_2() {
    nolist()
        .args([
            "verify",
            "-c",
            "does-not-exist.yaml",
            "--nameserver",
            "127.0.0.1:1",
        ])
        .assert()
        .code(2);
    nolist()
        .args([
            "verify",
            "-c",
            CLASSIC,
            "--domain",
            "example.com",
            "--nameserver",
            "127.0.0.1:1",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("example.com is not configured"));
    nolist()
        .args([
            "verify",
            "-c",
            CLASSIC,
            "--ns-port",
            "5353",
            "--nameserver",
            "127.0.0.1:1",
        ])
        .assert()
        .code(2);
    nolist()
        .args([
            "verify",
            "-c",
            CLASSIC,
            "--timeout",
            "0s",
            "--nameserver",
            "127.0.0.1:1",
        ])
        .assert()
        .code(2);
    nolist()
        .args(["verify", "-c", CLASSIC, "--nameserver", "not-an-address"])
        .assert()
        .code(2);
}

/// The docs show `--nameserver 127.0.0.1:5353`; the test's NSD is on a free
/// port, which is swapped in for the run and back in the output.
#[test]
fn verify_json_doc_example_is_real_output() {
    let runs = util::documented_runs(&root().join("docs/verify-json.md"));
    assert!(
        !runs.is_empty(),
        "docs/verify-json.md shows no command + JSON example"
    );
    for (cmd, shown) in runs {
        let config = cmd
            .split_whitespace()
            .skip_while(|a| *a != "-c")
            .nth(1)
            .unwrap();
        let zones = planned_zones(config);
        let refs: Vec<(&str, &str)> = zones
            .iter()
            .map(|(o, t)| (o.as_str(), t.as_str()))
            .collect();
        let Some(nsd) = Nsd::start(&refs) else { return };
        let real = nsd.addr.to_string();
        let args: Vec<String> = cmd
            .split_whitespace()
            .skip(1)
            .map(|a| a.replace("127.0.0.1:5353", &real))
            .collect();
        let out = nolist().args(&args).output().unwrap();
        let got = String::from_utf8(out.stdout)
            .unwrap()
            .replace(&real, "127.0.0.1:5353");
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(
            parse(&got),
            parse(&shown),
            "`{cmd}` output differs from the docs"
        );
    }
}

/// docs/verify.md's text example is this run's output (port swapped back),
/// of the command it shows.
#[test]
fn docs_verify_text_example_is_real_output() {
    let docs = std::fs::read_to_string(root().join("docs/verify.md")).unwrap();
    let start = docs
        .find("Example, with the classic example's preferences swapped")
        .expect("docs/verify.md's text example");
    let block = &docs[start..];
    let body_start = block.find("```console\n").unwrap() + "```console\n".len();
    let body_end = body_start + block[body_start..].find("```\n").unwrap();
    let (command, shown) = block[body_start..body_end].split_once('\n').unwrap();
    assert_eq!(
        command,
        "$ nolist verify -c examples/classic.yaml --dns-only --nameserver 127.0.0.1:5353    # exits 1"
    );

    let zone = swapped(&planned_zone(CLASSIC, "example.org"));
    let Some(nsd) = Nsd::start(&[("example.org", &zone)]) else {
        return;
    };
    let out = nolist()
        .args([
            "verify",
            "-c",
            CLASSIC,
            "--dns-only",
            "--nameserver",
            &nsd.addr.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let got = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&nsd.addr.to_string(), "127.0.0.1:5353");
    assert_eq!(got, shown);
}
