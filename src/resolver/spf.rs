//! The SPF allow lists' DNS: [`SpfLookup`] over a [`Resolver`], so that
//! `bans::spf` stays pure.
//!
//! Answers are the records about the name asked or the CNAME chain from it
//! ([`cname_chain`]); NXDOMAIN is [`LookupError::NxDomain`], NODATA an empty
//! list, anything else (timeout, SERVFAIL, network) [`LookupError::Failed`]
//! with hickory's sentence — which the expansion turns into a temperror.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name as DnsName, RData, RecordType};

use super::{Resolver, ResolverError, Settings, cname_chain};
use crate::bans::spf::{LookupError, SpfLookup, shown};

/// [`SpfLookup`] over DNS.
#[derive(Clone)]
pub struct DnsLookup {
    resolver: Resolver,
}

impl DnsLookup {
    /// A resolver asking `nameservers` (recursive resolvers, UDP then TCP),
    /// or those of `/etc/resolv.conf` when the list is empty; each query
    /// tries twice, waiting `timeout` each time. The hosts file is ignored.
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Self, ResolverError> {
        Ok(DnsLookup {
            resolver: Resolver::new(&settings(nameservers, timeout))?,
        })
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

/// Recursive, cached for the TTLs (one refresh asks the same includes for
/// several domains), two tries.
fn settings(nameservers: &[SocketAddr], timeout: Duration) -> Settings {
    Settings {
        nameservers: nameservers.to_vec(),
        tcp_only: false,
        timeout,
        tries: 2,
        recursion: true,
        cache: true,
        max_active_requests: None,
    }
}

/// The answer records about `queried` or the CNAME chain from it.
fn answers(queried: &DnsName, lookup: &Lookup) -> Vec<RData> {
    let chain = cname_chain(queried, lookup.answers());
    lookup
        .answers()
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
mod tests {
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::Record;
    use hickory_resolver::proto::rr::rdata::{CNAME, TXT};

    use super::*;
    use crate::bans::spf::{Limits, expand};

    #[tokio::test]
    async fn the_dns_lookup_builds_with_given_nameservers() {
        let servers = ["127.0.0.1:5353".parse().unwrap()];
        let dns = DnsLookup::new(&servers, Duration::from_millis(100)).unwrap();
        assert_eq!(dns.resolver.nameservers(), servers);
    }

    /// The same resolver as before it moved here: recursive, cached, two
    /// tries, UDP then TCP.
    #[test]
    fn spf_asks_recursively_with_the_cache_and_two_tries() {
        let servers = ["192.0.2.53:53".parse().unwrap()];
        let s = settings(&servers, Duration::from_secs(5));
        assert_eq!(s.nameservers, servers);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.tries, 2);
        assert!(s.recursion && s.cache && !s.tcp_only);
        assert_eq!(s.max_active_requests, None);
    }

    #[tokio::test]
    async fn the_expansion_can_run_on_another_task() {
        fn send<T: Send>(_: &T) {}
        let dns =
            DnsLookup::new(&["127.0.0.1:53".parse().unwrap()], Duration::from_secs(1)).unwrap();
        send(&expand(&[], &dns, Limits::default()));
    }

    #[test]
    fn answers_follow_the_cname_chain_only() {
        let dns = |s: &str| DnsName::from_ascii(s).unwrap();
        let records = vec![
            Record::from_rdata(
                dns("example.com."),
                300,
                RData::CNAME(CNAME(dns("spf.example.net."))),
            ),
            Record::from_rdata(
                dns("spf.example.net."),
                300,
                RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
            ),
            Record::from_rdata(
                dns("unrelated.example.org."),
                300,
                RData::TXT(TXT::new(vec!["v=spf1 +all".into()])),
            ),
        ];
        let lookup =
            Lookup::new_with_max_ttl(Query::query(dns("example.com."), RecordType::TXT), records);
        let data = answers(&dns("example.com."), &lookup);
        assert_eq!(data.len(), 2);
        assert!(matches!(&data[1], RData::TXT(t) if t.txt_data.len() == 2));
    }
}
