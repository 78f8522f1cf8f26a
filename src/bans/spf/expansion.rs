//! SPF expansion: the networks some domains' SPF records authorise, found
//! through an [`SpfLookup`] and evaluated without any other I/O.
//!
//! The rules (which addresses count, the fail-safe bounds, RFC 7208's
//! limits) are in the [parent module](super). Invariants kept here:
//! - every domain has its own lookup budget ([`Limits`]) and its own
//!   [`Problem`]s; one domain's failure never touches another's networks;
//! - a domain whose evaluation stops (permerror, temperror) contributes no
//!   network at all, and [`Problem::is_temporary`] says which kind it was, so
//!   a caller can keep what it had instead of shrinking the list;
//! - memory is bounded by [`Limits::max_networks`] per domain, whatever the
//!   records say.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::record::{
    DomainSpec, Mechanism, Qualifier, SpfRecord, is_spf, normalize_domain, parse_spf, shown,
};
use super::{LookupError, SpfLookup};

/// RFC 7208's processing limits plus this module's safety bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// DNS-querying terms per top domain (RFC 7208 §4.6.4: 10).
    pub dns_terms: usize,
    /// Lookups answering NXDOMAIN or nothing, per top domain (RFC: 2).
    pub void_lookups: usize,
    /// MX hosts one `mx` may have (RFC: 10).
    pub mx_hosts: usize,
    /// IPv4 networks wider than this prefix length are ignored.
    pub min_prefix_v4: u8,
    /// IPv6 networks wider than this prefix length are ignored.
    pub min_prefix_v6: u8,
    /// Networks one domain's evaluation may hold before it is refused.
    pub max_networks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            dns_terms: 10,
            void_lookups: 2,
            mx_hosts: 10,
            min_prefix_v4: 8,
            min_prefix_v6: 32,
            max_networks: 10_000,
        }
    }
}

/// The result of [`expand`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpfExpansion {
    /// Every network authorised by some domain, deduplicated and aggregated.
    pub networks: Vec<IpNet>,
    /// For each distinct domain given, in order: its normalised name, the
    /// number of (aggregated) networks it contributed — 0 when its SPF
    /// failed — and the problems met.
    pub per_domain: Vec<(String, usize, Vec<Problem>)>,
}

impl SpfExpansion {
    /// Whether some domain contributed nothing only because a lookup failed
    /// (RFC 7208's temperror): its networks are unknown this time, not gone.
    pub fn temporary_failure(&self) -> bool {
        self.per_domain
            .iter()
            .any(|(_, _, problems)| problems.iter().any(Problem::is_temporary))
    }
}

/// Something met while expanding one domain. `Display` gives the sentence
/// that is logged and shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// RFC 7208's permerror: the published records are wrong or over a
    /// limit. The domain contributes nothing.
    Perm {
        /// The domain given.
        domain: String,
        /// What is wrong, as a sentence.
        reason: String,
    },
    /// RFC 7208's temperror: a lookup failed. The domain contributes
    /// nothing this time.
    Temp {
        /// The domain given.
        domain: String,
        /// Which lookup failed and how, as a sentence.
        reason: String,
    },
    /// A term or a network was left out (it uses macros, is `ptr`, or is
    /// too wide); the domain's other networks still count.
    Skipped(String),
    /// The name given is not a domain name (shown safe); nothing was asked.
    NotADomain(String),
}

impl Problem {
    /// Whether this is a temperror: asking again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Problem::Temp { .. })
    }

    fn stopped(domain: &str, failure: Failure) -> Problem {
        let domain = domain.to_owned();
        match failure {
            Failure::Perm(reason) => Problem::Perm { domain, reason },
            Failure::Temp(reason) => Problem::Temp { domain, reason },
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Perm { domain, reason } => {
                write!(f, "permerror: {reason}; {domain} contributes nothing")
            }
            Problem::Temp { domain, reason } => {
                write!(f, "temperror: {reason}; {domain} contributes nothing")
            }
            Problem::Skipped(sentence) => f.write_str(sentence),
            Problem::NotADomain(name) => write!(f, "`{name}` is not a domain name"),
        }
    }
}

/// Resolves the SPF records of `domains`, follows `include` and `redirect`,
/// and collects the networks whose addresses would `pass`. Problems are
/// reported per domain; a failed domain contributes nothing. Domains are
/// resolved one after the other, each with its own lookup budget.
pub async fn expand(domains: &[String], lookup: &impl SpfLookup, limits: Limits) -> SpfExpansion {
    let mut networks = Vec::new();
    let mut per_domain = Vec::new();
    let mut seen = HashSet::new();
    for raw in domains {
        let Some(domain) = normalize_domain(raw.trim()) else {
            let problem = Problem::NotADomain(shown(raw));
            per_domain.push((shown(raw), 0, vec![problem]));
            continue;
        };
        if !seen.insert(domain.clone()) {
            continue;
        }
        let (nets, problems) = expand_one(&domain, lookup, limits).await;
        per_domain.push((domain, nets.len(), problems));
        networks.extend(nets);
    }
    SpfExpansion {
        networks: IpNet::aggregate(&networks),
        per_domain,
    }
}

async fn expand_one<L: SpfLookup>(
    domain: &str,
    lookup: &L,
    limits: Limits,
) -> (Vec<IpNet>, Vec<Problem>) {
    let mut eval = Eval {
        lookup,
        limits,
        dns_terms: 0,
        voids: 0,
        problems: Vec::new(),
    };
    let mut stack = Vec::new();
    match eval.check_host(domain, &mut stack).await {
        Ok(pass) => {
            let (kept, wide): (Vec<IpNet>, Vec<IpNet>) =
                pass.certain.into_iter().partition(|n| !limits.too_wide(n));
            for net in wide {
                eval.problems.push(Problem::Skipped(format!(
                    "{domain}: its networks merge into {net}, {}: ignored",
                    limits.wider_than(&net)
                )));
            }
            (kept, eval.problems)
        }
        Err(failure) => {
            eval.problems.push(Problem::stopped(domain, failure));
            (Vec::new(), eval.problems)
        }
    }
}

impl Limits {
    fn too_wide(&self, net: &IpNet) -> bool {
        match net {
            IpNet::V4(n) => n.prefix_len() < self.min_prefix_v4,
            IpNet::V6(n) => n.prefix_len() < self.min_prefix_v6,
        }
    }

    fn wider_than(&self, net: &IpNet) -> String {
        match net {
            IpNet::V4(_) => format!("wider than /{}", self.min_prefix_v4),
            IpNet::V6(_) => format!("wider than /{}", self.min_prefix_v6),
        }
    }
}

/// Why a domain's evaluation stopped (RFC 7208 §2.6); it becomes a
/// [`Problem::Perm`] or [`Problem::Temp`].
#[derive(Debug)]
enum Failure {
    /// permerror: the published records are wrong or over a limit.
    Perm(String),
    /// temperror: a lookup failed.
    Temp(String),
}

/// A set of addresses known within bounds: `certain` ⊆ the true set ⊆
/// `possible`, both aggregated. What listed terms match is exact; what an
/// unlisted term (macros, `ptr`) matches is anything from nothing to
/// everything.
#[derive(Clone, Debug, Default)]
struct Bounds {
    certain: Vec<IpNet>,
    possible: Vec<IpNet>,
}

impl Bounds {
    fn exact(nets: &[IpNet]) -> Self {
        let nets = IpNet::aggregate(&nets.to_vec());
        Bounds {
            certain: nets.clone(),
            possible: nets,
        }
    }

    fn unknown() -> Self {
        Bounds {
            certain: Vec::new(),
            possible: everything(),
        }
    }
}

/// What the terms of one record decided so far.
#[derive(Default)]
struct Sets {
    /// Addresses whose result is `pass`.
    pass: Bounds,
    /// Addresses whose result is `fail`, `softfail` or `neutral`.
    refused: Bounds,
    /// Addresses some term certainly matched: later terms never see them.
    decided: Vec<IpNet>,
}

/// One top domain's evaluation: its shared lookup budget and problems.
struct Eval<'l, L> {
    lookup: &'l L,
    limits: Limits,
    dns_terms: usize,
    voids: usize,
    problems: Vec<Problem>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<L: SpfLookup> Eval<'_, L> {
    /// The addresses for which `domain`'s record passes. `stack` holds the
    /// domains being evaluated above this one (loop detection).
    fn check_host<'a>(
        &'a mut self,
        domain: &'a str,
        stack: &'a mut Vec<String>,
    ) -> Boxed<'a, Result<Bounds, Failure>> {
        Box::pin(async move {
            let record = self.record(domain).await?;
            stack.push(domain.to_owned());
            let result = self.evaluate(domain, &record, stack).await;
            stack.pop();
            result
        })
    }

    /// The one SPF record of `domain`.
    async fn record(&mut self, domain: &str) -> Result<SpfRecord, Failure> {
        let txts = match self.lookup.txt(domain).await {
            Ok(txts) => txts,
            Err(LookupError::NxDomain) => Vec::new(),
            Err(LookupError::Failed(e)) => {
                return Err(Failure::Temp(format!(
                    "the TXT lookup of {domain} failed: {}",
                    shown(&e)
                )));
            }
        };
        let spf: Vec<&String> = txts.iter().filter(|t| is_spf(t)).collect();
        match spf.as_slice() {
            [] => Err(Failure::Perm(format!("{domain} has no SPF record"))),
            [one] => parse_spf(one).map_err(|e| Failure::Perm(format!("{domain}: {e}"))),
            many => Err(Failure::Perm(format!(
                "{domain} has {} SPF records; RFC 7208 allows one",
                many.len()
            ))),
        }
    }

    async fn evaluate(
        &mut self,
        domain: &str,
        record: &SpfRecord,
        stack: &mut Vec<String>,
    ) -> Result<Bounds, Failure> {
        let mut sets = Sets::default();
        for directive in &record.directives {
            if covers_everything(&sets.decided) {
                // First match wins: nothing after this can be reached.
                break;
            }
            let q = directive.qualifier;
            let term = directive.to_string();
            if directive.mechanism.queries_dns() {
                self.count_term(domain, &term)?;
            }
            match &directive.mechanism {
                Mechanism::All => {
                    self.apply(domain, &term, q, Bounds::exact(&everything()), &mut sets)?;
                }
                Mechanism::Ip4(net) => {
                    let matched = Bounds::exact(&[IpNet::V4(*net)]);
                    self.apply(domain, &term, q, matched, &mut sets)?;
                }
                Mechanism::Ip6(net) => {
                    let matched = Bounds::exact(&[IpNet::V6(*net)]);
                    self.apply(domain, &term, q, matched, &mut sets)?;
                }
                Mechanism::Include(DomainSpec::Name(target)) => {
                    let matched = self.follow(domain, "include", target, stack).await?;
                    self.apply(domain, &term, q, matched, &mut sets)?;
                }
                Mechanism::A {
                    domain: spec,
                    v4,
                    v6,
                } => {
                    let Some(name) = self.target(domain, spec.as_ref(), &term, q, &mut sets)?
                    else {
                        continue;
                    };
                    let addresses = self.addresses(&name, true).await?;
                    let matched = Bounds::exact(&widen(&addresses, *v4, *v6));
                    self.apply(domain, &term, q, matched, &mut sets)?;
                }
                Mechanism::Mx {
                    domain: spec,
                    v4,
                    v6,
                } => {
                    let Some(name) = self.target(domain, spec.as_ref(), &term, q, &mut sets)?
                    else {
                        continue;
                    };
                    let matched = Bounds::exact(&self.mx(domain, &name, &term, *v4, *v6).await?);
                    self.apply(domain, &term, q, matched, &mut sets)?;
                }
                Mechanism::Exists(DomainSpec::Name(name)) => {
                    let exists = !self.addresses(name, true).await?.is_empty();
                    if exists {
                        self.apply(domain, &term, q, Bounds::exact(&everything()), &mut sets)?;
                    }
                }
                Mechanism::Include(DomainSpec::Macro(_))
                | Mechanism::Exists(DomainSpec::Macro(_)) => {
                    self.unlisted(domain, &term, "uses macros", q, &mut sets)?;
                }
                Mechanism::Ptr(_) => {
                    self.unlisted(domain, &term, "is ptr", q, &mut sets)?;
                }
            }
        }
        let has_all = record
            .directives
            .iter()
            .any(|d| d.mechanism == Mechanism::All);
        if let Some(spec) = &record.redirect
            && !has_all
            && !covers_everything(&sets.decided)
        {
            let term = format!("redirect={spec}");
            self.count_term(domain, &term)?;
            match spec {
                DomainSpec::Name(target) => {
                    let matched = self.follow(domain, "redirect", target, stack).await?;
                    self.apply(domain, &term, Qualifier::Pass, matched, &mut sets)?;
                }
                DomainSpec::Macro(_) => self.problems.push(Problem::Skipped(format!(
                    "{domain}: `{term}` uses macros and cannot be listed: skipped"
                ))),
            }
        }
        Ok(sets.pass)
    }

    /// Counts a DNS-querying term against the limit.
    fn count_term(&mut self, domain: &str, term: &str) -> Result<(), Failure> {
        self.dns_terms += 1;
        if self.dns_terms > self.limits.dns_terms {
            return Err(Failure::Perm(format!(
                "{domain}: `{term}` is DNS-querying term number {}; RFC 7208 allows {}",
                self.dns_terms, self.limits.dns_terms
            )));
        }
        Ok(())
    }

    /// The pass set of `target`, included or redirected to from `domain`.
    async fn follow(
        &mut self,
        domain: &str,
        how: &str,
        target: &str,
        stack: &mut Vec<String>,
    ) -> Result<Bounds, Failure> {
        if stack.iter().any(|d| d == target) {
            return Err(Failure::Perm(format!(
                "{domain}: {how} of {target} loops ({} -> {target})",
                stack.join(" -> ")
            )));
        }
        self.check_host(target, stack).await
    }

    /// The domain an `a`/`mx` term queries; `None` (after handling it as an
    /// unlisted term) when it has macros.
    fn target(
        &mut self,
        domain: &str,
        spec: Option<&DomainSpec>,
        term: &str,
        q: Qualifier,
        sets: &mut Sets,
    ) -> Result<Option<String>, Failure> {
        match spec {
            None => Ok(Some(domain.to_owned())),
            Some(DomainSpec::Name(name)) => Ok(Some(name.clone())),
            Some(DomainSpec::Macro(_)) => {
                self.unlisted(domain, term, "uses macros", q, sets)?;
                Ok(None)
            }
        }
    }

    /// A term whose addresses cannot be listed: it may match anything from
    /// nothing to everything. A skipped `+` term only allows less; after a
    /// refusing one, no later term of this record can be trusted to allow.
    fn unlisted(
        &mut self,
        domain: &str,
        term: &str,
        why: &str,
        q: Qualifier,
        sets: &mut Sets,
    ) -> Result<(), Failure> {
        if q == Qualifier::Pass {
            self.problems.push(Problem::Skipped(format!(
                "{domain}: `{term}` {why} and cannot be listed: skipped"
            )));
        } else {
            self.problems.push(Problem::Skipped(format!(
                "{domain}: `{term}` {why} and cannot be listed; it may refuse any \
                 address, so no later term of this record allows anything"
            )));
        }
        self.apply(domain, term, q, Bounds::unknown(), sets)
    }

    /// The addresses of `name`; NXDOMAIN and NODATA count as void lookups
    /// when `void` is set.
    async fn addresses(&mut self, name: &str, void: bool) -> Result<Vec<IpAddr>, Failure> {
        let addresses = match self.lookup.a(name).await {
            Ok(addresses) => addresses,
            Err(LookupError::NxDomain) => Vec::new(),
            Err(LookupError::Failed(e)) => {
                return Err(Failure::Temp(format!(
                    "the address lookup of {name} failed: {}",
                    shown(&e)
                )));
            }
        };
        if void && addresses.is_empty() {
            self.void(name)?;
        }
        Ok(addresses)
    }

    fn void(&mut self, name: &str) -> Result<(), Failure> {
        self.voids += 1;
        if self.voids > self.limits.void_lookups {
            return Err(Failure::Perm(format!(
                "{name} answered nothing: void lookup number {}; RFC 7208 allows {}",
                self.voids, self.limits.void_lookups
            )));
        }
        Ok(())
    }

    /// The networks of an `mx` term: the addresses of `name`'s MX hosts.
    async fn mx(
        &mut self,
        domain: &str,
        name: &str,
        term: &str,
        v4: u8,
        v6: u8,
    ) -> Result<Vec<IpNet>, Failure> {
        let hosts = match self.lookup.mx(name).await {
            Ok(hosts) => hosts,
            Err(LookupError::NxDomain) => Vec::new(),
            Err(LookupError::Failed(e)) => {
                return Err(Failure::Temp(format!(
                    "the MX lookup of {name} failed: {}",
                    shown(&e)
                )));
            }
        };
        if hosts.is_empty() {
            self.void(name)?;
        }
        if hosts.len() > self.limits.mx_hosts {
            return Err(Failure::Perm(format!(
                "{domain}: `{term}`: {name} has {} MX hosts; RFC 7208 allows {}",
                hosts.len(),
                self.limits.mx_hosts
            )));
        }
        let mut matched = Vec::new();
        for host in &hosts {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            if host.is_empty() {
                continue; // null MX (RFC 7505)
            }
            let addresses = self.addresses(&host, false).await?;
            matched.extend(widen(&addresses, v4, v6));
        }
        Ok(matched)
    }

    /// Records that a term with qualifier `q` matched `matched`. Terms are
    /// first-match: a `+` term certainly passes what it certainly matches
    /// and no earlier term may have refused, and may pass what it may match
    /// and no earlier term certainly refused; the other qualifiers refuse
    /// likewise. Too-wide networks are never counted as certainly passing.
    fn apply(
        &mut self,
        domain: &str,
        term: &str,
        q: Qualifier,
        matched: Bounds,
        sets: &mut Sets,
    ) -> Result<(), Failure> {
        let max = self.limits.max_networks;
        let too_many = || Failure::Perm(format!("{domain}: more than {max} networks"));
        let mut certain = matched.certain.clone();
        if q == Qualifier::Pass {
            certain.retain(|net| {
                let wide = self.limits.too_wide(net);
                if wide {
                    self.problems.push(Problem::Skipped(format!(
                        "{domain}: `{term}` authorises {net}, {}: ignored",
                        self.limits.wider_than(net)
                    )));
                }
                !wide
            });
        }
        let (grown, against) = if q == Qualifier::Pass {
            (&mut sets.pass, &sets.refused)
        } else {
            (&mut sets.refused, &sets.pass)
        };
        let certain = subtract(&certain, &against.possible, max).ok_or_else(too_many)?;
        let possible = subtract(&matched.possible, &against.certain, max).ok_or_else(too_many)?;
        grown.certain.extend(certain);
        grown.certain = IpNet::aggregate(&grown.certain);
        grown.possible.extend(possible);
        grown.possible = IpNet::aggregate(&grown.possible);
        sets.decided.extend(matched.certain);
        sets.decided = IpNet::aggregate(&sets.decided);
        let sizes = [
            sets.pass.certain.len(),
            sets.pass.possible.len(),
            sets.refused.certain.len(),
            sets.refused.possible.len(),
            sets.decided.len(),
        ];
        if sizes.iter().any(|&n| n > max) {
            return Err(too_many());
        }
        Ok(())
    }
}

/// Every IPv4 and IPv6 address.
fn everything() -> Vec<IpNet> {
    vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
}

fn covers_everything(aggregated: &[IpNet]) -> bool {
    everything().iter().all(|e| aggregated.contains(e))
}

/// Addresses widened to `v4`/`v6`-bit networks.
fn widen(addresses: &[IpAddr], v4: u8, v6: u8) -> Vec<IpNet> {
    addresses
        .iter()
        .filter_map(|&ip| {
            let len = if ip.is_ipv4() { v4 } else { v6 };
            IpNet::new(ip, len).ok().map(|n| n.trunc())
        })
        .collect()
}

/// `from` minus `minus`, as networks; `None` past `max` networks.
pub(super) fn subtract(from: &[IpNet], minus: &[IpNet], max: usize) -> Option<Vec<IpNet>> {
    let mut out = from.to_vec();
    for cut in minus {
        let mut next = Vec::with_capacity(out.len());
        for net in out {
            if cut.contains(&net) {
                continue;
            }
            if !net.contains(cut) {
                next.push(net);
                continue;
            }
            // `cut` lies inside `net`: keep the halves beside it down to it.
            let mut rest = net;
            while rest.prefix_len() < cut.prefix_len() {
                let halves = rest.subnets(rest.prefix_len() + 1).ok()?;
                for half in halves {
                    if half.contains(cut) {
                        rest = half;
                    } else {
                        next.push(half);
                    }
                }
            }
            if next.len() > max {
                return None;
            }
        }
        out = next;
    }
    Some(out)
}
