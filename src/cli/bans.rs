//! `nolist bans list|add|remove` and `nolist status`: operate on the state
//! store, also while the daemon runs (SQLite WAL).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::Serialize;

use super::{EXIT_FAILED, Failure, print};
use crate::clock::unix_now;
use crate::config::{Config, Name, value};
use crate::dnsbl::{self, export};
use crate::fleet::event::{self, BanSource, Body};
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
        /// How long (at most 3650d).
        #[arg(long = "for", value_name = "DURATION", default_value = "1d", value_parser = ban_length)]
        duration: std::time::Duration,
        /// Why (shown in `bans list`).
        #[arg(long, default_value = "manual ban")]
        reason: String,
        /// Ban even a target that covers a planned MX address, loopback,
        /// a `bans.ignore` or `bans.allow` network, or more than a /8
        /// (IPv4) or /32 (IPv6).
        #[arg(long)]
        force: bool,
    },
    /// Lift a ban.
    Remove {
        /// The address or network as listed.
        target: String,
    },
    /// Write the bans in force for other servers: an rbldnsd data file,
    /// one target per line, or JSON with each ban's end. With `dns.dnsbl`,
    /// only the bans it publishes.
    Export {
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write FILE, atomically (readers see the old or the new file,
        /// never a part); default: standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ExportFormat {
    /// rbldnsd's `combined` data file (serve it as ZONE:combined:FILE).
    Rbldnsd,
    /// One address or network per line.
    Plain,
    /// `nolist.bans/1` JSON, with each ban's end.
    Json,
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

/// What a command does with the store: `bans list` and `status` only read
/// it (and so create, migrate and write nothing); `bans remove` changes a
/// store that must exist; only `bans add` may create one (the daemon picks
/// the ban up when it starts).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Change,
    Create,
}

/// The config at `config`, with `--state-dir` applied.
fn load(config: Option<&PathBuf>, state_dir: Option<&PathBuf>) -> Result<Config, Failure> {
    let Some(path) = config else {
        return Err(Failure::Usage(
            "-c FILE is required: the config's state_dir holds the store".into(),
        ));
    };
    Ok(super::load_config(path, state_dir.map(PathBuf::as_path))?)
}

/// The store in the config's `state_dir`, opened for `access`.
fn open(config: &Config, access: Access) -> Result<Store, Failure> {
    let dir = &config.state_dir;
    match access {
        Access::Read => Ok(Store::open_read_only(dir)?),
        Access::Change => {
            // A store that is missing or empty is an error here, not a new one.
            drop(Store::open_read_only(dir)?);
            Ok(Store::open(dir)?)
        }
        Access::Create => Ok(Store::open(dir)?),
    }
}

/// `--for`: a duration of at most [`value::MAX_BAN`].
fn ban_length(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    value::ban_length(value::Duration(d))
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

/// A Unix time as RFC 3339, held to the years 0000 to 9999 that RFC 3339
/// can write (a store from an older nolist may hold ends beyond).
fn time(unix: i64) -> String {
    /// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const FIRST: i64 = -62_167_219_200;
    const LAST: i64 = 253_402_300_799;
    rfc3339(unix.clamp(FIRST, LAST))
}

/// Why a manual ban needs `--force`: it would shut out someone the ban
/// engine never bans, or a great many addresses at once.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Risk {
    /// It covers an address of a planned MX host.
    Mx { ip: IpAddr, domain: Name },
    /// It covers loopback.
    Loopback(IpNet),
    /// It overlaps a `bans.ignore` network.
    Ignored(IpNet),
    /// It overlaps a `bans.allow.networks` network.
    Allowed(IpNet),
    /// It is wider than `/widest`.
    Wide { widest: u8 },
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Risk::Mx { ip, domain } => write!(
                f,
                "it covers the planned MX address {ip} of {}",
                domain.as_str()
            ),
            Risk::Loopback(net) => write!(f, "it covers loopback ({net})"),
            Risk::Ignored(net) => write!(f, "it overlaps {net} in bans.ignore"),
            Risk::Allowed(net) => write!(f, "it overlaps {net} in bans.allow.networks"),
            Risk::Wide { widest } => write!(f, "it is wider than /{widest}"),
        }
    }
}

/// Loopback, which nolist never bans.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The prefixes beyond which a manual ban is too wide to be a slip-free
/// decision: a /8 for IPv4, a /32 (a whole provider) for IPv6.
const WIDEST_V4: u8 = 8;
const WIDEST_V6: u8 = 32;

/// What a manual ban of `target` would shut out that it should not (see [`Risk`]).
fn risks(config: &Config, target: IpNet) -> Vec<Risk> {
    let overlaps = |net: &IpNet| target.contains(net) || net.contains(&target);
    let loopback: Vec<IpNet> = LOOPBACK.iter().filter_map(|l| l.parse().ok()).collect();
    let mut out: Vec<Risk> = config
        .domains
        .iter()
        .flat_map(|d| {
            d.hosts()
                .flat_map(|(_, h)| h.addresses())
                .map(move |ip| (ip, d))
        })
        .filter(|(ip, _)| target.contains(ip))
        .map(|(ip, d)| Risk::Mx {
            ip,
            domain: d.name.clone(),
        })
        .collect();
    out.dedup();
    out.extend(
        loopback
            .iter()
            .filter(|l| overlaps(l))
            .copied()
            .map(Risk::Loopback),
    );
    // Loopback in bans.ignore (as by default) is told once, as loopback.
    let ignored = config
        .bans
        .ignore
        .iter()
        .map(|c| c.0)
        .filter(|n| overlaps(n) && !loopback.iter().any(|l| l.contains(n)));
    out.extend(ignored.map(Risk::Ignored));
    let allowed = config.bans.allow.networks.iter().map(|c| c.0);
    out.extend(allowed.filter(|n| overlaps(n)).map(Risk::Allowed));
    let widest = if target.addr().is_ipv4() {
        WIDEST_V4
    } else {
        WIDEST_V6
    };
    if target.prefix_len() < widest {
        out.push(Risk::Wide { widest });
    }
    out
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
            let config = load(args.config.as_ref(), args.state_dir.as_ref())?;
            let store = open(&config, Access::Read)?;
            let bans = store.bans(unix_now())?;
            let text = match format {
                Format::Json => {
                    let rows: Vec<JsonBan<'_>> = bans
                        .iter()
                        .map(|b| JsonBan {
                            target: b.target.to_string(),
                            since: time(b.since),
                            until: time(b.until),
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
                            // IpNet's Display ignores the width: pad its text.
                            b.target.to_string(),
                            time(b.until),
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
        BansAction::Export { format, out } => {
            let config = load(args.config.as_ref(), args.state_dir.as_ref())?;
            let now = unix_now();
            let text = export(&config, &open(&config, Access::Read)?, *format, now)?;
            match out {
                Some(path) => {
                    nolist_durable::write_atomically(path, text.as_bytes()).map_err(|source| {
                        Failure::Io {
                            context: format!("writing {}", path.display()),
                            source,
                        }
                    })?
                }
                None => print(&text)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        BansAction::Add {
            target: text,
            duration,
            reason,
            force,
        } => {
            let target = target(text)?;
            if target.prefix_len() == 0 {
                return Err(Failure::Usage(format!(
                    "bans: {target} would close the enforced ports to every address; nolist does not enforce it"
                )));
            }
            let config = load(args.config.as_ref(), args.state_dir.as_ref())?;
            let risks = risks(&config, target);
            if !risks.is_empty() && !force {
                let mut text = format!("bans: not banning {target}:\n");
                for r in &risks {
                    text.push_str(&format!("  {r}\n"));
                }
                text.push_str("add --force to ban it anyway");
                return Err(Failure::Usage(text));
            }
            for r in &risks {
                eprintln!("nolist: warning: banning {target} although {r} (--force)");
            }
            let mut store = open(&config, Access::Create)?;
            let now = unix_now();
            let until = now.saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX));
            let ban = BanRecord {
                target,
                since: now,
                until,
                reason: reason.clone(),
                hits: 0,
                offence: 1,
                source: Source::Manual,
            };
            // With a fleet, the ban goes to every node (through the outbox,
            // in the same transaction), unless it is wider than a message
            // may carry: a forced wide ban stays here.
            match (&config.fleet, event::target(&target.to_string())) {
                (Some(_), Ok(_)) => {
                    let body = Body::Ban {
                        target,
                        until,
                        hits: 0,
                        offence: 1,
                        source: BanSource::Manual,
                    };
                    store.add_ban_published(&ban, &event::encode_body(&body))?;
                }
                (Some(_), Err(why)) => {
                    eprintln!(
                        "nolist: warning: {why}: the ban stays on this node, the fleet is not told"
                    );
                    store.add_ban(&ban)?;
                }
                (None, _) => store.add_ban(&ban)?,
            }
            print(&format!("banned {target} until {}\n", time(until)))?;
            Ok(ExitCode::SUCCESS)
        }
        BansAction::Remove { target: text } => {
            let target = target(text)?;
            let config = load(args.config.as_ref(), args.state_dir.as_ref())?;
            let mut store = open(&config, Access::Change)?;
            let now = unix_now();
            let fleet = config.fleet.is_some() && event::target(&target.to_string()).is_ok();
            let removed = if fleet {
                // Every node lifts it, whether or not this one had it.
                let body = event::encode_body(&Body::Unban { target });
                store.remove_ban_published(&target, now, "removed by hand", &body)?
            } else {
                store.remove_ban(&target, now, "removed by hand")?
            };
            match (removed, fleet) {
                (true, _) => {
                    print(&format!("unbanned {target}\n"))?;
                    Ok(ExitCode::SUCCESS)
                }
                (false, true) => {
                    print(&format!(
                        "{target} is not banned on this node; the unban goes to the fleet\n"
                    ))?;
                    Ok(ExitCode::SUCCESS)
                }
                (false, false) => {
                    eprintln!("nolist: {target} is not banned");
                    Ok(ExitCode::from(EXIT_FAILED))
                }
            }
        }
    }
}

/// The bans in force at `now` that `dns.dnsbl` publishes (all without
/// it), in `format`.
fn export(
    config: &Config,
    store: &Store,
    format: ExportFormat,
    now: i64,
) -> Result<String, Failure> {
    let mut bans = store.bans(now)?;
    let publish = match &config.dns.dnsbl {
        Some(bl) => dnsbl::publish_bits(Some(bl)),
        None => dnsbl::ENGINE | dnsbl::MANUAL,
    };
    bans.retain(|b| dnsbl::List::publishes(publish, b.source));
    bans.sort_by_key(|b| b.target);
    Ok(match format {
        ExportFormat::Plain => export::plain(&bans),
        ExportFormat::Json => export::json(&bans, now),
        ExportFormat::Rbldnsd => {
            let values = config
                .dns
                .dnsbl
                .as_ref()
                .map_or_else(export::Values::default, |bl| export::Values {
                    answer: bl.answer,
                    txt: bl.txt.as_ref(),
                });
            export::rbldnsd(&bans, &values, now)
        }
    })
}

pub(crate) fn status(args: &StatusArgs) -> Result<ExitCode, Failure> {
    let config = load(Some(&args.config), args.state_dir.as_ref())?;
    let store = open(&config, Access::Read)?;
    let now = unix_now();
    let status = store.status(now, 10)?;
    let fleet = match &config.fleet {
        Some(f) => Some(fleet_status(&store, f, now)?),
        None => None,
    };
    let text = match args.format {
        Format::Json => {
            let mut value = serde_json::to_value(&status).unwrap_or_default();
            if let (Some(fleet), Some(map)) = (&fleet, value.as_object_mut()) {
                map.insert(
                    "fleet".into(),
                    serde_json::to_value(fleet).unwrap_or_default(),
                );
            }
            format!(
                "{}\n",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            )
        }
        Format::Text => {
            let mut out = format!(
                "bans in force: {} ({} manual)\nnetworks with remembered deliveries: {}\nnetworks exempt after a retry: {}\ndecisions recorded: {}\n",
                status.active_bans,
                status.manual_bans,
                status.delivering_networks,
                status.retry_exempt_networks,
                status.decisions
            );
            if !status.recent.is_empty() {
                out.push_str("latest decisions:\n");
                for r in &status.recent {
                    out.push_str(&format!(
                        "  {} {:<5} {} {}\n",
                        time(r.at),
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
                    time(c.updated)
                ));
            }
            if let Some(fleet) = &fleet {
                out.push_str(&fleet.text());
            }
            out
        }
    };
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The fleet as this node last heard of it, for `nolist status`.
#[derive(Debug, serde::Serialize)]
struct FleetStatus {
    /// This node.
    node: String,
    /// Its messages not yet published.
    outbox_backlog: u64,
    /// Where it reads the shared log on from (`epoch id`).
    cursor: Option<String>,
    /// Every node's latest report (as the engine kept them).
    nodes: Vec<NodeStatus>,
}

#[derive(Debug, serde::Serialize)]
struct NodeStatus {
    node: String,
    /// Seconds since its last report.
    last_seen_s: i64,
    /// Whether that is longer than `fleet.silent_after`.
    silent: bool,
    /// An MTA node's watermark lag in seconds (now - watermark).
    watermark_lag_s: Option<i64>,
    outbox_backlog: Option<u64>,
    consumer_lag_s: Option<i64>,
    held_back: Option<u64>,
}

fn fleet_status(
    store: &store::Store,
    fleet: &crate::config::Fleet,
    now: i64,
) -> Result<FleetStatus, Failure> {
    let (state, backlog) = if store.has_fleet()? {
        (store.fleet_state()?, store.outbox_backlog()?)
    } else {
        (store::FleetState::default(), 0)
    };
    let silent_after = i64::try_from(fleet.silent_after.as_secs()).unwrap_or(i64::MAX);
    let nodes = state
        .reports
        .iter()
        .map(|(node, json)| {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let int = |k: &str| v.get(k).and_then(serde_json::Value::as_i64);
            let last_seen_s = now - int("at").unwrap_or(0);
            NodeStatus {
                node: node.clone(),
                last_seen_s,
                silent: last_seen_s > silent_after,
                watermark_lag_s: int("watermark").map(|w| now - w),
                outbox_backlog: v.get("outbox").and_then(serde_json::Value::as_u64),
                consumer_lag_s: int("consumer_lag_s"),
                held_back: v.get("held_back").and_then(serde_json::Value::as_u64),
            }
        })
        .collect();
    Ok(FleetStatus {
        node: fleet.node.to_string(),
        outbox_backlog: backlog,
        cursor: state.cursor,
        nodes,
    })
}

impl FleetStatus {
    fn text(&self) -> String {
        let mut out = format!(
            "fleet node {}: {} message(s) not yet published, cursor {}\n",
            self.node,
            self.outbox_backlog,
            self.cursor
                .as_deref()
                .unwrap_or("none (bootstraps at start)")
        );
        for n in &self.nodes {
            let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v}s"));
            out.push_str(&format!(
                "  {:<16} last seen {}s ago{}, watermark lag {}, outbox {}, consumer lag {}\n",
                n.node,
                n.last_seen_s,
                if n.silent { " (SILENT)" } else { "" },
                opt(n.watermark_lag_s),
                n.outbox_backlog
                    .map_or_else(|| "-".to_owned(), |v| v.to_string()),
                opt(n.consumer_lag_s),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(bans: &str) -> Config {
        let yaml = format!(
            "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20], ipv6: [\"2001:db8:20::25\"] }}
bans: {bans}
"
        );
        crate::config::parse(&yaml, Path::new("t.yaml")).unwrap()
    }

    fn risks_of(config: &Config, target: &str) -> Vec<String> {
        let target = store::parse_target(target).unwrap();
        risks(config, target).iter().map(Risk::to_string).collect()
    }

    #[test]
    fn manual_bans_that_shut_out_the_wrong_clients_are_named() {
        let c = config(
            "{ ignore: [\"::1\", 127.0.0.0/8, 10.0.0.0/8], allow: { networks: [198.51.100.0/24] } }",
        );
        assert_eq!(
            risks_of(&c, "192.0.2.0/24"),
            [
                "it covers the planned MX address 192.0.2.10 of example.org",
                "it covers the planned MX address 192.0.2.20 of example.org"
            ]
        );
        assert_eq!(
            risks_of(&c, "2001:db8:20::/48"),
            ["it covers the planned MX address 2001:db8:20::25 of example.org"]
        );
        assert_eq!(
            risks_of(&c, "127.0.0.2"),
            ["it covers loopback (127.0.0.0/8)"]
        );
        assert_eq!(
            risks_of(&c, "::ffff:127.0.0.1"),
            ["it covers loopback (127.0.0.0/8)"]
        );
        assert_eq!(risks_of(&c, "::1"), ["it covers loopback (::1/128)"]);
        assert_eq!(
            risks_of(&c, "10.1.2.3"),
            ["it overlaps 10.0.0.0/8 in bans.ignore"]
        );
        assert_eq!(
            risks_of(&c, "198.51.100.128/25"),
            ["it overlaps 198.51.100.0/24 in bans.allow.networks"]
        );
        assert_eq!(risks_of(&c, "128.0.0.0/2"), ["it is wider than /8"]);
        assert_eq!(
            risks_of(&c, "2001:db8::/31"),
            [
                "it covers the planned MX address 2001:db8:20::25 of example.org",
                "it is wider than /32"
            ]
        );
        for fine in ["203.0.113.9", "203.0.0.0/8", "192.0.2.11", "2001:db9::/32"] {
            assert!(risks_of(&c, fine).is_empty(), "{fine}");
        }
    }

    #[test]
    fn printed_times_stay_within_rfc_3339_years() {
        assert_eq!(time(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(time(i64::MIN), "0000-01-01T00:00:00Z");
        assert_eq!(time(1_795_867_201), rfc3339(1_795_867_201));
    }
}
