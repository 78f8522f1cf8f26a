//! The command line: raw flags (clap) are turned into calls into the
//! library, and this module alone prints. Exit codes follow the contract:
//! 0 ok, 1 checks failed or lint errors, 2 usage or config error.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::ConfigError;
use crate::plan::Finding;

mod bans;
mod diff;
mod init;
mod log;
mod man;
mod plan;
mod probe;
mod replay;
mod run;
mod serve;
mod verify;

/// Runs a mail domain's nolisting defence end to end.
///
/// Nolisting: the lowest-preference MX of a mail domain (the decoy) never
/// accepts mail. Real MTAs retry at the next MX; many spam bots try only
/// one and give up. nolist plans the MX records from one config file
/// (nolist.yaml(5)), serves or pushes them, verifies live DNS and the MX
/// hosts, and runs the decoy, the log watcher, the ban engine and firewall
/// enforcement.
///
/// A first setup: `nolist init` (from a Postfix configuration), then `nolist
/// plan`, `nolist verify` and `nolist run`. Exit status: 0 ok, 1 checks
/// failed or lint errors, 2 usage, config or startup errors. The
/// environment variable NOLIST_LOG (tracing's env-filter syntax) sets what
/// the daemons log.
#[derive(Debug, Parser)]
#[command(name = "nolist", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute and lint the MX layout; print it as zone records, JSON or an nsupdate script.
    Plan(plan::PlanArgs),
    /// Serve the planned zones authoritatively over UDP and TCP.
    ///
    /// Answers for the planned zones (and `domains[].base_zone`) on
    /// `dns.serve.listen` or `--listen`, transfers them to `dns.serve.axfr_allow`,
    /// and answers the `dns.dnsbl` zone from the state store. SIGHUP reloads
    /// the config and bumps the changed zones' serials; SIGTERM or SIGINT
    /// drains.
    Serve(serve::ServeArgs),
    /// Check live DNS and the MX hosts' SMTP answers against the plan.
    Verify(verify::VerifyArgs),
    /// Run the daemon: decoy responder, log watcher, ban engine and nftables enforcement.
    ///
    /// Plans the zones (lint errors refuse to start), serves the decoy
    /// addresses (`responder.mode`), follows the MTA logs (`mta.logs`),
    /// decides bans (`bans`) and enforces them (`bans.enforce.backend`),
    /// keeping its state in `state_dir`. It tells systemd when it is ready,
    /// reloads its config on SIGHUP and drains on SIGTERM or SIGINT.
    Run(run::RunArgs),
    /// One SMTP dialogue up to RCPT (never DATA), like `swaks --quit-after RCPT`.
    Probe(probe::ProbeArgs),
    /// Run the log parsers and the ban policy over existing logs and print the decisions.
    Replay(replay::ReplayArgs),
    /// List, add or remove bans in the state store.
    Bans(bans::BansArgs),
    /// Counts, latest decisions and log checkpoints from the state store.
    ///
    /// Reads the store in the config's `state_dir` (or `--state-dir`), also
    /// while `nolist run` writes it.
    Status(bans::StatusArgs),
    /// Compare the records nolist owns at the DNS provider with the plan (exit 1 on drift).
    Diff(diff::DiffArgs),
    /// Push the plan's records to the DNS provider, then read back and confirm.
    Apply(diff::ApplyArgs),
    /// Write a first config from a Postfix setup (and live DNS), and print the next steps.
    Init(init::InitArgs),
    /// Print a shell completion script (bash, zsh or fish) on standard output.
    ///
    /// Bash: save it as /usr/share/bash-completion/completions/nolist (or
    /// source it from ~/.bashrc). Zsh: save it as `_nolist` in a directory of
    /// `$fpath`. Fish: save it as ~/.config/fish/completions/nolist.fish.
    /// The Debian package installs all three.
    Completions(man::CompletionsArgs),
    /// Write the manual pages (nolist(1), one page per subcommand,
    /// nolist.yaml(5)) into a directory; used by the package build.
    #[command(hide = true)]
    Manpages(man::ManpagesArgs),
}

/// What went wrong; [`Failure::exit_code`] maps it to the exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad arguments, or arguments that do not fit the config.
    #[error("{0}")]
    Usage(String),
    /// A runtime failure: output or a file that could not be written, a
    /// socket that could not be bound.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// The state store could not be opened or used.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The daemon could not start.
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    /// The zones could not be built.
    #[error(transparent)]
    Zones(#[from] crate::dns::ZoneError),
    /// The user answered no: nothing was done.
    #[error("not applied")]
    #[cfg_attr(
        not(feature = "providers"),
        allow(dead_code, reason = "only apply asks")
    )]
    Declined,
}

impl Failure {
    /// The exit code (docs/exit-codes.md): 1 when the user declined; 2
    /// for usage and config errors, and for the runtime failures that stop
    /// a command before it did anything (docs/exit-codes.md lists them with 2).
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Declined => EXIT_FAILED,
            Failure::Config(_) | Failure::Usage(_) => EXIT_USAGE,
            Failure::Io { .. } | Failure::Store(_) | Failure::Daemon(_) | Failure::Zones(_) => {
                EXIT_RUNTIME
            }
        }
    }
}

/// Exit code for "checks failed / lint errors / drift".
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code for usage and config errors.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for a runtime failure that stopped a command before it did
/// anything (the contract gives these 2, like usage errors).
pub(crate) const EXIT_RUNTIME: u8 = 2;

/// Parses `std::env::args`, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Bans(args) => bans::bans(&args),
        Command::Status(args) => bans::status(&args),
        Command::Diff(args) => diff::diff(&args),
        Command::Apply(args) => diff::apply(&args),
        Command::Init(args) => init::run(&args),
        Command::Completions(args) => man::completions(&args),
        Command::Manpages(args) => man::manpages(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nolist: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr through [`log::Log`]: a bounded, lossy buffer written
/// in batches by a thread of its own, so a stalled stderr (a full pipe, a
/// hung log collector) drops log lines instead of blocking the responder or
/// the DNS workers. hickory's per-query warnings pass its
/// [`log::Throttle`]: the first each minute, then a count. `NOLIST_LOG`
/// (tracing's env-filter syntax) overrides the default filter. Keep the
/// returned value alive: dropping it writes what is pending. Without the
/// thread (it could not start) lines go straight to stderr, unthrottled.
pub(crate) fn init_logging() -> Option<log::Log> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let filter = tracing_subscriber::EnvFilter::try_from_env("NOLIST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,hickory_resolver=warn",
        )
    });
    let ansi = io::IsTerminal::is_terminal(&io::stderr());
    let log = log::Log::start(io::stderr()).ok();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match &log {
        Some(log) => registry
            .with(
                fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(log.writer())
                    .with_filter(log.throttle()),
            )
            .try_init(),
        None => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(io::stderr))
            .try_init(),
    };
    log
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT.
    Stop,
}

/// SIGHUP, SIGTERM and SIGINT, installed before a daemon announces that it
/// listens, so a signal sent right after that line is never lost to the
/// default action (termination without draining).
pub(crate) struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime).
    pub(crate) fn install() -> Result<Signals, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |kind| {
            signal(kind).map_err(|source| Failure::Io {
                context: "installing signal handlers".into(),
                source,
            })
        };
        Ok(Signals {
            hup: sig(SignalKind::hangup())?,
            term: sig(SignalKind::terminate())?,
            int: sig(SignalKind::interrupt())?,
        })
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
        }
    }
}

/// The async runtime for the networked commands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Failure::Io {
            context: "starting the async runtime".into(),
            source,
        })
}

/// The config at `path`, with a `--state-dir` flag's directory in place
/// of its `state_dir`.
pub(crate) fn load_config(
    path: &Path,
    state_dir: Option<&Path>,
) -> Result<crate::config::Config, ConfigError> {
    let mut config = crate::config::load(path)?;
    if let Some(dir) = state_dir {
        config.state_dir = dir.to_owned();
    }
    Ok(config)
}

/// Lint findings as `file:line:col: severity[id]: message` lines.
pub(crate) fn findings_text(config: &Path, findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = write!(out, "{}", config.display());
        if let Some(at) = f.at {
            let _ = write!(out, ":{}:{}", at.line, at.column);
        }
        let _ = writeln!(out, ": {}[{}]: {}", f.severity, f.id, f.message);
    }
    out
}

/// Writes to stdout; a closed pipe (`nolist plan | head`) is not an error.
pub(crate) fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout_result(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
}

/// The outcome of a write to stdout: a closed pipe is success.
pub(crate) fn stdout_result(result: io::Result<()>) -> Result<(), Failure> {
    match result {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Io {
            context: "writing to standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes every `(path, text)` of `files` durably through temporary files
/// and renames, so a reader never sees half a zone; one sync of the file
/// system for all of them (`nolist_durable::write_all_atomically`).
pub(crate) fn write_all_atomically(files: &[(std::path::PathBuf, String)]) -> Result<(), Failure> {
    nolist_durable::write_all_atomically(files.iter().map(|(p, t)| (p.as_path(), t.as_bytes())))
        .map_err(|e| Failure::Io {
            context: format!("writing {}", e.path.display()),
            source: e.source,
        })
}
