//! The resolver's setup and the CNAME chain (no network: building a resolver
//! sends nothing).

use std::net::IpAddr;
use std::str::FromStr;

use hickory_resolver::config::ProtocolConfig;
use hickory_resolver::proto::rr::rdata::{A, CNAME};

use super::*;

fn name(s: &str) -> DnsName {
    DnsName::from_str(s).unwrap()
}

fn cname(from: &str, to: &str) -> Record {
    Record::from_rdata(name(from), 60, RData::CNAME(CNAME(name(to))))
}

fn a(owner: &str, ip: [u8; 4]) -> Record {
    Record::from_rdata(
        name(owner),
        60,
        RData::A(A::from(std::net::Ipv4Addr::from(ip))),
    )
}

fn settings() -> Settings {
    Settings {
        nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
        tcp_only: false,
        timeout: Duration::from_millis(700),
        tries: 3,
        recursion: true,
        cache: true,
        max_active_requests: None,
    }
}

/// (port, over TCP) of each connection of each server.
fn connections(servers: &[NameServerConfig]) -> Vec<(IpAddr, Vec<(u16, bool)>)> {
    servers
        .iter()
        .map(|ns| {
            let conns = ns
                .connections
                .iter()
                .map(|c| (c.port, matches!(c.protocol, ProtocolConfig::Tcp)))
                .collect();
            (ns.ip, conns)
        })
        .collect()
}

#[test]
fn cname_chains_are_followed_and_loops_stop() {
    let answers = [
        cname("mx.example.", "b.example."),
        cname("b.example.", "c.example."),
        a("c.example.", [192, 0, 2, 1]),
        a("unrelated.example.", [192, 0, 2, 9]),
    ];
    let chain = cname_chain(&name("mx.example."), &answers);
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[2], name("c.example."));

    let looped = [
        cname("mx.example.", "b.example."),
        cname("b.example.", "mx.example."),
    ];
    assert_eq!(cname_chain(&name("mx.example."), &looped).len(), 2);

    let long: Vec<Record> = (0..50)
        .map(|i| cname(&format!("h{i}.example."), &format!("h{}.example.", i + 1)))
        .collect();
    assert_eq!(
        cname_chain(&name("h0.example."), &long).len(),
        MAX_CHAIN + 1
    );
}

/// `--tcp` with the system resolver: its servers, over TCP only.
#[test]
fn tcp_only_keeps_the_servers_and_drops_udp() {
    let mut on_5353 = NameServerConfig::udp_and_tcp("192.0.2.53".parse().unwrap());
    for c in &mut on_5353.connections {
        c.port = 5353;
    }
    let servers = vec![
        NameServerConfig::udp_and_tcp("127.0.0.53".parse().unwrap()),
        NameServerConfig::udp_and_tcp("127.0.0.53".parse().unwrap()),
        on_5353,
    ];
    assert_eq!(
        connections(&tcp_only(&servers)),
        vec![
            ("127.0.0.53".parse().unwrap(), vec![(53, true)]),
            ("192.0.2.53".parse().unwrap(), vec![(5353, true)]),
        ]
    );
}

#[test]
fn a_given_server_is_asked_on_its_port_over_udp_then_tcp_or_tcp_only() {
    let address: SocketAddr = "192.0.2.53:5353".parse().unwrap();
    let ip = address.ip();
    assert_eq!(
        connections(&[server_config(address, false)]),
        vec![(ip, vec![(5353, false), (5353, true)])]
    );
    assert_eq!(
        connections(&[server_config(address, true)]),
        vec![(ip, vec![(5353, true)])]
    );
}

#[test]
fn options_ignore_the_hosts_file_and_bound_tries() {
    let o = options(&settings());
    assert_eq!(o.use_hosts_file, ResolveHosts::Never);
    assert_eq!(o.attempts, 2, "3 tries: 2 retries");
    assert_eq!(o.timeout, Duration::from_millis(700));
    assert_eq!(o.ndots, 0);
    assert!(o.edns0 && o.preserve_intermediates && o.recursion_desired);
    assert_eq!(o.cache_size, ResolverOpts::default().cache_size);
    assert_eq!(
        o.max_active_requests,
        ResolverOpts::default().max_active_requests
    );

    let o = options(&Settings {
        recursion: false,
        cache: false,
        max_active_requests: Some(128),
        tries: 0,
        ..settings()
    });
    assert_eq!(o.cache_size, 0);
    assert!(!o.recursion_desired);
    assert_eq!(o.max_active_requests, 128);
    assert_eq!(o.attempts, 0);
}

#[tokio::test]
async fn given_nameservers_are_the_ones_asked() {
    let resolver = Resolver::new(&Settings {
        nameservers: vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ],
        ..settings()
    })
    .unwrap();
    assert!(!resolver.is_system());
    assert_eq!(
        resolver.nameservers(),
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
}

/// Without nameservers, those of `/etc/resolv.conf`, or a typed error.
#[tokio::test]
async fn no_nameserver_means_the_system_ones() {
    let listed: Vec<IpAddr> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    match Resolver::new(&Settings {
        nameservers: Vec::new(),
        ..settings()
    }) {
        Ok(resolver) => {
            assert!(resolver.is_system());
            let ips: Vec<IpAddr> = resolver.nameservers().iter().map(|a| a.ip()).collect();
            assert_eq!(ips, listed);
        }
        Err(e) => assert!(
            listed.is_empty()
                && matches!(
                    e,
                    ResolverError::SystemConf(_) | ResolverError::NoSystemNameserver
                ),
            "{e}"
        ),
    }
}

#[test]
fn errors_read_as_before() {
    assert_eq!(
        ResolverError::NoSystemNameserver.to_string(),
        "the system resolver configuration lists no nameserver"
    );
    assert_eq!(
        ResolverError::SystemConf(NetError::Message("no such file")).to_string(),
        "cannot read the system resolver configuration: no such file"
    );
    assert_eq!(
        ResolverError::Build(NetError::Message("bad")).to_string(),
        "cannot build the resolver: bad"
    );
}
