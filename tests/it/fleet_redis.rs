//! The fleet's Redis transport against a real, private `redis-server`
//! (tests/it/util/redis.rs): the contract of `fleet::transport` — idempotent
//! publishing, the watermark after the messages, the compacted state, reads
//! from a cursor with a bounded wait, gaps after a trim or a data loss, the
//! epoch, chunked snapshots — plus AUTH/ACL, TLS, and what happens while
//! the server is down and after it is back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nolist::clock::unix_now;
use nolist::fleet::event::MAX_PAYLOAD;
use nolist::fleet::redis::{ACL_COMMANDS, CHUNK, Redis, StreamId};
use nolist::fleet::transport::{
    Compact, Cursor, NodeReport, Outgoing, Publish, Read, Received, ReceivedBody, StateEntry,
    Transport, TransportError,
};
use tokio::sync::mpsc;

use crate::util::redis::{RedisOptions, RedisServer};

const HOUR: Duration = Duration::from_secs(3600);

fn server() -> Option<RedisServer> {
    RedisServer::start(RedisOptions::default())
}

fn transport(server: &RedisServer, keep: Duration, max_events: u64) -> Redis {
    Redis::connect(&server.url(), None, "fleet", keep, max_events).expect("connect")
}

/// Message `seq` of a node; its payload names it.
fn msg(seq: u64, compact: Compact) -> Outgoing {
    Outgoing {
        seq,
        payload: format!("{{\"seq\":{seq}}}"),
        compact,
    }
}

fn hits(seqs: impl IntoIterator<Item = u64>) -> Vec<Outgoing> {
    seqs.into_iter().map(|s| msg(s, Compact::Nothing)).collect()
}

fn step(messages: Vec<Outgoing>) -> Publish {
    let now = unix_now();
    Publish {
        messages,
        watermark: None,
        now,
        deliveries_since: now - 86_400,
    }
}

fn payload(r: &Received) -> String {
    match &r.body {
        ReceivedBody::Message(p) => String::from_utf8_lossy(p).into_owned(),
        other => format!("{other:?}"),
    }
}

/// Every entry after `cursor`, read 7 at a time, and the cursor after them.
async fn read_all(r: &Redis, mut cursor: Cursor) -> (Vec<Received>, Cursor) {
    let mut all = Vec::new();
    loop {
        match r.read(&cursor, 7, Duration::ZERO).await.expect("read") {
            Read::Entries(e) if e.is_empty() => return (all, cursor),
            Read::Entries(e) => {
                cursor = e.last().unwrap().cursor.clone();
                all.extend(e);
            }
            Read::Gap => panic!("unexpected gap after {cursor:?}"),
        }
    }
}

/// The whole snapshot, the size of each chunk, and the cursor.
async fn snapshot(r: &Redis) -> (Vec<StateEntry>, Vec<usize>, Cursor) {
    let (tx, mut rx) = mpsc::channel(4);
    let collect = tokio::spawn(async move {
        let mut chunks = Vec::new();
        while let Some(c) = rx.recv().await {
            chunks.push(c);
        }
        chunks
    });
    let cursor = r.snapshot(tx).await.expect("snapshot");
    let chunks = collect.await.unwrap();
    let sizes = chunks.iter().map(Vec::len).collect();
    (chunks.into_iter().flatten().collect(), sizes, cursor)
}

/// Retries `f` for up to 10 s while the engine is unreachable (the first
/// call after a restart finds the old connection broken).
async fn when_back<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(TransportError::Unreachable(e)) if Instant::now() < deadline => {
                eprintln!("not back yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("engine not back: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_a_batch_adds_nothing() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    assert_eq!(r.published("mx1").await.unwrap(), 0);
    assert_eq!(r.publish("mx1", &step(hits(1..=3))).await.unwrap(), 3);
    assert_eq!(r.publish("mx1", &step(hits(1..=3))).await.unwrap(), 3);
    // A batch that overlaps what the engine holds adds only the new ones.
    assert_eq!(r.publish("mx1", &step(hits(2..=5))).await.unwrap(), 5);
    // Another node's numbers are its own.
    assert_eq!(r.publish("mx2", &step(hits(1..=2))).await.unwrap(), 2);
    assert_eq!(r.published("mx1").await.unwrap(), 5);
    assert_eq!(r.published("mx2").await.unwrap(), 2);
    let (entries, _) = read_all(&r, Cursor::start()).await;
    let got: Vec<String> = entries.iter().map(payload).collect();
    let want: Vec<String> = [1, 2, 3, 4, 5, 1, 2]
        .iter()
        .map(|s| format!("{{\"seq\":{s}}}"))
        .collect();
    assert_eq!(got, want);
    // For a human with redis-cli: the node and seq beside the payload.
    let raw = format!(
        "{:?}",
        server.command(&["XRANGE", "{fleet}:events", "-", "+", "COUNT", "1"])
    );
    assert!(raw.contains("mx1"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watermark_comes_after_the_messages_and_only_rises() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    let t = unix_now() - 30;
    let mut first = step(hits(1..=2));
    first.watermark = Some(t);
    r.publish("mx2", &first).await.unwrap();
    let (entries, cursor) = read_all(&r, Cursor::start()).await;
    assert_eq!(entries.len(), 3);
    assert!(matches!(entries[0].body, ReceivedBody::Message(_)));
    assert!(matches!(entries[1].body, ReceivedBody::Message(_)));
    assert_eq!(
        entries[2].body,
        ReceivedBody::Watermark {
            node: "mx2".into(),
            at: t.to_string()
        }
    );
    // An older watermark is logged but does not lower the state's.
    let mut older = step(Vec::new());
    older.watermark = Some(t - 10);
    r.publish("mx2", &older).await.unwrap();
    let (later, _) = read_all(&r, cursor).await;
    assert_eq!(later.len(), 1);
    let (state, _, _) = snapshot(&r).await;
    assert_eq!(state, vec![StateEntry::Watermark("mx2".into(), t)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compacted_state_holds_what_is_in_force() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    let now = unix_now();
    let net = |s: &str| s.parse().unwrap();
    let ban = |seq, target: &str, until, manual| {
        msg(
            seq,
            Compact::Ban {
                target: net(target),
                until,
                manual,
            },
        )
    };
    let delivery = |seq, network: &str, at| {
        msg(
            seq,
            Compact::Delivery {
                network: net(network),
                at,
            },
        )
    };
    let mut s = step(vec![
        ban(1, "192.0.2.7/32", now + 100, false),
        // A shorter ban of the same target later: the latest expiry wins.
        ban(2, "192.0.2.7/32", now + 50, false),
        ban(3, "198.51.100.0/24", now + 200, true),
        ban(4, "203.0.113.9/32", now + 300, true),
        // Lifted by hand: gone from both kinds.
        msg(
            5,
            Compact::Unban {
                target: net("203.0.113.9/32"),
            },
        ),
        // Already over: pruned in the same step.
        ban(6, "192.0.2.99/32", now - 1, false),
        delivery(7, "2001:db8::/64", now - 10),
        delivery(8, "2001:db8::/64", now - 20),
        // Older than the horizon: pruned.
        delivery(9, "192.0.2.0/24", now - 1000),
    ]);
    s.deliveries_since = now - 500;
    assert_eq!(r.publish("mx1", &s).await.unwrap(), 9);
    let (mut state, _, _) = snapshot(&r).await;
    state.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        state,
        vec![
            StateEntry::Ban("192.0.2.7/32".into(), now + 100),
            StateEntry::Delivery("2001:db8::/64".into(), now - 10),
            StateEntry::ManualBan("198.51.100.0/24".into(), now + 200),
        ]
    );
    // Time passes: the next step (any node's) prunes what ended.
    let mut later = step(Vec::new());
    later.now = now + 150;
    later.deliveries_since = now;
    r.publish("mx3", &later).await.unwrap();
    let (state, _, _) = snapshot(&r).await;
    assert_eq!(
        state,
        vec![StateEntry::ManualBan("198.51.100.0/24".into(), now + 200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_follows_its_cursor_and_waits_a_bounded_time() {
    let Some(server) = server() else { return };
    let r = std::sync::Arc::new(transport(&server, HOUR, 1_000_000));
    r.publish("mx1", &step(hits(1..=25))).await.unwrap();
    let mut cursor = Cursor::start();
    let mut sizes = Vec::new();
    loop {
        let Read::Entries(e) = r.read(&cursor, 10, Duration::ZERO).await.unwrap() else {
            panic!("gap")
        };
        if e.is_empty() {
            break;
        }
        let id = |c: &Cursor| StreamId::parse(&c.0).unwrap();
        assert!(e.iter().all(|x| id(&x.cursor) > id(&cursor)), "after it");
        cursor = e.last().unwrap().cursor.clone();
        sizes.push(e.len());
    }
    assert_eq!(sizes, [10, 10, 5]);

    // Nothing new: the read returns empty once its wait is over.
    let started = Instant::now();
    let got = r
        .read(&cursor, 10, Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(got, Read::Entries(Vec::new()));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // A waiting reader wakes up for a new entry, and does not hold up the
    // publisher meanwhile.
    let reader = {
        let (r, cursor) = (r.clone(), cursor.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let got = r.read(&cursor, 10, Duration::from_secs(8)).await.unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = Instant::now();
    r.publish("mx1", &step(hits([26]))).await.unwrap();
    assert!(published.elapsed() < Duration::from_secs(1));
    let (got, took) = reader.await.unwrap();
    let Read::Entries(e) = got else { panic!("gap") };
    assert_eq!(e.len(), 1);
    assert_eq!(payload(&e[0]), "{\"seq\":26}");
    assert!(took < Duration::from_secs(3), "woke after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_the_trim_gets_a_gap() {
    let Some(server) = server() else { return };
    // A tiny cap (the config's minimum is 1000; the transport takes any).
    let r = transport(&server, HOUR, 10);
    r.publish("mx1", &step(hits([1]))).await.unwrap();
    let (seen, early) = read_all(&r, Cursor::start()).await;
    assert_eq!(seen.len(), 1);
    for batch in 0..10 {
        let first = 2 + batch * 100;
        r.publish("mx1", &step(hits(first..first + 100)))
            .await
            .unwrap();
    }
    let len = server.command(&["XLEN", "{fleet}:events"]);
    assert_eq!(len, redis::Value::Int(10), "trimmed to max_events");
    assert_eq!(r.read(&early, 10, Duration::ZERO).await.unwrap(), Read::Gap);
    assert_eq!(
        r.read(&Cursor::start(), 10, Duration::ZERO).await.unwrap(),
        Read::Gap
    );
    // A reader that bootstraps follows on from the snapshot's cursor.
    let (_, _, cursor) = snapshot(&r).await;
    assert_eq!(
        r.read(&cursor, 10, Duration::ZERO).await.unwrap(),
        Read::Entries(Vec::new())
    );
    r.publish("mx1", &step(hits([2000]))).await.unwrap();
    let (after, _) = read_all(&r, cursor).await;
    assert_eq!(after.len(), 1);
    // A cursor that is no stream id cannot say what its reader saw.
    let junk = Cursor("yesterday".into());
    assert_eq!(r.read(&junk, 10, Duration::ZERO).await.unwrap(), Read::Gap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_entries_leave_the_log_after_keep() {
    let Some(server) = server() else { return };
    let r = transport(&server, Duration::from_millis(300), 1_000_000);
    r.publish("mx1", &step(hits(1..=150))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    r.publish("mx1", &step(hits([151]))).await.unwrap();
    let len = server.command(&["XLEN", "{fleet}:events"]);
    assert_eq!(
        len,
        redis::Value::Int(1),
        "all but the newest older than keep"
    );
    assert_eq!(
        r.read(&Cursor::start(), 10, Duration::ZERO).await.unwrap(),
        Read::Gap
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_epoch_with_the_data_and_changes_it_without() {
    let Some(mut server) = RedisServer::start(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let r = transport(&server, HOUR, 1_000_000);
    let epoch = r.epoch().await.unwrap();
    assert_eq!(r.epoch().await.unwrap(), epoch, "stable");
    r.publish("mx1", &step(hits(1..=3))).await.unwrap();
    let (_, cursor) = read_all(&r, Cursor::start()).await;

    // kill -9 with an append-only file: nothing acknowledged is lost.
    server.kill9();
    server.restart();
    assert_eq!(when_back(|| r.epoch()).await, epoch);
    assert_eq!(r.published("mx1").await.unwrap(), 3);
    r.publish("mx1", &step(hits([4]))).await.unwrap();
    let (after, cursor) = read_all(&r, cursor).await;
    assert_eq!(after.len(), 1);

    // Everything lost: a gap for the reader, a new epoch, no sequence.
    server.restart_empty();
    let read = when_back(|| r.read(&cursor, 10, Duration::ZERO)).await;
    assert_eq!(read, Read::Gap);
    let fresh = r.epoch().await.unwrap();
    assert_ne!(fresh, epoch);
    assert_eq!(r.epoch().await.unwrap(), fresh);
    assert_eq!(r.published("mx1").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_comes_in_chunks_from_a_cursor_taken_first() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    let now = unix_now();
    const BANS: u32 = 50_000;
    let mut seq = 0;
    for block in 0..BANS / 5000 {
        let messages = (0..5000)
            .map(|i| {
                seq += 1;
                let n = block * 5000 + i;
                let target = format!("10.{}.{}.{}/32", n >> 16, (n >> 8) & 255, n & 255);
                msg(
                    seq,
                    Compact::Ban {
                        target: target.parse().unwrap(),
                        until: now + 3600,
                        manual: false,
                    },
                )
            })
            .collect();
        r.publish("mx1", &step(messages)).await.unwrap();
    }
    // The receiver takes one chunk, then a ban is published while the
    // snapshot is still scanning: the returned cursor is before it.
    let (tx, mut rx) = mpsc::channel(1);
    let r = std::sync::Arc::new(r);
    let task = {
        let r = r.clone();
        tokio::spawn(async move { r.snapshot(tx).await })
    };
    let mut chunks = vec![rx.recv().await.expect("a first chunk")];
    let late = msg(
        seq + 1,
        Compact::Ban {
            target: "192.0.2.1/32".parse().unwrap(),
            until: now + 3600,
            manual: true,
        },
    );
    r.publish("mx1", &step(vec![late])).await.unwrap();
    while let Some(c) = rx.recv().await {
        chunks.push(c);
    }
    let cursor = task.await.unwrap().unwrap();
    assert!(chunks.len() >= 5, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
    let mut bans = BTreeMap::new();
    for e in chunks.into_iter().flatten() {
        if let StateEntry::Ban(t, until) = e {
            bans.insert(t, until);
        }
    }
    assert_eq!(bans.len(), BANS as usize);
    assert!(bans.values().all(|u| *u == now + 3600));
    let (after, _) = read_all(&r, cursor).await;
    assert_eq!(after.len(), 1, "the ban published during the snapshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_the_prefix_works_and_bad_credentials_are_refused() {
    let user = format!("nolist on >fleet-pw ~{{fleet}}:* resetchannels -@all {ACL_COMMANDS}");
    let Some(server) = RedisServer::start(RedisOptions {
        password: Some("admin-pw".into()),
        users: vec![user],
        ..RedisOptions::default()
    }) else {
        return;
    };
    let connect = |url: &str, pw: Option<&str>, prefix: &str| {
        Redis::connect(url, pw.map(str::to_owned), prefix, HOUR, 1000).unwrap()
    };
    let r = connect(&server.url_as("nolist"), Some("fleet-pw"), "fleet");
    // Every operation with only the commands ACL_COMMANDS names.
    let epoch = r.epoch().await.unwrap();
    assert!(!epoch.is_empty());
    let mut s = step(vec![msg(
        1,
        Compact::Ban {
            target: "192.0.2.7/32".parse().unwrap(),
            until: unix_now() + 60,
            manual: false,
        },
    )]);
    s.watermark = Some(unix_now());
    assert_eq!(r.publish("mx1", &s).await.unwrap(), 1);
    assert_eq!(r.published("mx1").await.unwrap(), 1);
    let got = r.read(&Cursor::start(), 10, Duration::ZERO).await.unwrap();
    assert!(matches!(&got, Read::Entries(e) if e.len() == 2), "{got:?}");
    let (_, cursor) = read_all(&r, Cursor::start()).await;
    let waited = r.read(&cursor, 10, Duration::from_millis(100)).await;
    assert_eq!(waited.unwrap(), Read::Entries(Vec::new()));
    let (state, _, _) = snapshot(&r).await;
    assert_eq!(state.len(), 2);
    let report = NodeReport {
        node: "mx1".into(),
        json: "{}".into(),
    };
    r.report(&report, HOUR).await.unwrap();
    assert_eq!(r.reports().await.unwrap(), vec![report]);
    // The script cache may be empty (SCRIPT FLUSH, a restart): reloaded.
    server.command(&["SCRIPT", "FLUSH"]);
    assert_eq!(r.published("mx1").await.unwrap(), 1);
    assert_eq!(r.epoch().await.unwrap(), epoch);

    let refused = |e: Result<String, TransportError>| {
        assert!(matches!(e, Err(TransportError::Refused(_))), "{e:?}");
    };
    // A wrong password; none at all; keys outside what the user may touch.
    refused(
        connect(&server.url_as("nolist"), Some("nope"), "fleet")
            .epoch()
            .await,
    );
    refused(connect(&server.url(), None, "fleet").epoch().await);
    refused(
        connect(&server.url_as("nolist"), Some("fleet-pw"), "other")
            .epoch()
            .await,
    );
    // The default user with requirepass's password.
    let admin = connect(&server.url(), Some("admin-pw"), "fleet");
    assert_eq!(admin.epoch().await.unwrap(), epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_engine_fails_fast_and_the_same_value_works_once_it_is_back() {
    let Some(mut server) = server() else { return };
    let r = std::sync::Arc::new(transport(&server, HOUR, 1_000_000));
    r.publish("mx1", &step(hits([1]))).await.unwrap();
    let (_, cursor) = read_all(&r, Cursor::start()).await;

    // A reader blocked in its wait when the server dies is told so.
    let blocked = {
        let (r, cursor) = (r.clone(), cursor.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (
                r.read(&cursor, 10, Duration::from_secs(30)).await,
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let (got, took) = blocked.await.unwrap();
    assert!(
        matches!(got, Err(TransportError::Unreachable(_))),
        "{got:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    let unreachable = |what: &str, e: Result<(), TransportError>, took: Duration| {
        assert!(
            matches!(e, Err(TransportError::Unreachable(_))),
            "{what}: {e:?}"
        );
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
    };
    for _ in 0..2 {
        let t = Instant::now();
        let e = r.epoch().await.map(drop);
        unreachable("epoch", e, t.elapsed());
        let t = Instant::now();
        let e = r.publish("mx1", &step(hits([2]))).await.map(drop);
        unreachable("publish", e, t.elapsed());
        let t = Instant::now();
        let e = r.read(&cursor, 10, Duration::from_secs(1)).await.map(drop);
        unreachable("read", e, t.elapsed());
        let t = Instant::now();
        let e = snapshot_result(&r).await;
        unreachable("snapshot", e, t.elapsed());
        let t = Instant::now();
        let e = r.reports().await.map(drop);
        unreachable("reports", e, t.elapsed());
    }

    // Back (empty: no AOF): the same value reconnects by itself. A new
    // stream has begun after the reader's cursor: it missed what was lost.
    server.restart();
    let again = step(hits([2]));
    assert_eq!(when_back(|| r.publish("mx1", &again)).await, 2);
    assert_eq!(
        r.read(&cursor, 10, Duration::ZERO).await.unwrap(),
        Read::Gap
    );
    let (_, _, fresh) = snapshot(&r).await;
    assert_eq!(
        r.read(&fresh, 10, Duration::ZERO).await.unwrap(),
        Read::Entries(Vec::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_engine_times_out_and_is_used_again_once_it_answers() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    r.publish("mx1", &step(hits([1]))).await.unwrap();
    let (_, cursor) = read_all(&r, Cursor::start()).await;
    server.freeze();
    let t = Instant::now();
    let e = r.publish("mx1", &step(hits([2]))).await;
    assert!(matches!(e, Err(TransportError::Unreachable(_))), "{e:?}");
    let e = r.read(&cursor, 10, Duration::from_secs(1)).await;
    assert!(matches!(e, Err(TransportError::Unreachable(_))), "{e:?}");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    server.thaw();
    let again = step(hits([2]));
    assert_eq!(when_back(|| r.publish("mx1", &again)).await, 2);
    let (after, _) = read_all(&r, cursor).await;
    assert_eq!(after.len(), 1);
}

async fn snapshot_result(r: &Redis) -> Result<(), TransportError> {
    let (tx, _rx) = mpsc::channel(1);
    r.snapshot(tx).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_never_answered_is_unreachable() {
    // A port nothing listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = Redis::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        None,
        "p",
        HOUR,
        1000,
    )
    .expect("no connection is made before the first call");
    let t = Instant::now();
    assert!(matches!(
        r.published("mx1").await,
        Err(TransportError::Unreachable(_))
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_reach_the_reader_bounded_and_bad_state_is_left_out() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    let huge = "x".repeat(1 << 20);
    server.command(&["XADD", "{fleet}:events", "*", "p", &huge]);
    server.command(&["XADD", "{fleet}:events", "*", "what", "ever"]);
    server.command(&["XADD", "{fleet}:events", "*", "w", "soon", "n", "mx9"]);
    let (entries, _) = read_all(&r, Cursor::start()).await;
    let ReceivedBody::Message(p) = &entries[0].body else {
        panic!("{:?}", entries[0])
    };
    assert_eq!(
        p.len(),
        MAX_PAYLOAD + 1,
        "cut by the server, still too large"
    );
    assert_eq!(entries[1].body, ReceivedBody::Unknown);
    assert_eq!(
        entries[2].body,
        ReceivedBody::Watermark {
            node: "mx9".into(),
            at: "soon".into()
        }
    );
    let long = "9".repeat(100);
    server.command(&[
        "HSET",
        "{fleet}:watermarks",
        "mx1",
        "never",
        &long,
        "5",
        "mx2",
        "7",
    ]);
    server.command(&["ZADD", "{fleet}:bans", "1", &long]);
    let (state, _, _) = snapshot(&r).await;
    assert_eq!(state, vec![StateEntry::Watermark("mx2".into(), 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_expire() {
    let Some(server) = server() else { return };
    let r = transport(&server, HOUR, 1_000_000);
    let report = |node: &str| NodeReport {
        node: node.into(),
        json: format!("{{\"node\":\"{node}\"}}"),
    };
    r.report(&report("mx1"), Duration::from_millis(300))
        .await
        .unwrap();
    r.report(&report("mx2"), HOUR).await.unwrap();
    let mut all = r.reports().await.unwrap();
    all.sort_by(|a, b| a.node.cmp(&b.node));
    assert_eq!(all, vec![report("mx1"), report("mx2")]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.reports().await.unwrap(), vec![report("mx2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let Some(server) = RedisServer::start(RedisOptions {
        tls: true,
        password: Some("tls-pw".into()),
        ..RedisOptions::default()
    }) else {
        return;
    };
    let url = server.url();
    assert_eq!(url, format!("rediss://{}/0", server.addr()));
    let ca = server.ca_pem();
    let r = Redis::connect_with_ca(&url, Some("tls-pw".into()), "fleet", HOUR, 1000, Some(&ca))
        .unwrap();
    assert_eq!(r.publish("mx1", &step(hits(1..=2))).await.unwrap(), 2);
    let (entries, _) = read_all(&r, Cursor::start()).await;
    assert_eq!(entries.len(), 2);
    // The system's authorities do not know this CA: no connection.
    let untrusted = Redis::connect(&url, Some("tls-pw".into()), "fleet", HOUR, 1000).unwrap();
    let e = untrusted.published("mx1").await;
    assert!(matches!(e, Err(TransportError::Unreachable(_))), "{e:?}");
    // Nor does plain text reach a TLS port.
    let plain = url.replacen("rediss://", "redis://", 1);
    let plain = Redis::connect(&plain, Some("tls-pw".into()), "fleet", HOUR, 1000).unwrap();
    assert!(plain.published("mx1").await.is_err());
}

#[test]
fn debug_never_shows_the_password() {
    let r = Redis::connect(
        "redis://nolist@198.18.5.1:6379/0",
        Some("s3cret-pw".into()),
        "fleet",
        HOUR,
        1000,
    )
    .unwrap();
    let shown = format!("{r:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("redis://nolist@198.18.5.1:6379/0"),
        "{shown}"
    );
}
