//! SPF records as text and as data: [`parse_spf`] turns one TXT string into
//! an [`SpfRecord`], and `Display` writes one back.
//!
//! Pure: no DNS, no clock. Hostile records are bounded before anything is
//! built from them (at most [`MAX_RECORD_LEN`] bytes and [`MAX_TERMS`]
//! terms), and text quoted back in a message goes through `shown`, so a
//! record can never put control characters or megabytes into a log line.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

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
pub(crate) fn shown(text: &str) -> String {
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
