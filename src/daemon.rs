//! The ban engine at work inside `nolist run`: decoy sessions from the
//! responder and evidence from the MTA logs go in, decisions come out and
//! are recorded in the state store.
//!
//! Threads and tasks:
//! - one tailer thread per log file (blocking file I/O off the runtime),
//!   sending batches of evidence with the checkpoint that follows them;
//! - the engine task (async), the only owner of the policy state;
//! - one store thread, the only writer, committing each batch's decisions,
//!   deliveries and checkpoint in one transaction.
//!
//! The checkpoint of a batch is written with the decisions that batch
//! caused, so after a crash the tailer resumes exactly after the last
//! recorded batch. Hit counts live in memory: a restart forgets pending
//! hits, which can only delay a ban, never cause a wrong one.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bans::{Action, Decision, Engine, Envelope, Passed, Policy, Seen};
use crate::config::Config;
use crate::enforce::{Enforcer, SynCounts, Target};
use crate::smtp::responder::SessionEvent;
use crate::store::{Source, Store, StoreError, host_of};
use crate::watch::tail::{Checkpoint, Tailer};
use crate::watch::time::Tz;
use crate::watch::{DecoySpec, Kind, LineParser};

/// How often the tailers look for new lines.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often the engine moves its clock.
const TICK: Duration = Duration::from_secs(1);
/// Evidence per batch from a tailer.
const BATCH: usize = 4096;

pub use crate::clock::unix_now;

/// Evidence from one log, up to a checkpoint.
#[derive(Debug)]
pub struct LogBatch {
    /// The log file.
    pub path: String,
    /// `(at, ip, kind, envelope)` in log order; the envelope of a decoy
    /// reject line that shows one, for retry recognition.
    pub events: Vec<(i64, IpAddr, Kind, Option<Envelope>)>,
    /// Where the tailer stands after these lines (JSON).
    pub checkpoint: Option<String>,
}

/// How often the writer reports the bans in the store, so the engine
/// notices bans lifted by hand (`nolist bans remove`).
const SYNC: Duration = Duration::from_secs(5);

/// How often expired bans and old deliveries are removed from the store.
const PRUNE: Duration = Duration::from_secs(600);

/// The engine's bans as the store holds them, after `applied` writes.
struct BanSnapshot {
    applied: u64,
    engine_bans: std::collections::HashSet<IpAddr>,
}

/// One write for the store thread.
struct Write {
    decisions: Vec<Decision>,
    deliveries: Vec<(IpNet, i64)>,
    checkpoint: Option<(String, String)>,
}

/// How often enforcement reconciles the firewall with the store.
pub const ENFORCE_TICK: Duration = Duration::from_secs(2);

/// The enforcement backend of `config`, checked (it runs and may change the
/// firewall); `None` for `backend: none`.
pub fn enforcer(config: &Config) -> Result<Option<Box<dyn Enforcer>>, String> {
    let Some(mut backend) = crate::enforce::backend(config) else {
        return Ok(None);
    };
    backend
        .check()
        .map_err(|e| format!("enforcement ({}): {e}", backend.name()))?;
    Ok(Some(backend))
}

/// The parts of a reloaded config that only a restart applies (SIGHUP
/// applies everything else). Pure.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let dns_listen = |c: &Config| {
        c.dns
            .serve
            .as_ref()
            .map(|s| (s.listen.clone(), s.tcp_max_connections, s.tcp_idle_timeout))
    };
    let enforce = |c: &Config| {
        let e = &c.bans.enforce;
        (e.backend, e.command.clone(), e.fail2ban.clone())
    };
    let mut out = Vec::new();
    if old.state_dir != new.state_dir {
        out.push("state_dir");
    }
    if old.mta != new.mta {
        out.push("mta");
    }
    if enforce(old) != enforce(new) {
        out.push("bans.enforce (backend, command, fail2ban)");
    }
    if dns_listen(old) != dns_listen(new) {
        out.push("dns.serve (listen, tcp limits)");
    }
    if old.metrics != new.metrics {
        out.push("metrics");
    }
    if old.responder.threads != new.responder.threads {
        out.push("responder.threads");
    }
    out
}

/// What the firewall rules of the nftables and iptables backends are made
/// from: the ports, in refuse mode the decoys and how long a source stays
/// counted, in the listening modes the decoys of the let-through. A reload
/// that changes it rewrites the rules.
pub type FirewallLayout = (
    Vec<u16>,
    Option<(Vec<std::net::SocketAddr>, Duration)>,
    Vec<std::net::SocketAddr>,
);

/// The [`FirewallLayout`] of `config`.
pub fn firewall_layout(config: &Config) -> FirewallLayout {
    (
        config.bans.enforce.ports.clone(),
        crate::enforce::refuse_evidence(config),
        crate::enforce::let_through(config),
    )
}

/// The name under which refuse-mode evidence reaches the engine.
pub const EVIDENCE_SOURCE: &str = "firewall:refused";

/// A backend for the enforcement thread to check and, if the check
/// passes, run from then on (SIGHUP with other ports or decoys); `done`
/// gets the check's result.
pub struct Swap {
    /// The new backend, same kind as the running one.
    pub backend: Box<dyn Enforcer>,
    /// Where the result of its check goes.
    pub done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Where [`Swap`]s go.
pub type BackendSwap = std::sync::mpsc::Sender<Swap>;

/// Starts the enforcement thread: every [`ENFORCE_TICK`] it makes the
/// firewall hold exactly the bans in force in the store (engine and
/// manual), then, where the backend lets through, the let-through hold
/// exactly the retry-exempt networks of `passed`; in refuse mode it sends
/// the refused connections the firewall counted to the engine as decoy
/// hits. A [`Swap`] sent to the
/// returned [`BackendSwap`] is checked and applied on this thread, so
/// nothing else changes the firewall meanwhile.
pub fn spawn_enforcer(
    mut backend: Box<dyn Enforcer>,
    config: &Config,
    passed: Passed,
    evidence: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) -> Result<(BackendSwap, std::thread::JoinHandle<()>), StoreError> {
    let store = Store::open(&config.state_dir)?;
    if backend.applied().is_some() {
        backend.restore_applied(store.enforced(backend.name())?);
    }
    let (swap, swaps) = std::sync::mpsc::channel::<Swap>();
    let thread = std::thread::spawn(move || {
        let mut enforcement = Enforcement::new(backend, store, passed);
        while !shutdown.is_cancelled() {
            // A panic (a bug) must not end enforcement silently.
            let tick = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let reconciled = enforcement.reconcile_if_needed();
                enforcement.reconcile_passes(reconciled);
                enforcement.evidence()
            }));
            let hits = tick.unwrap_or_else(|_| {
                tracing::error!("enforcement panicked; it goes on at the next tick");
                enforcement.backend.forget();
                Vec::new()
            });
            if !hits.is_empty() {
                let batch = LogBatch {
                    path: EVIDENCE_SOURCE.into(),
                    events: hits,
                    checkpoint: None,
                };
                if evidence.blocking_send(batch).is_err() {
                    return;
                }
            }
            // Wait for the next tick, taking swaps as they come.
            let deadline = std::time::Instant::now() + ENFORCE_TICK;
            while std::time::Instant::now() < deadline && !shutdown.is_cancelled() {
                match swaps.recv_timeout(Duration::from_millis(100)) {
                    Ok(Swap { mut backend, done }) => {
                        let checked = backend
                            .check()
                            .map_err(|e| format!("enforcement ({}): {e}", backend.name()));
                        if checked.is_ok() {
                            enforcement.replace(backend);
                        }
                        let _ = done.send(checked);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }
    });
    Ok((swap, thread))
}

/// A full reconcile at least this often, even when neither the store nor
/// the firewall seems to have changed (bans that end in the store but not
/// in the firewall, a backend that cannot tell).
const RECONCILE_AT_LEAST: Duration = Duration::from_secs(30);

/// The backend forgets what it believes and reads the firewall itself at
/// least this often: a safety net under every shortcut.
const RECHECK_FIREWALL: Duration = Duration::from_secs(300);

/// The enforcement thread's state.
struct Enforcement {
    backend: Box<dyn Enforcer>,
    store: Store,
    failing: bool,
    counts: SynCounts,
    saved: Option<Vec<IpNet>>,
    /// The store's `data_version` at the last reconcile.
    version: Option<i64>,
    last: Option<std::time::Instant>,
    rechecked: std::time::Instant,
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
}

impl Enforcement {
    fn new(backend: Box<dyn Enforcer>, store: Store, passed: Passed) -> Enforcement {
        Enforcement {
            saved: backend.applied(),
            backend,
            store,
            failing: false,
            counts: SynCounts::default(),
            version: None,
            last: None,
            rechecked: std::time::Instant::now(),
            passed,
            passes_version: None,
            passes_failing: false,
            added: metrics::counter!(crate::metrics::FIREWALL_CHANGES, "op" => "add"),
            removed: metrics::counter!(crate::metrics::FIREWALL_CHANGES, "op" => "remove"),
            passes_added: metrics::counter!(crate::metrics::PASS_CHANGES, "op" => "add"),
            passes_removed: metrics::counter!(crate::metrics::PASS_CHANGES, "op" => "remove"),
            errors: metrics::counter!(crate::metrics::ENFORCEMENT_ERRORS),
            active: metrics::gauge!(crate::metrics::BANS_ACTIVE),
        }
    }

    /// A new backend of the same kind: what it applied carries over.
    fn replace(&mut self, mut next: Box<dyn Enforcer>) {
        if let Some(applied) = self.backend.applied() {
            next.restore_applied(applied);
        }
        self.backend = next;
        self.last = None;
        self.passes_version = None;
    }

    /// Reconciles when the store changed (another connection committed),
    /// the firewall changed, or [`RECONCILE_AT_LEAST`] has passed: with
    /// 100,000 bans, a reconcile reads them all from the store. Says
    /// whether it reconciled (or tried to).
    fn reconcile_if_needed(&mut self) -> bool {
        if self.rechecked.elapsed() >= RECHECK_FIREWALL {
            self.rechecked = std::time::Instant::now();
            self.backend.forget();
            self.last = None;
        }
        let version = self.store.data_version().ok();
        let due = version.is_none()
            || version != self.version
            || self.last.is_none_or(|t| t.elapsed() >= RECONCILE_AT_LEAST)
            || self.backend.changed_outside();
        if !due {
            return false;
        }
        let now = unix_now();
        let targets: Vec<Target> = match self.store.ban_targets(now) {
            Ok(bans) => bans
                .into_iter()
                .map(|(net, until)| Target {
                    net,
                    remaining: u64::try_from(until - now).unwrap_or(1).max(1),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading bans for enforcement failed");
                self.errors.increment(1);
                return true;
            }
        };
        #[allow(clippy::cast_precision_loss)] // a count of bans
        self.active.set(targets.len() as f64);
        let name = self.backend.name();
        let began = std::time::Instant::now();
        let result = crate::enforce::reconcile(self.backend.as_mut(), &targets);
        let took_ms = began.elapsed().as_millis();
        match result {
            Ok(r) => {
                self.failing = false;
                self.version = version;
                self.last = Some(std::time::Instant::now());
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
            Err(e) => {
                self.errors.increment(1);
                if !self.failing {
                    self.failing = true;
                    tracing::error!(backend = name, error = %e, "enforcement failed; retrying");
                }
            }
        }
        let applied = self.backend.applied();
        if applied != self.saved {
            if let Err(e) = self
                .store
                .set_enforced(name, applied.as_deref().unwrap_or_default())
            {
                tracing::warn!(error = %e, "saving what enforcement applied failed");
            }
            self.saved = applied;
        }
        true
    }

    /// Makes the let-through hold the retry-exempt networks, when they
    /// changed, the bans were just reconciled (the table may have been
    /// rebuilt), or the last try failed. Nothing for a backend that does
    /// not let through (the responder's `421` covers those clients).
    fn reconcile_passes(&mut self, reconciled: bool) {
        if !self.backend.lets_through() {
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

    /// New decoy hits from the firewall's counters (refuse mode). They
    /// carry no envelope, and a forged SYN makes one: never a retry.
    fn evidence(&mut self) -> Vec<(i64, IpAddr, Kind, Option<Envelope>)> {
        match self.backend.evidence() {
            Ok(reading) => {
                let now = unix_now();
                self.counts
                    .update(&reading)
                    .into_iter()
                    .flat_map(|(ip, n)| (0..n).map(move |_| (now, ip, Kind::DecoyHit, None)))
                    .collect()
            }
            Err(e) => {
                self.errors.increment(1);
                tracing::warn!(error = %e, "reading refuse-mode evidence failed");
                Vec::new()
            }
        }
    }
}

/// Resolves the SPF records of `bans.allow.spf` now and every
/// `bans.allow.refresh`, sending the allowed networks to the engine. A
/// temporary DNS failure never shrinks the list: until a domain resolves
/// again, the networks it had stay allowed (allowing more only means
/// banning less).
pub async fn refresh_spf(
    config: Config,
    tx: mpsc::Sender<Vec<IpNet>>,
    shutdown: CancellationToken,
) {
    use crate::bans::spf::{Limits, expand};
    use crate::resolver::spf::DnsLookup;
    let domains: Vec<String> = config
        .bans
        .allow
        .spf
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    if domains.is_empty() {
        return;
    }
    let every = config.bans.allow.refresh.0.max(Duration::from_secs(60));
    let mut previous: std::collections::HashMap<String, Vec<IpNet>> =
        std::collections::HashMap::new();
    loop {
        match DnsLookup::new(&[], Duration::from_secs(5)) {
            Ok(lookup) => {
                for domain in &domains {
                    let result =
                        expand(std::slice::from_ref(domain), &lookup, Limits::default()).await;
                    let temporary = result.temporary_failure();
                    for (_, _, problems) in &result.per_domain {
                        for p in problems {
                            tracing::warn!(domain = %domain, "SPF allow list: {p}");
                        }
                    }
                    if !temporary || !previous.contains_key(domain) {
                        tracing::info!(domain = %domain, networks = result.networks.len(), "SPF allow list resolved");
                        previous.insert(domain.clone(), result.networks);
                    }
                }
                let mut all: Vec<IpNet> = previous.values().flatten().copied().collect();
                all = IpNet::aggregate(&all);
                if tx.send(all).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "SPF allow list: no resolver"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Opens the store and builds an engine that knows the bans, deliveries
/// and retry exemptions already recorded.
pub fn restore(config: &Config) -> Result<(Store, Engine), StoreError> {
    let store = Store::open(&config.state_dir)?;
    let mut engine = Engine::new(Policy::from_config(config));
    let now = unix_now();
    // Operators' bans are enforced from the store; the engine manages its own.
    for ban in store
        .bans(now)?
        .into_iter()
        .filter(|b| b.source == Source::Engine)
    {
        if let Some(ip) = host_of(&ban.target) {
            engine.restore_ban(ip, ban.until, ban.hits, ban.offence);
        }
    }
    for (net, at) in store.deliveries(now - engine.policy().remember)? {
        engine.restore_delivery(net, at);
    }
    for (net, at) in store.retries(now - engine.policy().remember)? {
        engine.restore_retry(net, at);
    }
    for (target, offence, until) in store.offences(now - engine.policy().remember)? {
        if let Some(ip) = host_of(&target) {
            engine.restore_offence(ip, offence, until);
        }
    }
    Ok((store, engine))
}

/// Starts one tailer thread per log in `config.mta.logs`, resuming from the
/// store's checkpoints. Threads stop when `shutdown` is cancelled.
pub fn spawn_tailers(
    config: &Config,
    store: &Store,
    tx: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) -> Result<Vec<std::thread::JoinHandle<()>>, StoreError> {
    let decoy = DecoySpec {
        syslog_name: config.mta.decoy_syslog_name.clone(),
        reply: config.mta.decoy_reply.clone(),
    };
    let mut handles = Vec::new();
    for path in &config.mta.logs {
        let key = path.display().to_string();
        let checkpoint: Option<Checkpoint> = store
            .checkpoint(&key)?
            .and_then(|json| match serde_json::from_str(&json) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(log = %key, error = %e, "ignoring an unreadable checkpoint; reading the log from its start");
                    None
                }
            });
        let zone = Tz::for_logs(config.mta.timezone.as_ref().map(|z| z.0.as_str()));
        let parser = LineParser::with_zone(config.mta.format, &decoy, unix_now(), Box::new(zone));
        let tailer = Tailer::resume(path.clone(), checkpoint);
        let tx = tx.clone();
        let shutdown = shutdown.clone();
        handles.push(std::thread::spawn(move || {
            tail_loop(key, tailer, parser, tx, shutdown)
        }));
    }
    Ok(handles)
}

fn tail_loop(
    key: String,
    mut tailer: Tailer,
    mut parser: LineParser,
    tx: mpsc::Sender<LogBatch>,
    shutdown: CancellationToken,
) {
    let mut saved: Option<String> = None;
    let lines = metrics::counter!(crate::metrics::LOG_LINES, "log" => key.clone());
    let errors = metrics::counter!(crate::metrics::LOG_PARSE_ERRORS, "log" => key.clone());
    let future = metrics::counter!(crate::metrics::LOG_FUTURE_LINES, "log" => key.clone());
    let mut unstamped = 0;
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let mut events = Vec::new();
        let now = unix_now();
        parser.set_reference(now);
        let result = tailer.poll(&mut |line: &[u8]| {
            if let Some(e) = parser.parse(line) {
                // A stamp from the future counts as now (crate::clock).
                let dated = crate::clock::evidence_time(e.at, now);
                if dated.suspicious {
                    future.increment(1);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(log = %key, stamp = %crate::watch::time::rfc3339(e.at), "a log line is stamped in the future; it counts as now (logged once per log; nolist_log_future_lines_total counts them)");
                    }
                }
                events.push((dated.at, e.ip, e.kind, e.envelope));
            }
        });
        match result {
            Ok(stats) => {
                lines.increment(stats.lines);
                errors.increment(stats.overlong + parser.unstamped() - unstamped);
                unstamped = parser.unstamped();
            }
            Err(e) => tracing::warn!(log = %key, error = %e, "reading the MTA log failed"),
        }
        // Only a moved checkpoint is written: an idle log leaves the store idle.
        let checkpoint = tailer
            .checkpoint()
            .and_then(|c| serde_json::to_string(&c).ok())
            .filter(|c| saved.as_ref() != Some(c));
        if checkpoint.is_some() {
            saved.clone_from(&checkpoint);
        }
        if !events.is_empty() || checkpoint.is_some() {
            // Split big catch-ups; only the last part carries the checkpoint.
            while events.len() > BATCH {
                let rest = events.split_off(BATCH);
                let head = std::mem::replace(&mut events, rest);
                let batch = LogBatch {
                    path: key.clone(),
                    events: head,
                    checkpoint: None,
                };
                if tx.blocking_send(batch).is_err() {
                    return;
                }
            }
            let batch = LogBatch {
                path: key.clone(),
                events,
                checkpoint,
            };
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts the store writer thread; returns its queue. Every [`SYNC`] it
/// reports the engine-made bans in the store to `snapshots`.
fn spawn_writer(
    mut store: Store,
    snapshots: mpsc::Sender<BanSnapshot>,
    remember: Arc<std::sync::atomic::AtomicI64>,
) -> (
    std::sync::mpsc::SyncSender<Write>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Write>(256);
    let handle = std::thread::spawn(move || {
        let mut applied = 0u64;
        let mut last_sync = std::time::Instant::now();
        let mut last_prune: Option<std::time::Instant> = None;
        loop {
            match rx.recv_timeout(SYNC) {
                Ok(w) => {
                    let checkpoint = w.checkpoint.as_ref().map(|(p, s)| (p.as_str(), s.as_str()));
                    if let Err(e) =
                        store.commit(&w.decisions, &w.deliveries, checkpoint, unix_now())
                    {
                        tracing::error!(error = %e, "recording decisions failed");
                    }
                    applied += 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            // Retention: expired bans, and deliveries, retry exemptions and
            // offence counts past `remember`, go.
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE) {
                last_prune = Some(std::time::Instant::now());
                let now = unix_now();
                if let Err(e) = store.expire(now).and_then(|_| {
                    let remember = remember.load(std::sync::atomic::Ordering::Relaxed);
                    store.prune_deliveries(now - remember)?;
                    store.prune_retries(now - remember)?;
                    store.prune_offences(now - remember)
                }) {
                    tracing::warn!(error = %e, "pruning the store failed");
                }
            }
            if last_sync.elapsed() >= SYNC {
                last_sync = std::time::Instant::now();
                match store.bans(unix_now()) {
                    Ok(bans) => {
                        // Any ban on the address counts: an engine ban on an
                        // address an operator already banned is kept as the
                        // operator's, and is not "lifted by hand".
                        let engine_bans = bans.iter().filter_map(|b| host_of(&b.target)).collect();
                        let _ = snapshots.try_send(BanSnapshot {
                            applied,
                            engine_bans,
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "reading bans for the engine failed"),
                }
            }
        }
    });
    (tx, handle)
}

/// What the engine task listens to.
pub struct EngineInputs {
    /// Decoy sessions from the responder.
    pub sessions: mpsc::Receiver<SessionEvent>,
    /// Evidence from the MTA logs and the firewall.
    pub logs: mpsc::Receiver<LogBatch>,
    /// The SPF allow list, whenever it is resolved.
    pub allowed: mpsc::Receiver<Vec<IpNet>>,
    /// A new policy (SIGHUP).
    pub policies: mpsc::Receiver<Policy>,
}

/// What a responder session reveals for retry recognition: its envelope
/// when it got as far as a RCPT after a MAIL, its network alone when it
/// was a `greet-*` banner, else nothing.
pub fn session_seen(s: &SessionEvent) -> Seen {
    match (&s.mail_from, &s.first_rcpt, s.end) {
        (Some(from), Some(to), _) => Seen::Envelope(Envelope::of(from.as_bytes(), to.as_bytes())),
        (_, _, crate::smtp::dialogue::End::Greeted) => Seen::Network,
        _ => Seen::Nothing,
    }
}

/// Makes `passed` hold the engine's retry-exempt networks.
pub fn refill(passed: &Passed, engine: &Engine) {
    let p = engine.policy();
    passed.replace(p.v4_prefix, p.v6_prefix, engine.retry_exempt());
}

/// How often `passed` drops the networks whose exemption ended.
const PASSED_EXPIRY: Duration = Duration::from_secs(60);

/// Runs the engine until `shutdown`, then lets the writer finish. The
/// engine's retry-exempt networks are kept in `passed` for the responder.
pub async fn run_engine(
    mut engine: Engine,
    store: Store,
    inputs: EngineInputs,
    passed: Passed,
    shutdown: CancellationToken,
) {
    let EngineInputs {
        mut sessions,
        mut logs,
        mut allowed,
        mut policies,
    } = inputs;
    let hits_responder = metrics::counter!(crate::metrics::HITS, "source" => "responder");
    let hits_log = metrics::counter!(crate::metrics::HITS, "source" => "log");
    let hits_firewall = metrics::counter!(crate::metrics::HITS, "source" => "firewall");
    let delivered = metrics::counter!(crate::metrics::DELIVERIES);
    let bans_added = metrics::counter!(crate::metrics::BANS_ADDED);
    let bans_removed = metrics::counter!(crate::metrics::BANS_REMOVED);
    let retries = metrics::counter!(crate::metrics::RETRIES);
    let fingerprints_dropped = metrics::counter!(crate::metrics::RETRY_TABLE_FULL);
    let mut dropped_before = engine.sizes().fingerprints_dropped;
    refill(&passed, &engine);
    let mut passed_expired = std::time::Instant::now();
    let (snap_tx, mut snapshots) = mpsc::channel(4);
    // The writer prunes deliveries by the policy in force, reloads included.
    let remember = Arc::new(std::sync::atomic::AtomicI64::new(engine.policy().remember));
    let (writer, writer_thread) = spawn_writer(store, snap_tx, remember.clone());
    let writer = Arc::new(writer);
    // Writes sent, and the write that carried each engine ban.
    let mut sent = 0u64;
    let mut ban_write: std::collections::HashMap<IpAddr, u64> = std::collections::HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let mut decisions = Vec::new();
        let mut deliveries = Vec::new();
        let mut checkpoint = None;
        tokio::select! {
            Some(s) = sessions.recv() => {
                let now = unix_now();
                let at = s.started.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                hits_responder.increment(1);
                engine.advance(now, &mut decisions);
                engine.hit_seen(s.client.ip(), at.min(now), session_seen(&s), &mut decisions);
            }
            Some(batch) = logs.recv() => {
                // The engine's time is the wall clock; evidence is dated
                // (never later than now) but never moves it.
                engine.advance(unix_now(), &mut decisions);
                let hits = if batch.path == EVIDENCE_SOURCE { &hits_firewall } else { &hits_log };
                for (at, ip, kind, envelope) in batch.events {
                    match kind {
                        Kind::DecoyHit => {
                            hits.increment(1);
                            let seen = envelope.map_or(Seen::Nothing, Seen::Envelope);
                            engine.hit_seen(ip, at, seen, &mut decisions);
                        }
                        Kind::Delivery => {
                            delivered.increment(1);
                            engine.delivery(ip, at, &mut decisions);
                            deliveries.push((engine.policy().network(ip), at));
                        }
                    }
                }
                // What these lines made due now (a ban with grace 0) is
                // decided now, so it is committed with their checkpoint: a
                // crash can then never keep the checkpoint and lose the ban.
                engine.advance(unix_now(), &mut decisions);
                checkpoint = batch.checkpoint.map(|c| (batch.path, c));
            }
            Some(policy) = policies.recv() => {
                remember.store(policy.remember, std::sync::atomic::Ordering::Relaxed);
                let forgotten = engine.set_policy(policy, unix_now(), &mut decisions);
                if forgotten > 0 {
                    tracing::warn!(networks = forgotten, "reload: deliveries or retry exemptions remembered for networks too wide to split into the new network size were forgotten");
                }
                refill(&passed, &engine);
            }
            _ = ticker.tick() => engine.advance(unix_now(), &mut decisions),
            Some(networks) = allowed.recv() => engine.set_allowed(networks),
            Some(snapshot) = snapshots.recv() => {
                // A ban missing from the store although its write was applied
                // was lifted by hand: forget it, so the client is judged afresh.
                let lifted: Vec<IpAddr> = engine
                    .banned()
                    .filter(|ip| !snapshot.engine_bans.contains(ip))
                    .filter(|ip| ban_write.get(ip).is_none_or(|&w| w <= snapshot.applied))
                    .collect();
                for ip in lifted {
                    engine.forget_ban(ip);
                    ban_write.remove(&ip);
                    tracing::info!(%ip, "ban lifted by hand; the engine forgets it");
                }
            }
            () = shutdown.cancelled() => break,
        }
        for d in &decisions {
            match d.action {
                Action::Ban => bans_added.increment(1),
                Action::Unban => bans_removed.increment(1),
                Action::RetryExempt => {
                    retries.increment(1);
                    if let (Some(net), Some(until)) = (d.network, d.until) {
                        passed.insert(net, until);
                    }
                }
            }
            tracing::info!(action = ?d.action, ip = %d.ip, until = ?d.until, hits = d.hits, reason = %d.reason, "decision");
        }
        let dropped = engine.sizes().fingerprints_dropped;
        if dropped > dropped_before {
            if dropped_before == 0 {
                tracing::warn!(
                    cap = crate::bans::retry::MAX_FINGERPRINTS,
                    "the retry fingerprint table is full: new envelopes are not recorded until old ones expire (logged once; nolist_retry_table_full_total counts them)"
                );
            }
            fingerprints_dropped.increment(dropped - dropped_before);
            dropped_before = dropped;
        }
        if passed_expired.elapsed() >= PASSED_EXPIRY {
            passed_expired = std::time::Instant::now();
            passed.expire(unix_now());
        }
        if !decisions.is_empty() || !deliveries.is_empty() || checkpoint.is_some() {
            sent += 1;
            for d in &decisions {
                match d.action {
                    Action::Ban => ban_write.insert(d.ip, sent),
                    Action::Unban => ban_write.remove(&d.ip),
                    Action::RetryExempt => None,
                };
            }
            let write = Write {
                decisions,
                deliveries,
                checkpoint,
            };
            let writer = writer.clone();
            // The queue is bounded; wait off the runtime if the disk is slow.
            let _ = tokio::task::spawn_blocking(move || writer.send(write)).await;
        }
    }
    drop(writer);
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
}

#[cfg(test)]
mod tests;
