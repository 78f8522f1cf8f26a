//! What the nftables backend knows of the elements in its sets: when the
//! kernel drops each. Millions of bans are mostly single IPv4 addresses, so
//! those take 8 bytes (the address, and the expiry in tenths of a second
//! since the map was made) instead of an `IpNet` and an `Instant` (40 with
//! padding); anything else is kept as it is.
//!
//! The addresses are kept in order: every caller asks for them in address
//! order (the folded bans of a reconcile, the sorted hosts a followed
//! change names), so consecutive lookups land in the same few tree nodes,
//! already in the CPU's cache, where a hash map of millions makes each one
//! a cache miss (a quarter of the enforcement thread's time in a fleet
//! bootstrap of 2,000,000 bans); and the elements come out sorted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// The unit of the stored expiry times.
const TICK: Duration = Duration::from_millis(100);

/// Elements and the instant the kernel drops each, with the precision of
/// [`TICK`], rounded up (an element is never believed gone before the
/// kernel drops it). An expiry beyond 13 years after `base` is kept as
/// 13 years: longer than any timeout the kernel is given.
#[derive(Clone, Debug)]
pub(super) struct Expiries {
    base: Instant,
    hosts4: BTreeMap<u32, u32>,
    other: HashMap<IpNet, u32>,
}

/// A single IPv4 address as its number.
fn host4(net: &IpNet) -> Option<u32> {
    match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Some(u32::from(n.addr())),
        _ => None,
    }
}

impl Expiries {
    /// An empty map whose times count from `base`.
    pub(super) fn new(base: Instant) -> Expiries {
        Expiries {
            base,
            hosts4: BTreeMap::new(),
            other: HashMap::new(),
        }
    }

    fn ticks(&self, at: Instant) -> u32 {
        let ms = at.saturating_duration_since(self.base).as_millis();
        u32::try_from(ms.div_ceil(TICK.as_millis())).unwrap_or(u32::MAX)
    }

    fn instant(&self, ticks: u32) -> Instant {
        self.base + TICK * ticks
    }

    /// Records that the kernel drops `net` at `at`.
    pub(super) fn insert(&mut self, net: IpNet, at: Instant) {
        let ticks = self.ticks(at);
        match host4(&net) {
            Some(ip) => self.hosts4.insert(ip, ticks),
            None => self.other.insert(net, ticks),
        };
    }

    /// Forgets `net`.
    pub(super) fn remove(&mut self, net: &IpNet) {
        match host4(net) {
            Some(ip) => self.hosts4.remove(&ip),
            None => self.other.remove(net),
        };
    }

    /// When the kernel drops `net`, if it holds it.
    pub(super) fn get(&self, net: &IpNet) -> Option<Instant> {
        let ticks = match host4(net) {
            Some(ip) => self.hosts4.get(&ip),
            None => self.other.get(net),
        };
        ticks.map(|t| self.instant(*t))
    }

    /// Forgets what the kernel has dropped by `now` (with a second's
    /// margin).
    pub(super) fn forget_expired(&mut self, now: Instant) {
        let gone = self.ticks(now.checked_sub(Duration::from_secs(1)).unwrap_or(self.base));
        self.hosts4.retain(|_, t| *t > gone);
        self.other.retain(|_, t| *t > gone);
    }

    /// Every element: the IPv4 addresses in order, then the rest.
    pub(super) fn nets(&self) -> Vec<IpNet> {
        let hosts = self
            .hosts4
            .keys()
            .map(|ip| IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(*ip))));
        hosts.chain(self.other.keys().copied()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_addresses_and_networks_with_their_expiry_rounded_up() {
        let base = Instant::now();
        let mut map = Expiries::new(base);
        let host: IpNet = "198.51.100.7/32".parse().unwrap();
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        let v6: IpNet = "2001:db8::7/128".parse().unwrap();
        map.insert(host, base + Duration::from_millis(1250));
        map.insert(net, base + Duration::from_secs(60));
        map.insert(v6, base + Duration::from_secs(5));
        assert_eq!(map.get(&host), Some(base + Duration::from_millis(1300)));
        assert_eq!(map.get(&net), Some(base + Duration::from_secs(60)));
        let mut nets = map.nets();
        nets.sort();
        assert_eq!(nets, [net, host, v6]);
        // Gone a second after the kernel dropped it, not before.
        map.forget_expired(base + Duration::from_millis(2200));
        assert!(map.get(&host).is_some());
        map.forget_expired(base + Duration::from_millis(2400));
        assert_eq!(map.get(&host), None);
        map.remove(&v6);
        assert_eq!(map.nets(), [net]);
        // Far beyond any kernel timeout: kept as the longest it can say.
        map.insert(host, base + Duration::from_secs(20 * 365 * 86_400));
        assert!(map.get(&host).unwrap() > base + Duration::from_secs(13 * 365 * 86_400));
    }
}
