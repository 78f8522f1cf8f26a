//! Start, reload and shutdown of `nolist run`. [`Daemon::start`] binds
//! first (so a bad address fails before any state is touched), then
//! restores the engine from the store and starts the sources, the writer,
//! the sinks and the engine. [`Running::reload`] prepares everything a new
//! config needs (sockets bound, zones built, the enforcement backend
//! checked) and changes nothing unless all of that worked; what only a
//! restart applies is logged ([`needs_restart`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sinks::{self, BackendSwap, FirewallLayout, Swap};
use super::sources::{self, Evidence};
use super::{DaemonError, engine, fleet, spf, writer, zones};
use crate::bans::{Passed, Policy};
use crate::config::{Backend, Config, Mode};
use crate::dns::Authority;
use crate::dnsbl::{List, feed};
use crate::enforce::Enforcer;
use crate::plan::Plan;
use crate::smtp::responder::{self, EventSink, Responder, Settings};
use crate::smtp::session::Limits;
use crate::store::Store;

/// How long open sessions and DNS connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Undelivered session events held for the ban engine.
const EVENT_BACKLOG: usize = 65_536;
/// Evidence messages queued for the engine before a source waits.
const EVIDENCE_BACKLOG: usize = 64;
/// Batches of other fleet nodes' messages queued for the engine.
const FLEET_BACKLOG: usize = 16;
/// How long a reload waits for the enforcement thread to check a backend.
const SWAP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the daemon's threads look around.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Enforcement reconciles, and the firewall's refused connections are
    /// read, this often.
    pub enforce: Duration,
    /// The MTA log tailers look for new lines this often.
    pub poll: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            enforce: Duration::from_secs(2),
            poll: Duration::from_millis(500),
        }
    }
}

/// A part of the config that only a restart applies (SIGHUP applies
/// everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// `state_dir`.
    StateDir,
    /// `mta`.
    Mta,
    /// `bans.enforce` (backend, command, fail2ban).
    Enforce,
    /// `dns.serve` (listen, tcp limits).
    DnsListen,
    /// `metrics`.
    Metrics,
    /// `responder.threads`.
    ResponderThreads,
    /// `fleet`.
    Fleet,
}

impl std::fmt::Display for Restart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Restart::StateDir => "state_dir",
            Restart::Mta => "mta",
            Restart::Enforce => "bans.enforce (backend, command, fail2ban)",
            Restart::DnsListen => "dns.serve (listen, tcp limits)",
            Restart::Metrics => "metrics",
            Restart::ResponderThreads => "responder.threads",
            Restart::Fleet => "fleet",
        })
    }
}

/// What changed from `old` to `new` that only a restart applies (pure).
pub fn needs_restart(old: &Config, new: &Config) -> Vec<Restart> {
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
    let changes = [
        (old.state_dir != new.state_dir, Restart::StateDir),
        (old.mta != new.mta, Restart::Mta),
        (enforce(old) != enforce(new), Restart::Enforce),
        (dns_listen(old) != dns_listen(new), Restart::DnsListen),
        (old.metrics != new.metrics, Restart::Metrics),
        (old.fleet != new.fleet, Restart::Fleet),
        (
            old.responder.threads != new.responder.threads,
            Restart::ResponderThreads,
        ),
    ];
    changes
        .into_iter()
        .filter_map(|(changed, what)| changed.then_some(what))
        .collect()
}

/// The responder's settings from the config.
fn settings(config: &Config) -> Settings {
    let r = &config.responder;
    let hostname = r
        .hostname
        .as_ref()
        .or_else(|| config.domains.iter().find_map(|d| d.decoy.target.host()))
        .map_or_else(|| "localhost".to_owned(), |n| n.as_str().to_owned());
    Settings {
        mode: r.mode,
        hostname: hostname.into(),
        reply: r.reply.0.as_str().into(),
        limits: Limits {
            idle: r.idle_timeout.0,
            session: r.session_timeout.0,
            max_line: r.max_line.get(),
            max_commands: r.max_commands.get(),
            tarpit: r.tarpit.0,
        },
        max_connections: r.max_connections.get(),
        max_per_ip: r.max_per_ip.get(),
        v6_prefix: config.bans.networks.ipv6.0,
    }
}

/// Where the responder listens: nowhere in refuse mode.
fn responder_addrs(config: &Config) -> Vec<SocketAddr> {
    if config.responder.mode == Mode::Refuse {
        Vec::new()
    } else {
        config.decoy_addrs()
    }
}

/// Lets the process hold as many sockets as the hard limit allows: a decoy
/// with thousands of idle bots must not run out of file descriptors.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Keeps glibc's malloc to one arena per core (at least two). By default
/// each thread that allocates may get an arena of its own (up to eight per
/// core), and each keeps the memory its thread freed: a fleet bootstrap
/// passes millions of bans through the consumer, the engine, the writer
/// and enforcement, and every one of their arenas then held its own peak
/// (measured with 200,000 bans on two cores: 490 bytes of RSS per ban,
/// against 140 with two arenas). No more threads than cores run at once,
/// so one arena per core keeps contention where it was. A no-op with other
/// C libraries; `MALLOC_ARENA_MAX` in the environment wins.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // SAFETY: mallopt only sets a parameter of glibc's own allocator,
        // before the runtime's threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(i32::MAX));
        }
    }
}

/// Refuse mode binds nothing, so it checks another way that the decoy
/// addresses exist here: one that does not is reset (and counted) by
/// whichever host has it, not by this one. A warning, not an error: the
/// decoy may live on another host while this one follows the logs.
fn warn_unless_local(addrs: &[SocketAddr]) {
    for addr in addrs {
        if let Err(e) = std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)) {
            tracing::warn!(
                "refuse mode: the decoy address {} is not on this host ({e}); this host neither resets nor counts connections to it",
                addr.ip()
            );
        }
    }
}

/// Says where refuse mode's decoy hits come from.
fn log_refuse_mode(config: &Config) {
    warn_unless_local(&config.decoy_addrs());
    tracing::info!(
        "responder mode refuse: nothing listens on the decoy addresses; every connection is answered with a TCP reset"
    );
    match (
        config.responder.refuse_evidence,
        config.bans.enforce.backend,
    ) {
        (true, Backend::Nftables) => {
            tracing::info!(decoys = ?config.decoy_addrs(), "refuse mode: nftables counts the refused connections as decoy hits");
        }
        (true, _) => tracing::warn!(
            "responder.refuse_evidence needs bans.enforce.backend nftables; decoy hits come from the MTA logs alone"
        ),
        (false, _) => tracing::info!(
            "refuse mode: decoy hits come from the MTA logs (responder.refuse_evidence is off)"
        ),
    }
}

/// Installs the metrics recorder and serves `/metrics` when configured.
/// Process-wide: call it once, before [`Daemon::start`].
pub async fn serve_metrics(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(m) = &config.metrics else {
        return Ok(None);
    };
    let handle = crate::metrics::install()?;
    let listener = tokio::net::TcpListener::bind(m.listen)
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("binding the metrics listener {}", m.listen),
            source,
        })?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("listening on metrics {addr}");
    }
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener,
        handle,
        shutdown.clone(),
    ))))
}

/// DNS, when the config asks for it: the same zones `nolist serve` serves,
/// and the blocklist's listings (filled by a feed started later).
async fn start_dns(
    config: &Config,
    plan: &Plan,
    shutdown: &CancellationToken,
) -> Result<Option<(Arc<Authority>, JoinHandle<()>, Arc<List>)>, DaemonError> {
    let listen = config
        .dns
        .serve
        .as_ref()
        .map(|s| s.listen.clone())
        .unwrap_or_default();
    if listen.is_empty() {
        return Ok(None);
    }
    let list = List::new();
    let snapshot = zones::with_dnsbl(zones::snapshot(config, plan, None)?, config, &list)?;
    zones::publish(&list, config);
    let listeners = crate::dns::Listeners::bind(&listen)
        .await
        .map_err(|source| DaemonError::Io {
            context: format!("binding the DNS listeners {listen:?}"),
            source,
        })?;
    for (proto, addr) in listeners.local_addrs() {
        tracing::info!("listening on {proto} {addr}");
    }
    if let Some(bl) = snapshot.dnsbl() {
        tracing::info!(zone = %bl.zone.origin(), "serving the DNSBL");
    }
    let authority = Arc::new(Authority::new(snapshot));
    let task = tokio::spawn(listeners.serve(
        authority.clone(),
        zones::tcp_limits(config),
        shutdown.clone(),
        DRAIN,
    ));
    Ok(Some((authority, task, list)))
}

/// A daemon to start: a config, and sinks beyond the config's own.
pub struct Daemon {
    config: Config,
    sinks: Vec<Box<dyn Enforcer>>,
    timing: Timing,
}

/// A started daemon: what a reload changes and a shutdown waits for.
pub struct Running {
    /// The config at start: what only a restart changes is judged against it.
    started: Config,
    /// The config in force.
    current: Config,
    shutdown: CancellationToken,
    responder: Responder,
    events: EventSink,
    evidence: mpsc::Sender<Evidence>,
    dns: Option<(Arc<Authority>, JoinHandle<()>, Arc<List>)>,
    policies: mpsc::Sender<(Policy, tokio::sync::oneshot::Sender<()>)>,
    swap: Option<BackendSwap>,
    /// Whether the firewall's refused connections are read (once needed).
    refused: Option<Arc<AtomicBool>>,
    /// How often enforcement ticks and refused connections are read.
    enforce_every: Duration,
    allow: mpsc::Sender<Vec<IpNet>>,
    spf: CancellationToken,
    engine: JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
    writer: std::thread::JoinHandle<()>,
}

/// What a shutdown reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// Session events the engine's queue had no room for.
    pub dropped_events: u64,
}

impl Daemon {
    /// A daemon for `config` (with the enforcement backend it names).
    pub fn new(config: Config) -> Daemon {
        Daemon {
            config,
            sinks: Vec::new(),
            timing: Timing::default(),
        }
    }

    /// One more sink, reconciled like the config's backend.
    #[must_use]
    pub fn sink(mut self, sink: Box<dyn Enforcer>) -> Daemon {
        self.sinks.push(sink);
        self
    }

    /// Other intervals than the defaults.
    #[must_use]
    pub fn timing(mut self, timing: Timing) -> Daemon {
        self.timing = timing;
        self
    }

    /// Starts everything; it runs until [`Running::shutdown`] or until
    /// `shutdown` is cancelled.
    pub async fn start(
        self,
        plan: &Plan,
        shutdown: CancellationToken,
    ) -> Result<Running, DaemonError> {
        let Daemon {
            config,
            sinks: extra,
            timing,
        } = self;
        // Before anything starts: a fleet secret that cannot be read.
        let secrets = match &config.fleet {
            Some(f) => fleet::Secrets::read(f).map_err(DaemonError::Fleet)?,
            None => fleet::Secrets::default(),
        };
        let (events, sessions) = EventSink::channel(EVENT_BACKLOG);
        // Retry-exempt networks, filled from the store by the engine task.
        let passed = Passed::default();
        let mut responder = Responder::new(
            Arc::new(settings(&config)),
            events.clone(),
            passed.clone(),
            shutdown.clone(),
            config.responder.threads.0,
        )
        .map_err(|source| DaemonError::Io {
            context: "starting the decoy responder's threads".into(),
            source,
        })?;
        let listen = responder_addrs(&config);
        if config.responder.mode == Mode::Refuse {
            log_refuse_mode(&config);
        } else if listen.is_empty() {
            return Err(DaemonError::NoDecoyAddress);
        }
        let bound = responder::bind(&listen, responder.threads()).map_err(DaemonError::Bind)?;
        for (key, listener) in listen.iter().zip(bound) {
            let addr = responder
                .listen(*key, listener)
                .map_err(|source| DaemonError::Io {
                    context: format!("starting the decoy responder on {key}"),
                    source,
                })?;
            tracing::info!(mode = ?config.responder.mode, "listening on smtp {addr}");
        }
        let dns = start_dns(&config, plan, &shutdown).await?;
        // Bound first, so a bad address fails before any state is touched.
        let (mut store, engine) = writer::restore(&config)?;
        engine::refill(&passed, &engine);
        let (evidence, evidence_rx) = mpsc::channel(EVIDENCE_BACKLOG);
        let mut threads =
            sources::spawn_tailers(&config, &store, &evidence, timing.poll, &shutdown)?;
        for log in &config.mta.logs {
            tracing::info!(format = ?config.mta.format, "following {}", log.display());
        }
        let (snapshots_tx, snapshots) = mpsc::channel(4);
        // The writer prunes by the policy in force, reloads included.
        let remember = Arc::new(AtomicI64::new(engine.policy().remember));
        let fleet_state = match &config.fleet {
            Some(_) => Some(store.fleet_state()?),
            None => None,
        };
        let shared = config
            .fleet
            .as_ref()
            .map(|_| Arc::new(fleet::Shared::default()));
        // The writer tells enforcement at once when it changed the bans.
        let nudge = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // The engine forgets its record of bans the writer has committed.
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let configured = sinks::backend(&config);
        // Without enforcement, the writer keeps nolist_bans_active.
        let counts = configured.is_none() && extra.is_empty();
        store.cache(writer::CACHE)?;
        // The writer keeps the history enforcement has not read yet.
        let followed = Arc::new(AtomicI64::new(i64::MAX));
        if configured.is_some() {
            store.keep_history_after(followed.clone());
        }
        let (writer, writer_thread) = writer::spawn_writer(
            store,
            snapshots_tx,
            remember.clone(),
            shared.clone(),
            (nudge.clone(), progress.clone()),
            counts,
        );
        if let Some((_, _, list)) = &dns {
            threads.push(feed::spawn(
                list.clone(),
                feed::Access::Open(Store::open(&config.state_dir)?),
                Some(nudge.clone()),
                zones::DNSBL_POLL,
                shutdown.clone(),
            ));
        }
        // A fleet bootstrap's bans reach the configured backend's
        // enforcement ahead of the store.
        let (ahead, mut ahead_of_store) = match &shared {
            Some(shared) => {
                let (tx, orders) = std::sync::mpsc::sync_channel(sinks::AHEAD_QUEUE);
                let stored = shared.bootstrapped.clone();
                (Some(tx), Some(sinks::AheadOfStore { orders, stored }))
            }
            None => (None, None),
        };
        let mut swap = None;
        let mut refused = None;
        if configured.is_none() {
            tracing::info!(
                "bans.enforce.backend none: decisions are recorded and logged, not enforced"
            );
        }
        for (i, mut sink) in configured.into_iter().chain(extra).enumerate() {
            sinks::check(sink.as_mut())?;
            let is_config = i == 0 && config.bans.enforce.backend != Backend::None;
            if is_config {
                tracing::info!(backend = sink.name(), ports = ?config.bans.enforce.ports, "enforcing bans");
                if sink.let_through().is_some() {
                    tracing::info!(
                        decoys = ?sinks::let_through(&config),
                        "retry-exempt networks get a TCP reset from the decoy (nftables let-through)"
                    );
                }
            }
            let enforcer_store = Store::open(&config.state_dir)?;
            enforcer_store.cache(sinks::CACHE)?;
            let (tx, thread) = sinks::spawn_enforcer(
                sink,
                enforcer_store,
                writer.clone(),
                passed.clone(),
                timing.enforce,
                sinks::Links {
                    nudge: nudge.clone(),
                    followed: is_config.then(|| followed.clone()),
                    ahead: if is_config {
                        ahead_of_store.take()
                    } else {
                        None
                    },
                },
                shutdown.clone(),
            )?;
            threads.push(thread);
            if is_config {
                swap = Some(tx);
            }
        }
        if sinks::counts_refused(&config) {
            let enabled = Arc::new(AtomicBool::new(true));
            threads.push(sources::spawn_refused(
                enabled.clone(),
                evidence.clone(),
                timing.enforce,
                shutdown.clone(),
            ));
            refused = Some(enabled);
        }
        let (allow, allowed) = mpsc::channel(2);
        let spf = shutdown.child_token();
        tokio::spawn(spf::refresh_spf(config.clone(), allow.clone(), spf.clone()));
        let (policies, policy_rx) = mpsc::channel(2);
        let (fleet_rx, node) = match (&config.fleet, shared, fleet_state) {
            (Some(f), Some(shared), Some(initial)) => {
                let tasks = fleet::Tasks {
                    fleet: f.clone(),
                    secrets,
                    state_dir: config.state_dir.clone(),
                    initial,
                    remember: remember.clone(),
                    v4: config.bans.networks.ipv4.0,
                    v6: config.bans.networks.ipv6.0,
                    shared: shared.clone(),
                    shutdown: shutdown.clone(),
                };
                let (epochs, epoch_rx) = tokio::sync::watch::channel(None);
                threads.push(fleet::spawn_publisher(
                    tasks.clone(),
                    writer.clone(),
                    epochs,
                ));
                let (inbound, inbound_rx) = mpsc::channel(FLEET_BACKLOG);
                fleet::spawn_consumer(tasks, inbound, epoch_rx);
                tracing::info!(node = %f.node, url = %f.url, mta_nodes = ?f.mta_nodes.iter().map(ToString::to_string).collect::<Vec<_>>(), "fleet: sharing evidence and bans");
                let mut node = fleet::Node::new(&config, f, shared);
                if let Some(tx) = ahead {
                    node = node.with_ahead(tx);
                }
                (Some(inbound_rx), Some(node))
            }
            _ => (None, None),
        };
        let engine = tokio::spawn(engine::run(
            engine,
            engine::Inputs {
                sessions,
                evidence: evidence_rx,
                allowed,
                policies: policy_rx,
                snapshots,
                fleet: fleet_rx,
                applied: progress,
                budget: writer::budget(),
            },
            writer,
            passed,
            remember,
            node,
            shutdown.clone(),
        ));
        Ok(Running {
            started: config.clone(),
            current: config,
            shutdown,
            responder,
            events,
            evidence,
            dns,
            policies,
            swap,
            refused,
            enforce_every: timing.enforce,
            allow,
            spf,
            engine,
            threads,
            writer: writer_thread,
        })
    }
}

impl Running {
    /// Where evidence for the engine goes: sources beyond the config's
    /// send here.
    pub fn evidence(&self) -> mpsc::Sender<Evidence> {
        self.evidence.clone()
    }

    /// Cancelled when the daemon stops.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Applies `config`: everything is prepared first (new sockets bound,
    /// zones built, the enforcement backend checked), and only when all of
    /// that worked is anything changed. What only a restart applies is
    /// logged and left as it was.
    pub async fn reload(&mut self, config: Config, plan: &Plan) -> Result<(), DaemonError> {
        let restart = needs_restart(&self.started, &config);
        for what in &restart {
            tracing::warn!("reload: {what} changed; restart nolist to apply that");
        }
        let wanted = responder_addrs(&config);
        let running = self.responder.addrs();
        let added: Vec<SocketAddr> = wanted
            .iter()
            .filter(|a| !running.contains(a))
            .copied()
            .collect();
        if config.responder.mode == Mode::Refuse && self.current.responder.mode != Mode::Refuse {
            warn_unless_local(&config.decoy_addrs());
        }
        let listeners =
            responder::bind(&added, self.responder.threads()).map_err(DaemonError::Bind)?;
        let snapshot = match &self.dns {
            Some((authority, _, list)) => {
                let zones = zones::snapshot(&config, plan, Some(&authority.current()))?;
                Some(zones::with_dnsbl(zones, &config, list)?)
            }
            None => None,
        };
        if !restart.contains(&Restart::Enforce) {
            self.swap_backend(&config).await?;
        }
        // From here on nothing fails.
        self.responder.update(Arc::new(settings(&config)));
        for addr in running.iter().filter(|a| !wanted.contains(a)) {
            self.responder.close(addr);
            tracing::info!("stopped listening on smtp {addr}");
        }
        for (key, listener) in added.iter().zip(listeners) {
            match self.responder.listen(*key, listener) {
                Ok(addr) => {
                    tracing::info!(mode = ?config.responder.mode, "listening on smtp {addr}");
                }
                Err(e) => tracing::error!(error = %e, "listening on smtp {key}"),
            }
        }
        if !restart.contains(&Restart::Enforce) {
            self.count_refused(sinks::counts_refused(&config));
        }
        // The engine has the new policy when this returns: evidence sent
        // after a reload is judged by it.
        let (applied, engine_has_it) = tokio::sync::oneshot::channel();
        if self
            .policies
            .send((Policy::from_config(&config), applied))
            .await
            .is_ok()
        {
            let _ = engine_has_it.await;
        }
        if let (Some((authority, _, list)), Some(snapshot)) = (&self.dns, snapshot) {
            let changes = zones::swap_in(authority, snapshot);
            zones::publish(list, &config);
            tracing::info!("zones: reloaded {changes}");
        }
        let allow = |c: &Config| (c.bans.allow.spf.clone(), c.bans.allow.refresh);
        if allow(&self.current) != allow(&config) {
            self.spf.cancel();
            self.spf = self.shutdown.child_token();
            if config.bans.allow.spf.is_empty() {
                let _ = self.allow.send(Vec::new()).await;
            }
            tokio::spawn(spf::refresh_spf(
                config.clone(),
                self.allow.clone(),
                self.spf.clone(),
            ));
        }
        self.current = config;
        Ok(())
    }

    /// Starts or stops reading the firewall's refused connections as
    /// evidence (a reload into or out of refuse mode). The reading thread
    /// starts the first time it is needed and then only pauses.
    fn count_refused(&mut self, wanted: bool) {
        match &self.refused {
            Some(enabled) => enabled.store(wanted, Ordering::Relaxed),
            None if wanted => {
                let enabled = Arc::new(AtomicBool::new(true));
                self.threads.push(sources::spawn_refused(
                    enabled.clone(),
                    self.evidence.clone(),
                    self.enforce_every,
                    self.shutdown.clone(),
                ));
                self.refused = Some(enabled);
            }
            None => {}
        }
    }

    /// Same firewall backend with other ports or decoys: the new one is
    /// checked (its rules rewritten) and swapped in on the enforcement
    /// thread. The one step of a reload that changes something before it
    /// can fail, so it comes last.
    async fn swap_backend(&self, config: &Config) -> Result<(), DaemonError> {
        let Some(swap) = &self.swap else {
            return Ok(());
        };
        if !matches!(
            config.bans.enforce.backend,
            Backend::Nftables | Backend::Iptables
        ) || FirewallLayout::of(&self.current) == FirewallLayout::of(config)
        {
            return Ok(());
        }
        let Some(backend) = sinks::backend(config) else {
            return Ok(());
        };
        let name = backend.name();
        let (done, checked) = tokio::sync::oneshot::channel();
        swap.send(Swap { backend, done })
            .map_err(|_| DaemonError::EnforcementGone)?;
        tokio::time::timeout(SWAP_TIMEOUT, checked)
            .await
            .map_err(|_| DaemonError::EnforcementTimeout(SWAP_TIMEOUT.as_secs()))?
            .map_err(|_| DaemonError::EnforcementGone)?
            .map_err(|source| DaemonError::Enforce {
                backend: name,
                source,
            })
    }

    /// Stops everything and waits for it: open sessions get `DRAIN` (5 s) to
    /// finish, the engine's last decisions and the tailers' checkpoints
    /// are written before this returns.
    pub async fn shutdown(self) -> Stopped {
        self.shutdown.cancel();
        self.responder.drain(DRAIN).await;
        if let Some((_, dns, _)) = self.dns {
            let _ = dns.await;
        }
        let dropped_events = self.events.dropped();
        drop(self.events);
        drop(self.evidence);
        let _ = self.engine.await;
        let mut threads = self.threads;
        threads.push(self.writer);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        Stopped { dropped_events }
    }
}
