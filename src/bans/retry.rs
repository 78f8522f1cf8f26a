//! Retry recognition, pure: a client that comes back with the same envelope
//! after a delay is a real MTA (greylisting rests on the same idea), and
//! bots rarely do. The ban engine asks [`Sightings::sight`] about every
//! decoy hit that carries a [`Seen`] fingerprint.
//!
//! A fingerprint is a stable 64-bit hash (FNV-1a, the same in every run and
//! on every host) of the client's network at the policy's size and what
//! the hit revealed: the envelope (lower-cased MAIL FROM and first RCPT
//! TO) in `rcpt-450` sessions and classic decoy reject lines, or nothing
//! more than the network for a `greet-*` session. The envelope is client
//! text used only as hash input: it is never read as an address.
//!
//! Every sighting of a fingerprint updates its time, so a bot that resends
//! the same envelope every 10 s never shows a gap of `min_delay` and is
//! never taken for an MTA. The table holds at most [`MAX_FINGERPRINTS`];
//! when it is full, new fingerprints are not recorded (and counted), so
//! hostile input never grows memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::hash::Fnv1a;

/// The most fingerprints remembered at once (about 10 MB). Entries older
/// than `max_delay` are pruned with the engine's other retention.
pub const MAX_FINGERPRINTS: usize = 200_000;

/// The hash of an envelope (lower-cased MAIL FROM and first RCPT TO), as
/// the responder and the log parser see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Envelope(pub u64);

impl Envelope {
    /// The envelope of `from` and `to` (bytes as the client sent them;
    /// ASCII case is ignored, as mail systems compare domains).
    pub fn of(from: &[u8], to: &[u8]) -> Envelope {
        let mut h = Fnv::new();
        h.field(b"from");
        h.lower(from);
        h.field(b"to");
        h.lower(to);
        Envelope(h.finish())
    }
}

/// What a decoy hit reveals for retry recognition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing: it never counts as a retry (refuse-mode firewall counts,
    /// which a forged SYN makes; sessions that never reached RCPT; log
    /// lines without an envelope).
    Nothing,
    /// A `greet-*` session: no envelope is ever sent, so the network
    /// coming back is all there is to recognise.
    Network,
    /// The envelope of an `rcpt-450` session or a decoy reject line.
    Envelope(Envelope),
}

/// The fingerprint of a hit from `network` that revealed `seen`; `None`
/// when it reveals nothing.
pub fn fingerprint(network: IpNet, seen: Seen) -> Option<u64> {
    let mut h = Fnv::new();
    match network.addr() {
        IpAddr::V4(a) => h.field(&a.octets()),
        IpAddr::V6(a) => h.field(&a.octets()),
    }
    h.field(&[network.prefix_len()]);
    match seen {
        Seen::Nothing => return None,
        Seen::Network => h.field(b"network"),
        Seen::Envelope(e) => h.field(&e.0.to_be_bytes()),
    }
    Some(h.finish())
}

/// FNV-1a ([`crate::hash`]: stable across runs and builds, unlike
/// `RandomState`, and plenty for a fingerprint whose collisions only ever
/// concern one network's own clients), fed length-prefixed fields.
#[derive(Default)]
struct Fnv(Fnv1a);

impl Fnv {
    fn new() -> Fnv {
        Fnv::default()
    }

    /// A length-prefixed field, so `("ab", "c")` and `("a", "bc")` differ.
    fn field(&mut self, bytes: &[u8]) {
        self.0.bytes(&(bytes.len() as u64).to_be_bytes());
        self.0.bytes(bytes);
    }

    /// A field, ASCII lower-cased.
    fn lower(&mut self, bytes: &[u8]) {
        self.0.bytes(&(bytes.len() as u64).to_be_bytes());
        for &b in bytes {
            self.0.byte(b.to_ascii_lowercase());
        }
    }

    fn finish(self) -> u64 {
        self.0.finish()
    }
}

/// The latest sighting of each fingerprint, bounded.
#[derive(Debug, Default)]
pub struct Sightings {
    last: HashMap<u64, i64>,
    /// New fingerprints not recorded because the table was full.
    dropped: u64,
}

impl Sightings {
    /// Records a sighting of `fp` at `at` and returns the previous one when
    /// this sighting is a retry: more than `min` and at most `max` seconds
    /// after it. Times are whole seconds, so two sightings a moment apart
    /// across a second's boundary are 1 s apart: "more than `min`" makes
    /// sure that the real gap was at least `min`. Every sighting moves the
    /// stored time forward (never back, for evidence out of order).
    pub fn sight(&mut self, fp: u64, at: i64, min: i64, max: i64) -> Option<i64> {
        let full = self.last.len() >= MAX_FINGERPRINTS;
        match self.last.get_mut(&fp) {
            Some(last) => {
                let previous = *last;
                *last = previous.max(at);
                let gap = at.saturating_sub(previous);
                (gap > min && gap <= max).then_some(previous)
            }
            None if full => {
                self.dropped += 1;
                None
            }
            None => {
                self.last.insert(fp, at);
                None
            }
        }
    }

    /// Forgets sightings before `before` (older than `max_delay`: they can
    /// no longer make a retry).
    pub fn prune(&mut self, before: i64) {
        self.last.retain(|_, &mut t| t >= before);
    }

    /// Forgets every sighting (the network size changed: old fingerprints
    /// can never match again).
    pub fn clear(&mut self) {
        self.last.clear();
    }

    /// Fingerprints held.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// New fingerprints that were not recorded because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The networks let through (retry-exempt), shared between the engine
/// task, which writes it, the responder threads, which look up each new
/// connection once, and the enforcement thread, which puts them in the
/// firewall's let-through when it has one. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Passed(Arc<RwLock<PassedNets>>);

/// The contents of [`Passed`]: networks at the policy's sizes, each with
/// the end of its exemption (Unix seconds).
#[derive(Debug, Default)]
struct PassedNets {
    v4_prefix: u8,
    v6_prefix: u8,
    nets: HashMap<IpNet, i64>,
    /// Moves with every change, so readers can tell when to look again.
    version: u64,
}

impl Passed {
    /// Replaces the whole set: networks of `v4_prefix`/`v6_prefix` bits
    /// with the end of their exemption.
    pub fn replace(
        &self,
        v4_prefix: u8,
        v6_prefix: u8,
        nets: impl IntoIterator<Item = (IpNet, i64)>,
    ) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        *set = PassedNets {
            v4_prefix,
            v6_prefix,
            nets: nets.into_iter().collect(),
            version: set.version.wrapping_add(1),
        };
    }

    /// Adds (or extends) one network until `until`.
    pub fn insert(&self, net: IpNet, until: i64) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        let end = set.nets.entry(net).or_insert(until);
        *end = (*end).max(until);
        set.version = set.version.wrapping_add(1);
    }

    /// Forgets the networks whose exemption ended by `now`.
    pub fn expire(&self, now: i64) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        let before = set.nets.len();
        set.nets.retain(|_, &mut until| until > now);
        if set.nets.len() != before {
            set.version = set.version.wrapping_add(1);
        }
    }

    /// The version of the set (it moves with every change) and its
    /// networks with the end of their exemption, for the firewall.
    pub fn snapshot(&self) -> (u64, Vec<(IpNet, i64)>) {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        (
            set.version,
            set.nets.iter().map(|(n, u)| (*n, *u)).collect(),
        )
    }

    /// Whether `ip`'s network is let through at `now`: one read lock, one
    /// hash lookup (none while the set is empty).
    pub fn contains(&self, ip: IpAddr, now: i64) -> bool {
        let set = self.0.read().unwrap_or_else(|p| p.into_inner());
        if set.nets.is_empty() {
            return false;
        }
        let net = super::policy::network_of(ip, set.v4_prefix, set.v6_prefix);
        set.nets.get(&net).is_some_and(|&until| until > now)
    }

    /// Networks held.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).nets.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_ignore_ascii_case_and_keep_fields_apart() {
        assert_eq!(
            Envelope::of(b"A@B.example", b"U@Example.ORG"),
            Envelope::of(b"a@b.example", b"u@example.org")
        );
        assert_ne!(Envelope::of(b"ab", b"c"), Envelope::of(b"a", b"bc"));
        assert_ne!(Envelope::of(b"a", b"b"), Envelope::of(b"b", b"a"));
        // Stable across runs and builds: a fixed value.
        assert_eq!(Envelope::of(b"", b"").0, Envelope::of(b"", b"").0);
        assert_eq!(
            fingerprint("192.0.2.0/24".parse().unwrap(), Seen::Network),
            fingerprint("192.0.2.0/24".parse().unwrap(), Seen::Network)
        );
    }

    #[test]
    fn fingerprints_differ_by_network_and_what_was_seen() {
        let a: IpNet = "192.0.2.0/24".parse().unwrap();
        let b: IpNet = "192.0.3.0/24".parse().unwrap();
        let e = Seen::Envelope(Envelope::of(b"x@y", b"u@v"));
        assert_eq!(fingerprint(a, Seen::Nothing), None);
        assert_ne!(fingerprint(a, e), fingerprint(b, e));
        assert_ne!(fingerprint(a, e), fingerprint(a, Seen::Network));
    }

    #[test]
    fn a_retry_lies_between_min_and_max_after_the_latest_sighting() {
        let mut s = Sightings::default();
        assert_eq!(s.sight(1, 0, 60, 3600), None);
        assert_eq!(s.sight(1, 30, 60, 3600), None);
        // 60 s after the latest sighting (30), not after the first.
        assert_eq!(s.sight(1, 80, 60, 3600), None);
        assert_eq!(s.sight(1, 141, 60, 3600), Some(80));
        assert_eq!(s.sight(1, 141 + 3601, 60, 3600), None);
        // Out of order: no retry, and the stored time stays.
        assert_eq!(s.sight(1, 100, 60, 3600), None);
        assert_eq!(s.sight(1, 141 + 3601 + 61, 60, 3600), Some(141 + 3601));
        s.prune(10_000);
        assert!(s.is_empty());
    }

    /// Whole seconds: sightings 200 ms apart across a second's boundary
    /// read as 1 s apart, so a gap of exactly `min` may be less than `min`
    /// and is no retry (a bot resending fast was exempt with min 1 s).
    #[test]
    fn a_gap_of_exactly_min_whole_seconds_is_no_retry() {
        let mut s = Sightings::default();
        assert_eq!(s.sight(1, 43, 1, 3600), None);
        assert_eq!(s.sight(1, 44, 1, 3600), None);
        assert_eq!(s.sight(1, 46, 1, 3600), Some(44));
        assert_eq!(s.sight(2, 0, 60, 3600), None);
        assert_eq!(s.sight(2, 60, 60, 3600), None);
        assert_eq!(s.sight(2, 121, 60, 3600), Some(60));
    }

    #[test]
    fn the_passed_set_expires_and_keys_by_network() {
        let p = Passed::default();
        assert!(!p.contains("192.0.2.7".parse().unwrap(), 0));
        p.replace(24, 64, [("192.0.2.0/24".parse().unwrap(), 100)]);
        assert!(p.contains("192.0.2.7".parse().unwrap(), 99));
        assert!(p.contains("::ffff:192.0.2.8".parse().unwrap(), 99));
        assert!(!p.contains("192.0.3.7".parse().unwrap(), 99));
        assert!(!p.contains("192.0.2.7".parse().unwrap(), 100));
        p.insert("2001:db8:1:2::/64".parse().unwrap(), 200);
        assert!(p.contains("2001:db8:1:2::99".parse().unwrap(), 150));
        p.expire(150);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_passed_set_version_moves_with_every_change() {
        let p = Passed::default();
        let (v0, nets) = p.snapshot();
        assert!(nets.is_empty());
        p.replace(24, 64, [("192.0.2.0/24".parse().unwrap(), 100)]);
        let (v1, nets) = p.snapshot();
        assert_ne!(v1, v0);
        assert_eq!(nets, vec![("192.0.2.0/24".parse().unwrap(), 100)]);
        // Extended: a new version, the later end.
        p.insert("192.0.2.0/24".parse().unwrap(), 300);
        let (v2, nets) = p.snapshot();
        assert_ne!(v2, v1);
        assert_eq!(nets[0].1, 300);
        // Nothing expired: the same version.
        p.expire(200);
        assert_eq!(p.snapshot().0, v2);
        p.expire(300);
        let (v3, nets) = p.snapshot();
        assert_ne!(v3, v2);
        assert!(nets.is_empty());
    }
}
