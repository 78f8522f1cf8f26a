//! Sinks: what acts on the bans once the store holds them. Today these are
//! enforcement backends ([`Enforcer`]): each runs on a thread of its own
//! that, every tick, makes the firewall hold exactly the bans in force in
//! the store (engine and manual), then, where the backend has a
//! let-through, makes it hold exactly the retry-exempt networks. A backend
//! that cannot read back reports what it applied to the store writer. The
//! backend of the config can be replaced on its thread by a `Swap`
//! (SIGHUP with other ports or decoys), so nothing else changes the
//! firewall meanwhile. In a fleet, the configured backend's thread also
//! takes a bootstrap's bans ahead of the store (`Ahead`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use self::follow::{Networks, Trail};
use super::writer::{Write, Writer};
use crate::bans::Passed;
use crate::clock::unix_now;
use crate::config::{Backend, Config, Mode};
use crate::enforce::{EnforceError, Enforcer, Report, Target, command, fail2ban, ipset, nft};
use crate::store::{Store, StoreError};

mod follow;

/// Enforcement's page cache ([`Store::cache`]): following a bootstrap, it
/// looks up each new ban among millions.
pub(crate) const CACHE: usize = 16 << 20;

/// A full reconcile at least this often, even when neither the bans in the
/// store nor the firewall seem to have changed and no timeout says so: a
/// safety net.
const RECONCILE_AT_LEAST: Duration = Duration::from_secs(30);

/// How often a waiting enforcement thread looks whether the writer changed
/// the bans (and for a backend swap): a new ban reaches the firewall this
/// much after its commit at most, plus the reconcile.
const NUDGE_POLL: Duration = Duration::from_millis(20);

/// The backend forgets what it believes and reads the firewall itself at
/// least this often: a safety net under every shortcut.
const RECHECK_FIREWALL: Duration = Duration::from_secs(300);

/// The most bans for which [`RECHECK_FIREWALL`] reads the firewall back.
const RECHECK_MOST: usize = 200_000;

/// A reconcile that read at least this many bans gives the memory freed
/// since back to the system.
const RELEASE_AFTER: usize = 10_000;

/// A safety net waits at least this many times as long as its last run
/// took: with millions of bans a full reconcile takes seconds, and the
/// nets then cost about one per cent of a core instead of most of it.
const SAFETY_NET_SHARE: u32 = 100;

/// The backend `bans.enforce` asks for (not yet checked); `None` for
/// `backend: none`. In refuse mode the nftables backend also counts the
/// refused connections to the decoy addresses; in the listening modes it
/// lets retry-exempt networks through.
pub fn backend(config: &Config) -> Option<Box<dyn Enforcer>> {
    let enforce = &config.bans.enforce;
    match enforce.backend {
        Backend::None => None,
        Backend::Nftables => {
            let mut nft = nft::Nft::new(enforce.ports.clone());
            if let Some((decoys, window)) = refuse_evidence(config) {
                nft = nft.with_evidence(decoys, window);
            }
            Some(Box::new(nft.with_let_through(let_through(config))))
        }
        Backend::Iptables => Some(Box::new(ipset::Ipset::new(enforce.ports.clone()))),
        Backend::Fail2ban => Some(Box::new(fail2ban::Fail2ban::new(&enforce.fail2ban))),
        Backend::Command => Some(Box::new(command::Commands::new(
            enforce
                .command
                .clone()
                .expect("config validation requires `command` for backend command"),
        ))),
    }
}

/// Refuse mode with `responder.refuse_evidence`: the decoy addresses whose
/// refused connections are counted, and how long a source stays counted
/// (as long as its hits can matter: `findtime` + `grace`).
pub fn refuse_evidence(config: &Config) -> Option<(Vec<SocketAddr>, Duration)> {
    (config.responder.mode == Mode::Refuse && config.responder.refuse_evidence).then(|| {
        (
            config.decoy_addrs(),
            config.bans.findtime.0 + config.bans.grace.0,
        )
    })
}

/// Whether the firewall counts refused connections as evidence: refuse
/// evidence with the nftables backend.
pub(crate) fn counts_refused(config: &Config) -> bool {
    config.bans.enforce.backend == Backend::Nftables && refuse_evidence(config).is_some()
}

/// The decoy addresses the let-through resets retry-exempt networks on:
/// the responder's listen addresses in the listening modes; none in refuse
/// mode, where the kernel resets every SYN to the decoy anyway.
pub fn let_through(config: &Config) -> Vec<SocketAddr> {
    if config.responder.mode == Mode::Refuse {
        Vec::new()
    } else {
        config.decoy_addrs()
    }
}

/// Checks `backend` (it runs and may change the firewall).
pub(crate) fn check(backend: &mut dyn Enforcer) -> Result<(), super::DaemonError> {
    backend
        .check()
        .map_err(|source| super::DaemonError::Enforce {
            backend: backend.name(),
            source,
        })
}

/// What the firewall rules of the nftables and iptables backends are made
/// from: the ports, in refuse mode the decoys and how long a source stays
/// counted, in the listening modes the decoys of the let-through. A reload
/// that changes it rewrites the rules.
#[derive(Debug, PartialEq, Eq)]
pub struct FirewallLayout {
    ports: Vec<u16>,
    refuse_evidence: Option<(Vec<SocketAddr>, Duration)>,
    let_through: Vec<SocketAddr>,
}

impl FirewallLayout {
    /// The layout of `config`.
    pub fn of(config: &Config) -> FirewallLayout {
        FirewallLayout {
            ports: config.bans.enforce.ports.clone(),
            refuse_evidence: refuse_evidence(config),
            let_through: let_through(config),
        }
    }
}

/// A backend for the enforcement thread to check and, if the check
/// passes, run from then on; `done` gets the check's result.
pub(crate) struct Swap {
    /// The new backend, same kind as the running one.
    pub backend: Box<dyn Enforcer>,
    /// Where the result of its check goes.
    pub done: tokio::sync::oneshot::Sender<Result<(), EnforceError>>,
}

/// Where [`Swap`]s go.
pub(crate) type BackendSwap = std::sync::mpsc::Sender<Swap>;

/// Bans the engine task hands the configured backend's enforcement ahead
/// of the store: a fleet bootstrap's, millions at a time, which the writer
/// stores for seconds after the engine took them over. Enforcement holds
/// off its full reconciles (which would take out what the store does not
/// hold yet) until the writer has stored the bootstrap.
#[derive(Debug)]
pub(crate) enum Ahead {
    /// Hosts and when each one's ban ends, taken over by bootstrap number
    /// `bootstrap` (each checked by the engine, `bans.allow` and `ignore`
    /// included, as any ban from the fleet).
    Bans {
        bootstrap: u64,
        hosts: Vec<(IpAddr, i64)>,
    },
    /// Hosts of such bans that the engine lifted (or banned anew) before
    /// the writer stored them: enforced as the store has them.
    Recheck(Vec<IpAddr>),
}

/// Parts of a bootstrap (each up to a few thousand hosts) waiting for
/// enforcement at most; the engine task leaves further parts to the store
/// rather than wait.
pub(crate) const AHEAD_QUEUE: usize = 128;

/// The enforcement end of [`Ahead`]: the orders, and the last bootstrap
/// the writer has stored.
pub(crate) struct AheadOfStore {
    pub orders: std::sync::mpsc::Receiver<Ahead>,
    pub stored: Arc<AtomicU64>,
}

/// What ties an enforcement thread to the rest of `run`.
pub(crate) struct Links {
    /// Moved by the writer when a commit changed the bans.
    pub nudge: Arc<AtomicU64>,
    /// Where it writes the last history entry it read (the writer keeps
    /// what it has not read: [`Store::keep_history_after`]); the
    /// configured backend's only.
    pub followed: Option<Arc<AtomicI64>>,
    /// Bans ahead of the store; the configured backend's only, in a fleet.
    pub ahead: Option<AheadOfStore>,
}

/// Starts the enforcement thread of `backend` (already checked), which
/// reconciles every `every` until `shutdown`; `links` wake it and carry
/// what it shares.
pub(crate) fn spawn_enforcer(
    mut backend: Box<dyn Enforcer>,
    store: Store,
    writer: Writer,
    passed: Passed,
    every: Duration,
    links: Links,
    shutdown: CancellationToken,
) -> Result<(BackendSwap, std::thread::JoinHandle<()>), StoreError> {
    let name = backend.name();
    if let Some(w) = backend.write_only() {
        w.restore_applied(store.enforced(name)?);
    }
    let (swap, swaps) = std::sync::mpsc::channel::<Swap>();
    let Links {
        nudge,
        followed,
        ahead,
    } = links;
    let thread = super::spawn("nolist-enforce", move || {
        let mut enforcement = Enforcement::new(backend, store, writer, passed);
        enforcement.followed = followed;
        enforcement.ahead = ahead;
        let mut nudged = nudge.load(Ordering::Acquire);
        while !shutdown.is_cancelled() {
            enforcement.guarded(|e| {
                e.take_ahead();
                let reconciled = e.reconcile_if_needed();
                e.reconcile_passes(reconciled);
            });
            // Wait for the next tick, taking swaps and bans ahead of the
            // store as they come; the writer committing a change of the
            // bans ends the wait early. A change waiting for the last
            // reconcile's rest is taken when that ends.
            let next = Instant::now() + every;
            let deadline = enforcement.rested_at().map_or(next, |t| t.min(next));
            while Instant::now() < deadline && !shutdown.is_cancelled() {
                enforcement.guarded(Enforcement::take_ahead);
                let now = nudge.load(Ordering::Acquire);
                if now != nudged {
                    nudged = now;
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match swaps.recv_timeout(left.min(NUDGE_POLL)) {
                    Ok(Swap { mut backend, done }) => {
                        let checked = backend.check();
                        if checked.is_ok() {
                            enforcement.replace(backend);
                        }
                        let _ = done.send(checked);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(left.min(NUDGE_POLL));
                    }
                }
            }
        }
    });
    Ok((swap, thread))
}

/// The enforcement thread's state.
struct Enforcement {
    backend: Box<dyn Enforcer>,
    store: Store,
    writer: Writer,
    failing: bool,
    /// What a write-only backend had applied when last saved.
    saved: Option<Vec<IpNet>>,
    /// The store's count of changes to the bans at the last reconcile.
    changes: Option<i64>,
    /// The last full reconcile, and how long it took (the store's bans
    /// read, the change computed and applied).
    last: Option<Instant>,
    took: Duration,
    /// When time alone makes the firewall and the bans disagree (an
    /// element ends before its ban, or after it), as the last reconcile
    /// found.
    recheck_at: Option<Instant>,
    /// The last time the backend was made to read the firewall itself, and
    /// how long that reconcile took.
    rechecked: Instant,
    recheck_took: Duration,
    /// Bans at the last reconcile.
    held: usize,
    /// The last history entry the firewall follows (`None`: no full
    /// reconcile yet), and the network bans it found.
    history: Option<i64>,
    /// Where `history` is shared with the writer, if anywhere.
    followed: Option<Arc<AtomicI64>>,
    /// Bans handed over ahead of the store, and the last bootstrap whose
    /// bans it applied so (full reconciles wait until that is stored).
    ahead: Option<AheadOfStore>,
    applied_ahead: u64,
    networks: Networks,
    /// The retry-exempt networks, for the let-through.
    passed: Passed,
    /// The version of `passed` the let-through holds (`None`: not yet, or
    /// the last try failed).
    passes_version: Option<u64>,
    passes_failing: bool,
    added: metrics::Counter,
    removed: metrics::Counter,
    passes_added: metrics::Counter,
    passes_removed: metrics::Counter,
    errors: metrics::Counter,
    active: metrics::Gauge,
    /// Reconciles and how long the last one took: full, followed.
    reconciles: [(metrics::Counter, metrics::Gauge); 2],
}

/// What a write-only backend applied; `None` for one that reads back.
fn applied(backend: &mut dyn Enforcer) -> Option<Vec<IpNet>> {
    backend.write_only().map(|w| w.applied())
}

impl Enforcement {
    fn new(
        mut backend: Box<dyn Enforcer>,
        store: Store,
        writer: Writer,
        passed: Passed,
    ) -> Enforcement {
        Enforcement {
            saved: applied(backend.as_mut()),
            backend,
            store,
            writer,
            failing: false,
            changes: None,
            last: None,
            took: Duration::ZERO,
            recheck_at: None,
            rechecked: Instant::now(),
            recheck_took: Duration::ZERO,
            held: 0,
            history: None,
            followed: None,
            ahead: None,
            applied_ahead: 0,
            networks: Networks::default(),
            passed,
            passes_version: None,
            passes_failing: false,
            added: metrics::counter!(crate::metrics::FIREWALL_CHANGES, "op" => "add"),
            removed: metrics::counter!(crate::metrics::FIREWALL_CHANGES, "op" => "remove"),
            passes_added: metrics::counter!(crate::metrics::PASS_CHANGES, "op" => "add"),
            passes_removed: metrics::counter!(crate::metrics::PASS_CHANGES, "op" => "remove"),
            errors: metrics::counter!(crate::metrics::ENFORCEMENT_ERRORS),
            active: metrics::gauge!(crate::metrics::BANS_ACTIVE),
            reconciles: ["full", "followed"].map(|kind| {
                (
                    metrics::counter!(crate::metrics::RECONCILES, "kind" => kind),
                    metrics::gauge!(crate::metrics::RECONCILE_SECONDS, "kind" => kind),
                )
            }),
        }
    }

    /// A new backend of the same kind: what it applied carries over.
    fn replace(&mut self, mut next: Box<dyn Enforcer>) {
        if let (Some(applied), Some(w)) = (applied(self.backend.as_mut()), next.write_only()) {
            w.restore_applied(applied);
        }
        self.backend = next;
        self.last = None;
        self.passes_version = None;
    }

    /// When the last full reconcile will have rested as long as it took
    /// (see [`reconcile_if_needed`](Enforcement::reconcile_if_needed)),
    /// if that is still to come.
    fn rested_at(&self) -> Option<Instant> {
        self.last
            .map(|t| t + self.took)
            .filter(|t| *t > Instant::now())
    }

    /// Reconciles when the bans in the store changed (whoever wrote them),
    /// the firewall changed, a timeout makes them disagree, or a safety
    /// net is due ([`RECONCILE_AT_LEAST`], [`RECHECK_FIREWALL`], both
    /// stretched by [`SAFETY_NET_SHARE`]). A change of the bans alone is
    /// followed ([`follow`](Enforcement::follow)): only the bans it names
    /// are read and applied. A full reconcile reads every ban from the
    /// store (seconds with millions), so nothing else makes one due: the
    /// decoy's traffic, committed by the writer all the time, does not.
    /// Says whether it reconciled in full (or tried to).
    fn reconcile_if_needed(&mut self) -> bool {
        let mut rechecking = false;
        // The firewall holds bans the store does not yet: a full reconcile
        // would take them out, and a backend made to forget what it holds
        // could take no more of them. Changes are followed meanwhile.
        let ahead = self.ahead_of_store();
        if !ahead
            && self.rechecked.elapsed()
                >= RECHECK_FIREWALL.max(self.recheck_took * SAFETY_NET_SHARE)
        {
            self.rechecked = Instant::now();
            // Beyond RECHECK_MOST bans the kernel's generation number alone
            // says whether anyone else touched the firewall: `nft` reads a
            // set of millions back in minutes, past its command timeout, and
            // a recheck that never finishes would stop enforcement for good.
            if self.held <= RECHECK_MOST {
                if let Some(cache) = self.backend.cache() {
                    cache.forget();
                }
                rechecking = true;
            }
            self.last = None;
        }
        let changes = self.store.bans_changes().ok();
        let every = RECONCILE_AT_LEAST.max(self.took * SAFETY_NET_SHARE);
        let full = changes.is_none()
            || self.last.is_none_or(|t| t.elapsed() >= every)
            || self.recheck_at.is_some_and(|t| Instant::now() >= t)
            || self.backend.cache().is_none_or(|c| c.changed_outside());
        if !full || ahead {
            if changes == self.changes || self.follow(changes) {
                return false;
            }
            // A change that cannot be followed waits until the time the
            // last full reconcile took has passed since it ended: with
            // millions of bans one reads them all for seconds, and a stream
            // of such changes must not keep enforcement reading back to
            // back. Milliseconds otherwise.
            if ahead || self.last.is_some_and(|t| t.elapsed() < self.took) {
                return false;
            }
        }
        let began = Instant::now();
        let now = unix_now();
        // Read before the bans: what is recorded meanwhile is followed
        // again, which changes nothing.
        let history = self.store.history_last().ok();
        let targets: Vec<Target> = match self.store.ban_targets(now) {
            Ok(bans) => {
                self.networks = Networks::of(&bans);
                bans.into_iter()
                    .map(|(net, until)| Target {
                        net,
                        remaining: u64::try_from(until - now).unwrap_or(1).max(1),
                    })
                    .collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading bans for enforcement failed");
                self.errors.increment(1);
                return true;
            }
        };
        #[allow(clippy::cast_precision_loss)] // a count of bans
        self.active.set(targets.len() as f64);
        self.held = targets.len();
        let name = self.backend.name();
        let result = crate::enforce::reconcile(self.backend.as_mut(), &targets);
        drop(targets);
        if self.held >= RELEASE_AFTER {
            // Reading every ban took a hundred bytes or so per ban, for
            // moments: give them back rather than keep the peak.
            super::zones::release_freed_memory();
        }
        let took = began.elapsed();
        let took_ms = took.as_millis();
        self.timed(0, took);
        match result {
            Ok(r) => {
                self.failing = false;
                self.changes = changes;
                self.followed_to(history);
                self.last = Some(Instant::now());
                self.took = took;
                if rechecking {
                    self.recheck_took = took;
                }
                self.recheck_at = r
                    .recheck_in
                    .map(|secs| Instant::now() + Duration::from_secs(secs));
                self.added.increment(r.added as u64);
                self.removed.increment(r.removed as u64);
                if r.added + r.removed + r.renewed > 0 || r.rebuilt {
                    tracing::info!(
                        backend = name,
                        added = r.added,
                        removed = r.removed,
                        renewed = r.renewed,
                        rebuilt = r.rebuilt,
                        took_ms,
                        "firewall reconciled"
                    );
                }
            }
            Err(e) => self.failed(&e),
        }
        let applied = applied(self.backend.as_mut());
        if applied != self.saved {
            if let Some(nets) = &applied {
                let write = Write::Enforced {
                    backend: name,
                    applied: nets.clone(),
                };
                if self.writer.send(write).is_err() {
                    tracing::warn!(
                        "saving what enforcement applied failed: the store writer is gone"
                    );
                }
            }
            self.saved = applied;
        }
        true
    }

    /// Applies the bans the store's history names since the last
    /// reconcile, page by page, and records `changes` as seen. False when
    /// it cannot (see [`follow`]), or the history names nothing (bans
    /// pruned, or written without a decision): then a full reconcile is
    /// due.
    fn follow(&mut self, changes: Option<i64>) -> bool {
        let Some(start) = self.history else {
            return false;
        };
        let mut after = start;
        let now = unix_now();
        let mut total = Report::default();
        let mut hosts_read = 0;
        let began = Instant::now();
        loop {
            let (hosts, last) = match follow::trail(&self.store, after) {
                Ok(Trail::Hosts { hosts, last }) => (hosts, last),
                // The bans changed and the history says nothing of it:
                // ended bans pruned, or a write that recorded no decision.
                Ok(Trail::Unchanged) if after == start => return false,
                Ok(Trail::Unchanged) => break,
                Ok(Trail::Broken) => return false,
                Err(e) => return self.unread(&e),
            };
            let desired = follow::desired(&hosts, &self.networks, now);
            let hosts: Vec<IpNet> = hosts.into_iter().map(|h| h.0).collect();
            match crate::enforce::reconcile_some(self.backend.as_mut(), &hosts, &desired) {
                Ok(Some(r)) => {
                    self.failing = false;
                    total.added += r.added;
                    total.removed += r.removed;
                    total.renewed += r.renewed;
                    self.recheck_at_most(r.recheck_in);
                    hosts_read += hosts.len();
                    self.followed_to(Some(last));
                    after = last;
                }
                Ok(None) => return false,
                Err(e) => {
                    self.failed(&e);
                    return true;
                }
            }
        }
        if after != start {
            self.timed(1, began.elapsed());
        }
        self.changes = changes;
        self.counted(&total, ("", hosts_read), began);
        true
    }

    /// Counts a change of some hosts' elements, `hosts` read, and logs it
    /// (as `firewall reconciled`, then `how`).
    fn counted(&mut self, r: &Report, (how, hosts): (&str, usize), began: Instant) {
        self.added.increment(r.added as u64);
        self.removed.increment(r.removed as u64);
        // Elements stand for bans here; the next full reconcile counts the
        // bans themselves again (hosts inside a network ban among them).
        self.held = (self.held + r.added).saturating_sub(r.removed);
        #[allow(clippy::cast_precision_loss)] // a count of bans
        self.active.set(self.held as f64);
        if r.added + r.removed + r.renewed > 0 {
            tracing::info!(
                backend = self.backend.name(),
                added = r.added,
                removed = r.removed,
                renewed = r.renewed,
                followed = hosts,
                took_ms = began.elapsed().as_millis(),
                "firewall reconciled{how}"
            );
        }
    }

    /// Whether the firewall holds bans handed over ahead of the store that
    /// the writer has not stored yet.
    fn ahead_of_store(&self) -> bool {
        self.ahead
            .as_ref()
            .is_some_and(|a| a.stored.load(Ordering::Acquire) < self.applied_ahead)
    }

    /// Applies the bans handed over ahead of the store ([`Ahead`]) that
    /// wait, [`follow::PAGE`] hosts at a time. Bans of a bootstrap the
    /// writer has stored meanwhile are left to the trail, which has them
    /// and whatever changed them since: checked before they are applied,
    /// and the trail is followed after, on this thread.
    fn take_ahead(&mut self) {
        let Some(ahead) = &self.ahead else {
            return;
        };
        let mut hosts = Vec::new();
        let mut bootstrap = 0;
        let mut recheck = None;
        while hosts.len() < follow::PAGE {
            match ahead.orders.try_recv() {
                Ok(Ahead::Bans {
                    bootstrap: b,
                    hosts: h,
                }) => {
                    if b > ahead.stored.load(Ordering::Acquire) {
                        bootstrap = bootstrap.max(b);
                        hosts.extend(
                            h.into_iter()
                                .map(|(ip, until)| (IpNet::from(ip), Some(until))),
                        );
                    }
                }
                // After the bans before it, which it may change.
                Ok(Ahead::Recheck(h)) => {
                    recheck = Some(h);
                    break;
                }
                Err(_) => break,
            }
        }
        if !hosts.is_empty() && self.apply_ahead(hosts, " ahead of the store") {
            self.applied_ahead = self.applied_ahead.max(bootstrap);
        }
        if let Some(h) = recheck {
            let mut hosts = Vec::with_capacity(h.len());
            for ip in h {
                let net = IpNet::from(ip);
                match self.store.ban_until(&net) {
                    Ok(until) => hosts.push((net, until)),
                    Err(e) => {
                        // Left as it is: a full reconcile, once the
                        // bootstrap is stored, puts it right.
                        self.unread(&e);
                    }
                }
            }
            self.apply_ahead(hosts, " against the store (rechecked)");
        }
    }

    /// Makes the firewall hold the bans `hosts` name, if they are in force
    /// and no network ban covers them, as [`follow`](Enforcement::follow)
    /// does; says whether it did.
    fn apply_ahead(&mut self, mut hosts: Vec<(IpNet, Option<i64>)>, how: &'static str) -> bool {
        hosts.sort_unstable_by_key(|h| h.0);
        hosts.dedup_by_key(|h| h.0);
        let began = Instant::now();
        let desired = follow::desired(&hosts, &self.networks, unix_now());
        let nets: Vec<IpNet> = hosts.into_iter().map(|h| h.0).collect();
        match crate::enforce::reconcile_some(self.backend.as_mut(), &nets, &desired) {
            Ok(Some(r)) => {
                self.failing = false;
                self.recheck_at_most(r.recheck_in);
                self.counted(&r, (how, nets.len()), began);
                true
            }
            // The backend cannot tell what it holds: the store's trail
            // brings them once the writer has stored them.
            Ok(None) => false,
            Err(e) => {
                self.failed(&e);
                false
            }
        }
    }

    /// Makes the next full reconcile due in `secs` at the latest.
    fn recheck_at_most(&mut self, secs: Option<u64>) {
        if let Some(secs) = secs {
            let at = Instant::now() + Duration::from_secs(secs);
            self.recheck_at = Some(self.recheck_at.map_or(at, |t| t.min(at)));
        }
    }

    /// Runs `f`; a panic in it (a bug) is logged and the backend made to
    /// read the firewall again, rather than ending enforcement silently.
    fn guarded(&mut self, f: impl FnOnce(&mut Enforcement)) {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        if run.is_err() {
            tracing::error!("enforcement panicked; it goes on at the next tick");
            if let Some(cache) = self.backend.cache() {
                cache.forget();
            }
        }
    }

    /// Records the last history entry the firewall follows, for the writer
    /// too.
    fn followed_to(&mut self, history: Option<i64>) {
        self.history = history;
        if let (Some(shared), Some(h)) = (&self.followed, history) {
            shared.store(h, Ordering::Release);
        }
    }

    /// Counts a reconcile of kind `kind` ([`Enforcement::reconciles`]) that
    /// took `took`.
    fn timed(&self, kind: usize, took: Duration) {
        let (count, seconds) = &self.reconciles[kind];
        count.increment(1);
        seconds.set(took.as_secs_f64());
    }

    /// Counts a failed read of the changed bans, which the next tick tries
    /// again (the change is not recorded as seen); true, as for a change
    /// followed: a full reconcile would read the same store.
    fn unread(&mut self, e: &StoreError) -> bool {
        tracing::warn!(error = %e, "reading changed bans for enforcement failed");
        self.errors.increment(1);
        true
    }

    /// Counts a failed change of the firewall; logs the first of a series.
    fn failed(&mut self, e: &EnforceError) {
        self.errors.increment(1);
        if !self.failing {
            self.failing = true;
            tracing::error!(backend = self.backend.name(), error = %e, "enforcement failed; retrying");
        }
    }

    /// Makes the let-through hold the retry-exempt networks, when they
    /// changed, the bans were just reconciled (the table may have been
    /// rebuilt), or the last try failed. Nothing for a backend without a
    /// let-through (the responder's `421` covers those clients).
    fn reconcile_passes(&mut self, reconciled: bool) {
        if self.backend.let_through().is_none() {
            return;
        }
        let (version, nets) = self.passed.snapshot();
        if !reconciled && self.passes_version == Some(version) {
            return;
        }
        let now = unix_now();
        let passes: Vec<Target> = nets
            .into_iter()
            .filter(|(_, until)| *until > now)
            .map(|(net, until)| Target {
                net,
                remaining: u64::try_from(until - now).unwrap_or(1),
            })
            .collect();
        let name = self.backend.name();
        match crate::enforce::reconcile_passes(self.backend.as_mut(), &passes) {
            Ok(r) => {
                self.passes_version = Some(version);
                self.passes_failing = false;
                self.passes_added.increment(r.added as u64);
                self.passes_removed.increment(r.removed as u64);
                if r.added + r.removed + r.renewed > 0 {
                    tracing::info!(
                        backend = name,
                        added = r.added,
                        removed = r.removed,
                        renewed = r.renewed,
                        "let-through reconciled"
                    );
                }
            }
            Err(e) => {
                self.errors.increment(1);
                self.passes_version = None;
                if !std::mem::replace(&mut self.passes_failing, true) {
                    tracing::error!(backend = name, error = %e, "let-through failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::enforce::{Cache, Change, Report};
    use crate::store::{BanRecord, Source};

    /// A backend that remembers what it holds (so, like nftables, it only
    /// reconciles when something changed) and counts its reads.
    #[derive(Clone, Default)]
    struct Counting {
        held: Arc<Mutex<BTreeSet<IpNet>>>,
        reads: Arc<Mutex<usize>>,
        forgets: Arc<Mutex<usize>>,
        /// Calls of `changed_outside`: one per tick.
        looks: Arc<Mutex<usize>>,
    }

    impl Enforcer for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        fn check(&mut self) -> Result<(), EnforceError> {
            Ok(())
        }

        fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
            *self.reads.lock().unwrap() += 1;
            Ok(Some(self.held.lock().unwrap().iter().copied().collect()))
        }

        fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
            let mut held = self.held.lock().unwrap();
            for net in &change.remove {
                held.remove(net);
            }
            held.extend(change.add.iter().map(|(net, _)| *net));
            Ok(Report::of(change))
        }

        fn cache(&mut self) -> Option<&mut dyn Cache> {
            Some(self)
        }
    }

    impl Cache for Counting {
        fn forget(&mut self) {
            *self.forgets.lock().unwrap() += 1;
        }

        fn changed_outside(&mut self) -> bool {
            *self.looks.lock().unwrap() += 1;
            false
        }

        fn holds(&self, nets: &[IpNet]) -> Option<Vec<IpNet>> {
            let held = self.held.lock().unwrap();
            Some(nets.iter().filter(|n| held.contains(n)).copied().collect())
        }
    }

    /// A store, another connection to it (the writer's, or `nolist bans`
    /// in another process), and enforcement into a [`Counting`] backend.
    fn enforcing() -> (tempfile::TempDir, Store, Counting, Enforcement) {
        let dir = tempfile::tempdir().unwrap();
        let other = Store::open(dir.path()).unwrap();
        let backend = Counting::default();
        // The writer's end is gone: nothing here saves what was applied.
        let (writer, _) = std::sync::mpsc::sync_channel(4);
        let store = Store::open(dir.path()).unwrap();
        let enforcement =
            Enforcement::new(Box::new(backend.clone()), store, writer, Passed::default());
        (dir, other, backend, enforcement)
    }

    #[test]
    fn only_a_change_of_the_bans_makes_a_reconcile_due() {
        let (_dir, mut other, backend, mut enforcement) = enforcing();
        assert!(
            enforcement.reconcile_if_needed(),
            "the first tick reconciles"
        );
        assert!(!enforcement.reconcile_if_needed(), "nothing changed");

        // The decoy's traffic: deliveries and a checkpoint, committed all
        // the time, change no ban.
        let now = unix_now();
        let network: IpNet = "198.51.100.0/24".parse().unwrap();
        other
            .commit(
                &[],
                &[(network, now)],
                Some(("/var/log/mail.log", "{}")),
                now,
            )
            .unwrap();
        assert!(!enforcement.reconcile_if_needed(), "no ban changed");

        let target: IpNet = "192.0.2.7/32".parse().unwrap();
        other.add_ban(&manual(target, now)).unwrap();
        assert!(
            !enforcement.reconcile_if_needed(),
            "a ban added is followed, not reconciled in full"
        );
        assert!(backend.held.lock().unwrap().contains(&target));
        assert!(!enforcement.reconcile_if_needed());

        other.remove_ban(&target, now, "by hand").unwrap();
        assert!(
            !enforcement.reconcile_if_needed(),
            "a ban removed, followed"
        );
        assert!(backend.held.lock().unwrap().is_empty());
        assert_eq!(
            *backend.reads.lock().unwrap(),
            1,
            "neither the firewall nor every ban was read again"
        );
    }

    fn manual(target: IpNet, now: i64) -> BanRecord {
        BanRecord {
            target,
            since: now,
            until: now + 3600,
            reason: "by hand".into(),
            hits: 0,
            offence: 1,
            source: Source::Manual,
        }
    }

    #[test]
    fn a_network_ban_is_reconciled_in_full_and_covers_the_hosts_followed_inside_it() {
        let (_dir, mut other, backend, mut enforcement) = enforcing();
        assert!(enforcement.reconcile_if_needed());
        let now = unix_now();
        let network: IpNet = "198.51.100.0/24".parse().unwrap();
        let inside: IpNet = "198.51.100.9/32".parse().unwrap();
        let held = |b: &Counting| b.held.lock().unwrap().clone();

        other.add_ban(&manual(network, now)).unwrap();
        assert!(enforcement.reconcile_if_needed(), "a network: in full");
        assert_eq!(held(&backend), BTreeSet::from([network]));

        other.add_ban(&manual(inside, now)).unwrap();
        assert!(!enforcement.reconcile_if_needed(), "a host: followed");
        assert_eq!(held(&backend), BTreeSet::from([network]), "covered");

        other.remove_ban(&network, now, "by hand").unwrap();
        assert!(enforcement.reconcile_if_needed(), "a network: in full");
        assert_eq!(held(&backend), BTreeSet::from([inside]));
        assert_eq!(*backend.reads.lock().unwrap(), 3);
    }

    #[test]
    fn a_change_the_history_does_not_explain_is_reconciled_in_full() {
        let (_dir, mut other, backend, mut enforcement) = enforcing();
        assert!(enforcement.reconcile_if_needed());
        let now = unix_now();
        let mut ended = manual("192.0.2.7/32".parse().unwrap(), now);
        ended.until = now - 10;
        other.add_ban(&ended).unwrap();
        assert!(!enforcement.reconcile_if_needed(), "followed");
        // Pruned: the bans change with no decision recorded.
        assert_eq!(other.expire(now).unwrap(), 1);
        assert!(enforcement.reconcile_if_needed(), "in full");
        assert_eq!(*backend.reads.lock().unwrap(), 2);
    }

    #[test]
    fn a_broken_trail_is_reconciled_in_full() {
        let (_dir, mut other, backend, mut enforcement) = enforcing();
        assert!(enforcement.reconcile_if_needed());
        // As if the history had been trimmed past what was followed.
        enforcement.history = Some(-5);
        let target: IpNet = "192.0.2.7/32".parse().unwrap();
        other.add_ban(&manual(target, unix_now())).unwrap();
        assert!(enforcement.reconcile_if_needed(), "in full");
        assert!(backend.held.lock().unwrap().contains(&target));
        assert_eq!(
            enforcement.history,
            Some(1),
            "followed from the store's last entry"
        );
    }

    /// Bans handed over ahead of the store are enforced at once; full
    /// reconciles wait until the writer has stored their bootstrap (changes
    /// are followed meanwhile); a part of a stored bootstrap is left to the
    /// trail; a recheck enforces what the store has.
    #[test]
    fn bans_ahead_of_the_store_are_enforced_and_kept_until_it_has_them() {
        let (_dir, mut other, backend, mut enforcement) = enforcing();
        let (orders, rx) = std::sync::mpsc::sync_channel(8);
        let stored = Arc::new(AtomicU64::new(0));
        enforcement.ahead = Some(AheadOfStore {
            orders: rx,
            stored: stored.clone(),
        });
        assert!(enforcement.reconcile_if_needed(), "the first tick");
        let now = unix_now();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held = |b: &Counting| {
            b.held
                .lock()
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let bans = |bootstrap, hosts: &[&str]| Ahead::Bans {
            bootstrap,
            hosts: hosts.iter().map(|h| (ip(h), now + 600)).collect(),
        };
        orders.send(bans(1, &["192.0.2.1", "192.0.2.2"])).unwrap();
        orders.send(bans(1, &["192.0.2.3"])).unwrap();
        enforcement.take_ahead();
        assert_eq!(
            held(&backend),
            ["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32"]
        );

        // A safety net is due, and the firewall's recheck: held off, the
        // store does not have them yet.
        enforcement.last = None;
        enforcement.rechecked = Instant::now()
            .checked_sub(RECHECK_FIREWALL + Duration::from_secs(1))
            .expect("a clock past the recheck interval");
        assert!(!enforcement.reconcile_if_needed());
        assert_eq!(held(&backend).len(), 3, "nothing taken out");
        assert_eq!(*backend.forgets.lock().unwrap(), 0, "nothing forgotten");
        // Meanwhile a change is followed; the writer stores two of three.
        other.add_ban(&manual(net("198.51.100.5/32"), now)).unwrap();
        assert!(!enforcement.reconcile_if_needed());
        assert_eq!(held(&backend).len(), 4, "followed");
        for h in ["192.0.2.1/32", "192.0.2.2/32"] {
            other.add_ban(&manual(net(h), now)).unwrap();
        }
        stored.store(1, Ordering::Release);
        assert!(enforcement.reconcile_if_needed(), "stored: in full again");
        assert_eq!(
            held(&backend),
            ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.5/32"],
            "the firewall holds what the store does"
        );

        // A part of a bootstrap stored meanwhile: the trail has it.
        orders.send(bans(1, &["192.0.2.9"])).unwrap();
        // A new bootstrap's ban, then a recheck of it (lifted before it
        // was stored) and of a ban the store holds.
        orders.send(bans(2, &["203.0.113.7"])).unwrap();
        orders
            .send(Ahead::Recheck(vec![
                ip("203.0.113.7"),
                ip("198.51.100.5"),
                ip("203.0.113.8"),
            ]))
            .unwrap();
        enforcement.take_ahead();
        assert_eq!(
            held(&backend),
            ["192.0.2.1/32", "192.0.2.2/32", "198.51.100.5/32"]
        );
        assert!(enforcement.ahead_of_store(), "bootstrap 2 is not stored");
        orders.send(bans(2, &["203.0.113.9"])).unwrap();
        enforcement.take_ahead();
        assert!(held(&backend).contains(&"203.0.113.9/32".to_string()));
    }

    #[test]
    fn an_idle_enforcement_thread_waits_for_its_tick() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Counting::default();
        let (writer, _writes) = std::sync::mpsc::sync_channel(4);
        let shutdown = CancellationToken::new();
        let (_swap, thread) = spawn_enforcer(
            Box::new(backend.clone()),
            Store::open(dir.path()).unwrap(),
            writer,
            Passed::default(),
            Duration::from_millis(100),
            Links {
                nudge: Arc::new(AtomicU64::new(0)),
                followed: None,
                ahead: None,
            },
            shutdown.clone(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        shutdown.cancel();
        thread.join().unwrap();
        // About five ticks; a loop that does not wait looks thousands of times.
        let looks = *backend.looks.lock().unwrap();
        assert!((1..=10).contains(&looks), "{looks} ticks in 500 ms");
    }

    #[test]
    fn the_periodic_firewall_recheck_reads_back_only_sets_nft_can_read_in_time() {
        let (_dir, _, backend, mut enforcement) = enforcing();
        assert!(enforcement.reconcile_if_needed());
        let long_ago = |e: &mut Enforcement| {
            e.rechecked = Instant::now()
                .checked_sub(RECHECK_FIREWALL + Duration::from_secs(1))
                .expect("a clock past the recheck interval");
        };
        for (held, forgets) in [(10, 1), (RECHECK_MOST + 1, 1)] {
            enforcement.held = held;
            long_ago(&mut enforcement);
            enforcement.reconcile_if_needed();
            assert_eq!(*backend.forgets.lock().unwrap(), forgets, "held {held}");
        }
    }
}
