//! `nolist serve`: authoritative DNS for the planned zones, reloaded on
//! SIGHUP and drained on SIGTERM/SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, Failure, findings_text};
use crate::config::{self, Config};
use crate::dns::{Authority, Listeners, Snapshot, TcpLimits, ZoneData, serials};
use crate::plan::Plan;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Listen on this address, UDP and TCP (repeatable); default: dns.serve.listen.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Keep the served serials (with `dns.serve.axfr_allow`) in DIR instead
    /// of the config's `state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How long open TCP connections may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Why a (re)load failed.
enum LoadError {
    Config(config::ConfigError),
    Lint(String),
    Zone(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(e) => e.fmt(f),
            LoadError::Lint(findings) => {
                write!(f, "{findings}the plan has lint errors; not serving it")
            }
            LoadError::Zone(e) => f.write_str(e),
        }
    }
}

/// Loads the config and builds the zones to serve; `previous` carries SOA
/// serials across reloads.
fn load(
    path: &Path,
    state_dir: Option<&Path>,
    previous: Option<&Snapshot>,
) -> Result<(Config, Snapshot), LoadError> {
    let config = super::load_config(path, state_dir).map_err(LoadError::Config)?;
    let plan = Plan::build(&config);
    if plan.has_errors() {
        return Err(LoadError::Lint(findings_text(path, &plan.findings)));
    }
    let snapshot = snapshot(&config, &plan, previous).map_err(LoadError::Zone)?;
    Ok((config, snapshot))
}

/// The zones of `plan` (with their base zones) ready to serve, each with
/// its serial following what was served before: by this process
/// (`previous`), or, for zones secondaries copy (`dns.serve.axfr_allow` set),
/// by an earlier run, as kept in `STATE_DIR/serials.json`, which is then
/// updated. A state that cannot be read or written is a warning: the zones
/// are served, with serials that may not survive a restart.
pub(crate) fn snapshot(
    config: &Config,
    plan: &Plan,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, String> {
    let axfr_allow = config
        .dns
        .serve
        .as_ref()
        .map(|s| s.axfr_allow.clone())
        .unwrap_or_default();
    let kept_at = (!axfr_allow.is_empty()).then(|| serials::file(&config.state_dir));
    let kept = kept_at.as_deref().map_or_else(BTreeMap::new, |path| {
        serials::load(path).unwrap_or_else(|e| {
            tracing::warn!("served serials: {e}; starting from the configured ones");
            BTreeMap::new()
        })
    });
    let mut zones = Vec::with_capacity(plan.zones.len());
    for (zone, domain) in plan.zones.iter().zip(&config.domains) {
        let data = ZoneData::build(zone, domain.base_zone.as_deref()).map_err(|e| e.to_string())?;
        let before = previous
            .and_then(|p| p.zones().iter().find(|z| z.origin == data.origin))
            .map(ZoneData::served)
            .or_else(|| kept.get(&data.origin.to_string()).copied());
        zones.push(data.succeed(before));
    }
    if let Some(path) = kept_at {
        let served = zones
            .iter()
            .map(|z| (z.origin.to_string(), z.served()))
            .collect();
        if let Err(e) = serials::save(&path, served) {
            tracing::warn!(
                "served serials: {e}; a restart may serve lower serials, which secondaries ignore"
            );
        }
    }
    Snapshot::new(zones, axfr_allow)
}

/// The TCP limits of `dns.serve` (defaults without it).
pub(crate) fn tcp_limits(config: &Config) -> TcpLimits {
    config.dns.serve.as_ref().map_or(
        TcpLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(10),
        },
        |s| TcpLimits {
            max_connections: s.tcp_max_connections.get(),
            idle_timeout: s.tcp_idle_timeout.0,
        },
    )
}

pub(crate) fn run(args: &ServeArgs) -> Result<ExitCode, Failure> {
    let _logging = super::init_logging();
    let (config, snapshot) = match load(&args.config, args.state_dir.as_deref(), None) {
        Ok(loaded) => loaded,
        Err(LoadError::Config(e)) => return Err(e.into()),
        Err(e @ LoadError::Lint(_)) => {
            eprintln!("nolist: {e}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Err(e) => return Err(Failure::Usage(e.to_string())),
    };
    let serve = config.dns.serve.clone();
    let listen = if args.listen.is_empty() {
        serve.as_ref().map(|s| s.listen.clone()).unwrap_or_default()
    } else {
        args.listen.clone()
    };
    if listen.is_empty() {
        return Err(Failure::Usage(
            "serve: no listen address: set dns.serve.listen or pass --listen ADDR:PORT".into(),
        ));
    }
    let limits = tcp_limits(&config);
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let mut signals = super::Signals::install()?;
        let listeners = Listeners::bind(&listen)
            .await
            .map_err(|source| Failure::Io {
                context: format!("binding {listen:?}"),
                source,
            })?;
        for zone in snapshot.zones() {
            tracing::info!(zone = %zone.origin, serial = zone.serial, "serving zone");
        }
        for (proto, addr) in listeners.local_addrs() {
            tracing::info!("listening on {proto} {addr}");
        }
        let authority = Arc::new(Authority::new(snapshot));
        let shutdown = CancellationToken::new();
        let server =
            tokio::spawn(listeners.serve(authority.clone(), limits, shutdown.clone(), DRAIN));
        reload_until_stopped(args, &authority, &mut signals).await;
        tracing::info!("shutting down");
        shutdown.cancel();
        let _ = server.await;
        Ok::<(), Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
async fn reload_until_stopped(
    args: &ServeArgs,
    authority: &Authority,
    signals: &mut super::Signals,
) {
    while signals.next().await == super::Signal::Reload {
        let current = authority.current();
        match load(&args.config, args.state_dir.as_deref(), Some(&current)) {
            Ok((_, snapshot)) => {
                for zone in snapshot.zones() {
                    tracing::info!(zone = %zone.origin, serial = zone.serial, "reloaded zone");
                }
                authority.swap(snapshot);
            }
            Err(e) => tracing::error!("reload failed, still serving the previous zones: {e}"),
        }
    }
}
