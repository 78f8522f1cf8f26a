//! Evidence sources: each one watches one thing and sends [`Evidence`] to
//! the engine. The responder's decoy sessions arrive through its own
//! bounded, lossy queue ([`crate::smtp::responder::EventSink`]) and become
//! evidence in the engine task; the MTA log tailers and the firewall's
//! counts of refused connections send [`Evidence`] themselves. A new source
//! (a fleet peer, say) is one more sender with an [`Origin`] of its own:
//! the engine task only counts its hits under its own label, and the ban
//! policy (`bans::Engine`) does not change.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bans::{Envelope, Seen};
use crate::clock::unix_now;
use crate::config::Config;
use crate::enforce::SynCounts;
use crate::smtp::dialogue::End;
use crate::smtp::responder::SessionEvent;
use crate::store::{Store, StoreError};
use crate::watch::tail::{Checkpoint, Tailer};
use crate::watch::time::Tz;
use crate::watch::{DecoySpec, Kind, LineParser};

/// Evidence per message from a tailer: a big catch-up is split.
const BATCH: usize = 4096;

/// Where a piece of evidence comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A decoy session of the responder.
    Responder,
    /// An MTA log: its path (the key of its checkpoint in the store) and,
    /// when it moved, where its tailer stands after these lines (JSON).
    Log {
        /// The log file.
        path: String,
        /// The tailer's checkpoint after these lines.
        checkpoint: Option<String>,
        /// Wall-clock time up to which every line of the log has been read
        /// (a fleet MTA node's watermark); `None` unless the fleet needs it.
        read_to: Option<i64>,
    },
    /// Connections to the decoy that the firewall refused and counted
    /// (refuse mode).
    Firewall,
}

/// One dated observation about a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When it happened (Unix seconds, never later than the wall clock).
    pub at: i64,
    /// The client.
    pub ip: IpAddr,
    /// A decoy hit or a delivery through a real MX.
    pub kind: Kind,
    /// What a decoy hit reveals for retry recognition.
    pub seen: Seen,
}

/// Events from one source, in the order it saw them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The source.
    pub origin: Origin,
    /// What it saw.
    pub events: Vec<Event>,
}

impl Evidence {
    /// A decoy session as evidence: one hit, dated when it connected (at
    /// most `now`).
    pub fn session(s: &SessionEvent, now: i64) -> Evidence {
        let at = s
            .started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        Evidence {
            origin: Origin::Responder,
            events: vec![Event {
                at: at.min(now),
                ip: s.client.ip(),
                kind: Kind::DecoyHit,
                seen: session_seen(s),
            }],
        }
    }
}

/// What a responder session reveals for retry recognition: its envelope
/// when it got as far as a RCPT after a MAIL, its network alone when it
/// was a `greet-*` banner, else nothing.
pub fn session_seen(s: &SessionEvent) -> Seen {
    match (&s.mail_from, &s.first_rcpt, s.end) {
        (Some(from), Some(to), _) => Seen::Envelope(Envelope::of(from.as_bytes(), to.as_bytes())),
        (_, _, End::Greeted) => Seen::Network,
        _ => Seen::Nothing,
    }
}

/// Starts one tailer thread per log in `config.mta.logs`, resuming from the
/// store's checkpoints, each looking for new lines every `poll`. Threads
/// stop when `shutdown` is cancelled. A fleet MTA node's tailers also say
/// how far each log is read, every poll (its watermark).
pub(crate) fn spawn_tailers(
    config: &Config,
    store: &Store,
    tx: &mpsc::Sender<Evidence>,
    poll: Duration,
    shutdown: &CancellationToken,
) -> Result<Vec<std::thread::JoinHandle<()>>, StoreError> {
    let decoy = DecoySpec {
        syslog_name: config.mta.decoy_syslog_name.clone(),
        reply: config.mta.decoy_reply.clone(),
    };
    let mut handles = Vec::new();
    for path in &config.mta.logs {
        let key = path.display().to_string();
        let checkpoint: Option<Checkpoint> = store
            .checkpoint(&key)?
            .and_then(|json| match serde_json::from_str(&json) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(log = %key, error = %e, "ignoring an unreadable checkpoint; reading the log from its start");
                    None
                }
            });
        let zone = Tz::for_logs(config.mta.timezone.as_ref().map(|z| z.0.as_str()));
        let parser = LineParser::with_zone(config.mta.format, &decoy, unix_now(), Box::new(zone));
        let tailer = Tailer::resume(path.clone(), checkpoint);
        let (tx, shutdown) = (tx.clone(), shutdown.clone());
        let progress = config.fleet.as_ref().is_some_and(|f| f.is_mta_node());
        handles.push(super::spawn("nolist-tail", move || {
            tail_loop(&key, tailer, parser, &tx, poll, progress, &shutdown);
        }));
    }
    Ok(handles)
}

fn tail_loop(
    key: &str,
    mut tailer: Tailer,
    mut parser: LineParser,
    tx: &mpsc::Sender<Evidence>,
    poll: Duration,
    progress: bool,
    shutdown: &CancellationToken,
) {
    let mut saved: Option<String> = None;
    let mut reported = i64::MIN;
    let lines = metrics::counter!(crate::metrics::LOG_LINES, "log" => key.to_owned());
    let errors = metrics::counter!(crate::metrics::LOG_PARSE_ERRORS, "log" => key.to_owned());
    let future = metrics::counter!(crate::metrics::LOG_FUTURE_LINES, "log" => key.to_owned());
    let lag = metrics::gauge!(crate::metrics::LOG_LAG, "log" => key.to_owned());
    let mut unstamped = 0;
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let mut events = Vec::new();
        let now = unix_now();
        parser.set_reference(now);
        let result = tailer.poll(&mut |line: &[u8]| {
            if let Some(e) = parser.parse(line) {
                // A stamp from the future counts as now (crate::clock).
                let dated = crate::clock::evidence_time(e.at, now);
                if dated.suspicious {
                    future.increment(1);
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(log = %key, stamp = %crate::watch::time::rfc3339(e.at), "a log line is stamped in the future; it counts as now (logged once per log; nolist_log_future_lines_total counts them)");
                    }
                }
                let seen = e.envelope.map_or(Seen::Nothing, Seen::Envelope);
                events.push(Event {
                    at: dated.at,
                    ip: e.ip,
                    kind: e.kind,
                    seen,
                });
            }
        });
        // Every line written a second before this poll began has been
        // read (MTAs write whole lines), once the log file exists at all.
        let mut read_to = None;
        match result {
            Ok(stats) => {
                lines.increment(stats.lines);
                errors.increment(stats.overlong + parser.unstamped() - unstamped);
                unstamped = parser.unstamped();
                if progress && tailer.checkpoint().is_some() && now - 1 > reported {
                    reported = now - 1;
                    read_to = Some(reported);
                }
            }
            Err(e) => tracing::warn!(log = %key, error = %e, "reading the MTA log failed"),
        }
        // Only a moved checkpoint is written: an idle log leaves the store idle.
        let checkpoint = tailer
            .checkpoint()
            .and_then(|c| serde_json::to_string(&c).ok())
            .filter(|c| saved.as_ref() != Some(c));
        if checkpoint.is_some() {
            saved.clone_from(&checkpoint);
        }
        if let Some(newest) = events.iter().map(|e| e.at).max() {
            #[allow(clippy::cast_precision_loss)] // seconds
            lag.set((now - newest).max(0) as f64);
        }
        if (!events.is_empty() || checkpoint.is_some() || read_to.is_some())
            && !send_log(key, events, checkpoint, read_to, tx)
        {
            return;
        }
        std::thread::sleep(poll);
    }
}

/// Sends `events` in parts of at most [`BATCH`]; only the last part carries
/// the checkpoint and how far the log is read. False when the engine is
/// gone.
fn send_log(
    key: &str,
    mut events: Vec<Event>,
    checkpoint: Option<String>,
    read_to: Option<i64>,
    tx: &mpsc::Sender<Evidence>,
) -> bool {
    let log = |checkpoint, read_to| Origin::Log {
        path: key.to_owned(),
        checkpoint,
        read_to,
    };
    while events.len() > BATCH {
        let rest = events.split_off(BATCH);
        let head = std::mem::replace(&mut events, rest);
        let part = Evidence {
            origin: log(None, None),
            events: head,
        };
        if tx.blocking_send(part).is_err() {
            return false;
        }
    }
    let last = Evidence {
        origin: log(checkpoint, read_to),
        events,
    };
    tx.blocking_send(last).is_ok()
}

/// Refuse mode with nftables: every `every`, while `enabled`, reads the
/// firewall's per-source counts of refused connections to the decoy and
/// sends the new ones as decoy hits. They carry no envelope, and a forged
/// SYN makes one: never a retry.
pub(crate) fn spawn_refused(
    enabled: Arc<AtomicBool>,
    tx: mpsc::Sender<Evidence>,
    every: Duration,
    shutdown: CancellationToken,
) -> std::thread::JoinHandle<()> {
    super::spawn("nolist-syn", move || {
        let nft = crate::enforce::nft::Nft::new(Vec::new());
        let errors = metrics::counter!(crate::metrics::ENFORCEMENT_ERRORS);
        let mut counts = SynCounts::default();
        while !shutdown.is_cancelled() {
            if enabled.load(Ordering::Relaxed) {
                let events = match nft.read_seen() {
                    Ok(reading) => {
                        let now = unix_now();
                        counts
                            .update(&reading)
                            .into_iter()
                            .flat_map(|(ip, n)| (0..n).map(move |_| (ip, now)))
                            .map(|(ip, at)| Event {
                                at,
                                ip,
                                kind: Kind::DecoyHit,
                                seen: Seen::Nothing,
                            })
                            .collect()
                    }
                    Err(e) => {
                        errors.increment(1);
                        tracing::warn!(error = %e, "reading refuse-mode evidence failed");
                        Vec::new()
                    }
                };
                let evidence = Evidence {
                    origin: Origin::Firewall,
                    events,
                };
                if !evidence.events.is_empty() && tx.blocking_send(evidence).is_err() {
                    return;
                }
            }
            wait(every, &shutdown);
        }
    })
}

/// Sleeps `total` on a blocking thread, waking early at shutdown.
pub(crate) fn wait(total: Duration, shutdown: &CancellationToken) {
    let deadline = std::time::Instant::now() + total;
    while !shutdown.is_cancelled() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
