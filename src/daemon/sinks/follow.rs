//! Incremental enforcement: after a full reconcile, the decisions the
//! store's history records name the targets whose bans changed, each read
//! with the ban it has now in the same statement, and only those are put
//! into the firewall (or taken out). A fleet bootstrap of millions of
//! bans, or a burst of decisions, then costs what it changes, not a read
//! of every ban per change.
//!
//! The history is trimmed ([`crate::store::HISTORY_ROWS`]), but not past
//! what the configured backend's enforcement has read
//! ([`crate::store::Store::keep_history_after`], up to
//! [`crate::store::HISTORY_MOST`]). When it was
//! trimmed past the last entry read (a broken trail), when the store went
//! back in time, when a network's ban changed (hosts inside it are covered
//! or uncovered: what [`crate::enforce::fold`] decides for the whole set),
//! or when the backend cannot tell what it holds, the caller makes a full
//! reconcile instead.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::enforce::Target;
use crate::store::{Store, StoreError};

/// History entries read and applied at once.
pub(super) const PAGE: usize = 20_000;

/// The network bans in force at the last full reconcile and when each
/// ends: a host inside one of them is left to it, as in a full reconcile.
#[derive(Debug, Default)]
pub(super) struct Networks {
    until: HashMap<IpNet, i64>,
    /// The prefix lengths among them, IPv4 and IPv6 (few: /24, /64, ...).
    lengths: Vec<(bool, u8)>,
}

impl Networks {
    /// The networks among the bans `targets` (`(target, until)`).
    pub(super) fn of(targets: &[(IpNet, i64)]) -> Networks {
        let mut nets = Networks::default();
        for &(net, until) in targets.iter().filter(|(n, _)| !is_host(n)) {
            let net = net.trunc();
            let end = nets.until.entry(net).or_insert(until);
            *end = (*end).max(until);
            let length = (net.addr().is_ipv4(), net.prefix_len());
            if !nets.lengths.contains(&length) {
                nets.lengths.push(length);
            }
        }
        nets
    }

    /// Whether a network ban still in force at `now` covers `host`.
    pub(super) fn cover(&self, host: &IpNet, now: i64) -> bool {
        let v4 = host.addr().is_ipv4();
        self.lengths
            .iter()
            .filter(|(family, _)| *family == v4)
            .filter_map(|(_, len)| IpNet::new(host.addr(), *len).ok())
            .any(|net| self.until.get(&net.trunc()).is_some_and(|u| *u > now))
    }
}

/// A single address.
fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// What changed since history entry `after`: at most [`PAGE`] entries.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Trail {
    /// Nothing was recorded since.
    Unchanged,
    /// The hosts whose bans changed (sorted, once each), with the end of
    /// the ban each has now (if any), up to entry `last`.
    Hosts {
        hosts: Vec<(IpNet, Option<i64>)>,
        last: i64,
    },
    /// Follow no further: read every ban (see the module comment).
    Broken,
}

/// Reads the history after entry `after`.
pub(super) fn trail(store: &Store, after: i64) -> Result<Trail, StoreError> {
    let rows = store.ban_history_after(after, PAGE)?;
    let Some(&(first, _)) = rows.first() else {
        return Ok(if store.history_last()? < after {
            Trail::Broken
        } else {
            Trail::Unchanged
        });
    };
    if first != after + 1 {
        return Ok(Trail::Broken);
    }
    let last = rows.last().map_or(after, |r| r.0);
    let mut hosts = Vec::with_capacity(rows.len());
    // Entries of no ban (retry exemptions) name no target here.
    for (net, ban) in rows.into_iter().filter_map(|r| r.1) {
        if !is_host(&net) {
            return Ok(Trail::Broken);
        }
        hosts.push((net, ban.map(|b| b.until)));
    }
    // Entries of one host read its one ban: any of them will do.
    hosts.sort_unstable_by_key(|h| h.0);
    hosts.dedup_by_key(|h| h.0);
    Ok(Trail::Hosts { hosts, last })
}

/// What to enforce of the `hosts` a trail names at `now` (pure): each
/// one's ban in force, unless a network ban covers it.
pub(super) fn desired(
    hosts: &[(IpNet, Option<i64>)],
    networks: &Networks,
    now: i64,
) -> Vec<Target> {
    hosts
        .iter()
        .filter(|(host, _)| !networks.cover(host, now))
        .filter_map(|&(net, until)| {
            let until = until.filter(|u| *u > now)?;
            Some(Target {
                net,
                remaining: u64::try_from(until - now).unwrap_or(1).max(1),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BanRecord, Source};

    const NOW: i64 = 1_800_000_000;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ban(store: &mut Store, target: &str, until: i64) {
        store
            .add_ban(&BanRecord {
                target: net(target),
                since: NOW,
                until,
                reason: "test".into(),
                hits: 3,
                offence: 1,
                source: Source::Manual,
            })
            .unwrap();
    }

    #[test]
    fn a_host_inside_a_network_ban_in_force_is_covered() {
        let nets = Networks::of(&[
            (net("198.51.100.0/24"), NOW + 60),
            (net("2001:db8:1::/48"), NOW + 60),
            (net("203.0.113.0/24"), NOW - 1),
            (net("192.0.2.7/32"), NOW + 60),
        ]);
        assert!(nets.cover(&net("198.51.100.9/32"), NOW));
        assert!(nets.cover(&net("2001:db8:1:2::9/128"), NOW));
        assert!(!nets.cover(&net("198.51.101.9/32"), NOW));
        assert!(!nets.cover(&net("2001:db8:2::9/128"), NOW));
        // Ended: it covers nothing any more.
        assert!(!nets.cover(&net("203.0.113.9/32"), NOW));
        // A host ban is not a network.
        assert!(!nets.cover(&net("192.0.2.7/32"), NOW));
        assert!(!nets.cover(&net("198.51.100.9/32"), NOW + 60));
    }

    #[test]
    fn the_trail_names_the_hosts_changed_since_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(trail(&store, 0).unwrap(), Trail::Unchanged);
        ban(&mut store, "192.0.2.7/32", NOW + 60);
        ban(&mut store, "192.0.2.8/32", NOW + 60);
        store.remove_ban(&net("192.0.2.7/32"), NOW, "test").unwrap();
        assert_eq!(
            trail(&store, 0).unwrap(),
            Trail::Hosts {
                hosts: vec![
                    (net("192.0.2.7/32"), None),
                    (net("192.0.2.8/32"), Some(NOW + 60))
                ],
                last: 3
            }
        );
        assert_eq!(
            trail(&store, 2).unwrap(),
            Trail::Hosts {
                hosts: vec![(net("192.0.2.7/32"), None)],
                last: 3
            }
        );
        assert_eq!(trail(&store, 3).unwrap(), Trail::Unchanged);
        // Entries before the first one kept: trimmed past what was read.
        assert_eq!(trail(&store, -5).unwrap(), Trail::Broken);
        // A store behind the last entry read: another store in its place.
        assert_eq!(trail(&store, 9).unwrap(), Trail::Broken);
        ban(&mut store, "198.51.100.0/24", NOW + 60);
        assert_eq!(trail(&store, 3).unwrap(), Trail::Broken, "a network");
    }

    #[test]
    fn the_desired_state_of_changed_hosts_is_their_ban_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        ban(&mut store, "192.0.2.7/32", NOW + 60);
        ban(&mut store, "192.0.2.8/32", NOW - 1);
        ban(&mut store, "198.51.100.9/32", NOW + 600);
        ban(&mut store, "192.0.2.9/32", NOW + 60);
        store.remove_ban(&net("192.0.2.9/32"), NOW, "test").unwrap();
        let Trail::Hosts { hosts, last: 5 } = trail(&store, 0).unwrap() else {
            panic!("a trail of five entries");
        };
        assert_eq!(
            hosts,
            [
                (net("192.0.2.7/32"), Some(NOW + 60)),
                (net("192.0.2.8/32"), Some(NOW - 1)),
                (net("192.0.2.9/32"), None),
                (net("198.51.100.9/32"), Some(NOW + 600)),
            ],
            "each host once, with the ban it has now"
        );
        let nets = Networks::of(&[(net("198.51.100.0/24"), NOW + 60)]);
        assert_eq!(
            desired(&hosts, &nets, NOW),
            [Target {
                net: net("192.0.2.7/32"),
                remaining: 60
            }],
            "ended, lifted and covered by a network: nothing of those"
        );
    }
}
