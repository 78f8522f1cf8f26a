//! `nolist run`: the daemon. It runs the decoy responder, follows the MTA
//! logs, and lets the ban engine record its decisions in the state store;
//! enforcement (nftables) and DNS serving join it with the daemon issue.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, Failure, findings_text};
use crate::config::{self, Config, Mode};
use crate::plan::Plan;
use crate::smtp::responder::{self, EventSink, Settings};
use crate::smtp::session::Limits;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Keep state here instead of the config's `state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How long open sessions get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Undelivered session events held for the ban engine.
const EVENT_BACKLOG: usize = 65_536;

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
    let mut config = config::load(&args.config)?;
    if let Some(dir) = &args.state_dir {
        config.state_dir = dir.clone();
    }
    let plan = Plan::build(&config);
    eprint!("{}", findings_text(&args.config, &plan.findings));
    if plan.has_errors() {
        eprintln!("nolist: the plan has lint errors; not starting");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    raise_fd_limit();
    let listen = config.decoy_addrs();
    let settings = Arc::new(settings(&config));
    super::runtime()?.block_on(async move {
        let mut signals = super::Signals::install()?;
        let shutdown = CancellationToken::new();
        let (events, received) = EventSink::channel(EVENT_BACKLOG);
        let responder = if config.responder.mode == Mode::Refuse {
            tracing::info!(
                "responder mode refuse: nothing listens on the decoy addresses; every connection is answered with a TCP reset"
            );
            if config.bans.enforce.backend == crate::config::Backend::Nftables {
                tracing::info!(decoys = ?listen, "refuse mode: nftables counts the refused connections as decoy hits");
            } else {
                tracing::warn!(
                    "refuse mode collects decoy hits from the firewall only with bans.enforce.backend nftables; hits come from the MTA logs alone"
                );
            }
            None
        } else {
            if listen.is_empty() {
                return Err(Failure::Usage(
                    "run: no decoy address to listen on: set responder.listen, or give the decoys ipv4/ipv6 addresses".into(),
                ));
            }
            let listeners = responder::bind(&listen).await.map_err(|source| Failure::Io {
                context: "starting the decoy responder (is the decoy address configured on this host?)".into(),
                source,
            })?;
            for l in &listeners {
                if let Ok(addr) = l.local_addr() {
                    tracing::info!(mode = ?settings.mode, "listening on smtp {addr}");
                }
            }
            Some(tokio::spawn(responder::serve(
                listeners,
                settings.clone(),
                events.clone(),
                shutdown.clone(),
                DRAIN,
            )))
        };
        // DNS, when the config asks for it: the same zones `nolist serve` serves.
        let dns_listen = config.dns.serve.as_ref().map(|s| s.listen.clone()).unwrap_or_default();
        let dns = if dns_listen.is_empty() {
            None
        } else {
            let snapshot = super::serve::snapshot(&config, &plan, None).map_err(Failure::Usage)?;
            let listeners = crate::dns::Listeners::bind(&dns_listen).await.map_err(|source| Failure::Io {
                context: format!("binding the DNS listeners {dns_listen:?}"),
                source,
            })?;
            for (proto, addr) in listeners.local_addrs() {
                tracing::info!("listening on {proto} {addr}");
            }
            let authority = std::sync::Arc::new(crate::dns::Authority::new(snapshot));
            Some(tokio::spawn(listeners.serve(
                authority,
                super::serve::tcp_limits(&config),
                shutdown.clone(),
                DRAIN,
            )))
        };
        // Bind first, so a bad address fails before any state is touched.
        let (store, engine) = crate::daemon::restore(&config).map_err(|e| Failure::Usage(e.to_string()))?;
        let (log_tx, log_rx) = tokio::sync::mpsc::channel(64);
        let enforcer = match crate::daemon::enforcer(&config).map_err(Failure::Usage)? {
            Some(backend) => {
                tracing::info!(backend = backend.name(), ports = ?config.bans.enforce.ports, "enforcing bans");
                Some(
                    crate::daemon::spawn_enforcer(backend, &config, log_tx.clone(), shutdown.clone())
                        .map_err(|e| Failure::Usage(e.to_string()))?,
                )
            }
            None => {
                tracing::info!("bans.enforce.backend none: decisions are recorded and logged, not enforced");
                None
            }
        };
        let tailers = crate::daemon::spawn_tailers(&config, &store, log_tx, shutdown.clone())
            .map_err(|e| Failure::Usage(e.to_string()))?;
        for log in &config.mta.logs {
            tracing::info!(format = ?config.mta.format, "following {}", log.display());
        }
        let (allow_tx, allow_rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(crate::daemon::refresh_spf(config.clone(), allow_tx, shutdown.clone()));
        let engine = tokio::spawn(crate::daemon::run_engine(
            engine,
            store,
            received,
            log_rx,
            allow_rx,
            shutdown.clone(),
        ));
        let notifier = crate::notify::Notifier::from_env();
        notifier.send("READY=1\nSTATUS=serving");
        let watchdog = crate::notify::Notifier::watchdog_interval().map(|every| {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let notifier = crate::notify::Notifier::from_env();
                let mut tick = tokio::time::interval(every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => notifier.send("WATCHDOG=1"),
                        () = stop.cancelled() => return,
                    }
                }
            })
        });
        while signals.next().await == super::Signal::Reload {
            tracing::warn!("SIGHUP: reloading `nolist run` is not supported yet; restart it to apply a new config");
        }
        tracing::info!("shutting down");
        notifier.send("STOPPING=1");
        shutdown.cancel();
        if let Some(w) = watchdog {
            let _ = w.await;
        }
        if let Some(r) = responder {
            let _ = r.await;
        }
        if let Some(d) = dns {
            let _ = d.await;
        }
        let dropped = events.dropped();
        drop(events);
        let _ = engine.await;
        let _ = tokio::task::spawn_blocking(move || {
            for t in tailers.into_iter().chain(enforcer) {
                let _ = t.join();
            }
        })
        .await;
        tracing::info!(dropped_events = dropped, dropped_log_lines = logging.dropped(), "stopped");
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
