//! verify's DNS phase: answers read, CNAME chains, resolver settings.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_resolver::net::NoRecords;
use hickory_resolver::proto::op::Query;

use super::*;
use crate::resolver::ResolverError;

fn name(s: &str) -> DnsName {
    DnsName::from_str(s).unwrap()
}

fn no_records(qname: &str, code: ResponseCode) -> NetError {
    NetError::from(NoRecords::new(
        Query::query(name(qname), RecordType::A),
        code,
    ))
}

#[test]
fn errors_become_answers_or_named_failures() {
    let cases: [(NetError, Answer<()>); 7] = [
        (
            no_records("x.example.", ResponseCode::NXDomain),
            Answer::NxDomain,
        ),
        (
            no_records("x.example.", ResponseCode::NoError),
            Answer::NoData,
        ),
        (
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)),
            Answer::Failed(QueryError::ServFail),
        ),
        (
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)),
            Answer::Failed(QueryError::Refused),
        ),
        (
            NetError::Dns(DnsError::ResponseCode(ResponseCode::NotImp)),
            Answer::Failed(QueryError::Rcode("NOTIMP".into())),
        ),
        (NetError::Timeout, Answer::Failed(QueryError::Timeout)),
        (
            NetError::NoConnections,
            Answer::Failed(QueryError::Network(
                "no connection to the nameserver could be made".into(),
            )),
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(failure::<()>(&error), expected, "{error}");
    }
    assert!(matches!(
        failure::<()>(&NetError::from(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))),
        Answer::Failed(QueryError::Network(_))
    ));
}

#[test]
fn a_failure_about_another_name_means_the_host_is_an_alias() {
    let result = Err(no_records("mail.example.org.", ResponseCode::NXDomain));
    let (answer, alias) = addresses("mx02.example.org.", &result, |_| None::<()>);
    assert_eq!(answer, Answer::NxDomain);
    assert_eq!(alias.as_deref(), Some("mail.example.org."));

    let result = Err(no_records("MX02.example.org.", ResponseCode::NXDomain));
    let (_, alias) = addresses("mx02.example.org.", &result, |_| None::<()>);
    assert_eq!(alias, None, "names compare case-insensitively");
}

#[test]
fn names_are_absolute_and_lowercase() {
    assert_eq!(name_text(&name("MX01.Example.ORG.")), "mx01.example.org.");
    assert_eq!(name_text(&name("mx01.example.org")), "mx01.example.org.");
    assert_eq!(name_text(&DnsName::root()), ".");
}

/// Without `--nameserver`, the servers come from `/etc/resolv.conf`
/// (building the resolver sends nothing).
#[tokio::test]
async fn system_resolver_reads_resolv_conf() {
    let Ok(text) = std::fs::read_to_string("/etc/resolv.conf") else {
        eprintln!("no /etc/resolv.conf: nothing to compare");
        return;
    };
    let listed: Vec<IpAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    let permits = Arc::new(Semaphore::new(1));
    match main_resolver(&Options::default(), &permits) {
        Ok((resolver, _)) => {
            assert!(resolver.system);
            let ips: Vec<IpAddr> = resolver.nameservers.iter().map(|a| a.ip()).collect();
            assert_eq!(ips, listed);
        }
        Err(e) => assert!(listed.is_empty(), "{e}"),
    }
    let explicit = Options {
        nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
        ..Options::default()
    };
    let (resolver, _) = main_resolver(&explicit, &permits).unwrap();
    assert!(!resolver.system);
    assert_eq!(resolver.nameservers, explicit.nameservers);
}

#[test]
fn settings_turn_the_cache_off_and_bound_tries() {
    let options = Options {
        tries: 3,
        timeout: std::time::Duration::from_millis(700),
        tcp: true,
        ..Options::default()
    };
    let direct: SocketAddr = "192.0.2.53:53".parse().unwrap();
    let s = settings(&options, vec![direct], false);
    assert_eq!(s.nameservers, vec![direct]);
    assert!(!s.cache);
    assert!(s.tcp_only);
    assert_eq!(s.tries, 3);
    assert_eq!(s.timeout, std::time::Duration::from_millis(700));
    assert!(!s.recursion);
    assert!(s.max_active_requests.unwrap() >= options.concurrency);
}

/// The resolver's errors read as `verify`'s own sentences.
#[test]
fn resolver_errors_read_as_before() {
    let cases = [
        (
            ResolverError::SystemConf(NetError::Message("no such file")),
            "cannot use the system resolver (/etc/resolv.conf): no such file; pass --nameserver IP:PORT",
        ),
        (
            ResolverError::NoSystemNameserver,
            "cannot use the system resolver (/etc/resolv.conf): it lists no nameserver; pass --nameserver IP:PORT",
        ),
        (
            ResolverError::Build(NetError::Message("bad")),
            "cannot set up the DNS resolver: bad",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(VerifyError::from(error).to_string(), text);
    }
}
