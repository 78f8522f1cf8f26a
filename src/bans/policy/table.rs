//! The engine's bans in force, compact: a fleet node holds millions of them
//! (a bootstrap brings every ban of the fleet), so each costs a few dozen
//! bytes, not a hash-map entry per index.
//!
//! Each address family has two ordered trees over plain integers: by
//! address (a lookup; a network's bans are a range, so no per-network
//! index is kept) and by end (the next expiry, removed exactly when a ban
//! goes, so lifted bans leave nothing behind).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One ban in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ban {
    /// When it ends.
    pub until: i64,
    /// Decoy hits that earned it.
    pub hits: u32,
    /// Which ban of the client this is (1 for the first).
    pub offence: u32,
}

/// The bans of one address family, keyed by the address as an integer.
#[derive(Debug)]
struct Family<A> {
    by_addr: BTreeMap<A, Ban>,
    by_end: BTreeSet<(i64, A)>,
}

impl<A> Default for Family<A> {
    fn default() -> Self {
        Family {
            by_addr: BTreeMap::new(),
            by_end: BTreeSet::new(),
        }
    }
}

impl<A: Ord + Copy> Family<A> {
    fn insert(&mut self, a: A, ban: Ban) -> Option<Ban> {
        let old = self.by_addr.insert(a, ban);
        if let Some(old) = old {
            self.by_end.remove(&(old.until, a));
        }
        self.by_end.insert((ban.until, a));
        old
    }

    fn insert_new(&mut self, a: A, make: impl FnOnce() -> Ban) -> bool {
        match self.by_addr.entry(a) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(e) => {
                let ban = make();
                e.insert(ban);
                self.by_end.insert((ban.until, a));
                true
            }
        }
    }

    fn remove(&mut self, a: A) -> Option<Ban> {
        let ban = self.by_addr.remove(&a)?;
        self.by_end.remove(&(ban.until, a));
        Some(ban)
    }

    fn within(&self, low: A, high: A) -> impl Iterator<Item = A> + '_ {
        self.by_addr.range(low..=high).map(|(a, _)| *a)
    }
}

/// The bans in force, IPv4 and IPv6. Addresses are expected canonical
/// (an IPv4-mapped address as its IPv4 address; the engine does that).
#[derive(Debug, Default)]
pub(super) struct Table {
    v4: Family<u32>,
    v6: Family<u128>,
}

impl Table {
    /// Bans `ip`; returns the ban it replaced.
    pub fn insert(&mut self, ip: IpAddr, ban: Ban) -> Option<Ban> {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), ban),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), ban),
        }
    }

    /// Bans `ip` with the ban `make` gives, unless it is banned already;
    /// says whether it was not (one lookup either way).
    pub fn insert_new(&mut self, ip: IpAddr, make: impl FnOnce() -> Ban) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.insert_new(a.to_bits(), make),
            IpAddr::V6(a) => self.v6.insert_new(a.to_bits(), make),
        }
    }

    /// Lifts the ban of `ip`, if any.
    pub fn remove(&mut self, ip: IpAddr) -> Option<Ban> {
        match ip {
            IpAddr::V4(a) => self.v4.remove(a.to_bits()),
            IpAddr::V6(a) => self.v6.remove(a.to_bits()),
        }
    }

    /// The ban of `ip`.
    pub fn get(&self, ip: IpAddr) -> Option<&Ban> {
        match ip {
            IpAddr::V4(a) => self.v4.by_addr.get(&a.to_bits()),
            IpAddr::V6(a) => self.v6.by_addr.get(&a.to_bits()),
        }
    }

    /// The offence count of `ip`'s ban, to raise in place (the end cannot
    /// change here: [`insert`](Table::insert) keeps the expiry order).
    pub fn offence_mut(&mut self, ip: IpAddr) -> Option<&mut u32> {
        let ban = match ip {
            IpAddr::V4(a) => self.v4.by_addr.get_mut(&a.to_bits()),
            IpAddr::V6(a) => self.v6.by_addr.get_mut(&a.to_bits()),
        };
        ban.map(|b| &mut b.offence)
    }

    /// Whether `ip` is banned.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get(ip).is_some()
    }

    /// How many bans.
    pub fn len(&self) -> usize {
        self.v4.by_addr.len() + self.v6.by_addr.len()
    }

    /// The banned addresses, IPv4 first, each in address order.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self
            .v4
            .by_addr
            .keys()
            .map(|a| IpAddr::V4(Ipv4Addr::from_bits(*a)));
        let v6 = self
            .v6
            .by_addr
            .keys()
            .map(|a| IpAddr::V6(Ipv6Addr::from_bits(*a)));
        v4.chain(v6)
    }

    /// The banned addresses inside `net`.
    pub fn within(&self, net: IpNet) -> Vec<IpAddr> {
        match net {
            IpNet::V4(n) => self
                .v4
                .within(n.network().to_bits(), n.broadcast().to_bits())
                .map(|a| IpAddr::V4(Ipv4Addr::from_bits(a)))
                .collect(),
            IpNet::V6(n) => self
                .v6
                .within(n.network().to_bits(), n.broadcast().to_bits())
                .map(|a| IpAddr::V6(Ipv6Addr::from_bits(a)))
                .collect(),
        }
    }

    /// The ban that ends first, and when.
    pub fn next_end(&self) -> Option<(i64, IpAddr)> {
        let v4 = self
            .v4
            .by_end
            .first()
            .map(|(t, a)| (*t, IpAddr::V4(Ipv4Addr::from_bits(*a))));
        let v6 = self
            .v6
            .by_end
            .first()
            .map(|(t, a)| (*t, IpAddr::V6(Ipv6Addr::from_bits(*a))));
        match (v4, v6) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(until: i64) -> Ban {
        Ban {
            until,
            hits: 3,
            offence: 1,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_networks_bans_are_the_addresses_inside_it_and_no_others() {
        let mut t = Table::default();
        for a in [
            "192.0.2.0",
            "192.0.2.77",
            "192.0.2.255",
            "192.0.3.0",
            "192.0.1.255",
        ] {
            t.insert(ip(a), ban(10));
        }
        t.insert(ip("2001:db8::1"), ban(10));
        t.insert(ip("2001:db8:0:1::1"), ban(10));
        assert_eq!(
            t.within("192.0.2.0/24".parse().unwrap()),
            [ip("192.0.2.0"), ip("192.0.2.77"), ip("192.0.2.255")]
        );
        assert_eq!(
            t.within("2001:db8::/64".parse().unwrap()),
            [ip("2001:db8::1")]
        );
        assert!(t.within("198.51.100.0/24".parse().unwrap()).is_empty());
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn expiry_order_follows_replacements_and_removals_exactly() {
        let mut t = Table::default();
        t.insert(ip("192.0.2.1"), ban(30));
        t.insert(ip("2001:db8::1"), ban(20));
        t.insert(ip("192.0.2.2"), ban(25));
        assert_eq!(t.next_end(), Some((20, ip("2001:db8::1"))));
        // A longer ban replaces the old one's end; nothing stale is left.
        assert_eq!(t.insert(ip("2001:db8::1"), ban(40)), Some(ban(20)));
        assert_eq!(t.next_end(), Some((25, ip("192.0.2.2"))));
        assert_eq!(t.remove(ip("192.0.2.2")), Some(ban(25)));
        assert_eq!(t.next_end(), Some((30, ip("192.0.2.1"))));
        t.remove(ip("192.0.2.1"));
        t.remove(ip("2001:db8::1"));
        assert_eq!((t.next_end(), t.len()), (None, 0));
        assert!(t.v4.by_end.is_empty() && t.v6.by_end.is_empty());
    }
}
