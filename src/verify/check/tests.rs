//! The checks on hand-made observations: one test per rule, the failure
//! wording of every lookup error, and properties that hold for any answer
//! (no panic; a failed lookup is never a pass).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::config;
use crate::plan::Plan;
use crate::verify::observe::{AuthObservation, ServerObservation};
use crate::verify::{Expected, expectations};

const CLASSIC: &str = "\
domains:
  - name: example.org
    decoy: { host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.org, preference: 20, ipv4: [192.0.2.20], ipv6: [\"2001:db8::20\"] }
      - { host: mail.example.net, preference: 30 }
dns:
  soa: { mname: ns1.example.org, rname: hostmaster@example.org }
  ns: [ns1.example.net, ns2.example.net]
";

const SANDWICH: &str = "\
domains:
  - name: example.com
    layout: sandwich
    decoy: { host: mx01.example.com, preference: 10, ipv4: [192.0.2.10] }
    real:
      - { host: mx02.example.com, preference: 20, ipv4: [192.0.2.20] }
    tail_decoy: { host: mx99.example.com, preference: 90, ipv4: [192.0.2.11] }
";

fn expected(yaml: &str) -> Expected {
    let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    expectations(&Plan::build(&cfg), &cfg).remove(0)
}

fn mx(records: &[(u16, &str)]) -> Answer<LiveMx> {
    Answer::Records(
        records
            .iter()
            .map(|(p, h)| LiveMx {
                preference: *p,
                host: (*h).to_owned(),
            })
            .collect(),
    )
}

fn v4(addrs: &[&str]) -> Answer<Ipv4Addr> {
    if addrs.is_empty() {
        return Answer::NoData;
    }
    Answer::Records(addrs.iter().map(|a| a.parse().unwrap()).collect())
}

fn v6(addrs: &[&str]) -> Answer<Ipv6Addr> {
    if addrs.is_empty() {
        return Answer::NoData;
    }
    Answer::Records(addrs.iter().map(|a| a.parse().unwrap()).collect())
}

fn host(ipv4: Answer<Ipv4Addr>, ipv6: Answer<Ipv6Addr>) -> HostAnswer {
    HostAnswer {
        ipv4,
        ipv6,
        alias: None,
    }
}

/// The live DNS exactly as `CLASSIC` plans it.
fn classic_live() -> DomainObservation {
    DomainObservation {
        mx: mx(&[
            (10, "mx01.example.org."),
            (20, "mx02.example.org."),
            (30, "mail.example.net."),
        ]),
        hosts: BTreeMap::from([
            (
                "mx01.example.org.".into(),
                host(v4(&["192.0.2.10"]), v6(&[])),
            ),
            (
                "mx02.example.org.".into(),
                host(v4(&["192.0.2.20"]), v6(&["2001:db8::20"])),
            ),
            (
                "mail.example.net.".into(),
                host(v4(&["198.51.100.1"]), v6(&[])),
            ),
        ]),
        authoritative: None,
    }
}

fn sandwich_live() -> DomainObservation {
    DomainObservation {
        mx: mx(&[
            (10, "mx01.example.com."),
            (20, "mx02.example.com."),
            (90, "mx99.example.com."),
        ]),
        hosts: BTreeMap::from([
            (
                "mx01.example.com.".into(),
                host(v4(&["192.0.2.10"]), v6(&[])),
            ),
            (
                "mx02.example.com.".into(),
                host(v4(&["192.0.2.20"]), v6(&[])),
            ),
            (
                "mx99.example.com.".into(),
                host(v4(&["192.0.2.11"]), v6(&[])),
            ),
        ]),
        authoritative: None,
    }
}

fn run(exp: &Expected, obs: &DomainObservation) -> Vec<Check> {
    domain(exp, obs)
}

fn ids(checks: &[Check]) -> Vec<(&'static str, &str)> {
    checks.iter().map(|c| (c.id, c.subject.as_str())).collect()
}

fn failed(checks: &[Check]) -> Vec<(&'static str, &str)> {
    checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| (c.id, c.subject.as_str()))
        .collect()
}

#[track_caller]
fn find<'a>(checks: &'a [Check], id: &str, subject: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id && c.subject == subject)
        .unwrap_or_else(|| panic!("no {id} {subject} in {checks:#?}"))
}

#[test]
fn live_as_planned_passes_every_check_in_report_order() {
    let checks = run(&expected(CLASSIC), &classic_live());
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert!(checks.iter().all(|c| c.status == Status::Pass));
    assert_eq!(
        ids(&checks),
        [
            ("mx-lookup", "example.org."),
            ("mx-records", "example.org."),
            ("mx-extra", "example.org."),
            ("decoy-lowest", "example.org."),
            ("mx-address", "mx01.example.org."),
            ("mx-cname", "mx01.example.org."),
            ("mx-address", "mx02.example.org."),
            ("mx-cname", "mx02.example.org."),
            ("mx-address", "mail.example.net."),
            ("mx-cname", "mail.example.net."),
        ]
    );
    assert_eq!(
        find(&checks, "mx-lookup", "example.org.").message,
        "3 MX records: 10 mx01.example.org, 20 mx02.example.org, 30 mail.example.net"
    );
    assert_eq!(
        find(&checks, "mx-address", "mx02.example.org.").message,
        "A 192.0.2.20, AAAA 2001:db8::20, as planned"
    );
    assert_eq!(
        find(&checks, "mx-address", "mail.example.net.").message,
        "resolves to A 198.51.100.1 (no addresses configured: any address will do)"
    );
}

#[test]
fn mx_lookup_failures_are_named_and_never_passed() {
    let exp = expected(CLASSIC);
    let cases = [
        (Answer::NxDomain, "example.org does not exist (NXDOMAIN)"),
        (
            Answer::NoData,
            "example.org has no MX records (NODATA): senders would deliver to the domain's own address, bypassing the decoy",
        ),
        (
            Answer::Records(vec![]),
            "example.org has no MX records (NODATA): senders would deliver to the domain's own address, bypassing the decoy",
        ),
        (
            Answer::Failed(QueryError::ServFail),
            "MX query for example.org: SERVFAIL (the server failed to answer)",
        ),
        (
            Answer::Failed(QueryError::Refused),
            "MX query for example.org: REFUSED (the server does not serve this zone, or not to this client)",
        ),
        (
            Answer::Failed(QueryError::Timeout),
            "MX query for example.org: timeout (no answer from the nameserver)",
        ),
        (
            Answer::Failed(QueryError::Rcode("NOTIMP".into())),
            "MX query for example.org: NOTIMP (error response)",
        ),
    ];
    for (answer, message) in cases {
        let mut obs = classic_live();
        obs.mx = answer;
        let checks = run(&exp, &obs);
        let lookup = find(&checks, "mx-lookup", "example.org.");
        assert_eq!(lookup.status, Status::Fail);
        assert_eq!(lookup.message, message);
        // The checks that need the RRset are not reported at all.
        for id in ["mx-records", "mx-extra", "decoy-lowest", "tail-highest"] {
            assert!(
                checks.iter().all(|c| c.id != id),
                "{id} reported: {checks:#?}"
            );
        }
        // The hosts are still checked: their lookups are independent.
        assert_eq!(
            find(&checks, "mx-address", "mx01.example.org.").status,
            Status::Pass
        );
    }
}

#[test]
fn swapped_preferences_fail_mx_records_and_decoy_lowest() {
    let mut obs = classic_live();
    obs.mx = mx(&[
        (20, "mx01.example.org."),
        (10, "mx02.example.org."),
        (30, "mail.example.net."),
    ]);
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(
        failed(&checks),
        [
            ("mx-records", "example.org."),
            ("decoy-lowest", "example.org.")
        ]
    );
    assert_eq!(
        find(&checks, "mx-records", "example.org.").message,
        "mx01.example.org has preference 20, planned 10; mx02.example.org has preference 10, planned 20"
    );
    assert_eq!(
        find(&checks, "decoy-lowest", "example.org.").message,
        "10 mx02.example.org not above the decoy mx01.example.org (20): senders may try them first"
    );
}

#[test]
fn a_real_mx_equal_to_the_decoy_fails_decoy_lowest() {
    let mut obs = classic_live();
    obs.mx = mx(&[
        (10, "mx01.example.org."),
        (10, "mx02.example.org."),
        (30, "mail.example.net."),
    ]);
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(
        failed(&checks),
        [
            ("mx-records", "example.org."),
            ("decoy-lowest", "example.org.")
        ]
    );
}

#[test]
fn missing_planned_mx_fails_mx_records() {
    let mut obs = classic_live();
    obs.mx = mx(&[(10, "mx01.example.org."), (20, "mx02.example.org.")]);
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(failed(&checks), [("mx-records", "example.org.")]);
    assert_eq!(
        find(&checks, "mx-records", "example.org.").message,
        "mail.example.net is not published (planned preference 30)"
    );
}

#[test]
fn missing_decoy_fails_mx_records_and_decoy_lowest() {
    let mut obs = classic_live();
    obs.mx = mx(&[(20, "mx02.example.org."), (30, "mail.example.net.")]);
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(
        failed(&checks),
        [
            ("mx-records", "example.org."),
            ("decoy-lowest", "example.org.")
        ]
    );
    assert_eq!(
        find(&checks, "decoy-lowest", "example.org.").message,
        "the decoy mx01.example.org is not published: senders go straight to a real MX"
    );
}

#[test]
fn planned_host_published_twice_fails_mx_records() {
    let mut obs = classic_live();
    obs.mx = mx(&[
        (10, "mx01.example.org."),
        (20, "mx02.example.org."),
        (25, "mx02.example.org."),
        (30, "mail.example.net."),
    ]);
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(failed(&checks), [("mx-records", "example.org.")]);
    assert_eq!(
        find(&checks, "mx-records", "example.org.").message,
        "mx02.example.org has preference 20, 25, planned 20"
    );
}

#[test]
fn extra_mx_fails_mx_extra_and_is_looked_up() {
    let exp = expected(CLASSIC);
    let mut obs = classic_live();
    obs.mx = mx(&[
        (10, "mx01.example.org."),
        (20, "mx02.example.org."),
        (20, "backup.example.org."),
        (30, "mail.example.net."),
    ]);
    assert_eq!(
        extra_live_hosts(&exp, obs.mx.records().unwrap()),
        ["backup.example.org."]
    );
    obs.hosts.insert(
        "backup.example.org.".into(),
        host(v4(&["192.0.2.99"]), v6(&[])),
    );
    let checks = run(&exp, &obs);
    assert_eq!(failed(&checks), [("mx-extra", "example.org.")]);
    assert_eq!(
        find(&checks, "mx-extra", "example.org.").message,
        "not in the plan: 20 backup.example.org; mail can reach an unplanned MX without going through the decoy"
    );
    // Unplanned hosts come after the planned ones.
    assert_eq!(
        ids(&checks)[ids(&checks).len() - 2..],
        [
            ("mx-address", "backup.example.org."),
            ("mx-cname", "backup.example.org.")
        ]
    );

    // Below the decoy, it also defeats decoy-lowest.
    obs.mx = mx(&[
        (5, "backup.example.org."),
        (10, "mx01.example.org."),
        (20, "mx02.example.org."),
        (30, "mail.example.net."),
    ]);
    let checks = run(&exp, &obs);
    assert_eq!(
        failed(&checks),
        [
            ("mx-extra", "example.org."),
            ("decoy-lowest", "example.org.")
        ]
    );
}

#[test]
fn null_mx_is_extra_but_never_looked_up() {
    let exp = expected(CLASSIC);
    let live = mx(&[(0, "."), (10, "mx01.example.org.")]);
    assert!(extra_live_hosts(&exp, live.records().unwrap()).is_empty());
    let mut obs = classic_live();
    obs.mx = live;
    let checks = run(&exp, &obs);
    assert!(
        find(&checks, "mx-extra", "example.org.")
            .message
            .starts_with("not in the plan: 0 .;")
    );
}

#[test]
fn extra_hosts_are_capped() {
    let exp = expected(CLASSIC);
    let many: Vec<LiveMx> = (0..100)
        .map(|i| LiveMx {
            preference: 50,
            host: format!("x{i:03}.example.org."),
        })
        .collect();
    let extra = extra_live_hosts(&exp, &many);
    assert_eq!(extra.len(), MAX_EXTRA_HOSTS);
    assert_eq!(extra[0], "x000.example.org.");
}

#[test]
fn sandwich_checks_the_tail_decoy() {
    let exp = expected(SANDWICH);
    let checks = run(&exp, &sandwich_live());
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    assert_eq!(
        find(&checks, "tail-highest", "example.com.").message,
        "the tail decoy mx99.example.com (90) has the highest preference: bots that pick the last MX hit it"
    );

    let mut obs = sandwich_live();
    obs.mx = mx(&[
        (10, "mx01.example.com."),
        (20, "mx02.example.com."),
        (20, "mx99.example.com."),
    ]);
    let checks = run(&exp, &obs);
    assert_eq!(
        failed(&checks),
        [
            ("mx-records", "example.com."),
            ("tail-highest", "example.com.")
        ]
    );
    assert_eq!(
        find(&checks, "tail-highest", "example.com.").message,
        "20 mx02.example.com not below the tail decoy mx99.example.com (20): bots that pick the last MX reach them"
    );

    obs.mx = mx(&[(10, "mx01.example.com."), (20, "mx02.example.com.")]);
    let checks = run(&exp, &obs);
    assert_eq!(
        find(&checks, "tail-highest", "example.com.").message,
        "the tail decoy mx99.example.com is not published: bots that pick the last MX reach a real one"
    );
}

#[test]
fn classic_layout_has_no_tail_check() {
    let checks = run(&expected(CLASSIC), &classic_live());
    assert!(checks.iter().all(|c| c.id != "tail-highest"));
}

#[test]
fn decoy_and_tail_may_be_the_same_host() {
    let yaml = SANDWICH.replace(
        "{ host: mx99.example.com, preference: 90, ipv4: [192.0.2.11] }",
        "{ host: mx01.example.com, preference: 90, ipv4: [192.0.2.10] }",
    );
    let exp = expected(&yaml);
    let mut obs = sandwich_live();
    obs.mx = mx(&[
        (10, "mx01.example.com."),
        (20, "mx02.example.com."),
        (90, "mx01.example.com."),
    ]);
    let checks = run(&exp, &obs);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
}

#[test]
fn wrong_or_extra_addresses_fail_mx_address() {
    let exp = expected(CLASSIC);
    let cases: [(HostAnswer, &str); 5] = [
        (
            host(v4(&["192.0.2.99"]), v6(&[])),
            "resolves to A 192.0.2.99: planned A 192.0.2.10 missing; A 192.0.2.99 not planned",
        ),
        (
            host(v4(&["192.0.2.10"]), v6(&["2001:db8::99"])),
            "resolves to A 192.0.2.10, AAAA 2001:db8::99: AAAA 2001:db8::99 not planned",
        ),
        (
            host(v4(&[]), v6(&[])),
            "resolves to no address: planned A 192.0.2.10 missing",
        ),
        (
            host(Answer::NxDomain, Answer::NxDomain),
            "mx01.example.org does not exist (NXDOMAIN); planned A 192.0.2.10",
        ),
        (
            host(v4(&["192.0.2.10"]), Answer::Failed(QueryError::ServFail)),
            "AAAA query: SERVFAIL (the server failed to answer); planned A 192.0.2.10",
        ),
    ];
    for (answer, message) in cases {
        let mut obs = classic_live();
        obs.hosts.insert("mx01.example.org.".into(), answer);
        let checks = run(&exp, &obs);
        assert_eq!(
            failed(&checks),
            [("mx-address", "mx01.example.org.")],
            "{message}"
        );
        assert_eq!(
            find(&checks, "mx-address", "mx01.example.org.").message,
            message
        );
    }
}

#[test]
fn missing_family_of_a_dual_stack_host_fails() {
    let mut obs = classic_live();
    obs.hosts.insert(
        "mx02.example.org.".into(),
        host(v4(&["192.0.2.20"]), v6(&[])),
    );
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(
        find(&checks, "mx-address", "mx02.example.org.").message,
        "resolves to A 192.0.2.20: planned AAAA 2001:db8::20 missing"
    );
}

#[test]
fn host_without_configured_addresses_must_still_resolve() {
    let exp = expected(CLASSIC);
    for (answer, message) in [
        (
            host(v4(&[]), v6(&[])),
            "mail.example.net has no A or AAAA record",
        ),
        (
            host(Answer::NxDomain, Answer::NxDomain),
            "mail.example.net does not exist (NXDOMAIN)",
        ),
        (
            host(
                Answer::Failed(QueryError::Timeout),
                Answer::Failed(QueryError::Timeout),
            ),
            "A and AAAA queries: timeout (no answer from the nameserver)",
        ),
    ] {
        let mut obs = classic_live();
        obs.hosts.insert("mail.example.net.".into(), answer);
        let checks = run(&exp, &obs);
        let check = find(&checks, "mx-address", "mail.example.net.");
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.message, message);
    }
}

#[test]
fn addresses_configured_in_another_domain_are_expected() {
    let yaml = "\
domains:
  - name: example.net
    decoy: { host: mx-decoy.example.net, preference: 10, ipv4: [198.51.100.10] }
    real: [{ host: mail.example.net, preference: 20, ipv4: [198.51.100.20] }]
  - name: shop.example
    decoy: { host: mx-decoy.example.net, preference: 10 }
    real: [{ host: mail.example.net, preference: 20 }]
";
    let cfg = config::parse(yaml, Path::new("t.yaml")).unwrap();
    let all = expectations(&Plan::build(&cfg), &cfg);
    let shop = &all[1];
    assert_eq!(shop.origin.as_str(), "shop.example");
    assert_eq!(
        shop.hosts["mail.example.net."].ipv4,
        ["198.51.100.20".parse().unwrap()].into()
    );
}

#[test]
fn cname_target_fails_mx_cname_only() {
    let mut obs = classic_live();
    obs.hosts.insert(
        "mx02.example.org.".into(),
        HostAnswer {
            ipv4: v4(&["192.0.2.20"]),
            ipv6: v6(&["2001:db8::20"]),
            alias: Some("mail.example.org.".into()),
        },
    );
    let checks = run(&expected(CLASSIC), &obs);
    assert_eq!(failed(&checks), [("mx-cname", "mx02.example.org.")]);
    assert_eq!(
        find(&checks, "mx-cname", "mx02.example.org.").message,
        "mx02.example.org is an alias (CNAME for mail.example.org): an MX target must not be one \
         (RFC 2181 section 10.3), and some senders refuse it"
    );
}

#[test]
fn mx_cname_is_not_reported_without_an_answer_about_the_name() {
    for answer in [
        host(Answer::NxDomain, Answer::NxDomain),
        host(
            Answer::Failed(QueryError::Timeout),
            Answer::Failed(QueryError::Refused),
        ),
    ] {
        let mut obs = classic_live();
        obs.hosts.insert("mx01.example.org.".into(), answer);
        let checks = run(&expected(CLASSIC), &obs);
        assert!(
            checks
                .iter()
                .all(|c| !(c.id == "mx-cname" && c.subject == "mx01.example.org.")),
            "{checks:#?}"
        );
        assert_eq!(failed(&checks), [("mx-address", "mx01.example.org.")]);
    }
}

fn server(ns: &str, addr: &str, serial: Answer<u32>, live: Answer<LiveMx>) -> ServerObservation {
    ServerObservation {
        ns: ns.into(),
        address: addr.parse::<SocketAddr>().unwrap(),
        serial,
        mx: live,
        authoritative: true,
    }
}

fn with_auth(servers: Vec<ServerObservation>) -> DomainObservation {
    let mut obs = classic_live();
    obs.authoritative = Some(AuthObservation {
        ns: Answer::Records(vec!["ns1.example.net.".into(), "ns2.example.net.".into()]),
        ns_hosts: BTreeMap::from([
            (
                "ns1.example.net.".into(),
                host(v4(&["192.0.2.53"]), v6(&[])),
            ),
            (
                "ns2.example.net.".into(),
                host(v4(&["192.0.2.54"]), v6(&[])),
            ),
        ]),
        servers,
    });
    obs
}

fn planned_mx() -> Answer<LiveMx> {
    classic_live().mx
}

#[test]
fn authoritative_servers_that_agree_pass() {
    let obs = with_auth(vec![
        server(
            "ns1.example.net.",
            "192.0.2.53:53",
            Answer::Records(vec![7]),
            planned_mx(),
        ),
        server(
            "ns2.example.net.",
            "192.0.2.54:53",
            Answer::Records(vec![7]),
            planned_mx(),
        ),
    ]);
    let checks = run(&expected(CLASSIC), &obs);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    let auth: Vec<_> = ids(&checks)
        .into_iter()
        .filter(|(id, _)| id.starts_with("ns-"))
        .collect();
    assert_eq!(
        auth,
        [
            ("ns-lookup", "example.org."),
            ("ns-records", "example.org."),
            ("ns-address", "ns1.example.net."),
            ("ns-address", "ns2.example.net."),
            ("ns-answer", "ns1.example.net. 192.0.2.53:53"),
            ("ns-answer", "ns2.example.net. 192.0.2.54:53"),
            ("ns-agree", "example.org."),
        ]
    );
    assert_eq!(
        find(&checks, "ns-agree", "example.org.").message,
        "2 servers agree: serial 7, 10 mx01.example.org, 20 mx02.example.org, 30 mail.example.net"
    );
}

#[test]
fn authoritative_disagreement_on_serial_warns_and_on_mx_fails() {
    let exp = expected(CLASSIC);
    let obs = with_auth(vec![
        server(
            "ns1.example.net.",
            "192.0.2.53:53",
            Answer::Records(vec![7]),
            planned_mx(),
        ),
        server(
            "ns2.example.net.",
            "192.0.2.54:53",
            Answer::Records(vec![6]),
            planned_mx(),
        ),
    ]);
    let checks = run(&exp, &obs);
    assert!(failed(&checks).is_empty());
    let agree = find(&checks, "ns-agree", "example.org.");
    assert_eq!(agree.status, Status::Warn);
    assert_eq!(
        agree.message,
        "same MX set, different SOA serials (192.0.2.54:53: 6; 192.0.2.53:53: 7): a server may lag behind"
    );

    let obs = with_auth(vec![
        server(
            "ns1.example.net.",
            "192.0.2.53:53",
            Answer::Records(vec![7]),
            planned_mx(),
        ),
        server(
            "ns2.example.net.",
            "192.0.2.54:53",
            Answer::Records(vec![7]),
            mx(&[(10, "mx01.example.org.")]),
        ),
    ]);
    let checks = run(&exp, &obs);
    assert_eq!(failed(&checks), [("ns-agree", "example.org.")]);
}

#[test]
fn unanswering_or_lame_servers_fail_ns_answer() {
    let exp = expected(CLASSIC);
    let mut lame = server(
        "ns2.example.net.",
        "192.0.2.54:53",
        Answer::Records(vec![7]),
        planned_mx(),
    );
    lame.authoritative = false;
    let obs = with_auth(vec![
        server(
            "ns1.example.net.",
            "192.0.2.53:53",
            Answer::Failed(QueryError::Timeout),
            Answer::Failed(QueryError::Timeout),
        ),
        lame,
    ]);
    let checks = run(&exp, &obs);
    assert_eq!(
        failed(&checks),
        [
            ("ns-answer", "ns1.example.net. 192.0.2.53:53"),
            ("ns-answer", "ns2.example.net. 192.0.2.54:53"),
        ]
    );
    assert_eq!(
        find(&checks, "ns-answer", "ns1.example.net. 192.0.2.53:53").message,
        "SOA query: timeout (no answer from the nameserver); MX query: timeout (no answer from the nameserver)"
    );
    assert_eq!(
        find(&checks, "ns-answer", "ns2.example.net. 192.0.2.54:53").message,
        "answered without the AA bit: not authoritative for example.org (lame delegation)"
    );
    // Nobody answered properly: nothing to compare, so no ns-agree at all.
    assert!(checks.iter().all(|c| c.id != "ns-agree"));
}

#[test]
fn unplanned_ns_set_fails_ns_records_and_failed_ns_lookup_stops_there() {
    let exp = expected(CLASSIC);
    let mut obs = with_auth(vec![]);
    if let Some(auth) = obs.authoritative.as_mut() {
        auth.ns = Answer::Records(vec!["ns1.example.net.".into(), "ns9.example.org.".into()]);
    }
    let checks = run(&exp, &obs);
    assert_eq!(
        find(&checks, "ns-records", "example.org.").message,
        "planned but not published: ns2.example.net; published but not planned: ns9.example.org"
    );
    if let Some(auth) = obs.authoritative.as_mut() {
        auth.ns = Answer::Failed(QueryError::ServFail);
    }
    let checks = run(&exp, &obs);
    let ns: Vec<_> = ids(&checks)
        .into_iter()
        .filter(|(id, _)| id.starts_with("ns-"))
        .collect();
    assert_eq!(ns, [("ns-lookup", "example.org.")]);
}

#[test]
fn every_check_id_is_documented_in_docs_verify_and_json_schema() {
    for path in ["docs/verify.md", "docs/verify-json.md"] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .expect("doc file");
        for check in CHECKS {
            assert!(
                text.contains(&format!("`{}`", check.id)),
                "{} missing from {path}",
                check.id
            );
        }
    }
}

fn any_error() -> impl Strategy<Value = QueryError> {
    prop_oneof![
        Just(QueryError::ServFail),
        Just(QueryError::Refused),
        Just(QueryError::Timeout),
        ".{0,20}".prop_map(QueryError::Network),
        ".{0,20}".prop_map(QueryError::Malformed),
        "[A-Z]{0,8}".prop_map(QueryError::Rcode),
    ]
}

fn any_answer<T: std::fmt::Debug + Clone + 'static>(
    item: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Answer<T>> {
    prop_oneof![
        proptest::collection::vec(item, 0..5).prop_map(Answer::Records),
        Just(Answer::NoData),
        Just(Answer::NxDomain),
        any_error().prop_map(Answer::Failed),
    ]
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mx01.example.org.".to_owned()),
        Just("mx02.example.org.".to_owned()),
        Just("mail.example.net.".to_owned()),
        Just(".".to_owned()),
        "[a-z0-9.\\\\ -]{0,30}",
    ]
}

fn any_host() -> impl Strategy<Value = HostAnswer> {
    (
        any_answer(any::<u32>().prop_map(Ipv4Addr::from)),
        any_answer(any::<u128>().prop_map(Ipv6Addr::from)),
        proptest::option::of(any_name()),
    )
        .prop_map(|(ipv4, ipv6, alias)| HostAnswer { ipv4, ipv6, alias })
}

proptest! {
    /// Whatever the DNS says, the checks do not panic, and a host whose
    /// lookups failed or found nothing never passes `mx-address`.
    #[test]
    fn hostile_answers_never_panic_or_pass_by_default(
        live in any_answer((any::<u16>(), any_name()).prop_map(|(preference, host)| LiveMx { preference, host })),
        hosts in proptest::collection::btree_map(any_name(), any_host(), 0..6),
        decoy in any_host(),
    ) {
        let exp = expected(CLASSIC);
        let mut obs = DomainObservation { mx: live, hosts, authoritative: None };
        obs.hosts.insert("mx01.example.org.".into(), decoy.clone());
        let checks = domain(&exp, &obs);
        let lookup = checks.iter().find(|c| c.id == "mx-lookup").unwrap();
        prop_assert_eq!(
            lookup.status == Status::Pass,
            matches!(&obs.mx, Answer::Records(r) if !r.is_empty())
        );
        let decoy_check = checks
            .iter()
            .find(|c| c.id == "mx-address" && c.subject == "mx01.example.org.")
            .unwrap();
        let resolved = decoy.ipv4.records().is_some_and(|r| !r.is_empty())
            || decoy.ipv6.records().is_some_and(|r| !r.is_empty());
        let failed_lookup = decoy.ipv4.error().is_some() || decoy.ipv6.error().is_some();
        if failed_lookup || !resolved {
            prop_assert_eq!(decoy_check.status, Status::Fail);
        }
    }
}
