//! `nolist replay`: runs the log parsers and the ban policy over existing
//! logs in log time and prints every decision, like `fail2ban-regex` but
//! end to end. Writes nothing but its output.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, UNIX_EPOCH};

use clap::ValueEnum;
use serde::Serialize;

use super::{Failure, stdout_result};
use crate::bans::{Action, Decision, Engine, Policy, Seen};
use crate::clock::{LogClock, unix_now};
use crate::config;
use crate::watch::tail::{DEFAULT_MAX_LINE, Lines, PollStats};
use crate::watch::time::{Tz, rfc3339};
use crate::watch::{DecoySpec, Kind, LineParser};

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The nolist config file (YAML): its `mta` and `bans` sections apply.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Log files, oldest first.
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReplayFormat::Text)]
    pub format: ReplayFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReplayFormat {
    /// One line per decision, then a summary.
    Text,
    /// One JSON object per line per decision, then one `{"summary": …}` line.
    Json,
}

/// What the replay saw and decided.
#[derive(Debug, Default, Serialize)]
struct Summary {
    files: usize,
    lines: u64,
    deliveries: u64,
    decoy_hits: u64,
    bans: u64,
    unbans: u64,
    retries: u64,
    pending: usize,
    clients_held: usize,
    first: Option<String>,
    last: Option<String>,
    overlong_lines: u64,
    future_lines: u64,
    seconds: f64,
    lines_per_second: u64,
}

#[derive(Serialize)]
struct JsonDecision<'a> {
    action: Action,
    ip: std::net::IpAddr,
    at: String,
    until: Option<String>,
    reason: &'a str,
    hits: u32,
    first_hit: Option<String>,
    last_hit: Option<String>,
    offence: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<ipnet::IpNet>,
}

fn json_line(d: &Decision) -> String {
    let doc = JsonDecision {
        action: d.action,
        ip: d.ip,
        at: rfc3339(d.at),
        until: d.until.map(rfc3339),
        reason: &d.reason,
        hits: d.hits,
        first_hit: d.first_hit.map(rfc3339),
        last_hit: d.last_hit.map(rfc3339),
        offence: d.offence,
        network: d.network,
    };
    serde_json::to_string(&doc).unwrap_or_default()
}

fn text_line(d: &Decision) -> String {
    match d.action {
        Action::Ban => format!(
            "{} ban   {:<39} until {}  hits {}  offence {}  {}",
            rfc3339(d.at),
            d.ip,
            d.until.map(rfc3339).unwrap_or_default(),
            d.hits,
            d.offence,
            d.reason
        ),
        Action::Unban => format!("{} unban {:<39} {}", rfc3339(d.at), d.ip, d.reason),
        Action::RetryExempt => format!(
            "{} retry {:<39} until {}  {}",
            rfc3339(d.at),
            d.ip,
            d.until.map(rfc3339).unwrap_or_default(),
            d.reason
        ),
    }
}

pub(crate) fn run(args: &ReplayArgs) -> Result<ExitCode, Failure> {
    let config = config::load(&args.config)?;
    let decoy = DecoySpec {
        syslog_name: config.mta.decoy_syslog_name.clone(),
        reply: config.mta.decoy_reply.clone(),
    };
    let mut engine = Engine::new(Policy::from_config(&config));
    let zone = || {
        Box::new(Tz::for_logs(
            config.mta.timezone.as_ref().map(|z| z.0.as_str()),
        ))
    };
    let mut summary = Summary::default();
    let mut decisions = Vec::new();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let started = Instant::now();
    // Log time, never ahead of the file being read (crate::clock).
    let mut clock: Option<LogClock> = None;
    let mut first = None::<i64>;
    let mut buf = vec![0; 1 << 18];
    let mut read = PollStats::default();
    for path in &args.logs {
        let io_err = |source| Failure::Io {
            context: format!("reading {}", path.display()),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let mtime = file
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let reference = LogClock::reference(mtime, unix_now());
        let clock = match &mut clock {
            Some(c) => {
                c.next_file(reference);
                c
            }
            None => clock.insert(LogClock::new(reference)),
        };
        let mut parser = LineParser::with_zone(config.mta.format, &decoy, reference, zone());
        summary.files += 1;
        // The lines `run` would see: the tailer's splitter, with its cap.
        let mut lines = Lines::default();
        let mut failed = None;
        let mut each = |text: &[u8]| {
            if failed.is_some() {
                return;
            }
            let event = parser.parse(text);
            let Some(stamp) = parser.line_time() else {
                return;
            };
            let at = clock.observe(stamp);
            if let Some(now) = clock.now() {
                engine.advance(now, &mut decisions);
            }
            if let Some(event) = event {
                first.get_or_insert(at);
                match event.kind {
                    Kind::DecoyHit => {
                        summary.decoy_hits += 1;
                        let seen = event.envelope.map_or(Seen::Nothing, Seen::Envelope);
                        engine.hit_seen(event.ip, at, seen, &mut decisions);
                    }
                    Kind::Delivery => {
                        summary.deliveries += 1;
                        engine.delivery(event.ip, at, &mut decisions);
                    }
                }
            }
            if !decisions.is_empty() {
                failed = emit(&mut out, &mut decisions, args.format, &mut summary).err();
            }
        };
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            lines.feed(&buf[..n], DEFAULT_MAX_LINE, &mut each, &mut read);
        }
        lines.finish(&mut each, &mut read);
        if let Some(failure) = failed {
            return Err(failure);
        }
    }
    summary.lines = read.lines;
    summary.overlong_lines = read.overlong;
    let last = clock.and_then(|c| c.now());
    summary.future_lines = clock.map_or(0, |c| c.suspicious());
    if let Some(end) = last {
        engine.advance(end, &mut decisions);
        emit(&mut out, &mut decisions, args.format, &mut summary)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    summary.pending = engine.pending();
    summary.clients_held = engine.sizes().clients;
    summary.first = first.map(rfc3339);
    summary.last = last.map(rfc3339);
    summary.seconds = (seconds * 1000.0).round() / 1000.0;
    summary.lines_per_second = if seconds > 0.0 {
        (summary.lines as f64 / seconds) as u64
    } else {
        0
    };
    let written = match args.format {
        ReplayFormat::Json => writeln!(out, "{}", serde_json::json!({ "summary": &summary })),
        ReplayFormat::Text => writeln!(
            out,
            "\n{} lines in {} file(s): {} deliveries, {} decoy hits -> {} bans, {} unbans, {} retries; {} clients pending (grace not over); {} .. {}; {:.3} s ({} lines/s)",
            summary.lines,
            summary.files,
            summary.deliveries,
            summary.decoy_hits,
            summary.bans,
            summary.unbans,
            summary.retries,
            summary.pending,
            summary.first.as_deref().unwrap_or("-"),
            summary.last.as_deref().unwrap_or("-"),
            summary.seconds,
            summary.lines_per_second
        ),
    };
    stdout_result(written.and_then(|()| out.flush()))?;
    Ok(ExitCode::SUCCESS)
}

fn emit(
    out: &mut impl Write,
    decisions: &mut Vec<Decision>,
    format: ReplayFormat,
    summary: &mut Summary,
) -> Result<(), Failure> {
    for d in decisions.drain(..) {
        match d.action {
            Action::Ban => summary.bans += 1,
            Action::Unban => summary.unbans += 1,
            Action::RetryExempt => summary.retries += 1,
        }
        let text = match format {
            ReplayFormat::Json => json_line(&d),
            ReplayFormat::Text => text_line(&d),
        };
        stdout_result(writeln!(out, "{text}"))?;
    }
    Ok(())
}
