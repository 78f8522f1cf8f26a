//! The reconcile semantics every backend shares: changes, folds, renewals, SYN counts, elements.

use super::*;

pub(crate) fn t(net: &str, remaining: u64) -> Target {
    Target {
        net: net.parse().unwrap(),
        remaining,
    }
}

fn nets(v: &[&str]) -> Vec<IpNet> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn change_adds_missing_and_removes_stray() {
    let actual = nets(&["203.0.113.9/32", "198.51.100.0/24"]);
    let c = Change::between(
        &[t("203.0.113.9/32", 60), t("2001:db8::bad/128", 3600)],
        Some(&actual),
    );
    assert_eq!(c.remove, nets(&["198.51.100.0/24"]));
    assert_eq!(c.add, vec![("2001:db8::bad/128".parse().unwrap(), 3600)]);
    assert!(!c.rebuild);
    assert!(Change::between(&[t("203.0.113.9/32", 60)], Some(&actual[..1])).is_empty());
}

#[test]
fn extended_bans_are_renewed_in_place_and_others_left_alone() {
    let held = nets(&[
        "203.0.113.9/32",
        "203.0.113.10/32",
        "198.51.100.0/24",
        "2001:db8::bad/128",
    ]);
    let left = |n: &IpNet| match n.to_string().as_str() {
        "203.0.113.9/32" => Some(600),
        "203.0.113.10/32" => Some(600),
        "198.51.100.0/24" => Some(100),
        _ => None,
    };
    let desired = [
        // Extended by an hour: renewed.
        t("203.0.113.9/32", 4200),
        // Within the slack (clock rounding): left alone.
        t("203.0.113.10/32", 600 + RENEW_SLACK),
        // A network extended: renewed too.
        t("198.51.100.0/24", 7200),
        // The backend cannot tell: left alone.
        t("2001:db8::bad/128", 99_999),
        // Not held: added, not renewed.
        t("192.0.2.77/32", 60),
    ];
    let c = Change::renewing(&desired, Some(&held), &left, MAX_TIMEOUT);
    assert_eq!(c.remove, nets(&["198.51.100.0/24", "203.0.113.9/32"]));
    let mut add = c.add.clone();
    add.sort_unstable();
    assert_eq!(
        add,
        vec![
            ("192.0.2.77/32".parse().unwrap(), 60),
            ("198.51.100.0/24".parse().unwrap(), 7200),
            ("203.0.113.9/32".parse().unwrap(), 4200),
        ]
    );
    let r = Report::of(&c);
    assert_eq!((r.added, r.removed, r.renewed), (1, 0, 2));
    // A firewall being rebuilt has nothing to renew.
    let c = Change::renewing(&desired, None, &left, MAX_TIMEOUT);
    assert!(c.remove.is_empty() && c.add.len() == 5);
}

#[test]
fn bans_longer_than_the_firewall_takes_are_renewed_at_half_the_cap() {
    let held = nets(&["203.0.113.9/32"]);
    let cap = 1000;
    // Capped: the firewall holds 1000 s at most, the ban is longer.
    for (left, renewed) in [(900, false), (501, false), (499, true)] {
        let c = Change::renewing(
            &[t("203.0.113.9/32", 5000)],
            Some(&held),
            &|_| Some(left),
            cap,
        );
        assert_eq!(!c.remove.is_empty(), renewed, "left {left}");
        if renewed {
            assert_eq!(c.add, vec![("203.0.113.9/32".parse().unwrap(), cap)]);
        }
    }
}

#[test]
fn time_alone_makes_a_reconcile_due_only_where_an_element_and_its_ban_end_apart() {
    let want = fold(&[
        t("203.0.113.9/32", 3600),
        t("198.51.100.7/32", 600),
        t("192.0.2.1/32", 100),
    ]);
    let left = |held: &'static [(&'static str, u64)]| {
        move |net: &IpNet| {
            held.iter()
                .find(|(n, _)| n.parse::<IpNet>().unwrap() == *net)
                .map(|(_, s)| *s)
        }
    };
    // Every element ends with its ban (whole seconds apart at most), or is
    // not held: nothing is due.
    let agree = left(&[("203.0.113.9/32", 3599), ("198.51.100.7/32", 602)]);
    assert_eq!(next_disagreement(&want, &agree, MAX_TIMEOUT), None);
    // A ban extended within the renewal slack: its element goes first and
    // must then be added again; a shortened ban leaves a stray at its end.
    let apart = left(&[("203.0.113.9/32", 3550), ("192.0.2.1/32", 7200)]);
    assert_eq!(next_disagreement(&want, &apart, MAX_TIMEOUT), Some(102));
    let early = left(&[("203.0.113.9/32", 3550)]);
    assert_eq!(next_disagreement(&want, &early, MAX_TIMEOUT), Some(3552));
    // A ban longer than the firewall takes agrees with an element of the
    // cap; one that ends sooner is due once it is gone.
    let capped = left(&[("203.0.113.9/32", 1000)]);
    assert_eq!(next_disagreement(&want, &capped, 1000), None);
    let halved = left(&[("203.0.113.9/32", 400)]);
    assert_eq!(next_disagreement(&want, &halved, 1000), Some(402));
}

#[test]
fn a_missing_firewall_is_rebuilt_with_everything() {
    let c = Change::between(&[t("203.0.113.9/32", 60)], None);
    assert!(c.rebuild && !c.is_empty());
    assert_eq!(c.add.len(), 1);
    assert!(!Change::between(&[], None).is_empty());
}

#[test]
fn fold_keeps_the_widest_and_the_longest() {
    let f = fold(&[
        t("198.51.100.7/32", 60),
        t("198.51.100.0/24", 600),
        t("198.51.100.128/25", 60),
        t("198.51.101.1/32", 5),
        t("198.51.101.1/32", 50),
        t("198.51.101.2/32", 0),
        t("198.51.100.77/16", 1), // host bits set: truncated to 198.51.0.0/16
        t("2001:db8::/64", 9),
        t("2001:db8::1/128", 9),
        t("2001:db9::1/128", 9),
    ]);
    let got: Vec<(String, u64)> = f.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    assert_eq!(
        got,
        [
            ("198.51.0.0/16".to_owned(), 1),
            ("2001:db8::/64".to_owned(), 9),
            ("2001:db9::1/128".to_owned(), 9)
        ]
    );
}

#[test]
fn fold_is_fast_enough_for_a_hundred_thousand_bans() {
    // Not a timing test: a quadratic fold would take minutes here.
    let many: Vec<Target> = (0..100_000u32)
        .map(|i| Target {
            net: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(
                0xc612_0000 + i * 3,
            ))),
            remaining: 60,
        })
        .collect();
    assert_eq!(fold(&many).len(), 100_000);
}

#[test]
fn only_a_backend_that_lets_through_is_given_passes() {
    let passes = [t("198.18.1.0/24", 3600)];
    // Tools that do not exist: any attempt to read or write would fail.
    let mut ipset = ipset::Ipset::new(vec![25]);
    ipset.ipset = "/nonexistent/ipset".into();
    let mut refuse = nft::Nft::new(vec![25]);
    refuse.binary = "/nonexistent/nft".into();
    for backend in [&mut ipset as &mut dyn Enforcer, &mut refuse] {
        assert!(backend.let_through().is_none());
        assert_eq!(
            reconcile_passes(backend, &passes).unwrap(),
            Report::default()
        );
    }
    let mut listening =
        nft::Nft::new(vec![25]).with_let_through(vec!["198.18.0.1:25".parse().unwrap()]);
    listening.binary = "/nonexistent/nft".into();
    assert!(listening.let_through().is_some());
    assert!(reconcile_passes(&mut listening, &passes).is_err());
}

#[test]
fn only_a_backend_that_knows_what_it_holds_is_changed_without_a_read() {
    // Tools that do not exist: any attempt to read or write would fail.
    let mut ipset = ipset::Ipset::new(vec![25]);
    ipset.ipset = "/nonexistent/ipset".into();
    let mut fresh = nft::Nft::new(vec![25]);
    fresh.binary = "/nonexistent/nft".into();
    let desired = [t("192.0.2.7/32", 3600)];
    let changed = nets(&["192.0.2.7/32"]);
    // No cache (ipset), and a cache that knows nothing yet (nft before its
    // first read): a full reconcile is needed.
    for backend in [&mut ipset as &mut dyn Enforcer, &mut fresh] {
        assert_eq!(reconcile_some(backend, &changed, &desired).unwrap(), None);
    }
}

#[test]
fn syn_counts_become_hits_once() {
    let a: IpAddr = "198.18.0.9".parse().unwrap();
    let b: IpAddr = "2001:db8::9".parse().unwrap();
    let mut c = SynCounts::default();
    assert_eq!(c.update(&[(a, 2)]), [(a, 2)]);
    assert_eq!(c.update(&[(a, 2)]), []);
    assert_eq!(c.update(&[(a, 3), (b, 1)]), [(a, 1), (b, 1)]);
    // The kernel forgot `a` and counted it again from zero.
    assert_eq!(c.update(&[(a, 1), (b, 1)]), [(a, 1)]);
    // A flood is capped per reading.
    assert_eq!(c.update(&[(a, 1_000_001), (b, 1)]), [(a, 16)]);
    // Gone from the set, forgotten here: it counts from zero when back.
    assert_eq!(c.update(&[(b, 1)]), []);
    assert_eq!(c.update(&[(a, 2), (b, 1)]), [(a, 2)]);
}

#[test]
fn elements_print_and_parse_like_the_tools() {
    assert_eq!(element(&"192.0.2.1/32".parse().unwrap()), "192.0.2.1");
    assert_eq!(element(&"192.0.2.0/24".parse().unwrap()), "192.0.2.0/24");
    assert_eq!(
        parse_element("192.0.2.1").unwrap().to_string(),
        "192.0.2.1/32"
    );
    assert_eq!(
        parse_element("2001:db8::/64").unwrap().to_string(),
        "2001:db8::/64"
    );
    assert!(parse_element("192.0.2.1; rm -rf /").is_err());
}

/// A backend that holds elements with timeouts it reports, and counts how
/// often it is asked for one.
#[derive(Default)]
struct Timed {
    held: std::collections::BTreeMap<IpNet, u64>,
    asked: std::cell::Cell<usize>,
}

impl Enforcer for Timed {
    fn name(&self) -> &'static str {
        "timed"
    }

    fn check(&mut self) -> Result<(), EnforceError> {
        Ok(())
    }

    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        Ok(Some(self.held.keys().copied().collect()))
    }

    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        for net in &change.remove {
            self.held.remove(net);
        }
        self.held.extend(change.add.iter().copied());
        Ok(Report::of(change))
    }

    fn timeouts(&self) -> Option<&dyn Timeouts> {
        Some(self)
    }

    fn cache(&mut self) -> Option<&mut dyn Cache> {
        Some(self)
    }
}

impl Timeouts for Timed {
    fn remaining(&self, net: &IpNet) -> Option<u64> {
        self.asked.set(self.asked.get() + 1);
        self.held.get(net).copied()
    }
}

impl Cache for Timed {
    fn forget(&mut self) {}

    fn changed_outside(&mut self) -> bool {
        false
    }

    fn holds(&self, nets: &[IpNet]) -> Option<Vec<IpNet>> {
        Some(
            nets.iter()
                .filter(|n| self.held.contains_key(n))
                .copied()
                .collect(),
        )
    }
}

/// Elements just added end with their bans: only those held before are
/// asked for their timeouts, and one of them ending apart from its ban
/// still makes a reconcile due.
#[test]
fn only_elements_held_before_a_change_are_checked_for_their_timeouts() {
    let mut backend = Timed::default();
    backend.held.insert("192.0.2.1/32".parse().unwrap(), 100);
    let desired = [
        t("192.0.2.1/32", 100),
        t("192.0.2.2/32", 500),
        t("192.0.2.3/32", 2 * MAX_TIMEOUT),
    ];
    let changed = nets(&["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32"]);
    let r = reconcile_some(&mut backend, &changed, &desired)
        .unwrap()
        .unwrap();
    assert_eq!((r.added, r.recheck_in), (2, None));
    assert_eq!(
        backend.asked.get(),
        2,
        "only 192.0.2.1, held before: for the change and after it"
    );

    // A held element that ends before its (extended) ban is renewed; one
    // that ends after its ban makes a reconcile due when the ban ends.
    backend.asked.set(0);
    let desired = [t("192.0.2.1/32", 40), t("192.0.2.4/32", 60)];
    let changed = nets(&["192.0.2.1/32", "192.0.2.4/32"]);
    let r = reconcile_some(&mut backend, &changed, &desired)
        .unwrap()
        .unwrap();
    assert_eq!((r.added, r.recheck_in), (1, Some(42)));
    assert_eq!(
        backend.asked.get(),
        2,
        "the held one, for the change and after it"
    );
}
