//! The network edge of `verify`'s SMTP checks: runs [`crate::smtp::probe`]
//! against every target and returns the reports; nothing here judges.
//!
//! - Each distinct (address, recipient) is probed once per run, even when
//!   domains share MX hosts.
//! - One address gets one connection at a time (its probes run in turn), so a
//!   responder's per-client limit never turns the verifier's own parallelism
//!   into a `421`; different addresses are probed in parallel, at most
//!   `concurrency` at once.
//! - A connect-level result (refused, connect timeout, connect error) does
//!   not depend on the recipient: it is reused for the address's other
//!   recipients instead of waiting for another timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::SmtpOptions;
use super::smtp::Target;
use crate::smtp::probe::{self, ProbeOptions, ProbeReport, Step};

/// The reports, by (address, recipient), and how many connections were tried.
pub(super) struct Probed {
    /// One report per distinct (address, recipient).
    pub reports: BTreeMap<(SocketAddr, String), ProbeReport>,
    /// Connections attempted (reused connect-level results not counted).
    pub connections: usize,
}

/// Probes every target.
pub(super) async fn run(targets: &[Target], options: &SmtpOptions) -> Probed {
    let mut by_address: BTreeMap<SocketAddr, BTreeSet<String>> = BTreeMap::new();
    for t in targets {
        by_address
            .entry(t.address)
            .or_default()
            .insert(t.rcpt.clone());
    }
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (address, rcpts) in by_address {
        let permits = permits.clone();
        let base = ProbeOptions {
            helo: options.helo.clone(),
            mail_from: String::new(),
            rcpt: String::new(),
            timeout: options.timeout,
        };
        tasks.spawn(async move {
            // The semaphore is never closed; without a permit we would only
            // exceed the limit, never deadlock.
            let _permit = permits.acquire_owned().await.ok();
            let mut out = Vec::with_capacity(rcpts.len());
            let mut connections = 0;
            let mut connect_level: Option<ProbeReport> = None;
            for rcpt in rcpts {
                let report = match &connect_level {
                    Some(report) => report.clone(),
                    None => {
                        connections += 1;
                        let options = ProbeOptions {
                            rcpt: rcpt.clone(),
                            ..base.clone()
                        };
                        let report = probe::probe(address, &options).await;
                        if report.step == Step::Connect {
                            connect_level = Some(report.clone());
                        }
                        report
                    }
                };
                out.push(((address, rcpt), report));
            }
            (out, connections)
        });
    }
    let mut probed = Probed {
        reports: BTreeMap::new(),
        connections: 0,
    };
    // A task that panicked leaves its targets without a report; the caller
    // reports those as failed checks.
    while let Some(joined) = tasks.join_next().await {
        if let Ok((reports, connections)) = joined {
            probed.reports.extend(reports);
            probed.connections += connections;
        }
    }
    probed
}

#[cfg(test)]
mod tests;
