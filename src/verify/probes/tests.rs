//! The SMTP edge against real loopback sockets: one probe per distinct
//! (address, recipient), one connection at a time per address, and a
//! refused connect reused instead of repeated.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::smtp::probe::Outcome;
use crate::verify::smtp::Role;

fn options() -> SmtpOptions {
    SmtpOptions {
        timeout: Duration::from_secs(2),
        ..SmtpOptions::default()
    }
}

fn target(address: SocketAddr, rcpt: &str) -> Target {
    Target {
        host: "mx01.example.org.".into(),
        role: Role::Decoy,
        address,
        rcpt: rcpt.into(),
    }
}

/// A decoy-like server: 220, 250, 250, 450 to RCPT, 221. Counts sessions
/// and the most it ever had open at once.
async fn decoy() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sessions = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (s, o, m) = (sessions.clone(), open.clone(), most.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.fetch_add(1, Ordering::SeqCst);
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 decoy ESMTP\r\n").await;
                // Slow enough that overlapping sessions would be seen.
                tokio::time::sleep(Duration::from_millis(30)).await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.get(..4).map(str::to_ascii_uppercase);
                    let reply: &[u8] = match verb.as_deref() {
                        Some("RCPT") => b"450 4.7.1 later\r\n",
                        Some("QUIT") => {
                            // Closed as far as the count goes, before the
                            // client can see the reply and start its next probe.
                            o.fetch_sub(1, Ordering::SeqCst);
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        break;
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, sessions, most)
}

#[tokio::test]
async fn one_connection_at_a_time_per_address_and_each_pair_once() {
    let (addr, sessions, most) = decoy().await;
    let targets = [
        target(addr, "postmaster@a.example"),
        target(addr, "postmaster@b.example"),
        target(addr, "postmaster@a.example"),
        target(addr, "postmaster@c.example"),
    ];
    let probed = run(&targets, &options()).await;
    assert_eq!(probed.connections, 3);
    assert_eq!(probed.reports.len(), 3);
    assert_eq!(sessions.load(Ordering::SeqCst), 3);
    assert_eq!(most.load(Ordering::SeqCst), 1);
    for report in probed.reports.values() {
        assert_eq!(report.outcome, Outcome::Completed);
        assert_eq!(report.rcpt, Some(450));
    }
    let rcpts: Vec<&str> = probed.reports.keys().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "postmaster@a.example",
            "postmaster@b.example",
            "postmaster@c.example"
        ]
    );
}

#[tokio::test]
async fn a_refused_connect_is_reused_for_other_recipients() {
    // A port that was just free: nothing listens, the kernel resets.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let (other, _, _) = decoy().await;
    let targets = [
        target(addr, "postmaster@a.example"),
        target(addr, "postmaster@b.example"),
        target(other, "postmaster@a.example"),
    ];
    let probed = run(&targets, &options()).await;
    assert_eq!(probed.connections, 2);
    assert_eq!(probed.reports.len(), 3);
    assert_eq!(
        probed.reports[&(addr, "postmaster@b.example".to_owned())].outcome,
        Outcome::Refused
    );
    assert_eq!(
        probed.reports[&(other, "postmaster@a.example".to_owned())].rcpt,
        Some(450)
    );
}

#[tokio::test]
async fn no_targets_no_connections() {
    let probed = run(&[], &options()).await;
    assert_eq!(probed.connections, 0);
    assert!(probed.reports.is_empty());
}
