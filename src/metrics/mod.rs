//! Prometheus metrics of `nolist run`: every metric's name and help text in
//! one place, and the `/metrics` endpoint. The code that counts uses the
//! `metrics` facade (a no-op until [`install`] runs, so `replay` and the
//! tests count nothing); the endpoint renders the [`Registry`] behind it.
//!
//! The endpoint is a deliberately small HTTP/1.x server: `GET /metrics`
//! only, one request per connection, requests of at most 8 KiB read within
//! 5 s, at most 16 connections at once. A scraper is trusted no more than
//! an SMTP client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

mod registry;

pub use registry::Registry;

/// Decoy sessions, by furthest stage and how they ended.
pub const SESSIONS: &str = "nolist_smtp_sessions_total";
/// Decoy sessions open now.
pub const SESSIONS_OPEN: &str = "nolist_smtp_sessions_open";
/// Session events the ban engine's queue had no room for.
pub const EVENTS_DROPPED: &str = "nolist_smtp_events_dropped_total";
/// Decoy hits the engine was given, by source.
pub const HITS: &str = "nolist_decoy_hits_total";
/// Deliveries through a real MX seen in the logs.
pub const DELIVERIES: &str = "nolist_deliveries_total";
/// Ban decisions of the engine.
pub const BANS_ADDED: &str = "nolist_bans_added_total";
/// Unban decisions of the engine (expiry, delivery, reload).
pub const BANS_REMOVED: &str = "nolist_bans_removed_total";
/// Retrying MTAs recognised (retry-exempt decisions).
pub const RETRIES: &str = "nolist_retries_total";
/// New retry fingerprints not recorded because the table was full.
pub const RETRY_TABLE_FULL: &str = "nolist_retry_table_full_total";
/// Bans in force in the store (engine and manual).
pub const BANS_ACTIVE: &str = "nolist_bans_active";
/// Complete log lines read.
pub const LOG_LINES: &str = "nolist_log_lines_total";
/// Log lines that could not be parsed: no readable time stamp for the
/// configured format, or longer than 64 KiB.
pub const LOG_PARSE_ERRORS: &str = "nolist_log_parse_errors_total";
/// Log lines stamped more than the allowed clock skew in the future: they
/// count as now (see `crate::clock`).
pub const LOG_FUTURE_LINES: &str = "nolist_log_future_lines_total";
/// Firewall elements added and removed by reconciles.
pub const FIREWALL_CHANGES: &str = "nolist_firewall_changes_total";
/// Let-through elements (retry-exempt networks) added and removed by
/// reconciles.
pub const PASS_CHANGES: &str = "nolist_pass_changes_total";
/// Reconciles (or evidence readings) that failed.
pub const ENFORCEMENT_ERRORS: &str = "nolist_enforcement_errors_total";
/// DNS messages received, by transport.
pub const DNS_QUERIES: &str = "nolist_dns_queries_total";
/// Counter, by `proto` and `rcode`.
pub const DNS_RESPONSES: &str = "nolist_dns_responses_total";
/// Counter, by `kind` (`full`, `followed`).
pub const RECONCILES: &str = "nolist_enforcement_reconciles_total";
/// Gauge, by `kind`: how long the last one took.
pub const RECONCILE_SECONDS: &str = "nolist_enforcement_reconcile_seconds";
/// Gauge, by `log`.
pub const LOG_LAG: &str = "nolist_log_lag_seconds";
/// Questions to the DNSBL zone, by how they were answered.
pub const DNSBL_QUERIES: &str = "nolist_dnsbl_queries_total";
/// Addresses and networks the DNSBL lists now.
pub const DNSBL_LISTED: &str = "nolist_dnsbl_listed";
/// Config reloads, by result.
pub const RELOADS: &str = "nolist_reloads_total";
/// Fleet messages, by direction (published, received).
pub const FLEET_MESSAGES: &str = "nolist_fleet_messages_total";
/// Fleet messages skipped, by reason.
pub const FLEET_SKIPPED: &str = "nolist_fleet_skipped_total";
/// Other nodes' bans refused because a local list exempts the target.
pub const FLEET_REFUSED: &str = "nolist_fleet_refused_bans_total";
/// Failed calls to the fleet's engine.
pub const FLEET_ERRORS: &str = "nolist_fleet_engine_errors_total";
/// This node's messages not yet published.
pub const FLEET_OUTBOX: &str = "nolist_fleet_outbox_backlog";
/// How far the shared log is ahead of what this node applied, in seconds.
pub const FLEET_CONSUMER_LAG: &str = "nolist_fleet_consumer_lag_seconds";
/// Judgements held back until every MTA node's watermark passes them.
pub const FLEET_HELD_BACK: &str = "nolist_fleet_held_back";
/// Seconds since each node's last report, by node.
pub const FLEET_LAST_SEEN: &str = "nolist_fleet_node_last_seen_seconds";
/// How far each MTA node's watermark is behind now, by node.
pub const FLEET_WATERMARK_LAG: &str = "nolist_fleet_watermark_lag_seconds";

/// The process already has a metrics recorder: [`install`] ran before.
#[derive(Debug, thiserror::Error)]
#[error("installing the metrics recorder: this process has one already")]
pub struct AlreadyInstalled;

/// Installs a [`Registry`] as the global recorder and describes every
/// metric; the registry returned renders them. Call it once, before
/// anything counts (counters fetched before it count nothing).
pub fn install() -> Result<Registry, AlreadyInstalled> {
    let registry = Registry::default();
    metrics::set_global_recorder(registry.clone()).map_err(|_| AlreadyInstalled)?;
    describe();
    register();
    Ok(registry)
}

/// The metrics `/metrics` shows from its first answer whatever the config
/// (those of the fleet and the DNSBL, and per-log series, appear when
/// configured).
pub const ALWAYS: [&str; 18] = [
    SESSIONS,
    SESSIONS_OPEN,
    EVENTS_DROPPED,
    HITS,
    DELIVERIES,
    BANS_ADDED,
    BANS_REMOVED,
    RETRIES,
    RETRY_TABLE_FULL,
    BANS_ACTIVE,
    FIREWALL_CHANGES,
    PASS_CHANGES,
    ENFORCEMENT_ERRORS,
    DNS_QUERIES,
    DNS_RESPONSES,
    RECONCILES,
    RECONCILE_SECONDS,
    RELOADS,
];

/// The `rcode` labels of [`DNS_RESPONSES`], by the header's RCODE (0–5);
/// any other is `other`.
pub const RCODES: [&str; 7] = [
    "noerror", "formerr", "servfail", "nxdomain", "notimp", "refused", "other",
];

/// Creates at 0 every series whose labels are known before anything
/// happens, whatever the config: a dashboard or an alert never meets a
/// missing series (`rate()` over an absent counter is no data, not 0).
/// Series labelled by what only the config or the traffic names (a log's
/// path, a fleet node) appear with it; the fleet's and the DNSBL's when
/// configured.
fn register() {
    use crate::smtp::dialogue::{End, Stage};
    for stage in Stage::ALL {
        for end in End::ALL {
            metrics::counter!(SESSIONS, "stage" => stage.as_str(), "end" => end.as_str())
                .increment(0);
        }
    }
    for name in [
        EVENTS_DROPPED,
        DELIVERIES,
        BANS_ADDED,
        BANS_REMOVED,
        RETRIES,
        RETRY_TABLE_FULL,
        ENFORCEMENT_ERRORS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for source in ["responder", "log", "firewall"] {
        metrics::counter!(HITS, "source" => source).increment(0);
    }
    for op in ["add", "remove"] {
        metrics::counter!(FIREWALL_CHANGES, "op" => op).increment(0);
        metrics::counter!(PASS_CHANGES, "op" => op).increment(0);
    }
    for proto in ["udp", "tcp"] {
        metrics::counter!(DNS_QUERIES, "proto" => proto).increment(0);
        for rcode in RCODES {
            metrics::counter!(DNS_RESPONSES, "proto" => proto, "rcode" => rcode).increment(0);
        }
    }
    for kind in ["full", "followed"] {
        metrics::counter!(RECONCILES, "kind" => kind).increment(0);
        metrics::gauge!(RECONCILE_SECONDS, "kind" => kind).increment(0.0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!(RELOADS, "result" => result).increment(0);
    }
    metrics::gauge!(SESSIONS_OPEN).increment(0.0);
    // Set at its value by enforcement, or by the writer without one.
    metrics::gauge!(BANS_ACTIVE).increment(0.0);
}

/// Describes every metric to the current recorder: the `# HELP` lines.
fn describe() {
    for (name, help) in [
        (
            SESSIONS,
            "Decoy SMTP sessions, by furthest stage reached and how they ended.",
        ),
        (
            EVENTS_DROPPED,
            "Session events dropped because the ban engine's queue was full.",
        ),
        (
            HITS,
            "Decoy hits given to the ban engine, by source (responder, log, firewall).",
        ),
        (
            DELIVERIES,
            "Deliveries through a real MX seen in the MTA logs.",
        ),
        (BANS_ADDED, "Bans decided by the engine."),
        (
            BANS_REMOVED,
            "Bans lifted by the engine (expired, delivered, exempt after reload).",
        ),
        (
            RETRIES,
            "Retrying MTAs recognised: networks made exempt from bans and let through.",
        ),
        (
            RETRY_TABLE_FULL,
            "New retry fingerprints not recorded because the table was full.",
        ),
        (LOG_LINES, "Complete MTA log lines read, by log."),
        (
            LOG_PARSE_ERRORS,
            "MTA log lines without a readable time stamp or over 64 KiB, by log.",
        ),
        (
            LOG_FUTURE_LINES,
            "MTA log lines stamped in the future beyond the allowed skew (counted as now), by log.",
        ),
        (
            FIREWALL_CHANGES,
            "Firewall elements changed by reconciles, by operation (add, remove).",
        ),
        (
            PASS_CHANGES,
            "Let-through (retry-exempt networks reset at the decoy) elements changed by reconciles, by operation (add, remove).",
        ),
        (
            ENFORCEMENT_ERRORS,
            "Failed enforcement reconciles and evidence readings.",
        ),
        (
            DNS_QUERIES,
            "DNS messages answered, by transport (udp, tcp).",
        ),
        (
            DNS_RESPONSES,
            "DNS responses sent, by transport (udp, tcp) and RCODE (noerror, formerr, servfail, nxdomain, notimp, refused, other).",
        ),
        (
            RECONCILES,
            "Enforcement reconciles, by kind (full: every ban read; followed: only the bans the history names).",
        ),
        (
            DNSBL_QUERIES,
            "Questions to the DNSBL zone, by answer (records: a listing, or the apex's SOA/NS; nodata; nxdomain: not listed; refused: a transfer).",
        ),
        (RELOADS, "SIGHUP reloads, by result (ok, failed)."),
        (
            FLEET_MESSAGES,
            "Fleet messages, by direction (published: this node's; received: other nodes', applied).",
        ),
        (
            FLEET_SKIPPED,
            "Fleet messages skipped, by reason (malformed, version, invalid, too_large, duplicate).",
        ),
        (
            FLEET_REFUSED,
            "Other nodes' bans refused because bans.ignore, bans.allow or a planned MX covers the target here.",
        ),
        (FLEET_ERRORS, "Failed calls to the fleet's engine (Redis)."),
    ] {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_gauge!(SESSIONS_OPEN, "Decoy SMTP sessions open now.");
    for (name, help) in [
        (
            FLEET_OUTBOX,
            "This node's fleet messages not yet published.",
        ),
        (
            RECONCILE_SECONDS,
            "Seconds the last enforcement reconcile of each kind took (reading the bans, computing and applying the change).",
        ),
        (
            LOG_LAG,
            "Seconds between the newest decoy hit or delivery read from an MTA log and the moment it was read, by log (as of the last read that found one).",
        ),
        (
            DNSBL_LISTED,
            "Addresses and networks in the DNSBL's list (an ended ban until the feed's next sweep, never answered; test entries aside).",
        ),
        (
            FLEET_CONSUMER_LAG,
            "Seconds between the newest shared-log entry and the last one this node applied.",
        ),
        (
            FLEET_HELD_BACK,
            "Judgements held back until every MTA node's watermark passes them.",
        ),
        (
            FLEET_LAST_SEEN,
            "Seconds since each fleet node's last report, by node.",
        ),
        (
            FLEET_WATERMARK_LAG,
            "Seconds each MTA node's watermark is behind now, by node.",
        ),
    ] {
        metrics::describe_gauge!(name, help);
    }
    metrics::describe_gauge!(
        BANS_ACTIVE,
        "Bans in force in the state store (engine and manual)."
    );
}

/// Most scrape connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// The longest request accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time for a scraper to send its request and read the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Registry, shutdown: CancellationToken) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A permit before accept: a full endpoint leaves scrapers in the backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            () = shutdown.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(TIMEOUT, answer(stream, &metrics)).await;
        });
    }
}

/// Reads one request and answers it.
async fn answer(mut stream: tokio::net::TcpStream, metrics: &Registry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => respond(&mut stream, "200 OK", &metrics.render()).await,
        (Some("GET"), Some(_)) => {
            respond(&mut stream, "404 Not Found", "not found; try /metrics\n").await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests;
