//! The nftables backend: batch texts, set and counter parsing, the let-through rules.

use super::*;
use crate::enforce::Target;
use crate::enforce::tests::t;

fn batch(desired: &[Target], actual: Option<&[IpNet]>) -> String {
    let nft = Nft::new(vec![25, 587]);
    batch_text(&nft.skeleton(), &Change::between(desired, actual))
}

#[test]
fn batch_deletes_stray_and_adds_missing_per_set() {
    let actual: Vec<IpNet> = vec![
        "203.0.113.9/32".parse().unwrap(),
        "198.51.100.0/24".parse().unwrap(),
    ];
    assert_eq!(
        batch(
            &[
                t("203.0.113.9/32", 60),
                t("2001:db8::bad/128", 3600),
                t("203.0.113.10/32", 5),
                t("2001:db8:1::/48", 7)
            ],
            Some(&actual)
        ),
        "delete element inet nolist banned4_nets { 198.51.100.0/24 }\n\
             add element inet nolist banned4 { 203.0.113.10 timeout 5s }\n\
             add element inet nolist banned6 { 2001:db8::bad timeout 3600s }\n\
             add element inet nolist banned6_nets { 2001:db8:1::/48 timeout 7s }\n"
    );
}

#[test]
fn many_elements_go_in_few_commands() {
    let many: Vec<Target> = (0..10_000u32)
        .map(|i| Target {
            net: IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
            remaining: 60,
        })
        .collect();
    let b = batch(&many, Some(&[]));
    assert_eq!(b.lines().count(), 3, "10,000 elements in chunks of {CHUNK}");
    assert!(b.starts_with(
        "add element inet nolist banned4 { 10.0.0.0 timeout 60s, 10.0.0.1 timeout 60s,"
    ));
}

#[test]
fn rebuild_starts_with_the_skeleton() {
    let b = batch(&[t("203.0.113.9/32", 60)], None);
    assert!(b.starts_with("add table inet nolist\n"), "{b}");
    for set in ["banned4", "banned4_nets", "banned6", "banned6_nets"] {
        assert!(
            b.contains(&format!(
                "ct state new ip{} saddr @{set} drop",
                if set.contains('6') { "6" } else { "" }
            )),
            "{b}"
        );
    }
    assert!(b.contains("tcp dport { 25, 587 }"), "{b}");
    assert!(
        b.contains("add set inet nolist banned4 { type ipv4_addr; flags timeout; }"),
        "{b}"
    );
    assert!(
        b.contains("add set inet nolist banned4_nets { type ipv4_addr; flags interval, timeout; }"),
        "{b}"
    );
    assert!(b.ends_with("add element inet nolist banned4 { 203.0.113.9 timeout 60s }\n"));
    assert!(
        b.contains("add table inet nolist_refuse\ndelete table inet nolist_refuse\n"),
        "no evidence outside refuse mode: {b}"
    );
}

#[test]
fn refuse_evidence_has_its_own_table_after_the_drop_rules() {
    let nft = Nft::new(vec![25]).with_evidence(
        vec![
            "198.18.0.1:25".parse().unwrap(),
            "[2001:db8::1]:2525".parse().unwrap(),
        ],
        Duration::from_secs(600),
    );
    let s = nft.skeleton();
    assert!(
        s.contains("add chain inet nolist input { type filter hook input priority -10;"),
        "{s}"
    );
    assert!(
        s.contains("add chain inet nolist_refuse input { type filter hook input priority -5;"),
        "{s}"
    );
    assert!(s.contains("add rule inet nolist_refuse input ip daddr 198.18.0.1 tcp dport 25 tcp flags & (syn | ack) == syn update @seen4 { ip saddr counter } reject with tcp reset"), "{s}");
    assert!(s.contains("ip6 daddr 2001:db8::1 tcp dport 2525"), "{s}");
    assert!(s.contains("add set inet nolist_refuse seen6 { type ipv6_addr; size 65536; flags dynamic, timeout; timeout 600s; counter; }"), "{s}");
    assert!(!s.contains("delete table"), "{s}");
}

#[test]
fn the_let_through_resets_passed_sources_before_any_drop_rule() {
    let nft = Nft::new(vec![25]).with_let_through(vec![
        "198.18.0.1:25".parse().unwrap(),
        "[2001:db8::1]:2525".parse().unwrap(),
        "198.18.0.1:0".parse().unwrap(),
    ]);
    let s = nft.skeleton();
    for set in ["pass4", "pass6"] {
        let ty = if set == "pass4" { "ipv4" } else { "ipv6" };
        assert!(
            s.contains(&format!(
                "add set inet nolist {set} {{ type {ty}_addr; flags interval, timeout; }}\n"
            )),
            "{s}"
        );
    }
    let rules: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("add rule inet nolist input"))
        .collect();
    assert_eq!(
        rules.len(),
        6,
        "two resets (port 0 gets none), four drops: {s}"
    );
    assert_eq!(
        rules[0],
        "add rule inet nolist input ip daddr 198.18.0.1 tcp dport 25 tcp flags & (syn | ack) == syn ip saddr @pass4 reject with tcp reset"
    );
    assert_eq!(
        rules[1],
        "add rule inet nolist input ip6 daddr 2001:db8::1 tcp dport 2525 tcp flags & (syn | ack) == syn ip6 saddr @pass6 reject with tcp reset"
    );
    assert!(rules[2..].iter().all(|r| r.ends_with(" drop")), "{s}");
    // The chain is flushed before the rules go in, so they are in this order.
    let flush = s.find("flush chain inet nolist input").unwrap();
    assert!(flush < s.find(rules[0]).unwrap(), "{s}");
}

#[test]
fn the_let_through_on_a_wildcard_decoy_matches_the_port_in_both_families() {
    let nft = Nft::new(vec![25]).with_let_through(vec!["[::]:25".parse().unwrap()]);
    assert_eq!(
        nft.pass_rules(),
        [
            "tcp dport 25 tcp flags & (syn | ack) == syn ip6 saddr @pass6 reject with tcp reset",
            "tcp dport 25 tcp flags & (syn | ack) == syn ip saddr @pass4 reject with tcp reset",
        ]
    );
    // Without decoys (refuse mode) nothing is let through, but the sets
    // exist, so the table has one layout.
    let mut none = Nft::new(vec![25]);
    assert!(none.let_through().is_none() && none.pass_rules().is_empty());
    assert!(none.skeleton().contains("add set inet nolist pass4 "));
}

#[test]
fn pass_batches_delete_then_add_with_timeouts_and_never_touch_ban_sets() {
    let held: Vec<IpNet> = vec![
        "198.18.5.0/24".parse().unwrap(),
        "198.18.1.0/24".parse().unwrap(),
    ];
    let change = Change::renewing(
        &[
            t("198.18.1.0/24", 86_000),
            t("2001:db8:1::/64", 3600),
            t("198.18.9.9/32", 60),
        ],
        Some(&held),
        &|n| (n.to_string() == "198.18.1.0/24").then_some(100),
        MAX_TIMEOUT,
    );
    assert_eq!(
        pass_batch_text(&change),
        "delete element inet nolist pass4 { 198.18.1.0/24, 198.18.5.0/24 }\n\
             add element inet nolist pass4 { 198.18.1.0/24 timeout 86000s, 198.18.9.9 timeout 60s }\n\
             add element inet nolist pass6 { 2001:db8:1::/64 timeout 3600s }\n"
    );
    assert_eq!(pass_batch_text(&Change::default()), "");
}

#[test]
fn parses_a_pass_set_back() {
    // `nft -j list set inet nolist pass4` (nft 1.0.6) after the batch above.
    let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "pass4", "table": "nolist", "type": "ipv4_addr", "handle": 6, "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "198.18.1.0", "len": 24}}, "timeout": 86000, "expires": 85998}}, {"elem": {"val": "198.18.9.9", "timeout": 60, "expires": 59}}]}}]}"#;
    let got: Vec<(String, Option<u64>, &str)> = parse_elements(json)
        .unwrap()
        .iter()
        .map(|l| (l.net.to_string(), l.expires, pass_set_of(&l.net)))
        .collect();
    assert_eq!(
        got,
        [
            ("198.18.1.0/24".to_owned(), Some(85_998), "pass4"),
            ("198.18.9.9/32".to_owned(), Some(59), "pass4")
        ]
    );
}

#[test]
fn parses_nft_json() {
    let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "banned4", "table": "nolist", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60, "expires": 59}}, {"elem": {"val": "203.0.113.9", "timeout": 3600, "expires": 3599}}, "192.0.2.1", {"elem": {"val": {"range": ["192.0.2.5", "192.0.2.7"]}}}]}}]}"#;
    let got = parse_elements(json).unwrap();
    let text: Vec<(String, Option<u64>, bool)> = got
        .iter()
        .map(|l| (l.net.to_string(), l.expires, l.exact))
        .collect();
    assert_eq!(
        text,
        [
            ("198.51.100.0/24".to_owned(), Some(59), true),
            ("203.0.113.9/32".to_owned(), Some(3599), true),
            ("192.0.2.1/32".to_owned(), None, true),
            ("192.0.2.5/32".to_owned(), None, false)
        ]
    );
    assert!(parse_set(b"not json").is_err());
    assert!(parse_set(br#"{"nftables": [{"set": {"elem": ["x; drop"]}}]}"#).is_err());
    assert_eq!(
        parse_set(br#"{"nftables": [{"set": {"name": "banned4"}}]}"#).unwrap(),
        vec![]
    );
}

#[test]
fn a_chain_is_intact_with_its_rules_only() {
    // `nft -j list chain inet nolist input` (nft 1.0.6), one rule shown.
    let rule = |set: &str| {
        format!(
            r#"{{"rule": {{"family": "inet", "table": "nolist", "chain": "input", "handle": 9, "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": 25}}}}, {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "right": "@{set}"}}}}, {{"drop": null}}]}}}}"#
        )
    };
    let chain = r#"{"chain": {"family": "inet", "table": "nolist", "name": "input", "handle": 5, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}"#;
    let doc = |rules: &[String]| {
        format!(
            r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {chain}{}]}}"#,
            rules.iter().map(|r| format!(", {r}")).collect::<String>()
        )
    };
    let sets = ["banned4", "banned4_nets"];
    let both = doc(&[rule("banned4"), rule("banned4_nets")]);
    assert!(chain_intact(both.as_bytes(), 2, &sets));
    assert!(
        !chain_intact(doc(&[rule("banned4")]).as_bytes(), 2, &sets),
        "a rule gone"
    );
    assert!(!chain_intact(doc(&[]).as_bytes(), 2, &sets), "flushed");
    assert!(!chain_intact(
        doc(&[rule("banned4"), rule("other")]).as_bytes(),
        2,
        &sets
    ));
    assert!(!chain_intact(b"garbage", 0, &[]));
}

#[test]
fn parses_evidence_counters() {
    // As `nft -j list set inet nolist_refuse seen4` prints it (nft 1.0.6).
    let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "seen4", "table": "nolist_refuse", "type": "ipv4_addr", "handle": 2, "size": 65536, "flags": ["timeout"], "timeout": 3600, "elem": [{"elem": {"val": "198.18.0.9", "expires": 3599, "counter": {"packets": 3, "bytes": 180}}}], "stmt": [{"counter": null}]}}]}"#;
    assert_eq!(
        parse_counters(json).unwrap(),
        vec![("198.18.0.9".parse().unwrap(), 3)]
    );
    assert_eq!(
        parse_counters(br#"{"nftables": [{"set": {"name": "seen4"}}]}"#).unwrap(),
        vec![]
    );
    assert!(
        parse_counters(br#"{"nftables": [{"set": {"elem": [{"elem": {"val": "x; drop"}}]}}]}"#)
            .is_err()
    );
}

#[test]
fn big_changes_go_in_transactions_of_bounded_size_in_order() {
    let ips = |n: u32, base: u32| -> Vec<(std::net::IpAddr, u64)> {
        (0..n)
            .map(|i| {
                (
                    std::net::IpAddr::from(std::net::Ipv4Addr::from(base + i)),
                    60,
                )
            })
            .collect()
    };
    let changes = [
        netlink::SetChange {
            set: "banned4",
            verb: netlink::Verb::Delete,
            elements: ips(3, 0x0a00_0000).into(),
        },
        netlink::SetChange {
            set: "banned4",
            verb: netlink::Verb::Add,
            elements: ips(10, 0x0b00_0000).into(),
        },
        netlink::SetChange {
            set: "banned6",
            verb: netlink::Verb::Add,
            elements: Vec::new().into(),
        },
    ];
    let parts = in_parts(&changes, 4);
    let shape: Vec<Vec<(netlink::Verb, usize)>> = parts
        .iter()
        .map(|p| p.iter().map(|c| (c.verb, c.elements.len())).collect())
        .collect();
    assert_eq!(
        shape,
        [
            vec![(netlink::Verb::Delete, 3), (netlink::Verb::Add, 1)],
            vec![(netlink::Verb::Add, 4)],
            vec![(netlink::Verb::Add, 4)],
            vec![(netlink::Verb::Add, 1)],
        ]
    );
    let added: Vec<_> = parts
        .iter()
        .flatten()
        .filter(|c| c.verb == netlink::Verb::Add)
        .flat_map(|c| c.elements.iter().copied())
        .collect();
    assert_eq!(added, ips(10, 0x0b00_0000), "every element once, in order");
    assert!(in_parts(&changes[2..], 4).is_empty());
}
