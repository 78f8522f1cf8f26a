//! The DNS resolver nolist asks with: the only place that builds a
//! hickory-resolver, for `verify` and for the SPF allow lists.
//!
//! A [`Resolver`] asks either only the given nameservers or those of
//! `/etc/resolv.conf` (UDP with TCP fallback, or TCP only), with the hosts
//! file ignored, names taken as absolute (`ndots 0`), EDNS on, a per-query
//! timeout and a bounded number of tries ([`Settings`]). What the callers
//! differ in — the cache, recursion, the number of queries one connection
//! carries — is a setting, not a second copy of this code.
//!
//! Also here, because both callers read answers the same way: the CNAME
//! chain inside one answer ([`cname_chain`], at most [`MAX_CHAIN`] hops, a
//! loop just stops). The SPF lookup over this resolver is [`spf::DnsLookup`].
//!
//! Invariants: building a resolver sends nothing; a failure to build is a
//! [`ResolverError`], never a panic; nothing here judges answers.

pub mod spf;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{Name as DnsName, RData, Record, RecordType};
use hickory_resolver::{Resolver as HickoryResolver, TokioResolver};

/// CNAME hops followed inside one answer.
pub const MAX_CHAIN: usize = 8;

/// How a [`Resolver`] asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Ask only these servers; empty: the servers of `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Ask over TCP only (each server once), instead of UDP with TCP
    /// fallback.
    pub tcp_only: bool,
    /// How long to wait for one answer.
    pub timeout: Duration,
    /// How many times a query is sent at most (timeouts and errors are
    /// retried); 0 counts as 1.
    pub tries: usize,
    /// Whether to ask for recursion (off when asking an authoritative
    /// server directly).
    pub recursion: bool,
    /// Whether answers are cached for their TTL (off when every answer must
    /// be the live one).
    pub cache: bool,
    /// Queries one connection carries at once at most; `None`: hickory's
    /// default (32).
    pub max_active_requests: Option<usize>,
}

/// Why no resolver could be built. `Display` is the sentence logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolverError {
    /// `/etc/resolv.conf` could not be read or parsed.
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConf(NetError),
    /// `/etc/resolv.conf` names no nameserver.
    #[error("the system resolver configuration lists no nameserver")]
    NoSystemNameserver,
    /// hickory refused the configuration.
    #[error("cannot build the resolver: {0}")]
    Build(NetError),
}

/// A hickory resolver and where it asks.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    system: bool,
    nameservers: Vec<SocketAddr>,
}

impl Resolver {
    /// Builds a resolver as `settings` say. Reads `/etc/resolv.conf` when no
    /// nameserver is given; sends nothing.
    pub fn new(settings: &Settings) -> Result<Resolver, ResolverError> {
        let system = settings.nameservers.is_empty();
        let mut config = ResolverConfig::default();
        config.name_servers = if system {
            let (conf, _) = hickory_resolver::system_conf::read_system_conf()
                .map_err(ResolverError::SystemConf)?;
            if conf.name_servers.is_empty() {
                return Err(ResolverError::NoSystemNameserver);
            }
            if settings.tcp_only {
                tcp_only(&conf.name_servers)
            } else {
                conf.name_servers
            }
        } else {
            settings
                .nameservers
                .iter()
                .map(|&a| server_config(a, settings.tcp_only))
                .collect()
        };
        let nameservers = config.name_servers.iter().map(address).collect();
        let inner = HickoryResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options(settings))
            .build()
            .map_err(ResolverError::Build)?;
        Ok(Resolver {
            inner,
            system,
            nameservers,
        })
    }

    /// Whether the servers came from `/etc/resolv.conf`.
    pub fn is_system(&self) -> bool {
        self.system
    }

    /// The servers asked, each with its port.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// Asks for the `rtype` records of `name` (absolute). hickory's answer
    /// or error as it is: the caller decides what NXDOMAIN, NODATA and the
    /// failures mean to it.
    pub async fn lookup(&self, name: DnsName, rtype: RecordType) -> Result<Lookup, NetError> {
        self.inner.lookup(name, rtype).await
    }
}

/// hickory's options for `settings`: no hosts file, absolute names, EDNS,
/// CNAME records kept in answers (for [`cname_chain`]), bounded time and
/// tries.
fn options(settings: &Settings) -> ResolverOpts {
    let mut o = ResolverOpts::default();
    o.timeout = settings.timeout;
    o.attempts = settings.tries.saturating_sub(1);
    if !settings.cache {
        o.cache_size = 0;
    }
    o.use_hosts_file = ResolveHosts::Never;
    o.preserve_intermediates = true;
    o.recursion_desired = settings.recursion;
    o.ndots = 0;
    o.edns0 = true;
    if let Some(n) = settings.max_active_requests {
        o.max_active_requests = n;
    }
    o
}

/// One server: UDP then TCP on its port, or TCP only.
fn server_config(address: SocketAddr, tcp_only: bool) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = address.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = address.port();
    let mut config = NameServerConfig::udp_and_tcp(address.ip());
    config.connections = if tcp_only { vec![tcp] } else { vec![udp, tcp] };
    config
}

/// The address a server is asked at (its first connection's port).
fn address(server: &NameServerConfig) -> SocketAddr {
    SocketAddr::new(server.ip, server.connections.first().map_or(53, |c| c.port))
}

/// The same servers (by address, each once), asked over TCP only.
fn tcp_only(servers: &[NameServerConfig]) -> Vec<NameServerConfig> {
    let mut seen = Vec::new();
    for ns in servers {
        let address = address(ns);
        if !seen.contains(&address) {
            seen.push(address);
        }
    }
    seen.into_iter().map(|a| server_config(a, true)).collect()
}

/// `start` followed through the CNAME records of `answers`, at most
/// [`MAX_CHAIN`] hops (a loop just stops). The first name is `start`.
pub fn cname_chain(start: &DnsName, answers: &[Record]) -> Vec<DnsName> {
    let mut chain = vec![start.clone()];
    while chain.len() <= MAX_CHAIN {
        let Some(last) = chain.last() else { break };
        let next = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if &r.name == last => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) if !chain.contains(&target) => chain.push(target),
            _ => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests;
