//! The engine task: the only owner of the ban policy's state. Evidence,
//! the SPF allow list, new policies (SIGHUP) and the store's ban snapshots
//! come in; every step's decisions go to the store writer. The engine's
//! time is the wall clock (`crate::clock`): evidence is dated, never later
//! than now, but never moves it.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::fleet::{FleetStep, Inbound, Node};
use super::sinks::Ahead;
use super::sources::{Evidence, Origin};
use super::writer::{self, AdoptedBans, BanSnapshot, Budget, Write, Writer};
use crate::bans::{Action, Decision, Engine, Passed, Policy};
use crate::clock::unix_now;
use crate::smtp::responder::SessionEvent;
use crate::watch::Kind;

/// Other nodes' bans taken over in one step that are logged one by one.
const ADOPTED_LOGGED: usize = 16;

/// How often the engine moves its clock.
const TICK: Duration = Duration::from_secs(1);

/// How often `passed` drops the networks whose exemption ended.
const PASSED_EXPIRY: Duration = Duration::from_secs(60);

/// What the engine task listens to.
pub(crate) struct Inputs {
    /// Decoy sessions from the responder.
    pub sessions: mpsc::Receiver<SessionEvent>,
    /// Evidence from every other source.
    pub evidence: mpsc::Receiver<Evidence>,
    /// The SPF allow list, whenever it is resolved.
    pub allowed: mpsc::Receiver<Vec<IpNet>>,
    /// A new policy (SIGHUP), and who waits until the engine has it.
    pub policies: mpsc::Receiver<(Policy, oneshot::Sender<()>)>,
    /// The bans in the store, from the writer.
    pub snapshots: mpsc::Receiver<BanSnapshot>,
    /// Other fleet nodes' messages (with a fleet).
    pub fleet: Option<mpsc::Receiver<Inbound>>,
    /// How many batches the writer has committed.
    pub applied: Arc<AtomicU64>,
    /// The decisions the writer may have queued.
    pub budget: Budget,
}

/// The engine's bans whose batch the writer has not committed yet: a
/// store snapshot cannot show them, and their absence there is no lift by
/// hand. Only the unapplied tail is kept (a ban per entry while the writer
/// is behind, nothing once it caught up), not one entry per ban in force;
/// a bootstrap's bans are shared with the write that carries them.
#[derive(Debug, Default)]
struct Unapplied {
    /// (batch number, banned address), in batch order.
    bans: VecDeque<(u64, IpAddr)>,
    /// (batch number, IPv4 bans sorted by address) of bootstraps.
    adopted: VecDeque<(u64, AdoptedBans)>,
}

impl Unapplied {
    fn sent(&mut self, batch: u64, decisions: &[Decision]) {
        let bans = decisions.iter().filter(|d| d.action == Action::Ban);
        self.bans.extend(bans.map(|d| (batch, d.ip)));
    }

    fn sent_adopted(&mut self, batch: u64, bans: AdoptedBans) {
        self.adopted.push_back((batch, bans));
    }

    /// Forgets what batches up to `applied` carried.
    fn applied(&mut self, applied: u64) {
        while self.bans.front().is_some_and(|(b, _)| *b <= applied) {
            self.bans.pop_front();
        }
        while self.adopted.front().is_some_and(|(b, _)| *b <= applied) {
            self.adopted.pop_front();
        }
    }

    /// Whether a batch not committed yet bans `ip`, or `open` (a bootstrap
    /// being read, sorted) holds it.
    fn holds<'a>(&'a self, open: &'a [(u32, i64)]) -> impl Fn(IpAddr) -> bool + 'a {
        let hosts: HashSet<IpAddr> = self.bans.iter().map(|(_, ip)| *ip).collect();
        move |ip| {
            hosts.contains(&ip)
                || match ip {
                    IpAddr::V4(a) => {
                        let a = u32::from(a);
                        let has =
                            |bans: &[(u32, i64)]| bans.binary_search_by_key(&a, |b| b.0).is_ok();
                        has(open) || self.adopted.iter().any(|(_, bans)| has(bans))
                    }
                    IpAddr::V6(_) => false,
                }
        }
    }
}

/// Makes `passed` hold the engine's retry-exempt networks.
pub fn refill(passed: &Passed, engine: &Engine) {
    let p = engine.policy();
    passed.replace(p.v4_prefix, p.v6_prefix, engine.retry_exempt());
}

/// The engine's counters.
struct Counters {
    /// Decoy hits, by the `source` label of their origin.
    responder: metrics::Counter,
    log: metrics::Counter,
    firewall: metrics::Counter,
    delivered: metrics::Counter,
    bans_added: metrics::Counter,
    bans_removed: metrics::Counter,
    retries: metrics::Counter,
    fingerprints_dropped: metrics::Counter,
}

impl Counters {
    fn new() -> Counters {
        let hits =
            |source: &'static str| metrics::counter!(crate::metrics::HITS, "source" => source);
        Counters {
            responder: hits("responder"),
            log: hits("log"),
            firewall: hits("firewall"),
            delivered: metrics::counter!(crate::metrics::DELIVERIES),
            bans_added: metrics::counter!(crate::metrics::BANS_ADDED),
            bans_removed: metrics::counter!(crate::metrics::BANS_REMOVED),
            retries: metrics::counter!(crate::metrics::RETRIES),
            fingerprints_dropped: metrics::counter!(crate::metrics::RETRY_TABLE_FULL),
        }
    }

    /// Counts a decoy hit from `origin`.
    fn hit(&self, origin: &Origin) {
        match origin {
            Origin::Responder => &self.responder,
            Origin::Log { .. } => &self.log,
            Origin::Firewall => &self.firewall,
        }
        .increment(1);
    }
}

/// One step's output: what goes to the writer.
#[derive(Default)]
struct Step {
    decisions: Vec<Decision>,
    deliveries: Vec<(IpNet, i64)>,
    checkpoint: Option<(String, String)>,
    fleet: FleetStep,
}

/// The next message from the fleet, or never without one.
async fn from_fleet(rx: &mut Option<mpsc::Receiver<Inbound>>) -> Option<Inbound> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Feeds `evidence` to the engine. What it made due now (a ban with grace
/// 0) is decided now, so it is committed with the evidence's checkpoint: a
/// crash can then never keep the checkpoint and lose the ban.
fn take(
    engine: &mut Engine,
    evidence: Evidence,
    node: Option<&mut Node>,
    counters: &Counters,
    step: &mut Step,
) {
    let now = unix_now();
    if let Some(node) = node {
        node.local(&evidence, now, &mut step.fleet);
    }
    engine.advance(now, &mut step.decisions);
    for e in evidence.events {
        match e.kind {
            Kind::DecoyHit => {
                counters.hit(&evidence.origin);
                engine.hit_seen(e.ip, e.at, e.seen, &mut step.decisions);
            }
            Kind::Delivery => {
                counters.delivered.increment(1);
                engine.delivery(e.ip, e.at, &mut step.decisions);
                step.deliveries.push((engine.policy().network(e.ip), e.at));
            }
        }
    }
    engine.advance(unix_now(), &mut step.decisions);
    if let Origin::Log {
        path,
        checkpoint: Some(checkpoint),
        ..
    } = evidence.origin
    {
        step.checkpoint = Some((path, checkpoint));
    }
}

/// Runs the engine until `shutdown`. The engine's retry-exempt networks are
/// kept in `passed` for the responder and the let-through; `remember` tells
/// the writer the retention of the policy in force. A fleet node also
/// publishes and applies through `node`.
pub(crate) async fn run(
    mut engine: Engine,
    inputs: Inputs,
    writer: Writer,
    passed: Passed,
    remember: Arc<AtomicI64>,
    mut node: Option<Node>,
    shutdown: CancellationToken,
) {
    let Inputs {
        mut sessions,
        mut evidence,
        mut allowed,
        mut policies,
        mut snapshots,
        mut fleet,
        applied,
        budget,
    } = inputs;
    let counters = Counters::new();
    let mut dropped_before = engine.sizes().fingerprints_dropped;
    refill(&passed, &engine);
    let mut passed_expired = Instant::now();
    // Batches sent, and the engine bans the writer has yet to commit.
    let mut sent = 0u64;
    let mut unapplied = Unapplied::default();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut step = Step::default();
        if let Some(node) = node.as_mut() {
            node.gate(&mut engine, unix_now());
        }
        tokio::select! {
            Some(s) = sessions.recv() => {
                let e = Evidence::session(&s, unix_now());
                take(&mut engine, e, node.as_mut(), &counters, &mut step);
            }
            Some(e) = evidence.recv() => take(&mut engine, e, node.as_mut(), &counters, &mut step),
            Some(inbound) = from_fleet(&mut fleet) => {
                if let Some(node) = node.as_mut() {
                    let now = unix_now();
                    engine.advance(now, &mut step.decisions);
                    node.apply(&mut engine, inbound, now, &mut step.decisions, &mut step.deliveries, &mut step.fleet);
                    engine.advance(now, &mut step.decisions);
                }
            }
            Some((policy, applied)) = policies.recv() => {
                remember.store(policy.remember, Ordering::Relaxed);
                let forgotten = engine.set_policy(policy, unix_now(), &mut step.decisions);
                if forgotten > 0 {
                    tracing::warn!(networks = forgotten, "reload: deliveries or retry exemptions remembered for networks too wide to split into the new network size were forgotten");
                }
                refill(&passed, &engine);
                let _ = applied.send(());
            }
            _ = ticker.tick() => {
                unapplied.applied(applied.load(Ordering::Acquire));
                let now = unix_now();
                if let Some(node) = node.as_mut() {
                    node.gate(&mut engine, now);
                    node.export(now);
                }
                engine.advance(now, &mut step.decisions);
            }
            Some(networks) = allowed.recv() => engine.set_allowed(networks),
            Some(snapshot) = snapshots.recv() => {
                // A ban missing from the store although its write was applied
                // was lifted by hand: forget it, so the client is judged afresh.
                unapplied.applied(snapshot.applied);
                let open = node.as_mut().map_or(&[][..], Node::adopting);
                let pending = unapplied.holds(open);
                let lifted: Vec<IpAddr> = engine
                    .banned()
                    .filter(|ip| !snapshot.banned.contains(ip) && !pending(*ip))
                    .collect();
                for ip in lifted {
                    engine.forget_ban(ip);
                    tracing::info!(%ip, "ban lifted by hand; the engine forgets it");
                }
            }
            () = shutdown.cancelled() => break,
        }
        if let Some(node) = node.as_ref() {
            node.decided(&step.decisions, &mut step.fleet);
        }
        // Other nodes' bans taken over: recorded and enforced, not counted
        // as this engine's nor published again. A bootstrap brings them by
        // the ten thousand: one line for a chunk, not one per ban.
        if step.fleet.adopted.len() > ADOPTED_LOGGED {
            tracing::info!(
                bans = step.fleet.adopted.len(),
                "fleet bans taken over from other nodes"
            );
        } else {
            for d in &step.fleet.adopted {
                tracing::info!(ip = %d.ip, until = ?d.until, reason = %d.reason, "fleet ban");
            }
        }
        count_and_log(&step.decisions, &counters, &passed);
        step.decisions.append(&mut step.fleet.adopted);
        let dropped = engine.sizes().fingerprints_dropped;
        if dropped > dropped_before {
            if dropped_before == 0 {
                tracing::warn!(
                    cap = crate::bans::retry::MAX_FINGERPRINTS,
                    "the retry fingerprint table is full: new envelopes are not recorded until old ones expire (logged once; nolist_retry_table_full_total counts them)"
                );
            }
            counters
                .fingerprints_dropped
                .increment(dropped - dropped_before);
            dropped_before = dropped;
        }
        if passed_expired.elapsed() >= PASSED_EXPIRY {
            passed_expired = Instant::now();
            passed.expire(unix_now());
        }
        if let Some(adopt) = step.fleet.adopt.take() {
            // A bootstrap's bans: not budgeted (they are all in memory
            // already, compactly), so the engine goes on while the writer
            // stores them; enforcement took them ahead of the store.
            sent += 1;
            unapplied.sent_adopted(sent, adopt.bans.clone());
            let write = Write::Adopted {
                bootstrap: adopt.bootstrap,
                bans: adopt.bans,
            };
            let ahead = node.as_ref().and_then(Node::ahead);
            let recheck = adopt.recheck;
            let writer = writer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = writer.send(write);
                if let Some(ahead) = ahead.filter(|_| !recheck.is_empty()) {
                    let _ = ahead.send(Ahead::Recheck(recheck));
                }
            })
            .await;
        }
        if !step.decisions.is_empty()
            || !step.deliveries.is_empty()
            || step.checkpoint.is_some()
            || !step.fleet.is_empty()
        {
            sent += 1;
            unapplied.applied(applied.load(Ordering::Acquire));
            unapplied.sent(sent, &step.decisions);
            let weight = step.decisions.len() + step.fleet.write.bans.len();
            let held = writer::reserve(&budget, weight).await;
            let write = Write::Batch {
                decisions: step.decisions,
                deliveries: step.deliveries,
                checkpoint: step.checkpoint,
                fleet: step.fleet.write,
                watermark: step.fleet.watermark,
                held,
            };
            let writer = writer.clone();
            // The queue is bounded; wait off the runtime if the disk is slow.
            let _ = tokio::task::spawn_blocking(move || writer.send(write).is_ok()).await;
        }
    }
}

/// Counts and logs `decisions`; a retry exemption goes into `passed` at once.
fn count_and_log(decisions: &[Decision], counters: &Counters, passed: &Passed) {
    for d in decisions {
        match d.action {
            Action::Ban => counters.bans_added.increment(1),
            Action::Unban => counters.bans_removed.increment(1),
            Action::RetryExempt => {
                counters.retries.increment(1);
                if let (Some(net), Some(until)) = (d.network, d.until) {
                    passed.insert(net, until);
                }
            }
        }
        tracing::info!(action = ?d.action, ip = %d.ip, until = ?d.until, hits = d.hits, reason = %d.reason, "decision");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(ip: &str) -> Decision {
        Decision {
            action: Action::Ban,
            ip: ip.parse().unwrap(),
            at: 0,
            until: Some(60),
            reason: String::new(),
            hits: 3,
            first_hit: None,
            last_hit: None,
            offence: 1,
            network: None,
        }
    }

    #[test]
    fn only_bans_the_writer_has_not_committed_are_kept() {
        let mut u = Unapplied::default();
        u.sent(1, &[ban("192.0.2.1"), ban("192.0.2.2")]);
        u.sent(2, &[]);
        u.sent(3, &[ban("192.0.2.3")]);
        let mut unban = ban("192.0.2.4");
        unban.action = Action::Unban;
        u.sent(4, &[unban]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held = |u: &Unapplied, open: &[(u32, i64)]| {
            let holds = u.holds(open);
            [
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "192.0.2.4",
                "10.0.0.5",
                "10.0.0.6",
            ]
            .into_iter()
            .filter(|s| holds(ip(s)))
            .collect::<Vec<_>>()
        };
        let v4 = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
        u.sent_adopted(5, Arc::new(vec![(v4("10.0.0.5"), 60)]));
        let open = [(v4("10.0.0.6"), 60)];
        assert_eq!(
            held(&u, &open),
            [
                "192.0.2.1",
                "192.0.2.2",
                "192.0.2.3",
                "10.0.0.5",
                "10.0.0.6"
            ]
        );
        u.applied(2);
        assert_eq!(
            held(&u, &[]),
            ["192.0.2.3", "10.0.0.5"],
            "batches 1 and 2 are in the store: a snapshot shows them"
        );
        u.applied(5);
        assert!(
            u.bans.is_empty() && u.adopted.is_empty(),
            "caught up: nothing is held per ban"
        );
    }
}
