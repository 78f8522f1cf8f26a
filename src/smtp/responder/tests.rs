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
    let mut responder = Responder::new(settings(), events.clone(), shutdown.clone(), 2).unwrap();
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
    events.offer(overloaded(client, local));
    assert_eq!(received.try_recv().unwrap().client, client);
}
