//! The listed addresses and networks, compact and searchable: one table per
//! address family and prefix length, each a sorted vector (12 bytes per
//! IPv4 entry, 24 per IPv6 one) plus a small sorted map of recent
//! additions that is merged into the vector once it holds a sixteenth as
//! many entries. A lookup masks the address to each prefix length in use
//! and searches that table: O(log n) per length, and only lengths that
//! hold bans are tried. A single insertion or removal is O(log n) (a
//! removal marks its entry dead in place), plus the merges' amortised cost.
//!
//! Each entry keeps what the TXT template may show: when the ban ends (a
//! ban past its end is never answered, even before it is removed), its
//! decoy hits and its offence count.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

/// What is known of one listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listing {
    /// When the ban ends (Unix seconds; 0 marks a removed entry).
    until: u32,
    /// Decoy hits behind it (at most 65535).
    hits: u16,
    /// The how-manieth ban of the target (at most 65535).
    offence: u16,
}

impl Listing {
    /// A listing that ends at `until` (clamped to what 32 bits hold, the
    /// year 2106; a ban ending at or before 0 is never listed).
    pub fn new(until: i64, hits: u32, offence: u32) -> Listing {
        Listing {
            until: u32::try_from(until.max(0)).unwrap_or(u32::MAX),
            hits: u16::try_from(hits).unwrap_or(u16::MAX),
            offence: u16::try_from(offence).unwrap_or(u16::MAX),
        }
    }

    /// When the ban ends (Unix seconds).
    pub fn until(self) -> i64 {
        i64::from(self.until)
    }

    /// Decoy hits (saturated at 65535).
    pub fn hits(self) -> u32 {
        u32::from(self.hits)
    }

    /// The offence count (saturated at 65535).
    pub fn offence(self) -> u32 {
        u32::from(self.offence)
    }

    fn live(self, now: i64) -> bool {
        self.until() > now
    }
}

/// Merged into the sorted vector beyond this many recent additions (or a
/// sixteenth of the vector, whichever is more).
#[cfg(not(test))]
const DELTA_MIN: usize = 1024;
/// Small in tests, so that the model-based test merges often.
#[cfg(test)]
const DELTA_MIN: usize = 4;

/// One prefix length of one family.
#[derive(Debug, Default)]
struct Table<K> {
    /// Sorted by key, unique; removed entries stay with `until == 0`.
    base: Vec<(K, Listing)>,
    /// Additions not yet merged; never a key that `base` holds.
    delta: BTreeMap<K, Listing>,
    /// Removed entries still in `base`.
    dead: usize,
}

impl<K: Ord + Copy> Table<K> {
    fn is_empty(&self) -> bool {
        self.base.len() == self.dead && self.delta.is_empty()
    }

    fn get(&self, key: K) -> Option<Listing> {
        if let Some(l) = self.delta.get(&key) {
            return Some(*l);
        }
        let i = self.base.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
        Some(self.base[i].1).filter(|l| l.until != 0)
    }

    fn insert(&mut self, key: K, listing: Listing) {
        // A listing that has already ended counts as removed.
        if listing.until == 0 {
            return self.remove(key);
        }
        match self.base.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => {
                if self.base[i].1.until == 0 {
                    self.dead -= 1;
                }
                self.base[i].1 = listing;
            }
            Err(_) => {
                self.delta.insert(key, listing);
                if self.delta.len() > DELTA_MIN.max(self.base.len() / 16) {
                    self.compact(None);
                }
            }
        }
    }

    fn remove(&mut self, key: K) {
        if self.delta.remove(&key).is_some() {
            return;
        }
        if let Ok(i) = self.base.binary_search_by(|(k, _)| k.cmp(&key))
            && self.base[i].1.until != 0
        {
            self.base[i].1.until = 0;
            self.dead += 1;
            if self.dead > DELTA_MIN.max(self.base.len() / 4) {
                self.compact(None);
            }
        }
    }

    /// Merges the recent additions into the vector and drops removed
    /// entries, and those ended by `now` when given.
    fn compact(&mut self, now: Option<i64>) {
        let keep = |l: &Listing| l.until != 0 && now.is_none_or(|now| l.live(now));
        let delta = std::mem::take(&mut self.delta);
        let base = std::mem::take(&mut self.base);
        let mut merged = Vec::with_capacity(base.len() - self.dead + delta.len());
        let mut recent = delta.into_iter().peekable();
        for entry in base {
            while let Some(r) = recent.next_if(|r| r.0 < entry.0) {
                merged.extend(Some(r).filter(|r| keep(&r.1)));
            }
            merged.extend(Some(entry).filter(|e| keep(&e.1)));
        }
        merged.extend(recent.filter(|r| keep(&r.1)));
        merged.shrink_to_fit();
        self.base = merged;
        self.dead = 0;
    }

    fn len(&self) -> usize {
        self.base.len() - self.dead + self.delta.len()
    }

    fn bytes(&self) -> usize {
        self.base.capacity() * std::mem::size_of::<(K, Listing)>()
            // A B-tree node holds up to 11 entries and is at least half full.
            + self.delta.len() * std::mem::size_of::<(K, Listing)>() * 2
    }
}

/// An IPv6 key: the masked address as two halves (8-byte aligned, so an
/// entry takes 24 bytes rather than the 32 of a `u128` one).
type V6 = (u64, u64);

/// Every listed address and network.
#[derive(Debug)]
pub struct BanSet {
    /// Indexed by prefix length, 0 to 32.
    v4: Vec<Table<u32>>,
    /// Indexed by prefix length, 0 to 128.
    v6: Vec<Table<V6>>,
}

impl Default for BanSet {
    fn default() -> Self {
        BanSet {
            v4: (0..=32).map(|_| Table::default()).collect(),
            v6: (0..=128).map(|_| Table::default()).collect(),
        }
    }
}

impl BanSet {
    /// An empty set.
    pub fn new() -> BanSet {
        BanSet::default()
    }

    /// A set of `bans`, built in one pass (sorted once per table).
    pub fn build(bans: impl IntoIterator<Item = (IpNet, Listing)>) -> BanSet {
        let mut set = BanSet::new();
        for (net, listing) in bans {
            match canonical(net) {
                IpNet::V4(n) => set.v4[usize::from(n.prefix_len())]
                    .base
                    .push((u32::from(n.network()), listing)),
                IpNet::V6(n) => set.v6[usize::from(n.prefix_len())]
                    .base
                    .push((v6_key(n.network()), listing)),
            }
        }
        for t in &mut set.v4 {
            sort_unique(&mut t.base);
        }
        for t in &mut set.v6 {
            sort_unique(&mut t.base);
        }
        set
    }

    /// Lists `net` (replacing what it had).
    pub fn insert(&mut self, net: IpNet, listing: Listing) {
        match canonical(net) {
            IpNet::V4(n) => {
                self.v4[usize::from(n.prefix_len())].insert(u32::from(n.network()), listing);
            }
            IpNet::V6(n) => {
                self.v6[usize::from(n.prefix_len())].insert(v6_key(n.network()), listing);
            }
        }
    }

    /// Unlists `net` (exactly that network, not those inside it).
    pub fn remove(&mut self, net: IpNet) {
        match canonical(net) {
            IpNet::V4(n) => self.v4[usize::from(n.prefix_len())].remove(u32::from(n.network())),
            IpNet::V6(n) => self.v6[usize::from(n.prefix_len())].remove(v6_key(n.network())),
        }
    }

    /// The listing that covers `ip` at `now`, the most specific one when
    /// several do; an IPv4-mapped IPv6 address is the IPv4 one.
    pub fn lookup(&self, ip: IpAddr, now: i64) -> Option<Listing> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                (0..=32usize).rev().find_map(|len| {
                    let t = &self.v4[len];
                    if t.is_empty() {
                        return None;
                    }
                    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                    t.get(a & mask).filter(|l| l.live(now))
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                (0..=128usize).rev().find_map(|len| {
                    let t = &self.v6[len];
                    if t.is_empty() {
                        return None;
                    }
                    let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                    t.get(split(a & mask)).filter(|l| l.live(now))
                })
            }
        }
    }

    /// Drops the entries ended by `now` and merges every table, giving
    /// their memory back (run now and then: an ended ban is not answered
    /// anyway, but is kept until this or its removal).
    pub fn sweep(&mut self, now: i64) {
        for t in &mut self.v4 {
            t.compact(Some(now));
        }
        for t in &mut self.v6 {
            t.compact(Some(now));
        }
    }

    /// Entries held (removed ones excluded; ended ones until a sweep).
    pub fn len(&self) -> usize {
        self.v4.iter().map(Table::len).sum::<usize>()
            + self.v6.iter().map(Table::len).sum::<usize>()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the entries take.
    pub fn bytes(&self) -> usize {
        self.v4.iter().map(Table::bytes).sum::<usize>()
            + self.v6.iter().map(Table::bytes).sum::<usize>()
    }
}

fn sort_unique<K: Ord + Copy>(entries: &mut Vec<(K, Listing)>) {
    // The later of two entries for one key wins, as with `insert`.
    entries.reverse();
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    entries.retain(|e| e.1.until != 0);
    entries.shrink_to_fit();
}

fn v6_key(a: Ipv6Addr) -> V6 {
    split(u128::from(a))
}

fn split(a: u128) -> V6 {
    ((a >> 64) as u64, a as u64)
}

/// `net` with an IPv4-mapped IPv6 network (`::ffff:0:0/96` or narrower)
/// as the IPv4 network it stands for, and host bits cleared.
pub fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.network().to_ipv4_mapped()
        && let Ok(v4) = Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4.trunc());
    }
    net.trunc()
}

/// Whether `ip` is the RFC 5782 §5 test entry that is always listed.
pub fn always_listed(ip: IpAddr) -> bool {
    ip.to_canonical() == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
}

/// Whether `ip` is the RFC 5782 §5 test entry that is never listed.
pub fn never_listed(ip: IpAddr) -> bool {
    ip.to_canonical() == IpAddr::V4(Ipv4Addr::LOCALHOST)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn l(until: i64) -> Listing {
        Listing::new(until, 3, 1)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_and_networks_of_both_families() {
        let mut set = BanSet::new();
        set.insert(net("192.0.2.7/32"), l(NOW + 60));
        set.insert(net("198.51.100.0/24"), l(NOW + 60));
        set.insert(net("2001:db8::1/128"), l(NOW + 60));
        set.insert(net("2001:db8:1:2::/64"), l(NOW + 60));
        for listed in [
            "192.0.2.7",
            "198.51.100.0",
            "198.51.100.255",
            "2001:db8::1",
            "2001:db8:1:2:ffff::9",
        ] {
            assert!(set.lookup(ip(listed), NOW).is_some(), "{listed}");
        }
        for unlisted in [
            "192.0.2.8",
            "198.51.101.0",
            "2001:db8::2",
            "2001:db8:1:3::1",
            "::",
        ] {
            assert!(set.lookup(ip(unlisted), NOW).is_none(), "{unlisted}");
        }
        assert_eq!(set.len(), 4);
        set.remove(net("198.51.100.0/24"));
        set.remove(net("2001:db8:1:2::/64"));
        assert!(set.lookup(ip("198.51.100.9"), NOW).is_none());
        assert!(set.lookup(ip("2001:db8:1:2::9"), NOW).is_none());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn an_ended_ban_is_never_answered_and_a_sweep_drops_it() {
        let mut set = BanSet::build([
            (net("192.0.2.1/32"), l(NOW)),
            (net("192.0.2.2/32"), l(NOW + 1)),
        ]);
        assert!(set.lookup(ip("192.0.2.1"), NOW).is_none());
        assert!(set.lookup(ip("192.0.2.2"), NOW).is_some());
        assert!(set.lookup(ip("192.0.2.2"), NOW + 1).is_none());
        set.sweep(NOW);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn the_most_specific_listing_is_given() {
        let mut set = BanSet::new();
        set.insert(net("192.0.2.0/24"), Listing::new(NOW + 60, 1, 1));
        set.insert(net("192.0.2.9/32"), Listing::new(NOW + 60, 9, 2));
        assert_eq!(set.lookup(ip("192.0.2.9"), NOW).unwrap().hits(), 9);
        assert_eq!(set.lookup(ip("192.0.2.8"), NOW).unwrap().hits(), 1);
    }

    #[test]
    fn ipv4_mapped_addresses_and_networks_are_ipv4() {
        let mut set = BanSet::new();
        set.insert(net("::ffff:192.0.2.0/120"), l(NOW + 60));
        assert!(set.lookup(ip("192.0.2.44"), NOW).is_some());
        assert!(set.lookup(ip("::ffff:192.0.2.44"), NOW).is_some());
        set.insert(net("203.0.113.5/32"), l(NOW + 60));
        assert!(set.lookup(ip("::ffff:203.0.113.5"), NOW).is_some());
        set.remove(net("::ffff:203.0.113.5/128"));
        assert!(set.lookup(ip("203.0.113.5"), NOW).is_none());
        assert!(always_listed(ip("::ffff:127.0.0.2")) && always_listed(ip("127.0.0.2")));
        assert!(never_listed(ip("::ffff:7f00:1")) && !never_listed(ip("::1")));
    }

    #[test]
    fn entries_are_compact() {
        assert_eq!(std::mem::size_of::<(u32, Listing)>(), 12);
        assert_eq!(std::mem::size_of::<(V6, Listing)>(), 24);
        let set = BanSet::build((0..100_000u32).map(|i| {
            (
                IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7))),
                l(NOW + 60),
            )
        }));
        assert!(set.bytes() <= 100_000 * 12, "{}", set.bytes());
    }

    /// An operation on the set, for the model-based check.
    #[derive(Clone, Debug)]
    enum Op {
        Insert(IpNet, i64),
        Remove(IpNet),
        Sweep,
    }

    fn small_net() -> impl Strategy<Value = IpNet> {
        // Few distinct values so that operations collide.
        prop_oneof![
            (0u32..64, prop::sample::select(vec![24u8, 30, 32])).prop_map(|(a, len)| {
                IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::from(0xc000_0200 + a), len)
                        .unwrap()
                        .trunc(),
                )
            }),
            (0u128..64, prop::sample::select(vec![64u8, 126, 128])).prop_map(|(a, len)| {
                let addr = Ipv6Addr::from(0x2001_0db8_u128 << 96 | a);
                IpNet::V6(ipnet::Ipv6Net::new(addr, len).unwrap().trunc())
            }),
            (0u32..64).prop_map(|a| IpNet::V6(
                ipnet::Ipv6Net::new(Ipv4Addr::from(0xc000_0200 + a).to_ipv6_mapped(), 128).unwrap()
            )),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (small_net(), -2i64..3).prop_map(|(n, d)| Op::Insert(n, NOW + d)),
            3 => small_net().prop_map(Op::Remove),
            1 => Just(Op::Sweep),
        ]
    }

    proptest! {
        /// The set answers like a plain list of networks searched one by
        /// one, whatever the order of insertions, removals and sweeps (a
        /// small merge threshold is exercised by the many operations on
        /// few keys, and `compact` by the sweeps).
        #[test]
        fn answers_like_a_list_of_networks(ops in prop::collection::vec(op(), 0..300), probe in prop::collection::vec((0u32..64, 0u128..64), 1..20)) {
            let mut set = BanSet::new();
            let mut model: BTreeMap<IpNet, i64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(n, until) => { set.insert(n, l(until)); model.insert(canonical(n), until); }
                    Op::Remove(n) => { set.remove(n); model.remove(&canonical(n)); }
                    Op::Sweep => { set.sweep(NOW); model.retain(|_, u| *u > NOW); }
                }
            }
            for (a4, a6) in probe {
                let v4 = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + a4));
                let v6 = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | a6));
                let mapped = IpAddr::V6(Ipv4Addr::from(0xc000_0200 + a4).to_ipv6_mapped());
                for addr in [v4, v6, mapped] {
                    let canon = addr.to_canonical();
                    let expected = model.iter().any(|(n, u)| n.contains(&canon) && *u > NOW);
                    prop_assert_eq!(set.lookup(addr, NOW).is_some(), expected, "{}", addr);
                }
            }
        }
    }
}
