//! The session driver over an in-memory stream, with paused time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::net::TcpStream;

use super::*;
use crate::config::Mode;
use crate::smtp::dialogue::Stage;

fn limits() -> Limits {
    Limits {
        idle: Duration::from_secs(30),
        session: Duration::from_secs(120),
        max_line: 100,
        max_commands: 10,
        tarpit: Duration::ZERO,
    }
}

/// Starts a session on one end of a pipe; returns the client end and the task.
fn start(
    mode: Mode,
    limits: Limits,
) -> (
    DuplexStream,
    tokio::task::JoinHandle<(End, Dialogue)>,
    CancellationToken,
) {
    let (client, mut server) = duplex(64 * 1024);
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut d = Dialogue::new(mode, "mx01.example.org", "4.7.1 Try again later");
        let end = run(&mut server, &mut d, &limits, &token).await;
        (end, d)
    });
    (client, task, shutdown)
}

async fn read_all(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn codes(transcript: &str) -> Vec<&str> {
    transcript
        .lines()
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| &l[..3])
        .collect()
}

#[tokio::test]
async fn pipelined_dialogue_gets_one_reply_per_command() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    c.write_all(
        b"EHLO bot\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.org>\r\nDATA\r\nQUIT\r\n",
    )
    .await
    .unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "250", "250", "450", "503", "221"], "{t}");
    let (end, d) = task.await.unwrap();
    assert_eq!(end, End::Quit);
    assert_eq!(d.stage, Stage::Rcpt);
}

#[tokio::test]
async fn lines_may_arrive_in_pieces() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    for piece in [
        &b"HE"[..],
        b"LO x\r",
        b"\nRCPT TO:<",
        b"a@example.org>\r\n",
        b"QUIT\r\n",
    ] {
        c.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "250", "450", "221"], "{t}");
    assert_eq!(task.await.unwrap().0, End::Quit);
}

#[tokio::test]
async fn greet_mode_closes_after_the_banner() {
    let (mut c, task, _) = start(Mode::Greet421, limits());
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["421"]);
    assert_eq!(task.await.unwrap().0, End::Greeted);
}

#[tokio::test]
async fn an_overlong_line_is_cut_off() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    c.write_all(&vec![b'A'; 5000]).await.unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "421"], "{t}");
    assert_eq!(task.await.unwrap().0, End::LineTooLong);
}

#[tokio::test]
async fn an_overlong_line_is_cut_off_even_when_its_newline_arrives_with_it() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    let mut long = vec![b'N'; 300];
    long.extend_from_slice(b"\r\n");
    c.write_all(&long).await.unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "421"], "{t}");
    assert_eq!(task.await.unwrap().0, End::LineTooLong);
}

#[tokio::test]
async fn the_command_budget_is_enforced() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    c.write_all(&b"NOOP\r\n".repeat(50)).await.unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t).len(), 1 + 10 + 1, "{t}");
    assert_eq!(codes(&t).last(), Some(&"421"));
    assert_eq!(task.await.unwrap().0, End::TooManyCommands);
}

#[tokio::test(start_paused = true)]
async fn idle_clients_time_out() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "421"], "{t}");
    assert_eq!(task.await.unwrap().0, End::IdleTimeout);
}

#[tokio::test(start_paused = true)]
async fn slow_dribblers_hit_the_session_deadline() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            if c.write_all(b"N").await.is_err() {
                break;
            }
        }
        c
    });
    assert_eq!(task.await.unwrap().0, End::SessionTimeout);
    drop(dribble);
}

#[tokio::test(start_paused = true)]
async fn tarpit_delays_every_reply() {
    let mut l = limits();
    l.tarpit = Duration::from_secs(3);
    let (mut c, task, _) = start(Mode::Rcpt450, l);
    let started = tokio::time::Instant::now();
    c.write_all(b"QUIT\r\n").await.unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "221"]);
    assert!(started.elapsed() >= Duration::from_secs(6));
    assert_eq!(task.await.unwrap().0, End::Quit);
}

#[tokio::test]
async fn shutdown_says_421() {
    let (mut c, task, shutdown) = start(Mode::Rcpt450, limits());
    let mut banner = [0u8; 64];
    let n = c.read(&mut banner).await.unwrap();
    assert!(banner[..n].starts_with(b"220 "));
    shutdown.cancel();
    let t = read_all(&mut c).await;
    assert!(t.starts_with("421 4.3.2"), "{t}");
    assert_eq!(task.await.unwrap().0, End::Shutdown);
}

#[tokio::test]
async fn half_closed_client_ends_the_session() {
    let (mut c, task, _) = start(Mode::Rcpt450, limits());
    c.write_all(b"HELO x\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let t = read_all(&mut c).await;
    assert_eq!(codes(&t), ["220", "250"], "{t}");
    assert_eq!(task.await.unwrap().0, End::ClientClosed);
}

/// The last reply and the FIN leave in one segment, and the reply arrives
/// whole.
#[tokio::test]
async fn the_last_reply_leaves_with_the_fin() {
    let (mut client, mut server) = tcp_pair().await;
    let before = segments_out(&server);
    server.last(b"221 2.0.0 Bye\r\n").await.unwrap();
    assert_eq!(segments_out(&server) - before, 1, "data and FIN together");
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"221 2.0.0 Bye\r\n");
}

/// Even with input left unread (a close would send a RST and drop what it
/// had not sent), the last reply reaches the client.
#[tokio::test]
async fn the_last_reply_survives_unread_input() {
    let (mut client, mut server) = tcp_pair().await;
    client.write_all(&b"NOOP\r\n".repeat(100)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while segments_in(&server) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the input arrives");
    server
        .last(b"421 4.7.0 Too many commands\r\n")
        .await
        .unwrap();
    drop(server);
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got).await;
    assert_eq!(got, b"421 4.7.0 Too many commands\r\n");
}

/// A connected (client, server) pair on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

fn tcp_info(s: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is valid; getsockopt fills at most `len` bytes of it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        );
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        info
    }
}

fn segments_out(s: &TcpStream) -> u32 {
    tcp_info(s).tcpi_segs_out
}

fn segments_in(s: &TcpStream) -> u32 {
    tcp_info(s).tcpi_segs_in
}
