//! What the live DNS said, reduced to what the checks need.
//!
//! These types are the seam between the resolver edge (`resolve`) and the
//! pure checks (`check`): the edge turns hickory's answers and errors into
//! them, and the checks never see a hickory type. Names are strings in
//! absolute, lowercase ASCII form with the trailing dot (`mx01.example.org.`),
//! the same form `Name`'s `Display` gives, so planned and live names compare
//! as plain strings.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The outcome of one DNS query for one name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer<T> {
    /// NOERROR with at least one record of the wanted type.
    Records(Vec<T>),
    /// NOERROR without records of the wanted type: the name exists (NODATA).
    NoData,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// No usable answer: an error code, a timeout or a network error.
    Failed(QueryError),
}

impl<T> Answer<T> {
    /// The records, or an empty slice for NODATA and NXDOMAIN; `None` when
    /// the query failed, so that a failure is never mistaken for "no records".
    pub fn records(&self) -> Option<&[T]> {
        match self {
            Answer::Records(r) => Some(r),
            Answer::NoData | Answer::NxDomain => Some(&[]),
            Answer::Failed(_) => None,
        }
    }

    /// The error, when the query failed.
    pub fn error(&self) -> Option<&QueryError> {
        match self {
            Answer::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a query gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// The server answered SERVFAIL.
    ServFail,
    /// The server answered REFUSED (typically: it does not serve the zone).
    Refused,
    /// Another error response code, by its mnemonic (`FORMERR`, `NOTIMP`, …).
    Rcode(String),
    /// No answer within the timeout, after every attempt.
    Timeout,
    /// The query could not be sent or the connection failed.
    Network(String),
    /// The answer could not be used (malformed, or not a DNS answer).
    Malformed(String),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::ServFail => f.write_str("SERVFAIL (the server failed to answer)"),
            QueryError::Refused => {
                f.write_str("REFUSED (the server does not serve this zone, or not to this client)")
            }
            QueryError::Rcode(code) => write!(f, "{code} (error response)"),
            QueryError::Timeout => f.write_str("timeout (no answer from the nameserver)"),
            QueryError::Network(e) => write!(f, "network error ({e})"),
            QueryError::Malformed(e) => write!(f, "unusable answer ({e})"),
        }
    }
}

/// One live MX record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LiveMx {
    /// Preference (lower is tried first).
    pub preference: u16,
    /// The exchange, absolute lowercase (`.` for a null MX).
    pub host: String,
}

/// The A and AAAA lookups of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAnswer {
    /// The IPv4 addresses (following a CNAME chain, if any).
    pub ipv4: Answer<Ipv4Addr>,
    /// The IPv6 addresses (following a CNAME chain, if any).
    pub ipv6: Answer<Ipv6Addr>,
    /// When the host name is an alias (CNAME): the name it leads to.
    pub alias: Option<String>,
}

impl HostAnswer {
    /// Every address found, IPv4 first (none for a failed lookup).
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        let v4 = self
            .ipv4
            .records()
            .unwrap_or(&[])
            .iter()
            .map(|a| std::net::IpAddr::V4(*a));
        let v6 = self
            .ipv6
            .records()
            .unwrap_or(&[])
            .iter()
            .map(|a| std::net::IpAddr::V6(*a));
        v4.chain(v6)
    }
}

/// Everything observed about one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainObservation {
    /// The apex MX RRset.
    pub mx: Answer<LiveMx>,
    /// A/AAAA lookups of the planned MX hosts and of the live ones (by name).
    pub hosts: BTreeMap<String, HostAnswer>,
    /// With `--authoritative`: what each authoritative server said.
    pub authoritative: Option<AuthObservation>,
}

/// What the zone's own name servers said (`--authoritative`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthObservation {
    /// The apex NS RRset, as the resolver sees it.
    pub ns: Answer<String>,
    /// The addresses of each NS host, as the resolver sees them.
    pub ns_hosts: BTreeMap<String, HostAnswer>,
    /// One entry per (NS host, address), in NS then address order.
    pub servers: Vec<ServerObservation>,
}

/// The answers of one authoritative server, asked directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerObservation {
    /// The NS host name the address belongs to.
    pub ns: String,
    /// Where it was asked.
    pub address: SocketAddr,
    /// The SOA serial.
    pub serial: Answer<u32>,
    /// The apex MX RRset.
    pub mx: Answer<LiveMx>,
    /// True when every answer that arrived had the AA (authoritative) bit.
    pub authoritative: bool,
}
