//! The hickory edge of `verify`: the only code here that sends DNS queries.
//!
//! It asks through [`crate::resolver`] (the system's `/etc/resolv.conf`
//! servers, or only the `--nameserver`s) with the cache off, a per-query
//! timeout and a bounded number of tries, and turns every answer or error
//! into the plain types of [`super::observe`]. Queries run in parallel
//! under one semaphore, so at most `concurrency` are in flight. Each distinct
//! (name, type) is asked once per run, even when domains share MX hosts.
//!
//! Nothing here judges: a hostile or broken answer becomes an
//! [`Answer::Failed`] or a plain value, never a panic.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name as DnsName, RData, RecordType};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::check::extra_live_hosts;
use super::observe::{
    Answer, AuthObservation, DomainObservation, HostAnswer, LiveMx, QueryError, ServerObservation,
};
use super::report::Resolver;
use super::{Expected, Options, VerifyError};
use crate::resolver::{self, Settings, cname_chain};

/// One resolver plus the run-wide limit on queries in flight.
struct Dns {
    resolver: resolver::Resolver,
    permits: Arc<Semaphore>,
}

impl Dns {
    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Lookup, NetError> {
        let name = DnsName::from_ascii(name)?;
        // The semaphore is never closed; without a permit we would only
        // exceed the limit, never deadlock.
        let _permit = self.permits.acquire().await.ok();
        self.resolver.lookup(name, rtype).await
    }

    async fn mx(&self, origin: &str) -> Answer<LiveMx> {
        let result = self.lookup(origin, RecordType::MX).await;
        answer(&result, |data| match data {
            RData::MX(mx) => Some(LiveMx {
                preference: mx.preference,
                host: name_text(&mx.exchange),
            }),
            _ => None,
        })
    }

    async fn ns(&self, origin: &str) -> Answer<String> {
        let result = self.lookup(origin, RecordType::NS).await;
        answer(&result, |data| match data {
            RData::NS(ns) => Some(name_text(&ns.0)),
            _ => None,
        })
    }

    async fn host(&self, host: &str) -> HostAnswer {
        let (a, aaaa) = tokio::join!(
            self.lookup(host, RecordType::A),
            self.lookup(host, RecordType::AAAA)
        );
        let (ipv4, alias4) = addresses(host, &a, |data| match data {
            RData::A(a) => Some(a.0),
            _ => None,
        });
        let (ipv6, alias6) = addresses(host, &aaaa, |data| match data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        });
        let mut alias = alias4.or(alias6);
        // When the resolver followed a CNAME and the server answered the
        // question about its target with an error (an authoritative server
        // REFUSEs names outside its zones), the error does not say so: ask
        // for the CNAME itself. Not after timeouts: that would only wait again.
        let answered_with_error = |e: Option<&QueryError>| {
            matches!(
                e,
                Some(QueryError::Refused | QueryError::ServFail | QueryError::Rcode(_))
            )
        };
        if alias.is_none()
            && (answered_with_error(ipv4.error()) || answered_with_error(ipv6.error()))
        {
            alias = self.alias(host).await;
        }
        HostAnswer { ipv4, ipv6, alias }
    }

    /// The target of `host`'s CNAME record, if it has one.
    async fn alias(&self, host: &str) -> Option<String> {
        let queried = DnsName::from_ascii(host).ok()?;
        let lookup = self.lookup(host, RecordType::CNAME).await.ok()?;
        lookup.answers().iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == queried => Some(name_text(&target.0)),
            _ => None,
        })
    }

    /// SOA serial and MX set of `origin` as this (authoritative) server has them.
    async fn server(&self, ns: String, address: SocketAddr, origin: &str) -> ServerObservation {
        let (soa, mx) = tokio::join!(
            self.lookup(origin, RecordType::SOA),
            self.lookup(origin, RecordType::MX)
        );
        let authoritative = [&soa, &mx].iter().all(|r| {
            r.as_ref()
                .map_or(true, |l| l.message().metadata.authoritative)
        });
        ServerObservation {
            ns,
            address,
            serial: answer(&soa, |data| match data {
                RData::SOA(soa) => Some(soa.serial),
                _ => None,
            }),
            mx: answer(&mx, |data| match data {
                RData::MX(mx) => Some(LiveMx {
                    preference: mx.preference,
                    host: name_text(&mx.exchange),
                }),
                _ => None,
            }),
            authoritative,
        }
    }
}

/// A name as the checks compare it: absolute, lowercase, trailing dot.
fn name_text(name: &DnsName) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// The records `pick` selects from the answer section, or what went wrong.
fn answer<T>(result: &Result<Lookup, NetError>, pick: impl Fn(&RData) -> Option<T>) -> Answer<T> {
    match result {
        Ok(lookup) => {
            let records: Vec<T> = lookup
                .answers()
                .iter()
                .filter_map(|r| pick(&r.data))
                .collect();
            if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records)
            }
        }
        Err(e) => failure(e),
    }
}

/// Addresses of `host` (following CNAMEs in the answer), and the alias
/// target when `host` turned out to be a CNAME.
fn addresses<T>(
    host: &str,
    result: &Result<Lookup, NetError>,
    pick: impl Fn(&RData) -> Option<T>,
) -> (Answer<T>, Option<String>) {
    let Ok(queried) = DnsName::from_ascii(host) else {
        return (
            Answer::Failed(QueryError::Malformed(format!("{host} is not a valid name"))),
            None,
        );
    };
    match result {
        Ok(lookup) => {
            let chain = cname_chain(&queried, lookup.answers());
            let alias = (chain.len() > 1).then(|| name_text(&chain[chain.len() - 1]));
            let records: Vec<T> = lookup
                .answers()
                .iter()
                .filter(|r| chain.contains(&r.name))
                .filter_map(|r| pick(&r.data))
                .collect();
            let answer = if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records)
            };
            (answer, alias)
        }
        Err(e) => {
            // When the resolver followed a CNAME and the target failed, the
            // error is about the target: the host itself is an alias.
            let alias = match e {
                NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.query.name() != &queried => {
                    Some(name_text(nr.query.name()))
                }
                _ => None,
            };
            (failure(e), alias)
        }
    }
}

/// A hickory error as an answer: NXDOMAIN and NODATA are answers, the rest
/// are failures.
fn failure<T>(error: &NetError) -> Answer<T> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => rcode(nr.response_code),
        NetError::Dns(DnsError::ResponseCode(code)) => rcode(*code),
        NetError::Timeout => Answer::Failed(QueryError::Timeout),
        NetError::Io(e) => Answer::Failed(QueryError::Network(e.to_string())),
        NetError::NoConnections => Answer::Failed(QueryError::Network(
            "no connection to the nameserver could be made".into(),
        )),
        NetError::Proto(e) => Answer::Failed(QueryError::Malformed(e.to_string())),
        other => Answer::Failed(QueryError::Network(other.to_string())),
    }
}

fn rcode<T>(code: ResponseCode) -> Answer<T> {
    match code {
        ResponseCode::NoError => Answer::NoData,
        ResponseCode::NXDomain => Answer::NxDomain,
        ResponseCode::ServFail => Answer::Failed(QueryError::ServFail),
        ResponseCode::Refused => Answer::Failed(QueryError::Refused),
        ResponseCode::FormErr => Answer::Failed(QueryError::Rcode("FORMERR".into())),
        ResponseCode::NotImp => Answer::Failed(QueryError::Rcode("NOTIMP".into())),
        ResponseCode::NotAuth => Answer::Failed(QueryError::Rcode("NOTAUTH".into())),
        other => Answer::Failed(QueryError::Rcode(format!("RCODE {}", u16::from(other)))),
    }
}

/// The resolver settings of `options`: the cache off (every answer is the
/// live one) and hickory's per-connection limit above ours, so that it never
/// throttles instead of the semaphore.
fn settings(options: &Options, nameservers: Vec<SocketAddr>, recursion: bool) -> Settings {
    Settings {
        nameservers,
        tcp_only: options.tcp,
        timeout: options.timeout,
        tries: options.tries,
        recursion,
        cache: false,
        max_active_requests: Some(options.concurrency.max(1).saturating_mul(2)),
    }
}

fn build(settings: &Settings, permits: &Arc<Semaphore>) -> Result<Dns, VerifyError> {
    Ok(Dns {
        resolver: resolver::Resolver::new(settings)?,
        permits: permits.clone(),
    })
}

/// The main resolver: only the `--nameserver`s, or the system's servers.
fn main_resolver(
    options: &Options,
    permits: &Arc<Semaphore>,
) -> Result<(Resolver, Dns), VerifyError> {
    let dns = build(
        &settings(options, options.nameservers.clone(), true),
        permits,
    )?;
    Ok((
        Resolver {
            system: dns.resolver.is_system(),
            nameservers: dns.resolver.nameservers().to_vec(),
            timeout_ms: u64::try_from(options.timeout.as_millis()).unwrap_or(u64::MAX),
            tries: options.tries.max(1),
        },
        dns,
    ))
}

/// Runs `f` for every key concurrently (the semaphore in `Dns` bounds the
/// queries) and collects the results. A task that died is simply absent.
async fn for_all<K, V, F, Fut>(keys: impl IntoIterator<Item = K>, f: F) -> BTreeMap<K, V>
where
    K: Ord + Clone + Send + 'static,
    V: Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = V> + Send + 'static,
{
    let mut set = JoinSet::new();
    for key in keys {
        let fut = f(key.clone());
        set.spawn(async move { (key, fut.await) });
    }
    let mut out = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        if let Ok((key, value)) = joined {
            out.insert(key, value);
        }
    }
    out
}

fn lost<T>() -> Answer<T> {
    Answer::Failed(QueryError::Malformed(
        "internal error: the lookup task failed".into(),
    ))
}

fn lost_host() -> HostAnswer {
    HostAnswer {
        ipv4: lost(),
        ipv6: lost(),
        alias: None,
    }
}

/// Asks everything `expected` needs and returns one observation per domain,
/// in the same order, plus a description of the resolver.
pub(super) async fn observe(
    expected: &[Expected],
    options: &Options,
) -> Result<(Resolver, Vec<DomainObservation>), VerifyError> {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let (resolver, dns) = main_resolver(options, &permits)?;
    let dns = Arc::new(dns);
    let origins: BTreeSet<String> = expected.iter().map(|e| e.origin.to_string()).collect();

    // The MX RRsets and the planned hosts' addresses, all at once.
    let planned_hosts: BTreeSet<String> = expected
        .iter()
        .flat_map(|e| e.hosts.keys().cloned())
        .collect();
    let (mx, mut hosts) = tokio::join!(
        for_all(origins.clone(), |origin| {
            let dns = dns.clone();
            async move { dns.mx(&origin).await }
        }),
        for_all(planned_hosts, |host| {
            let dns = dns.clone();
            async move { dns.host(&host).await }
        })
    );

    // Live MX hosts the plan does not know.
    let mut extras: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in expected {
        let origin = e.origin.to_string();
        let live = mx.get(&origin).and_then(|a| a.records()).unwrap_or(&[]);
        extras.insert(origin, extra_live_hosts(e, live));
    }
    let unknown: BTreeSet<String> = extras
        .values()
        .flatten()
        .filter(|h| !hosts.contains_key(*h))
        .cloned()
        .collect();
    hosts.extend(
        for_all(unknown, |host| {
            let dns = dns.clone();
            async move { dns.host(&host).await }
        })
        .await,
    );

    let mut auth = if options.authoritative {
        authoritative(&origins, &dns, options, &permits).await?
    } else {
        BTreeMap::new()
    };

    let observations = expected
        .iter()
        .map(|e| {
            let origin = e.origin.to_string();
            let names = e
                .hosts
                .keys()
                .chain(extras.get(&origin).into_iter().flatten());
            DomainObservation {
                mx: mx.get(&origin).cloned().unwrap_or_else(lost),
                hosts: names
                    .map(|h| (h.clone(), hosts.get(h).cloned().unwrap_or_else(lost_host)))
                    .collect(),
                authoritative: auth.remove(&origin),
            }
        })
        .collect();
    Ok((resolver, observations))
}

/// `--authoritative`: NS sets, NS host addresses, then SOA and MX from every
/// (NS host, address) pair, asked directly with recursion off.
async fn authoritative(
    origins: &BTreeSet<String>,
    dns: &Arc<Dns>,
    options: &Options,
    permits: &Arc<Semaphore>,
) -> Result<BTreeMap<String, AuthObservation>, VerifyError> {
    let ns = for_all(origins.clone(), |origin| {
        let dns = dns.clone();
        async move { dns.ns(&origin).await }
    })
    .await;
    let ns_names: BTreeSet<String> = ns
        .values()
        .filter_map(|a| a.records())
        .flatten()
        .cloned()
        .collect();
    let ns_hosts = for_all(ns_names, |host| {
        let dns = dns.clone();
        async move { dns.host(&host).await }
    })
    .await;

    // One direct resolver per server address, shared by every domain.
    let mut servers: BTreeMap<SocketAddr, Arc<Dns>> = BTreeMap::new();
    for answer in ns_hosts.values() {
        for ip in answer.addresses() {
            let address = SocketAddr::new(ip, options.ns_port);
            if let Entry::Vacant(slot) = servers.entry(address) {
                let direct = settings(options, vec![address], false);
                slot.insert(Arc::new(build(&direct, permits)?));
            }
        }
    }

    // (origin, NS host, address) for every server of every domain.
    let mut jobs: Vec<(String, String, SocketAddr)> = Vec::new();
    for (origin, answer) in &ns {
        for host in answer
            .records()
            .unwrap_or(&[])
            .iter()
            .collect::<BTreeSet<_>>()
        {
            let Some(addrs) = ns_hosts.get(host) else {
                continue;
            };
            for ip in addrs.addresses() {
                jobs.push((
                    origin.clone(),
                    host.clone(),
                    SocketAddr::new(ip, options.ns_port),
                ));
            }
        }
    }
    let answers = for_all(jobs, |(origin, host, address)| {
        let server = servers.get(&address).cloned();
        async move {
            match server {
                Some(server) => server.server(host, address, &origin).await,
                None => ServerObservation {
                    ns: host,
                    address,
                    serial: lost(),
                    mx: lost(),
                    authoritative: false,
                },
            }
        }
    })
    .await;

    let mut by_origin: BTreeMap<String, Vec<ServerObservation>> = BTreeMap::new();
    for ((origin, _, _), server) in answers {
        by_origin.entry(origin).or_default().push(server);
    }
    let mut out: BTreeMap<String, AuthObservation> = BTreeMap::new();
    for (origin, answer) in ns {
        let names: BTreeSet<&String> = answer.records().unwrap_or(&[]).iter().collect();
        let auth = AuthObservation {
            ns_hosts: names
                .iter()
                .map(|h| {
                    let found = ns_hosts.get(*h).cloned().unwrap_or_else(lost_host);
                    ((*h).clone(), found)
                })
                .collect(),
            servers: by_origin.remove(&origin).unwrap_or_default(),
            ns: answer,
        };
        out.insert(origin, auth);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
