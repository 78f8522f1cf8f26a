//! The listed addresses and networks, compact and searchable: one table per
//! address family and prefix length, each a sorted vector (12 bytes per
//! IPv4 entry, 24 per IPv6 one) plus a small sorted map of recent
//! additions that is merged into the vector once it holds a sixteenth as
//! many entries. A lookup masks the address to each prefix length in use
//! and searches that table: O(log n) per length, and only lengths that
//! hold bans are tried (a bit mask says which). A single insertion or
//! removal is O(log n) (a removal marks its entry dead in place), plus the
//! merges' amortised cost.
//!
//! A large vector also has a bucket index (at most 4 bytes per 8 entries):
//! the keys' bits after the prefix they all share pick a bucket, and the
//! binary search runs within it. At a million entries a search without it
//! touches about 20 cache lines of a 12 MB vector, the most expensive part
//! of answering a query (measured with `bench/dnsbl`); with it, 2 or 3.
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

/// A table's key: an address masked to the table's prefix length.
trait Key: Ord + Copy {
    /// The key's bits, left-aligned in 128 (for the bucket index).
    fn bits(self) -> u128;
}

impl Key for u32 {
    fn bits(self) -> u128 {
        u128::from(self) << 96
    }
}

impl Key for V6 {
    fn bits(self) -> u128 {
        u128::from(self.0) << 64 | u128::from(self.1)
    }
}

/// Vectors shorter than this are searched whole.
#[cfg(not(test))]
const INDEX_MIN: usize = 64;
/// Small in tests, so that the model-based test indexes its small tables.
#[cfg(test)]
const INDEX_MIN: usize = 8;
/// At most 2^16 buckets (256 KiB of index).
const INDEX_MAX_BITS: u32 = 16;

/// Where each bucket's keys start in a sorted vector. A key's bucket is
/// given by the `bits` bits that follow the `shared` leading bits all keys
/// of the vector have in common (`prefix`); a key without that prefix is
/// not in the vector.
#[derive(Debug, Default)]
struct Index {
    /// `starts[b]..starts[b + 1]`: the positions of bucket `b`; empty for
    /// a vector searched whole.
    starts: Vec<u32>,
    prefix: u128,
    shared: u32,
    bits: u32,
}

impl Index {
    /// The index of `base` (sorted by key).
    fn of<K: Key>(base: &[(K, Listing)]) -> Index {
        let (Some(first), Some(last)) = (base.first(), base.last()) else {
            return Index::default();
        };
        if base.len() < INDEX_MIN || u32::try_from(base.len()).is_err() {
            return Index::default();
        }
        let (first, last) = (first.0.bits(), last.0.bits());
        let shared = (first ^ last).leading_zeros();
        // About 8 entries per bucket, and no more bits than the keys vary in.
        let bits = (base.len().ilog2() - 3)
            .min(INDEX_MAX_BITS)
            .min(128 - shared);
        let mut index = Index {
            starts: Vec::with_capacity((1 << bits) + 1),
            prefix: first,
            shared,
            bits,
        };
        let mut i = 0;
        for bucket in 0..1usize << bits {
            while i < base.len() && index.bucket(base[i].0.bits()).unwrap_or(usize::MAX) < bucket {
                i += 1;
            }
            index.starts.push(i as u32);
        }
        index.starts.push(base.len() as u32);
        index
    }

    /// The bucket of a key (its bits), `None` if no key of the vector
    /// can be it.
    fn bucket(&self, bits: u128) -> Option<usize> {
        let differs = (bits ^ self.prefix)
            .checked_shr(128 - self.shared)
            .unwrap_or(0);
        if differs != 0 {
            return None;
        }
        let below = bits.checked_shl(self.shared).unwrap_or(0);
        Some(below.checked_shr(128 - self.bits).unwrap_or(0) as usize)
    }

    /// The positions of `base` where a key with these bits can be.
    fn range(&self, bits: u128, len: usize) -> Option<std::ops::Range<usize>> {
        if self.starts.is_empty() {
            return Some(0..len);
        }
        let b = self.bucket(bits)?;
        Some(self.starts[b] as usize..self.starts[b + 1] as usize)
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * std::mem::size_of::<u32>()
    }
}

/// One prefix length of one family.
#[derive(Debug, Default)]
struct Table<K> {
    /// Sorted by key, unique; removed entries stay with `until == 0`.
    base: Vec<(K, Listing)>,
    /// Buckets of `base`, rebuilt whenever its keys change.
    index: Index,
    /// Additions not yet merged; never a key that `base` holds.
    delta: BTreeMap<K, Listing>,
    /// Removed entries still in `base`.
    dead: usize,
    /// Bytes of vectors freed since [`BanSet::take_freed`] last asked.
    freed: usize,
}

impl<K: Key> Table<K> {
    fn is_empty(&self) -> bool {
        self.base.len() == self.dead && self.delta.is_empty()
    }

    /// The position of `key` in `base`.
    fn find(&self, key: K) -> Option<usize> {
        let range = self.index.range(key.bits(), self.base.len())?;
        let start = range.start;
        self.base[range]
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|i| start + i)
    }

    fn get(&self, key: K) -> Option<Listing> {
        if let Some(l) = self.delta.get(&key) {
            return Some(*l);
        }
        let i = self.find(key)?;
        Some(self.base[i].1).filter(|l| l.until != 0)
    }

    fn insert(&mut self, key: K, listing: Listing) {
        // A listing that has already ended counts as removed.
        if listing.until == 0 {
            return self.remove(key);
        }
        match self.find(key) {
            Some(i) => {
                if self.base[i].1.until == 0 {
                    self.dead -= 1;
                }
                self.base[i].1 = listing;
            }
            None => {
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
        if let Some(i) = self.find(key)
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
    /// entries, and those ended by `now` when given. A table with nothing
    /// to merge or drop is left as it is (the sweep every minute would
    /// otherwise copy a million entries under the lock each time).
    fn compact(&mut self, now: Option<i64>) {
        let keep = |l: &Listing| l.until != 0 && now.is_none_or(|now| l.live(now));
        if self.delta.is_empty() && self.base.iter().all(|e| keep(&e.1)) {
            return;
        }
        let delta = std::mem::take(&mut self.delta);
        let base = std::mem::take(&mut self.base);
        let mut merged = huge_vec(base.len() - self.dead + delta.len());
        let mut recent = delta.into_iter().peekable();
        for &entry in &base {
            while let Some(r) = recent.next_if(|r| r.0 < entry.0) {
                merged.extend(Some(r).filter(|r| keep(&r.1)));
            }
            merged.extend(Some(entry).filter(|e| keep(&e.1)));
        }
        merged.extend(recent.filter(|r| keep(&r.1)));
        if merged.capacity() - merged.len() > merged.len() / 8 {
            merged.shrink_to_fit();
        }
        self.freed += base.capacity() * std::mem::size_of::<(K, Listing)>();
        self.base = merged;
        self.dead = 0;
        self.index = Index::of(&self.base);
    }

    /// Sorts entries pushed in any order into `base` (the later of two
    /// entries for one key wins, as with `insert`) and indexes them.
    fn sort(&mut self) {
        self.base.reverse();
        self.base.sort_by_key(|e| e.0);
        self.base.dedup_by_key(|e| e.0);
        self.base.retain(|e| e.1.until != 0);
        // Into a vector of the exact size (the pushes left up to twice
        // that), in huge pages when it is large.
        let mut base = huge_vec(self.base.len());
        base.extend_from_slice(&self.base);
        self.freed += self.base.capacity() * std::mem::size_of::<(K, Listing)>();
        self.base = base;
        self.index = Index::of(&self.base);
    }

    fn len(&self) -> usize {
        self.base.len() - self.dead + self.delta.len()
    }

    fn bytes(&self) -> usize {
        self.base.capacity() * std::mem::size_of::<(K, Listing)>()
            + self.index.bytes()
            // A B-tree node holds up to 11 entries and is at least half full.
            + self.delta.len() * std::mem::size_of::<(K, Listing)>() * 2
    }
}

/// An empty vector with room for `len` entries; when that is several
/// megabytes, the kernel is asked to back it with huge pages (2 MiB: a
/// million IPv4 entries in 6 pages instead of 3,000). A lookup's few reads
/// land at random in the vector, and on a virtual machine a TLB miss
/// costs a two-level page walk: `bench/dnsbl` measured the search's share
/// of a query's CPU at 9 % without, 6 % with. Only advice: nothing changes
/// where transparent huge pages are off (`never`).
fn huge_vec<T>(len: usize) -> Vec<T> {
    const HUGE: usize = 2 << 20;
    let v: Vec<T> = Vec::with_capacity(len);
    let bytes = len * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if bytes >= 2 * HUGE {
        // The whole huge pages inside the allocation.
        let at = v.as_ptr() as usize;
        let start = at.next_multiple_of(HUGE);
        let end = (at + bytes) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside `v`'s allocation, which this
            // function owns; MADV_HUGEPAGE only changes how the kernel backs
            // those pages, never their contents, and a failure is harmless.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (bytes, HUGE);
    v
}

/// An IPv6 key: the masked address as two halves (8-byte aligned, so an
/// entry takes 24 bytes rather than the 32 of a `u128` one).
type V6 = (u64, u64);

/// Which prefix lengths (0 to 128) have entries, as bits.
#[derive(Clone, Copy, Debug, Default)]
struct Lengths([u64; 3]);

impl Lengths {
    fn set(&mut self, len: usize, used: bool) {
        let bit = 1u64 << (len % 64);
        if used {
            self.0[len / 64] |= bit;
        } else {
            self.0[len / 64] &= !bit;
        }
    }

    /// The lengths in use, longest first.
    fn longest_first(self) -> impl Iterator<Item = usize> {
        (0..3).rev().flat_map(move |w| {
            let mut bits = self.0[w];
            std::iter::from_fn(move || {
                let top = bits.checked_ilog2()?;
                bits &= !(1u64 << top);
                Some(w * 64 + top as usize)
            })
        })
    }
}

/// Every listed address and network.
#[derive(Debug)]
pub struct BanSet {
    /// Indexed by prefix length, 0 to 32.
    v4: Vec<Table<u32>>,
    /// Indexed by prefix length, 0 to 128.
    v6: Vec<Table<V6>>,
    /// The lengths of `v4` and of `v6` that have entries: a lookup tries
    /// only those.
    used4: Lengths,
    used6: Lengths,
}

impl Default for BanSet {
    fn default() -> Self {
        BanSet {
            v4: (0..=32).map(|_| Table::default()).collect(),
            v6: (0..=128).map(|_| Table::default()).collect(),
            used4: Lengths::default(),
            used6: Lengths::default(),
        }
    }
}

/// Builds a [`BanSet`] from bans in any order, each stored once (no list
/// of them beside the set: at a million bans that list would take twice
/// the set's memory, and the process would keep that peak).
#[derive(Debug, Default)]
pub struct Builder(BanSet);

impl Builder {
    /// An empty builder.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Adds a ban; of two for one network, the later wins.
    pub fn push(&mut self, net: IpNet, listing: Listing) {
        match canonical(net) {
            IpNet::V4(n) => self.0.v4[usize::from(n.prefix_len())]
                .base
                .push((u32::from(n.network()), listing)),
            IpNet::V6(n) => self.0.v6[usize::from(n.prefix_len())]
                .base
                .push((v6_key(n.network()), listing)),
        }
    }

    /// The set (each table sorted once).
    pub fn finish(mut self) -> BanSet {
        for t in &mut self.0.v4 {
            t.sort();
        }
        for t in &mut self.0.v6 {
            t.sort();
        }
        self.0.refresh_lengths();
        self.0
    }
}

impl BanSet {
    /// An empty set.
    pub fn new() -> BanSet {
        BanSet::default()
    }

    /// A set of `bans`, built in one pass (sorted once per table).
    pub fn build(bans: impl IntoIterator<Item = (IpNet, Listing)>) -> BanSet {
        let mut builder = Builder::new();
        for (net, listing) in bans {
            builder.push(net, listing);
        }
        builder.finish()
    }

    /// Lists `net` (replacing what it had).
    pub fn insert(&mut self, net: IpNet, listing: Listing) {
        match canonical(net) {
            IpNet::V4(n) => {
                let len = usize::from(n.prefix_len());
                self.v4[len].insert(u32::from(n.network()), listing);
                self.used4.set(len, !self.v4[len].is_empty());
            }
            IpNet::V6(n) => {
                let len = usize::from(n.prefix_len());
                self.v6[len].insert(v6_key(n.network()), listing);
                self.used6.set(len, !self.v6[len].is_empty());
            }
        }
    }

    /// Unlists `net` (exactly that network, not those inside it).
    pub fn remove(&mut self, net: IpNet) {
        match canonical(net) {
            IpNet::V4(n) => {
                let len = usize::from(n.prefix_len());
                self.v4[len].remove(u32::from(n.network()));
                self.used4.set(len, !self.v4[len].is_empty());
            }
            IpNet::V6(n) => {
                let len = usize::from(n.prefix_len());
                self.v6[len].remove(v6_key(n.network()));
                self.used6.set(len, !self.v6[len].is_empty());
            }
        }
    }

    /// Marks the lengths that have entries.
    fn refresh_lengths(&mut self) {
        for (len, t) in self.v4.iter().enumerate() {
            self.used4.set(len, !t.is_empty());
        }
        for (len, t) in self.v6.iter().enumerate() {
            self.used6.set(len, !t.is_empty());
        }
    }

    /// The listing that covers `ip` at `now`, the most specific one when
    /// several do; an IPv4-mapped IPv6 address is the IPv4 one.
    pub fn lookup(&self, ip: IpAddr, now: i64) -> Option<Listing> {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.used4.longest_first().find_map(|len| {
                    let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                    self.v4[len].get(a & mask).filter(|l| l.live(now))
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.used6.longest_first().find_map(|len| {
                    let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                    self.v6[len].get(split(a & mask)).filter(|l| l.live(now))
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
        self.refresh_lengths();
    }

    /// Bytes of memory the set has freed (vectors replaced by larger or
    /// smaller ones) since the last call; the caller may hand it back to
    /// the system (`release_freed_memory`) when that is a lot.
    pub fn take_freed(&mut self) -> usize {
        let v4 = self.v4.iter_mut().map(|t| std::mem::take(&mut t.freed));
        let v6 = self.v6.iter_mut().map(|t| std::mem::take(&mut t.freed));
        v4.sum::<usize>() + v6.sum::<usize>()
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
        // 12 bytes an entry, and the index's 4 bytes per 8 of them.
        assert!(set.bytes() <= 100_000 * 12 + 100_000 / 2, "{}", set.bytes());
    }

    /// A small deterministic generator (xorshift), for large test sets.
    fn random(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// In a large table a search runs within one small bucket of the index,
    /// also when every key shares a long prefix (IPv6 networks of one
    /// /32), and finds exactly what a plain set of the keys holds.
    #[test]
    fn a_large_table_is_searched_within_one_small_bucket() {
        let mut seed = 17;
        let v4: Vec<u32> = (0..100_000).map(|_| random(&mut seed) as u32).collect();
        let v6: Vec<u128> = (0..20_000)
            .map(|_| 0x2001_0db8_u128 << 96 | u128::from(random(&mut seed) as u32) << 64)
            .collect();
        let set = BanSet::build(
            v4.iter()
                .map(|&a| IpNet::from(IpAddr::V4(Ipv4Addr::from(a))))
                .chain(
                    v6.iter()
                        .map(|&a| IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(a), 64).unwrap())),
                )
                .map(|n| (n, l(NOW + 60))),
        );
        let t4 = &set.v4[32];
        let t6 = &set.v6[64];
        assert!(t4.index.bits >= 12 && t6.index.bits >= 11, "indexed");
        for (i, e) in t4.base.iter().enumerate() {
            let range = t4.index.range(e.0.bits(), t4.base.len()).unwrap();
            assert!(range.contains(&i) && range.len() <= 64, "{range:?}");
        }
        for (i, e) in t6.base.iter().enumerate() {
            let range = t6.index.range(e.0.bits(), t6.base.len()).unwrap();
            assert!(range.contains(&i) && range.len() <= 64, "{range:?}");
        }
        // Outside the prefix all IPv6 keys share: no bucket at all.
        assert_eq!(t6.index.range(0x2001_0db9_u128 << 96, t6.base.len()), None);
        let listed4: std::collections::HashSet<u32> = v4.iter().copied().collect();
        let listed6: std::collections::HashSet<u128> = v6.iter().copied().collect();
        for &a in &v4 {
            assert!(set.lookup(IpAddr::V4(Ipv4Addr::from(a)), NOW).is_some());
        }
        for &a in &v6 {
            assert!(
                set.lookup(IpAddr::V6(Ipv6Addr::from(a | 0xabc)), NOW)
                    .is_some()
            );
        }
        for _ in 0..100_000 {
            let a = random(&mut seed) as u32;
            let listed = set.lookup(IpAddr::V4(Ipv4Addr::from(a)), NOW).is_some();
            assert_eq!(listed, listed4.contains(&a), "{a}");
            let b = 0x2001_0db8_u128 << 96 | u128::from(random(&mut seed)) << 32;
            let listed = set.lookup(IpAddr::V6(Ipv6Addr::from(b)), NOW).is_some();
            assert_eq!(listed, listed6.contains(&(b >> 64 << 64)), "{b:x}");
        }
    }

    /// A sweep leaves a table with nothing ended as it is (no copy of its
    /// vector under the lock), and reports what it freed when it drops
    /// entries.
    #[test]
    fn a_sweep_copies_only_tables_with_ended_entries() {
        let mut set = BanSet::build((0..1000u32).map(|i| {
            let until = if i < 10 { NOW + 1 } else { NOW + 60 };
            (
                IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
                l(until),
            )
        }));
        set.take_freed();
        let before = set.v4[32].base.as_ptr();
        set.sweep(NOW);
        assert_eq!(
            set.v4[32].base.as_ptr(),
            before,
            "nothing ended: not copied"
        );
        assert_eq!(set.take_freed(), 0);
        set.sweep(NOW + 1);
        assert_eq!(set.len(), 990);
        assert_eq!(set.take_freed(), 1000 * 12, "the old vector");
        assert!(set.lookup(ip("10.0.0.9"), NOW).is_none());
        assert!(set.lookup(ip("10.0.0.10"), NOW).is_some());
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
