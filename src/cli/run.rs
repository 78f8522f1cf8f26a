//! `nolist run`: the daemon ([`crate::daemon`]) with its arguments, its
//! signals (SIGHUP reloads; a config that does not load, plan or bind
//! keeps the running one) and systemd's notifications.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, Failure, findings_text};
use crate::config::{self, Config};
use crate::daemon::{Daemon, lifecycle};
use crate::notify::Notifier;
use crate::plan::Plan;

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
    lifecycle::raise_fd_limit();
    lifecycle::limit_malloc_arenas();
    super::runtime()?.block_on(async move {
        let mut signals = super::Signals::install()?;
        if args.verify_dns && !live_dns_matches(&config, &plan, &args.nameserver).await? {
            eprintln!("nolist: live DNS does not match the plan; not starting");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        let shutdown = CancellationToken::new();
        let metrics = lifecycle::serve_metrics(&config, &shutdown).await?;
        let mut daemon = Daemon::new(config).start(&plan, shutdown.clone()).await?;
        let notifier = Notifier::from_env();
        notifier.send("READY=1\nSTATUS=serving");
        let watchdog = Notifier::watchdog_interval()
            .map(|every| tokio::spawn(crate::notify::watchdog(every, shutdown.clone())));
        while signals.next().await == super::Signal::Reload {
            notifier.send("RELOADING=1");
            let reloaded = match load(args) {
                Ok((config, plan)) => daemon
                    .reload(config, &plan)
                    .await
                    .map_err(|e| e.to_string()),
                Err(LoadError::Config(e)) => Err(e.to_string()),
                Err(LoadError::Lint(findings)) => {
                    Err(format!("{findings}the plan has lint errors"))
                }
            };
            let result = if reloaded.is_ok() { "ok" } else { "failed" };
            metrics::counter!(crate::metrics::RELOADS, "result" => result).increment(1);
            match reloaded {
                Ok(()) => tracing::info!("reloaded {}", args.config.display()),
                Err(why) => {
                    tracing::error!("reload failed, still running the previous config: {why}");
                }
            }
            notifier.send("READY=1\nSTATUS=serving");
        }
        tracing::info!("shutting down");
        notifier.send("STOPPING=1");
        shutdown.cancel();
        for task in watchdog.into_iter().chain(metrics) {
            let _ = task.await;
        }
        let stopped = daemon.shutdown().await;
        tracing::info!(
            dropped_events = stopped.dropped_events,
            dropped_log_lines = logging.as_ref().map_or(0, super::log::Log::dropped),
            "stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
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
