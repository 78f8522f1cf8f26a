//! `nolist run`: the daemon. Today it runs the decoy responder and collects
//! its session events; the ban engine, enforcement and DNS serving join it
//! in later issues.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
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
}

/// How long open sessions get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// Undelivered session events held for the ban engine.
const EVENT_BACKLOG: usize = 65_536;

/// The responder's listen addresses: `responder.listen`, or every decoy
/// address of every domain on port 25.
fn listen_addrs(config: &Config) -> Vec<SocketAddr> {
    if !config.responder.listen.is_empty() {
        return config.responder.listen.clone();
    }
    let mut addrs: Vec<SocketAddr> = config
        .domains
        .iter()
        .flat_map(|d| std::iter::once(&d.decoy).chain(d.tail_decoy.iter()))
        .flat_map(|h| h.addresses())
        .map(|ip| SocketAddr::new(ip, 25))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
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
    super::init_logging();
    let config = config::load(&args.config)?;
    let plan = Plan::build(&config);
    eprint!("{}", findings_text(&args.config, &plan.findings));
    if plan.has_errors() {
        eprintln!("nolist: the plan has lint errors; not starting");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    raise_fd_limit();
    let listen = listen_addrs(&config);
    let settings = Arc::new(settings(&config));
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let (events, mut received) = EventSink::channel(EVENT_BACKLOG);
        let responder = if config.responder.mode == Mode::Refuse {
            tracing::info!(
                "responder mode refuse: nothing listens on the decoy addresses; the kernel answers every connection with a TCP reset"
            );
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
        // The ban engine will consume these; until then they are counted.
        let consumer = tokio::spawn(async move {
            let mut sessions = 0u64;
            while received.recv().await.is_some() {
                sessions += 1;
            }
            sessions
        });
        wait_for_stop().await?;
        tracing::info!("shutting down");
        shutdown.cancel();
        if let Some(r) = responder {
            let _ = r.await;
        }
        let dropped = events.dropped();
        drop(events);
        let sessions = consumer.await.unwrap_or(0);
        tracing::info!(sessions, dropped_events = dropped, "stopped");
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT. SIGHUP is logged: reloading the daemon
/// comes with the daemon issue.
async fn wait_for_stop() -> Result<(), Failure> {
    let sig = |kind| {
        signal(kind).map_err(|source| Failure::Io {
            context: "installing signal handlers".into(),
            source,
        })
    };
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup())?,
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
    );
    loop {
        tokio::select! {
            _ = hup.recv() => tracing::warn!("SIGHUP: reloading `nolist run` is not supported yet; restart it to apply a new config"),
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
}
