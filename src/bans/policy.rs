//! The ban policy, pure: evidence in, decisions out, time as a parameter.
//!
//! A client is banned when, within `findtime`, it made at least `maxretry`
//! decoy hits, `grace` has passed since the first of them, and neither it
//! nor its network (`/24`, `/64` by default) delivered through a real MX
//! within `remember`. Loopback, `bans.ignore` and the planned MX addresses
//! are never banned. A delivery seen after a ban lifts it. A client that
//! retries (the same envelope back after `bans.retry.min_delay`, see
//! [`super::retry`]) makes its network exempt like a delivery does. Repeat
//! offenders get longer bans. Memory is bounded by retention (`findtime`
//! for hits, `remember` for deliveries, retries and offence counts,
//! `max_delay` and a cap for retry fingerprints), not by log length.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::retry::{self, Seen, Sightings};
use crate::config::{Cidr, Config};
use table::{Ban, Table};

/// The policy's parameters, in seconds.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Hits that make a candidate.
    pub maxretry: u32,
    /// Window for the hits.
    pub findtime: i64,
    /// Wait after the first hit.
    pub grace: i64,
    /// First ban length.
    pub bantime: i64,
    /// Escalation factor.
    pub factor: u32,
    /// Longest ban.
    pub max_bantime: i64,
    /// How long a delivery clears a network.
    pub remember: i64,
    /// IPv4 network prefix.
    pub v4_prefix: u8,
    /// IPv6 network prefix.
    pub v6_prefix: u8,
    /// Never banned.
    pub exempt: Vec<Cidr>,
    /// Retry recognition: `(min_delay, max_delay)` in seconds; `None` when
    /// `bans.retry.enabled` is false.
    pub retry: Option<(i64, i64)>,
}

impl Policy {
    /// The policy of a config: its `bans` section, plus loopback and every
    /// planned MX address as exempt.
    pub fn from_config(config: &Config) -> Policy {
        let b = &config.bans;
        let mut exempt = b.ignore.clone();
        exempt.extend(b.allow.networks.iter().copied());
        // IPv4-mapped addresses are checked as IPv4 (see `canonical`).
        exempt.extend(
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|c| c.parse::<Cidr>().ok()),
        );
        for domain in &config.domains {
            for (_, host) in domain.hosts() {
                exempt.extend(host.addresses().map(|ip| Cidr(IpNet::from(ip))));
            }
        }
        let secs = |d: crate::config::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Policy {
            maxretry: b.maxretry.max(1),
            findtime: secs(b.findtime),
            grace: secs(b.grace),
            bantime: secs(b.bantime),
            factor: b.escalation.factor.max(1),
            max_bantime: secs(b.escalation.max).max(secs(b.bantime)),
            remember: secs(b.remember),
            v4_prefix: b.networks.ipv4.0,
            v6_prefix: b.networks.ipv6.0,
            exempt,
            retry: b
                .retry
                .enabled
                .then(|| (secs(b.retry.min_delay), secs(b.retry.max_delay))),
        }
    }

    /// The network a client belongs to for delivery matching.
    pub fn network(&self, ip: IpAddr) -> IpNet {
        network_of(ip, self.v4_prefix, self.v6_prefix)
    }

    /// The networks of this policy's size that `net` covers: `net` itself
    /// truncated when it is narrower, its subnets when it is wider (none
    /// when there would be more than 256).
    fn networks_within(&self, net: IpNet) -> Vec<IpNet> {
        let prefix = if net.addr().is_ipv4() {
            self.v4_prefix
        } else {
            self.v6_prefix
        };
        if prefix <= net.prefix_len() {
            return IpNet::new(net.addr(), prefix)
                .map(|n| vec![n.trunc()])
                .unwrap_or_default();
        }
        if prefix - net.prefix_len() > 8 {
            return Vec::new();
        }
        net.subnets(prefix)
            .map(Iterator::collect)
            .unwrap_or_default()
    }

    fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.exempt.iter().any(|c| c.contains(&ip))
    }

    /// Length of the `n`-th ban (1-based), never beyond nolist's longest
    /// ban ([`crate::config::value::MAX_BAN`]), whatever the policy says.
    fn ban_length(&self, n: u32) -> i64 {
        let max = self.max_bantime.min(crate::enforce::MAX_TIMEOUT as i64);
        let mut len = self.bantime;
        for _ in 1..n {
            len = len.saturating_mul(i64::from(self.factor));
            if len >= max {
                return max;
            }
        }
        len.min(max)
    }
}

/// The network of `v4_prefix` or `v6_prefix` bits that `ip` belongs to
/// (an IPv4-mapped address as its IPv4 address).
pub fn network_of(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpNet {
    let ip = canonical(ip);
    let prefix = if ip.is_ipv4() { v4_prefix } else { v6_prefix };
    IpNet::new(ip, prefix).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Ban, unban, or a retrying MTA recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Close the door.
    Ban,
    /// Open it again.
    Unban,
    /// The client came back with the same envelope: a real MTA. Its
    /// network is exempt from bans for `remember` and let through by the
    /// responder. Enforcement backends ignore it.
    #[serde(rename = "retry_exempt")]
    RetryExempt,
}

/// One decision, with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Ban or unban.
    pub action: Action,
    /// The client.
    pub ip: IpAddr,
    /// When (Unix seconds).
    pub at: i64,
    /// When the ban ends (bans only).
    pub until: Option<i64>,
    /// Why, in one sentence.
    pub reason: String,
    /// Decoy hits counted.
    pub hits: u32,
    /// First hit of the window.
    pub first_hit: Option<i64>,
    /// Latest hit.
    pub last_hit: Option<i64>,
    /// Which ban of this client this is (1 for the first).
    pub offence: u32,
    /// The network a retry made exempt (retry decisions only).
    pub network: Option<IpNet>,
}

#[derive(Debug, Default)]
struct Client {
    /// The latest `maxretry` hit times, oldest first.
    recent: VecDeque<i64>,
    /// All hits since the client was last cleared.
    total: u32,
    /// Once `maxretry` hits fell within `findtime`: when the client is
    /// judged, and the first of those hits (grace counts from it; later
    /// hits neither postpone the judgement nor schedule another).
    judge: Option<Judgement>,
}

#[derive(Debug, Clone, Copy)]
struct Judgement {
    at: i64,
    first: i64,
}

impl Client {
    /// Whether the latest hits are `maxretry` within `findtime` (what earns
    /// a judgement).
    fn qualifies(&self, policy: &Policy) -> bool {
        let max = policy.maxretry as usize;
        self.recent.len() == max && self.recent[max - 1] - self.recent[0] <= policy.findtime
    }

    /// Schedules the judgement when the latest hits earn one.
    fn earn(
        &mut self,
        ip: IpAddr,
        now: i64,
        policy: &Policy,
        due: &mut BinaryHeap<Reverse<(i64, IpAddr)>>,
    ) {
        if self.judge.is_none() && self.qualifies(policy) {
            let first = self.recent[0];
            let at = (first + policy.grace).max(now);
            self.judge = Some(Judgement { at, first });
            due.push(Reverse((at, ip)));
        }
    }
}

/// The engine's state.
#[derive(Debug)]
pub struct Engine {
    policy: Policy,
    clients: HashMap<IpAddr, Client>,
    deliveries: HashMap<IpNet, i64>,
    /// Networks exempt because one of their clients retried, and when.
    retries: HashMap<IpNet, i64>,
    sightings: Sightings,
    /// The bans in force, with their offence counts and ends.
    bans: Table,
    allowed: Vec<IpNet>,
    /// Of clients not banned now: bans so far and when the latest one
    /// ended (or was to end): the count is remembered for `remember` after
    /// that, so an escalated ban longer than `remember` still escalates
    /// the next one.
    offences: HashMap<IpAddr, (u32, i64)>,
    /// Judgements, by when they are due (expiries are the ban table's).
    due: BinaryHeap<Reverse<(i64, IpAddr)>>,
    /// Judgements that came due beyond [`Engine::set_judge_limit`]'s limit.
    held: BinaryHeap<Reverse<(i64, IpAddr)>>,
    /// The latest judgement time the evidence is known complete for (a
    /// fleet's MTA watermarks); `None`: the engine's time.
    judge_by: Option<i64>,
    now: i64,
    pruned: i64,
}

/// Counts of what the engine holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sizes {
    /// Clients with recent hits.
    pub clients: usize,
    /// Networks with a remembered delivery.
    pub delivering_networks: usize,
    /// Active bans.
    pub bans: usize,
    /// Clients with an offence count.
    pub offenders: usize,
    /// Networks exempt because a client retried.
    pub retry_exempt_networks: usize,
    /// Retry fingerprints held.
    pub fingerprints: usize,
    /// New retry fingerprints not recorded because the table was full.
    pub fingerprints_dropped: u64,
}

impl Engine {
    /// An engine with no history.
    pub fn new(policy: Policy) -> Engine {
        Engine {
            policy,
            clients: HashMap::new(),
            deliveries: HashMap::new(),
            retries: HashMap::new(),
            sightings: Sightings::default(),
            bans: Table::default(),
            allowed: Vec::new(),
            offences: HashMap::new(),
            due: BinaryHeap::new(),
            held: BinaryHeap::new(),
            judge_by: None,
            now: i64::MIN,
            pruned: i64::MIN,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Restores a ban from the store (at start-up): the engine then knows
    /// to lift it on a delivery and to expire it on time.
    pub fn restore_ban(&mut self, ip: IpAddr, until: i64, hits: u32, offence: u32) {
        let ip = canonical(ip);
        let known = self.offences.remove(&ip).map_or(0, |o| o.0);
        let before = self.bans.get(ip).map_or(0, |b| b.offence);
        let offence = offence.max(known).max(before);
        self.bans.insert(
            ip,
            Ban {
                until,
                hits,
                offence,
            },
        );
    }

    /// Takes over another node's ban of `ip` unless this engine holds one
    /// already (then its own stays); says whether it did. As
    /// [`restore_ban`](Engine::restore_ban) otherwise, in one lookup of the
    /// bans (a bootstrap takes millions over).
    pub fn adopt_ban(&mut self, ip: IpAddr, until: i64, hits: u32, offence: u32) -> bool {
        let ip = canonical(ip);
        let offences = &mut self.offences;
        self.bans.insert_new(ip, || Ban {
            until,
            hits,
            offence: offence.max(offences.remove(&ip).map_or(0, |o| o.0)),
        })
    }

    /// Restores an offence count from the store (at start-up) for a client
    /// whose latest ban ends or ended at `until`; a larger count already
    /// known wins.
    pub fn restore_offence(&mut self, ip: IpAddr, offence: u32, until: i64) {
        let ip = canonical(ip);
        if let Some(known) = self.bans.offence_mut(ip) {
            *known = (*known).max(offence);
            return;
        }
        let known = self.offences.entry(ip).or_insert((0, until));
        if offence >= known.0 {
            *known = (offence, known.1.max(until));
        }
    }

    /// Which ban of `ip` the latest one is (0: never banned, or forgotten).
    fn offence(&self, ip: IpAddr) -> u32 {
        self.bans
            .get(ip)
            .map(|b| b.offence)
            .or_else(|| self.offences.get(&ip).map(|o| o.0))
            .unwrap_or(0)
    }

    /// Lifts the ban of `ip`; its offence count is remembered from its end.
    fn lift(&mut self, ip: IpAddr) -> Option<Ban> {
        let ban = self.bans.remove(ip)?;
        self.offences.insert(ip, (ban.offence, ban.until));
        Some(ban)
    }

    /// Replaces the policy (a reloaded config) at `now`. Engine bans of
    /// clients the new policy exempts are lifted; remembered deliveries and
    /// banned networks are re-keyed when the network sizes change (a
    /// delivery remembered for a network wider than the new size covers
    /// its subnets, up to 256 of them; beyond that it is forgotten and
    /// logged by the caller through the returned count).
    pub fn set_policy(&mut self, policy: Policy, now: i64, out: &mut Vec<Decision>) -> usize {
        let same_networks =
            (policy.v4_prefix, policy.v6_prefix) == (self.policy.v4_prefix, self.policy.v6_prefix);
        self.policy = policy;
        let max = self.policy.maxretry as usize;
        for c in self.clients.values_mut() {
            while c.recent.len() > max {
                c.recent.pop_front();
            }
            // A judgement earned under the old maxretry or findtime is kept
            // only if the new ones would have earned it too (a dropped
            // one's heap entry is ignored when it comes due). Hits already
            // seen earn nothing new: the policy applies to what comes next.
            if !c.qualifies(&self.policy) {
                c.judge = None;
            }
        }
        let mut forgotten = 0;
        if !same_networks {
            for map in [&mut self.deliveries, &mut self.retries] {
                for (net, at) in std::mem::take(map) {
                    let nets = self.policy.networks_within(net);
                    if nets.is_empty() {
                        forgotten += 1;
                    }
                    for n in nets {
                        let last = map.entry(n).or_insert(at);
                        *last = (*last).max(at);
                    }
                }
            }
            self.sightings.clear();
        }
        let exempt: Vec<IpAddr> = self
            .bans
            .addresses()
            .filter(|ip| self.policy.is_exempt(*ip))
            .collect();
        for ip in exempt {
            if let Some(ban) = self.lift(ip) {
                out.push(Decision {
                    action: Action::Unban,
                    ip,
                    at: now,
                    until: None,
                    reason: "exempt by the reloaded config".into(),
                    hits: ban.hits,
                    first_hit: None,
                    last_hit: None,
                    offence: ban.offence,
                    network: None,
                });
            }
        }
        self.clients.retain(|ip, _| !self.policy.is_exempt(*ip));
        forgotten
    }

    /// Replaces the dynamic allow list (networks from big senders' SPF
    /// records): clients in it are never banned from now on.
    pub fn set_allowed(&mut self, networks: Vec<IpNet>) {
        self.allowed = networks;
        let allowed = &self.allowed;
        self.clients
            .retain(|ip, _| !allowed.iter().any(|n| n.contains(ip)));
    }

    /// Forgets a ban lifted outside the engine (`nolist bans remove`): the
    /// client is judged afresh from its next hits. Returns whether it was banned.
    pub fn forget_ban(&mut self, ip: IpAddr) -> bool {
        self.lift(canonical(ip)).is_some()
    }

    /// When the engine's ban of `ip` ends, if it holds one.
    pub fn ban_until(&self, ip: IpAddr) -> Option<i64> {
        self.bans.get(canonical(ip)).map(|b| b.until)
    }

    /// Whether the engine holds `ip` banned.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.bans.contains(canonical(ip))
    }

    /// Whether a ban of `target` would shut out a client this engine never
    /// bans: `target` overlaps an exempt network (`bans.ignore`,
    /// `bans.allow`, loopback, a planned MX) or the SPF allow list. Bans
    /// from elsewhere (another fleet node) are refused then: a node's own
    /// lists are never overridden.
    pub fn protects(&self, target: &IpNet) -> bool {
        let overlaps = |n: &IpNet| n.contains(target) || target.contains(n);
        self.policy.exempt.iter().any(|c| overlaps(&c.0)) || self.allowed.iter().any(overlaps)
    }

    /// The clients the engine holds banned.
    pub fn banned(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.bans.addresses()
    }

    /// Restores the memory of a delivery from `network` at `at` (a network
    /// stored at another size is re-keyed to the policy's, as on reload).
    pub fn restore_delivery(&mut self, network: IpNet, at: i64) {
        for n in self.policy.networks_within(network) {
            let last = self.deliveries.entry(n).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// Restores a retry exemption of `network` recognised at `at` (re-keyed
    /// like a delivery).
    pub fn restore_retry(&mut self, network: IpNet, at: i64) {
        for n in self.policy.networks_within(network) {
            let last = self.retries.entry(n).or_insert(at);
            *last = (*last).max(at);
        }
    }

    /// The retry-exempt networks and when each exemption ends (the
    /// responder lets them through until then).
    pub fn retry_exempt(&self) -> impl Iterator<Item = (IpNet, i64)> + '_ {
        let remember = self.policy.remember;
        self.retries
            .iter()
            .map(move |(net, at)| (*net, at.saturating_add(remember)))
    }

    /// Whether a retry exempts `net` at `at`.
    fn retried(&self, net: &IpNet, at: i64) -> bool {
        self.retries
            .get(net)
            .is_some_and(|&r| r >= at - self.policy.remember)
    }

    /// A decoy hit from `ip` at `at` that revealed nothing for retry
    /// recognition (see [`hit_seen`](Engine::hit_seen)).
    pub fn hit(&mut self, ip: IpAddr, at: i64) {
        self.hit_seen(ip, at, Seen::Nothing, &mut Vec::new());
    }

    /// A decoy hit from `ip` at `at`, with what it revealed for retry
    /// recognition. Evidence never moves the engine's time: the caller
    /// [`advance`](Engine::advance)s it (to the wall clock in `run`, to a
    /// checked log clock in `replay`; see `crate::clock`). A hit dated
    /// after the engine's time is judged as if at that time.
    ///
    /// A retry (see [`super::retry`]) is recognised even from a banned
    /// client, and then lifts the bans in its network; a hit from a
    /// retry-exempt network is not counted.
    pub fn hit_seen(&mut self, ip: IpAddr, at: i64, seen: Seen, out: &mut Vec<Decision>) {
        let ip = canonical(ip);
        if self.policy.is_exempt(ip) || self.allowed.iter().any(|n| n.contains(&ip)) {
            return;
        }
        let net = self.policy.network(ip);
        if let Some((min, max)) = self.policy.retry
            && let Some(fp) = retry::fingerprint(net, seen)
            && let Some(previous) = self.sightings.sight(fp, at, min, max)
        {
            self.retry(ip, net, previous, at, seen, out);
        }
        if self.bans.contains(ip) || self.retried(&net, self.now.max(at)) {
            return;
        }
        let client = self.clients.entry(ip).or_default();
        client.total = client.total.saturating_add(1);
        client.recent.push_back(at);
        if client.recent.len() > self.policy.maxretry as usize {
            client.recent.pop_front();
        }
        client.earn(ip, self.now.max(at), &self.policy, &mut self.due);
    }

    /// A retry by `ip` at `at`, `previous` being the sighting before:
    /// unless its network is exempt already, the network becomes exempt
    /// (a [`Action::RetryExempt`] decision) and its bans are lifted.
    fn retry(
        &mut self,
        ip: IpAddr,
        net: IpNet,
        previous: i64,
        at: i64,
        seen: Seen,
        out: &mut Vec<Decision>,
    ) {
        if self.retried(&net, at) {
            return;
        }
        self.retries.insert(net, at);
        self.clients.remove(&ip);
        let gap = at - previous;
        let what = if seen == Seen::Network {
            "came back to the decoy"
        } else {
            "sent the same envelope again"
        };
        out.push(Decision {
            action: Action::RetryExempt,
            ip,
            at,
            until: Some(at.saturating_add(self.policy.remember)),
            reason: format!("{what} after {gap}s: a retrying MTA; network {net} exempt from bans"),
            hits: 0,
            first_hit: Some(previous),
            last_hit: Some(at),
            offence: self.offence(ip),
            network: Some(net),
        });
        self.lift_network(
            net,
            at,
            &format!("{ip} (network {net}) retried: a real MTA"),
            out,
        );
    }

    /// A delivery through a real MX from `ip` at `at`: clears the client and
    /// its network, and lifts bans in that network. Like [`hit`](Engine::hit),
    /// it does not move the engine's time.
    pub fn delivery(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>) {
        let ip = canonical(ip);
        let net = self.policy.network(ip);
        let last = self.deliveries.entry(net).or_insert(at);
        *last = (*last).max(at);
        let reason = format!("{ip} (network {net}) delivered through a real MX: a real sender");
        self.lift_network(net, at, &reason, out);
    }

    /// Lifts the bans in `net` at `at` for `reason`. Pending clients of the
    /// network are cleared when judged.
    fn lift_network(&mut self, net: IpNet, at: i64, reason: &str, out: &mut Vec<Decision>) {
        for banned in self.bans.within(net) {
            if let Some(ban) = self.lift(banned) {
                out.push(Decision {
                    action: Action::Unban,
                    ip: banned,
                    at,
                    until: None,
                    reason: reason.to_owned(),
                    hits: ban.hits,
                    first_hit: None,
                    last_hit: None,
                    offence: ban.offence,
                    network: None,
                });
            }
        }
    }

    /// Limits judgements to those due at or before `limit` (`None`: no
    /// limit but the engine's time). A fleet sets it to the time up to
    /// which every MTA node's deliveries are known (`crate::fleet::gate`):
    /// a client is judged only once a delivery that would clear it could
    /// no longer be missing. Judgements due later wait, and are decided in
    /// order once the limit passes them; expiries are not held.
    pub fn set_judge_limit(&mut self, limit: Option<i64>) {
        self.judge_by = limit;
    }

    /// Judgements due but held back by the judge limit.
    pub fn held_back(&self) -> usize {
        self.held.len()
    }

    /// Moves time forward to `now`, deciding everything due by then. Time
    /// never goes back: an earlier `now` (a host clock stepped back) keeps
    /// the engine's time, and what is due by it is still decided.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Decision>) {
        let now = now.max(self.now);
        self.now = now;
        let limit = self.judge_by.map_or(now, |l| l.min(now));
        while let Some(Reverse((when, ip))) = self.held.peek().copied() {
            if when > limit {
                break;
            }
            self.held.pop();
            self.due.push(Reverse((when, ip)));
        }
        // Judgements and expiries in time order; at the same second, the
        // judgement first.
        loop {
            let judge = self.due.peek().map(|Reverse(j)| *j);
            let end = self.bans.next_end();
            match (judge, end) {
                (Some((when, ip)), end)
                    if when <= now && end.is_none_or(|(until, _)| when <= until) =>
                {
                    self.due.pop();
                    if when > limit {
                        self.held.push(Reverse((when, ip)));
                    } else {
                        self.judge(ip, when, out);
                    }
                }
                (_, Some((until, ip))) if until <= now => self.expire(ip, out),
                _ => break,
            }
        }
        if now.saturating_sub(self.pruned) >= self.policy.findtime.max(60) {
            self.prune(now);
        }
    }

    fn judge(&mut self, ip: IpAddr, at: i64, out: &mut Vec<Decision>) {
        let Some(client) = self.clients.get(&ip) else {
            return;
        };
        // Only the judgement the client holds; others are stale entries
        // (of a client pruned, cleared or re-earned since).
        let Some(Judgement { first, .. }) = client.judge.filter(|j| j.at == at) else {
            return;
        };
        if self.bans.contains(ip) {
            // Banned meanwhile (by hand, or restored): nothing to decide;
            // hits after the ban is lifted earn a judgement afresh.
            if let Some(c) = self.clients.get_mut(&ip) {
                c.judge = None;
            }
            return;
        }
        let last = client.recent.back().copied().unwrap_or(first);
        let max = self.policy.maxretry as usize;
        let net = self.policy.network(ip);
        if self
            .deliveries
            .get(&net)
            .is_some_and(|&d| d >= at - self.policy.remember)
            || self.retried(&net, at)
        {
            self.clients.remove(&ip);
            return;
        }
        let hits = client.total;
        let offence = self.offences.remove(&ip).map_or(0, |o| o.0) + 1;
        let until = at.saturating_add(self.policy.ban_length(offence));
        self.bans.insert(
            ip,
            Ban {
                until,
                hits,
                offence,
            },
        );
        self.clients.remove(&ip);
        out.push(Decision {
            action: Action::Ban,
            ip,
            at,
            until: Some(until),
            reason: format!(
                "{hits} decoy hits ({} within {}s), no delivery from {net} through a real MX",
                max, self.policy.findtime
            ),
            hits,
            first_hit: Some(first),
            last_hit: Some(last),
            offence,
            network: None,
        });
    }

    /// The ban of `ip` ends (it is the table's next end).
    fn expire(&mut self, ip: IpAddr, out: &mut Vec<Decision>) {
        if let Some(ban) = self.lift(ip) {
            out.push(Decision {
                action: Action::Unban,
                ip,
                at: ban.until,
                until: None,
                reason: "ban expired".into(),
                hits: ban.hits,
                first_hit: None,
                last_hit: None,
                offence: ban.offence,
                network: None,
            });
        }
    }

    /// Forgets what retention no longer needs.
    fn prune(&mut self, now: i64) {
        let p = &self.policy;
        self.clients.retain(|_, c| {
            c.recent
                .back()
                .is_some_and(|&t| t >= now - p.findtime - p.grace)
        });
        self.deliveries.retain(|_, &mut t| t >= now - p.remember);
        self.retries.retain(|_, &mut t| t >= now - p.remember);
        self.offences.retain(|_, &mut (_, t)| t >= now - p.remember);
        if let Some((_, max)) = p.retry {
            self.sightings.prune(now.saturating_sub(max));
        } else {
            self.sightings.clear();
        }
        self.pruned = now;
    }

    /// Clients that met `maxretry` within `findtime` but whose grace has
    /// not run out yet: the bans to come unless a delivery clears them.
    pub fn pending(&self) -> usize {
        self.clients.values().filter(|c| c.judge.is_some()).count()
    }

    /// How much the engine holds.
    pub fn sizes(&self) -> Sizes {
        Sizes {
            clients: self.clients.len(),
            delivering_networks: self.deliveries.len(),
            bans: self.bans.len(),
            offenders: self.offences.len() + self.bans.len(),
            retry_exempt_networks: self.retries.len(),
            fingerprints: self.sightings.len(),
            fingerprints_dropped: self.sightings.dropped(),
        }
    }
}

mod table;

#[cfg(test)]
mod tests;
