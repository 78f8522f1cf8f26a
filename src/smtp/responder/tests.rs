use std::net::Ipv4Addr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn settings() -> Arc<Settings> {
    Arc::new(Settings {
        mode: Mode::Rcpt450,
        hostname: "mx01.example.org".into(),
        reply: "4.7.1 try later".into(),
        limits: Limits {
            idle: Duration::from_secs(10),
            session: Duration::from_secs(30),
            max_line: 1024,
            max_commands: 20,
            tarpit: Duration::ZERO,
        },
        max_connections: 100,
        max_per_ip: 100,
        v6_prefix: 64,
    })
}

async fn read_reply(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte).await.unwrap_or(0) == 1 {
        out.push(byte[0]);
        if out.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sessions that end while the responder drains still reach the engine:
/// each thread sends what is left in its batch when it stops, without
/// waiting for the batch timer (which dies with the thread's runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_the_last_sessions_survive_the_shutdown() {
    let (events, mut received) = EventSink::channel(64);
    let shutdown = CancellationToken::new();
    let mut responder = Responder::new(
        settings(),
        events.clone(),
        Passed::default(),
        shutdown.clone(),
        2,
    )
    .unwrap();
    let key = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let sockets = bind(&[key], responder.threads()).unwrap().remove(0);
    assert_eq!(sockets.len(), 2);
    let addr = responder.listen(key, sockets).unwrap();

    let mut open = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(read_reply(&mut s).await.starts_with("220 "));
        s.write_all(b"HELO bot.example\r\n").await.unwrap();
        assert!(read_reply(&mut s).await.starts_with("250 "));
        open.push(s);
    }
    shutdown.cancel();
    for s in &mut open {
        assert!(read_reply(s).await.starts_with("421 4.3.2"));
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        responder.drain(Duration::from_secs(5)),
    )
    .await
    .expect("drained");
    let mut got = Vec::new();
    while let Ok(e) = received.try_recv() {
        got.push(e);
    }
    assert_eq!(got.len(), 8, "{got:?}");
    assert!(
        got.iter()
            .all(|e| e.end == End::Shutdown && e.stage == Stage::Helo)
    );
    assert_eq!(events.dropped(), 0);
}

/// Off the responder's threads an event is sent at once.
#[tokio::test]
async fn events_from_other_threads_are_not_batched() {
    let (events, mut received) = EventSink::channel(4);
    let client = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 4000));
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 25));
    events.offer(turned_away(client, local, End::Overloaded));
    assert_eq!(received.try_recv().unwrap().client, client);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Regression: IPv6 clients were counted per /128, so one /64 opened as
/// many sessions as it liked. IPv4 stays per address; a mapped peer is its
/// IPv4 address.
#[test]
fn clients_are_ipv4_addresses_and_ipv6_networks() {
    let key = |s: &str, bits| client_key(ip(s), bits).to_string();
    assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:2:bbbb::9", 64), "2001:db8:1:2::");
    assert_eq!(key("2001:db8:1:3::1", 64), "2001:db8:1:3::");
    assert_eq!(key("2001:db8:1:2:aaaa::1", 48), "2001:db8:1::");
    assert_eq!(key("2001:db8:1:2:aaaa::1", 128), "2001:db8:1:2:aaaa::1");
    assert_eq!(key("2001:db8:1:2:aaaa::1", 0), "::");
    assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
    assert_eq!(key("192.0.2.8", 64), "192.0.2.8");
    assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
}

#[test]
fn one_ipv6_network_shares_one_per_client_limit() {
    let table = Arc::new(PerIp::default());
    let take = |s: &str| table.acquire(client_key(ip(s), 64), 2);
    let a = take("2001:db8:1:2::a").expect("first");
    let b = take("2001:db8:1:2::b").expect("second");
    assert!(
        take("2001:db8:1:2::c").is_none(),
        "a third address of the /64"
    );
    let other = take("2001:db8:1:3::a").expect("another /64");
    // IPv4 addresses next to each other are separate clients; a mapped
    // peer shares its IPv4 address's count.
    let v4 = [
        take("192.0.2.7"),
        take("::ffff:192.0.2.7"),
        take("192.0.2.8"),
    ];
    assert!(v4.iter().all(Option::is_some));
    assert!(take("192.0.2.7").is_none());
    drop(a);
    let c = take("2001:db8:1:2::c").expect("a slot freed");
    drop((b, c, other, v4));
    assert!(table.0.lock().unwrap().is_empty(), "slots released");
}

/// A retry-exempt client gets `421` at the greeting in every listening
/// mode, is closed, and is no decoy hit; others are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_exempt_clients_get_421_at_the_greeting_and_are_no_hit() {
    for mode in [Mode::Rcpt450, Mode::Greet421, Mode::Greet450] {
        let (events, mut received) = EventSink::channel(64);
        let shutdown = CancellationToken::new();
        let passed = Passed::default();
        let mut s = (*settings()).clone();
        s.mode = mode;
        let mut responder =
            Responder::new(Arc::new(s), events, passed.clone(), shutdown.clone(), 1).unwrap();
        let key = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let sockets = bind(&[key], 1).unwrap().remove(0);
        let addr = responder.listen(key, sockets).unwrap();
        let far = crate::clock::unix_now() + 3600;
        passed.replace(24, 64, [("127.0.0.0/24".parse().unwrap(), far)]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            read_reply(&mut c).await,
            "421 4.7.0 mx01.example.org Service not available, try the next MX\r\n",
            "{mode:?}"
        );
        assert_eq!(read_reply(&mut c).await, "", "closed after the reply");
        // An exemption that ended lets nobody through.
        passed.replace(24, 64, [("127.0.0.0/24".parse().unwrap(), far - 7200)]);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let banner = read_reply(&mut c).await;
        assert!(!banner.contains("next MX"), "{mode:?}: {banner}");
        drop(c);
        shutdown.cancel();
        responder.drain(Duration::from_secs(5)).await;
        let mut got = Vec::new();
        while let Ok(e) = received.try_recv() {
            got.push(e.end);
        }
        assert_eq!(
            got.len(),
            1,
            "{mode:?}: only the second connection: {got:?}"
        );
        assert_ne!(got[0], End::Passed);
    }
}
