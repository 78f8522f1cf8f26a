//! `nolist serve`: authoritative DNS for the planned zones, reloaded on
//! SIGHUP and drained on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, Failure, findings_text};
use crate::config::{self, Config};
use crate::daemon::zones;
use crate::dns::{Authority, Listeners, Snapshot};
use crate::dnsbl::{List, feed};
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
    Zone(crate::dns::ZoneError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(e) => e.fmt(f),
            LoadError::Lint(findings) => {
                write!(f, "{findings}the plan has lint errors; not serving it")
            }
            LoadError::Zone(e) => e.fmt(f),
        }
    }
}

/// Loads the config and builds the zones to serve; `previous` carries SOA
/// serials across reloads.
fn load(
    path: &Path,
    state_dir: Option<&Path>,
    previous: Option<&Snapshot>,
    list: &Arc<List>,
) -> Result<(Config, Snapshot), LoadError> {
    let config = super::load_config(path, state_dir).map_err(LoadError::Config)?;
    let plan = Plan::build(&config);
    if plan.has_errors() {
        return Err(LoadError::Lint(findings_text(path, &plan.findings)));
    }
    let snapshot = zones::snapshot(&config, &plan, previous)
        .and_then(|s| zones::with_dnsbl(s, &config, list))
        .map_err(LoadError::Zone)?;
    Ok((config, snapshot))
}

pub(crate) fn run(args: &ServeArgs) -> Result<ExitCode, Failure> {
    let _logging = super::init_logging();
    let list = List::new();
    let (config, snapshot) = match load(&args.config, args.state_dir.as_deref(), None, &list) {
        Ok(loaded) => loaded,
        Err(LoadError::Config(e)) => return Err(e.into()),
        Err(e @ LoadError::Lint(_)) => {
            eprintln!("nolist: {e}");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Err(LoadError::Zone(e)) => return Err(e.into()),
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
    let limits = zones::tcp_limits(&config);
    zones::publish(&list, &config);
    let state_dir = config.state_dir.clone();
    // Only the snapshot is needed from here on; a reload reads the file again.
    drop(config);
    zones::release_freed_memory();
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
            tracing::debug!(zone = %zone.origin, serial = zone.serial, "serving zone");
        }
        tracing::info!("serving {}", zones::zone_count(snapshot.zones().len()));
        for (proto, addr) in listeners.local_addrs() {
            tracing::info!("listening on {proto} {addr}");
        }
        if let Some(bl) = snapshot.dnsbl() {
            tracing::info!(zone = %bl.zone.origin(), "serving the DNSBL from the bans in {}", state_dir.display());
        }
        let authority = Arc::new(Authority::new(snapshot));
        let shutdown = CancellationToken::new();
        let feed = feed::spawn(
            list.clone(),
            feed::Access::Reopen(state_dir),
            None,
            zones::DNSBL_POLL,
            shutdown.clone(),
        );
        let server =
            tokio::spawn(listeners.serve(authority.clone(), limits, shutdown.clone(), DRAIN));
        reload_until_stopped(args, &authority, &list, &mut signals).await;
        tracing::info!("shutting down");
        shutdown.cancel();
        let _ = server.await;
        let _ = tokio::task::spawn_blocking(move || feed.join()).await;
        Ok::<(), Failure>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
async fn reload_until_stopped(
    args: &ServeArgs,
    authority: &Authority,
    list: &Arc<List>,
    signals: &mut super::Signals,
) {
    while signals.next().await == super::Signal::Reload {
        match reload(args, authority, list) {
            Ok(summary) => tracing::info!("{summary}"),
            Err(e) => tracing::error!("reload failed, still serving the previous zones: {e}"),
        }
    }
}

/// Loads the config again and swaps the new zones in; returns the line that
/// says so.
fn reload(args: &ServeArgs, authority: &Authority, list: &Arc<List>) -> Result<String, LoadError> {
    let started = Instant::now();
    let previous = authority.current();
    let (config, snapshot) = load(
        &args.config,
        args.state_dir.as_deref(),
        Some(&previous),
        list,
    )?;
    drop(previous);
    let changes = zones::swap_in(authority, snapshot);
    zones::publish(list, &config);
    Ok(format!(
        "reloaded {changes} in {} ms",
        started.elapsed().as_millis()
    ))
}

#[cfg(test)]
mod tests;
