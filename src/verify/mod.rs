//! `verify`: compare the live DNS and the live SMTP answers with the plan.
//!
//! The work is split so that only two small modules touch the network:
//!
//! ```text
//!  Plan + Config ──expectations──▶ [Expected] ──resolve::observe──▶ [DomainObservation]
//!                                        │                                │
//!                                        ├──────────check::domain─────────┤
//!                                        │                                │
//!                                        └──smtp::targets──▶ [Target] ◀───┘
//!                                                               │
//!                                            probes::run ──▶ [ProbeReport]
//!                                                               │
//!                                                          smtp::judge
//!                                                               │
//!                                 Report ──report::{text,json}──▶ String
//! ```
//!
//! - [`expectations`] (pure) reads the plan: the MX RRset, the addresses of
//!   every MX host, the NS set, the responder mode.
//! - `resolve` (private) is the hickory edge: it asks a
//!   [`crate::resolver::Resolver`] (the system's, or only the
//!   `--nameserver`s; cache off, bounded timeouts and attempts, at most
//!   `concurrency` queries in flight) and returns plain observations.
//! - [`check`] (pure) turns expectations and observations into checks with a
//!   stable id, a status and a sentence.
//! - [`smtp`] (pure) picks the addresses to probe (every resolved address of
//!   every MX host) and judges each probe against the host's role and the
//!   configured `responder.mode`.
//! - `probes` (private) is the SMTP edge: it runs [`crate::smtp::probe`]
//!   against the targets, in parallel (bounded), one connection per address
//!   at a time. Never sends DATA.
//! - [`report`] (pure) renders the text table and the `nolist.verify/1` JSON.

pub mod check;
pub mod observe;
mod probes;
pub mod report;
mod resolve;
pub mod smtp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use check::{CHECKS, Check, CheckKind, Status};
pub use observe::{Answer, DomainObservation, HostAnswer, LiveMx, QueryError};
pub use report::{DomainReport, ProbeEntry, Report, Resolver, Smtp, SmtpRun};

use hickory_resolver::net::NetError;

use crate::config::{Config, Layout, Mode, Name};
use crate::plan::{Mx, Plan};
use crate::resolver::ResolverError;

/// What one domain should look like, read off the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The mail domain.
    pub origin: Name,
    /// Its layout (`tail-highest` is checked for `sandwich` only).
    pub layout: Layout,
    /// The planned MX RRset, with roles.
    pub mx: Vec<Mx>,
    /// Every MX host name of the domain (absolute, `mx01.example.org.`) →
    /// its configured addresses (empty when none are configured).
    pub hosts: BTreeMap<String, Addresses>,
    /// The planned NS set (empty for a fragment: then `ns-records` is not checked).
    pub ns: Vec<Name>,
    /// How the decoys answer (`responder.mode`), for `smtp-decoy`.
    pub mode: Mode,
}

/// The planned addresses of one host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    /// A records.
    pub ipv4: BTreeSet<Ipv4Addr>,
    /// AAAA records.
    pub ipv6: BTreeSet<Ipv6Addr>,
}

impl Addresses {
    /// True when no address is configured.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_empty() && self.ipv6.is_empty()
    }

    fn insert(&mut self, address: IpAddr) {
        match address {
            IpAddr::V4(a) => {
                self.ipv4.insert(a);
            }
            IpAddr::V6(a) => {
                self.ipv6.insert(a);
            }
        }
    }
}

/// The expectations for every zone of `plan`, in plan order.
///
/// A host's addresses are those of the plan (A/AAAA records of the zone that
/// contains it, whichever planned zone that is) plus those configured for it
/// anywhere in `config`, so that `shop.example`'s MX hosts in `example.net`
/// are held to the addresses given there. Build the plan from the whole
/// config, then narrow the result (e.g. for `--domain`).
pub fn expectations(plan: &Plan, config: &Config) -> Vec<Expected> {
    let mut known: BTreeMap<String, Addresses> = BTreeMap::new();
    for zone in &plan.zones {
        for a in &zone.addresses {
            known
                .entry(a.name.to_string())
                .or_default()
                .insert(a.address);
        }
    }
    for domain in &config.domains {
        for (_, host) in domain.hosts() {
            if let Some(name) = host.target.host() {
                let entry = known.entry(name.to_string()).or_default();
                for address in host.addresses() {
                    entry.insert(address);
                }
            }
        }
    }
    plan.zones
        .iter()
        .map(|zone| Expected {
            origin: zone.origin.clone(),
            layout: zone.layout,
            mx: zone.mx.clone(),
            hosts: zone
                .mx
                .iter()
                .filter_map(|mx| mx.host.host())
                .map(|name| {
                    let key = name.to_string();
                    let addresses = known.get(&key).cloned().unwrap_or_default();
                    (key, addresses)
                })
                .collect(),
            ns: zone.ns.clone(),
            mode: config.responder.mode,
        })
        .collect()
}

/// How to ask.
#[derive(Clone, Debug)]
pub struct Options {
    /// Ask only these servers; empty: the system resolver (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Also discover each zone's NS set and ask every server directly.
    pub authoritative: bool,
    /// The port the authoritative servers are asked on (53).
    pub ns_port: u16,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a query is sent at most (timeouts and errors are retried).
    pub tries: usize,
    /// Queries in flight at most.
    pub concurrency: usize,
    /// `--dns-only`: SMTP was deliberately skipped.
    pub dns_only: bool,
    /// `--tcp`: ask the given nameservers over TCP only.
    pub tcp: bool,
    /// How to probe the MX hosts (unless `dns_only`).
    pub smtp: SmtpOptions,
}

/// How the SMTP probes are made.
#[derive(Clone, Debug)]
pub struct SmtpOptions {
    /// The port every MX address is probed on (25).
    pub port: u16,
    /// Limit for the connect and for each reply.
    pub timeout: Duration,
    /// The EHLO/HELO name.
    pub helo: String,
    /// The RCPT TO address for every domain; `None`: `postmaster@<domain>`.
    pub rcpt: Option<String>,
    /// Addresses probed at once at most.
    pub concurrency: usize,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            port: 25,
            timeout: DEFAULT_SMTP_TIMEOUT,
            helo: DEFAULT_HELO.into(),
            rcpt: None,
            concurrency: DEFAULT_SMTP_CONCURRENCY,
        }
    }
}

/// The default SMTP timeout (connect, and each reply).
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The default number of addresses probed at once.
pub const DEFAULT_SMTP_CONCURRENCY: usize = 16;
/// The default EHLO name (the same as `nolist probe`'s).
pub const DEFAULT_HELO: &str = "nolist-probe.invalid";

impl Default for Options {
    fn default() -> Self {
        Options {
            nameservers: Vec::new(),
            authoritative: false,
            ns_port: 53,
            timeout: DEFAULT_TIMEOUT,
            tries: 2,
            concurrency: DEFAULT_CONCURRENCY,
            dns_only: false,
            tcp: false,
            smtp: SmtpOptions::default(),
        }
    }
}

/// The default timeout for one DNS answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The default number of DNS queries in flight.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// Why `verify` could not run at all (as opposed to checks that fail).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The system resolver configuration could not be read.
    #[error("cannot use the system resolver (/etc/resolv.conf): {0}; pass --nameserver IP:PORT")]
    SystemResolver(NetError),
    /// The system resolver configuration lists no server.
    #[error(
        "cannot use the system resolver (/etc/resolv.conf): it lists no nameserver; pass --nameserver IP:PORT"
    )]
    NoSystemNameserver,
    /// The resolver could not be built from the given options.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(NetError),
}

impl From<ResolverError> for VerifyError {
    fn from(e: ResolverError) -> Self {
        match e {
            ResolverError::SystemConf(e) => VerifyError::SystemResolver(e),
            ResolverError::NoSystemNameserver => VerifyError::NoSystemNameserver,
            ResolverError::Build(e) => VerifyError::Resolver(e),
        }
    }
}

/// Verifies every expected domain against the live DNS and, unless
/// `dns_only`, probes every resolved address of every MX host.
///
/// Runs on the caller's tokio runtime. Errors only when no query can be sent
/// at all; every per-domain problem is a failed check in the report.
pub async fn run(expected: &[Expected], options: &Options) -> Result<Report, VerifyError> {
    let (resolver, observations) = resolve::observe(expected, options).await?;
    let mut domains: Vec<DomainReport> = expected
        .iter()
        .zip(&observations)
        .map(|(exp, obs)| DomainReport {
            domain: exp.origin.clone(),
            layout: exp.layout,
            mx: obs.mx.records().map(|r| {
                let mut r = r.to_vec();
                r.sort();
                r
            }),
            checks: check::domain(exp, obs),
            probes: Vec::new(),
        })
        .collect();
    if options.dns_only {
        return Ok(Report {
            resolver,
            authoritative: options.authoritative,
            smtp: Smtp::Skipped,
            domains,
        });
    }

    let smtp = &options.smtp;
    let planned: Vec<Vec<smtp::Planned>> = expected
        .iter()
        .zip(&observations)
        .map(|(exp, obs)| {
            let rcpt = smtp.rcpt.clone().unwrap_or_else(|| smtp::postmaster(exp));
            smtp::targets(exp, obs, smtp.port, &rcpt)
        })
        .collect();
    let targets: Vec<smtp::Target> = planned
        .iter()
        .flatten()
        .filter_map(|p| match p {
            smtp::Planned::Probe(t) => Some(t.clone()),
            smtp::Planned::Skip(_) => None,
        })
        .collect();
    let probed = probes::run(&targets, smtp).await;
    for ((domain, exp), planned) in domains.iter_mut().zip(expected).zip(planned) {
        for step in planned {
            let target = match step {
                smtp::Planned::Skip(check) => {
                    domain.checks.push(check);
                    continue;
                }
                smtp::Planned::Probe(target) => target,
            };
            let key = (target.address, target.rcpt.clone());
            let Some(report) = probed.reports.get(&key) else {
                domain.checks.push(smtp::missing(&target));
                continue;
            };
            domain
                .checks
                .extend(smtp::judge(&target, exp.mode, report, smtp.timeout));
            domain.probes.push(ProbeEntry {
                host: target.host,
                role: target.role,
                recipient: target.rcpt,
                report: report.clone(),
            });
        }
    }
    Ok(Report {
        resolver,
        authoritative: options.authoritative,
        smtp: Smtp::Probed(SmtpRun {
            port: smtp.port,
            timeout: smtp.timeout,
            helo: smtp.helo.clone(),
            rcpt: smtp.rcpt.clone(),
            mode: expected.first().map_or(Mode::default(), |e| e.mode),
            connections: probed.connections,
        }),
        domains,
    })
}
