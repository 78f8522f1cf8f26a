//! `nolist bans list|add|remove` and `nolist status`: operate on the state
//! store, also while the daemon runs (SQLite WAL).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::{EXIT_FAILED, Failure, print};
use crate::daemon::unix_now;
use crate::store::{self, BanRecord, Source, Store};
use crate::watch::time::rfc3339;

#[derive(Debug, clap::Args)]
pub(crate) struct BansArgs {
    /// The nolist config file (YAML): its `state_dir` holds the store.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Use the store in DIR instead of the config's `state_dir` (as
    /// `run --state-dir`).
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub action: BansAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BansAction {
    /// The bans in force.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Ban an address or network by hand.
    Add {
        /// An IP address or a CIDR network (host bits zero).
        target: String,
        /// How long.
        #[arg(long = "for", value_name = "DURATION", default_value = "1d", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (shown in `bans list`).
        #[arg(long, default_value = "manual ban")]
        reason: String,
    },
    /// Lift a ban.
    Remove {
        /// The address or network as listed.
        target: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Use the store in DIR instead of the config's `state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Text,
    /// JSON.
    Json,
}

/// Whether a command may create the store: only `bans add` does (the
/// daemon picks the ban up when it starts); reading a store that is not
/// there is an error, not an empty answer and a new directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    Yes,
    No,
}

fn open(
    config: Option<&PathBuf>,
    state_dir: Option<&PathBuf>,
    create: Create,
) -> Result<Store, Failure> {
    let Some(path) = config else {
        return Err(Failure::Usage(
            "-c FILE is required: the config's state_dir holds the store".into(),
        ));
    };
    let dir = super::load_config(path, state_dir.map(PathBuf::as_path))?.state_dir;
    let file = Store::file(&dir);
    if create == Create::No && !file.exists() {
        return Err(Failure::Usage(format!(
            "no nolist store at {} (`nolist run` or `nolist bans add` creates it; is state_dir or --state-dir right?)",
            file.display()
        )));
    }
    Store::open(&dir).map_err(|e| Failure::Usage(e.to_string()))
}

#[derive(Serialize)]
struct JsonBan<'a> {
    target: String,
    since: String,
    until: String,
    reason: &'a str,
    hits: u32,
    offence: u32,
    source: Source,
}

pub(crate) fn bans(args: &BansArgs) -> Result<ExitCode, Failure> {
    let target =
        |text: &str| store::parse_target(text).map_err(|e| Failure::Usage(format!("bans: {e}")));
    match &args.action {
        BansAction::List { format } => {
            let store = open(args.config.as_ref(), args.state_dir.as_ref(), Create::No)?;
            let bans = store
                .bans(unix_now())
                .map_err(|e| Failure::Usage(e.to_string()))?;
            let text = match format {
                Format::Json => {
                    let rows: Vec<JsonBan<'_>> = bans
                        .iter()
                        .map(|b| JsonBan {
                            target: b.target.to_string(),
                            since: rfc3339(b.since),
                            until: rfc3339(b.until),
                            reason: &b.reason,
                            hits: b.hits,
                            offence: b.offence,
                            source: b.source,
                        })
                        .collect();
                    format!(
                        "{}\n",
                        serde_json::to_string_pretty(&rows).unwrap_or_default()
                    )
                }
                Format::Text => {
                    let mut out = String::new();
                    for b in &bans {
                        out.push_str(&format!(
                            "{:<43} until {}  {:<6}  hits {:<4} {}\n",
                            b.target,
                            rfc3339(b.until),
                            if b.source == Source::Manual {
                                "manual"
                            } else {
                                "engine"
                            },
                            b.hits,
                            b.reason
                        ));
                    }
                    out.push_str(&format!("{} ban(s) in force\n", bans.len()));
                    out
                }
            };
            print(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        BansAction::Add {
            target: text,
            duration,
            reason,
        } => {
            let target = target(text)?;
            if target.prefix_len() == 0 {
                return Err(Failure::Usage(format!(
                    "bans: {target} would close the enforced ports to every address; nolist does not enforce it"
                )));
            }
            let mut store = open(args.config.as_ref(), args.state_dir.as_ref(), Create::Yes)?;
            let now = unix_now();
            let until = now.saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
            store
                .add_ban(&BanRecord {
                    target,
                    since: now,
                    until,
                    reason: reason.clone(),
                    hits: 0,
                    offence: 1,
                    source: Source::Manual,
                })
                .map_err(|e| Failure::Usage(e.to_string()))?;
            print(&format!("banned {target} until {}\n", rfc3339(until)))?;
            Ok(ExitCode::SUCCESS)
        }
        BansAction::Remove { target: text } => {
            let target = target(text)?;
            let mut store = open(args.config.as_ref(), args.state_dir.as_ref(), Create::No)?;
            let removed = store
                .remove_ban(&target, unix_now(), "removed by hand")
                .map_err(|e| Failure::Usage(e.to_string()))?;
            if removed {
                print(&format!("unbanned {target}\n"))?;
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("nolist: {target} is not banned");
                Ok(ExitCode::from(EXIT_FAILED))
            }
        }
    }
}

pub(crate) fn status(args: &StatusArgs) -> Result<ExitCode, Failure> {
    let store = open(Some(&args.config), args.state_dir.as_ref(), Create::No)?;
    let status = store
        .status(unix_now(), 10)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let text = match args.format {
        Format::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        ),
        Format::Text => {
            let mut out = format!(
                "bans in force: {} ({} manual)\nnetworks with remembered deliveries: {}\ndecisions recorded: {}\n",
                status.active_bans,
                status.manual_bans,
                status.delivering_networks,
                status.decisions
            );
            if !status.recent.is_empty() {
                out.push_str("latest decisions:\n");
                for r in &status.recent {
                    out.push_str(&format!(
                        "  {} {:<5} {} {}\n",
                        rfc3339(r.at),
                        r.action,
                        r.target,
                        r.reason
                    ));
                }
            }
            for c in &status.checkpoints {
                out.push_str(&format!(
                    "checkpoint {}: {} (saved {})\n",
                    c.path,
                    c.state,
                    rfc3339(c.updated)
                ));
            }
            out
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}
