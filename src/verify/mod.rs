//! `verify`: compare the live DNS with the plan.
//!
//! The work is split so that only one small module touches the network:
//!
//! ```text
//!  Plan + Config ──expectations──▶ [Expected] ──resolve::observe──▶ [DomainObservation]
//!                                        │                                │
//!                                        └──────────check::domain─────────┘
//!                                                        │
//!                                                  Report ──report::{text,json}──▶ String
//! ```
//!
//! - [`expectations`] (pure) reads the plan: the MX RRset, the addresses of
//!   every MX host, the NS set.
//! - `resolve` (private) is the hickory edge: it asks the resolver (the system's, or
//!   only the `--nameserver`s; cache off, bounded timeouts and attempts, at
//!   most `concurrency` queries in flight) and returns plain observations.
//! - [`check`] (pure) turns expectations and observations into checks with a
//!   stable id, a status and a sentence.
//! - [`report`] (pure) renders the text table and the `nolist.verify/1` JSON.
//!
//! SMTP probes belong to a later issue; the report says they were not run.

pub mod check;
pub mod observe;
pub mod report;
mod resolve;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use check::{CHECKS, Check, CheckKind, Status};
pub use observe::{Answer, DomainObservation, HostAnswer, LiveMx, QueryError};
pub use report::{DomainReport, Report, Resolver, Smtp};

use crate::config::{Config, Layout, Name};
use crate::plan::{Mx, Plan};

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
}

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
    /// The system resolver configuration could not be read or has no server.
    #[error("cannot use the system resolver (/etc/resolv.conf): {0}; pass --nameserver IP:PORT")]
    SystemResolver(String),
    /// The resolver could not be built from the given options.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// Verifies every expected domain against the live DNS.
///
/// Runs on the caller's tokio runtime. Errors only when no query can be sent
/// at all; every per-domain problem is a failed check in the report.
pub async fn run(expected: &[Expected], options: &Options) -> Result<Report, VerifyError> {
    let (resolver, observations) = resolve::observe(expected, options).await?;
    let domains = expected
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
        })
        .collect();
    Ok(Report {
        resolver,
        authoritative: options.authoritative,
        smtp: if options.dns_only {
            Smtp::Skipped
        } else {
            Smtp::NotImplemented
        },
        domains,
    })
}
