//! SPF allow lists: the networks big senders authorise for their mail.
//!
//! Big senders (Gmail, Outlook, …) retry a deferred message from another
//! address, often in another network, so "delivered via the real MX" can miss
//! them and their first address may look like a bot. Their SPF records
//! (RFC 7208) publish every network they send from; clients inside those
//! networks are never banned.
//!
//! Two parts:
//! - [`parse_spf`], pure: one TXT string to an [`SpfRecord`] — the `v=spf1`
//!   version, the mechanisms `all`, `include`, `a`, `mx` (with dual CIDR
//!   lengths), `ip4`, `ip6`, `exists`, `ptr`, the qualifiers `+ - ~ ?`, the
//!   `redirect` modifier; `exp` and unknown modifiers are ignored. Records
//!   over 2048 bytes or 100 terms are refused.
//! - [`expand`]: resolves the records of some domains through an
//!   [`SpfLookup`] ([`DnsLookup`] is the hickory-backed one; tests use a fake)
//!   and collects the networks they authorise into one aggregated list.
//!
//! Which addresses are collected is SPF's own answer: the set of addresses
//! for which `check_host()` would return `pass`. Terms are first-match, so a
//! network only counts where no earlier term already decided: with
//! `-ip4:192.0.2.1 ip4:192.0.2.0/24` the `/24` minus that one address is
//! allowed. `-`, `~` and `?` terms authorise nothing. An `include` matches
//! where the included record passes; `redirect` applies where nothing in the
//! record matched (and is ignored when the record has `all`).
//!
//! Fail safe — the allow list only prevents bans, so every doubt makes it
//! smaller, never larger:
//! - RFC 7208's limits hold per top domain: 10 DNS-querying terms (`include`,
//!   `a`, `mx`, `ptr`, `exists`, `redirect`), 2 void lookups, 10 MX hosts per
//!   `mx`. Exceeding one, an include loop, a syntax error, several SPF
//!   records, an included domain without one, or any lookup failure is the
//!   RFC's `permerror`/`temperror`: that domain contributes nothing. Other
//!   domains are unaffected.
//! - Terms whose addresses cannot be listed (macros `%{…}`, `ptr`) are
//!   skipped and reported; they still count against the lookup limit. Such
//!   a term may match anything from nothing to everything, so evaluation
//!   keeps two bounds — what certainly passes and what possibly passes (and
//!   the same for refusals) — and only lists what certainly passes. After a
//!   skipped `+` term later terms still count; after a refusing one
//!   (`-exists:%{i}…`, or `-include:` of a record with a skipped pass or
//!   `+all`) no later term of that record allows anything.
//! - A network wider than `/8` (IPv4) or `/32` (IPv6) — `+all`,
//!   `ip4:0.0.0.0/0`, a hostile include — would turn banning off; it is
//!   ignored and reported, also when it only appears once networks are
//!   merged.
//!
//! Problems are reported per domain as plain sentences; nothing is fatal for
//! the other domains.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name as DnsName, RData, Record, RecordType};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Longest SPF record accepted, in bytes.
pub const MAX_RECORD_LEN: usize = 2048;
/// Most terms (after `v=spf1`) accepted in one record.
pub const MAX_TERMS: usize = 100;

/// What a matching mechanism answers (RFC 7208 §4.6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualifier {
    /// `+` (the default): authorised.
    Pass,
    /// `-`: explicitly not authorised.
    Fail,
    /// `~`: probably not authorised.
    SoftFail,
    /// `?`: no statement.
    Neutral,
}

/// A domain named in a term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainSpec {
    /// A plain name: lowercase, without the trailing dot.
    Name(String),
    /// A name with macros (`%{i}`, …), which depend on the client being
    /// checked and so cannot be listed ahead of time. Kept as written.
    Macro(String),
}

/// An SPF mechanism (RFC 7208 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// `all`: every address.
    All,
    /// `include:domain`: where `domain`'s record passes.
    Include(DomainSpec),
    /// `a[:domain][/v4][//v6]`: the addresses of `domain` (default: the
    /// record's own domain), widened to the CIDR lengths.
    A {
        domain: Option<DomainSpec>,
        v4: u8,
        v6: u8,
    },
    /// `mx[:domain][/v4][//v6]`: the addresses of `domain`'s MX hosts.
    Mx {
        domain: Option<DomainSpec>,
        v4: u8,
        v6: u8,
    },
    /// `ip4:address[/len]`, with the host bits cleared.
    Ip4(Ipv4Net),
    /// `ip6:address[/len]`, with the host bits cleared.
    Ip6(Ipv6Net),
    /// `exists:domain`: every address, if `domain` has an address.
    Exists(DomainSpec),
    /// `ptr[:domain]`: reverse DNS; cannot be listed, always skipped.
    Ptr(Option<DomainSpec>),
}

impl Mechanism {
    /// Whether evaluating it queries DNS (and so counts against the limit
    /// of 10).
    pub fn queries_dns(&self) -> bool {
        !matches!(self, Mechanism::All | Mechanism::Ip4(_) | Mechanism::Ip6(_))
    }
}

/// A qualifier and a mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
}

/// A parsed SPF record. `exp=` and unknown modifiers are dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfRecord {
    /// The mechanisms, in order.
    pub directives: Vec<Directive>,
    /// The `redirect=` modifier.
    pub redirect: Option<DomainSpec>,
}

/// Why a TXT string is not a usable SPF record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpfError {
    #[error("not an SPF record: it does not start with v=spf1")]
    NotSpf,
    #[error("the record is {0} bytes long, over the limit of {MAX_RECORD_LEN}")]
    TooLong(usize),
    #[error("the record has {0} terms, over the limit of {MAX_TERMS}")]
    TooManyTerms(usize),
    #[error("unknown mechanism `{0}`")]
    UnknownMechanism(String),
    #[error("invalid term `{term}`: {reason}")]
    InvalidTerm { term: String, reason: &'static str },
    #[error("the modifier `{0}` appears more than once")]
    DuplicateModifier(String),
}

/// Whether a TXT string claims to be an SPF record (RFC 7208 §4.5):
/// `v=spf1`, any case, then a space or the end.
pub fn is_spf(txt: &str) -> bool {
    txt.get(..6)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
        && txt[6..].chars().next().is_none_or(|c| c == ' ')
}

/// Parses one SPF record (RFC 7208 §4.5–§6). Terms are separated by spaces
/// (any ASCII whitespace is accepted).
pub fn parse_spf(txt: &str) -> Result<SpfRecord, SpfError> {
    if txt.len() > MAX_RECORD_LEN {
        return Err(SpfError::TooLong(txt.len()));
    }
    let mut words = txt.split_ascii_whitespace();
    if !words
        .next()
        .is_some_and(|v| v.eq_ignore_ascii_case("v=spf1"))
    {
        return Err(SpfError::NotSpf);
    }
    let terms: Vec<&str> = words.collect();
    if terms.len() > MAX_TERMS {
        return Err(SpfError::TooManyTerms(terms.len()));
    }
    let mut record = SpfRecord {
        directives: Vec::new(),
        redirect: None,
    };
    let mut exp = false;
    for term in terms {
        match parse_term(term)? {
            Term::Directive(d) => record.directives.push(d),
            Term::Redirect(spec) => {
                if record.redirect.replace(spec).is_some() {
                    return Err(SpfError::DuplicateModifier("redirect".into()));
                }
            }
            Term::Exp => {
                if std::mem::replace(&mut exp, true) {
                    return Err(SpfError::DuplicateModifier("exp".into()));
                }
            }
            Term::Unknown => {}
        }
    }
    Ok(record)
}

enum Term {
    Directive(Directive),
    Redirect(DomainSpec),
    Exp,
    Unknown,
}

fn parse_term<'a>(term: &'a str) -> Result<Term, SpfError> {
    let invalid = |reason| SpfError::InvalidTerm {
        term: shown(term),
        reason,
    };
    let (qualifier, rest) = match term.chars().next() {
        Some('+') => (Some(Qualifier::Pass), &term[1..]),
        Some('-') => (Some(Qualifier::Fail), &term[1..]),
        Some('~') => (Some(Qualifier::SoftFail), &term[1..]),
        Some('?') => (Some(Qualifier::Neutral), &term[1..]),
        _ => (None, term),
    };
    let end = rest.find([':', '/', '=']).unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    if let Some(value) = tail.strip_prefix('=') {
        // A modifier: name=value.
        if qualifier.is_some() {
            return Err(invalid("a modifier takes no qualifier"));
        }
        let mut chars = name.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !well_formed {
            return Err(invalid("malformed modifier name"));
        }
        return match name.to_ascii_lowercase().as_str() {
            "redirect" => Ok(Term::Redirect(domain_spec(value, term)?)),
            "exp" => Ok(Term::Exp),
            _ => Ok(Term::Unknown),
        };
    }
    let qualifier = qualifier.unwrap_or(Qualifier::Pass);
    let argument = |tail| argument(tail, term);
    let required = |value: Option<&'a str>| value.ok_or_else(|| invalid("an argument is required"));
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if tail.is_empty() => Mechanism::All,
        "all" => return Err(invalid("`all` takes no argument")),
        "include" => Mechanism::Include(domain_spec(required(argument(tail)?)?, term)?),
        "exists" => Mechanism::Exists(domain_spec(required(argument(tail)?)?, term)?),
        "ptr" => Mechanism::Ptr(argument(tail)?.map(|d| domain_spec(d, term)).transpose()?),
        "a" | "mx" => {
            // [":" domain] [dual-cidr]: the domain ends at the first '/'.
            let (spec, cidr) = match tail.find('/') {
                Some(slash) => tail.split_at(slash),
                None => (tail, ""),
            };
            let domain = argument(spec)?.map(|d| domain_spec(d, term)).transpose()?;
            let (v4, v6) = dual_cidr(cidr).ok_or_else(|| invalid("bad CIDR length"))?;
            if name.eq_ignore_ascii_case("a") {
                Mechanism::A { domain, v4, v6 }
            } else {
                Mechanism::Mx { domain, v4, v6 }
            }
        }
        "ip4" => {
            let value = required(argument(tail)?)?;
            let (address, len) = split_len(value, 32).ok_or_else(|| invalid("bad CIDR length"))?;
            let address: Ipv4Addr = address
                .parse()
                .map_err(|_| invalid("not an IPv4 address"))?;
            let net = Ipv4Net::new(address, len).map_err(|_| invalid("bad CIDR length"))?;
            Mechanism::Ip4(net.trunc())
        }
        "ip6" => {
            let value = required(argument(tail)?)?;
            let (address, len) = split_len(value, 128).ok_or_else(|| invalid("bad CIDR length"))?;
            let address: Ipv6Addr = address
                .parse()
                .map_err(|_| invalid("not an IPv6 address"))?;
            let net = Ipv6Net::new(address, len).map_err(|_| invalid("bad CIDR length"))?;
            Mechanism::Ip6(net.trunc())
        }
        _ => return Err(SpfError::UnknownMechanism(shown(term))),
    };
    Ok(Term::Directive(Directive {
        qualifier,
        mechanism,
    }))
}

/// The `:value` after a mechanism's name, if any.
fn argument<'t>(tail: &'t str, term: &str) -> Result<Option<&'t str>, SpfError> {
    match tail.strip_prefix(':') {
        Some(value) => Ok(Some(value)),
        None if tail.is_empty() => Ok(None),
        None => Err(SpfError::InvalidTerm {
            term: shown(term),
            reason: "unexpected text after the mechanism",
        }),
    }
}

/// `address[/len]`, `len` defaulting to `max`.
fn split_len(value: &str, max: u8) -> Option<(&str, u8)> {
    match value.split_once('/') {
        Some((address, len)) => Some((address, cidr_len(len, max)?)),
        None => Some((value, max)),
    }
}

/// RFC 7208 cidr lengths: decimal, no leading zero, at most `max`.
fn cidr_len(digits: &str, max: u8) -> Option<u8> {
    let well_formed = !digits.is_empty()
        && digits.len() <= 3
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !well_formed {
        return None;
    }
    digits.parse::<u8>().ok().filter(|&n| n <= max)
}

/// `""`, `/v4`, `//v6` or `/v4//v6`.
fn dual_cidr(text: &str) -> Option<(u8, u8)> {
    if text.is_empty() {
        return Some((32, 128));
    }
    if let Some(v6) = text.strip_prefix("//") {
        return Some((32, cidr_len(v6, 128)?));
    }
    let rest = text.strip_prefix('/')?;
    match rest.split_once("//") {
        Some((v4, v6)) => Some((cidr_len(v4, 32)?, cidr_len(v6, 128)?)),
        None => Some((cidr_len(rest, 32)?, 128)),
    }
}

fn domain_spec(value: &str, term: &str) -> Result<DomainSpec, SpfError> {
    if value.contains('%') {
        // macro-string: visible ASCII only; its expansion needs the client.
        if value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Ok(DomainSpec::Macro(value.to_owned()));
        }
    } else if let Some(name) = normalize_domain(value) {
        return Ok(DomainSpec::Name(name));
    }
    Err(SpfError::InvalidTerm {
        term: shown(term),
        reason: "invalid domain",
    })
}

/// A domain name as compared here: lowercase, no trailing dot, at least two
/// labels of letters, digits, `-` and `_`, a top label that is not all
/// digits. `None` when it is not one.
pub fn normalize_domain(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let labels_ok = labels.iter().all(|l| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let top_ok = labels
        .last()
        .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()));
    (labels.len() >= 2 && labels_ok && top_ok).then(|| name.to_ascii_lowercase())
}

/// Hostile text made safe for a message: visible ASCII, at most 80 chars.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(80)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Qualifier::Pass => "",
            Qualifier::Fail => "-",
            Qualifier::SoftFail => "~",
            Qualifier::Neutral => "?",
        })
    }
}

impl fmt::Display for DomainSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainSpec::Name(name) => f.write_str(name),
            DomainSpec::Macro(text) => f.write_str(&shown(text)),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_cidr = |f: &mut fmt::Formatter<'_>, name, domain: &Option<DomainSpec>, v4, v6| {
            f.write_str(name)?;
            if let Some(domain) = domain {
                write!(f, ":{domain}")?;
            }
            if v4 != 32 {
                write!(f, "/{v4}")?;
            }
            if v6 != 128 {
                write!(f, "//{v6}")?;
            }
            Ok(())
        };
        match self {
            Mechanism::All => f.write_str("all"),
            Mechanism::Include(d) => write!(f, "include:{d}"),
            Mechanism::A { domain, v4, v6 } => with_cidr(f, "a", domain, *v4, *v6),
            Mechanism::Mx { domain, v4, v6 } => with_cidr(f, "mx", domain, *v4, *v6),
            Mechanism::Ip4(net) => write!(f, "ip4:{net}"),
            Mechanism::Ip6(net) => write!(f, "ip6:{net}"),
            Mechanism::Exists(d) => write!(f, "exists:{d}"),
            Mechanism::Ptr(None) => f.write_str("ptr"),
            Mechanism::Ptr(Some(d)) => write!(f, "ptr:{d}"),
        }
    }
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.qualifier, self.mechanism)
    }
}

impl fmt::Display for SpfRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=spf1")?;
        for d in &self.directives {
            write!(f, " {d}")?;
        }
        if let Some(target) = &self.redirect {
            write!(f, " redirect={target}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Resolving.

/// Why a lookup gave no answer. An empty `Ok` is NODATA.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// NXDOMAIN: the name does not exist.
    #[error("no such domain")]
    NxDomain,
    /// Anything else (timeout, SERVFAIL, network): RFC 7208's temperror.
    #[error("{0}")]
    Failed(String),
}

/// The three DNS questions SPF evaluation asks. Names come without the
/// trailing dot and are absolute.
pub trait SpfLookup: Sync {
    /// The TXT records of `name`, each one's strings concatenated.
    fn txt(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
    /// The A and AAAA addresses of `name`.
    fn a(&self, name: &str) -> impl Future<Output = Result<Vec<IpAddr>, LookupError>> + Send;
    /// The MX hosts of `name` (preference does not matter to SPF).
    fn mx(&self, name: &str) -> impl Future<Output = Result<Vec<String>, LookupError>> + Send;
}

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
    /// failed — and the problems met, as sentences.
    pub per_domain: Vec<(String, usize, Vec<String>)>,
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
            let problem = format!("`{}` is not a domain name", shown(raw));
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
) -> (Vec<IpNet>, Vec<String>) {
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
                eval.problems.push(format!(
                    "{domain}: its networks merge into {net}, {}: ignored",
                    limits.wider_than(&net)
                ));
            }
            (kept, eval.problems)
        }
        Err(failure) => {
            eval.problems
                .push(format!("{failure}; {domain} contributes nothing"));
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

/// Why a domain's evaluation stopped (RFC 7208 §2.6).
#[derive(Debug)]
enum Failure {
    /// permerror: the published records are wrong or over a limit.
    Perm(String),
    /// temperror: a lookup failed.
    Temp(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Perm(m) => write!(f, "permerror: {m}"),
            Failure::Temp(m) => write!(f, "temperror: {m}"),
        }
    }
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
    problems: Vec<String>,
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
                DomainSpec::Macro(_) => self.problems.push(format!(
                    "{domain}: `{term}` uses macros and cannot be listed: skipped"
                )),
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
            self.problems.push(format!(
                "{domain}: `{term}` {why} and cannot be listed: skipped"
            ));
        } else {
            self.problems.push(format!(
                "{domain}: `{term}` {why} and cannot be listed; it may refuse any \
                 address, so no later term of this record allows anything"
            ));
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
                    self.problems.push(format!(
                        "{domain}: `{term}` authorises {net}, {}: ignored",
                        self.limits.wider_than(net)
                    ));
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
fn subtract(from: &[IpNet], minus: &[IpNet], max: usize) -> Option<Vec<IpNet>> {
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

// ---------------------------------------------------------------------------
// The real lookup.

/// CNAME hops followed inside one answer.
const MAX_CHAIN: usize = 8;

/// [`SpfLookup`] over DNS, with hickory-resolver.
#[derive(Clone)]
pub struct DnsLookup {
    resolver: TokioResolver,
}

impl DnsLookup {
    /// A resolver asking `nameservers` (recursive resolvers, UDP then TCP),
    /// or those of `/etc/resolv.conf` when the list is empty; each query
    /// tries twice, waiting `timeout` each time. The hosts file is ignored.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, LookupError> {
        let mut config = ResolverConfig::default();
        if nameservers.is_empty() {
            let (system, _) = hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                LookupError::Failed(format!(
                    "cannot read the system resolver configuration: {e}"
                ))
            })?;
            if system.name_servers.is_empty() {
                return Err(LookupError::Failed(
                    "the system resolver configuration lists no nameserver".into(),
                ));
            }
            config.name_servers = system.name_servers;
        } else {
            config.name_servers = nameservers.iter().copied().map(server_config).collect();
        }
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 1;
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;
        options.edns0 = true;
        options.recursion_desired = true;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()
            .map_err(|e| LookupError::Failed(format!("cannot build the resolver: {e}")))?;
        Ok(DnsLookup { resolver })
    }

    async fn query(&self, name: &str, rtype: RecordType) -> Result<Vec<RData>, LookupError> {
        let absolute = format!("{}.", name.trim_end_matches('.'));
        let queried = DnsName::from_ascii(&absolute)
            .map_err(|_| LookupError::Failed(format!("{} is not a valid name", shown(name))))?;
        match self.resolver.lookup(queried.clone(), rtype).await {
            Ok(lookup) => Ok(answers(&queried, &lookup)),
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => match nr.response_code {
                ResponseCode::NoError => Ok(Vec::new()),
                ResponseCode::NXDomain => Err(LookupError::NxDomain),
                code => Err(LookupError::Failed(code.to_string())),
            },
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain))) => {
                Err(LookupError::NxDomain)
            }
            Err(e) => Err(LookupError::Failed(e.to_string())),
        }
    }
}

fn server_config(address: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    let mut config = NameServerConfig::udp_and_tcp(address.ip());
    config.connections = vec![udp, tcp];
    config
}

/// The answer records about `queried` or the CNAME chain from it.
fn answers(queried: &DnsName, lookup: &Lookup) -> Vec<RData> {
    let records: &[Record] = lookup.answers();
    let mut chain = vec![queried.clone()];
    while chain.len() <= MAX_CHAIN {
        let Some(last) = chain.last() else { break };
        let next = records.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *last => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    records
        .iter()
        .filter(|r| chain.contains(&r.name))
        .map(|r| r.data.clone())
        .collect()
}

impl SpfLookup for DnsLookup {
    async fn txt(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let data = self.query(name, RecordType::TXT).await?;
        Ok(data
            .iter()
            .filter_map(|d| match d {
                RData::TXT(txt) => {
                    let bytes: Vec<u8> = txt
                        .txt_data
                        .iter()
                        .flat_map(|s| s.iter())
                        .copied()
                        .collect();
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            })
            .collect())
    }

    async fn a(&self, name: &str) -> Result<Vec<IpAddr>, LookupError> {
        let (v4, v6) = tokio::join!(
            self.query(name, RecordType::A),
            self.query(name, RecordType::AAAA)
        );
        let (v4, v6) = match (v4, v6) {
            (Err(LookupError::Failed(e)), _) | (_, Err(LookupError::Failed(e))) => {
                return Err(LookupError::Failed(e));
            }
            (Err(LookupError::NxDomain), Err(LookupError::NxDomain)) => {
                return Err(LookupError::NxDomain);
            }
            (v4, v6) => (v4.unwrap_or_default(), v6.unwrap_or_default()),
        };
        Ok(v4
            .iter()
            .chain(&v6)
            .filter_map(|d| match d {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect())
    }

    async fn mx(&self, name: &str) -> Result<Vec<String>, LookupError> {
        let data = self.query(name, RecordType::MX).await?;
        Ok(data
            .iter()
            .filter_map(|d| match d {
                RData::MX(mx) => Some(mx.exchange.to_lowercase().to_ascii()),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
