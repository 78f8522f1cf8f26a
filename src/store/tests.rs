//! The store: migrations, bans, decisions in transactions, checkpoints,
//! concurrent readers, and consistency after a crash mid-write.

use std::net::IpAddr;

use super::*;
use crate::bans::{Action, Decision};

const T0: i64 = 1_795_867_201;

fn decision(action: Action, ip: &str, at: i64) -> Decision {
    Decision {
        action,
        ip: ip.parse::<IpAddr>().unwrap(),
        at,
        until: (action == Action::Ban).then_some(at + 86_400),
        reason: "test".into(),
        hits: 3,
        first_hit: Some(at - 600),
        last_hit: Some(at - 500),
        offence: 1,
        network: None,
    }
}

#[test]
fn opens_migrates_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state")).unwrap();
    let v: i64 = store
        .conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    let mode: String = store
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    Store::open(&dir.path().join("state")).unwrap();
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.conn.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::TooNew { found: 99, .. })
    ));
}

#[test]
fn decisions_bans_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .apply(&[
            decision(Action::Ban, "203.0.113.9", T0),
            decision(Action::Ban, "2001:db8::bad", T0 + 1),
        ])
        .unwrap();
    let bans = store.bans(T0 + 2).unwrap();
    assert_eq!(bans.len(), 2);
    assert_eq!(bans[0].target.to_string(), "203.0.113.9/32");
    assert_eq!(bans[0].source, Source::Engine);
    store
        .apply(&[decision(Action::Unban, "203.0.113.9", T0 + 5)])
        .unwrap();
    assert_eq!(store.bans(T0 + 6).unwrap().len(), 1);
    // Expired bans are not listed, and can be purged.
    assert!(store.bans(T0 + 1 + 86_400).unwrap().is_empty());
    assert_eq!(store.expire(T0 + 2 * 86_400).unwrap(), 1);
    let status = store.status(T0 + 10, 10).unwrap();
    assert_eq!(status.decisions, 3);
    assert_eq!(status.recent[0].action, "unban");
}

#[test]
fn manual_bans_survive_engine_unbans_and_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let target = parse_target("198.51.100.0/24").unwrap();
    store
        .add_ban(&BanRecord {
            target,
            since: T0,
            until: T0 + 3600,
            reason: "operator".into(),
            hits: 0,
            offence: 1,
            source: Source::Manual,
        })
        .unwrap();
    assert!(parse_target("198.51.100.7/24").is_err(), "host bits set");
    assert!(parse_target("not-an-ip").is_err());
    assert_eq!(store.bans(T0).unwrap()[0].source, Source::Manual);
    // The engine never overwrites an operator's ban on the same target.
    let host = parse_target("203.0.113.9").unwrap();
    store
        .add_ban(&BanRecord {
            target: host,
            since: T0,
            until: T0 + 60,
            reason: "operator".into(),
            hits: 0,
            offence: 1,
            source: Source::Manual,
        })
        .unwrap();
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    let kept = store
        .bans(T0)
        .unwrap()
        .into_iter()
        .find(|b| b.target == host)
        .unwrap();
    assert_eq!((kept.source, kept.until), (Source::Manual, T0 + 60));
    store
        .apply(&[decision(Action::Unban, "203.0.113.9", T0 + 1)])
        .unwrap();
    assert!(
        store.bans(T0 + 2).unwrap().iter().any(|b| b.target == host),
        "engine unbans leave manual bans alone"
    );
    assert!(store.remove_ban(&target, T0 + 1, "operator").unwrap());
    assert!(!store.remove_ban(&target, T0 + 2, "operator").unwrap());
}

#[test]
fn checkpoints_and_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.checkpoint("/var/log/mail.log").unwrap(), None);
    let log = "/var/log/mail.log";
    store
        .commit(&[], &[], Some((log, "{\"offset\":10}")), T0)
        .unwrap();
    store
        .commit(&[], &[], Some((log, "{\"offset\":20}")), T0 + 1)
        .unwrap();
    assert_eq!(
        store.checkpoint("/var/log/mail.log").unwrap().as_deref(),
        Some("{\"offset\":20}")
    );
    let net = "198.51.100.0/24".parse().unwrap();
    store.commit(&[], &[(net, T0)], None, T0).unwrap();
    store.commit(&[], &[(net, T0 - 100)], None, T0).unwrap();
    let last: i64 = store
        .conn
        .query_row("SELECT last FROM deliveries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(last, T0);
}

#[test]
fn a_reader_sees_the_writers_commits_while_both_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Store::open(dir.path()).unwrap();
    let reader = Store::open(dir.path()).unwrap();
    writer
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    assert_eq!(reader.bans(T0).unwrap().len(), 1);
}

#[test]
fn history_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .conn
        .execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})
             INSERT INTO history (at, action, target, reason) SELECT i, 'ban', 'x', 'y' FROM n;",
            HISTORY_ROWS + 500
        ))
        .unwrap();
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    assert!(store.status(T0, 1).unwrap().decisions <= HISTORY_ROWS + 1);
}

/// What enforcement has not read yet is kept beyond the usual bound (up
/// to `HISTORY_MOST`), and trimmed once it has read it.
#[test]
fn history_enforcement_has_not_read_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let followed = Arc::new(AtomicI64::new(i64::MAX));
    store.keep_history_after(followed.clone());
    let fill = |store: &Store, rows: i64| {
        store
            .conn
            .execute_batch(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
                 INSERT INTO history (at, action, target, reason) SELECT i, 'ban', 'x', 'y' FROM n;"
            ))
            .unwrap();
    };
    let decisions = |store: &Store| store.status(T0, 1).unwrap().decisions;
    fill(&store, HISTORY_ROWS + 500);
    // Enforcement has read the first 100 entries.
    followed.store(100, Ordering::Release);
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    assert_eq!(decisions(&store), HISTORY_ROWS + 401, "entries 101 on kept");
    assert_eq!(store.ban_history_after(100, 1).unwrap()[0].0, 101);
    // Read up to the end: the usual bound.
    followed.store(store.history_last().unwrap(), Ordering::Release);
    store
        .apply(&[decision(Action::Ban, "203.0.113.10", T0)])
        .unwrap();
    assert_eq!(decisions(&store), HISTORY_ROWS);
    // Never read again: kept up to the most, not beyond.
    followed.store(0, Ordering::Release);
    fill(&store, HISTORY_MOST);
    store
        .apply(&[decision(Action::Ban, "203.0.113.11", T0)])
        .unwrap();
    assert_eq!(decisions(&store), HISTORY_MOST);
}

/// A failure in the middle of a batch (here: a trigger that aborts the
/// second ban) leaves nothing of the batch behind.
#[test]
fn a_failed_batch_leaves_no_partial_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .conn
        .execute_batch(
            "CREATE TRIGGER fail_second BEFORE INSERT ON bans WHEN NEW.target = '198.51.100.66/32'
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .unwrap();
    let batch = [
        decision(Action::Ban, "203.0.113.9", T0),
        decision(Action::Ban, "198.51.100.66", T0),
    ];
    let err = store.apply(&batch).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(
        store.bans(T0).unwrap().is_empty(),
        "first ban of the failed batch must not persist"
    );
    assert_eq!(store.status(T0, 10).unwrap().decisions, 0);
    // The store is still usable.
    store.apply(&batch[..1]).unwrap();
    assert_eq!(store.bans(T0).unwrap().len(), 1);
}

#[test]
fn enforcement_reads_targets_notices_other_writers_and_remembers_what_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Store::open(dir.path()).unwrap();
    let mut reader = Store::open(dir.path()).unwrap();
    let v0 = reader.data_version().unwrap();
    writer
        .apply(&[
            decision(Action::Ban, "198.51.100.7", T0),
            decision(Action::Ban, "2001:db8::7", T0 - 90_000),
        ])
        .unwrap();
    assert_ne!(
        reader.data_version().unwrap(),
        v0,
        "another connection committed"
    );
    let v1 = reader.data_version().unwrap();
    assert_eq!(reader.data_version().unwrap(), v1, "nothing new");
    // Only the ban still in force, with its end.
    assert_eq!(
        reader.ban_targets(T0).unwrap(),
        vec![("198.51.100.7/32".parse().unwrap(), T0 + 86_400)]
    );
    let nets: Vec<IpNet> = vec![
        "198.51.100.7/32".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
    ];
    reader.set_enforced("command", &nets).unwrap();
    let mut got = reader.enforced("command").unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "198.51.100.7/32".parse().unwrap()
        ]
    );
    assert!(reader.enforced("other").unwrap().is_empty());
    reader.set_enforced("command", &[]).unwrap();
    assert!(reader.enforced("command").unwrap().is_empty());
}

#[test]
fn offence_counts_outlive_the_ban_until_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut second = decision(Action::Ban, "203.0.113.9", T0 + 3 * 86_400);
    second.offence = 2;
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    // While the ban is in force, its row has the count.
    assert!(store.offences(T0).unwrap().is_empty());
    store.apply(&[second]).unwrap();
    let bans = store.engine_bans(T0).unwrap();
    assert_eq!((bans.len(), bans[0].offence), (1, 2));
    // A replayed older decision never lowers the count: the row it
    // replaces leaves it in offences.
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    let until = T0 + 4 * 86_400;
    let expect = vec![("203.0.113.9/32".parse().unwrap(), 2, until)];
    assert_eq!(store.offences(T0).unwrap(), expect);
    // The ban expires and is purged; the count stays.
    assert_eq!(store.expire(until + 1).unwrap(), 1);
    assert_eq!(store.offences(until).unwrap(), expect);
    assert!(store.offences(until + 1).unwrap().is_empty());
    assert_eq!(store.prune_offences(until).unwrap(), 0);
    assert_eq!(store.prune_offences(until + 1).unwrap(), 1);
    assert!(store.offences(0).unwrap().is_empty());
}

/// However an engine ban leaves the `bans` table, its count stays in
/// `offences`: an unban, `nolist bans remove`, an operator's ban of the
/// same target; and an engine ban the operator's ban keeps out is counted.
#[test]
fn every_way_out_of_bans_keeps_the_offence_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let third = |ip: &str| {
        let mut d = decision(Action::Ban, ip, T0);
        d.offence = 3;
        d
    };
    store
        .apply(&[third("192.0.2.1"), third("192.0.2.2"), third("192.0.2.3")])
        .unwrap();
    store.add_ban(&manual("192.0.2.4")).unwrap();
    assert!(store.offences(0).unwrap().is_empty());
    store
        .apply(&[
            decision(Action::Unban, "192.0.2.1", T0 + 1),
            third("192.0.2.4"),
        ])
        .unwrap();
    let host = |ip: &str| parse_target(ip).unwrap();
    assert!(
        store
            .remove_ban(&host("192.0.2.2"), T0 + 1, "by hand")
            .unwrap()
    );
    store.add_ban(&manual("192.0.2.3")).unwrap();
    let counted: Vec<(IpNet, u32)> = store
        .offences(0)
        .unwrap()
        .into_iter()
        .map(|(t, n, _)| (t, n))
        .collect();
    let expect: Vec<(IpNet, u32)> = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
        .into_iter()
        .map(|ip| (host(ip), 3))
        .collect();
    assert_eq!(counted, expect);
    // The operator's bans stay theirs.
    let bans = store.bans(T0 + 2).unwrap();
    assert!(bans.iter().all(|b| b.source == Source::Manual), "{bans:?}");
}

/// The store before the offence counts moved into the ban rows: its index
/// on `until` goes, and the counts of the bans it holds stay readable.
#[test]
fn the_offence_rows_migration_drops_the_end_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let index = |store: &Store| -> i64 {
        store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'bans_until'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(index(&store), 0);
    store
        .conn
        .execute_batch(
            "DROP TRIGGER bans_offence_deleted; DROP TRIGGER bans_offence_replaced;
             CREATE INDEX bans_until ON bans(until);
             PRAGMA user_version = 6;",
        )
        .unwrap();
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(index(&store), 0);
    assert_eq!(store.expire(T0 + 2 * 86_400).unwrap(), 1);
    assert_eq!(store.offences(0).unwrap().len(), 1);
}

#[test]
fn the_offences_migration_takes_the_counts_of_current_engine_bans() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut ban = decision(Action::Ban, "203.0.113.9", T0);
    ban.offence = 3;
    store.apply(&[ban]).unwrap();
    store
        .add_ban(&BanRecord {
            target: "198.51.100.0/24".parse().unwrap(),
            since: T0,
            until: T0 + 86_400,
            reason: "manual".into(),
            hits: 0,
            offence: 1,
            source: Source::Manual,
        })
        .unwrap();
    // Back to the schema before the offences table (version 2).
    let before = 2;
    store
        .conn
        .execute_batch(
            "DROP TABLE offences; DROP TABLE retries; DROP TABLE outbox; DROP TABLE fleet_state",
        )
        .unwrap();
    store
        .conn
        .pragma_update(None, "user_version", before)
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.offences(0).unwrap(),
        vec![("203.0.113.9/32".parse().unwrap(), 3, T0 + 86_400)]
    );
}

fn manual(target: &str) -> BanRecord {
    BanRecord {
        target: parse_target(target).unwrap(),
        since: T0,
        until: T0 + 86_400,
        reason: "by hand".into(),
        hits: 0,
        offence: 1,
        source: Source::Manual,
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Regression: `bans list` on a 0-byte `nolist.db` wrote a full schema
/// into it. Reading creates nothing: not the directory, not a schema, not
/// SQLite's side files.
#[test]
fn reading_never_makes_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    assert!(matches!(
        Store::open_read_only(&state),
        Err(StoreError::Missing { .. })
    ));
    assert!(!state.exists());
    std::fs::create_dir(&state).unwrap();
    let file = Store::file(&state);
    std::fs::write(&file, b"").unwrap();
    let err = Store::open_read_only(&state).err().expect("an error");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("not a nolist store"), "{err}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
    assert_eq!(names(&state), ["nolist.db"]);
    // Some other SQLite database: no nolist tables, nothing added.
    std::fs::remove_file(&file).unwrap();
    Connection::open(&file)
        .unwrap()
        .execute_batch("CREATE TABLE other (x);")
        .unwrap();
    let before = std::fs::read(&file).unwrap();
    assert!(matches!(
        Store::open_read_only(&state),
        Err(StoreError::NotAStore { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(names(&state), ["nolist.db"]);
}

/// A store no writer has open (no `-wal` file) is read without creating
/// SQLite's `-wal` and `-shm` files, and without changing a byte.
#[test]
fn a_store_at_rest_is_read_without_a_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.add_ban(&manual("203.0.113.9")).unwrap();
    drop(store);
    assert_eq!(names(dir.path()), ["nolist.db"]);
    let file = Store::file(dir.path());
    let before = std::fs::read(&file).unwrap();
    let mut reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.bans(T0).unwrap(), [manual("203.0.113.9")]);
    assert_eq!(reader.status(T0, 10).unwrap().active_bans, 1);
    assert!(
        reader.add_ban(&manual("203.0.113.10")).is_err(),
        "read-only"
    );
    drop(reader);
    assert_eq!(names(dir.path()), ["nolist.db"]);
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// While the daemon has the store open, a reader sees what it committed
/// (still in the WAL, not yet in the database file).
#[test]
fn a_live_store_is_read_through_the_writers_wal() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Store::open(dir.path()).unwrap();
    writer.add_ban(&manual("203.0.113.9")).unwrap();
    assert!(names(dir.path()).contains(&"nolist.db-wal".to_owned()));
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.bans(T0).unwrap().len(), 1);
    writer.add_ban(&manual("203.0.113.10")).unwrap();
    assert_eq!(reader.bans(T0).unwrap().len(), 2);
}

#[test]
fn uri_paths_escape_what_sqlite_would_read_as_syntax() {
    assert_eq!(
        uri_path(Path::new("/var/lib/a?b#c%d é/nolist.db")),
        "/var/lib/a%3Fb%23c%25d%20%C3%A9/nolist.db"
    );
}

fn retry(ip: &str, net: &str, at: i64) -> Decision {
    Decision {
        action: Action::RetryExempt,
        until: Some(at + 30 * 86_400),
        hits: 0,
        offence: 0,
        network: Some(net.parse().unwrap()),
        ..decision(Action::RetryExempt, ip, at)
    }
}

#[test]
fn a_retry_exemption_survives_reopening_and_is_pruned_after_remember() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .commit(&[retry("203.0.113.9", "203.0.113.0/24", T0)], &[], None, T0)
        .unwrap();
    // A later retry of the same network moves its time; an earlier one does not.
    store
        .apply(&[retry("203.0.113.10", "203.0.113.0/24", T0 + 50)])
        .unwrap();
    store
        .apply(&[retry("203.0.113.11", "203.0.113.0/24", T0 + 10)])
        .unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let net: IpNet = "203.0.113.0/24".parse().unwrap();
    assert_eq!(store.retries(T0).unwrap(), vec![(net, T0 + 50)]);
    assert!(store.retries(T0 + 51).unwrap().is_empty());
    // Not a ban: nothing to enforce.
    assert!(store.bans(T0).unwrap().is_empty());
    let status = store.status(T0, 10).unwrap();
    assert_eq!(status.retry_exempt_networks, 1);
    assert_eq!(status.recent[0].action, "retry");
    assert_eq!(status.recent[0].target, "203.0.113.0/24");
    // Read-only readers see it too.
    drop(store);
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.retries(0).unwrap(), vec![(net, T0 + 50)]);
    drop(ro);
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.prune_retries(T0 + 50).unwrap(), 0);
    assert_eq!(store.prune_retries(T0 + 51).unwrap(), 1);
    assert!(store.retries(0).unwrap().is_empty());
}

#[test]
fn the_retries_migration_upgrades_a_store_of_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    // Back to the schema before the retries table (version 3).
    let before = 3;
    store
        .conn
        .execute_batch("DROP TABLE retries; DROP TABLE outbox; DROP TABLE fleet_state")
        .unwrap();
    store
        .conn
        .pragma_update(None, "user_version", before)
        .unwrap();
    drop(store);
    // A read-only open of the old version reads what it has...
    let ro = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.bans(T0).unwrap().len(), 1);
    assert_eq!(ro.status(T0, 10).unwrap().retry_exempt_networks, 0);
    drop(ro);
    // ... and `run`'s open migrates it, keeping the ban.
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.bans(T0).unwrap().len(), 1);
    store
        .apply(&[retry("198.51.100.7", "198.51.100.0/24", T0)])
        .unwrap();
    assert_eq!(store.retries(0).unwrap().len(), 1);
}

#[test]
fn the_bans_change_count_moves_with_every_change_of_a_ban_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Store::open(dir.path()).unwrap();
    let reader = Store::open(dir.path()).unwrap();
    let mut last = reader.bans_changes().unwrap();
    let mut moved = |store: &Store| {
        let now = store.bans_changes().unwrap();
        std::mem::replace(&mut last, now) != now
    };
    writer
        .commit(
            &[],
            &[("198.51.100.0/24".parse().unwrap(), T0)],
            Some(("/var/log/mail.log", "{}")),
            T0,
        )
        .unwrap();
    writer
        .apply(&[retry("198.51.100.7", "198.51.100.0/24", T0)])
        .unwrap();
    writer
        .set_enforced("command", &["10.0.0.0/8".parse().unwrap()])
        .unwrap();
    assert!(!moved(&reader), "no ban changed");
    writer
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    assert!(moved(&reader), "a ban added");
    writer
        .apply(&[decision(Action::Ban, "203.0.113.9", T0 + 60)])
        .unwrap();
    assert!(moved(&reader), "a ban extended");
    writer.add_ban(&manual("192.0.2.0/24")).unwrap();
    assert!(moved(&reader), "a manual ban");
    writer
        .remove_ban(&"192.0.2.0/24".parse().unwrap(), T0, "by hand")
        .unwrap();
    assert!(moved(&reader), "a ban removed");
    assert_eq!(writer.expire(T0 + 2 * 86_400).unwrap(), 1);
    assert!(moved(&reader), "a ban expired");
    assert!(!moved(&reader));
}

#[test]
fn the_bans_changes_migration_upgrades_a_store_of_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .apply(&[decision(Action::Ban, "203.0.113.9", T0)])
        .unwrap();
    // Back to the schema before the count (version 4).
    store
        .conn
        .execute_batch(
            "DROP TRIGGER bans_inserted; DROP TRIGGER bans_updated; DROP TRIGGER bans_deleted;
             DROP TABLE bans_changes",
        )
        .unwrap();
    store.conn.pragma_update(None, "user_version", 4).unwrap();
    drop(store);
    let mut store = Store::open(dir.path()).unwrap();
    let before = store.bans_changes().unwrap();
    store
        .remove_ban(&"203.0.113.9/32".parse().unwrap(), T0, "by hand")
        .unwrap();
    assert_ne!(store.bans_changes().unwrap(), before);
}

/// Processes that open a new store at the same moment (`nolist run`
/// starting while `nolist bans add` runs) each migrate it or find it
/// migrated: none fails on a table another one just created.
#[test]
fn concurrent_first_opens_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        Store::open(&state).map(|_| ())
                    })
                })
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        });
    }
}

#[test]
fn a_connection_keeps_as_much_of_the_store_in_memory_as_it_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let size = |s: &Store| -> i64 {
        s.conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(size(&store), -2000, "SQLite's default: about 2 MB");
    store.cache(64 << 20).unwrap();
    assert_eq!(size(&store), -65_536, "64 MiB, in KiB");
}

/// Runs of bans are stored many rows to a statement: the store ends up
/// exactly as when every decision is applied on its own, an operator's
/// ban kept (its engine ban counted in offences), a target banned twice
/// in one run, runs broken by other decisions.
#[test]
fn bans_stored_in_runs_are_stored_as_one_at_a_time() {
    let mut decisions = Vec::new();
    for i in 0..150u32 {
        let ip = format!("198.51.{}.{}", i / 100, i % 100);
        let mut d = decision(Action::Ban, &ip, T0 + i64::from(i));
        d.offence = 1 + i % 3;
        d.reason = format!("test {i}");
        decisions.push(d);
        if i == 70 {
            decisions.push(decision(Action::Unban, "198.51.0.5", T0 + 100));
        }
    }
    // Banned twice in the first run, the second time for longer.
    let mut again = decision(Action::Ban, "198.51.0.3", T0 + 50);
    again.until = Some(T0 + 10 * 86_400);
    again.offence = 2;
    decisions.insert(40, again);
    let stores: Vec<(tempfile::TempDir, Store)> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path()).unwrap();
            store.add_ban(&manual("198.51.0.7")).unwrap();
            (dir, store)
        })
        .collect();
    let [(_a, mut runs), (_b, mut single)] = <[_; 2]>::try_from(stores).ok().unwrap();
    runs.apply(&decisions).unwrap();
    for d in &decisions {
        single.apply(std::slice::from_ref(d)).unwrap();
    }
    let history = |s: &Store| s.ban_history_after(0, 1_000).unwrap();
    assert_eq!(history(&runs).len(), decisions.len() + 1);
    assert_eq!(history(&runs), history(&single));
    assert_eq!(runs.bans(T0).unwrap(), single.bans(T0).unwrap());
    assert_eq!(runs.bans(T0).unwrap().len(), 149, "150, one lifted");
    assert_eq!(runs.offences(0).unwrap(), single.offences(0).unwrap());
    assert_eq!(
        runs.offences(0).unwrap(),
        [
            (parse_target("198.51.0.3").unwrap(), 1, T0 + 3 + 86_400),
            (parse_target("198.51.0.5").unwrap(), 3, T0 + 5 + 86_400),
            (parse_target("198.51.0.7").unwrap(), 2, T0 + 7 + 86_400),
        ],
        "replaced, lifted, kept out by the operator's ban"
    );
    let rows = |s: &Store| -> Vec<(i64, i64, String, String, Option<i64>, String)> {
        let mut stmt = s
            .conn
            .prepare("SELECT id, at, action, target, until, reason FROM history ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(rows(&runs), rows(&single), "the history, row by row");
}
