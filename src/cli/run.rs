//! `nolist run`: the daemon. It runs the decoy responder, follows the MTA
//! logs, lets the ban engine record its decisions in the state store,
//! enforces the bans, serves the planned zones and metrics when configured,
//! and reloads its config on SIGHUP (a config that does not load, plan or
//! bind keeps the running one).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, Failure, findings_text};
use crate::bans::{Passed, Policy};
use crate::config::{self, Config, Mode};
use crate::daemon::{self, BackendSwap, EngineInputs};
use crate::dns::Authority;
use crate::plan::Plan;
use crate::smtp::responder::{self, EventSink, Responder, Settings};
use crate::smtp::session::Limits;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Keep state here instead of the config's `state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Before starting, check that live DNS matches the plan (as `verify
    /// --dns-only`); exit 1 if it does not.
    #[arg(long)]
    pub verify_dns: bool,
    /// With --verify-dns: ask this nameserver (repeatable); default: the system resolver.
    #[arg(long, value_name = "IP:PORT", requires = "verify_dns")]
    pub nameserver: Vec<SocketAddr>,
}

/// How long open sessions get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Undelivered session events held for the ban engine.
const EVENT_BACKLOG: usize = 65_536;

/// Why the config could not be (re)loaded.
enum LoadError {
    Config(config::ConfigError),
    /// The findings text of a plan with lint errors.
    Lint(String),
}

/// The config (with `--state-dir` applied) and its plan; lint warnings
/// are printed, lint errors refuse.
fn load(args: &RunArgs) -> Result<(Config, Plan), LoadError> {
    let config =
        super::load_config(&args.config, args.state_dir.as_deref()).map_err(LoadError::Config)?;
    let plan = Plan::build(&config);
    let findings = findings_text(&args.config, &plan.findings);
    if plan.has_errors() {
        return Err(LoadError::Lint(findings));
    }
    eprint!("{findings}");
    Ok((config, plan))
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
fn raise_fd_limit() {
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

pub(crate) fn run(args: &RunArgs) -> Result<ExitCode, Failure> {
    let logging = super::init_logging();
    let (config, plan) = match load(args) {
        Ok(loaded) => loaded,
        Err(LoadError::Config(e)) => return Err(e.into()),
        Err(LoadError::Lint(findings)) => {
            eprint!("{findings}");
            eprintln!("nolist: the plan has lint errors; not starting");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    };
    raise_fd_limit();
    super::runtime()?.block_on(async move {
        let mut signals = super::Signals::install()?;
        if args.verify_dns && !live_dns_matches(&config, &plan, &args.nameserver).await? {
            eprintln!("nolist: live DNS does not match the plan; not starting");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        let shutdown = CancellationToken::new();
        let metrics = start_metrics(&config, &shutdown).await?;
        let mut daemon = Daemon::start(config, &plan, shutdown).await?;
        let notifier = crate::notify::Notifier::from_env();
        notifier.send("READY=1\nSTATUS=serving");
        let watchdog = crate::notify::Notifier::watchdog_interval()
            .map(|every| tokio::spawn(watchdog(every, daemon.shutdown.clone())));
        while signals.next().await == super::Signal::Reload {
            notifier.send("RELOADING=1");
            match load(args) {
                Ok((config, plan)) => match daemon.reload(config, &plan).await {
                    Ok(()) => {
                        metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
                        tracing::info!("reloaded {}", args.config.display());
                    }
                    Err(e) => reload_failed(&e),
                },
                Err(LoadError::Config(e)) => reload_failed(&e.to_string()),
                Err(LoadError::Lint(findings)) => {
                    reload_failed(&format!("{findings}the plan has lint errors"));
                }
            }
            notifier.send("READY=1\nSTATUS=serving");
        }
        tracing::info!("shutting down");
        notifier.send("STOPPING=1");
        daemon.shutdown.cancel();
        for task in watchdog.into_iter().chain(metrics) {
            let _ = task.await;
        }
        let dropped = daemon.stop().await;
        tracing::info!(
            dropped_events = dropped,
            dropped_log_lines = logging.as_ref().map_or(0, super::log::Log::dropped),
            "stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn reload_failed(why: &str) {
    metrics::counter!(crate::metrics::RELOADS, "result" => "failed").increment(1);
    tracing::error!("reload failed, still running the previous config: {why}");
}

async fn watchdog(every: Duration, stop: CancellationToken) {
    let notifier = crate::notify::Notifier::from_env();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => notifier.send("WATCHDOG=1"),
            () = stop.cancelled() => return,
        }
    }
}

/// `--verify-dns`: the DNS checks of `verify`, printed when they fail.
async fn live_dns_matches(
    config: &Config,
    plan: &Plan,
    nameservers: &[SocketAddr],
) -> Result<bool, Failure> {
    let expected = crate::verify::expectations(plan, config);
    let options = crate::verify::Options {
        nameservers: nameservers.to_vec(),
        dns_only: true,
        ..crate::verify::Options::default()
    };
    let report = crate::verify::run(&expected, &options)
        .await
        .map_err(|e| Failure::Usage(format!("--verify-dns: {e}")))?;
    if report.ok() {
        tracing::info!("live DNS matches the plan");
    } else {
        eprint!("{}", crate::verify::report::text(&report));
    }
    Ok(report.ok())
}

/// Installs the metrics recorder and serves `/metrics` when configured.
async fn start_metrics(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, Failure> {
    let Some(m) = &config.metrics else {
        return Ok(None);
    };
    let handle = crate::metrics::install().map_err(|e| Failure::Usage(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(m.listen)
        .await
        .map_err(|source| Failure::Io {
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

/// Binds the responder's sockets for `addrs`, `threads` each (none is
/// added on failure).
fn bind(addrs: &[SocketAddr], threads: usize) -> Result<Vec<Vec<std::net::TcpListener>>, String> {
    responder::bind(addrs, threads).map_err(|e| {
        format!("starting the decoy responder (is the decoy address configured on this host?): {e}")
    })
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

/// Everything `run` started, and what a reload changes.
struct Daemon {
    /// The config at start: what only a restart changes is judged against it.
    started: Config,
    /// The config in force.
    current: Config,
    shutdown: CancellationToken,
    responder: Responder,
    events: EventSink,
    dns: Option<(Arc<Authority>, JoinHandle<()>)>,
    policies: mpsc::Sender<Policy>,
    swap: Option<BackendSwap>,
    allow: mpsc::Sender<Vec<IpNet>>,
    spf: CancellationToken,
    engine: JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Daemon {
    async fn start(
        config: Config,
        plan: &Plan,
        shutdown: CancellationToken,
    ) -> Result<Daemon, Failure> {
        let (events, received) = EventSink::channel(EVENT_BACKLOG);
        // Retry-exempt networks, filled from the store by the engine task.
        let passed = Passed::default();
        let mut responder = Responder::new(
            Arc::new(settings(&config)),
            events.clone(),
            passed.clone(),
            shutdown.clone(),
            config.responder.threads.0,
        )
        .map_err(|source| Failure::Io {
            context: "starting the decoy responder's threads".into(),
            source,
        })?;
        let listen = responder_addrs(&config);
        if config.responder.mode == Mode::Refuse {
            warn_unless_local(&config.decoy_addrs());
            tracing::info!(
                "responder mode refuse: nothing listens on the decoy addresses; every connection is answered with a TCP reset"
            );
            match (
                config.responder.refuse_evidence,
                config.bans.enforce.backend,
            ) {
                (true, config::Backend::Nftables) => {
                    tracing::info!(decoys = ?config.decoy_addrs(), "refuse mode: nftables counts the refused connections as decoy hits");
                }
                (true, _) => tracing::warn!(
                    "responder.refuse_evidence needs bans.enforce.backend nftables; decoy hits come from the MTA logs alone"
                ),
                (false, _) => tracing::info!(
                    "refuse mode: decoy hits come from the MTA logs (responder.refuse_evidence is off)"
                ),
            }
        } else if listen.is_empty() {
            return Err(Failure::Usage(
                "run: no decoy address to listen on: set responder.listen, or give the decoys ipv4/ipv6 addresses".into(),
            ));
        }
        for (key, listener) in listen
            .iter()
            .zip(bind(&listen, responder.threads()).map_err(Failure::Usage)?)
        {
            let addr = responder
                .listen(*key, listener)
                .map_err(|source| Failure::Io {
                    context: format!("starting the decoy responder on {key}"),
                    source,
                })?;
            tracing::info!(mode = ?config.responder.mode, "listening on smtp {addr}");
        }
        let dns = start_dns(&config, plan, &shutdown).await?;
        // Bind first, so a bad address fails before any state is touched.
        let (store, engine) =
            daemon::restore(&config).map_err(|e| Failure::Usage(e.to_string()))?;
        daemon::refill(&passed, &engine);
        let (log_tx, log_rx) = mpsc::channel(64);
        let mut threads = Vec::new();
        let swap = match daemon::enforcer(&config).map_err(Failure::Usage)? {
            Some(backend) => {
                tracing::info!(backend = backend.name(), ports = ?config.bans.enforce.ports, "enforcing bans");
                if backend.lets_through() {
                    tracing::info!(
                        decoys = ?crate::enforce::let_through(&config),
                        "retry-exempt networks get a TCP reset from the decoy (nftables let-through)"
                    );
                }
                let (swap, thread) = daemon::spawn_enforcer(
                    backend,
                    &config,
                    passed.clone(),
                    log_tx.clone(),
                    shutdown.clone(),
                )
                .map_err(|e| Failure::Usage(e.to_string()))?;
                threads.push(thread);
                Some(swap)
            }
            None => {
                tracing::info!(
                    "bans.enforce.backend none: decisions are recorded and logged, not enforced"
                );
                None
            }
        };
        threads.extend(
            daemon::spawn_tailers(&config, &store, log_tx, shutdown.clone())
                .map_err(|e| Failure::Usage(e.to_string()))?,
        );
        for log in &config.mta.logs {
            tracing::info!(format = ?config.mta.format, "following {}", log.display());
        }
        let (allow, allow_rx) = mpsc::channel(2);
        let spf = shutdown.child_token();
        tokio::spawn(daemon::refresh_spf(
            config.clone(),
            allow.clone(),
            spf.clone(),
        ));
        let (policies, policy_rx) = mpsc::channel(2);
        let engine = tokio::spawn(daemon::run_engine(
            engine,
            store,
            EngineInputs {
                sessions: received,
                logs: log_rx,
                allowed: allow_rx,
                policies: policy_rx,
            },
            passed,
            shutdown.clone(),
        ));
        Ok(Daemon {
            started: config.clone(),
            current: config,
            shutdown,
            responder,
            events,
            dns,
            policies,
            swap,
            allow,
            spf,
            engine,
            threads,
        })
    }

    /// Applies `config`: everything is prepared first (new sockets bound,
    /// zones built, the enforcement backend checked), and only when all of
    /// that worked is anything changed. What only a restart applies is
    /// logged.
    async fn reload(&mut self, config: Config, plan: &Plan) -> Result<(), String> {
        let restart = daemon::needs_restart(&self.started, &config);
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
        let listeners = bind(&added, self.responder.threads())?;
        let snapshot = match &self.dns {
            Some((authority, _)) => Some(super::serve::snapshot(
                &config,
                plan,
                Some(&authority.current()),
            )?),
            None => None,
        };
        // Same backend with other ports or decoys: checked (its rules
        // rewritten) and swapped in on the enforcement thread, last, since
        // it is the one step that changes something before it can fail.
        if let Some(swap) = &self.swap
            && !restart.iter().any(|w| w.starts_with("bans.enforce"))
            && matches!(
                config.bans.enforce.backend,
                config::Backend::Nftables | config::Backend::Iptables
            )
            && daemon::firewall_layout(&self.current) != daemon::firewall_layout(&config)
            && let Some(backend) = crate::enforce::backend(&config)
        {
            let (done, checked) = tokio::sync::oneshot::channel();
            swap.send(daemon::Swap { backend, done })
                .map_err(|_| "the enforcement thread is gone".to_owned())?;
            tokio::time::timeout(Duration::from_secs(60), checked)
                .await
                .map_err(|_| "enforcement did not answer within 60 s".to_owned())?
                .map_err(|_| "the enforcement thread is gone".to_owned())??;
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
                    tracing::info!(mode = ?config.responder.mode, "listening on smtp {addr}")
                }
                Err(e) => tracing::error!(error = %e, "listening on smtp {key}"),
            }
        }
        let _ = self.policies.send(Policy::from_config(&config)).await;
        if let (Some((authority, _)), Some(snapshot)) = (&self.dns, snapshot) {
            let changes = super::serve::swap_in(authority, snapshot);
            tracing::info!("zones: reloaded {changes}");
        }
        let allow = |c: &Config| (c.bans.allow.spf.clone(), c.bans.allow.refresh);
        if allow(&self.current) != allow(&config) {
            self.spf.cancel();
            self.spf = self.shutdown.child_token();
            if config.bans.allow.spf.is_empty() {
                let _ = self.allow.send(Vec::new()).await;
            }
            tokio::spawn(daemon::refresh_spf(
                config.clone(),
                self.allow.clone(),
                self.spf.clone(),
            ));
        }
        self.current = config;
        Ok(())
    }

    /// Waits for everything to finish after `shutdown`; returns the number
    /// of session events that were dropped.
    async fn stop(self) -> u64 {
        self.responder.drain(DRAIN).await;
        if let Some((_, dns)) = self.dns {
            let _ = dns.await;
        }
        let dropped = self.events.dropped();
        drop(self.events);
        let _ = self.engine.await;
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        dropped
    }
}

/// DNS, when the config asks for it: the same zones `nolist serve` serves.
async fn start_dns(
    config: &Config,
    plan: &Plan,
    shutdown: &CancellationToken,
) -> Result<Option<(Arc<Authority>, JoinHandle<()>)>, Failure> {
    let listen = config
        .dns
        .serve
        .as_ref()
        .map(|s| s.listen.clone())
        .unwrap_or_default();
    if listen.is_empty() {
        return Ok(None);
    }
    let snapshot = super::serve::snapshot(config, plan, None).map_err(Failure::Usage)?;
    let listeners = crate::dns::Listeners::bind(&listen)
        .await
        .map_err(|source| Failure::Io {
            context: format!("binding the DNS listeners {listen:?}"),
            source,
        })?;
    for (proto, addr) in listeners.local_addrs() {
        tracing::info!("listening on {proto} {addr}");
    }
    let authority = Arc::new(Authority::new(snapshot));
    let task = tokio::spawn(listeners.serve(
        authority.clone(),
        super::serve::tcp_limits(config),
        shutdown.clone(),
        DRAIN,
    ));
    Ok(Some((authority, task)))
}
