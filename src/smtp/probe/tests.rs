//! The probe against scripted servers on in-memory streams and real sockets.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};
use tokio::net::TcpListener;

use super::*;

fn options() -> ProbeOptions {
    ProbeOptions {
        helo: "probe.example".into(),
        mail_from: String::new(),
        rcpt: "postmaster@example.org".into(),
        timeout: Duration::from_millis(500),
    }
}

fn empty_report() -> ProbeReport {
    ProbeReport::new("127.0.0.1:25".parse().unwrap())
}

/// Runs the probe's dialogue against a server that answers each line we
/// send with the next canned reply (after sending `banner` first).
async fn scripted(banner: &str, replies: &[&str]) -> (ProbeReport, String) {
    let (client, mut server) = duplex(64 * 1024);
    let replies: Vec<String> = replies.iter().map(|s| s.to_string()).collect();
    let banner = banner.to_owned();
    let srv = tokio::spawn(async move {
        server.write_all(banner.as_bytes()).await.unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        for r in replies {
            loop {
                let n = server.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return seen;
                }
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                if seen.ends_with("\r\n") {
                    break;
                }
            }
            if server.write_all(r.as_bytes()).await.is_err() {
                break;
            }
        }
        seen
    });
    let mut report = empty_report();
    dialogue(client, &options(), &mut report).await;
    (report, srv.await.unwrap())
}

#[tokio::test]
async fn real_mx_dialogue() {
    let (r, sent) = scripted(
        "220 mx.example ESMTP\r\n",
        &[
            "250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "221 Bye\r\n",
        ],
    )
    .await;
    assert_eq!(r.outcome, Outcome::Completed);
    assert_eq!(
        (r.banner, r.ehlo, r.mail, r.rcpt),
        (Some(220), Some(250), Some(250), Some(250))
    );
    assert!(r.starttls);
    assert_eq!(r.extensions, ["PIPELINING", "STARTTLS", "8BITMIME"]);
    assert!(
        sent.contains("MAIL FROM:<>\r\nRCPT TO:<postmaster@example.org>\r\nQUIT\r\n"),
        "{sent}"
    );
    assert!(!sent.contains("DATA"));
}

#[tokio::test]
async fn decoy_450_at_rcpt() {
    let (r, sent) = scripted(
        "220 decoy ESMTP\r\n",
        &[
            "250 decoy\r\n",
            "250 Ok\r\n",
            "450 4.7.1 Try later\r\n",
            "221 Bye\r\n",
        ],
    )
    .await;
    assert_eq!(r.rcpt, Some(450));
    assert!(!r.starttls);
    assert!(sent.ends_with("QUIT\r\n"), "{sent}");
}

#[tokio::test]
async fn greeting_421_stops_early() {
    let (r, sent) = scripted("421 4.7.0 go away\r\n", &["221 Bye\r\n"]).await;
    assert_eq!(r.banner, Some(421));
    assert_eq!(r.ehlo, None);
    assert_eq!(r.step, Step::Banner);
    assert_eq!(sent, "QUIT\r\n");
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo() {
    let (r, _) = scripted(
        "220 old ESMTP\r\n",
        &[
            "502 5.5.2 what\r\n",
            "250 old\r\n",
            "250 Ok\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ],
    )
    .await;
    assert!(r.helo_fallback);
    assert_eq!((r.ehlo, r.rcpt), (Some(250), Some(250)));
}

#[tokio::test]
async fn a_server_that_closes_or_babbles() {
    let (r, _) = scripted("220 x ESMTP\r\n", &[]).await;
    assert_eq!(r.outcome, Outcome::Closed);
    let (r, _) = scripted("this is not smtp\r\n", &[]).await;
    assert_eq!(r.outcome, Outcome::Error);
    let endless = format!("{}220 done\r\n", "220-xxxxxxxx\r\n".repeat(100));
    let (r, _) = scripted(&endless, &[]).await;
    assert_eq!(r.outcome, Outcome::Error, "{:?}", r.error);
    let huge = format!("220 {}\r\n", "y".repeat(100_000));
    let (r, _) = scripted(
        &huge,
        &["250 ok\r\n", "250 ok\r\n", "450 no\r\n", "221 bye\r\n"],
    )
    .await;
    assert_eq!(r.banner, Some(220));
    assert!(r.transcript.iter().all(|l| l.text.len() <= MAX_LINE));
}

#[tokio::test]
async fn refused_and_timeout_over_real_sockets() {
    // A port with nothing listening: refused.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let r = probe(addr, &options()).await;
    assert_eq!(r.outcome, Outcome::Refused);
    // A listener that accepts but never speaks: timeout at the banner.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let r = probe(addr, &options()).await;
    assert_eq!((r.outcome, r.step), (Outcome::Timeout, Step::Banner));
    let text = transcript_text(&r);
    assert!(text.contains("outcome timeout"), "{text}");
    assert!(
        text.contains("=== Connected to") && text.contains("*** Timed out waiting for the banner"),
        "{text}"
    );
    assert!(!text.contains("Timed out connecting"), "{text}");
    // A connect that never completes reads as such.
    let mut dropped = ProbeReport::new(addr);
    dropped.outcome = Outcome::Timeout;
    let text = transcript_text(&dropped);
    assert!(
        text.contains("*** Timed out connecting (dropped?)"),
        "{text}"
    );
    assert!(!text.contains("Connected"), "{text}");
}

#[tokio::test]
async fn no_command_can_smuggle_a_second_line() {
    assert!(check_argument("--rcpt", "a@b.example").is_ok());
    for bad in ["a@b>\r\nDATA", "a b@c", "<a@b>", "x\ty", ""] {
        assert!(
            check_argument("--rcpt", bad).is_err() || bad.is_empty(),
            "{bad:?}"
        );
    }
    let mut o = options();
    o.rcpt = "a@b>\r\nDATA\r\n<x".into();
    let (client, mut server) = duplex(4096);
    let srv = tokio::spawn(async move {
        server.write_all(b"220 x\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        let replies: [&[u8]; 3] = [b"250 x\r\n", b"250 ok\r\n", b"221 bye\r\n"];
        for r in replies {
            let n = server.read(&mut buf).await.unwrap_or(0);
            seen.extend_from_slice(&buf[..n]);
            let _ = server.write_all(r).await;
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut report = empty_report();
    dialogue(client, &o, &mut report).await;
    let sent = srv.await.unwrap();
    assert!(!sent.contains("DATA"), "{sent}");
    assert_eq!(report.outcome, Outcome::Error);
}
