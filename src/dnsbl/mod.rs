//! The bans published as an RFC 5782 DNS blocklist (`dns.dnsbl`,
//! `docs/dnsbl.md`), answered by the DNS server of `serve` and `run` in
//! front of hickory's catalog.
//!
//! - [`name`]: query names to addresses (pure).
//! - [`set`]: the listed addresses and networks, compact, with single
//!   insertions and removals (pure).
//! - [`zone`]: the zone's answers from a set at a given time (pure).
//! - [`feed`]: keeps a [`List`] equal to the bans in the state store,
//!   reading only what changed (I/O).
//! - [`export`]: the bans in force as rbldnsd, plain or JSON files (pure).

pub mod export;
pub mod feed;
pub mod name;
pub mod set;
pub mod zone;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use set::{BanSet, Listing};
pub use zone::{Reply, Verdict, Zone};

use crate::store::Source;

/// The listings being served, shared by the DNS workers (readers) and the
/// [`feed`] thread (the one writer), across reloads.
#[derive(Debug, Default)]
pub struct List {
    set: RwLock<BanSet>,
    /// Whose bans are published: [`ENGINE`] and [`MANUAL`] bits; none
    /// when no blocklist is configured (the set then stays empty).
    publish: AtomicU8,
}

/// The engine's bans are published.
pub const ENGINE: u8 = 1;
/// The operators' bans are published.
pub const MANUAL: u8 = 2;

impl List {
    /// An empty list that publishes nothing yet.
    pub fn new() -> Arc<List> {
        Arc::new(List::default())
    }

    /// The set, for answering.
    pub fn read(&self) -> RwLockReadGuard<'_, BanSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BanSet> {
        self.set.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A list holding `set` (for tests that answer from a known set).
    #[cfg(test)]
    pub(crate) fn holding(set: BanSet) -> Arc<List> {
        let list = List::new();
        *list.write() = set;
        list
    }

    /// Publishes the bans of the sources in `bits` ([`ENGINE`], [`MANUAL`]);
    /// the feed rereads the store when this changes.
    pub fn set_publish(&self, bits: u8) {
        self.publish.store(bits, Ordering::Relaxed);
    }

    /// Whose bans are published.
    pub fn publish(&self) -> u8 {
        self.publish.load(Ordering::Relaxed)
    }

    /// Whether a ban of `source` is published under `bits`.
    pub fn publishes(bits: u8, source: Source) -> bool {
        let bit = match source {
            Source::Engine => ENGINE,
            Source::Manual => MANUAL,
        };
        bits & bit != 0
    }
}

/// The publish bits of `dnsbl` (none without one).
pub fn publish_bits(dnsbl: Option<&crate::config::Dnsbl>) -> u8 {
    dnsbl.map_or(0, |d| {
        (if d.engine { ENGINE } else { 0 }) | (if d.manual { MANUAL } else { 0 })
    })
}

/// A blocklist zone and its listings, as a DNS snapshot serves them.
#[derive(Clone, Debug)]
pub struct Served {
    /// The zone's records and rules.
    pub zone: Zone,
    /// The listings.
    pub list: Arc<List>,
}

impl Served {
    /// The answer to `qtype` at `name` (which the zone owns) at `now`.
    pub fn answer(
        &self,
        name: &hickory_proto::rr::Name,
        qtype: hickory_proto::rr::RecordType,
        now: i64,
    ) -> Reply {
        self.zone.answer(&self.list.read(), name, qtype, now)
    }
}
