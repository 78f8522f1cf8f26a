//! The store writer: the one thread of `nolist run` that writes the state
//! store. The engine's decisions, deliveries and log checkpoints are
//! committed together, one transaction per `Write::Batch`, so after a
//! crash a tailer resumes exactly after the last recorded batch; what a
//! write-only enforcement backend applied comes as `Write::Enforced`.
//! Retention (expired bans, old deliveries, retry exemptions and offence
//! counts) is pruned here too, and the bans in the store are reported back
//! to the engine, which notices bans lifted by hand.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::mpsc;

use super::fleet::Shared;
use crate::bans::{Action, Decision, Engine, Policy};
use crate::clock::unix_now;
use crate::config::Config;
use crate::store::{FleetWrite, Store, StoreError, host_of};

/// How often the writer looks for bans lifted by hand (`nolist bans
/// remove`), and reports the bans in the store to the engine when another
/// connection wrote since the last report.
const SYNC: Duration = Duration::from_secs(5);

/// How often expired bans and old deliveries are removed from the store.
const PRUNE: Duration = Duration::from_secs(600);

/// Engine batches merged into one transaction at most.
const COALESCE: u64 = 512;

/// Decisions and fleet bans in one transaction at most: half the budget
/// in flight, so that while the writer commits one half the engine task
/// fills the other (a bootstrap's pipeline never waits on both at once).
const COMMIT_WEIGHT: usize = IN_FLIGHT / 2;

/// Writes queued before a sender waits.
const QUEUE: usize = 256;

/// Decisions and fleet bans queued for the writer at most (the engine task
/// waits for the rest): a bootstrap adopts bans by the ten thousand, faster
/// than SQLite stores them, and without a bound millions would wait in the
/// queue at once (a few hundred bytes each), a peak the heap then keeps.
pub(crate) const IN_FLIGHT: usize = 40_000;

/// Once the queue is empty after commits of at least this many decisions
/// and bans, the memory freed since goes back to the system.
const RELEASE_AFTER: usize = 10_000;

/// The writer's page cache ([`Store::cache`]): with millions of bans its
/// inserts touch pages all over the tables' B-trees.
pub(crate) const CACHE: usize = 64 << 20;

/// What the engine task holds back until the writer committed: a permit
/// per decision queued (see [`IN_FLIGHT`]).
pub(crate) type Budget = Arc<tokio::sync::Semaphore>;

/// A fresh budget.
pub(crate) fn budget() -> Budget {
    Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT))
}

/// Takes the budget's share for a batch of `weight` decisions (nothing
/// for none).
pub(crate) async fn reserve(
    budget: &Budget,
    weight: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let n = u32::try_from(weight.min(IN_FLIGHT))
        .ok()
        .filter(|n| *n > 0)?;
    budget.clone().acquire_many_owned(n).await.ok()
}

/// One write for the store thread.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every write is a batch: boxing it would add an allocation to the common case to shrink the rare ones"
)]
pub(crate) enum Write {
    /// What the engine decided from one piece of evidence (or a tick).
    Batch {
        decisions: Vec<Decision>,
        deliveries: Vec<(IpNet, i64)>,
        /// `(log path, checkpoint)` of the lines that caused them.
        checkpoint: Option<(String, String)>,
        /// A fleet node's outbox messages, other nodes' bans and unbans,
        /// and the shared log's cursor after them.
        fleet: FleetWrite,
        /// A fleet MTA node's watermark once this batch is committed.
        watermark: Option<i64>,
        /// Its share of the [`Budget`], given back once it is committed.
        held: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// The engine bans of IPv4 addresses a fleet bootstrap took over
    /// (address, end; sorted by address, so the store's B-tree fills in
    /// order), all at once: the engine task does not wait for the writer
    /// to take them, and enforcement has them already (see
    /// [`super::sinks::Ahead`]). Counts as one batch.
    Adopted { bootstrap: u64, bans: AdoptedBans },
    /// The engine acknowledged this node's messages up to this one.
    Published(u64),
    /// Fleet state values (the epoch, other nodes' reports).
    FleetState(Vec<(String, String)>),
    /// The engine lost data: queue this node's bans and deliveries again.
    Republish,
    /// The outbox holds too many decoy hits: keep this many.
    TrimOutbox(u64),
    /// What a backend that cannot read the firewall back has applied.
    Enforced {
        backend: &'static str,
        applied: Vec<IpNet>,
    },
}

/// Where writes go.
pub(crate) type Writer = SyncSender<Write>;

/// A bootstrap's IPv4 engine bans: address and end, sorted by address;
/// shared by the write that stores them and the engine task, which counts
/// them as not stored until then.
pub(crate) type AdoptedBans = Arc<Vec<(u32, i64)>>;

/// The bans in the store after `applied` batches.
#[derive(Debug)]
pub(crate) struct BanSnapshot {
    pub applied: u64,
    /// The hosts with any ban in force: an engine ban on an address an
    /// operator already banned is kept as the operator's, and is not
    /// "lifted by hand".
    pub banned: HashSet<IpAddr>,
}

/// Starts the writer thread; it ends when every [`Writer`] is dropped.
/// Every [`SYNC`] after another connection committed, it reports the bans
/// in the store to `snapshots` (only another process lifts a ban by hand:
/// with millions of bans in force, reading them all is not a periodic
/// chore); `remember` is the retention of the policy in force (reloads
/// included); `nudge` moves when a commit changed the bans, `progress`
/// counts the batches committed. With `count_bans` (no enforcement, which
/// would), it keeps `nolist_bans_active` at the store's count.
pub(crate) fn spawn_writer(
    mut store: Store,
    snapshots: mpsc::Sender<BanSnapshot>,
    remember: Arc<AtomicI64>,
    fleet: Option<Arc<Shared>>,
    (nudge, progress): (Arc<AtomicU64>, Arc<AtomicU64>),
    count_bans: bool,
) -> (Writer, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Write>(QUEUE);
    let handle = super::spawn("nolist-writer", move || {
        let mut applied = 0u64;
        let mut last_sync = Instant::now();
        let mut last_prune: Option<Instant> = None;
        // The `data_version` of the last report: it moves only with
        // another connection's commits, never with this thread's.
        let mut reported = store.data_version().ok();
        let mut gauge = count_bans.then(BansGauge::default);
        // Decisions and fleet bans committed since memory was last given back.
        let mut unreleased = 0usize;
        if let Some(g) = gauge.as_mut() {
            g.update(&store);
        }
        loop {
            match rx.recv_timeout(SYNC) {
                Ok(write) => {
                    let remember = remember.load(Ordering::Relaxed);
                    // What queued meanwhile goes in as few transactions as
                    // it can (a fleet node queues one batch per decoy hit).
                    let mut merged = Merged::default();
                    let mut next = Some(write);
                    let mut drained = false;
                    while let Some(write) = next.take() {
                        match merged.absorb(write) {
                            Some(other) => {
                                applied += merged.commit(
                                    &mut store,
                                    fleet.as_deref(),
                                    &nudge,
                                    &mut unreleased,
                                );
                                applied += commit(
                                    &mut store,
                                    other,
                                    remember,
                                    (fleet.as_deref(), &nudge),
                                    &mut unreleased,
                                );
                            }
                            None if merged.batches >= COALESCE
                                || merged.weight() >= COMMIT_WEIGHT =>
                            {
                                break;
                            }
                            None => {}
                        }
                        next = rx.try_recv().ok();
                        drained = next.is_none();
                    }
                    applied += merged.commit(&mut store, fleet.as_deref(), &nudge, &mut unreleased);
                    progress.store(applied, Ordering::Release);
                    if drained && unreleased >= RELEASE_AFTER {
                        // After a burst (a bootstrap's): the heap gives
                        // back what it held for it.
                        unreleased = 0;
                        super::zones::release_freed_memory();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE) {
                last_prune = Some(Instant::now());
                prune(&mut store, remember.load(Ordering::Relaxed));
            }
            if last_sync.elapsed() >= SYNC {
                last_sync = Instant::now();
                if let Some(g) = gauge.as_mut() {
                    g.update(&store);
                }
                let version = store.data_version().ok();
                if version.is_some() && version == reported {
                    continue;
                }
                match store.ban_targets(unix_now()) {
                    Ok(bans) => {
                        let banned = bans.iter().filter_map(|(net, _)| host_of(net)).collect();
                        if snapshots.try_send(BanSnapshot { applied, banned }).is_ok() {
                            reported = version;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading bans for the engine failed"),
                }
            }
        }
    });
    (tx, handle)
}

/// `nolist_bans_active` from the store: counted after a change of the
/// bans, and at least every [`RECOUNT`] (bans end without a change until
/// pruned).
#[derive(Default)]
struct BansGauge {
    changes: Option<i64>,
    counted: Option<Instant>,
}

/// The longest `nolist_bans_active` goes uncounted without a change.
const RECOUNT: Duration = Duration::from_secs(60);

impl BansGauge {
    fn update(&mut self, store: &Store) {
        let changes = store.bans_changes().ok();
        if changes.is_some()
            && changes == self.changes
            && self.counted.is_some_and(|t| t.elapsed() < RECOUNT)
        {
            return;
        }
        match store.count_bans(unix_now()) {
            Ok(n) => {
                #[allow(clippy::cast_precision_loss)] // a count of bans
                metrics::gauge!(crate::metrics::BANS_ACTIVE).set(n as f64);
                (self.changes, self.counted) = (changes, Some(Instant::now()));
            }
            Err(e) => tracing::warn!(error = %e, "counting the bans failed"),
        }
    }
}

/// Engine batches merged into one transaction, in the order they came.
#[derive(Default)]
struct Merged {
    decisions: Vec<Decision>,
    deliveries: Vec<(IpNet, i64)>,
    checkpoints: Vec<(String, String)>,
    fleet: FleetWrite,
    watermark: Option<i64>,
    held: Vec<tokio::sync::OwnedSemaphorePermit>,
    batches: u64,
}

impl Merged {
    /// Takes `write` in if it is a batch; gives it back otherwise.
    fn absorb(&mut self, write: Write) -> Option<Write> {
        let Write::Batch {
            decisions,
            deliveries,
            checkpoint,
            fleet,
            watermark,
            held,
        } = write
        else {
            return Some(write);
        };
        self.decisions.extend(decisions);
        self.deliveries.extend(deliveries);
        self.checkpoints.extend(checkpoint);
        self.fleet.append(fleet);
        self.watermark = self.watermark.max(watermark);
        self.held.extend(held);
        self.batches += 1;
        None
    }

    /// The decisions and fleet bans it holds.
    fn weight(&self) -> usize {
        self.decisions.len() + self.fleet.bans.len()
    }

    /// Whether committing it changes the bans.
    fn changes_bans(&self) -> bool {
        self.decisions
            .iter()
            .any(|d| matches!(d.action, Action::Ban | Action::Unban))
            || !self.fleet.bans.is_empty()
            || !self.fleet.unbans.is_empty()
    }

    /// Commits what it holds (nothing when empty) and empties; returns how
    /// many batches that was, and adds its weight to `weighed`. A change of
    /// the bans moves `nudge`, which wakes enforcement at once rather than
    /// at its next tick.
    fn commit(
        &mut self,
        store: &mut Store,
        fleet: Option<&Shared>,
        nudge: &AtomicU64,
        weighed: &mut usize,
    ) -> u64 {
        let m = std::mem::take(self);
        if m.batches == 0 {
            return 0;
        }
        let now = unix_now();
        let result = match m.checkpoints.as_slice() {
            [] | [_] if m.fleet.is_empty() => {
                let checkpoint = m.checkpoints.first().map(|(p, s)| (p.as_str(), s.as_str()));
                store.commit(&m.decisions, &m.deliveries, checkpoint, now)
            }
            _ => store.commit_fleet(&m.decisions, &m.deliveries, &m.checkpoints, &m.fleet, now),
        };
        match result {
            Err(e) => tracing::error!(error = %e, "recording decisions failed"),
            Ok(()) => {
                if m.changes_bans() {
                    nudge.fetch_add(1, Ordering::Release);
                }
                if let Some(shared) = fleet {
                    if let Some(w) = m.watermark {
                        shared.watermark.fetch_max(w, Ordering::Release);
                    }
                    if !m.fleet.outbox.is_empty() || m.watermark.is_some() {
                        shared.wake.notify_one();
                    }
                }
            }
        }
        *weighed += m.weight();
        m.batches
    }
}

/// Commits one write other than a batch; returns how many batches it
/// counts as, and adds the bans it stored to `weighed`.
fn commit(
    store: &mut Store,
    write: Write,
    remember: i64,
    (fleet, nudge): (Option<&Shared>, &AtomicU64),
    weighed: &mut usize,
) -> u64 {
    let failed = |what: &str, e: StoreError| tracing::error!(error = %e, "{what} failed");
    match write {
        Write::Batch { .. } => {
            let mut merged = Merged::default();
            merged.absorb(write);
            return merged.commit(store, fleet, nudge, weighed);
        }
        Write::Adopted { bootstrap, bans } => {
            let began = Instant::now();
            let node = super::fleet::state_node();
            for part in bans.chunks(COMMIT_WEIGHT) {
                let now = unix_now();
                let decisions: Vec<Decision> = part
                    .iter()
                    .map(|&(addr, until)| {
                        let ip = IpAddr::from(std::net::Ipv4Addr::from(addr));
                        super::fleet::adopted(ip, now, until, 0, 1, &node)
                    })
                    .collect();
                match store.commit(&decisions, &[], None, now) {
                    Ok(()) => {
                        nudge.fetch_add(1, Ordering::Release);
                    }
                    Err(e) => failed("recording the bans of a fleet bootstrap", e),
                }
            }
            *weighed += bans.len();
            tracing::info!(
                bans = bans.len(),
                took_ms = began.elapsed().as_millis() as u64,
                "fleet: the bootstrap's bans are stored"
            );
            // Stored, or given up on: either way enforcement may reconcile
            // in full again, and the firewall holds what the store does.
            if let Some(shared) = fleet {
                shared.bootstrapped.fetch_max(bootstrap, Ordering::Release);
            }
            return 1;
        }
        Write::Enforced { backend, applied } => {
            if let Err(e) = store.set_enforced(backend, &applied) {
                tracing::warn!(error = %e, "saving what enforcement applied failed");
            }
        }
        Write::Published(seq) => {
            if let Err(e) = store.published(seq) {
                failed("removing published messages from the outbox", e);
            }
        }
        Write::FleetState(values) => {
            for (key, value) in values {
                if let Err(e) = store.set_fleet_state(&key, &value) {
                    failed("saving the fleet state", e);
                }
            }
        }
        Write::Republish => {
            let now = unix_now();
            let messages = super::fleet::republish(store, now, now - remember);
            let n = messages.len();
            match store.enqueue(&messages) {
                Ok(()) => tracing::info!(
                    messages = n,
                    "fleet: this node's bans and deliveries are queued again"
                ),
                Err(e) => failed("queueing this node's state again", e),
            }
            if let Some(shared) = fleet {
                shared.wake.notify_one();
            }
        }
        Write::TrimOutbox(keep) => match store.trim_outbox(keep) {
            Ok(n) if n > 0 => tracing::warn!(
                dropped = n,
                "fleet: the engine has been away long; the oldest unpublished decoy hits were dropped (deliveries and bans are kept)"
            ),
            Ok(_) => {}
            Err(e) => failed("trimming the outbox", e),
        },
    }
    0
}

/// Retention: expired bans, and deliveries, retry exemptions and offence
/// counts older than `remember`, go.
fn prune(store: &mut Store, remember: i64) {
    let now = unix_now();
    if let Err(e) = store.expire(now).and_then(|_| {
        store.prune_deliveries(now - remember)?;
        store.prune_retries(now - remember)?;
        store.prune_offences(now - remember)
    }) {
        tracing::warn!(error = %e, "pruning the store failed");
    }
}

/// Opens the store and builds an engine that knows the bans, deliveries,
/// retry exemptions and offence counts already recorded.
pub fn restore(config: &Config) -> Result<(Store, Engine), StoreError> {
    let store = Store::open(&config.state_dir)?;
    let mut engine = Engine::new(Policy::from_config(config));
    let now = unix_now();
    let since = now - engine.policy().remember;
    // Operators' bans are enforced from the store; the engine manages its own.
    for ban in store.engine_bans(now)? {
        if let Some(ip) = host_of(&ban.target) {
            engine.restore_ban(ip, ban.until, ban.hits, ban.offence);
        }
    }
    for (net, at) in store.deliveries(since)? {
        engine.restore_delivery(net, at);
    }
    for (net, at) in store.retries(since)? {
        engine.restore_retry(net, at);
    }
    for (target, offence, until) in store.offences(since)? {
        if let Some(ip) = host_of(&target) {
            engine.restore_offence(ip, offence, until);
        }
    }
    Ok((store, engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(checkpoint: &str, watermark: Option<i64>) -> Write {
        Write::Batch {
            decisions: Vec::new(),
            deliveries: vec![("192.0.2.0/24".parse().unwrap(), 100)],
            checkpoint: Some(("/log".into(), checkpoint.into())),
            fleet: FleetWrite {
                outbox: vec![(
                    "hit",
                    format!("{{\"kind\":\"hit\",\"n\":\"{checkpoint}\"}}"),
                )],
                ..FleetWrite::default()
            },
            watermark,
            held: None,
        }
    }

    #[test]
    fn queued_batches_become_one_transaction_in_order_and_the_last_checkpoint_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let shared = Shared::default();
        let mut merged = Merged::default();
        assert!(merged.absorb(batch("a", Some(50))).is_none());
        assert!(merged.absorb(batch("b", None)).is_none());
        let other = merged.absorb(Write::Published(1));
        assert!(
            matches!(other, Some(Write::Published(1))),
            "not a batch: given back"
        );
        let nudge = AtomicU64::new(0);
        let mut weighed = 0;
        assert_eq!(
            merged.commit(&mut store, Some(&shared), &nudge, &mut weighed),
            2
        );
        assert_eq!(
            merged.commit(&mut store, Some(&shared), &nudge, &mut weighed),
            0,
            "emptied"
        );
        assert_eq!(weighed, 0, "two batches of no decision and no ban");
        assert_eq!(nudge.load(Ordering::Relaxed), 0, "no ban changed");
        assert_eq!(store.checkpoint("/log").unwrap().as_deref(), Some("b"));
        let bodies: Vec<String> = store
            .outbox(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.body)
            .collect();
        assert_eq!(
            bodies,
            [
                "{\"kind\":\"hit\",\"n\":\"a\"}",
                "{\"kind\":\"hit\",\"n\":\"b\"}"
            ]
        );
        assert_eq!(shared.watermark.load(Ordering::Relaxed), 50);
    }

    /// A bootstrap's bans are stored as the engine's adopted decisions
    /// would be, count as one batch, and say the bootstrap is stored.
    #[test]
    fn a_bootstrap_is_stored_as_its_decisions_would_be() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let shared = Shared::default();
        let nudge = AtomicU64::new(0);
        let until = unix_now() + 3600;
        // More than one transaction's worth.
        let bans: Vec<(u32, i64)> = (0..COMMIT_WEIGHT as u32 + 5)
            .map(|i| (0x0a00_0000 + i, until + i64::from(i % 7)))
            .collect();
        let write = Write::Adopted {
            bootstrap: 3,
            bans: Arc::new(bans.clone()),
        };
        let mut weighed = 0;
        assert_eq!(
            commit(&mut store, write, 0, (Some(&shared), &nudge), &mut weighed),
            1
        );
        assert_eq!(weighed, bans.len());
        assert_eq!(shared.bootstrapped.load(Ordering::Relaxed), 3);
        assert_eq!(nudge.load(Ordering::Relaxed), 2, "a nudge per transaction");
        let mut stored = store.engine_bans(unix_now()).unwrap();
        stored.sort_by_key(|b| b.target);
        assert_eq!(stored.len(), bans.len());
        let node = crate::config::NodeName::parse("compacted-state").unwrap();
        let first = super::super::fleet::adopted(
            "10.0.0.0".parse().unwrap(),
            stored[0].since,
            until,
            0,
            1,
            &node,
        );
        assert_eq!(
            (stored[0].reason.as_str(), stored[0].hits, stored[0].offence),
            (first.reason.as_str(), 0, 1)
        );
        for (b, (addr, end)) in stored.iter().zip(&bans) {
            assert_eq!(
                (b.target, b.until),
                (
                    IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(*addr))),
                    *end
                )
            );
        }
    }

    #[tokio::test]
    async fn the_budget_is_held_until_the_batch_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let budget = budget();
        assert!(reserve(&budget, 0).await.is_none(), "nothing to hold");
        let big = reserve(&budget, 10 * IN_FLIGHT).await;
        assert_eq!(budget.available_permits(), 0, "capped at the whole budget");
        let mut merged = Merged::default();
        let Write::Batch {
            decisions,
            deliveries,
            checkpoint,
            fleet,
            watermark,
            ..
        } = batch("a", None)
        else {
            unreachable!()
        };
        let write = Write::Batch {
            decisions,
            deliveries,
            checkpoint,
            fleet,
            watermark,
            held: big,
        };
        assert!(merged.absorb(write).is_none());
        assert_eq!(budget.available_permits(), 0, "queued: still held");
        merged.commit(&mut store, None, &AtomicU64::new(0), &mut 0);
        assert_eq!(
            budget.available_permits(),
            IN_FLIGHT,
            "committed: given back"
        );
    }
}
