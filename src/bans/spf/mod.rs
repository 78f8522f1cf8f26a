//! SPF allow lists: the networks big senders authorise for their mail.
//!
//! Big senders (Gmail, Outlook, …) retry a deferred message from another
//! address, often in another network, so "delivered via the real MX" can miss
//! them and their first address may look like a bot. Their SPF records
//! (RFC 7208) publish every network they send from; clients inside those
//! networks are never banned.
//!
//! Pure, like the rest of `bans`: this module asks DNS only through the
//! [`SpfLookup`] trait and never imports a DNS client. The real lookup is
//! `crate::resolver::spf::DnsLookup`; tests use an in-memory fake.
//!
//! Two parts:
//! - `record` ([`parse_spf`]): one TXT string to an [`SpfRecord`] — the
//!   `v=spf1` version, the mechanisms `all`, `include`, `a`, `mx` (with dual
//!   CIDR lengths), `ip4`, `ip6`, `exists`, `ptr`, the qualifiers `+ - ~ ?`,
//!   the `redirect` modifier; `exp` and unknown modifiers are ignored.
//!   Records over 2048 bytes or 100 terms are refused.
//! - `expansion` ([`expand`]): resolves the records of some domains through
//!   an [`SpfLookup`] and collects the networks they authorise into one
//!   aggregated list.
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
//! Problems are reported per domain as [`Problem`]s (a permerror, a
//! temperror, a skipped term or network, a name that is not a domain), whose
//! `Display` is the sentence logged; nothing is fatal for the other domains.
//! Callers decide on the kind ([`Problem::is_temporary`],
//! [`SpfExpansion::temporary_failure`]), never on the text.

mod expansion;
mod record;

use std::future::Future;
use std::net::IpAddr;

pub use expansion::{Limits, Problem, SpfExpansion, expand};
pub(crate) use record::shown;
pub use record::{
    Directive, DomainSpec, MAX_RECORD_LEN, MAX_TERMS, Mechanism, Qualifier, SpfError, SpfRecord,
    is_spf, normalize_domain, parse_spf,
};

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

#[cfg(test)]
mod tests;
