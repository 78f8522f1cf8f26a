//! SPF parsing and expansion, against an in-memory DNS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::IpNet;

use super::expansion::subtract;
use super::*;

// ---------------------------------------------------------------------------
// Helpers.

/// An in-memory DNS. Names without an entry are NXDOMAIN.
#[derive(Default)]
struct Fake {
    txt: HashMap<String, Result<Vec<String>, LookupError>>,
    a: HashMap<String, Result<Vec<IpAddr>, LookupError>>,
    mx: HashMap<String, Result<Vec<String>, LookupError>>,
    asked: Mutex<Vec<String>>,
}

impl Fake {
    fn spf(self, name: &str, record: &str) -> Self {
        self.txt(name, &[record])
    }

    fn txt(mut self, name: &str, records: &[&str]) -> Self {
        let records = records.iter().map(|r| r.to_string()).collect();
        self.txt.insert(name.into(), Ok(records));
        self
    }

    fn txt_fails(mut self, name: &str) -> Self {
        self.txt
            .insert(name.into(), Err(LookupError::Failed("SERVFAIL".into())));
        self
    }

    fn a(mut self, name: &str, addresses: &[&str]) -> Self {
        let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        self.a.insert(name.into(), Ok(addresses));
        self
    }

    fn a_fails(mut self, name: &str) -> Self {
        self.a
            .insert(name.into(), Err(LookupError::Failed("timeout".into())));
        self
    }

    fn mx(mut self, name: &str, hosts: &[&str]) -> Self {
        let hosts = hosts.iter().map(|h| h.to_string()).collect();
        self.mx.insert(name.into(), Ok(hosts));
        self
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    fn answer<T: Clone>(
        &self,
        kind: &str,
        table: &HashMap<String, Result<Vec<T>, LookupError>>,
        name: &str,
    ) -> Result<Vec<T>, LookupError> {
        self.asked.lock().unwrap().push(format!("{kind} {name}"));
        table
            .get(name)
            .cloned()
            .unwrap_or(Err(LookupError::NxDomain))
    }
}

impl SpfLookup for Fake {
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        self.answer("TXT", &self.txt, name)
    }

    async fn a(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        self.answer("A", &self.a, name)
    }

    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        self.answer("MX", &self.mx, name)
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|d| d.to_string()).collect()
}

async fn run(fake: &Fake, domains: &[&str]) -> SpfExpansion {
    expand(&names(domains), fake, Limits::default()).await
}

/// The one domain's networks and problems.
async fn one(fake: &Fake, domain: &str) -> (Vec<IpNet>, Vec<Problem>) {
    let result = run(fake, &[domain]).await;
    let (name, count, problems) = result.per_domain[0].clone();
    assert_eq!(name, domain);
    assert_eq!(count, result.networks.len());
    (result.networks, problems)
}

fn allowed(networks: &[IpNet], ip: &str) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    networks.iter().any(|n| n.contains(&ip))
}

fn has(problems: &[Problem], needle: &str) -> bool {
    problems.iter().any(|p| p.to_string().contains(needle))
}

fn directive(q: Qualifier, mechanism: Mechanism) -> Directive {
    Directive {
        qualifier: q,
        mechanism,
    }
}

fn name(n: &str) -> DomainSpec {
    DomainSpec::Name(n.into())
}

fn parsed(txt: &str) -> Vec<Directive> {
    parse_spf(txt).unwrap().directives
}

// ---------------------------------------------------------------------------
// Parsing.

#[test]
fn parses_every_mechanism() {
    use Mechanism::*;
    use Qualifier::Pass;
    let record = parse_spf(
        "v=spf1 ip4:198.51.100.7 ip4:198.51.100.0/24 ip6:2001:db8::/32 ip6:2001:db8::1 \
         include:_spf.Example.COM. a a:mail.example.com a/24 a//64 a:mail.example.com/24//64 \
         mx mx:example.org/28 exists:check.example.net ptr ptr:example.com all",
    )
    .unwrap();
    let expected = vec![
        Ip4("198.51.100.7/32".parse().unwrap()),
        Ip4("198.51.100.0/24".parse().unwrap()),
        Ip6("2001:db8::/32".parse().unwrap()),
        Ip6("2001:db8::1/128".parse().unwrap()),
        Include(name("_spf.example.com")),
        A {
            domain: None,
            v4: 32,
            v6: 128,
        },
        A {
            domain: Some(name("mail.example.com")),
            v4: 32,
            v6: 128,
        },
        A {
            domain: None,
            v4: 24,
            v6: 128,
        },
        A {
            domain: None,
            v4: 32,
            v6: 64,
        },
        A {
            domain: Some(name("mail.example.com")),
            v4: 24,
            v6: 64,
        },
        Mx {
            domain: None,
            v4: 32,
            v6: 128,
        },
        Mx {
            domain: Some(name("example.org")),
            v4: 28,
            v6: 128,
        },
        Exists(name("check.example.net")),
        Ptr(None),
        Ptr(Some(name("example.com"))),
        All,
    ];
    let expected: Vec<Directive> = expected.into_iter().map(|m| directive(Pass, m)).collect();
    assert_eq!(record.directives, expected);
    assert_eq!(record.redirect, None);
}

#[test]
fn parses_qualifiers() {
    let all = |q| directive(q, Mechanism::All);
    assert_eq!(parsed("v=spf1 all"), vec![all(Qualifier::Pass)]);
    assert_eq!(parsed("v=spf1 +all"), vec![all(Qualifier::Pass)]);
    assert_eq!(parsed("v=spf1 -all"), vec![all(Qualifier::Fail)]);
    assert_eq!(parsed("v=spf1 ~all"), vec![all(Qualifier::SoftFail)]);
    assert_eq!(parsed("v=spf1 ?all"), vec![all(Qualifier::Neutral)]);
    assert_eq!(
        parsed("v=spf1 -ip4:203.0.113.9 ~include:x.example ?a"),
        vec![
            directive(
                Qualifier::Fail,
                Mechanism::Ip4("203.0.113.9/32".parse().unwrap())
            ),
            directive(Qualifier::SoftFail, Mechanism::Include(name("x.example"))),
            directive(
                Qualifier::Neutral,
                Mechanism::A {
                    domain: None,
                    v4: 32,
                    v6: 128
                }
            ),
        ]
    );
}

#[test]
fn parsing_is_case_insensitive_and_clears_host_bits() {
    assert_eq!(
        parsed("V=SPF1 IP4:198.51.100.77/24 Include:A.Example -ALL"),
        parsed("v=spf1 ip4:198.51.100.0/24 include:a.example -all")
    );
    assert_eq!(
        parsed("v=spf1 ip6:2001:db8:1:2::5/48"),
        parsed("v=spf1 ip6:2001:db8:1::/48")
    );
    // Extra spaces are tolerated; an empty record is valid.
    assert_eq!(parsed("v=spf1   -all  ").len(), 1);
    assert!(parsed("v=spf1").is_empty());
}

#[test]
fn parses_modifiers() {
    let record = parse_spf("v=spf1 ip4:198.51.100.1 redirect=_spf.example.com").unwrap();
    assert_eq!(record.redirect, Some(name("_spf.example.com")));
    // exp= and unknown modifiers are ignored.
    let record = parse_spf("v=spf1 exp=explain.example.com foo=bar x-y.z=%{i} -all").unwrap();
    assert_eq!(record.directives.len(), 1);
    assert_eq!(record.redirect, None);
}

#[test]
fn macros_are_kept_as_macros() {
    assert_eq!(
        parsed("v=spf1 exists:%{i}._spf.example.com")[0].mechanism,
        Mechanism::Exists(DomainSpec::Macro("%{i}._spf.example.com".into()))
    );
    assert_eq!(
        parse_spf("v=spf1 redirect=%{d}.spf.example.net")
            .unwrap()
            .redirect,
        Some(DomainSpec::Macro("%{d}.spf.example.net".into()))
    );
}

#[test]
fn display_round_trips() {
    for txt in [
        "v=spf1 ip4:198.51.100.0/24 -ip6:2001:db8::/32 ~include:a.example ?a:b.example/24//64 \
         mx//48 exists:%{i}.x.example ptr -all",
        "v=spf1 a mx redirect=_spf.example.com",
    ] {
        let record = parse_spf(txt).unwrap();
        assert_eq!(parse_spf(&record.to_string()).unwrap(), record, "{txt}");
    }
    assert_eq!(
        parse_spf("v=spf1 +a/32//128 ip4:198.51.100.1")
            .unwrap()
            .to_string(),
        "v=spf1 a ip4:198.51.100.1/32"
    );
}

#[test]
fn recognises_spf_txt_records() {
    assert!(is_spf("v=spf1"));
    assert!(is_spf("v=spf1 -all"));
    assert!(is_spf("V=SPF1 -all"));
    assert!(!is_spf("v=spf10 -all"));
    assert!(!is_spf("v=spf2 -all"));
    assert!(!is_spf("google-site-verification=abc"));
    assert!(!is_spf(""));
    assert!(!is_spf("v=spf"));
}

#[test]
fn refuses_what_is_not_spf() {
    for txt in [
        "",
        "spf1 -all",
        "v=spf2 -all",
        "v=spf10 -all",
        "ip4:198.51.100.1",
    ] {
        assert_eq!(parse_spf(txt), Err(SpfError::NotSpf), "{txt:?}");
    }
}

#[test]
fn refuses_oversized_records() {
    let long = format!("v=spf1 {}", "a".repeat(MAX_RECORD_LEN));
    assert_eq!(parse_spf(&long), Err(SpfError::TooLong(long.len())));

    let hundred = format!("v=spf1{}", " a".repeat(MAX_TERMS));
    assert_eq!(parse_spf(&hundred).unwrap().directives.len(), MAX_TERMS);
    let over = format!("v=spf1{}", " a".repeat(MAX_TERMS + 1));
    assert_eq!(parse_spf(&over), Err(SpfError::TooManyTerms(MAX_TERMS + 1)));
}

#[test]
fn refuses_junk_terms() {
    let invalid = [
        "ip4:",
        "ip4",
        "ip4:198.51.100.300",
        "ip4:198.51.100.0/33",
        "ip4:198.51.100.0/024",
        "ip4:198.51.100.0/",
        "ip4:198.51.100.0/24/25",
        "ip4:2001:db8::1",
        "ip6:2001:db8::/129",
        "ip6:198.51.100.1",
        "ip6:zz::1",
        "include",
        "include:",
        "include:localhost",
        "include:bad..example.com",
        "include:exa mple.com",
        "include:198.51.100.1",
        "exists",
        "all:example.com",
        "all/24",
        "a:",
        "a/",
        "a/33",
        "a//129",
        "a//",
        "a/24/",
        "a:example.com/24//",
        "mx:example.com:25",
        "mxexample.com",
        "+redirect=example.com",
        "redirect=",
        "redirect=nodot",
        "1x=foo",
        "=foo",
    ];
    for term in invalid {
        let txt = format!("v=spf1 {term} -all");
        match parse_spf(&txt) {
            Err(SpfError::InvalidTerm { .. } | SpfError::UnknownMechanism(_)) => {}
            other => panic!("{term:?} gave {other:?}"),
        }
    }
    for term in ["foo", "+", "-", "ip5:198.51.100.1", "mxexample.com"] {
        assert_eq!(
            parse_spf(&format!("v=spf1 {term}")),
            Err(SpfError::UnknownMechanism(term.into())),
            "{term}"
        );
    }
}

#[test]
fn refuses_repeated_modifiers() {
    assert_eq!(
        parse_spf("v=spf1 redirect=a.example redirect=b.example"),
        Err(SpfError::DuplicateModifier("redirect".into()))
    );
    assert_eq!(
        parse_spf("v=spf1 exp=a.example EXP=b.example"),
        Err(SpfError::DuplicateModifier("exp".into()))
    );
}

#[test]
fn error_messages_do_not_echo_control_characters() {
    let err = parse_spf("v=spf1 include:\u{1b}[31mevil").unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\u{1b}'), "{text}");
}

// ---------------------------------------------------------------------------
// Expansion: the basics.

#[tokio::test]
async fn collects_ip4_and_ip6() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:1::/48 ip4:203.0.113.5 -all",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(
        networks,
        nets(&["198.51.100.0/24", "203.0.113.5/32", "2001:db8:1::/48"])
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn only_pass_qualifiers_authorise() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 -ip4:198.51.100.0/26 ~ip4:198.51.100.64/26 ?ip4:198.51.100.128/26 \
         +ip4:198.51.100.192/26 -ip6:2001:db8::/48 ~all",
    );
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.192/26"]));
}

#[tokio::test]
async fn earlier_terms_win() {
    // The one address explicitly refused first is carved out of the /24.
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 -ip4:198.51.100.7 ip4:198.51.100.0/24 -all",
    );
    let (networks, _) = one(&fake, "example.com").await;
    assert!(!allowed(&networks, "198.51.100.7"));
    assert!(allowed(&networks, "198.51.100.6"));
    assert!(allowed(&networks, "198.51.100.8"));
    assert!(allowed(&networks, "198.51.100.255"));
    let size: u64 = networks.iter().map(|n| 1u64 << (32 - n.prefix_len())).sum();
    assert_eq!(size, 255);

    // A refusal after the pass changes nothing (first match wins)…
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:198.51.100.0/24 -ip4:198.51.100.7 -all",
    );
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));

    // …and nothing after `all` is reached, nor looked up.
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:198.51.100.0/24 -all ip4:203.0.113.0/24 include:never.example",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(fake.asked(), vec!["TXT example.com"]);
}

#[tokio::test]
async fn a_and_mx_use_their_domain_and_cidr_lengths() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 a a:relay.example.net/24//64 mx/28 include:_spf.example.org -all",
        )
        .a("example.com", &["198.51.100.10", "2001:db8::10"])
        .a("relay.example.net", &["203.0.113.77", "2001:db8:5:6::1"])
        .mx("example.com", &["mx1.example.com.", "MX2.example.com"])
        .a("mx1.example.com", &["198.51.100.33"])
        .a("mx2.example.com", &["198.51.100.200"])
        .spf("_spf.example.org", "v=spf1 a -all")
        .a("_spf.example.org", &["203.0.113.250"]);
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        networks,
        nets(&[
            "198.51.100.10/32",
            "198.51.100.32/28",
            "198.51.100.192/28",
            "203.0.113.0/24",
            "2001:db8::10/128",
            "2001:db8:5:6::/64",
        ])
    );
    // `a` inside the include names the included domain.
    assert!(fake.asked().contains(&"A _spf.example.org".to_string()));
}

#[tokio::test]
async fn null_mx_contributes_nothing() {
    let fake = Fake::default()
        .spf("example.com", "v=spf1 mx ip4:198.51.100.1 -all")
        .mx("example.com", &["."]);
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.1/32"]));
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn too_many_mx_hosts_is_an_error() {
    let hosts: Vec<String> = (0..11).map(|i| format!("mx{i}.example.com")).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let fake = Fake::default()
        .spf("example.com", "v=spf1 ip4:198.51.100.1 mx -all")
        .mx("example.com", &hosts);
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(has(&problems, "11 MX hosts"), "{problems:?}");
}

#[tokio::test]
async fn exists_without_macros() {
    // A refusing `exists` that matches decides everything after it.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:198.51.100.0/24 -exists:blocked.example.com ip4:203.0.113.0/24",
        )
        .a("blocked.example.com", &["127.0.0.2"]);
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));

    // One that does not match changes nothing.
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 -exists:blocked.example.com ip4:203.0.113.0/24",
    );
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["203.0.113.0/24"]));

    // A passing one would allow the whole Internet: refused.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:198.51.100.0/24 exists:yes.example.com",
        )
        .a("yes.example.com", &["127.0.0.2"]);
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(has(&problems, "authorises 0.0.0.0/0"), "{problems:?}");
}

// ---------------------------------------------------------------------------
// Includes and redirects.

#[tokio::test]
async fn follows_includes_recursively() {
    let fake = Fake::default()
        .spf("example.com", "v=spf1 include:_spf.example.com ~all")
        .spf(
            "_spf.example.com",
            "v=spf1 include:_nb1.example.com include:_nb2.example.com ~all",
        )
        .spf("_nb1.example.com", "v=spf1 ip4:198.51.100.0/24 ~all")
        .spf("_nb2.example.com", "v=spf1 include:_nb3.example.com ~all")
        .spf("_nb3.example.com", "v=spf1 ip6:2001:db8:abcd::/48 ~all");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(networks, nets(&["198.51.100.0/24", "2001:db8:abcd::/48"]));
}

#[tokio::test]
async fn an_include_matches_only_where_it_passes() {
    // The child's `-all` does not stop the parent; the child's refusals are
    // only "no match" and a later parent term may still pass them.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 include:child.example.com ip4:203.0.113.0/24 -all",
        )
        .spf(
            "child.example.com",
            "v=spf1 -ip4:203.0.113.9 ip4:198.51.100.0/24 -all",
        );
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24", "203.0.113.0/24"]));

    // A refusing include removes what it passes from later terms.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 -include:bad.example.com ip4:198.51.100.0/24 -all",
        )
        .spf("bad.example.com", "v=spf1 ip4:198.51.100.128/25 -all");
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/25"]));
}

#[tokio::test]
async fn follows_redirects() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:203.0.113.0/24 redirect=_spf.example.net",
        )
        .spf("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(networks, nets(&["198.51.100.0/24", "203.0.113.0/24"]));

    // Earlier refusals hold over the redirect's passes.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 -ip4:198.51.100.0/25 redirect=_spf.example.net",
        )
        .spf("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all");
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.128/25"]));
}

#[tokio::test]
async fn redirect_is_ignored_when_there_is_all() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 redirect=_spf.example.net ip4:203.0.113.0/24 ~all",
        )
        .spf("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(networks, nets(&["203.0.113.0/24"]));
    assert_eq!(fake.asked(), vec!["TXT example.com"]);
}

#[tokio::test]
async fn detects_loops() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:198.51.100.0/24 include:a.example.com",
        )
        .spf("a.example.com", "v=spf1 include:b.example.com")
        .spf("b.example.com", "v=spf1 redirect=example.com");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(
        has(
            &problems,
            "loops (example.com -> a.example.com -> b.example.com -> example.com)"
        ),
        "{problems:?}"
    );
    assert!(has(&problems, "example.com contributes nothing"));

    let fake = Fake::default().spf("example.com", "v=spf1 include:EXAMPLE.com.");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(has(&problems, "loops"), "{problems:?}");
}

#[tokio::test]
async fn the_same_record_twice_is_not_a_loop() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 include:a.example.com include:b.example.com -all",
        )
        .spf("a.example.com", "v=spf1 include:common.example.com -all")
        .spf("b.example.com", "v=spf1 include:common.example.com -all")
        .spf("common.example.com", "v=spf1 ip4:198.51.100.0/24 -all");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
}

#[tokio::test]
async fn ten_dns_terms_at_most() {
    let spf_with = |n: usize| {
        let mut fake = Fake::default();
        let mut record = String::from("v=spf1");
        for i in 0..n {
            let child = format!("n{i}.example.com");
            record.push_str(&format!(" include:{child}"));
            fake = fake.spf(&child, &format!("v=spf1 ip4:198.51.{}.0/24 -all", 2 * i));
        }
        record.push_str(" -all");
        fake.spf("example.com", &record)
    };
    let (networks, problems) = one(&spf_with(10), "example.com").await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(networks.len(), 10);

    let fake = spf_with(11);
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(
        has(
            &problems,
            "`include:n10.example.com` is DNS-querying term number 11"
        ),
        "{problems:?}"
    );
    // The 11th include was never looked up.
    assert!(!fake.asked().contains(&"TXT n10.example.com".to_string()));

    // The budget is shared through includes, redirects, a and mx.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 a mx include:x.example.com redirect=y.example.com",
        )
        .a("example.com", &["198.51.100.1"])
        .mx("example.com", &["mx.example.com"])
        .a("mx.example.com", &["198.51.100.2"])
        .spf("x.example.com", "v=spf1 a a a a a ptr")
        .a("x.example.com", &["198.51.100.3"])
        .spf("y.example.com", "v=spf1 a -all")
        .a("y.example.com", &["198.51.100.4"]);
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(has(&problems, "number 11"), "{problems:?}");
}

#[tokio::test]
async fn two_void_lookups_at_most() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 a:gone1.example.com mx:gone2.example.com ip4:198.51.100.0/24 -all",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(problems.is_empty(), "{problems:?}");

    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 a:gone1.example.com mx:gone2.example.com exists:gone3.example.com \
         ip4:198.51.100.0/24 -all",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(has(&problems, "void lookup number 3"), "{problems:?}");
}

// ---------------------------------------------------------------------------
// Problems.

#[tokio::test]
async fn several_spf_records_are_a_problem() {
    let fake = Fake::default().txt(
        "example.com",
        &[
            "v=spf1 ip4:198.51.100.0/24 -all",
            "google-site-verification=abc",
            "v=spf1 ip4:203.0.113.0/24 -all",
        ],
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(
        has(&problems, "example.com has 2 SPF records"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn other_txt_records_are_ignored() {
    let fake = Fake::default().txt(
        "example.com",
        &[
            "google-site-verification=abc",
            "v=spf1 ip4:198.51.100.0/24 -all",
            "v=DMARC1; p=none",
        ],
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(problems.is_empty(), "{problems:?}");
}

#[tokio::test]
async fn missing_or_broken_records_contribute_nothing() {
    let fake = Fake::default()
        .txt("nospf.example", &["hello"])
        .spf(
            "broken.example",
            "v=spf1 ip4:198.51.100.0/24 frobnicate -all",
        )
        .txt_fails("flaky.example")
        .spf(
            "partial.example",
            "v=spf1 ip4:198.51.100.0/24 include:nospf.example -all",
        )
        .spf(
            "slowmx.example",
            "v=spf1 ip4:198.51.100.0/24 a:host.slowmx.example -all",
        )
        .a_fails("host.slowmx.example")
        .spf("good.example", "v=spf1 ip4:203.0.113.0/24 -all");
    let result = run(
        &fake,
        &[
            "nospf.example",
            "nxdomain.example",
            "broken.example",
            "flaky.example",
            "partial.example",
            "slowmx.example",
            "good.example",
        ],
    )
    .await;
    // Only the good domain contributes.
    assert_eq!(result.networks, nets(&["203.0.113.0/24"]));
    let problems: HashMap<&str, (usize, &Vec<Problem>)> = result
        .per_domain
        .iter()
        .map(|(d, n, p)| (d.as_str(), (*n, p)))
        .collect();
    let expect = |domain: &str, needle: &str| {
        let (count, problems) = problems[domain];
        assert_eq!(count, 0, "{domain}");
        assert!(has(problems, needle), "{domain}: {problems:?}");
        assert!(
            has(problems, "contributes nothing"),
            "{domain}: {problems:?}"
        );
    };
    expect(
        "nospf.example",
        "permerror: nospf.example has no SPF record",
    );
    expect("nxdomain.example", "nxdomain.example has no SPF record");
    expect("broken.example", "unknown mechanism `frobnicate`");
    expect(
        "flaky.example",
        "temperror: the TXT lookup of flaky.example failed",
    );
    expect("partial.example", "nospf.example has no SPF record");
    expect(
        "slowmx.example",
        "temperror: the address lookup of host.slowmx.example",
    );
    assert_eq!(problems["good.example"], (1, &Vec::new()));
}

#[tokio::test]
async fn too_wide_networks_are_ignored() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:0.0.0.0/0 ip4:10.0.0.0/7 ip4:12.0.0.0/8 ip6:::/0 ip6:2001:db8::/31 \
         ip6:2001:db8::/32 ip4:198.51.100.0/24",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    // What follows a /0 passes anyway (through it), so listing what is
    // narrow enough is right; once both /0s decided every address, later
    // terms are never reached.
    assert_eq!(networks, nets(&["12.0.0.0/8"]));
    assert!(
        has(&problems, "authorises 0.0.0.0/0, wider than /8"),
        "{problems:?}"
    );
    assert!(
        has(&problems, "authorises ::/0, wider than /32"),
        "{problems:?}"
    );

    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:10.0.0.0/7 ip4:12.0.0.0/8 ip6:2001:db8::/31 ip6:2001:dba::/32 -all",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["12.0.0.0/8", "2001:dba::/32"]));
    assert!(has(&problems, "`ip4:10.0.0.0/7` authorises 10.0.0.0/7"));
    assert!(has(
        &problems,
        "`ip6:2001:db8::/31` authorises 2001:db8::/31"
    ));

    // `+all`, also through an include.
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:198.51.100.0/24 include:open.example.net",
        )
        .spf("open.example.net", "v=spf1 +all");
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(has(
        &problems,
        "open.example.net: `all` authorises 0.0.0.0/0"
    ));

    // `a/0`.
    let fake = Fake::default()
        .spf("example.com", "v=spf1 a/0//0 -all")
        .a("example.com", &["198.51.100.1", "2001:db8::1"]);
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(
        has(&problems, "`a/0//0` authorises 0.0.0.0/0"),
        "{problems:?}"
    );
    assert!(has(&problems, "`a/0//0` authorises ::/0"), "{problems:?}");
}

#[tokio::test]
async fn the_expansion_can_run_on_another_task() {
    fn send<T: Send>(_: &T) {}
    let fake = Fake::default();
    send(&expand(&[], &fake, Limits::default()));
}

#[tokio::test]
async fn networks_that_merge_too_wide_are_ignored() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ip4:198.51.100.0/25 ip4:198.51.100.128/25 ip4:203.0.113.0/25 -all",
    );
    let limits = Limits {
        min_prefix_v4: 25,
        ..Limits::default()
    };
    let result = expand(&names(&["example.com"]), &fake, limits).await;
    assert_eq!(result.networks, nets(&["203.0.113.0/25"]));
    let (_, count, problems) = &result.per_domain[0];
    assert_eq!(*count, 1);
    assert!(
        has(problems, "merge into 198.51.100.0/24, wider than /25"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn passing_macro_terms_are_skipped_and_counted() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 exists:%{i}._spf.example.com include:%{d}.x.example a:%{h}.example.com \
         ip4:198.51.100.0/24 redirect=%{d}.spf.example.net",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(has(
        &problems,
        "`exists:%{i}._spf.example.com` uses macros and cannot be listed: skipped"
    ));
    assert!(has(
        &problems,
        "`redirect=%{d}.spf.example.net` uses macros"
    ));
    // No lookups for them.
    assert_eq!(fake.asked(), vec!["TXT example.com"]);

    // They use up the lookup budget.
    let mut record = String::from("v=spf1");
    for i in 0..10 {
        record.push_str(&format!(" exists:%{{i}}.n{i}.example.com"));
    }
    record.push_str(" include:last.example.com");
    let fake = Fake::default()
        .spf("example.com", &record)
        .spf("last.example.com", "v=spf1 ip4:198.51.100.0/24");
    let (networks, problems) = one(&fake, "example.com").await;
    assert!(networks.is_empty());
    assert!(has(&problems, "number 11"), "{problems:?}");
}

#[tokio::test]
async fn a_refusing_macro_term_hides_the_rest_of_its_record() {
    let fake = Fake::default()
        .spf(
            "example.com",
            "v=spf1 ip4:203.0.113.0/24 include:child.example.com ip4:198.51.100.0/24",
        )
        .spf(
            "child.example.com",
            "v=spf1 ip4:192.0.2.0/25 -exists:%{i}.deny.example.com ip4:192.0.2.128/25",
        );
    let (networks, problems) = one(&fake, "example.com").await;
    // The child's rest is ignored, the parent's is not.
    assert_eq!(
        networks,
        nets(&["192.0.2.0/25", "198.51.100.0/24", "203.0.113.0/24"])
    );
    assert!(
        has(
            &problems,
            "may refuse any address, so no later term of this record allows anything"
        ),
        "{problems:?}"
    );
}

#[tokio::test]
async fn what_an_unlisted_term_may_refuse_is_never_allowed() {
    // A refusing include whose record has unlisted or too-wide passes may
    // refuse anything: nothing after it can be trusted.
    for child in [
        "v=spf1 exists:%{i}.x.example.net",
        "v=spf1 ip4:203.0.113.0/24 ptr",
        "v=spf1 +all",
    ] {
        let fake = Fake::default()
            .spf(
                "example.com",
                "v=spf1 ip4:192.0.2.0/24 -include:x.example.net ip4:198.51.100.0/24",
            )
            .spf("x.example.net", child);
        let (networks, problems) = one(&fake, "example.com").await;
        assert_eq!(networks, nets(&["192.0.2.0/24"]), "{child}: {problems:?}");
    }

    // After a skipped pass, a refusal may or may not be reached: what it
    // refuses is not allowed, the rest is.
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 exists:%{i}.a.example.com -ip4:198.51.100.0/25 ip4:198.51.100.0/24",
    );
    let (networks, _) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.128/25"]));
}

#[tokio::test]
async fn ptr_is_skipped() {
    let fake = Fake::default().spf(
        "example.com",
        "v=spf1 ptr ip4:198.51.100.0/24 ~ptr:example.com ip4:203.0.113.0/24",
    );
    let (networks, problems) = one(&fake, "example.com").await;
    assert_eq!(networks, nets(&["198.51.100.0/24"]));
    assert!(has(&problems, "`ptr` is ptr and cannot be listed: skipped"));
    assert!(has(&problems, "`~ptr:example.com` is ptr"));
}

/// Problems are typed: a caller tells a temperror (keep what you had) from
/// the rest by its kind, and each reads as the sentence that is logged.
#[tokio::test]
async fn problems_have_a_kind_and_read_as_sentences() {
    let fake = Fake::default()
        .txt_fails("flaky.example")
        .spf("broken.example", "v=spf1 frobnicate")
        .spf(
            "macro.example",
            "v=spf1 exists:%{i}.x.example ip4:192.0.2.0/24",
        );
    let result = run(
        &fake,
        &[
            "flaky.example",
            "broken.example",
            "macro.example",
            "not a domain",
        ],
    )
    .await;
    let problems: Vec<&Problem> = result.per_domain.iter().flat_map(|d| &d.2).collect();
    assert_eq!(
        problems,
        [
            &Problem::Temp {
                domain: "flaky.example".into(),
                reason: "the TXT lookup of flaky.example failed: SERVFAIL".into(),
            },
            &Problem::Perm {
                domain: "broken.example".into(),
                reason: "broken.example: unknown mechanism `frobnicate`".into(),
            },
            &Problem::Skipped(
                "macro.example: `exists:%{i}.x.example` uses macros and cannot be listed: skipped"
                    .into()
            ),
            &Problem::NotADomain("not?a?domain".into()),
        ]
    );
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        text,
        [
            "temperror: the TXT lookup of flaky.example failed: SERVFAIL; \
             flaky.example contributes nothing",
            "permerror: broken.example: unknown mechanism `frobnicate`; \
             broken.example contributes nothing",
            "macro.example: `exists:%{i}.x.example` uses macros and cannot be listed: skipped",
            "`not?a?domain` is not a domain name",
        ]
    );
    let temporary: Vec<bool> = problems.iter().map(|p| p.is_temporary()).collect();
    assert_eq!(temporary, [true, false, false, false]);
    assert!(result.temporary_failure());

    // Permanent failures and skipped terms are not temporary.
    let result = run(&fake, &["broken.example", "macro.example", "not a domain"]).await;
    assert!(!result.temporary_failure());
    // Nor is a failure met only inside an included domain's record, when it
    // is a permerror.
    let fake = Fake::default()
        .spf("top.example", "v=spf1 include:broken.example")
        .spf("broken.example", "v=spf1 frobnicate");
    assert!(!run(&fake, &["top.example"]).await.temporary_failure());
    let fake = Fake::default()
        .spf("top.example", "v=spf1 include:flaky.example")
        .txt_fails("flaky.example");
    assert!(run(&fake, &["top.example"]).await.temporary_failure());
}

// ---------------------------------------------------------------------------
// Merging.

#[tokio::test]
async fn networks_are_deduplicated_and_aggregated() {
    let fake = Fake::default()
        .spf(
            "a.example",
            "v=spf1 ip4:198.51.100.0/25 ip4:198.51.100.0/26 ip6:2001:db8::/33 -all",
        )
        .spf(
            "b.example",
            "v=spf1 ip4:198.51.100.128/25 ip4:198.51.100.5 ip6:2001:db8:8000::/33 -all",
        );
    let result = run(&fake, &["a.example", "B.Example.", "a.example"]).await;
    assert_eq!(result.networks, nets(&["198.51.100.0/24", "2001:db8::/32"]));
    assert_eq!(
        result.per_domain,
        vec![
            ("a.example".to_string(), 2, vec![]),
            ("b.example".to_string(), 3, vec![]),
        ]
    );
}

#[tokio::test]
async fn invalid_domain_names_are_reported() {
    let fake = Fake::default();
    let result = run(&fake, &["not a domain", "localhost"]).await;
    assert!(result.networks.is_empty());
    assert_eq!(result.per_domain.len(), 2);
    assert!(has(&result.per_domain[0].2, "is not a domain name"));
    assert!(fake.asked().is_empty());
}

#[test]
fn subtraction_splits_around_the_hole() {
    let from = nets(&["198.51.100.0/24"]);
    let minus = nets(&["198.51.100.64/26", "203.0.113.0/24"]);
    assert_eq!(
        subtract(&from, &minus, 100).unwrap(),
        nets(&["198.51.100.128/25", "198.51.100.0/26"])
    );
    assert_eq!(subtract(&from, &nets(&["0.0.0.0/0"]), 100).unwrap(), vec![]);
    assert_eq!(
        subtract(&from, &nets(&["2001:db8::/32"]), 100).unwrap(),
        from
    );
    // Bounded.
    assert_eq!(
        subtract(&nets(&["2001:db8::/32"]), &nets(&["2001:db8::1/128"]), 50),
        None
    );
}

#[tokio::test]
async fn network_count_is_bounded() {
    let fake = Fake::default().spf("example.com", "v=spf1 -ip6:2001:db8::1 ip6:2001:db8::/32");
    let limits = Limits {
        max_networks: 50,
        ..Limits::default()
    };
    let result = expand(&names(&["example.com"]), &fake, limits).await;
    assert!(result.networks.is_empty());
    assert!(has(&result.per_domain[0].2, "more than 50 networks"));
}

// ---------------------------------------------------------------------------
// A realistic layout.

/// Modelled on the public structure of big providers' SPF: a top record that
/// redirects or includes netblock records, some levels deep, `~all`/`-all`,
/// IPv4 and IPv6 ranges (documentation ranges here, not real ones).
#[tokio::test]
async fn big_provider_layout() {
    let fake = Fake::default()
        // Gmail-like: redirect to one record that includes the netblocks.
        .spf("bigmail.example", "v=spf1 redirect=_spf.bigmail.example")
        .txt(
            "_spf.bigmail.example",
            &["v=spf1 include:_netblocks.bigmail.example \
                 include:_netblocks2.bigmail.example include:_netblocks3.bigmail.example ~all"],
        )
        .spf(
            "_netblocks.bigmail.example",
            "v=spf1 ip4:198.51.100.0/26 ip4:198.51.100.64/26 ip4:198.51.100.128/25 \
             ip4:203.0.113.0/27 ~all",
        )
        .spf(
            "_netblocks2.bigmail.example",
            "v=spf1 ip6:2001:db8:4860:4000::/52 ip6:2001:db8:4860:8000::/52 \
             ip6:2001:db8:f000::/36 ~all",
        )
        .spf(
            "_netblocks3.bigmail.example",
            "v=spf1 ip4:203.0.113.32/27 ip4:203.0.113.128/25 ~all",
        )
        // Outlook-like: a chain of includes ending in ranges, `-all`.
        .spf(
            "outmail.example",
            "v=spf1 include:spf.protection.outmail.example -all",
        )
        .spf(
            "spf.protection.outmail.example",
            "v=spf1 include:spfa.protection.outmail.example \
             include:spfb.protection.outmail.example -all",
        )
        .spf(
            "spfa.protection.outmail.example",
            "v=spf1 ip4:203.0.113.64/27 ip6:2001:db8:a000::/36 -all",
        )
        .spf(
            "spfb.protection.outmail.example",
            "v=spf1 ip4:203.0.113.96/27 ip6:2001:db8:b000::/36 ip6:2001:db8:c000::/35 -all",
        );
    let result = run(&fake, &["bigmail.example", "outmail.example"]).await;
    assert_eq!(
        result.per_domain,
        vec![
            ("bigmail.example".to_string(), 6, vec![]),
            ("outmail.example".to_string(), 3, vec![]),
        ]
    );
    assert_eq!(
        result.networks,
        nets(&[
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8:4860:4000::/52",
            "2001:db8:4860:8000::/52",
            "2001:db8:a000::/35",
            "2001:db8:c000::/35",
            "2001:db8:f000::/36",
        ])
    );
    assert!(allowed(&result.networks, "203.0.113.77"));
    assert!(allowed(&result.networks, "2001:db8:b000::25"));
    assert!(!allowed(&result.networks, "192.0.2.1"));
    assert!(!allowed(&result.networks, "2001:db8:e000::1"));
}
